"""Whole LTX-2.5 runs against ltx-pipelines 1.2.0 on the tiny official 2.5 set (1.2 in a subprocess,
`ltx12_reference.two_stage`): the HQ two-stage recipe (`generate_hq` = `ti2vid_two_stages_hq.py`), the distilled
two-stage recipe (`distilled=True` = `distilled.py` on a 2.5 checkpoint: euler-ancestral stage 1) and a guided
one-stage run (`ti2vid_one_stage.py`), from the same prompt contexts and seed to the final latents, fp32.

The official side is each pipeline's `__call__` with its model ledger replaced by the tiny files: its own
transformer builder (distilled LoRA fused), `GaussianNoiser` on one generator for both stages, its samplers,
denoisers and guiders, `upsample_video` with its upsampler and video encoder. Two deliberate differences, both
numeric only: the official samplers round latents to bfloat16 between steps (`model_dtype`), run here in fp32 as
ours; the LoRA deltas are aggregated in fp32 (1.2's own MPS rule) instead of bf16.

The preset's choices themselves (sigmas, samplers, guidance, strengths, negative prompt) are compared with 1.2's
constants in `test_hq_preset_equals_official_constants`.
"""

from __future__ import annotations

import pytest
import torch

import ltx12_reference as R
from diffusers_ltx2 import LTX2TwoStagePipeline, ModalityGuidanceParams, MultimodalGuider
from diffusers_ltx2.conversion.upsampler import load_official_upsampler
from diffusers_ltx2.loaders.prompt_embeddings import PromptEmbeddings
from diffusers_ltx2.latents import layout as L
from diffusers_ltx2.pipelines.presets import token_shifted_sigmas
from diffusers_ltx2.presets import HQ_TWO_STAGE

HEIGHT, WIDTH, FRAMES, FPS, SEED, STEPS = 128, 192, 17, 24.0, 11, 2
HQ_STEPS = 3  # with 2 steps the stretched schedule is [1, 0.1, 0] whatever the shift
TOL = 1e-4


@pytest.fixture(scope="module")
def pipe(ltx25_set):
    pipe = LTX2TwoStagePipeline.from_single_file(ltx25_set["folder"], dtype=torch.float32, progress=False)
    pipe.register_modules(latent_upsampler=load_official_upsampler(ltx25_set["spatial_upsampler"],
                                                                   dtype=torch.float32))
    pipe.load_distilled_lora(str(ltx25_set["distilled_lora"]))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _contexts(pipe, seed, valid):
    """Connector-stage prompt contexts (the same tensors go to both sides)."""
    g = torch.Generator().manual_seed(seed)
    config = pipe.connectors.config
    states = torch.randn(1, 128, config.caption_channels, config.text_proj_in_factor, generator=g) * 3
    mask = torch.zeros(1, 128, dtype=torch.int64)
    mask[:, -valid:] = 1
    with torch.no_grad():
        video, audio, mask = pipe.connectors(states, mask)
    return video, audio, mask


@pytest.fixture(scope="module")
def runs(pipe, ltx25_set, tmp_path_factory):
    """1.2's final latents of the three recipes, from one subprocess."""
    tmp = tmp_path_factory.mktemp("runs12")
    (vp, ap, mp), (vn, an, mn) = _contexts(pipe, 1, 37), _contexts(pipe, 2, 5)
    torch.save({"v_pos": vp, "a_pos": ap, "v_neg": vn, "a_neg": an}, tmp / "ctx.pt")
    files = {k: str(v) for k, v in ltx25_set.items()}
    v_ch = pipe.vae.config.latent_channels
    a_ch = pipe.audio_vae.config.latent_channels
    a_mel = pipe.audio_latent_shape(1, FRAMES, FPS)[0][2] // a_ch  # packed width = channels * latent mel bins
    common = dict(files=files, inputs=tmp / "ctx.pt", height=HEIGHT, width=WIDTH, frames=FRAMES, fps=FPS, seed=SEED,
                  video_channels=v_ch, audio_channels=a_ch, audio_mel_bins=a_mel)
    modes = ("hq", "distilled", "one_stage")
    R.run("batch", requests=[{"op": "two_stage", "mode": m, "out": tmp / f"{m}.pt",
                              "steps": HQ_STEPS if m == "hq" else STEPS, **common} for m in modes],
          timeout=1800)
    embeds = (PromptEmbeddings(vp, ap, mp), PromptEmbeddings(vn, an, mn))
    return embeds, {m: torch.load(tmp / f"{m}.pt") for m in modes}


