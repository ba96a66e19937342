"""`ltx2 generate` options of the sampler and of prompt enhancement (one `Option` each, checked before anything
heavy is imported), and the pipeline-call keywords they become (the enhancer's seed is the call generator's, i.e.
--seed, as officially). `--stage-2-sampler` becomes the two-stage call's `stage_2_sampler` (`two_stage_call`)."""

from __future__ import annotations

from .options import Option, call_kwargs, text, whole

SAMPLER_NAMES = ("euler", "euler_ancestral", "res_2s")  # diffusers_ltx2.schedulers.samplers.SAMPLERS (no torch here)

ENHANCE = "prompt enhancement (rewrite --prompt with Gemma before encoding: official recipe)"
SAMPLER = "sampler (how each denoising step moves the latents)"

SAMPLING_OPTIONS = (
    Option("--enhance-prompt", "rewrite the prompt with the model's prompt enhancer (LTX-2.5) or its Gemma-3 text "
                               "encoder (2.0 / 2.3), seeded with --seed; with --image, from the image (needs the "
                               "processor)", switch=True, call="enable_prompt_enhancement", group=ENHANCE),
    Option("--system-prompt", "system prompt of the enhancer", text, default_text="the official one",
           call="system_prompt", group=ENHANCE),
    Option("--enhance-max-tokens", "new-token limit of the enhancer", whole(1),
           default_text="the official 512 for Gemma-3, 600 for Gemma-4", call="prompt_max_new_tokens",
           group=ENHANCE),
    Option("--sampler", "euler (official default), euler_ancestral (SDE; official 2.5 distilled stage 1) or res_2s "
                        "(second order, 2 model calls per step; official HQ pipeline); with --two-stage: stage 1",
           choices=SAMPLER_NAMES, default_text="euler; euler_ancestral for --two-stage --distilled on LTX-2.5 "
                                                "(official)", call="sampler", group=SAMPLER),
    Option("--stage-2-sampler", "sampler of the --two-stage refinement", choices=SAMPLER_NAMES,
           default_text="euler", group=SAMPLER),
)


def check_sampling_arguments(args) -> None:
    """Options that only apply with others (raises ValueError naming the flags); no import."""
    if args.stage_2_sampler is not None and not args.two_stage:
        raise ValueError("--stage-2-sampler only applies with --two-stage")
    given = [f for f, v in (("--system-prompt", args.system_prompt), ("--enhance-max-tokens", args.enhance_max_tokens))
             if v is not None]
    if given and not args.enhance_prompt:
        raise ValueError(f"{' / '.join(given)} only apply with --enhance-prompt")
    if args.enhance_prompt and args.prompt is None:
        raise ValueError("--enhance-prompt rewrites --prompt: pass --prompt (not --conditioning)")


def sampling_call(args) -> dict:
    """The pipeline-call keywords of these options (`sampler`, `enable_prompt_enhancement`, `system_prompt`,
    `prompt_max_new_tokens`; `None` leaves the pipeline's official default)."""
    return call_kwargs(SAMPLING_OPTIONS, args)
