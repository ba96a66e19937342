"""DFR stages (`diffusers_ltx2.dfr.stages`, on the package's one loop) equal ltx-pipelines 1.2 `DFRPipeline`'s on the
tiny official 2.5 set from the same prompt contexts and seed (one noise generator through all stages, as 1.2's
one `GaussianNoiser`): stage 1 (half resolution, keyframe slots), stage 2 (spatial detailing with the IC-LoRA
reference), temporal round 1 (two tiles, anchors + slots, euler-ancestral, stitched, carried keyframes), fp32,
<= 1e-4 on every latent. Each stage starts from the official previous stage's output, so a failure names its stage.
"""

from __future__ import annotations

import pytest
import torch

from dfr_files import official_contexts, run_official_dfr
from diffusers_ltx2 import LTX2TwoStagePipeline
from diffusers_ltx2.conversion.upsampler import load_official_upsampler
from diffusers_ltx2.dfr import stages as S
from diffusers_ltx2.dfr.layout import resolve_canvas
from diffusers_ltx2.latents import layout as L
from diffusers_ltx2.transformer import TextContexts

HEIGHT, WIDTH, FRAMES, FPS, SEED = 128, 192, 73, 24.0, 5
TOL = 1e-4


@pytest.fixture(scope="module")
def setup(ltx25_set, tmp_path_factory):
    pipe = LTX2TwoStagePipeline.from_single_file(ltx25_set["folder"], dtype=torch.float32, progress=False)
    pipe.set_progress_bar_config(disable=True)
    spatial = load_official_upsampler(ltx25_set["spatial_upsampler"], dtype=torch.float32)
    temporal = load_official_upsampler(ltx25_set["temporal_upsampler"], dtype=torch.float32)
    embeds = official_contexts(pipe)
    off = run_official_dfr(pipe, ltx25_set, tmp_path_factory.mktemp("dfr12"), embeds, height=HEIGHT, width=WIDTH,
                           frames=FRAMES, fps=FPS, seed=SEED)
    return pipe, spatial, temporal, TextContexts(positive=embeds), off


def _close(ours, official, what):
    assert ours.shape == official.shape, what
    err = (ours.float() - official.float()).abs().max().item()
    assert err <= TOL, f"{what}: max |diff| {err:.2e}"


def test_base_and_detail_stages_equal_official(setup):
    pipe, spatial, _, contexts, off = setup
    frames, _, positions = resolve_canvas(FRAMES)
    gen = torch.Generator().manual_seed(SEED)
    rt = S.dfr_runtime(pipe, contexts, generator=gen)
    base = S.base_stage(pipe, rt, num_frames=frames, height=HEIGHT // 2, width=WIDTH // 2, frame_rate=FPS,
                        positions=positions)
    _close(base.video, off["s1_video"], "stage 1 video")
    _close(base.keyframes, off["s1_slots"], "stage 1 keyframe slots")
    _close(base.audio, L.pack_audio(off["s1_audio"]), "stage 1 audio")
    # stage 2 from the official stage 1 (same generator state: it drew the same noise as 1.2's stage 1)
    official_base = S.StageResult(off["s1_video"], L.pack_audio(off["s1_audio"]), off["s1_slots"], positions)
    detail = S.detail_stage(pipe, rt, official_base, num_frames=frames, height=HEIGHT, width=WIDTH,
                            frame_rate=FPS, upsampler=spatial, reference_downscale_factor=2)
    _close(detail.video, off["s2_video"], "stage 2 video")
    _close(detail.keyframes, off["s2_slots"], "stage 2 keyframe slots")
    _close(detail.audio, L.pack_audio(off["s2_audio"]), "stage 2 audio")


def test_temporal_round_equals_official(setup):
    pipe, _, temporal, contexts, off = setup
    frames, _, positions = resolve_canvas(FRAMES)
    detail = S.StageResult(off["s2_video"], L.pack_audio(off["s2_audio"]), off["s2_slots"], positions)
    rt = S.dfr_runtime(pipe, contexts, generator=_generator_after_stages(pipe, frames, off))
    out, n2, rate = S.temporal_round(pipe, rt, detail, round_index=1, num_frames=frames, height=HEIGHT,
                                     width=WIDTH, frame_rate=FPS, temporal_upsampler=temporal, seed=SEED)
    assert (n2, rate) == (2 * (frames - 1) + 1, 2 * FPS)
    _close(out.video, off["r1_video"], "round 1 stitched video")
    assert out.positions == off["r1_positions"]
    _close(out.keyframes, off["r1_keyframes"], "round 1 carried keyframes")


def _generator_after_stages(pipe, frames, off):
    """The noise generator as 1.2's is after stages 1 and 2: each drew one `randn` over its video tokens (target +
    appended) and one over its audio tokens."""
    gen = torch.Generator().manual_seed(SEED)
    c = pipe.vae.config.latent_channels
    k = off["s1_slots"].shape[2]
    for video, ref in ((off["s1_video"], 0), (off["s2_video"], off["s1_video"])):
        _, _, f, h, w = video.shape
        tokens = (f + k) * h * w + (0 if isinstance(ref, int) else ref.shape[2] * ref.shape[3] * ref.shape[4])
        torch.randn(1, tokens, c, generator=gen)
        audio = off["s1_audio"]
        torch.randn(1, audio.shape[2], audio.shape[1] * audio.shape[3], generator=gen)
    return gen
