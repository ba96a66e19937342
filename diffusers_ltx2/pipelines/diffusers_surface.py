"""diffusers' `LTX2Pipeline` attributes and `encode_prompt` on this package's pipelines (a mixin of
`LTX2PipelineBase`): code that reads `pipe.vae_spatial_compression_ratio` or calls `pipe.encode_prompt(...)` the
diffusers way keeps working. Values follow diffusers 0.42.1 `LTX2Pipeline.__init__`, including its defaults when
a component is absent (a text-encoder-only pipeline)."""

from __future__ import annotations

import torch


class DiffusersLTX2Surface:
    """diffusers' `LTX2Pipeline` attribute names, `components` and `encode_prompt`."""

    @property
    def components(self) -> dict:
        """diffusers' `components` (the modules to build another pipeline from this one's), less what the
        constructor recreates by itself: the optional LTX-2.5 components while they are None (`processor`,
        `prompt_enhancer`, `duration_head`, `diffusion_decoder`, and `audio_scheduler`, which this package never
        holds) and the guider while it is the default one. So `components` lists what was passed in, as diffusers' `LTX2Pipeline` (which
        has no guider), and `OtherPipeline(**pipe.components)` / `from_pipe` rebuild the same pipeline."""
        from .diffusers_compat import DIFFUSERS_ONLY_COMPONENTS

        components = super().components
        for name in ("processor", "prompt_enhancer", "duration_head", "diffusion_decoder", *DIFFUSERS_ONLY_COMPONENTS):
            if name in components and components[name] is None:
                del components[name]
        if getattr(self, "_guider_is_default", False):
            components.pop("guider", None)
        return components

    @property
    def vae_spatial_compression_ratio(self) -> int:
        vae = getattr(self, "vae", None)
        return getattr(vae, "spatial_compression_ratio", 32) if vae is not None else 32

    @property
    def vae_temporal_compression_ratio(self) -> int:
        vae = getattr(self, "vae", None)
        return getattr(vae, "temporal_compression_ratio", 8) if vae is not None else 8

    @property
    def audio_vae_mel_compression_ratio(self) -> int:
        audio_vae = getattr(self, "audio_vae", None)
        return getattr(audio_vae, "mel_compression_ratio", 4) if audio_vae is not None else 4

    @property
    def audio_vae_temporal_compression_ratio(self) -> int:
        audio_vae = getattr(self, "audio_vae", None)
        return getattr(audio_vae, "temporal_compression_ratio", 4) if audio_vae is not None else 4

    @property
    def transformer_spatial_patch_size(self) -> int:
        transformer = getattr(self, "transformer", None)
        return transformer.config.patch_size if transformer is not None else 1

    @property
    def transformer_temporal_patch_size(self) -> int:
        transformer = getattr(self, "transformer", None)
        return transformer.config.patch_size_t if transformer is not None else 1

    @property
    def audio_sampling_rate(self) -> int:
        """Sample rate of the audio VAE's mel front-end (16 kHz for LTX-2), as diffusers' attribute."""
        audio_vae = getattr(self, "audio_vae", None)
        return audio_vae.config.sample_rate if audio_vae is not None else 16000

    @property
    def audio_hop_length(self) -> int:
        audio_vae = getattr(self, "audio_vae", None)
        return audio_vae.config.mel_hop_length if audio_vae is not None else 160

    @property
    def tokenizer_max_length(self) -> int:
        tokenizer = getattr(self, "tokenizer", None)
        return tokenizer.model_max_length if tokenizer is not None else 1024

    # -- the call's guider from `guider=` and diffusers' guidance arguments ----------------------------------
    def call_guider(self, guider, arguments: dict):
        """The guider of one call, shared by every pipeline of this package (`diffusers_compat.resolve_guider`):
        `guider=` if given; else a `MultimodalGuider` built from diffusers' guidance arguments (`guidance_scale`,
        `stg_scale`, ..., `spatio_temporal_guidance_blocks`) found in `arguments` - the call's parameters by name,
        e.g. its `locals()`; those left at `DIFFUSERS_DEFAULT` do not count; else the pipeline's `guider`
        component; a pipeline whose `guider` is `None` runs unguided (the conditional pass only).

        Raises:
            ValueError: `guider=` together with diffusers' guidance arguments, or a bad guidance value.
        """
        from .diffusers_compat import GUIDANCE_ARGUMENTS, resolve_guider

        given = {name: arguments[name] for name in GUIDANCE_ARGUMENTS if name in arguments}
        return resolve_guider(guider, getattr(self, "guider", None), given)

    # -- the running call's guidance, under diffusers' names (read-only views of the call's guider) -------------
    def _record_call(self, guider, attention_kwargs=None) -> None:
        """Remember the call's dials so that diffusers' properties (`guidance_scale`, ...) report them; guiders
        other than `MultimodalGuider` report `None`."""
        from ..guiders import MultimodalGuider

        video = guider.video if isinstance(guider, MultimodalGuider) else None
        audio = guider.audio if isinstance(guider, MultimodalGuider) else None
        for name, field in (("guidance_scale", "cfg"), ("stg_scale", "stg"), ("modality_scale", "modality_scale"),
                            ("guidance_rescale", "rescale")):
            setattr(self, "_" + name, getattr(video, field) if video is not None else None)
            setattr(self, "_audio_" + name, getattr(audio, field) if audio is not None else None)
        self._attention_kwargs = attention_kwargs

    guidance_scale = property(lambda self: getattr(self, "_guidance_scale", None))
    stg_scale = property(lambda self: getattr(self, "_stg_scale", None))
    modality_scale = property(lambda self: getattr(self, "_modality_scale", None))
    guidance_rescale = property(lambda self: getattr(self, "_guidance_rescale", None))
    audio_guidance_scale = property(lambda self: getattr(self, "_audio_guidance_scale", None))
    audio_stg_scale = property(lambda self: getattr(self, "_audio_stg_scale", None))
    audio_modality_scale = property(lambda self: getattr(self, "_audio_modality_scale", None))
    audio_guidance_rescale = property(lambda self: getattr(self, "_audio_guidance_rescale", None))
    attention_kwargs = property(lambda self: getattr(self, "_attention_kwargs", None))

    @property
    def do_classifier_free_guidance(self) -> bool:
        return (self.guidance_scale or 1.0) != 1.0 or (self.audio_guidance_scale or 1.0) != 1.0

    @property
    def do_spatio_temporal_guidance(self) -> bool:
        return bool(self.stg_scale) or bool(self.audio_stg_scale)

    @property
    def do_modality_isolation_guidance(self) -> bool:
        return (self.modality_scale or 1.0) != 1.0 or (self.audio_modality_scale or 1.0) != 1.0

    def encode_prompt(
        self,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        do_classifier_free_guidance: bool = True,
        num_videos_per_prompt: int = 1,
        prompt_embeds=None,
        negative_prompt_embeds=None,
        prompt_attention_mask: torch.Tensor | None = None,
        negative_prompt_attention_mask: torch.Tensor | None = None,
        max_sequence_length: int | None = 1024,
        scale_factor: int = 8,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ):
        """Encode prompts, with diffusers' `LTX2Pipeline.encode_prompt` signature and return value.

        Returns `(prompt_embeds, prompt_attention_mask, negative_prompt_embeds, negative_prompt_attention_mask)`:
        Gemma's stacked hidden states `(B * num_videos_per_prompt, max_sequence_length, hidden * (layers + 1))` in
        `dtype` (default: the text encoder's) and int64 masks `(B * num_videos_per_prompt, L)`, left padded; the
        negative pair is `None` when `do_classifier_free_guidance` is False and no negative embeddings are given.
        Tensors given are returned as they are (as diffusers). These tensors can be passed back to the pipeline
        call as `prompt_embeds` / `prompt_attention_mask`. Needs `text_encoder` and `tokenizer` only (a pipeline
        built from those two alone works); `scale_factor` is accepted and unused, as in diffusers. Unlike
        diffusers, the masks are repeated per prompt like the embeddings (diffusers tiles them: for several
        prompts and videos per prompt its masks do not line up with its embeddings).

        This package's own step (`TextContexts` for the denoising loop) is `encode_text_contexts`.

        Raises:
            ValueError: no text encoder / tokenizer, or inconsistent prompts (as diffusers).
        """
        from .diffusers_compat import diffusers_encode_prompt

        # one return of the four names: diffusers' `encode_prompt` isolation test maps the outputs by them
        prompt_embeds, prompt_attention_mask, negative_prompt_embeds, negative_prompt_attention_mask = (
            diffusers_encode_prompt(
                self, prompt, negative_prompt, do_classifier_free_guidance=do_classifier_free_guidance,
                num_videos_per_prompt=num_videos_per_prompt, prompt_embeds=prompt_embeds,
                negative_prompt_embeds=negative_prompt_embeds, prompt_attention_mask=prompt_attention_mask,
                negative_prompt_attention_mask=negative_prompt_attention_mask,
                max_sequence_length=1024 if max_sequence_length is None else max_sequence_length,
                device=device or self._execution_device, dtype=dtype,
            )
        )
        return prompt_embeds, prompt_attention_mask, negative_prompt_embeds, negative_prompt_attention_mask