def _normalized(pipe, out):
    video = L.normalize_video(out.frames, pipe.vae.latents_mean, pipe.vae.latents_std)
    audio = L.normalize_audio_tokens(L.pack_audio(out.audio), pipe.audio_vae.latents_mean, pipe.audio_vae.latents_std)
    return video, audio


def _compare(pipe, out, ref, name):
    video, audio = _normalized(pipe, out)
    ref_audio = L.pack_audio(ref["audio"])
    assert video.shape == ref["video"].shape and audio.shape == ref_audio.shape
    err_v, err_a = (video - ref["video"]).abs().max().item(), (audio - ref_audio).abs().max().item()
    print(f"{name}: max |video| err {err_v:.2e}, |audio| err {err_a:.2e} (latent scale "
          f"{ref['video'].abs().max().item():.2f})")
    # fp32 on both sides in a different op order (~1e-6 per pass); a wrong sigma, sampler, noise seed, LoRA
    # strength, guidance dial or returned audio moves the latents by O(0.1-1)
    assert err_v <= TOL and err_a <= TOL


def _kw(embeds):
    return dict(prompt_embeds=embeds[0], negative_prompt_embeds=embeds[1], height=HEIGHT, width=WIDTH,
                num_frames=FRAMES, frame_rate=FPS, generator=torch.Generator().manual_seed(SEED), output_type="latent")


@pytest.mark.slow
@torch.no_grad()
def test_hq_recipe_equals_ltx_pipelines_12(pipe, runs):
    embeds, refs = runs
    ref = refs["hq"]
    sigmas = token_shifted_sigmas(pipe, HQ_STEPS, FRAMES, HEIGHT, WIDTH)
    torch.testing.assert_close(torch.tensor(sigmas), ref["stage_1_sigmas"], atol=1e-6, rtol=0)
    out = pipe.generate_hq(num_inference_steps=HQ_STEPS, **_kw(embeds))
    _compare(pipe, out, ref, "hq")
    # the comparison sees each choice of the recipe (each change moves the latents past the tolerance): the
    # stage-1 LoRA strength, the returned audio, the shifted schedule (the other pipelines' 4096-token shift)
    from diffusers_ltx2.schedulers.sigmas import ltx2_sigmas

    for change, moved in ((dict(stage_1_distilled_lora_strength=1.0), "video"), (dict(refine_audio=True), "audio"),
                          (dict(sigmas=ltx2_sigmas(HQ_STEPS).tolist()), "video")):
        video, audio = _normalized(pipe, pipe.generate_hq(num_inference_steps=HQ_STEPS, **_kw(embeds), **change))
        diff = (video - ref["video"]) if moved == "video" else (audio - L.pack_audio(ref["audio"]))
        print(f"hq with {list(change)}: {moved} moved by {diff.abs().max().item():.1e}")
        assert diff.abs().max() > 2 * TOL, change


@pytest.mark.slow
@torch.no_grad()
def test_distilled_two_stage_equals_ltx_pipelines_12(pipe, runs):
    """`distilled=True` on a 2.5 model picks the official 2.5 distilled stage 1 (euler-ancestral, noise seed
    seed + 10000) without being told; stage 2 Euler; no LoRA."""
    embeds, refs = runs
    out = pipe(distilled=True, guider=None, **_kw(embeds))
    _compare(pipe, out, refs["distilled"], "distilled")
    video, _ = _normalized(pipe, pipe(distilled=True, guider=None, sampler="euler", **_kw(embeds)))
    assert (video - refs["distilled"]["video"]).abs().max() > 1e-3  # the 2.0 / 2.3 stage 1 is not 2.5's


