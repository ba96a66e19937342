"""One call composing an IC-LoRA reference video (`ReferenceVideo`), a keyframe on the last frame (`VideoCondition`)
and audio-to-video (`AudioCondition`) - issue 21.

Each part's tokens in the combined state are those the condition gives alone (clean values, denoise mask,
positions; the reference's attention weights towards the generated tokens, 0 towards the keyframe), and the
combined state and the whole guided call match ltx-core 1.0.0 building the same combination from its own items:
`combined_image_conditionings` (`VideoConditionByKeyframeIndex` from the PNG through the official loader and
encoder), `ConditioningItemAttentionStrengthWrapper(VideoConditionByReferenceLatent(...))` applied after it (the
order of ltx-pipelines' `ic_lora.py`), the a2vid stage-1 audio freezing (`noise_scale=0`, mask 0, audio guider off
without a negative context), `GaussianNoiser` video then audio, `multi_modal_guider_denoising_func` +
`euler_denoising_loop`. Tolerance `ATOL` of the conditions parity tests (same fp32 math in another op order).
"""

from __future__ import annotations

import ltx_reference  # noqa: F401  (stubs torchaudio before ltx_core is imported)
import pytest
import torch
from ltx_core.components.noisers import GaussianNoiser
from ltx_core.components.patchifiers import AudioPatchifier, VideoLatentPatchifier
from ltx_core.conditioning import ConditioningItemAttentionStrengthWrapper, VideoConditionByReferenceLatent
from ltx_core.tools import AudioLatentTools, VideoLatentTools
from ltx_core.types import AudioLatentShape, VideoLatentShape, VideoPixelShape
from ltx_pipelines.utils.args import ImageConditioningInput
from ltx_pipelines.utils.helpers import combined_image_conditionings, create_noised_state
from test_conditions_parity import ATOL, OFF, STEPS, _official, _official_audio_latent, _params, _png, _waveform
from test_conditions_parity import ref  # noqa: F401 (fixture: the official checkpoints and our converted pipeline)
from test_official_pipeline_parity import AUDIO, STG_BLOCKS, VIDEO

from diffusers_ltx2 import MultimodalGuider
from diffusers_ltx2.conditioning import AudioCondition, ReferenceVideo, VideoCondition, check_conditions, initial_state
from diffusers_ltx2.conditioning.frames import vae_pixels
from diffusers_ltx2.latents import layout as L

CLIP = dict(height=64, width=128, num_frames=17, frame_rate=24.0)  # reference at 32x64 (factor 2)
CPU = torch.device("cpu")


def _conditions(ref):
    reference = ReferenceVideo(torch.rand(17, 3, 48, 80, generator=torch.Generator().manual_seed(21)), strength=0.9,
                               downscale_factor=2, attention_strength=0.5)
    keyframe = VideoCondition(_png(ref["tmp"] / "last.png", seed=3), frame_index=-1, strength=0.8)
    wave, rate = _waveform(seed=6)
    return reference, keyframe, AudioCondition(wave, rate)


def _geometry(pipe):
    return pipe.clip_geometry(1, CLIP["num_frames"], CLIP["height"], CLIP["width"], CLIP["frame_rate"])


def _ours_state(pipe, conditions):
    g = _geometry(pipe)
    return initial_state(check_conditions(conditions, g), g, pipe.latent_encoder(CPU),
                         generator=torch.Generator().manual_seed(7))


