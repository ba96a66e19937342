"""Conditioning flags of the `ltx2` subcommands: media specs (`PATH[@FRAME[:STRENGTH]]`), the source clip of
`retake` / `foley` / `extend`, the checks of `conditions=` before any model loads, and writing the result
and writing the result.

Everything else here runs before the pipeline is loaded, so a bad flag, a missing file, a frame outside the clip
or a window outside the source fails in a second with exit code 2.
"""

from __future__ import annotations

import dataclasses
import os
import re

from .options import Option, text

_SPEC = re.compile(r"^(?P<path>.+?)(?:@(?P<frame>-?\d+)(?::(?P<strength>[^:@]+))?)?$")


MEDIA_FORM = "PATH[@FRAME[:STRENGTH]] (FRAME an integer, negative counts from the end; STRENGTH a number in [0, 1]), e.g. key.png@8:0.5"


@dataclasses.dataclass(frozen=True)
class MediaSpec:
    """A parsed `PATH[@FRAME[:STRENGTH]]`: `frame` may be negative (counted from the end: -1 = the last frame)
    or None when not given; `strength` None when not given."""

    path: str
    frame: int | None
    strength: float | None


def parse_media_spec(text: str, flag: str) -> MediaSpec:
    """`"key.png@40:0.8"` -> `MediaSpec("key.png", 40, 0.8)`; a path containing `@` is kept whole unless it ends
    with `@<integer>[:<number>]`. Raises ValueError naming `flag` for an unparsable strength."""
    match = _SPEC.match(text)
    if match is None or not match.group("path"):
        raise ValueError(f"{flag} expects PATH[@FRAME[:STRENGTH]], got {text!r}")
    frame = match.group("frame")
    strength = match.group("strength")
    if strength is not None:
        try:
            strength = float(strength)
        except ValueError:
            raise ValueError(f"{flag} {text!r}: STRENGTH must be a number in [0, 1], got {strength!r}") from None
    return MediaSpec(match.group("path"), None if frame is None else int(frame), strength)


def resolve_frame(spec: MediaSpec, flag: str, num_frames: int, length: int = 1, default: int = 0) -> int:
    """The pixel frame a spec lands on: negative frames count from the end of the clip (-1 = the last frame
    for an image; a clip of `length` frames at -1 ends on the last frame). Raises ValueError when the media
    does not fit inside the clip's frames `0..num_frames-1`."""
    from ..rules import resolve_frame_index  # no torch: --image errors come before the import

    frame = resolve_frame_index(default if spec.frame is None else spec.frame, num_frames, length)
    if frame < 0 or frame + length - 1 > num_frames - 1:
        what = "frame" if length == 1 else f"{length}-frame clip"
        raise ValueError(f"{flag} {spec.path}@{spec.frame}: the {what} does not fit in the clip's frames "
                         f"0..{num_frames - 1} (--num-frames {num_frames})")
    return frame


def check_strength(flag: str, value: float) -> float:
    """`value` must be a number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{flag} must be in [0, 1], got {value!r}")
    return float(value)


def check_spec_suffix(path: str, flag: str, sep: str, what: str, form: str) -> None:
    """A spec whose parsed `path` is missing but holds `sep` (`@` / `:`) most likely has a malformed `what`
    suffix (`key.png@abc`, `key.png@8:0.5:3`, `lora.safetensors:abc`) that the parser kept as part of the path:
    when the text before the last `sep` is a file, raise ValueError "bad `what`" naming the expected `form`
    instead of a misleading "file not found". Does nothing for an existing path or one without `sep`."""
    if os.path.exists(path) or sep not in path:
        return
    head, _, tail = path.rpartition(sep)
    if head and os.path.isfile(head):
        raise ValueError(f"{flag} {path}: bad {what} {sep + tail!r} after the file {head}; expected {form}")


def check_file(path: str, flag: str) -> str:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{flag}: file not found: {path}")
    return path


def check_audio_output(path: str) -> str:
    """Audio-only output: an existing folder and a .wav / .flac file."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"output folder does not exist: {folder}")
    if not path.lower().endswith((".wav", ".flac")):
        raise ValueError(f"--audio-only writes audio: --output must be a .wav or .flac file, got {path!r}")
    return path


def largest_clip_length(available: int, temporal_ratio: int = 8) -> int:
    """The longest `8k + 1` frame count within `available` frames (0 if none)."""
    return 0 if available < 1 else (available - 1) // temporal_ratio * temporal_ratio + 1


