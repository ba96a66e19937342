"""Guidance passes and the guided denoising loop against the official implementation (ltx-core / ltx-pipelines).

A tiny LTX-2.0 and LTX-2.3 transformer is built with ltx-core's own configurator and random weights, converted
into diffusers' `LTX2VideoTransformer3DModel` with the package's key map (diffusers'
`convert_ltx2_transformer_to_diffusers` plus the 2.3 prompt-AdaLN names) and config, and both are called on the
same inputs. Every pass kind our `GuidanceAttentionControl` runs in one batched call is compared with the ltx-core
call using the matching `BatchedPerturbationConfig` / `Modality(enabled=False)`, and `denoise()` with
`MultimodalGuider` against `euler_denoising_loop` + `multi_modal_guider_denoising_func` + `MultiModalGuider`.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

import ltx_reference  # noqa: F401,E402  (stubs torchaudio before ltx-core is imported)

from diffusers import LTX2VideoTransformer3DModel  # noqa: E402
from ltx_core.components.diffusion_steps import EulerDiffusionStep  # noqa: E402
from ltx_core.components.guiders import MultiModalGuider, MultiModalGuiderParams  # noqa: E402
from ltx_core.guidance.perturbations import (  # noqa: E402
    BatchedPerturbationConfig,
    Perturbation,
    PerturbationConfig,
)
from ltx_core.guidance.perturbations import PerturbationType as PT  # noqa: E402
from ltx_core.model.transformer.modality import Modality  # noqa: E402
from ltx_core.model.transformer.model import X0Model  # noqa: E402
from ltx_core.model.transformer.model_configurator import LTXModelConfigurator  # noqa: E402
from ltx_core.types import LatentState  # noqa: E402
from ltx_pipelines.utils.helpers import multi_modal_guider_denoising_func  # noqa: E402
from ltx_pipelines.utils.samplers import euler_denoising_loop  # noqa: E402

from diffusers_ltx2.conversion.configs import transformer_config  # noqa: E402
from diffusers_ltx2.conversion.keymap import map_transformer_key  # noqa: E402
from diffusers_ltx2.guiders import (  # noqa: E402
    GuidancePass,
    ModalityGuidanceParams,
    MultimodalGuider,
    StepPlan,
)
from diffusers_ltx2.transformer import GuidanceAttentionControl  # noqa: E402
from diffusers_ltx2.loaders.prompt_embeddings import PromptEmbeddings  # noqa: E402
from diffusers_ltx2.latents.state import ModalityLatents  # noqa: E402
from diffusers_ltx2.pipelines.denoising import denoise  # noqa: E402
from diffusers_ltx2.transformer.passes import TextContexts, TransformerPasses  # noqa: E402
from diffusers_ltx2.schedulers import LTX2Scheduler  # noqa: E402

_TRANSFORMER = {
    "activation_fn": "gelu-approximate", "attention_bias": True, "attention_type": "default", "dropout": 0.0,
    "cross_attention_norm": True, "double_self_attention": False, "norm_elementwise_affine": False,
    "norm_eps": 1e-06, "num_embeds_ada_norm": 1000, "num_vector_embeds": None, "only_cross_attention": False,
    "upcast_attention": False, "use_linear_projection": False, "qk_norm": "rms_norm",
    "standardization_norm": "rms_norm", "positional_embedding_type": "rope", "positional_embedding_theta": 10000.0,
    "positional_embedding_max_pos": [20, 2048, 2048], "timestep_scale_multiplier": 1000,
    "av_ca_timestep_scale_multiplier": 1000, "use_audio_video_cross_attention": True, "share_ff": False,
    "audio_positional_embedding_max_pos": [20], "av_cross_ada_norm": True, "use_middle_indices_grid": True,
    "rope_type": "split", "frequencies_precision": "float64",
    # tiny: 3 blocks so that the STG block (1) has blocks before and after it
    "num_layers": 3, "num_attention_heads": 2, "attention_head_dim": 8, "in_channels": 8, "out_channels": 8,
    "cross_attention_dim": 16, "audio_num_attention_heads": 2, "audio_attention_head_dim": 4,
    "audio_in_channels": 8, "audio_out_channels": 8, "audio_cross_attention_dim": 8, "caption_channels": 12,
}
_VERSIONS = {
    "2.0": _TRANSFORMER,
    "2.3": {**_TRANSFORMER, "apply_gated_attention": True, "cross_attention_adaln": True,
            "caption_proj_before_connector": True},
}
STG_BLOCKS = (1,)
F, H, W, NA, L = 2, 2, 3, 5, 6
NV = F * H * W


@dataclasses.dataclass
class Models:
    official: X0Model
    ours: LTX2VideoTransformer3DModel
    context_widths: tuple[int, int]


@pytest.fixture(scope="module", params=sorted(_VERSIONS))
def models(request) -> Models:
    config = {"transformer": _VERSIONS[request.param]}
    ref = LTXModelConfigurator.from_config(config).to_empty(device="cpu")  # caption projections start on meta
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)  # large enough that every path matters
    ref = ref.float().eval()
    ours = LTX2VideoTransformer3DModel(**transformer_config(config, request.param)).eval()
    ours.load_state_dict({map_transformer_key(k): v for k, v in ref.state_dict().items()}, strict=True)
    t = config["transformer"]
    widths = (t["caption_channels"],) * 2
    if t.get("caption_proj_before_connector"):
        widths = (t["num_attention_heads"] * t["attention_head_dim"],
                  t["audio_num_attention_heads"] * t["audio_attention_head_dim"])
    return Models(X0Model(ref), ours, widths)


def _inputs(models: Models, batch: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    tr = models.ours
    vmask = torch.ones(batch, NV)
    vmask[:, :3] = 0.0  # first-frame-like conditioned tokens: per-token timesteps 0
    clean = torch.randn(batch, NV, 8, generator=g) * (1 - vmask.unsqueeze(-1))
    video = ModalityLatents(torch.randn(batch, NV, 8, generator=g) * vmask.unsqueeze(-1) + clean, clean, vmask,
                            tr.rope.prepare_video_coords(batch, F, H, W, "cpu", fps=24.0), NV)
    audio = ModalityLatents(torch.randn(batch, NA, 8, generator=g), torch.zeros(batch, NA, 8), torch.ones(batch, NA),
                            tr.audio_rope.prepare_audio_coords(batch, NA, "cpu"), NA)
    cv, ca = models.context_widths

    def prompt():
        return PromptEmbeddings(torch.randn(batch, L, cv, generator=g), torch.randn(batch, L, ca, generator=g),
                                torch.ones(batch, L, dtype=torch.long))

    return video, audio, TextContexts(prompt(), prompt())


def _official_pass(models: Models, p: GuidancePass, video, audio, ctx: TextContexts, sigma: torch.Tensor):
    c = ctx.negative if p.negative else ctx.positive
    b = video.batch_size
    s = sigma.expand(b)

    def modality(m: ModalityLatents, context, enabled):
        return Modality(latent=m.latent, sigma=s, timesteps=m.denoise_mask.unsqueeze(-1) * sigma,
                        positions=m.coords, context=context, enabled=enabled)

    perturbations = []
    if p.perturb_video:
        perturbations.append(Perturbation(PT.SKIP_VIDEO_SELF_ATTN, list(STG_BLOCKS)))
    if p.perturb_audio:
        perturbations.append(Perturbation(PT.SKIP_AUDIO_SELF_ATTN, list(STG_BLOCKS)))
    if not p.a2v:
        perturbations.append(Perturbation(PT.SKIP_A2V_CROSS_ATTN, None))
    if not p.v2a:
        perturbations.append(Perturbation(PT.SKIP_V2A_CROSS_ATTN, None))
    config = BatchedPerturbationConfig([PerturbationConfig(perturbations) for _ in range(b)])
    with torch.no_grad():
        return models.official(modality(video, c.video_context, not p.freeze_video),
                               modality(audio, c.audio_context, not p.freeze_audio), config)


PASSES = (
    GuidancePass("cond"),
    GuidancePass("uncond", negative=True),
    GuidancePass("stg_both", perturb_video=True, perturb_audio=True),
    GuidancePass("stg_video", perturb_video=True),
    GuidancePass("stg_audio", perturb_audio=True),
    GuidancePass("isolated", a2v=False, v2a=False),
    GuidancePass("no_a2v", a2v=False),  # video cross_attn=False
    GuidancePass("no_v2a", v2a=False),  # audio cross_attn=False
    GuidancePass("video_frozen", freeze_video=True),  # official skip-step: video not recomputed
    GuidancePass("audio_frozen_stg", freeze_audio=True, perturb_video=True, perturb_audio=True),
)


def test_every_pass_matches_ltx_core_in_one_batched_call(models):
    video, audio, ctx = _inputs(models, batch=2)
    sigma = torch.tensor(0.7)
    runner = TransformerPasses(models.ours, attention_control=GuidanceAttentionControl(models.ours))
    with torch.no_grad():
        got = runner(StepPlan(PASSES, skip_blocks=STG_BLOCKS), video, audio, ctx, sigma)
    assert runner.num_calls == 1
    worst = 0.0
    for p in PASSES:
        ref_v, ref_a = _official_pass(models, p, video, audio, ctx, sigma)
        # fp32, same weights; observed max |diff| ~5e-6 on values up to ~10 (different kernels and op order).
        torch.testing.assert_close(got[p.name].video, ref_v, rtol=0, atol=1e-4, msg=f"{p.name} video")
        torch.testing.assert_close(got[p.name].audio, ref_a, rtol=0, atol=1e-4, msg=f"{p.name} audio")
        worst = max(worst, (got[p.name].video - ref_v).abs().max().item(), (got[p.name].audio - ref_a).abs().max().item())
    # the comparison is not vacuous: each pass really differs from the conditional one
    for p in PASSES[1:]:
        assert max((got[p.name].video - got["cond"].video).abs().max(),
                   (got[p.name].audio - got["cond"].audio).abs().max()) > 1e-3, p.name
    print(f"max |ours - ltx-core| over all passes: {worst:.2e}")


REC_V = ModalityGuidanceParams(cfg=3.0, stg=1.0, modality_scale=3.0, rescale=0.7)
REC_A = ModalityGuidanceParams(cfg=7.0, stg=1.0, modality_scale=3.0, rescale=0.7)
LOOPS = {
    "recommended": (REC_V, REC_A, 4),
    "audio_skip_1": (REC_V, dataclasses.replace(REC_A, skip_step=1), 4),
    "both_skip": (dataclasses.replace(REC_V, skip_step=2), dataclasses.replace(REC_A, skip_step=1), 6),
    "audio_only_stg": (ModalityGuidanceParams(modality_scale=2.0, rescale=0.5), dataclasses.replace(REC_A, rescale=0.0), 3),
}


@pytest.mark.parametrize("dials", sorted(LOOPS))
def test_guided_loop_matches_official(models, dials):
    vp, ap, steps = LOOPS[dials]
    video, audio, ctx = _inputs(models, batch=1, seed=3)  # the official loop takes a scalar sigma: batch 1
    scheduler = LTX2Scheduler()
    scheduler.set_timesteps(steps)
    sigmas = scheduler.sigmas.clone()

    def official(p: ModalityGuidanceParams, negative):
        params = MultiModalGuiderParams(cfg_scale=p.cfg, stg_scale=p.stg, stg_blocks=list(STG_BLOCKS),
                                        rescale_scale=p.rescale, modality_scale=p.modality_scale, skip_step=p.skip_step)
        return MultiModalGuider(params, negative_context=negative)

    fn = multi_modal_guider_denoising_func(
        official(vp, ctx.negative.video_context), official(ap, ctx.negative.audio_context),
        ctx.positive.video_context, ctx.positive.audio_context, models.official,
    )

    def state(m: ModalityLatents):
        return LatentState(latent=m.latent.clone(), denoise_mask=m.denoise_mask.unsqueeze(-1), positions=m.coords,
                           clean_latent=m.clean.clone())

    with torch.no_grad():
        ref_v, ref_a = euler_denoising_loop(sigmas, state(video), state(audio), EulerDiffusionStep(), fn)
        runner = TransformerPasses(models.ours, attention_control=GuidanceAttentionControl(models.ours))
        out_v, out_a = denoise(passes=runner, guider=MultimodalGuider(vp, ap, skip_blocks=list(STG_BLOCKS)),
                               sigmas=scheduler.sigmas, video=video, audio=audio, contexts=ctx)
    # Per-pass differences are ~5e-6 (test above); guidance amplifies them by up to
    # 1 + (cfg - 1) + stg + (modality - 1) = 10 and they accumulate over the steps: observed <= 3e-5 on latents of
    # magnitude ~10. 2e-4 keeps a margin while any semantic difference (a wrong pass, skip rule or rescale) is
    # >= 1e-2 (see the previous test).
    torch.testing.assert_close(out_v.latent, ref_v.latent, rtol=0, atol=2e-4)
    torch.testing.assert_close(out_a.latent, ref_a.latent, rtol=0, atol=2e-4)
    assert (out_v.latent - video.latent).abs().max() > 0.1  # it denoised
    expected_calls = sum(vp.recomputes_at(i) or ap.recomputes_at(i) for i in range(steps))
    assert runner.num_calls == expected_calls  # one batched call per step; none when both modalities skip
