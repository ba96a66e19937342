"""The training step against a hand-written reference of the official objective (ltx-trainer's strategies on
ltx-core's patchifier and position code), the timestep sampler, and the loss masks."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from diffusers_ltx2.training import strategies as S
from diffusers_ltx2.training import timesteps as T
from diffusers_ltx2.training.trainer import Trainer

from training_fixtures import make_config, write_dataset


def official_positions(f, h, w, b, fps, factor=1):
    """ltx-core's patch grid bounds -> pixel coords (causal fix) / fps, as the official trainer builds them."""
    from ltx_core.components.patchifiers import VideoLatentPatchifier, get_pixel_coords
    from ltx_core.types import SpatioTemporalScaleFactors, VideoLatentShape

    bounds = VideoLatentPatchifier(patch_size=1).get_patch_grid_bounds(
        output_shape=VideoLatentShape(frames=f, height=h, width=w, batch=b, channels=128), device="cpu")
    pos = get_pixel_coords(latent_coords=bounds, scale_factors=SpatioTemporalScaleFactors.default(), causal_fix=True).float()
    pos[:, 0] = pos[:, 0] / fps
    if factor != 1:
        pos = pos.clone()
        pos[:, 1:] *= factor
    return pos


def official_audio_positions(t, b):
    from ltx_core.components.patchifiers import AudioPatchifier
    from ltx_core.types import AudioLatentShape

    return AudioPatchifier(patch_size=1).get_patch_grid_bounds(
        output_shape=AudioLatentShape(frames=t, mel_bins=16, batch=b, channels=8), device="cpu")


def reference_loss(transformer, batch, noise, *, with_audio, factor=None):
    """The official objective written out by hand: reference tokens (if any) *prepended* clean at timestep 0,
    target noised at sigma, first-frame tokens clean / timestep 0 / no loss, velocity target, masked MSE."""
    from ltx_core.components.patchifiers import AudioPatchifier, VideoLatentPatchifier

    lat = batch["latents"]
    b, _, f, h, w = lat.shape
    x0 = VideoLatentPatchifier(patch_size=1).patchify(lat)
    s = noise.sigma.view(-1, 1, 1)
    cond = torch.zeros(x0.shape[:2], dtype=torch.bool)
    cond[noise.first_frame, : h * w] = True
    noisy = torch.where(cond.unsqueeze(-1), x0, (1 - s) * x0 + s * noise.video_noise)
    t = torch.where(cond, 0.0, noise.sigma.view(-1, 1).expand_as(cond))
    pos = official_positions(f, h, w, b, float(batch["fps"][0]))
    n_ref = 0
    if factor is not None:
        ref = VideoLatentPatchifier(patch_size=1).patchify(batch["reference_latents"])
        n_ref = ref.shape[1]
        rf, rh, rw = batch["reference_latents"].shape[2:]
        noisy = torch.cat([ref, noisy], 1)
        t = torch.cat([torch.zeros(b, n_ref), t], 1)
        pos = torch.cat([official_positions(rf, rh, rw, b, float(batch["fps"][0]), factor), pos], 2)
    if with_audio:
        a0 = AudioPatchifier(patch_size=1).patchify(batch["audio_latents"])
        a_noisy = (1 - s) * a0 + s * noise.audio_noise
        a_t = noise.sigma.view(-1, 1).expand(b, a0.shape[1])
        a_pos = official_audio_positions(a0.shape[1], b)
    else:  # audio modality disabled: one dummy token, cross-modal attention off
        a_noisy = torch.zeros(b, 1, transformer.config.audio_in_channels)
        a_t = torch.zeros(b, 1)
        a_pos = official_audio_positions(1, b)
    v, a = transformer(
        hidden_states=noisy, audio_hidden_states=a_noisy, encoder_hidden_states=batch["video_context"],
        audio_encoder_hidden_states=batch["audio_context"], encoder_attention_mask=batch["attention_mask"],
        audio_encoder_attention_mask=batch["attention_mask"], timestep=t * 1000, audio_timestep=a_t * 1000,
        sigma=noise.sigma * 1000, audio_sigma=noise.sigma * 1000, video_coords=pos, audio_coords=a_pos,
        use_cross_timestep=True, isolate_modalities=not with_audio, return_dict=False)
    target = noise.video_noise - x0
    err = (v[:, n_ref:] - target).pow(2)
    m = (~cond).float().unsqueeze(-1)
    loss = (err * m).mean(dim=(1, 2)) / m.mean(dim=(1, 2))
    if with_audio:
        loss = loss + (a - (noise.audio_noise - a0)).pow(2).mean(dim=(1, 2))
    return loss


def _grads(params):
    return [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in params]


