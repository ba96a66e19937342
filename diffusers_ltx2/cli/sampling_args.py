"""`ltx2 generate` options of the sampler and of prompt enhancement, checked before any model loads, and the
pipeline-call keywords they become (the enhancer's seed is the call generator's, i.e. --seed, as officially)."""

from __future__ import annotations

SAMPLER_NAMES = ("euler", "euler_ancestral", "res_2s")  # diffusers_ltx2.schedulers.samplers.SAMPLERS (no torch here)


def add_sampling_arguments(p) -> None:
    """`--sampler`, `--stage-2-sampler`, `--enhance-prompt`, `--system-prompt`, `--enhance-max-tokens`."""
    e = p.add_argument_group("prompt enhancement", "rewrite --prompt with Gemma before encoding (official recipe)")
    e.add_argument("--enhance-prompt", action="store_true",
                   help="rewrite the prompt with the model's prompt enhancer (LTX-2.5) or its Gemma-3 text encoder "
                        "(2.0 / 2.3), seeded with --seed; with --image, from the image (needs the processor)")
    e.add_argument("--system-prompt", default=None, help="system prompt of the enhancer (default: the official one)")
    e.add_argument("--enhance-max-tokens", type=int, default=None,
                   help="new-token limit of the enhancer (default: the official 512 for Gemma-3, 600 for Gemma-4)")
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
    given = [f for f, v in (("--system-prompt", args.system_prompt), ("--enhance-max-tokens", args.enhance_max_tokens))
             if v is not None]
    if given and not args.enhance_prompt:
        raise ValueError(f"{' / '.join(given)} only apply with --enhance-prompt")
    if args.enhance_prompt and args.prompt is None:
        raise ValueError("--enhance-prompt rewrites --prompt: pass --prompt (not --conditioning)")
    if args.enhance_max_tokens is not None and args.enhance_max_tokens < 1:
        raise ValueError(f"--enhance-max-tokens must be a positive integer, got {args.enhance_max_tokens}")


def sampling_call_arguments(args) -> dict:
    """The pipeline-call keywords of these options."""
    call = dict(sampler=args.sampler)
    if args.enhance_prompt:
        call.update(enable_prompt_enhancement=True, system_prompt=args.system_prompt,
                    prompt_max_new_tokens=args.enhance_max_tokens)
    if args.two_stage:
        call["stage_2_sampler"] = args.stage_2_sampler or "euler"
    return call
