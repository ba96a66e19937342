"""`ltx2 generate` options of the sampler and of prompt enhancement, checked before any model loads, and the
pipeline-call keywords they become."""

from __future__ import annotations

SAMPLER_NAMES = ("euler", "euler_ancestral", "res_2s")  # diffusers_ltx2.schedulers.samplers.SAMPLERS (no torch here)


def add_sampling_arguments(p) -> None:
    """`--sampler`, `--stage-2-sampler`."""
    g = p.add_argument_group("sampler", "how each denoising step moves the latents")
    g.add_argument("--sampler", choices=SAMPLER_NAMES, default="euler",
                   help="euler (official default), euler_ancestral (SDE; official 2.5 distilled stage 1) or res_2s "
                        "(second order, 2 model calls per step; official HQ pipeline); with --two-stage: stage 1")
    g.add_argument("--stage-2-sampler", choices=SAMPLER_NAMES, default=None,
                   help="sampler of the --two-stage refinement (default euler)")


def check_sampling_arguments(args) -> None:
    """Options that only apply with others (raises ValueError)."""
    if args.stage_2_sampler is not None and not args.two_stage:
        raise ValueError("--stage-2-sampler only applies with --two-stage")


def sampling_call_arguments(args) -> dict:
    """The pipeline-call keywords of these options."""
    call = dict(sampler=args.sampler)
    if args.two_stage:
        call["stage_2_sampler"] = args.stage_2_sampler or "euler"
    return call
