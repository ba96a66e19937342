"""Code written for diffusers' `LTX2Pipeline` runs on ours: its call arguments, components, `encode_prompt` and
attributes, checked against diffusers' documented behaviour and against diffusers' own pipeline on the same tiny
components."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler
from diffusers.pipelines.ltx2 import LTX2Pipeline
from diffusers.pipelines.ltx2.pipeline_ltx2 import rescale_noise_cfg

from diffusers_ltx2 import LTX2AudioVideoPipeline, LTX2Scheduler, ModalityGuidanceParams, MultimodalGuider
from diffusers_ltx2.factory import TINY_CLIP
from diffusers_ltx2.guiders import Prediction
from diffusers_ltx2.latents import layout as L
from diffusers_ltx2.pipelines.diffusers_compat import (
    UnsupportedFeatureError,
    guider_from_diffusers_args,
    no_guidance,
)

RUN = dict(TINY_CLIP, output_type="latent", num_inference_steps=2)
MODELS = ("vae", "audio_vae", "text_encoder", "tokenizer", "connectors", "transformer", "vocoder")
REC_V = dict(cfg=3.0, stg=1.0, modality_scale=3.0, rescale=0.7)
REC_A = dict(cfg=7.0, stg=1.0, modality_scale=3.0, rescale=0.7)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _dials(g: MultimodalGuider):
    return ({k: getattr(g.video, k) for k in REC_V}, {k: getattr(g.audio, k) for k in REC_A}, g.skip_blocks)


# -- the mapping, argument by argument (diffusers 0.42.1 LTX2Pipeline.__call__ docstring and guidance loop) ------
MAPPING = [
    # defaults (what a diffusers call gets when it passes one argument): the recommended values
    (dict(guidance_scale=3.0), REC_V, REC_A, None),
    (dict(guidance_scale=4.0), dict(REC_V, cfg=4.0), REC_A, None),
    # "If None, defaults to the video value"
    (dict(guidance_scale=4.0, audio_guidance_scale=None), dict(REC_V, cfg=4.0), dict(REC_A, cfg=4.0), None),
    (dict(stg_scale=0.5, audio_stg_scale=None), dict(REC_V, stg=0.5), dict(REC_A, stg=0.5), None),
    (dict(modality_scale=2.0, audio_modality_scale=None), dict(REC_V, modality_scale=2.0),
     dict(REC_A, modality_scale=2.0), None),
    (dict(guidance_rescale=0.2, audio_guidance_rescale=None), dict(REC_V, rescale=0.2), dict(REC_A, rescale=0.2),
     None),
    # "Guidance scale is enabled by setting guidance_scale > 1": CFG runs when either modality's scale is > 1,
    # and then each modality uses its own scale
    (dict(guidance_scale=1.0, audio_guidance_scale=1.0), dict(REC_V, cfg=1.0), dict(REC_A, cfg=1.0), None),
    (dict(guidance_scale=0.5, audio_guidance_scale=0.8), dict(REC_V, cfg=1.0), dict(REC_A, cfg=1.0), None),
    (dict(guidance_scale=0.5), dict(REC_V, cfg=0.5), REC_A, None),
    # STG: "the default value of 0.0 means that STG is disabled"
    (dict(stg_scale=0.0, audio_stg_scale=0.0), dict(REC_V, stg=0.0), dict(REC_A, stg=0.0), None),
    (dict(stg_scale=0.0), dict(REC_V, stg=0.0), REC_A, None),
    # modality guidance: "the default value of 1.0 means that modality guidance is disabled"
    (dict(modality_scale=1.0, audio_modality_scale=0.5), dict(REC_V, modality_scale=1.0),
     dict(REC_A, modality_scale=1.0), None),
    (dict(modality_scale=0.5), dict(REC_V, modality_scale=0.5), REC_A, None),
    # rescale: applied when > 0
    (dict(guidance_rescale=0.0), dict(REC_V, rescale=0.0), REC_A, None),
    (dict(guidance_rescale=-1.0, audio_guidance_rescale=0.3), dict(REC_V, rescale=0.0), dict(REC_A, rescale=0.3),
     None),
    # STG blocks
    (dict(spatio_temporal_guidance_blocks=[1]), REC_V, REC_A, (1,)),
    (dict(stg_scale=0.0, audio_stg_scale=0.0, spatio_temporal_guidance_blocks=None), dict(REC_V, stg=0.0),
     dict(REC_A, stg=0.0), None),
    # every argument at once
    (dict(guidance_scale=2.0, stg_scale=0.5, modality_scale=1.5, guidance_rescale=0.1, audio_guidance_scale=5.0,
          audio_stg_scale=0.25, audio_modality_scale=2.5, audio_guidance_rescale=0.9,
          spatio_temporal_guidance_blocks=[0, 1]),
     dict(cfg=2.0, stg=0.5, modality_scale=1.5, rescale=0.1), dict(cfg=5.0, stg=0.25, modality_scale=2.5, rescale=0.9),
     (0, 1)),
]


@pytest.mark.parametrize("args,video,audio,blocks", MAPPING)
def test_each_diffusers_guidance_argument_sets_the_guider(args, video, audio, blocks):
    assert _dials(guider_from_diffusers_args(**args)) == (video, audio, blocks)


def test_audio_twin_zero_means_zero_not_the_video_value():
    # diffusers' `audio_stg_scale or stg_scale` turns 0 into the video value; we keep the documented meaning
    g = guider_from_diffusers_args(stg_scale=1.0, audio_stg_scale=0.0)
    assert (g.video.stg, g.audio.stg) == (1.0, 0.0)


@pytest.mark.parametrize("args", [a for a, *_ in MAPPING if "spatio_temporal_guidance_blocks" not in a])
def test_guider_combines_like_the_diffusers_loop(args):
    """Our guider's combination of the four passes equals diffusers' loop formula (delta terms switched by its
    do_* flags, then `rescale_noise_cfg`) on random predictions, per modality (one video: same rescale)."""
    g = guider_from_diffusers_args(**args)
    full = {k: args.get(k, v) for k, v in dict(
        guidance_scale=3.0, stg_scale=1.0, modality_scale=3.0, guidance_rescale=0.7, audio_guidance_scale=7.0,
        audio_stg_scale=1.0, audio_modality_scale=3.0, audio_guidance_rescale=0.7).items()}
    for k in ("guidance_scale", "stg_scale", "modality_scale", "guidance_rescale"):
        full["audio_" + k] = full["audio_" + k] or full[k]  # diffusers' fallback (no zero twin in these cases)
    gen = _gen(3)
    preds = {name: Prediction(torch.randn(1, 6, 4, generator=gen), torch.randn(1, 5, 8, generator=gen))
             for name in ("cond", "uncond", "perturbed", "isolated")}
    plan = g.plan(0, 4, 1.0)
    ours = g.combine(0, plan, {p.name: preds[p.name] for p in plan.passes})
    do_cfg = full["guidance_scale"] > 1 or full["audio_guidance_scale"] > 1
    do_stg = full["stg_scale"] > 0 or full["audio_stg_scale"] > 0
    do_mod = full["modality_scale"] > 1 or full["audio_modality_scale"] > 1
    for attr, prefix in (("video", ""), ("audio", "audio_")):
        c, u, p, m = (getattr(preds[n], attr) for n in ("cond", "uncond", "perturbed", "isolated"))
        guided = c.clone()
        if do_cfg:
            guided = guided + (full[prefix + "guidance_scale"] - 1) * (c - u)
        if do_stg:
            guided = guided + full[prefix + "stg_scale"] * (c - p)
        if do_mod:
            guided = guided + (full[prefix + "modality_scale"] - 1) * (c - m)
        if full[prefix + "guidance_rescale"] > 0:
            guided = rescale_noise_cfg(guided, c, guidance_rescale=full[prefix + "guidance_rescale"])
        torch.testing.assert_close(getattr(ours, attr), guided, rtol=1e-6, atol=1e-6)


# -- through the pipeline ---------------------------------------------------------------------------------------
def test_diffusers_style_call_equals_the_equivalent_multimodal_guider(tiny_pipe):
    dial = _run = lambda **kw: tiny_pipe("a dog runs", generator=_gen(), **RUN, **kw)  # noqa: E731
    ours = dial(guidance_scale=4.0)
    ref = _run(guider=MultimodalGuider(video=dict(REC_V, cfg=4.0), audio=REC_A))
    torch.testing.assert_close(ours.frames, ref.frames, rtol=0, atol=0)
    torch.testing.assert_close(ours.audio, ref.audio, rtol=0, atol=0)
    assert (ours.frames - _run(guidance_scale=3.0).frames).abs().max() > 1e-4


def test_diffusers_style_guidance_matches_diffusers_pipeline(tiny_pipe):
    """CFG + modality guidance + rescale with diffusers' argument names give diffusers' own latents (STG is left
    at 0: in diffusers 0.42.1 it is a no-op on LTX-2.0 transformers, see the README)."""
    theirs = LTX2Pipeline(scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False),
                          **{k: getattr(tiny_pipe, k) for k in MODELS})
    tiny_pipe.scheduler.set_timesteps(3, num_tokens=1)
    sigmas = tiny_pipe.scheduler.sigmas.clone()
    (vb, vn, vc), _ = tiny_pipe.video_latent_shape(1, TINY_CLIP["num_frames"], TINY_CLIP["height"], TINY_CLIP["width"])
    (ab, an, ac), _ = tiny_pipe.audio_latent_shape(1, TINY_CLIP["num_frames"], TINY_CLIP["frame_rate"])
    g = _gen(1)
    video_noise, audio_noise = torch.randn(vb, vn, vc, generator=g), torch.randn(ab, an, ac, generator=g)
    args = dict(guidance_scale=4.0, stg_scale=0.0, modality_scale=2.0, guidance_rescale=0.5,
                audio_guidance_scale=6.0, audio_stg_scale=0.0, audio_modality_scale=2.5, audio_guidance_rescale=0.3)
    clip = dict(TINY_CLIP, output_type="latent", max_sequence_length=1024)
    ours = tiny_pipe("a cat walks", negative_prompt="blurry", sigmas=sigmas.tolist(), latents=video_noise,
                     audio_latents=audio_noise, **args, **clip)
    audio_for_diffusers = L.denormalize_audio_tokens(audio_noise, tiny_pipe.audio_vae.latents_mean,
                                                     tiny_pipe.audio_vae.latents_std)
    ref = theirs("a cat walks", negative_prompt="blurry", sigmas=sigmas[:-1].tolist(), num_inference_steps=3,
                 latents=video_noise, audio_latents=audio_for_diffusers, **args, **clip)
    torch.testing.assert_close(ours.frames, ref.frames, atol=2e-5, rtol=0)
    torch.testing.assert_close(ours.audio, ref.audio, atol=2e-5, rtol=0)


def test_guider_none_means_no_guidance(tiny_pipe):
    calls = []
    tiny_pipe.transformer.register_forward_pre_hook(
        lambda mod, args, kwargs: calls.append(kwargs["hidden_states"].shape[0]), with_kwargs=True)
    tiny_pipe.guider = None
    off = tiny_pipe("a dog runs", generator=_gen(), **RUN)
    assert calls == [1, 1]
    ref = tiny_pipe("a dog runs", generator=_gen(), guider=no_guidance(), **RUN)
    torch.testing.assert_close(off.frames, ref.frames, rtol=0, atol=0)
    # diffusers' guidance arguments still build a guider for the call
    calls.clear()
    tiny_pipe("a dog runs", generator=_gen(), guidance_scale=4.0, stg_scale=0.0, audio_stg_scale=0.0,
              modality_scale=1.0, audio_modality_scale=1.0, **RUN)
    assert calls == [2, 2]


def test_guider_none_survives_save_and_load(tiny_pipe, tmp_path):
    tiny_pipe.guider = None
    tiny_pipe.save_pretrained(tmp_path)
    loaded = LTX2AudioVideoPipeline.from_pretrained(tmp_path)
    assert loaded.guider is None
    a = tiny_pipe("a dog runs", generator=_gen(), **RUN)
    b = loaded("a dog runs", generator=_gen(), **RUN)
    # same weights; reloaded tensors may take other fp32 BLAS paths, which reorders sums (~1e-6), while a
    # default guider would change the result by far more (guidance on)
    torch.testing.assert_close(a.frames, b.frames, rtol=0, atol=1e-5)
    guided = LTX2AudioVideoPipeline.from_pretrained(tmp_path, guider=MultimodalGuider())
    assert (guided("a dog runs", generator=_gen(), **RUN).frames - a.frames).abs().max() > 1e-3


def test_timesteps_are_sigmas_times_1000(tiny_pipe):
    a = tiny_pipe("a dog runs", generator=_gen(), timesteps=[1000.0, 600.0, 250.0], **RUN)
    assert tiny_pipe.num_timesteps == 3
    b = tiny_pipe("a dog runs", generator=_gen(), sigmas=[1.0, 0.6, 0.25], **RUN)
    torch.testing.assert_close(a.frames, b.frames, rtol=0, atol=0)


def test_use_cross_timestep_reaches_the_transformer(tiny_pipe):
    seen = []
    tiny_pipe.transformer.register_forward_pre_hook(
        lambda mod, args, kwargs: seen.append(kwargs["use_cross_timestep"]), with_kwargs=True)
    tiny_pipe("a dog runs", generator=_gen(), **RUN)
    tiny_pipe("a dog runs", generator=_gen(), use_cross_timestep=False, **RUN)
    assert seen == [True, True, False, False]


def test_noise_scale_renoises_given_latents_like_the_official_noiser(tiny_pipe):
    first = tiny_pipe("a dog runs", generator=_gen(), **RUN)  # denormalized latents, as diffusers' "latent" output
    inputs = []
    tiny_pipe.transformer.register_forward_pre_hook(
        lambda mod, args, kwargs: inputs.append((kwargs["hidden_states"].clone(),
                                                 kwargs["audio_hidden_states"].clone())), with_kwargs=True)
    s = 0.6
    tiny_pipe("a dog runs", generator=_gen(5), latents=first.frames, audio_latents=first.audio, noise_scale=s, **RUN)
    g = _gen(5)  # video noise first, then audio, in token layout
    v_clean = L.pack_video(L.normalize_video(first.frames, tiny_pipe.vae.latents_mean, tiny_pipe.vae.latents_std))
    a_clean = L.normalize_audio_tokens(L.pack_audio(first.audio), tiny_pipe.audio_vae.latents_mean,
                                       tiny_pipe.audio_vae.latents_std)
    v_expected = s * torch.randn(v_clean.shape, generator=g) + (1 - s) * v_clean
    a_expected = s * torch.randn(a_clean.shape, generator=g) + (1 - s) * a_clean
    torch.testing.assert_close(inputs[0][0], v_expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(inputs[0][1], a_expected, rtol=0, atol=1e-5)
    # noise_scale 1 discards them: the same as drawing fresh noise from the same generator
    full = tiny_pipe("a dog runs", generator=_gen(5), latents=first.frames, audio_latents=first.audio,
                     noise_scale=1.0, **RUN)
    fresh = tiny_pipe("a dog runs", generator=_gen(5), **RUN)
    torch.testing.assert_close(full.frames, fresh.frames, rtol=0, atol=1e-6)


@pytest.mark.parametrize("kwargs,feature", [
    (dict(motion_speed=0.5), "motion-speed"),
])
def test_features_we_lack_raise_not_implemented(tiny_pipe, kwargs, feature):
    calls = []
    tiny_pipe.transformer.register_forward_pre_hook(lambda *a: calls.append(1))
    with pytest.raises(NotImplementedError, match=feature) as info:
        tiny_pipe("a dog runs", **{**RUN, **kwargs})
    assert isinstance(info.value, UnsupportedFeatureError) and calls == []


def test_diffusers_defaults_spelled_out_are_accepted(tiny_pipe):
    out = tiny_pipe(
        "a dog runs", generator=_gen(), num_frames=None, min_seconds=1.0, max_seconds=20.0, motion_speed=1.0,
        system_prompt="ignored while enhancement is off", enable_prompt_enhancement=False, prompt_max_new_tokens=None,
        prompt_enhancement_kwargs=None, prompt_enhancement_seed=10, noise_scale=0.0, decode_timestep=[0.0],
        decode_noise_scale=None, height=64, width=64, frame_rate=24.0, output_type="latent", num_inference_steps=2,
    )
    assert out.frames.shape[2] == 121 // 8 + 1  # num_frames=None: 121, as diffusers without a duration head


# -- components -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,feature", [("audio_scheduler", "audio scheduler")])
def test_diffusers_optional_components(tiny_components, name, feature):
    pipe = LTX2AudioVideoPipeline(scheduler=LTX2Scheduler(), **tiny_components, **{name: None})
    assert getattr(pipe, name) is None
    with pytest.raises(NotImplementedError, match=feature):
        LTX2AudioVideoPipeline(scheduler=LTX2Scheduler(), **tiny_components, **{name: torch.nn.Linear(1, 1)})


def test_text_encoder_only_pipeline_encodes_like_diffusers(tiny_components):
    te, tok = tiny_components["text_encoder"], tiny_components["tokenizer"]
    none = dict(scheduler=None, vae=None, audio_vae=None, connectors=None, transformer=None, vocoder=None)
    ours = LTX2AudioVideoPipeline(text_encoder=te, tokenizer=tok, **none)
    theirs = LTX2Pipeline(text_encoder=te, tokenizer=tok, **none)
    for kwargs in (dict(prompt="a cat"), dict(prompt=["a cat", "a dog runs"], negative_prompt=["x", "blurry y"]),
                   dict(prompt="a cat", num_videos_per_prompt=2, do_classifier_free_guidance=False)):
        got = ours.encode_prompt(**kwargs, max_sequence_length=32)
        ref = theirs.encode_prompt(**kwargs, max_sequence_length=32)
        assert len(got) == 4
        for a, b in zip(got, ref):
            assert (a is None) == (b is None)
            if a is not None:
                assert a.dtype == b.dtype
                torch.testing.assert_close(a, b, rtol=0, atol=0)
    # several prompts x videos per prompt: our masks follow the embeddings' order (diffusers tiles its masks)
    embeds, mask, _, _ = ours.encode_prompt(["a cat", "a dog runs"], num_videos_per_prompt=2, max_sequence_length=32)
    single = [ours.encode_prompt(p, max_sequence_length=32) for p in ("a cat", "a dog runs")]
    torch.testing.assert_close(embeds, torch.cat([single[0][0]] * 2 + [single[1][0]] * 2))
    torch.testing.assert_close(mask, torch.cat([single[0][1]] * 2 + [single[1][1]] * 2))


def test_encode_prompt_tensors_feed_the_call(tiny_pipe):
    pe, pm, ne, nm = tiny_pipe.encode_prompt("a dog runs", negative_prompt="blurry", max_sequence_length=32)
    guider = MultimodalGuider(video=dict(cfg=4.0), audio=dict(cfg=4.0))
    a = tiny_pipe(prompt_embeds=pe, prompt_attention_mask=pm, negative_prompt_embeds=ne,
                  negative_prompt_attention_mask=nm, generator=_gen(), guider=guider, **RUN)
    b = tiny_pipe("a dog runs", negative_prompt="blurry", max_sequence_length=32, generator=_gen(), guider=guider,
                  **RUN)
    torch.testing.assert_close(a.frames, b.frames, rtol=0, atol=0)


def test_prompt_and_negative_of_different_lengths_batch_like_sequential(tiny_pipe):
    pe, pm, _, _ = tiny_pipe.encode_prompt("a dog runs", do_classifier_free_guidance=False, max_sequence_length=16)
    ne, nm, _, _ = tiny_pipe.encode_prompt("blurry", do_classifier_free_guidance=False, max_sequence_length=64)
    kwargs = dict(prompt_embeds=pe, prompt_attention_mask=pm, negative_prompt_embeds=ne,
                  negative_prompt_attention_mask=nm, guider=MultimodalGuider(), **RUN)
    batched = tiny_pipe(generator=_gen(), **kwargs)
    sequential = tiny_pipe(generator=_gen(), max_batch_passes=1, **kwargs)
    # per pass the batched and sequential calls agree to rounding; guidance amplifies it over the steps
    torch.testing.assert_close(batched.frames, sequential.frames, rtol=0, atol=5e-5)
    torch.testing.assert_close(batched.audio, sequential.audio, rtol=0, atol=5e-5)


# -- attributes and conventions -------------------------------------------------------------------------------
def test_attributes_match_diffusers(tiny_pipe):
    theirs = LTX2Pipeline(scheduler=FlowMatchEulerDiscreteScheduler(), **{k: getattr(tiny_pipe, k) for k in MODELS})
    for name in ("vae_spatial_compression_ratio", "vae_temporal_compression_ratio", "audio_vae_mel_compression_ratio",
                 "audio_vae_temporal_compression_ratio", "transformer_spatial_patch_size",
                 "transformer_temporal_patch_size", "audio_sampling_rate", "audio_hop_length", "tokenizer_max_length"):
        assert getattr(tiny_pipe, name) == getattr(theirs, name), name
    assert set(theirs._callback_tensor_inputs) <= set(tiny_pipe._callback_tensor_inputs)
    assert set(theirs._optional_components) <= set(tiny_pipe._optional_components)
    assert tiny_pipe.interrupt is False
    tiny_pipe("a dog runs", generator=_gen(), **dict(RUN, num_inference_steps=3))
    assert tiny_pipe.num_timesteps == 3
    import inspect

    assert inspect.signature(LTX2AudioVideoPipeline.__call__).parameters["output_type"].default == \
        inspect.signature(LTX2Pipeline.__call__).parameters["output_type"].default == "pil"
    missing = set(inspect.signature(LTX2Pipeline.__call__).parameters) - set(
        inspect.signature(LTX2AudioVideoPipeline.__call__).parameters)
    assert not missing, f"diffusers call arguments we do not accept: {missing}"


def test_callback_sees_and_replaces_prompt_embeds(tiny_pipe):
    seen = []

    def callback(pipe, i, sigma, tensors):
        seen.append((tensors["prompt_embeds"].shape, tensors["negative_prompt_embeds"] is None))
        return {"prompt_embeds": torch.zeros_like(tensors["prompt_embeds"])} if i == 0 else {}

    kwargs = dict(callback_on_step_end_tensor_inputs=["latents", "prompt_embeds", "negative_prompt_embeds"], **RUN)
    changed = tiny_pipe("a dog runs", generator=_gen(), callback_on_step_end=callback, **kwargs)
    plain = tiny_pipe("a dog runs", generator=_gen(), **RUN)
    assert len(seen) == 2 and seen[0][1] is True and seen[0][0][0] == 1
    assert (changed.frames - plain.frames).abs().max() > 1e-4  # step 1 ran on the replaced context


def test_diffusers_pipeline_callback_objects_are_accepted(tiny_pipe):
    from diffusers.callbacks import PipelineCallback

    class Record(PipelineCallback):
        tensor_inputs = ["latents", "audio_latents"]

        def callback_fn(self, pipeline, step_index, timestep, callback_kwargs):
            steps.append((step_index, sorted(callback_kwargs)))
            return callback_kwargs

    steps = []
    tiny_pipe("a dog runs", generator=_gen(), callback_on_step_end=Record(), **RUN)
    assert steps == [(0, ["audio_latents", "latents"]), (1, ["audio_latents", "latents"])]


def test_assigning_diffusers_schedulers(tiny_pipe):
    tiny_pipe.scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05,
                                                          base_image_seq_len=1024, max_image_seq_len=4096,
                                                          shift_terminal=0.1)
    assert isinstance(tiny_pipe.scheduler, LTX2Scheduler) and tiny_pipe.scheduler.config.terminal == 0.1
    assert tiny_pipe.config.scheduler[1] == "LTX2Scheduler"
    out = tiny_pipe("a dog runs", generator=_gen(), **RUN)
    assert torch.isfinite(out.frames).all()
    with pytest.raises(ValueError, match="LTX2Scheduler"):
        tiny_pipe.scheduler = DDIMScheduler()
    with pytest.raises(ValueError, match="LTX2Scheduler"):
        tiny_pipe.scheduler = FlowMatchEulerDiscreteScheduler(use_karras_sigmas=True)
    assert isinstance(tiny_pipe.scheduler, LTX2Scheduler)


def test_modality_params_for_no_guidance_are_all_off():
    g = no_guidance()
    assert g.video == g.audio == ModalityGuidanceParams() and not g.uses_negative_prompt


def test_decode_timestep_and_noise_scale_per_video(tiny_pipe):
    """diffusers takes one decode timestep / noise scale per video; each video is decoded as if alone."""
    from diffusers import AutoencoderKLLTX2Video

    torch.manual_seed(0)
    tiny_pipe.vae = AutoencoderKLLTX2Video.from_config({**tiny_pipe.vae.config, "timestep_conditioning": True}).eval()
    latents = torch.randn(2, *tiny_pipe.video_latent_shape(1, 9, 64, 64)[1][1:], generator=_gen(7))
    both = tiny_pipe.decode_video(latents, "pt", generator=[_gen(1), _gen(2)], decode_timestep=[0.05, 0.2],
                                  decode_noise_scale=[0.0, 0.1])
    for i, (seed, t, s) in enumerate(((1, 0.05, 0.0), (2, 0.2, 0.1))):
        alone = tiny_pipe.decode_video(latents[i:i + 1], "pt", generator=_gen(seed), decode_timestep=t,
                                       decode_noise_scale=s)
        torch.testing.assert_close(both[i:i + 1], alone, rtol=0, atol=1e-5)
    assert (both[0] - both[1]).abs().max() > 1e-3


def test_guidance_properties_report_the_running_call(tiny_pipe):
    seen = []

    def callback(pipe, i, sigma, tensors):
        seen.append((pipe.guidance_scale, pipe.audio_guidance_scale, pipe.stg_scale, pipe.audio_stg_scale,
                     pipe.modality_scale, pipe.guidance_rescale, pipe.do_classifier_free_guidance,
                     pipe.do_spatio_temporal_guidance, pipe.do_modality_isolation_guidance, pipe.attention_kwargs))
        return {}

    tiny_pipe("a dog runs", guidance_scale=4.0, audio_stg_scale=0.0, callback_on_step_end=callback,
              attention_kwargs={"scale": 1.0}, **RUN)
    assert seen[0] == (4.0, 7.0, 1.0, 0.0, 3.0, 0.7, True, True, True, {"scale": 1.0})
