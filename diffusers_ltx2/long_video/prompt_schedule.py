"""A prompt per segment of a long clip, and which window generates with which prompt.

Plain Python (no torch): the `ltx2` command line reads and checks a schedule file before anything heavy loads.

Forms of `prompt=` for a sliding-window generation:
- one string: every window;
- a list of strings: one per window in order (ComfyUI `MultiPromptProvider` semantics; a shorter list repeats its
  last prompt, a longer one is refused rather than dropping prompts);
- a list of `(start, text)` segments: the segment runs from `start` to the next one's start; `start` is seconds
  (a number, or a string `"5s"` / `"2.5"`) or pixel frames (a string `"120f"`); the first starts at 0.

A schedule file (`ltx2 generate --prompt-schedule shots.txt`) holds one segment per line, `START PROMPT` (or
`START: PROMPT`), START as above; indented lines continue the previous prompt; blank lines and lines starting with
`#` are skipped::

    # shots.txt
    0s    A red fox trots through fresh snow at dawn, wide shot, the camera tracking it from the side.
    5s    The fox stops and looks straight into the camera, medium close-up, static camera.
    240f  It leaps into a snow bank; powder bursts around it as the camera slowly pushes in.

Each window generates with one prompt: the segment covering most of the frames the window generates first (its
owned frames, `layout.Window.owns_frame`; ties go to the earlier segment). A segment that no window takes is
refused, naming the shortest segment the layout allows.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from .layout import Window


@dataclass(frozen=True)
class PromptSegment:
    """A prompt from pixel frame `start_frame` on (seconds are converted with the clip's frame rate)."""

    start_frame: int
    text: str


def parse_start(raw, frame_rate: float, what: str = "segment start") -> int:
    """A segment start -> pixel frame: a number or `"5s"` / `"2.5"` (seconds, rounded to the nearest frame), or
    `"120f"` (frames). Raises ValueError."""
    if isinstance(raw, bool):
        raise ValueError(f"{what}: expected seconds (5, '5s') or frames ('120f'), got {raw!r}")
    if isinstance(raw, (int, float)):
        seconds = float(raw)
    elif isinstance(raw, str):
        token = raw.strip().lower()
        try:
            if token.endswith("f"):
                frames = int(token[:-1])
                if frames < 0:
                    raise ValueError
                return frames
            seconds = float(token[:-1] if token.endswith("s") else token)
        except ValueError:
            raise ValueError(f"{what}: expected seconds (5, '5s', '2.5') or frames ('120f'), got {raw!r}") from None
    else:
        raise ValueError(f"{what}: expected seconds (5, '5s') or frames ('120f'), got {type(raw).__name__}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{what}: must be a finite number of seconds >= 0, got {raw!r}")
    return round(seconds * frame_rate)


def parse_schedule_text(text: str, source: str = "prompt schedule") -> list[tuple[str, str]]:
    """`(start, prompt)` pairs of a schedule file's text (starts unparsed). Raises ValueError naming the line."""
    pairs: list[list[str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if line[:1].isspace():
            if not pairs:
                raise ValueError(f"{source}, line {number}: a continuation line before any segment")
            pairs[-1][1] += " " + stripped
            continue
        head, _, rest = stripped.partition(" ")
        head = head.rstrip(":")
        if ":" in head:  # "5s:text" without a space
            head, _, more = head.partition(":")
            rest = more + " " + rest
        if not rest.strip():
            raise ValueError(f"{source}, line {number}: expected 'START PROMPT' (e.g. '5s A fox ...'), got "
                             f"{stripped[:60]!r}")
        pairs.append([head, rest.strip()])
    if not pairs:
        raise ValueError(f"{source}: no segments (lines 'START PROMPT', e.g. '0s A fox trots through snow')")
    return [(a, b) for a, b in pairs]


def read_schedule_file(path: str | os.PathLike) -> list[tuple[str, str]]:
    """`(start, prompt)` pairs of a schedule file. Raises FileNotFoundError / ValueError naming the file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"prompt schedule not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read(1 << 20)
    except UnicodeDecodeError:
        raise ValueError(f"prompt schedule {path} is not UTF-8 text") from None
    return parse_schedule_text(text, f"prompt schedule {path}")


def segments_of(prompt, num_frames: int, frame_rate: float) -> list[PromptSegment] | None:
    """The segments of a `[(start, text), ...]` prompt (None for the other forms), checked: text non-empty, the
    first at 0, starts increasing and inside the clip."""
    if not isinstance(prompt, (list, tuple)) or not prompt or not all(isinstance(p, (list, tuple)) for p in prompt):
        return None
    segments = []
    for i, item in enumerate(prompt):
        if len(item) != 2 or not isinstance(item[1], str) or not item[1].strip():
            raise ValueError(f"prompt segment {i}: expected (start, text) with non-empty text, got {item!r}")
        frame = parse_start(item[0], frame_rate, f"prompt segment {i} start")
        segments.append(PromptSegment(frame, item[1]))
    if segments[0].start_frame != 0:
        raise ValueError(f"the first prompt segment must start at 0, got frame {segments[0].start_frame}")
    for a, b in zip(segments, segments[1:]):
        if b.start_frame <= a.start_frame:
            raise ValueError(f"prompt segment starts must increase: frame {b.start_frame} after {a.start_frame}")
    if segments[-1].start_frame >= num_frames:
        raise ValueError(f"prompt segment at frame {segments[-1].start_frame} starts after the clip's last frame "
                         f"({num_frames - 1})")
    return segments


def _owned_frames(w: Window) -> tuple[int, int]:
    """`[first, last]` global pixel frames window `w` generates first."""
    r = w.temporal_ratio
    first = 0 if w.new_start == 0 else w.new_start * r - r + 1
    return first, (w.end - 1) * r


def window_prompts(prompt, windows: list[Window], num_frames: int, frame_rate: float) -> list[int]:
    """Index of the prompt each window uses: into `[prompt]` (a string), the list (one per window) or the
    segments. Raises ValueError for a bad schedule or a segment no window takes."""
    if isinstance(prompt, str):
        return [0] * len(windows)
    segments = segments_of(prompt, num_frames, frame_rate)
    if segments is None:
        if not isinstance(prompt, (list, tuple)) or not prompt or not all(isinstance(p, str) for p in prompt):
            raise ValueError("prompt must be a string, a list of strings (one per window) or a list of "
                             "(start, text) segments")
        if len(prompt) > len(windows):
            raise ValueError(f"{len(prompt)} prompts for {len(windows)} windows: give at most one per window, or "
                             f"(start, text) segments")
        return [min(i, len(prompt) - 1) for i in range(len(windows))]
    bounds = [s.start_frame for s in segments] + [num_frames]
    chosen = []
    for w in windows:
        first, last = _owned_frames(w)
        cover = [max(0, min(last + 1, bounds[i + 1]) - max(first, bounds[i])) for i in range(len(segments))]
        chosen.append(max(range(len(segments)), key=lambda i: (cover[i], -i)))
    unused = [i for i in range(len(segments)) if i not in chosen]
    if unused:
        s = segments[unused[0]]
        stride = (windows[1].end - windows[1].new_start) * windows[0].temporal_ratio if len(windows) > 1 else num_frames
        raise ValueError(f"prompt segment {unused[0]} (from frame {s.start_frame}, {s.start_frame / frame_rate:.2f} s: "
                         f"{s.text[:40]!r}) is not the main prompt of any window: each window uses one prompt, and "
                         f"a window adds {stride} frames ({stride / frame_rate:.2f} s); make the segment at least "
                         f"that long or use a shorter window")
    return chosen


def prompt_texts(prompt, num_frames: int, frame_rate: float) -> list[str]:
    """The texts the indices of `window_prompts` refer to."""
    if isinstance(prompt, str):
        return [prompt]
    segments = segments_of(prompt, num_frames, frame_rate)
    return list(prompt) if segments is None else [s.text for s in segments]