def _official_states(ref, reference, keyframe, audio):
    """ltx-core's states for the same combination (keyframe, then the reference with its attention strength)."""
    pipe, g = ref["pipe"], _geometry(ref["pipe"])
    pixel = VideoPixelShape(batch=1, frames=g.num_frames, height=g.height, width=g.width, fps=g.frame_rate)
    video_tools = VideoLatentTools(VideoLatentPatchifier(patch_size=1), VideoLatentShape.from_pixel_shape(
        pixel, latent_channels=pipe.vae.config.latent_channels), g.frame_rate)
    audio_tools = AudioLatentTools(AudioPatchifier(patch_size=1), AudioLatentShape.from_video_pixel_shape(
        pixel, channels=pipe.audio_vae.config.latent_channels))
    items = combined_image_conditionings(
        [ImageConditioningInput(str(ref["tmp"] / "last.png"), keyframe.start_frame(g), keyframe.strength)],
        height=g.height, width=g.width, video_encoder=ref["video_encoder"], dtype=torch.float32, device=CPU)
    reference_latent = ref["video_encoder"](vae_pixels(reference.fit(g)))
    items.append(ConditioningItemAttentionStrengthWrapper(
        VideoConditionByReferenceLatent(reference_latent, downscale_factor=2, strength=reference.strength),
        attention_mask=reference.attention_strength))
    noiser = GaussianNoiser(torch.Generator().manual_seed(7))
    video_state = create_noised_state(video_tools, items, noiser, torch.float32, CPU)
    audio_latent = _official_audio_latent(ref, audio.clip_waveform(g), audio.sample_rate,
                                          audio_tools.target_shape.frames)
    audio_state = create_noised_state(audio_tools, [], noiser, torch.float32, CPU, noise_scale=0.0,
                                      initial_latent=audio_latent)
    audio_state.denoise_mask.zero_()  # a2vid's denoise_video_only
    return video_state, audio_state


