"""`LTX2DFRPipeline` with the distilled LoRA and a detailing IC-LoRA loaded (strengths 0.6 and 0.7) equals
ltx-pipelines 1.2's `DFRPipeline` given the same LoRA files (`stage_loras` = the distilled LoRA, fused in every
stage; `--detailing-lora PATH 0.7` fused into stage 2 only by `DiffusionStage.with_loras`, its reference at 1.2's
`_detailing_downscale_factor` of the file), same prompt contexts, same seed, fp32.

Tolerance 1e-4 on the latents (the bound of the LoRA-free stage tests in `test_dfr_stages`): both sides run fp32
with the LoRA deltas aggregated in fp32 (`ltx12_reference._transformer_x0`); what differs is where the LoRA enters -
1.2 fuses `W + s * B @ A` into the weight, PEFT adds `s * B(A x)` beside `W x` - and the summation order of the
matmuls, i.e. fp32 rounding (~1e-7 relative per layer) carried through 3 + 3 Euler steps of a 2-block model; the
detailing LoRA's own effect on the stage-2 latents is asserted to be > 100x the tolerance, so the comparison can
fail when either LoRA is misapplied (wrong strength, wrong stage, missing reference).
"""

from __future__ import annotations

import pytest
import torch

from dfr_files import build_dfr_pipeline, official_contexts, run_official_dfr
from diffusers_ltx2.dfr.pipeline import DETAILING_ADAPTER
from diffusers_ltx2.latents import layout as L
from two_stage_files import write_official_lora

HEIGHT, WIDTH, FRAMES, FPS, SEED = 128, 192, 41, 24.0, 5
DISTILLED, DETAILING = 0.6, 0.7
TOL = 1e-4


@pytest.fixture(scope="module")
def setup(ltx25_set, tmp_path_factory):
    folder = tmp_path_factory.mktemp("dfr12_detailing")
    pipe = build_dfr_pipeline(ltx25_set)
    lora = folder / "detailing.safetensors"
    write_official_lora(lora, pipe.transformer, seed=7, scale=0.5)
    pipe.load_distilled_lora(str(ltx25_set["distilled_lora"]), strength=DISTILLED)
    pipe.load_detailing_lora(str(lora), strength=DETAILING)
    embeds = official_contexts(pipe)
    off = run_official_dfr(pipe, ltx25_set, folder, embeds, height=HEIGHT, width=WIDTH, frames=FRAMES, fps=FPS,
                           seed=SEED, rounds=0, stage_loras=[[str(ltx25_set["distilled_lora"]), DISTILLED]],
                           detailing_lora=[str(lora), DETAILING])
    return pipe, embeds, off


def _call(pipe, embeds):
    return pipe(prompt_embeds=embeds, height=HEIGHT, width=WIDTH, num_frames=FRAMES, frame_rate=FPS,
                generator=torch.Generator().manual_seed(SEED), output_type="latent")


def _err(ours, official):
    assert ours.shape == official.shape
    return (ours.float() - official.float()).abs().max().item()


def test_detailing_stage_with_lora_equals_official(setup):
    pipe, embeds, off = setup
    out = _call(pipe, embeds)
    keep = out.frames.shape[2]  # the requested 41 frames of the 49-frame canvas
    official = L.denormalize_video(off["s2_video"][:, :, :keep], pipe.vae.latents_mean, pipe.vae.latents_std)
    err = _err(out.frames, official)
    assert err <= TOL, f"detailing stage (distilled {DISTILLED} + detailing {DETAILING}): max |diff| {err:.2e}"
    # the shipped audio is stage 1's (under the distilled LoRA), cut to the video's duration
    audio = L.denormalize_audio_tokens(L.pack_audio(off["s1_audio"]), pipe.audio_vae.latents_mean,
                                       pipe.audio_vae.latents_std)
    official_audio = L.unpack_audio(audio, off["s1_audio"].shape[3])[:, :, : out.audio.shape[2]]
    assert _err(out.audio, official_audio) <= TOL


def test_the_detailing_lora_matters_beyond_the_tolerance(setup):
    """Without the detailing adapter (no LoRA, no reference) the result moves far past the tolerance: the parity
    above can fail."""
    pipe, embeds, off = setup
    info = pipe.ic_lora_adapters.pop(DETAILING_ADAPTER)
    try:
        without = _call(pipe, embeds).frames
    finally:
        pipe.ic_lora_adapters[DETAILING_ADAPTER] = info
    keep = without.shape[2]
    official = L.denormalize_video(off["s2_video"][:, :, :keep], pipe.vae.latents_mean, pipe.vae.latents_std)
    assert _err(without, official) > 100 * TOL
