"""Guidance flags of `ltx2 generate`: every per-modality dial of `MultimodalGuider`.

    --cfg 3 --audio-cfg 7 --stg 1 --audio-stg 1 --modality-scale 3 --audio-modality-scale 3
    --rescale 0.7 --audio-rescale 0.7 --skip-step 0 --audio-skip-step 0
    --no-perturb-attn / --no-audio-perturb-attn --no-cross-attn / --no-audio-cross-attn --skip-blocks 29
    --no-guidance (all dials off, for distilled checkpoints)

Defaults are the recommended values; `--skip-blocks` defaults to the model's own STG block (29 for LTX-2.0,
28 for 2.3). Invalid values are rejected by `ModalityGuidanceParams` with the same messages as the Python API.
"""

from __future__ import annotations

import argparse

from ..recommended import RECOMMENDED_AUDIO, RECOMMENDED_VIDEO  # plain data: --help imports no torch/diffusers

# (flag stem, field, type, help)
_DIALS = (
    ("cfg", "cfg", float, "classifier-free guidance scale (1 = off)"),
    ("stg", "stg", float, "spatio-temporal guidance scale (0 = off)"),
    ("modality-scale", "modality_scale", float, "modality guidance scale (1 = off)"),
    ("rescale", "rescale", float, "guidance rescale in [0, 1] (0 = off)"),
    ("skip-step", "skip_step", int, "recompute only every N+1 steps, reusing the last prediction (0 = never skip)"),
)


def _dest(modality: str, field: str) -> str:
    return f"{modality}_{field}"


def add_guidance_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the multimodal guidance flags to `parser` (video flags plain, audio flags with `--audio-`)."""
    group = parser.add_argument_group("guidance", "multimodal guidance dials, per modality")
    defaults = {"video": RECOMMENDED_VIDEO, "audio": RECOMMENDED_AUDIO}
    for modality, prefix in (("video", "--"), ("audio", "--audio-")):
        for stem, field, kind, text in _DIALS:
            # skip_step has no recommended value: None leaves ModalityGuidanceParams' own default (0)
            group.add_argument(f"{prefix}{stem}", dest=_dest(modality, field), type=kind,
                               default=defaults[modality].get(field), help=f"{modality}: {text}")
        group.add_argument(f"{prefix.replace('--', '--no-', 1)}perturb-attn", dest=_dest(modality, "perturb_attn"),
                           action="store_false", help=f"{modality}: STG does not perturb its self-attention")
        other = "audio->video" if modality == "video" else "video->audio"
        group.add_argument(f"{prefix.replace('--', '--no-', 1)}cross-attn", dest=_dest(modality, "cross_attn"),
                           action="store_false", help=f"{modality}: switch off {other} attention in every pass")
    group.add_argument("--skip-blocks", type=_block_list, default=None,
                       help="comma-separated STG blocks (default: the model's, 29 for LTX-2.0 and 28 for 2.3)")
    group.add_argument("--no-guidance", action="store_true",
                       help="every dial off, one transformer pass per step (distilled checkpoints); overrides the "
                            "dials above")


def _block_list(text: str) -> list[int]:
    try:
        blocks = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--skip-blocks must be comma-separated integers, got {text!r}") from None
    if not blocks:
        raise argparse.ArgumentTypeError("--skip-blocks needs at least one block index")
    return blocks


def guider_from_args(args: argparse.Namespace):
    """The `MultimodalGuider` described by parsed flags (raises `ValueError` on invalid values)."""
    from ..guiders import ModalityGuidanceParams, MultimodalGuider

    if getattr(args, "no_guidance", False):
        off = ModalityGuidanceParams(cfg=1.0, stg=0.0, modality_scale=1.0, rescale=0.0)
        return MultimodalGuider(video=off, audio=off, skip_blocks=args.skip_blocks)
    fields = ("cfg", "stg", "modality_scale", "rescale", "skip_step", "perturb_attn", "cross_attn")
    params = {
        modality: ModalityGuidanceParams(**{f: getattr(args, _dest(modality, f)) for f in fields
                                            if getattr(args, _dest(modality, f)) is not None})
        for modality in ("video", "audio")
    }
    return MultimodalGuider(video=params["video"], audio=params["audio"], skip_blocks=args.skip_blocks)
