"""Sliding-window long video, the pure parts: window layout, prompt schedule, AdaIN, seam blends, routing, and the
`LatentGuide` condition against ltx-core's keyframe condition."""

from __future__ import annotations

import sys

import pytest
import torch

from diffusers_ltx2.long_video import (
    adain_latents, audio_placements, blend_audio_latents, blend_video_latents, parse_schedule_text, plan_windows,
    read_schedule_file, window_of_frame, window_prompts,
)
from diffusers_ltx2.long_video.layout import check_window_numbers
from diffusers_ltx2.long_video.prompt_schedule import prompt_texts


def test_layout_of_the_issue_example():
    """481 frames in 121-frame windows overlapping by 24: ComfyUI's tiles (16 latents, 13 new per later tile)."""
    windows = plan_windows(481, 121, 24)
    assert [w.num_frames for w in windows] == [121, 121, 121, 121, 65]
    assert [(w.start, w.new_start, w.end) for w in windows] == [(0, 0, 16), (13, 16, 29), (26, 29, 42),
                                                                (39, 42, 55), (52, 55, 61)]
    assert [w.first_frame for w in windows] == [0, 104, 208, 312, 416]
    assert [w.blend_latents for w in windows] == [0, 2, 2, 2, 2]
    # the joined clip has the requested frames: first window + each later window less its guide
    latents = windows[0].num_latents + sum(w.num_latents - w.guide_latents for w in windows[1:])
    assert (latents - 1) * 8 + 1 == 481
    assert len(plan_windows(121, 121, 24)) == 1 and len(plan_windows(9, 121, 24)) == 1


@pytest.mark.parametrize("args,match", [
    ((480, 121, 24), "num_frames must be 8k\\+1.*473 or 481"),
    ((481, 120, 24), "window must be 8k\\+1.*113 or 121"),
    ((481, 121, 20), "overlap must be a multiple of 8.*16 or 24"),
    ((481, 121, 8), "at least 16"),
    ((481, 25, 24), "window \\(25 frames\\) must be at least overlap \\+ 9 = 33"),
])
def test_bad_window_numbers(args, match):
    with pytest.raises(ValueError, match=match):
        plan_windows(*args)


def test_keyframes_belong_to_the_window_that_first_generates_them():
    windows = plan_windows(481, 121, 24)
    # window 0 generates frames 0..120; window 1 its guide (latents 13..15 = frames 97..120) and 121..224
    assert window_of_frame(windows, 0).index == 0
    assert window_of_frame(windows, 120).index == 0  # inside window 1's overlap: the earlier window's (ComfyUI)
    assert window_of_frame(windows, 121).index == 1
    assert window_of_frame(windows, 480).index == 4
    with pytest.raises(ValueError, match="outside"):
        window_of_frame(windows, 481)


def test_audio_placements_cover_the_clip_exactly():
    windows = plan_windows(481, 121, 24)
    places = audio_placements(windows, 481, 24.0, 25.0)
    assert places[0] == (0, 126)  # round(121 / 24 * 25)
    assert places[1] == (round(104 / 24 * 25), 126)
    start, length = places[-1]
    assert start + length == round(481 / 24 * 25)  # the one-call clip's audio length
    assert abs(start - 416 / 24 * 25) <= 1


SCHEDULE = """# shots
0s   A red fox trots through snow,
     wide shot.
5s: The fox stops.
240f It leaps.
"""


def test_schedule_file_and_segments(tmp_path):
    path = tmp_path / "shots.txt"
    path.write_text(SCHEDULE)
    pairs = read_schedule_file(path)
    assert pairs == [("0s", "A red fox trots through snow, wide shot."), ("5s", "The fox stops."),
                     ("240f", "It leaps.")]
    windows = plan_windows(361, 121, 24)  # frames 0..120 | 121..224 | 225..328 | 329..360
    assert window_prompts(pairs, windows, 361, 24.0) == [0, 1, 2, 2]  # 5 s = frame 120; 240f
    assert prompt_texts(pairs, 361, 24.0)[2] == "It leaps."
    assert window_prompts("one", windows, 361, 24.0) == [0, 0, 0, 0]
    assert window_prompts(["a", "b"], windows, 361, 24.0) == [0, 1, 1, 1]  # ComfyUI: the last one repeats


