"""Guidance flags of the generating `ltx2` commands: every per-modality dial of `MultimodalGuider`.

    --cfg 3 --audio-cfg 7 --stg 1 --audio-stg 1 --modality-scale 3 --audio-modality-scale 3
    --rescale 0.7 --audio-rescale 0.7 --skip-step 0 --audio-skip-step 0
    --no-perturb-attn / --no-audio-perturb-attn --no-cross-attn / --no-audio-cross-attn --skip-blocks 29
    --no-guidance (all dials off, for distilled checkpoints)

Defaults are the recommended values; `--skip-blocks` defaults to the model's own STG block (29 for LTX-2.0,
28 for 2.3). The flags check the same ranges as `ModalityGuidanceParams` (which checks again when the guider is
built), so a bad dial fails before anything is imported.
"""

from __future__ import annotations

from ..recommended import RECOMMENDED_AUDIO, RECOMMENDED_VIDEO  # plain data: --help imports no torch/diffusers
from .options import Option, number, whole

GROUP = "guidance (multimodal guidance dials, per modality)"

# (flag stem, field, parser, help)
_DIALS = (
    ("cfg", "cfg", number(minimum=0), "classifier-free guidance scale (1 = off)"),
    ("stg", "stg", number(minimum=0), "spatio-temporal guidance scale (0 = off)"),
    ("modality-scale", "modality_scale", number(minimum=0), "modality guidance scale (1 = off)"),
    ("rescale", "rescale", number(0, 1), "guidance rescale in [0, 1] (0 = off)"),
    ("skip-step", "skip_step", whole(0),
     "recompute only every N+1 steps, reusing the last prediction (0 = never skip)"),
)
_FIELDS = ("cfg", "stg", "modality_scale", "rescale", "skip_step")


def _block_list(raw) -> tuple[int, ...]:
    if isinstance(raw, (list, tuple)):
        parts = list(raw)
    else:
        parts = [p for p in str(raw).replace(" ", "").split(",") if p]
    try:
        blocks = tuple(int(p) for p in parts)
    except (TypeError, ValueError):
        raise ValueError(f"must be comma-separated block indices, got {raw!r}") from None
    if not blocks:
        raise ValueError("needs at least one block index")
    return blocks


def _options() -> tuple[Option, ...]:
    out = []
    defaults = {"video": RECOMMENDED_VIDEO, "audio": RECOMMENDED_AUDIO}
    for modality, prefix in (("video", "--"), ("audio", "--audio-")):
        for stem, field, parse, text in _DIALS:
            default = defaults[modality].get(field, 0 if field == "skip_step" else None)
            out.append(Option(f"{prefix}{stem}", f"{modality}: {text}", parse, default=default,
                              dest=f"{modality}_{field}", group=GROUP))
        no = prefix.replace("--", "--no-", 1)
        other = "audio->video" if modality == "video" else "video->audio"
        out.append(Option(f"{no}perturb-attn", f"{modality}: STG does not perturb its self-attention", switch=True,
                          dest=f"{modality}_no_perturb_attn", group=GROUP))
        out.append(Option(f"{no}cross-attn", f"{modality}: switch off {other} attention in every pass", switch=True,
                          dest=f"{modality}_no_cross_attn", group=GROUP))
    out.append(Option("--skip-blocks", "comma-separated STG blocks", _block_list, metavar="N[,N...]",
                      default_text="the model's, 29 for LTX-2.0 and 28 for 2.3", group=GROUP))
    out.append(Option("--no-guidance", "every dial off, one transformer pass per step (distilled checkpoints); "
                                       "overrides the dials above", switch=True, group=GROUP))
    return tuple(out)


GUIDANCE_OPTIONS = _options()


def guider_from_args(args):
    """The `MultimodalGuider` described by checked flags (raises `ValueError` on invalid values)."""
    from ..guiders import ModalityGuidanceParams, MultimodalGuider

    if getattr(args, "no_guidance", False):
        off = ModalityGuidanceParams(cfg=1.0, stg=0.0, modality_scale=1.0, rescale=0.0)
        return MultimodalGuider(video=off, audio=off, skip_blocks=args.skip_blocks)
    params = {}
    for modality in ("video", "audio"):
        fields = {f: getattr(args, f"{modality}_{f}") for f in _FIELDS if getattr(args, f"{modality}_{f}") is not None}
        params[modality] = ModalityGuidanceParams(
            **fields, perturb_attn=not getattr(args, f"{modality}_no_perturb_attn"),
            cross_attn=not getattr(args, f"{modality}_no_cross_attn"))
    return MultimodalGuider(video=params["video"], audio=params["audio"], skip_blocks=args.skip_blocks)


def guidance_passes(args) -> int:
    """Transformer passes batched per call at the first step (1 with --sequential-passes); for the memory plan."""
    if getattr(args, "sequential_passes", False):
        return 1
    guider = guider_from_args(args)
    return max(1, len(guider.plan(0, max(1, args.steps or 8), 1.0).passes))
