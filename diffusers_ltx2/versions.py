"""What differs between LTX-2 model versions (2.0, 2.3, 2.4/2.5) at run time, as plain functions.

A module of plain data and functions with no torch/diffusers import, so the command line and the pipeline layer can
both ask "which version is this model" and "which default applies to it":

- `model_version_of`: the version a converted checkpoint declares (its `model_version` metadata, recorded by
  `ltx2 convert` / `from_single_file`), or the one its transformer config implies (diffusers-format folders carry
  no version);
- `default_image_crf`: the H.264 CRF images are recompressed at before VAE encoding (official
  `ltx_pipelines/utils/constants.py`: `DEFAULT_IMAGE_CRF = 33`, `LTX_2_4_IMAGE_CRF = 18` from 2.4 on);
- `cross_timestep_rule`: which timesteps drive the audio<->video cross-attention AdaLN (see
  `CROSS_TIMESTEP_RULES` and `pipelines/cross_timestep.py`);
- `conditioning_rule`: which ltx-core's conditioning semantics a version runs with (see `CONDITIONING_RULES`).
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "CONDITIONING_RULES",
    "CROSS_TIMESTEP_RULES",
    "LTX_2_4_IMAGE_CRF",
    "PRE_2_4_IMAGE_CRF",
    "conditioning_rule",
    "cross_timestep_rule",
    "default_image_crf",
    "is_at_least",
    "model_version_of",
    "parse_model_version",
]

#: official `DEFAULT_IMAGE_CRF` (LTX-2.0 / 2.3) and `LTX_2_4_IMAGE_CRF` (2.4 and later)
PRE_2_4_IMAGE_CRF = 33
LTX_2_4_IMAGE_CRF = 18

#: How the audio<->video cross-attention AdaLN of each modality takes its timesteps (scale/shift, gate):
#:
#: - ``"cross_sigma"``: both from the *other* modality's sigma. ltx-core 1.0.0 (2026-03-04, the LTX-2.3 release,
#:   the PyPI package) and diffusers' ``use_cross_timestep=True``.
#: - ``"own_scale_shift_cross_gate"``: scale/shift from the modality's *own* per-token timesteps, gate from the other
#:   modality's sigma times ``av_ca_timestep_scale_multiplier / timestep_scale_multiplier``. ltx-core 1.1.4
#:   (2026-05-28) through 1.2.0 (the LTX-2.5 release, the only official code that ever ran 2.5), with the matching
#:   ComfyUI fix by Lightricks (Comfy-Org/ComfyUI#14097, 2026-05-25: "each modality's scale/shift should be
#:   conditioned on its own timestep"); also the LTX-2 paper's figure (b) (gate from the other modality's timestep,
#:   Lightricks/LTX-2#60).
#: - ``"own"``: both from the modality's own timesteps: ltx-core at the LTX-2.0 release (2026-01-05 .. 02-09) and
#:   diffusers' ``use_cross_timestep=False`` ("legacy").
CROSS_TIMESTEP_RULES = ("cross_sigma", "own_scale_shift_cross_gate", "own")

#: How conditioned tokens are noised and where single-image keyframes sit (`latents.noiser`, `conditioning`):
#:
#: - ``"ltx_core_1_0"``: ltx-core 1.0.0 `GaussianNoiser`: `noise * m + clean * (1 - m)`, `m = mask * noise_scale`,
#:   every token starting from its clean value; a keyframe image's time box spans its latent frame's 8 pixel frames.
#: - ``"ltx_core_1_2"``: ltx-core 1.2.0: `lerp(clean, lerp(start, noise, noise_scale), mask)` where `start` is the
#:   stage's start latent for target tokens (not the first-frame image that `VideoConditionByLatentIndex` writes
#:   into the clean tokens only) and 0 for appended keyframe / reference tokens (`torch.zeros_like(tokens)`); a
#:   single-image keyframe's time box is `[frame, frame + 1)` (`VideoConditionByKeyframeIndex(num_pixel_frames=1)`).
#:   The two agree at noise scale 1 and on tokens with mask 0 or 1; they differ on partly conditioned tokens
#:   (strength strictly between 0 and 1) of a stage that starts below noise scale 1 (refinement stage 2).
CONDITIONING_RULES = ("ltx_core_1_0", "ltx_core_1_2")


def parse_model_version(version: str | None) -> tuple[int, ...]:
    """``"2.5.0"`` -> ``(2, 5, 0)``; ``"v2.3"`` -> ``(2, 3)``; pre-release tags (``"2.4-rc2"``, ``"2.3.rc1"``) keep
    the numeric prefix of their generation; ``None`` / unparseable -> ``()`` (below every version), as ltx-core's
    `parse_model_version` after ltx-pipelines' separator normalization."""
    if not version:
        return ()
    parts = []
    for part in str(version).strip().lstrip("vV").replace("-", ".").split("."):
        if not part.isdigit():
            break
        parts.append(int(part))
    return tuple(parts)