@pytest.mark.slow
@torch.no_grad()
def test_each_part_of_the_combination_is_what_its_condition_gives_alone_and_ltx_cores(ref):  # noqa: F811
    pipe = ref["pipe"]
    reference, keyframe, audio = _conditions(ref)
    both = _ours_state(pipe, [audio, keyframe, reference])  # any order in: applied sources, frames, references
    alone = {name: _ours_state(pipe, [c]) for name, c in (("ref", reference), ("key", keyframe), ("audio", audio))}
    n = both.video.num_target_tokens
    k = alone["key"].video.latent.shape[1] - n
    m = alone["ref"].video.latent.shape[1] - n
    assert (k, m) == (4 * 2, 3 * 1 * 2)  # one latent frame of 2x4 keyframe tokens; 3 latent frames of 1x2
    assert both.video.latent.shape[1] == n + k + m
    v = both.video
    for part, (lo, hi), name in (("keyframe", (n, n + k), "key"), ("reference", (n + k, n + k + m), "ref")):
        solo = alone[name].video
        for field in ("clean", "denoise_mask", "coords"):
            got = getattr(v, field)[:, lo:hi] if field != "coords" else v.coords[:, :, lo:hi]
            want = getattr(solo, field)[:, n:] if field != "coords" else solo.coords[:, :, n:]
            assert torch.equal(got, want), (part, field)
    assert torch.equal(v.denoise_mask[:, :n], torch.ones(1, n))
    assert torch.equal(v.coords[:, :, :n], alone["audio"].video.coords)
    assert torch.equal(both.audio.clean, alone["audio"].audio.clean) and both.frozen_audio
    assert torch.equal(both.waveform, alone["audio"].waveform) and both.guided_frozen == frozenset()
    weights = torch.exp(v.self_attention_bias[0])
    assert torch.equal(weights[:n, n + k:], torch.full((n, m), 0.5))  # generated <-> reference: the strength
    assert torch.equal(weights[n:n + k, n + k:], torch.zeros(k, m))  # the keyframe and the reference: none
    assert torch.equal(weights[:n + k, :n + k], torch.ones(n + k, n + k))
    kept = [*range(n), *range(n + k, n + k + m)]  # without the keyframe rows / columns: the reference alone's
    assert torch.equal(weights[kept][:, kept], torch.exp(alone["ref"].video.self_attention_bias[0]))

    video_state, audio_state = _official_states(ref, reference, keyframe, audio)
    torch.testing.assert_close(v.denoise_mask, video_state.denoise_mask.squeeze(-1), rtol=0, atol=0)
    torch.testing.assert_close(v.coords, video_state.positions, rtol=0, atol=1e-6)
    torch.testing.assert_close(weights, video_state.attention_mask[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(v.latent, video_state.latent, rtol=0, atol=ATOL)  # same noise, encoders to ATOL
    torch.testing.assert_close(both.audio.latent, audio_state.latent, rtol=0, atol=ATOL)
    assert torch.equal(both.audio.denoise_mask, audio_state.denoise_mask.squeeze(-1))


@pytest.mark.slow
@torch.no_grad()
def test_reference_keyframe_and_audio_in_one_call_match_ltx_core(ref):  # noqa: F811
    pipe = ref["pipe"]
    reference, keyframe, audio = _conditions(ref)
    out = pipe(prompt_embeds=ref["positive"], negative_prompt_embeds=ref["negative"],
               guider=MultimodalGuider(VIDEO, AUDIO, skip_blocks=STG_BLOCKS), num_inference_steps=STEPS,
               generator=torch.Generator().manual_seed(7), output_type="latent",
               conditions=[reference, keyframe, audio], **CLIP)
    ours_v = L.pack_video(L.normalize_video(out.frames, pipe.vae.latents_mean, pipe.vae.latents_std))
    ours_a = L.normalize_audio_tokens(L.pack_audio(out.audio), pipe.audio_vae.latents_mean, pipe.audio_vae.latents_std)

    video_state, audio_state = _official_states(ref, reference, keyframe, audio)
    source_audio = audio_state.latent.clone()
    ref_v, _ = _official(ref, video_state, audio_state, _params(VIDEO), OFF, audio_negative=False)
    n = ours_v.shape[1]
    torch.testing.assert_close(ours_v, ref_v.latent[:, :n], rtol=0, atol=ATOL)
    torch.testing.assert_close(ours_a, source_audio, rtol=0, atol=ATOL)  # frozen: the encoded sound
    assert (ours_v - video_state.latent[:, :n]).abs().max() > 0.1  # it denoised
    alone = pipe(prompt_embeds=ref["positive"], negative_prompt_embeds=ref["negative"],
                 guider=MultimodalGuider(VIDEO, AUDIO, skip_blocks=STG_BLOCKS), num_inference_steps=STEPS,
                 generator=torch.Generator().manual_seed(7), output_type="latent", conditions=[keyframe, audio], **CLIP)
    assert (alone.frames - out.frames).abs().max() > 1e-3  # the reference changes the result


@torch.no_grad()
def test_the_ic_lora_pipeline_composes_its_reference_with_our_conditions(tiny_components, reference_spy):
    """`LTX2ICLoRAPipeline(conditions=[...])` takes this package's conditions next to `control_video`: the keyframe
    is appended before the reference (ltx-pipelines' order), the sound is frozen and returned as given (A2V)."""
    import numpy as np

    from diffusers_ltx2 import ClassifierFreeGuidance, LTX2ICLoRAPipeline, LTX2Scheduler

    pipe = LTX2ICLoRAPipeline(scheduler=LTX2Scheduler(), guider=ClassifierFreeGuidance(1.0, 1.0), **tiny_components)
    pipe.set_progress_bar_config(disable=True)
    wave = torch.sin(torch.arange(12000) / 24000 * 2 * torch.pi * 440)[None].repeat(2, 1) * 0.3
    key = np.random.RandomState(0).randint(0, 255, (128, 128, 3), dtype=np.uint8)
    out = pipe("a cat", control_video=torch.rand(9, 3, 64, 64), reference_downscale_factor=2,
               conditions=[VideoCondition(key, -1, 0.8), AudioCondition(wave, 24000)], num_inference_steps=2,
               height=128, width=128, num_frames=9, frame_rate=24.0, output_type="np",
               generator=torch.Generator().manual_seed(0))
    (before, after), = reference_spy
    n = before.num_target_tokens
    assert before.latent.shape[1] == n + 16  # the keyframe's 4x4 tokens were appended first
    assert after.latent.shape[1] == n + 16 + 2 * 2 * 2  # then the reference's (2 latent frames of 2x2)
    assert torch.equal(before.denoise_mask[:, n:], torch.full((1, 16), 1 - 0.8))
    from diffusers_ltx2 import LTX2AudioVideoPipeline

    a2v = LTX2AudioVideoPipeline.from_pipe(pipe)("a cat", conditions=[AudioCondition(wave, 24000)],
                                                  num_inference_steps=1, height=128, width=128, num_frames=9,
                                                  output_type="np")
    torch.testing.assert_close(out.audio, a2v.audio, rtol=0, atol=0)  # the given sound, as A2V returns it