@pytest.mark.parametrize("case", ["t2v_audio", "ic_lora_factor2"])
def test_training_step_matches_hand_written_official_objective(tmp_path, case):
    with_audio, factor = (True, None) if case == "t2v_audio" else (False, 2)
    from diffusers_ltx2.factory import TINY, build_components

    transformer = build_components(TINY)["transformer"]
    write_dataset(tmp_path / "data", transformer, n_clips=2, grid=(2, 2, 2), factor=factor, control_types=("canny", "depth"))
    strategy = ({"name": "text_to_video", "with_audio": True, "first_frame_conditioning_p": 0.5} if with_audio else
                {"name": "video_to_video", "reference_downscale_factor": 2, "control_types": ["canny", "depth"],
                 "first_frame_conditioning_p": 0.5})
    cfg = make_config(tmp_path / "data", tmp_path / "out", strategy, lora={"target_modules": "av_full"},
                      optimization={"batch_size": 2})
    trainer = Trainer(cfg, transformer=transformer).setup()
    # LoRA B starts at zero; give it values so the gradients of A are non-trivial too
    with torch.no_grad():
        for n, p in trainer.unwrapped.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(len(n)))
    batch = trainer.batch_for([0, 1])
    noise = S.draw_step_noise(cfg, batch, S.sample_generators(cfg.seed, [0, 1]))
    noise.first_frame = torch.tensor([True, False])  # one conditioned sample, one not
    params = trainer.params

    loss = trainer.compute_loss(batch, [0, 1], noise)
    loss.mean().backward()
    ours = _grads(params)
    for p in params:
        p.grad = None
    ref = reference_loss(trainer.unwrapped, batch, noise, with_audio=with_audio, factor=factor)
    ref.mean().backward()
    theirs = _grads(params)

    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
    assert all(g.abs().sum() > 0 for g in theirs[:4])
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_reference_tokens_are_clean_at_timestep_zero_without_loss(tmp_path):
    from diffusers_ltx2.factory import TINY, build_components

    transformer = build_components(TINY)["transformer"]
    write_dataset(tmp_path / "data", transformer, n_clips=1, grid=(2, 2, 2), factor=2)
    cfg = make_config(tmp_path / "data", tmp_path / "out", {"name": "video_to_video", "first_frame_conditioning_p": 0.0})
    trainer = Trainer(cfg, transformer=transformer).setup()
    batch = trainer.batch_for([0])
    noise = S.draw_step_noise(cfg, batch, S.sample_generators(0, [0]))
    inputs = S.build_inputs(cfg, trainer.unwrapped, batch, noise)
    n = inputs.video.num_target_tokens
    ref_tokens = inputs.video.latent[:, n:]
    assert ref_tokens.shape[1] == 2 * 1 * 1  # 2x2 grid downscaled by 2 -> 1x1 per latent frame
    torch.testing.assert_close(ref_tokens, batch["reference_latents"].flatten(2).transpose(1, 2))
    timesteps = inputs.video.timesteps(inputs.sigma.view(-1, 1)).expand(1, inputs.video.latent.shape[1])
    assert torch.all(timesteps[:, n:] == 0) and torch.all(timesteps[:, :n] == inputs.sigma)
    # positions of the reference span the target's pixel box (h / w scaled by the factor)
    assert inputs.video.coords[0, 1:, n:].max() == inputs.video.coords[0, 1:, :n].max()
    # ... but the reference conditions the target: the loss depends on the reference latents through attention
    ref = batch["reference_latents"].clone().requires_grad_(True)
    conditioned = S.build_inputs(cfg, trainer.unwrapped, dict(batch, reference_latents=ref), noise)
    S.compute_loss(conditioned, *S.predict_velocity(trainer.unwrapped, conditioned)).sum().backward()
    assert ref.grad is not None and float(ref.grad.abs().sum()) > 0
    # the loss does not see the reference tokens' predictions
    pred = torch.randn(1, inputs.video.latent.shape[1], inputs.video_target.shape[-1], requires_grad=True)
    S.compute_loss(inputs, pred, torch.zeros(1, 1, 1)).sum().backward()
    assert torch.all(pred.grad[:, n:] == 0) and torch.all(pred.grad[:, :n] != 0)


def test_video_only_training_is_independent_of_the_dummy_audio(tmp_path):
    """With audio disabled, the video prediction must not depend on the audio stream (official audio=None)."""
    from diffusers_ltx2.factory import TINY, build_components

    transformer = build_components(TINY)["transformer"]
    write_dataset(tmp_path / "data", transformer, n_clips=1)
    cfg = make_config(tmp_path / "data", tmp_path / "out", {"name": "text_to_video"})
    batch = Trainer(cfg, transformer=transformer).batch_for([0])
    noise = S.draw_step_noise(cfg, batch, S.sample_generators(0, [0]))
    inputs = S.build_inputs(cfg, transformer, batch, noise)
    v1, _ = S.predict_velocity(transformer, inputs)
    inputs.audio.latent = torch.randn_like(inputs.audio.latent) * 10
    v2, _ = S.predict_velocity(transformer, inputs)
    torch.testing.assert_close(v1, v2, rtol=0, atol=0)