def is_at_least(version: str | None, minimum: tuple[int, ...]) -> bool:
    """Whether ``version`` (a ``model_version`` string) is ``minimum`` or newer."""
    return parse_model_version(version) >= minimum


def model_version_of(transformer_config: Mapping | None = None, declared: str | None = None) -> str:
    """The major.minor LTX-2 version of a model: ``declared`` (a checkpoint's ``model_version``) when given, else
    inferred from a diffusers `LTX2VideoTransformer3DModel` config: LTX-2.5 switches off the feed-forward biases
    and adds the keyframe position embedding (ltx-core 1.2 `model_configurator.py`), 2.3 has gated attention and
    no caption projection in the transformer, 2.0 neither.
    """
    if declared:
        parsed = parse_model_version(declared)
        if len(parsed) >= 2:
            return f"{parsed[0]}.{parsed[1]}"
    cfg = dict(transformer_config or {})
    if cfg.get("use_keyframes_abs_pos_embedding") or cfg.get("ff_bias") is False:
        return "2.5"
    if cfg.get("gated_attn") or cfg.get("cross_attn_mod") or cfg.get("use_prompt_embeddings") is False:
        return "2.3"
    return "2.0"


def default_image_crf(version: str | None) -> int:
    """H.264 CRF for image conditions of a model version: 18 from LTX-2.4 on, 33 before (and when unknown).

    Source: official `ltx_pipelines/utils/constants.py` 1.2.0 (`LTX_2_4_PARAMS.default_image_crf = 18`, every older
    generation `DEFAULT_IMAGE_CRF = 33`, chosen from the checkpoint's ``model_version``).
    """
    return LTX_2_4_IMAGE_CRF if is_at_least(version, (2, 4)) else PRE_2_4_IMAGE_CRF


def cross_timestep_rule(version: str | None) -> str:
    """The cross-attention AdaLN timestep rule a model version runs with (one of `CROSS_TIMESTEP_RULES`).

    LTX-2.5 (and 2.4): ``"own_scale_shift_cross_gate"``, the rule of ltx-core 1.2.0, the official code released with
    2.5. LTX-2.0 / 2.3: ``"cross_sigma"``, the rule of ltx-core 1.0.0, which this project keeps as the 2.0/2.3
    reference (its parity tests). Lightricks later called that rule a bug for the then-current 2.3 model
    (ComfyUI#14097) and ltx-core >= 1.1.4 applies the 2.5 rule to every checkpoint, so 2.3 may well have been
    trained with it; pass ``use_cross_timestep=...`` / the rule explicitly to follow 1.2 on 2.3. The rules differ
    only when the two modalities' per-token timesteps differ from their sigmas (conditioned tokens).
    """
    return "own_scale_shift_cross_gate" if is_at_least(version, (2, 4)) else "cross_sigma"


def conditioning_rule(version: str | None) -> str:
    """The conditioning rule a model version runs with (one of `CONDITIONING_RULES`): ``"ltx_core_1_2"`` for LTX-2.4
    and later (ltx-core 1.2.0, the official code released with 2.5), ``"ltx_core_1_0"`` for 2.0 / 2.3 (ltx-core 1.0.0,
    this project's reference for them), as `cross_timestep_rule` splits the versions."""
    return "ltx_core_1_2" if is_at_least(version, (2, 4)) else "ltx_core_1_0"
