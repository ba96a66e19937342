"""IC-LoRA reference conditioning against the official implementation (ltx-core 1.0.0), fp32, tiny weights.

The official side builds its state with ltx-core's own `VideoLatentTools`, `VideoConditionByReferenceLatent`
and `ConditioningItemAttentionStrengthWrapper`, and runs its `X0Model` + `EulerDiffusionStep` with the
ltx-pipelines post-processing; ours uses the `ReferenceVideo` condition (from latents), `TransformerPasses` and `denoise` on the converted
diffusers transformer. Tolerance 1e-4 absolute: both sides are fp32 and compute the same math in a different
op order (observed differences ~1e-6).
"""

from __future__ import annotations

import pytest
import torch

# official_checkpoints imports ltx_reference, which stubs torchaudio before anything imports ltx_core
from official_checkpoints import GEMMA_HIDDEN, load_official, write_official_checkpoint

from diffusers import LTX2VideoTransformer3DModel
from ltx_core.components.diffusion_steps import EulerDiffusionStep
from ltx_core.components.patchifiers import VideoLatentPatchifier
from ltx_core.conditioning import ConditioningItemAttentionStrengthWrapper, VideoConditionByReferenceLatent
from ltx_core.guidance.perturbations import BatchedPerturbationConfig
from ltx_core.model.transformer.modality import Modality
from ltx_core.model.transformer.model import X0Model
from ltx_core.tools import VideoLatentTools
from ltx_core.types import LatentState, VideoLatentShape

from diffusers_ltx2.conversion import convert_single_file
from diffusers_ltx2.guiders import ClassifierFreeGuidance
from diffusers_ltx2.loaders.prompt_embeddings import PromptEmbeddings
from diffusers_ltx2.latents.state import ModalityLatents
from diffusers_ltx2.pipelines.denoising import denoise
from diffusers_ltx2.transformer.passes import TextContexts, TransformerPasses
from diffusers_ltx2.conditioning import ConditioningState, ReferenceVideo
from diffusers_ltx2.latents.geometry import ClipGeometry
from diffusers_ltx2.pipelines.encoder import ModelLatentEncoder
from diffusers_ltx2.schedulers import LTX2Scheduler

FPS = 24.0
SIGMAS = [0.8, 0.45]
C = 8  # latent channels of the tiny official config


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("icparity")
    src = root / "official.safetensors"
    write_official_checkpoint(src, "2.0", seed=3)
    out = convert_single_file(src, root / "diffusers", progress=False)
    official = X0Model(load_official(src, "transformer")).eval()
    ours = LTX2VideoTransformer3DModel.from_pretrained(out / "transformer", torch_dtype=torch.float32).eval()
    return official, ours


def _with_reference(model, video, ref, *, factor, strength=1.0, attention=1.0):
    """`video` with our `ReferenceVideo` condition applied (reference latents given; positions from `model`'s rope,
    as the pipelines' encoder gives them)."""
    placeholder = ModalityLatents(torch.zeros(1, 1, 1), torch.zeros(1, 1, 1), torch.ones(1, 1),
                                  torch.zeros(1, 1, 1, 2), 1)
    state = ConditioningState(video=video, audio=placeholder)
    geometry = ClipGeometry(batch_size=video.batch_size, num_frames=9, height=128, width=128, frame_rate=FPS)
    n = video.latent.shape[1]
    ReferenceVideo(latents=ref, strength=strength, downscale_factor=factor,
                   attention_strength=attention).apply_to(state, ModelLatentEncoder(model), geometry)
    # this test skips the noiser (its states start from given latents): ltx-core 1.0.0's reference condition
    # appends the tokens to `latent` as well, where ours leaves the appended tokens' pre-noise start at 0
    # (ltx-core 1.2's) for the noiser to fill (`latents.noiser`: 1.0's rule takes them from `clean`)
    state.video.latent[:, n:] = state.video.clean[:, n:]
    return state.video