@pytest.mark.slow
@torch.no_grad()
def test_guided_one_stage_equals_ltx_pipelines_12(pipe, runs):
    """A guided one-stage run (`LTX2AudioVideoPipeline` = `ti2vid_one_stage.py`: cfg, STG on block 1, modality
    guidance, rescale) on the 2.5 model, with 1.2's cross-attention timestep rule."""
    from diffusers_ltx2 import LTX2AudioVideoPipeline

    embeds, refs = runs
    one = LTX2AudioVideoPipeline.from_pipe(pipe)
    guider = MultimodalGuider(ModalityGuidanceParams(cfg=3.0, stg=1.0, modality_scale=3.0, rescale=0.7),
                              ModalityGuidanceParams(cfg=7.0, stg=1.0, modality_scale=3.0, rescale=0.7),
                              skip_blocks=[1])
    out = one(guider=guider, num_inference_steps=STEPS, **_kw(embeds))
    _compare(pipe, out, refs["one_stage"], "one-stage guided")


def test_hq_preset_equals_official_constants(tmp_path):
    """`presets.HQ_TWO_STAGE` holds ltx-pipelines 1.2.0's HQ choices: `LTX_2_3_HQ_PARAMS` (steps, guidance), the
    HQ argument parser's defaults (size, frames, frame rate, seed, distilled LoRA strengths), the stage-2 sigmas,
    the default negative prompt, and the res_2s loop and stepper in both stages of `TI2VidTwoStagesHQPipeline`."""
    from official_12 import run_official_12

    from diffusers_ltx2.schedulers import DISTILLED_REFINE_SIGMAS

    ref = run_official_12("""
        import inspect
        from ltx_pipelines import ti2vid_two_stages_hq as HQ
        from ltx_pipelines.utils import constants as K
        from ltx_pipelines.utils.args import hq_2_stage_arg_parser
        p = K.LTX_2_3_HQ_PARAMS
        OUT["params"] = {"steps": p.num_inference_steps, "video": p.video_guider_params, "audio": p.audio_guider_params}
        defaults = {a.dest: a.default for a in hq_2_stage_arg_parser(params=p)._actions}
        OUT["args"] = {k: defaults[k] for k in ("height", "width", "num_frames", "frame_rate", "seed",
                       "distilled_lora_strength_stage_1", "distilled_lora_strength_stage_2", "negative_prompt")}
        OUT["stage_2"] = K.STAGE_2_DISTILLED_SIGMAS.tolist()
        source = inspect.getsource(HQ.TI2VidTwoStagesHQPipeline.__call__)
        OUT["res2s_loops"] = source.count("loop=res2s_audio_video_denoising_loop")
        OUT["res2s_stepper"] = "stepper = Res2sDiffusionStep()" in source and source.count("stepper=stepper") == 2
        OUT["latent_shift"] = "self._scheduler.execute(latent=empty_latent" in source
        OUT["stage_1_audio"] = "video_state, _ = self.stage_2(" in source
    """, {}, tmp_path)
    p = HQ_TWO_STAGE
    assert p.num_inference_steps == ref["params"]["steps"]
    for ours, theirs in ((p.video, ref["params"]["video"]), (p.audio, ref["params"]["audio"])):
        assert ours == dict(cfg=theirs.cfg_scale, stg=theirs.stg_scale, modality_scale=theirs.modality_scale,
                            rescale=theirs.rescale_scale)
        assert theirs.skip_step == 0 and theirs.stg_blocks == []
    a = ref["args"]
    assert (p.height, p.width, p.num_frames, p.frame_rate, p.seed) == (
        a["height"], a["width"], a["num_frames"], a["frame_rate"], a["seed"])
    assert (p.stage_1_distilled_lora_strength, p.stage_2_distilled_lora_strength) == (
        a["distilled_lora_strength_stage_1"], a["distilled_lora_strength_stage_2"])
    assert p.negative_prompt == a["negative_prompt"]
    assert list(DISTILLED_REFINE_SIGMAS) == pytest.approx(ref["stage_2"])
    assert (p.sampler, p.stage_2_sampler) == ("res_2s", "res_2s") and ref["res2s_loops"] == 2 and ref["res2s_stepper"]
    assert p.token_count_shift and ref["latent_shift"]
    assert p.refine_audio is False and ref["stage_1_audio"]


