"""Prompt lists for `ltx2 generate --prompts FILE`: the file format, output names, what is left to make, and which
clip group makes which clip (pure functions; no model, no process group).

File format (UTF-8 text, one clip per line):

    # a comment; blank lines are skipped too
    a fox runs through the snow at dawn
    1234<TAB>a red kite over a windy beach
    {"prompt": "rain on a tin roof at night", "seed": 7, "name": "rain"}

- a plain line is the prompt; its seed is `--seed` + the clip's index (0 for the first clip of the file);
- `SEED<TAB>PROMPT` gives the seed (an integer >= 0);
- a line starting with `{` is a JSON object with `prompt` (required), `seed` and `name` (optional; the output
  file's stem: letters, digits, `.`, `_`, `-`).

Outputs: `<output folder>/<name>.mp4`; without a name `NNNN_seedS_HHHHHHHH.mp4` (clip index, seed, the first 8
hex digits of the prompt's SHA-1), so an edited prompt or seed gives a new file and an unchanged line finds its
finished file. A clip whose output exists is skipped (resumable); files are written to a temporary name and
renamed, so an output exists only once complete.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass

from ..json_files import parse_json

__all__ = ["ClipSpec", "parse_prompt_list", "read_prompt_list", "output_path", "pending_clips", "clips_of_group"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_JSON_KEYS = {"prompt", "seed", "name"}


@dataclass(frozen=True)
class ClipSpec:
    """One clip of a prompt list: `index` (0-based among clips), `line` (1-based in the file), `prompt`,
    `seed`, `name` (output file stem)."""

    index: int
    line: int
    prompt: str
    seed: int
    name: str


def _default_name(index: int, seed: int, prompt: str) -> str:
    digest = hashlib.sha1(prompt.encode("utf-8")).hexdigest()[:8]
    return f"{index:04d}_seed{seed}_{digest}"


def _seed(value, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value >= 2 ** 63:
        raise ValueError(f"{where}: seed must be an integer in [0, 2**63), got {value!r}")
    return value


def parse_prompt_list(text: str, *, default_seed: int = 0, source: str = "prompt list") -> list[ClipSpec]:
    """The clips of a prompt-list text (format in the module docstring).

    Raises:
        ValueError: naming `source` and the line: bad JSON, unknown keys, an empty prompt, a bad seed or name,
            two clips with one output name, or no clip at all.
    """
    clips: list[ClipSpec] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source}:{number}"
        index = len(clips)
        name = None
        if line.startswith("{"):
            try:  # json_files.parse_json: crafted nesting is a ValueError too, not a RecursionError
                entry = parse_json(line, where)
            except ValueError as err:
                raise ValueError(f"{where}: not a JSON object ({str(err).removeprefix(where + ': ')})") from None
            unknown = sorted(set(entry) - _JSON_KEYS)
            if unknown:
                raise ValueError(f"{where}: unknown keys {unknown}; allowed: {sorted(_JSON_KEYS)}")
            prompt = entry.get("prompt")
            if not isinstance(prompt, str):
                raise ValueError(f"{where}: 'prompt' must be a string")
            seed = _seed(entry["seed"], where) if "seed" in entry else default_seed + index
            name = entry.get("name")
            if name is not None and (not isinstance(name, str) or not _NAME.match(name)):
                raise ValueError(f"{where}: 'name' must be 1-200 letters, digits, '.', '_' or '-' (no folders), "
                                 f"got {name!r}")
        elif "\t" in line and line.split("\t", 1)[0].strip().lstrip("-").isdigit():
            head, prompt = line.split("\t", 1)
            seed = _seed(int(head.strip()), where)
        else:
            prompt, seed = line, default_seed + index
        prompt = prompt.strip()
        if not prompt:
            raise ValueError(f"{where}: empty prompt")
        clips.append(ClipSpec(index, number, prompt, seed, name or _default_name(index, seed, prompt)))
    if not clips:
        raise ValueError(f"{source}: no prompts (every line is blank or a # comment)")
    seen: dict[str, int] = {}
    for clip in clips:
        if clip.name in seen:
            raise ValueError(f"{source}:{clip.line}: output name {clip.name!r} is already used on line "
                             f"{seen[clip.name]}")
        seen[clip.name] = clip.line
    return clips


def read_prompt_list(path: str, *, default_seed: int = 0) -> list[ClipSpec]:
    """`parse_prompt_list` of a file. Raises `FileNotFoundError`, or `ValueError` (not UTF-8 text, bad lines)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"prompt list not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    return parse_prompt_list(text, default_seed=default_seed, source=path)


def output_path(folder: str, clip: ClipSpec, suffix: str = ".mp4") -> str:
    return os.path.join(folder, clip.name + suffix)


def pending_clips(clips: list[ClipSpec], folder: str, suffix: str = ".mp4") -> list[ClipSpec]:
    """The clips whose output file does not exist yet (finished outputs are skipped)."""
    return [c for c in clips if not os.path.exists(output_path(folder, c, suffix))]


def clips_of_group(clips: list[ClipSpec], group: int, num_groups: int) -> list[ClipSpec]:
    """The clips clip group `group` of `num_groups` makes: every `num_groups`-th, starting at `group`."""
    if not 0 <= group < num_groups:
        raise ValueError(f"group {group} is not in [0, {num_groups})")
    return clips[group::num_groups]