@dataclasses.dataclass(frozen=True)
class SourceClip:
    """The input clip of `retake` / `foley` / `extend` as the generation will use it, and as the file is."""

    path: str
    num_frames: int  # 8k+1 frames used from the start of the file
    available_frames: int
    height: int  # generation size (multiples of 32)
    width: int
    frame_rate: float
    has_audio: bool
    file_height: int = 0
    file_width: int = 0

    @property
    def duration_s(self) -> float:
        return self.num_frames / self.frame_rate

    def describe(self, frames_used: int | None = None) -> str:
        """`"176x100, 60 frames at 24 fps -> 160x96 (resized and centre-cropped to multiples of 32), 57 frames
        (8k+1: the last 3 dropped)"`: what is used of the file, and what is changed."""
        used = self.num_frames if frames_used is None else frames_used
        text = f"{self.file_width}x{self.file_height}, {self.available_frames} frames at {self.frame_rate:g} fps"
        changes = []
        if (self.width, self.height) != (self.file_width, self.file_height):
            changes.append(f"{self.width}x{self.height} (resized and centre-cropped)")
        if used != self.available_frames:
            dropped = self.available_frames - used
            changes.append(f"its first {used} frames (8k+1; the last {dropped} dropped)" if used < self.available_frames
                           else f"{used} frames")
        return text + (f" -> {', '.join(changes)}" if changes else " (used as is)")


#: the fewest frames an input clip may have (one 8-frame latent step after the first frame)
MIN_SOURCE_FRAMES = 9


def check_not_the_input(input_path: str, output_path: str | None) -> None:
    """Writing the result over the source clip would destroy it (and it is read while generating): refuse
    an `--output` that is `--input` (same file, also through links or another spelling of the path)."""
    if output_path is None:
        return
    same = os.path.realpath(input_path) == os.path.realpath(output_path)
    if not same and os.path.exists(output_path):
        same = os.path.samefile(input_path, output_path)
    if same:
        raise ValueError(f"--output {output_path} is the --input clip: it would be overwritten; "
                         "write the result to another file")


def check_source_paths(args) -> None:
    """Stage-2 checks of `--input` (no heavy import): the file exists and is not the `--output`."""
    check_file(args.input, "--input")
    check_not_the_input(args.input, args.output)


def resolve_source_clip(args, *, max_frames: int | None = None, spatial_ratio: int = 32) -> SourceClip:
    """Probe `args.input` (no full decode) and fill `args.num_frames`, `args.height`, `args.width`,
    `args.frame_rate` where the user left them unset: the longest `8k + 1` frames of the file (at most
    `max_frames`), its size rounded down to multiples of 32, its frame rate. An image or a clip shorter than
    9 frames is refused."""
    from ..media import probe_video

    check_source_paths(args)
    info = probe_video(args.input)
    if info.num_frames < MIN_SOURCE_FRAMES:
        what = "an image" if info.num_frames == 1 else f"a {info.num_frames}-frame clip"
        raise ValueError(f"--input {args.input} is {what}: this command continues or edits a video clip of at "
                         f"least {MIN_SOURCE_FRAMES} frames (to start from an image: ltx2 generate --image)")
    usable = largest_clip_length(info.num_frames if max_frames is None else min(info.num_frames, max_frames))
    if args.num_frames is None:
        args.num_frames = usable
    elif args.num_frames > info.num_frames:
        raise ValueError(f"--num-frames {args.num_frames} is more than --input {args.input} has ({info.num_frames})")
    for name, size in (("height", info.height), ("width", info.width)):
        if getattr(args, name) is None:
            rounded = size // spatial_ratio * spatial_ratio
            if rounded < 2 * spatial_ratio:  # two latent pixels, as `rules.size_problem` asks
                raise ValueError(f"--input {args.input} is {info.width}x{info.height}: too small for the model "
                                 f"(at least {2 * spatial_ratio} pixels per side)")
            setattr(args, name, rounded)
    if args.frame_rate is None:
        args.frame_rate = info.fps
    return SourceClip(path=args.input, num_frames=args.num_frames, available_frames=info.num_frames,
                      height=args.height, width=args.width, frame_rate=args.frame_rate, has_audio=info.has_audio,
                      file_height=info.height, file_width=info.width)


SOURCE_OPTION = Option("--input", "source clip (any video file FFmpeg reads)", text, required=True, metavar="PATH")


def check_conditions_early(conditions, args, *, output_modalities=("video", "audio")) -> None:
    """Run the conditions' own checks (frame counts, indices, windows, combinations) on the clip's geometry
    with the LTX-2 VAE ratios, before any model is loaded."""
    from ..conditioning import ClipGeometry, check_conditions

    geometry = ClipGeometry(batch_size=1, num_frames=args.num_frames, height=args.height, width=args.width,
                            frame_rate=float(args.frame_rate))
    check_conditions(conditions, geometry, output_modalities=output_modalities)


def write_output(out, args) -> str:
    """Write the pipeline output: an MP4 (video + audio; video alone when `args.write_audio` is False) at
    `args.output_frame_rate` when set, else `args.frame_rate`, or, for audio-only output, a WAV / FLAC."""
    from ..media import save_audio
    from .common import write_clip

    if out.frames is None:
        return save_audio(args.output, out.audio[0], out.sample_rate)
    rate = getattr(args, "output_frame_rate", None) or args.frame_rate  # `--dfr` temporal rounds multiply it
    return write_clip(out, args.output, rate, audio=getattr(args, "write_audio", True))
