"""`ltx2 generate --window N`: long clips in sliding windows (`pipe.generate_long_video`), with a prompt per segment
(`--prompt-schedule FILE`). Every check here runs before torch is imported (`long_video.layout` and
`long_video.prompt_schedule` are plain Python)."""

from __future__ import annotations

from .options import Option, number, text, whole

GROUP = "long clips (sliding windows: ComfyUI's looping sampler)"


WINDOW_OPTIONS = (
    Option("--window", "generate --num-frames in windows of this many frames (8k+1, e.g. 121), each guided by the "
                       "previous one's last --overlap frames", whole(9), group=GROUP),
    # its multiple-of-8 rule is checked with the window (`long_video.layout.check_window_numbers`), whose
    # suggestions fit the window
    Option("--overlap", "frames of the finished clip guiding each next window (a multiple of 8, >= 16)",
           whole(16), default=24, group=GROUP),
    Option("--overlap-strength", "strength of that guide, in [0, 1]", number(0, 1), default=0.5, group=GROUP),
    Option("--adain", "AdaIN of every later window to the first window's latent statistics, in [0, 1] (against "
                      "colour drift; 0 = off)", number(0, 1), default=0.0, group=GROUP),
    Option("--prompt-schedule", "a prompt per segment: a text file of lines 'START PROMPT', START in seconds (5s) "
                                "or frames (120f); instead of --prompt", text, metavar="FILE", group=GROUP),
)


def check_window_arguments(args) -> None:
    """Before the shared checks: `--prompt-schedule` replaces `--prompt` (its first prompt stands in for the shared
    checks); then the window layout and the schedule against it. Sets `args.windows`, `args.schedule`."""
    from ..long_video.layout import check_window_numbers, plan_windows
    from ..long_video.prompt_schedule import read_schedule_file, window_prompts

    args.windows = args.schedule = None
    if args.window is None:
        for flag, given in (("--prompt-schedule", args.prompt_schedule is not None),
                            ("--overlap", args.overlap != 24), ("--overlap-strength", args.overlap_strength != 0.5),
                            ("--adain", args.adain != 0.0)):
            if given:
                raise ValueError(f"{flag} applies to sliding windows: add --window (e.g. --window 121)")
        return
    if args.prompt_schedule is not None:
        if args.prompt is not None or args.conditioning is not None:
            raise ValueError("--prompt-schedule replaces --prompt / --conditioning: pass one of them")
        try:
            args.schedule = read_schedule_file(args.prompt_schedule)
        except (OSError, ValueError) as err:
            raise type(err)(f"--prompt-schedule: {err}") from None
        args.prompt = args.schedule[0][1]
    for flag, given in (("--two-stage", getattr(args, "two_stage", False)),
                        ("--audio-only", getattr(args, "audio_only", False))):
        if given:
            raise ValueError(f"--window does not combine with {flag}")
    try:
        if args.num_frames is None:  # the length is predicted later: the window numbers alone now
            check_window_numbers(args.window, args.window, args.overlap)
            return
        args.windows = plan_windows(args.num_frames, args.window, args.overlap)
    except ValueError as err:
        raise ValueError("--" + str(err).replace("num_frames", "num-frames", 1)) from None
    if args.schedule is not None:
        try:
            window_prompts(args.schedule, args.windows, args.num_frames, float(args.frame_rate))
        except ValueError as err:
            raise ValueError(f"--prompt-schedule {args.prompt_schedule}: {err}") from None


def prepare_windows(args, conditions) -> None:
    """With torch: the whole-clip conditions routed to their windows (media past a window refused) before loading."""
    from ..conditioning import ClipGeometry
    from ..long_video.routing import route_conditions

    geometry = ClipGeometry(batch_size=1, num_frames=args.num_frames, height=args.height, width=args.width,
                            frame_rate=float(args.frame_rate))
    route_conditions(conditions, args.windows, geometry)
    n = len(args.windows)
    if n == 1:  # a clip no longer than one window: one plain call
        print(f"{args.num_frames} frames fit in one window (--window {args.window}): one call, no overlap",
              flush=True)
        return
    print(f"{args.num_frames} frames in {n} windows of {args.window} frames (overlap {args.overlap}): "
          f"{', '.join(str(w.num_frames) for w in args.windows)} frames", flush=True)


def window_call(kwargs: dict, args) -> dict:
    """`pipe.generate_long_video`'s keyword arguments from a one-call `kwargs`."""
    kwargs = dict(kwargs)
    kwargs.pop("output_modalities", None)
    kwargs.update(window=args.window, overlap=args.overlap, overlap_strength=args.overlap_strength,
                  adain_factor=args.adain)
    if args.schedule is not None:
        kwargs["prompt"] = args.schedule
    return kwargs