OFFICIAL_SAMPLERS = (Path(__file__).resolve().parents[2].parent / "shared" / "ltx2-official-1.2.0" / "packages"
                    / "ltx-trainer" / "src" / "ltx_trainer" / "timestep_samplers.py")


def _transcribed_sampler(n, seq, std=1.0, eps=1e-3, uniform_prob=0.1, generator=None):
    """The official ShiftedLogitNormalTimestepSampler written out by hand: ltx-trainer 1.2.0,
    `ltx_trainer/timestep_samplers.py` lines 77-102 (`sample`) and 122-134 (`_get_shift_for_sequence_length`: a
    straight line through (1024, 0.95) and (4096, 2.05), no clamp on either side)."""
    m = (2.05 - 0.95) / (4096 - 1024)
    b = 0.95 - m * 1024
    mu = m * seq + b
    z = torch.randn((n,), generator=generator) * std + mu
    s = torch.sigmoid(z)
    p999 = torch.sigmoid(torch.tensor(mu + 3.0902 * std))
    p005 = torch.sigmoid(torch.tensor(mu + -2.5758 * std))
    raw = (s - p005) / (p999 - p005)
    st = torch.clamp(torch.where(raw >= eps, raw, 2 * eps - raw), 0, 1)
    u = (1 - eps) * torch.rand((n,), generator=generator) + eps
    pick = torch.rand((n,), generator=generator)
    return torch.where(pick > uniform_prob, st, u)


def _official_module():
    """The official sampler module itself (it imports only torch), loaded from the 1.2.0 sources in ../shared."""
    import importlib.util

    assert OFFICIAL_SAMPLERS.is_file(), f"the official ltx-trainer sources are expected at {OFFICIAL_SAMPLERS}"
    spec = importlib.util.spec_from_file_location("official_ltx_trainer_timestep_samplers", OFFICIAL_SAMPLERS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SEQ_LENGTHS = [8, 288, 1024, 3000, 4096, 6144, 10000]


@pytest.mark.parametrize("seq", SEQ_LENGTHS)
def test_shifted_logit_normal_is_the_official_trainers_sampler(seq):
    """The official code's draws (global RNG seeded like our generator) equal ours bit for bit, below 1024 tokens
    and above 4096 too (the official shift is not clamped)."""
    official = _official_module().ShiftedLogitNormalTimestepSampler()
    torch.manual_seed(3)
    theirs = official.sample(4096, seq)
    ours = T.shifted_logit_normal(4096, seq, generator=torch.Generator().manual_seed(3))
    assert torch.equal(ours, theirs)
    assert T.sequence_shift(seq) == official._get_shift_for_sequence_length(seq)
    assert float(ours.min()) >= 0 and float(ours.max()) <= 1
    lo, hi = 0.2, 0.4
    torch.manual_seed(5)
    theirs = _official_module().UniformTimestepSampler(lo, hi).sample(1000)
    assert torch.equal(T.uniform(1000, min_value=lo, max_value=hi, generator=torch.Generator().manual_seed(5)), theirs)


@pytest.mark.parametrize("seq", SEQ_LENGTHS)
def test_shifted_logit_normal_matches_the_transcribed_formula(seq):
    ours = T.shifted_logit_normal(4096, seq, generator=torch.Generator().manual_seed(3))
    assert torch.equal(ours, _transcribed_sampler(4096, seq, generator=torch.Generator().manual_seed(3)))


def test_sequence_shift_is_the_official_line_without_a_clamp():
    assert math.isclose(T.sequence_shift(1024), 0.95) and math.isclose(T.sequence_shift(4096), 2.05)
    assert math.isclose(T.sequence_shift(8), 0.95 - 1.1 * 1016 / 3072)  # 0.586: the tiny test clips
    assert math.isclose(T.sequence_shift(6144), 2.05 + 1.1 * 2048 / 3072)  # 121 frames at 768x512: 2.78
    x = T.uniform(1000, generator=torch.Generator().manual_seed(0), min_value=0.2, max_value=0.4)
    assert 0.2 <= float(x.min()) and float(x.max()) <= 0.4


def test_training_draws_use_the_target_token_count_not_the_references(tmp_path):
    """IC-LoRA: the shift comes from the target's tokens (official `sample_for(target_latents)`)."""
    from diffusers_ltx2.factory import TINY, build_components

    root = write_dataset(tmp_path / "data", build_components(TINY)["transformer"], n_clips=1, factor=2)
    cfg = make_config(root, tmp_path / "out", {"name": "video_to_video", "first_frame_conditioning_p": 0.0})
    trainer = Trainer(cfg)
    batch = trainer.batch_for([0])
    noise = S.draw_step_noise(cfg, batch, S.sample_generators(cfg.seed, [0]))
    f, h, w = batch["latents"].shape[2:]
    expected = T.shifted_logit_normal(1, f * h * w, generator=S.sample_generators(cfg.seed, [0])[0])
    assert torch.equal(noise.sigma, expected)