@pytest.mark.slow
@torch.no_grad()
def test_audio_to_video_with_frozen_audio_equals_ltx_pipelines_12(pipe, ltx25_set, tmp_path, monkeypatch):
    """A2V on 2.5 (`AudioCondition`: the audio frozen) = 1.2's a2vid stage 1 (`ModalitySpec(frozen=True)`) without
    guidance: 1.2 gives a frozen modality sigma 0 (prompt AdaLN, the cross-attention gates); with the step's sigma
    instead (ltx-core 1.0.0's way, kept for 2.0 / 2.3) the video moves by more than the tolerance."""
    import numpy as np

    from diffusers_ltx2 import LTX2AudioVideoPipeline
    from diffusers_ltx2.conditioning import AudioCondition
    from diffusers_ltx2.transformer import passes as transformer_passes

    one = LTX2AudioVideoPipeline.from_pipe(pipe)
    neutral = MultimodalGuider(ModalityGuidanceParams(), ModalityGuidanceParams())
    rate = 24000
    wave = torch.from_numpy(0.5 * np.sin(2 * np.pi * 330 * np.arange(rate) / rate)).float()
    (vp, ap, mp), (vn, an, mn) = _contexts(pipe, 1, 37), _contexts(pipe, 2, 5)
    embeds = (PromptEmbeddings(vp, ap, mp), PromptEmbeddings(vn, an, mn))

    def ours():
        return one(conditions=[AudioCondition(wave, rate)], guider=neutral, num_inference_steps=STEPS, **_kw(embeds))

    out = ours()
    audio = L.normalize_audio_tokens(L.pack_audio(out.audio), pipe.audio_vae.latents_mean, pipe.audio_vae.latents_std)
    torch.save({"v_pos": vp, "a_pos": ap, "audio": L.unpack_audio(audio, out.audio.shape[-1])}, tmp_path / "ctx.pt")
    v_ch, a_ch = pipe.vae.config.latent_channels, pipe.audio_vae.config.latent_channels
    R.run("two_stage", mode="a2v", files={k: str(v) for k, v in ltx25_set.items()}, inputs=tmp_path / "ctx.pt",
          out=tmp_path / "a2v.pt", height=HEIGHT, width=WIDTH, frames=FRAMES, fps=FPS, seed=SEED, steps=STEPS,
          video_channels=v_ch, audio_channels=a_ch, audio_mel_bins=out.audio.shape[-1])
    ref = torch.load(tmp_path / "a2v.pt")
    _compare(pipe, out, ref, "a2v")

    monkeypatch.setattr(transformer_passes, "frozen_sigmas", lambda rule, sigma, video, audio: (sigma, sigma))
    video, _ = _normalized(pipe, ours())
    assert (video - ref["video"]).abs().max().item() > 10 * TOL


# ---------------------------------------------------------------- conditions below strength 1 (ltx-core 1.2 noising)
#: a first-frame image and a last-frame keyframe, both at strength 0.6 (denoise mask 0.4: partly noised tokens)
IMAGES = ({"frame": 0, "strength": 0.6}, {"frame": FRAMES - 1, "strength": 0.6})