@pytest.mark.parametrize("prompt,match", [
    ([("1s", "a"), ("3s", "b")], "first prompt segment must start at 0"),
    ([(0, "a"), ("5s", "b"), ("4s", "c")], "must increase"),
    ([(0, "a"), ("60s", "b")], "starts after the clip's last frame"),
    ([(0, "a"), ("6s", "b"), ("7s", "c")], "segment 1 .*not the main prompt of any window.*104 frames"),
    ([(0, "a"), ("x", "b")], "expected seconds"),
    ([(0, "")], "non-empty text"),
    (["a", "b", "c", "d", "e"], "5 prompts for 4 windows"),
])
def test_bad_schedules(prompt, match):
    with pytest.raises(ValueError, match=match):
        window_prompts(prompt, plan_windows(361, 121, 24), 361, 24.0)


def test_bad_schedule_text():
    with pytest.raises(ValueError, match="line 1: a continuation line"):
        parse_schedule_text("  indented first")
    with pytest.raises(ValueError, match="line 2: expected 'START PROMPT'"):
        parse_schedule_text("0s a\n5s\n")
    with pytest.raises(ValueError, match="no segments"):
        parse_schedule_text("# nothing\n")


def test_schedule_modules_import_no_torch():
    """The command line checks windows and schedules before importing torch."""
    import subprocess

    code = ("import sys; from diffusers_ltx2.long_video import plan_windows, read_schedule_file; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def _adain_definition(x, ref, factor):
    """ComfyUI `LTXVAdainLatent.batch_normalize` (per_frame=False), written as its loops."""
    t = x.clone()
    for i in range(t.size(0)):
        for c in range(t.size(1)):
            r_sd, r_mean = torch.std_mean(ref[i, c], dim=None)
            i_sd, i_mean = torch.std_mean(t[i, c], dim=None)
            t[i, c] = ((t[i, c] - i_mean) / i_sd) * r_sd + r_mean
    return torch.lerp(x, t, factor)


def test_adain_matches_the_comfyui_definition_and_ignores_the_latent_normalisation():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 5, 3, 3, generator=g) * 2 + 1
    ref = torch.randn(2, 4, 7, 3, 3, generator=g) * 0.5 - 1
    for factor in (0.0, 0.3, 1.0):
        torch.testing.assert_close(adain_latents(x, ref, factor), _adain_definition(x, ref, factor))
    full = adain_latents(x, ref, 1.0)
    torch.testing.assert_close(full.std(dim=(2, 3, 4)), ref.std(dim=(2, 3, 4)))
    mean, std = torch.randn(4), torch.rand(4) + 0.5  # per-channel affine (the VAE's latent statistics)
    aff = lambda t: t * std.view(1, -1, 1, 1, 1) + mean.view(1, -1, 1, 1, 1)  # noqa: E731
    torch.testing.assert_close(adain_latents(aff(x), aff(ref), 0.4), aff(adain_latents(x, ref, 0.4)), atol=1e-5,
                               rtol=1e-5)
    with pytest.raises(ValueError, match="differ in batch or channels"):
        adain_latents(x, ref[:, :2], 1.0)


def test_seam_blends_are_comfyui_linear_overlap_transition():
    """ComfyUI `LinearOverlapLatentTransition(prev, new[:, :, 1:], overlap - 1)`: prev weight
    `linspace(1, 0, n + 2)[1:-1]`, after dropping the new window's latent 0."""
    finished = torch.zeros(1, 2, 6, 1, 1)
    window = torch.ones(1, 2, 5, 1, 1)
    window[:, :, 0] = 99.0  # the dropped latent
    out = blend_video_latents(finished, window, 2)
    alpha = torch.linspace(1, 0, 4)[1:-1]
    assert out.shape[2] == 6 + 5 - 1 - 2
    torch.testing.assert_close(out[0, 0, :, 0, 0], torch.cat([torch.zeros(4), 1 - alpha, torch.ones(2)]))
    audio = blend_audio_latents(torch.zeros(1, 2, 10, 3), torch.ones(1, 2, 6, 3), 7, 3)
    assert audio.shape == (1, 2, 13, 3)
    torch.testing.assert_close(audio[0, 1, :, 2], torch.tensor([0.] * 7 + [0.25, 0.5, 0.75, 1, 1, 1]))


@pytest.mark.parametrize("window,overlap,suggested", [(121, 121, "112"), (121, 20, "16 or 24"), (25, 20, "16")])
def test_overlap_suggestions_fit_the_window(window, overlap, suggested):
    """The nearest valid overlaps named are valid for the window (121 / 121 suggested 120 or 128, both too long)."""
    with pytest.raises(ValueError, match=f"for window {window}: {suggested}$"):
        check_window_numbers(481, window, overlap)