def _inputs(factor: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    f, h, w = 2, 4, 4
    ta, ctx = 5, 6
    return {
        "grid": (f, h, w),
        "noise": torch.randn(1, f * h * w, C, generator=g),
        "ref": torch.randn(1, C, f, h // factor, w // factor, generator=g),
        "audio": torch.randn(1, ta, C, generator=g),
        "v_ctx": torch.randn(1, ctx, GEMMA_HIDDEN, generator=g),
        "a_ctx": torch.randn(1, ctx, GEMMA_HIDDEN, generator=g),
    }


def _audio_positions(ta: int) -> torch.Tensor:
    t = torch.arange(ta, dtype=torch.float32)
    return torch.stack([t / 25, (t + 1) / 25], -1)[None, None].contiguous()


def _run_official(model, x, factor, strength, attention):
    f, h, w = x["grid"]
    tools = VideoLatentTools(VideoLatentPatchifier(patch_size=1), VideoLatentShape(1, C, f, h, w), fps=FPS)
    state = tools.create_initial_state(torch.device("cpu"), torch.float32)
    state = LatentState(x["noise"].clone(), state.denoise_mask, state.positions, state.clean_latent)
    item = VideoConditionByReferenceLatent(x["ref"], downscale_factor=factor, strength=strength)
    if attention is not None:
        item = ConditioningItemAttentionStrengthWrapper(item, attention_mask=attention)
    state = item.apply_to(state, tools)
    ta = x["audio"].shape[1]
    audio = LatentState(x["audio"].clone(), torch.ones(1, ta, 1), _audio_positions(ta), torch.zeros(1, ta, C))
    sigmas = torch.tensor(SIGMAS + [0.0])
    stepper, steps = EulerDiffusionStep(), []
    for i in range(len(SIGMAS)):
        sigma = sigmas[i]

        def modality(s, ctx):
            return Modality(latent=s.latent, sigma=sigma.reshape(1), timesteps=s.denoise_mask * sigma,
                            positions=s.positions, context=ctx, context_mask=None, attention_mask=s.attention_mask)

        dv, da = model(modality(state, x["v_ctx"]), modality(audio, x["a_ctx"]), BatchedPerturbationConfig.empty(1))
        dv = dv * state.denoise_mask + state.clean_latent * (1 - state.denoise_mask)
        state = LatentState(stepper.step(state.latent, dv, sigmas, i), state.denoise_mask, state.positions,
                            state.clean_latent, state.attention_mask)
        audio = LatentState(stepper.step(audio.latent, da, sigmas, i), audio.denoise_mask, audio.positions,
                            audio.clean_latent)
        steps.append(state.latent)
    return state, steps


def _run_ours(model, x, factor, strength, attention):
    f, h, w = x["grid"]
    coords = model.rope.prepare_video_coords(1, f, h, w, torch.device("cpu"), fps=FPS)
    n = f * h * w
    video = ModalityLatents(latent=x["noise"].clone(), clean=torch.zeros_like(x["noise"]),
                            denoise_mask=torch.ones(1, n), coords=coords, num_target_tokens=n)
    video = _with_reference(model, video, x["ref"], factor=factor, strength=strength,
                            attention=1.0 if attention is None else attention)
    ta = x["audio"].shape[1]
    audio = ModalityLatents(latent=x["audio"].clone(), clean=torch.zeros_like(x["audio"]),
                            denoise_mask=torch.ones(1, ta), coords=_audio_positions(ta), num_target_tokens=ta)
    emb = PromptEmbeddings(x["v_ctx"], x["a_ctx"], torch.ones(1, x["v_ctx"].shape[1], dtype=torch.int64))
    scheduler = LTX2Scheduler()
    scheduler.set_timesteps(sigmas=SIGMAS)
    steps = []

    def on_step_end(i, sigma, v, a):
        steps.append(v.latent)

    video, _ = denoise(passes=TransformerPasses(model), guider=ClassifierFreeGuidance(1.0, 1.0),
                       sigmas=scheduler.sigmas, video=video, audio=audio, contexts=TextContexts(emb),
                       on_step_end=on_step_end)
    return video, steps


@torch.no_grad()
@pytest.mark.parametrize(
    "factor,strength,attention",
    [(2, 1.0, None), (2, 1.0, 0.5), (1, 1.0, 0.3), (2, 0.6, 0.75)],
    ids=["f2", "f2-attn0.5", "f1-attn0.3", "f2-partial-attn0.75"],
)
def test_reference_steps_match_ltx_core(models, factor, strength, attention):
    official, ours = models
    x = _inputs(factor)
    ref_state, ref_steps = _run_official(official, x, factor, strength, attention)
    video, our_steps = _run_ours(ours, x, factor, strength, attention)
    # Same token layout, positions and denoise mask as the official state.
    assert video.latent.shape == ref_state.latent.shape
    torch.testing.assert_close(video.coords, ref_state.positions, rtol=0, atol=1e-6)
    torch.testing.assert_close(video.denoise_mask, ref_state.denoise_mask.squeeze(-1), rtol=0, atol=0)
    if attention is not None:
        official_bias = torch.log(ref_state.attention_mask)
        torch.testing.assert_close(video.self_attention_bias, official_bias, rtol=0, atol=1e-6)
    else:
        assert video.self_attention_bias is None and ref_state.attention_mask is None
    errors = [(a - b).abs().max().item() for a, b in zip(our_steps, ref_steps)]
    print(f"IC-LoRA parity f={factor} strength={strength} attention={attention}: max abs error per step {errors}")
    assert max(errors) < 1e-4


@torch.no_grad()
def test_fractional_strength_differs_from_diffusers_mask(models):
    """The reason for the log bias: diffusers' `video_self_attention_mask` (`-10000 * (1 - mask)`) gives a
    different prediction at strength 0.5, while the official path (checked above) is reproduced."""
    from diffusers_ltx2.transformer.attention_bias import self_attention_bias

    _, ours = models
    x = _inputs(2)
    f, h, w = x["grid"]
    n = f * h * w
    coords = ours.rope.prepare_video_coords(1, f, h, w, torch.device("cpu"), fps=FPS)
    video = ModalityLatents(x["noise"], torch.zeros_like(x["noise"]), torch.ones(1, n), coords, n)
    video = _with_reference(ours, video, x["ref"], factor=2, attention=0.5)  # 8 reference tokens at weight 0.5
    ta = x["audio"].shape[1]
    kwargs = dict(
        hidden_states=video.latent, audio_hidden_states=x["audio"], encoder_hidden_states=x["v_ctx"],
        audio_encoder_hidden_states=x["a_ctx"], timestep=video.denoise_mask * 800.0,
        audio_timestep=torch.full((1, ta), 800.0), sigma=torch.tensor([800.0]), audio_sigma=torch.tensor([800.0]),
        video_coords=video.coords, audio_coords=_audio_positions(ta), use_cross_timestep=True, return_dict=False,
    )
    with self_attention_bias(ours, video.self_attention_bias):
        ours_out = ours(**kwargs)[0]
    diffusers_out = ours(**kwargs, video_self_attention_mask=torch.exp(video.self_attention_bias))[0]
    unbiased = ours(**kwargs)[0]
    diff = (ours_out - diffusers_out).abs().max().item()
    effect = (ours_out - unbiased).abs().max().item()
    print(f"log bias vs diffusers' mask at strength 0.5: max diff {diff:.3e} (bias effect {effect:.3e})")
    assert effect > 1e-3  # the bias matters at all
    assert diff > 1e-3  # and diffusers' conversion is not the official one


@torch.no_grad()
def test_bias_composes_with_batched_stg(models):
    """Conditional + STG-perturbed passes in one batched call (guidance attention processors on block 1) with
    the reference bias: each row equals ltx-core with the same attention mask and perturbation."""
    from ltx_core.guidance.perturbations import Perturbation, PerturbationConfig, PerturbationType

    from diffusers_ltx2.guiders import GuidancePass, StepPlan
    from diffusers_ltx2.transformer import GuidanceAttentionControl

    official, ours = models
    x = _inputs(2, seed=5)
    f, h, w = x["grid"]
    tools = VideoLatentTools(VideoLatentPatchifier(patch_size=1), VideoLatentShape(1, C, f, h, w), fps=FPS)
    state = tools.create_initial_state(torch.device("cpu"), torch.float32)
    state = LatentState(x["noise"].clone(), state.denoise_mask, state.positions, state.clean_latent)
    state = ConditioningItemAttentionStrengthWrapper(
        VideoConditionByReferenceLatent(x["ref"], downscale_factor=2), attention_mask=0.4).apply_to(state, tools)
    ta = x["audio"].shape[1]
    sigma = torch.tensor(0.7)
    perturbed = BatchedPerturbationConfig([PerturbationConfig([Perturbation(PerturbationType.SKIP_VIDEO_SELF_ATTN,
                                                                              [1])])])
    outs = []
    for perturbation in (BatchedPerturbationConfig.empty(1), perturbed):
        v = Modality(latent=state.latent, sigma=sigma.reshape(1), timesteps=state.denoise_mask * sigma,
                     positions=state.positions, context=x["v_ctx"], attention_mask=state.attention_mask)
        a = Modality(latent=x["audio"], sigma=sigma.reshape(1), timesteps=torch.full((1, ta, 1), 0.7),
                     positions=_audio_positions(ta), context=x["a_ctx"])
        outs.append(official(v, a, perturbation)[0])

    n = f * h * w
    video = ModalityLatents(x["noise"].clone(), torch.zeros_like(x["noise"]), torch.ones(1, n),
                            ours.rope.prepare_video_coords(1, f, h, w, torch.device("cpu"), fps=FPS), n)
    video = _with_reference(ours, video, x["ref"], factor=2, attention=0.4)
    torch.testing.assert_close(video.coords, state.positions, rtol=0, atol=1e-6)  # the official positions
    audio = ModalityLatents(x["audio"].clone(), torch.zeros_like(x["audio"]), torch.ones(1, ta),
                            _audio_positions(ta), ta)
    emb = PromptEmbeddings(x["v_ctx"], x["a_ctx"], torch.ones(1, x["v_ctx"].shape[1], dtype=torch.int64))
    passes = TransformerPasses(ours, attention_control=GuidanceAttentionControl(ours))
    plan = StepPlan(passes=(GuidancePass("cond"), GuidancePass("stg", perturb_video=True)), skip_blocks=(1,))
    preds = passes(plan, video, audio, TextContexts(emb), sigma)
    assert passes.num_calls == 1
    err_cond = (preds["cond"].video - outs[0]).abs().max().item()
    err_stg = (preds["stg"].video - outs[1]).abs().max().item()
    print(f"bias + batched STG: cond row {err_cond:.2e}, perturbed row {err_stg:.2e}")
    assert (outs[1] - outs[0]).abs().max() > 1e-3
    assert err_cond < 1e-4 and err_stg < 1e-4


@pytest.mark.slow
@torch.no_grad()
def test_ic_lora_run_with_seed_matches_ltx_pipelines(tmp_path):
    """Whole call, text features -> final latents, on a converted checkpoint: our `LTX2ICLoRAPipeline` with
    `generator=manual_seed(7)` against ltx-pipelines' IC-LoRA stage (conditioning applied, then `GaussianNoiser`
    over video + reference tokens, then audio; `simple_denoising_func` + `euler_denoising_loop`) with the same
    seed. A different noise order changes the audio and video latents by O(1)."""
    from ltx_core.components.noisers import GaussianNoiser
    from ltx_core.components.patchifiers import AudioPatchifier
    from ltx_core.tools import AudioLatentTools
    from ltx_core.types import AudioLatentShape, VideoPixelShape
    from ltx_pipelines.utils.helpers import create_noised_state, simple_denoising_func
    from ltx_pipelines.utils.samplers import euler_denoising_loop
    from test_official_pipeline_parity import _config, _features, _gemma_states

    from diffusers_ltx2 import LTX2ICLoRAPipeline
    from diffusers_ltx2.latents import layout as L

    clip = dict(height=128, width=128, num_frames=17, frame_rate=24.0)
    src = tmp_path / "official.safetensors"
    write_official_checkpoint(src, "2.0", seed=5, config=_config("2.0"))
    pipe = LTX2ICLoRAPipeline.from_pretrained(convert_single_file(src, tmp_path / "diffusers", progress=False))
    states = _gemma_states(1, valid=37)
    control = torch.rand(17, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    out = pipe(prompt_embeds=_features(*states), control_video=control, reference_downscale_factor=2,
               control_strength=0.8, guider=ClassifierFreeGuidance(1.0, 1.0), num_inference_steps=3,
               generator=torch.Generator().manual_seed(7), output_type="latent", **clip)
    ours_video = L.pack_video(L.normalize_video(out.frames, pipe.vae.latents_mean, pipe.vae.latents_std))
    ours_audio = L.normalize_audio_tokens(L.pack_audio(out.audio), pipe.audio_vae.latents_mean,
                                          pipe.audio_vae.latents_std)

    # official: the same reference latent (our VAE encode of the fitted control video), positions from its tools
    ref_latent = pipe.encode_video(pipe.fit_control_video(control, 17, 64, 64), 1, "cpu")
    v_ctx, a_ctx, _ = load_official(src, "embeddings").process_hidden_states(*states, padding_side="left")
    pixel = VideoPixelShape(batch=1, frames=clip["num_frames"], height=clip["height"], width=clip["width"],
                            fps=clip["frame_rate"])
    video_tools = VideoLatentTools(VideoLatentPatchifier(patch_size=1), VideoLatentShape.from_pixel_shape(
        pixel, latent_channels=pipe.vae.config.latent_channels), clip["frame_rate"])
    audio_tools = AudioLatentTools(AudioPatchifier(patch_size=1), AudioLatentShape.from_video_pixel_shape(
        pixel, channels=pipe.audio_vae.config.latent_channels))
    noiser = GaussianNoiser(torch.Generator().manual_seed(7))
    cpu = torch.device("cpu")
    video_state = create_noised_state(
        video_tools, [VideoConditionByReferenceLatent(ref_latent, downscale_factor=2, strength=0.8)], noiser,
        torch.float32, cpu)
    audio_state = create_noised_state(audio_tools, [], noiser, torch.float32, cpu)
    fn = simple_denoising_func(v_ctx, a_ctx, X0Model(load_official(src, "transformer")).eval())
    ref_video, ref_audio = euler_denoising_loop(pipe.scheduler.sigmas_for(3), video_state, audio_state,
                                                EulerDiffusionStep(), fn)
    ref_video = video_tools.clear_conditioning(ref_video)
    err_v = (ours_video - ref_video.latent).abs().max().item()
    err_a = (ours_audio - ref_audio.latent).abs().max().item()
    print(f"IC-LoRA seeded run vs ltx-pipelines: video {err_v:.2e}, audio {err_a:.2e}")
    # fp32 both sides, same math in another op order over 3 steps (per-step parity above: ~1e-6)
    assert err_v < 1e-4 and err_a < 1e-4
    assert (ours_video - video_state.latent[:, : ours_video.shape[1]]).abs().max() > 0.1  # it denoised