def _image(seed):
    """A smooth random `(3, H, W)` image in [0, 1] at the clip's size."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 3, 4, 6, generator=g)
    return torch.nn.functional.interpolate(low, size=(HEIGHT, WIDTH), mode="bilinear", align_corners=False)[0]


def _image_conditions(images=IMAGES):
    from diffusers_ltx2.conditioning import VideoCondition

    return [VideoCondition(_image(20 + i), im["frame"], im["strength"], crf=0) for i, im in enumerate(images)]


@pytest.fixture(scope="module")
def conditioned_runs(pipe, ltx25_set, tmp_path_factory):
    """1.2's final latents of the distilled two-stage and the guided one-stage recipes with `IMAGES`: the same
    preprocessed pixels (ours, `to_vae_pixels` at each stage's size, CRF off) encoded by 1.2's own encoder."""
    from diffusers_ltx2.conditioning.frames import as_frames, to_vae_pixels

    tmp = tmp_path_factory.mktemp("cond12")
    (vp, ap, mp), (vn, an, mn) = _contexts(pipe, 1, 37), _contexts(pipe, 2, 5)
    x = {"v_pos": vp, "a_pos": ap, "v_neg": vn, "a_neg": an}
    for i in range(len(IMAGES)):
        frames = as_frames(_image(20 + i), "test")
        x[f"pixels_half_{i}"] = to_vae_pixels(frames, HEIGHT // 2, WIDTH // 2, 0)
        x[f"pixels_full_{i}"] = to_vae_pixels(frames, HEIGHT, WIDTH, 0)
    torch.save(x, tmp / "ctx.pt")
    v_ch, a_ch = pipe.vae.config.latent_channels, pipe.audio_vae.config.latent_channels
    a_mel = pipe.audio_latent_shape(1, FRAMES, FPS)[0][2] // a_ch
    common = dict(files={k: str(v) for k, v in ltx25_set.items()}, inputs=tmp / "ctx.pt", height=HEIGHT,
                  width=WIDTH, frames=FRAMES, fps=FPS, seed=SEED, steps=STEPS, video_channels=v_ch,
                  audio_channels=a_ch, audio_mel_bins=a_mel, images=list(IMAGES))
    modes = ("distilled", "one_stage")
    R.run("batch", requests=[{"op": "two_stage", "mode": m, "out": tmp / f"{m}.pt", **common} for m in modes],
          timeout=1800)
    embeds = (PromptEmbeddings(vp, ap, mp), PromptEmbeddings(vn, an, mn))
    return embeds, {m: torch.load(tmp / f"{m}.pt") for m in modes}


@pytest.mark.slow
@torch.no_grad()
def test_distilled_two_stage_with_images_below_strength_1_equals_ltx_pipelines_12(pipe, conditioned_runs,
                                                                                   monkeypatch):
    """First-frame image + last-frame keyframe at strength 0.6 through the distilled two-stage run: stage 2 starts
    from the upsampled latents re-noised to 0.909375, where ltx-core 1.2's noising of partly conditioned tokens
    (`lerp(clean, lerp(start, noise, noise_scale), mask)`, keyframe tokens starting from 0) differs from 1.0's.
    Under ltx-core 1.0's rule (2.0 / 2.3's) the same run is off by more than ten tolerances."""
    from diffusers_ltx2 import versions

    embeds, refs = conditioned_runs
    out = pipe(distilled=True, guider=None, conditions=_image_conditions(), **_kw(embeds))
    _compare(pipe, out, refs["distilled"], "distilled + images at 0.6")
    monkeypatch.setattr(versions, "conditioning_rule", lambda version: "ltx_core_1_0")
    video, _ = _normalized(pipe, pipe(distilled=True, guider=None, conditions=_image_conditions(), **_kw(embeds)))
    print(f"under ltx-core 1.0's rule: video off by {(video - refs['distilled']['video']).abs().max().item():.2e}")
    assert (video - refs["distilled"]["video"]).abs().max().item() > 10 * TOL


@pytest.mark.slow
@torch.no_grad()
def test_guided_one_stage_with_images_below_strength_1_equals_ltx_pipelines_12(pipe, conditioned_runs):
    """The same images through the guided one-stage run (noise scale 1: the two noising rules agree there; the
    keyframe image's one-pixel-frame time box of ltx-core 1.2 is what this run sees)."""
    from diffusers_ltx2 import LTX2AudioVideoPipeline

    embeds, refs = conditioned_runs
    one = LTX2AudioVideoPipeline.from_pipe(pipe)
    guider = MultimodalGuider(ModalityGuidanceParams(cfg=3.0, stg=1.0, modality_scale=3.0, rescale=0.7),
                              ModalityGuidanceParams(cfg=7.0, stg=1.0, modality_scale=3.0, rescale=0.7),
                              skip_blocks=[1])
    out = one(guider=guider, conditions=_image_conditions(), num_inference_steps=STEPS, **_kw(embeds))
    _compare(pipe, out, refs["one_stage"], "one-stage guided + images at 0.6")


@pytest.mark.slow
@torch.no_grad()
def test_video_to_audio_with_frozen_video_equals_ltx_pipelines_12(pipe, ltx25_set, tmp_path, monkeypatch):
    """V2A on 2.5 (`FrozenVideo`: the video frozen, the audio generated) = the mirror of 1.2's a2vid stage 1 built
    from 1.2's own blocks (`ModalitySpec(frozen=True, noise_scale=0.0)` on the video; 1.2 has no V2A pipeline),
    Euler without guidance."""
    from diffusers_ltx2 import LTX2AudioVideoPipeline
    from diffusers_ltx2.conditioning import FrozenVideo

    one = LTX2AudioVideoPipeline.from_pipe(pipe)
    neutral = MultimodalGuider(ModalityGuidanceParams(), ModalityGuidanceParams())
    frames = torch.stack([_image(30 + i % 3) for i in range(FRAMES)])  # (F, 3, H, W) in [0, 1]
    (vp, ap, mp), (vn, an, mn) = _contexts(pipe, 1, 37), _contexts(pipe, 2, 5)
    embeds = (PromptEmbeddings(vp, ap, mp), PromptEmbeddings(vn, an, mn))
    out = one(conditions=[FrozenVideo(frames)], guider=neutral, num_inference_steps=STEPS, **_kw(embeds))
    frozen = one.latent_encoder(torch.device("cpu")).encode_video(2 * frames.permute(1, 0, 2, 3)[None] - 1, 1)
    torch.save({"v_pos": vp, "a_pos": ap, "video": frozen}, tmp_path / "ctx.pt")
    v_ch, a_ch = pipe.vae.config.latent_channels, pipe.audio_vae.config.latent_channels
    R.run("two_stage", mode="v2a", files={k: str(v) for k, v in ltx25_set.items()}, inputs=tmp_path / "ctx.pt",
          out=tmp_path / "v2a.pt", height=HEIGHT, width=WIDTH, frames=FRAMES, fps=FPS, seed=SEED, steps=STEPS,
          video_channels=v_ch, audio_channels=a_ch, audio_mel_bins=out.audio.shape[-1])
    ref = torch.load(tmp_path / "v2a.pt")
    audio = L.normalize_audio_tokens(L.pack_audio(out.audio), pipe.audio_vae.latents_mean, pipe.audio_vae.latents_std)
    err = (audio - L.pack_audio(ref["audio"])).abs().max().item()
    print(f"v2a: max |audio| err {err:.2e} (latent scale {ref['audio'].abs().max().item():.2f})")
    assert err <= TOL
    from diffusers_ltx2.transformer import passes as transformer_passes  # the frozen video at the step's sigma

    monkeypatch.setattr(transformer_passes, "frozen_sigmas", lambda rule, sigma, video, audio: (sigma, sigma))
    out = one(conditions=[FrozenVideo(frames)], guider=neutral, num_inference_steps=STEPS, **_kw(embeds))
    audio = L.normalize_audio_tokens(L.pack_audio(out.audio), pipe.audio_vae.latents_mean, pipe.audio_vae.latents_std)
    assert (audio - L.pack_audio(ref["audio"])).abs().max().item() > 10 * TOL
