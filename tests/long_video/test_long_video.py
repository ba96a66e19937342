"""Sliding-window long video on the tiny model: frame count and audio length, the first window equals a one-window
call, seams (video steps, audio samples), a prompt per segment, guides and blends, whole-clip conditions routed to
their windows, AdaIN, memory not growing with windows, the progress bar, and refusals before any model runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffusers_ltx2 import ClassifierFreeGuidance
from diffusers_ltx2.conditioning import AudioCondition, LatentGuide, TemporalRegion, VideoCondition
from diffusers_ltx2.long_video import audio_placements, plan_windows
from diffusers_ltx2.pipelines import sliding

RUN = dict(height=64, width=64, num_inference_steps=2, max_sequence_length=128,
           guider=ClassifierFreeGuidance(1.0, 1.0))
THREE = dict(num_frames=57, window=25, overlap=16)  # latents [0, 4) | [2, 6) | [4, 8): 3 windows, 57 frames


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


class CallSpy:
    """Wraps `pipe.__call__` (the windows' public call): records each call's keyword arguments and output."""

    def __init__(self, pipe, monkeypatch):
        self.calls, self.outputs = [], []
        original = type(pipe).__call__

        def spy(this, *args, **kwargs):
            self.calls.append(dict(kwargs, prompt=args[0] if args else kwargs.get("prompt")))
            out = original(this, *args, **kwargs)
            self.outputs.append(out)
            return out

        monkeypatch.setattr(type(pipe), "__call__", spy)


def test_three_windows_give_the_requested_frames_and_audio_and_the_first_window_is_a_plain_call(tiny_pipe):
    long = tiny_pipe.generate_long_video("a dog runs", output_type="pt", generator=_gen(), **THREE, **RUN)
    one_call = tiny_pipe("a dog runs", num_frames=57, output_type="pt", generator=_gen(), **RUN)
    assert long.frames.shape == (1, 57, 3, 64, 64)
    assert long.audio.shape == one_call.audio.shape  # the audio length of a 57-frame clip
    assert long.sample_rate == one_call.sample_rate

    latents = tiny_pipe.generate_long_video("a dog runs", output_type="latent", generator=_gen(), **THREE, **RUN)
    first = tiny_pipe("a dog runs", num_frames=25, output_type="latent", generator=_gen(), **RUN)
    windows = plan_windows(57, 25, 16)
    kept = windows[0].num_latents - windows[1].blend_latents  # latents no later window blends into
    assert torch.equal(latents.frames[:, :, :kept], first.frames[:, :, :kept].cpu())
    assert latents.frames.shape[2] == 8 and latents.audio.shape == one_call_audio_latents(tiny_pipe)


def one_call_audio_latents(pipe):
    return pipe("x", num_frames=57, output_type="latent", generator=_gen(), **RUN).audio.shape


def test_seams_are_as_smooth_as_the_interior(tiny_pipe):
    """At each seam the frame-to-frame step is within 2x the clip's interior mean step, and no audio sample step
    near a seam is larger than the largest step away from the seams (the whole clip's audio is decoded at once).
    The issue's check, as stated; on random weights it cannot tell a seam from a hard cut (see the next test,
    which can)."""
    out = tiny_pipe.generate_long_video("a dog runs", output_type="pt", generator=_gen(), num_frames=105,
                                        window=49, overlap=24, **RUN)
    frames = out.frames[0].float()
    steps = (frames[1:] - frames[:-1]).abs().mean(dim=(1, 2, 3))  # step i: frame i -> i + 1
    windows = plan_windows(105, 49, 24)
    seam = torch.zeros(len(steps), dtype=torch.bool)
    for w in windows[1:]:  # from the guide's first frame to the first frame no earlier window generated
        seam[max(0, w.first_frame - 1): w.new_start * 8 + 1] = True
    interior_mean = steps[~seam].mean()
    assert len(windows) == 3 and seam.any() and (~seam).sum() > 20
    assert steps[seam].max() <= 2 * interior_mean, (steps[seam].max(), interior_mean)

    audio = out.audio[0]
    jumps = (audio[:, 1:] - audio[:, :-1]).abs().amax(0)
    rate, near = out.sample_rate, torch.zeros(len(jumps), dtype=torch.bool)
    for w in windows[1:]:
        a, b = round(w.first_frame / 24 * rate), round(w.new_start * 8 / 24 * rate)
        near[max(0, a - rate // 25): b + rate // 25] = True
    assert jumps[near].max() <= jumps[~near].max()


@pytest.mark.parametrize("frames,window,overlap", [(105, 49, 24), (169, 41, 16), (121, 49, 16)])
def test_a_model_that_continues_its_guide_gives_a_seamless_ramp(tiny_pipe, monkeypatch, frames, window, overlap):
    """The seam check above cannot fail on random weights: their latents have no frame-to-frame coherence, so a
    hard cut at the seams scores as the blend does (measured 1.06 against 1.07 of the interior mean step). This
    one can: each window's call is replaced by a model that continues its guide exactly (latent frame `j` of a
    window is `guide[0] + j`, the audio the same on its grid; the first window starts at 0). The whole clip is then
    the ramp `0, 1, 2, ...` in video and audio latents if and only if every guide is cut from the right finished
    frames and every window is blended back at the frames it covers (the last window, aligned to the clip's end,
    included): an off-by-one anywhere leaves a step of 0 or 2 in the ramp."""

    def continuing_model(this, prompt, *, num_frames, conditions=None, **kwargs):
        guide = next((c for c in conditions or [] if isinstance(c, LatentGuide)), None)
        g = this.clip_geometry(1, num_frames, kwargs["height"], kwargs["width"], kwargs["frame_rate"])
        v0 = 0.0 if guide is None else float(guide.video[0, 0, 0, 0, 0])
        a0 = 0.0 if guide is None else float(guide.audio[0, 0, 0, 0])
        video = v0 + torch.arange((num_frames - 1) // 8 + 1, dtype=torch.float32).view(1, 1, -1, 1, 1)
        audio = a0 + torch.arange(g.audio_latent_length, dtype=torch.float32).view(1, 1, -1, 1)
        return sliding.LTX2AudioVideoPipelineOutput(frames=video.expand(1, 4, -1, 2, 2).clone(),
                                                    audio=audio.expand(1, 2, -1, 3).clone())

    monkeypatch.setattr(type(tiny_pipe), "__call__", continuing_model)
    out = tiny_pipe.generate_long_video("a dog runs", output_type="latent", num_frames=frames, window=window,
                                        overlap=overlap, **RUN)
    assert len(plan_windows(frames, window, overlap)) >= 3
    video, audio = out.frames[0, 0, :, 0, 0], out.audio[0, 0, :, 0]
    assert video.shape[0] == (frames - 1) // 8 + 1
    torch.testing.assert_close(video, torch.arange(video.shape[0], dtype=torch.float32), rtol=0, atol=1e-5)
    torch.testing.assert_close(audio, torch.arange(audio.shape[0], dtype=torch.float32), rtol=0, atol=1e-5)


def test_each_segment_is_generated_from_its_own_prompt(tiny_pipe):
    """The prompt embeddings the transformer received in each window (captured from the step callback) are those
    of the window's segment, encoded alone."""
    seen = {}

    def capture(pipe, step, sigma, tensors):
        seen.setdefault(pipe.long_video_window, tensors["prompt_embeds"].clone())
        return {}

    prompts = ["a red fox in snow", "a blue bird on a wire", "a green frog in rain"]
    segments = [(0, prompts[0]), ("32f", prompts[1]), ("3s", prompts[2])]  # 3 s = frame 72
    tiny_pipe.generate_long_video(segments, output_type="latent", generator=_gen(), num_frames=97, window=41,
                                  overlap=16, callback_on_step_end=capture,
                                  callback_on_step_end_tensor_inputs=["prompt_embeds"], **RUN)
    windows = plan_windows(97, 41, 16)  # owned frames 0..40 | 41..72 | 73..96
    assert len(windows) == 3 and sorted(seen) == [0, 1, 2]
    for k, text in enumerate(prompts):
        alone = {}

        def capture_alone(pipe, step, sigma, tensors):
            alone.setdefault("e", tensors["prompt_embeds"].clone())
            return {}

        tiny_pipe(text, num_frames=9, output_type="latent", num_inference_steps=1, height=64, width=64,
                  max_sequence_length=128, guider=RUN["guider"], callback_on_step_end=capture_alone,
                  callback_on_step_end_tensor_inputs=["prompt_embeds"])
        assert torch.equal(seen[k], alone["e"]), f"window {k}"
    assert not torch.equal(seen[0], seen[1])


def test_later_windows_are_guided_by_the_finished_tail_and_blended(tiny_pipe, monkeypatch):
    spy = CallSpy(tiny_pipe, monkeypatch)
    out = tiny_pipe.generate_long_video("a dog runs", output_type="latent", generator=_gen(), overlap_strength=0.7,
                                        **THREE, **RUN)
    windows = plan_windows(57, 25, 16)
    assert [c["num_frames"] for c in spy.calls] == [w.num_frames for w in windows]
    assert all(c["output_type"] == "latent" for c in spy.calls)
    v = [o.frames.float().cpu() for o in spy.outputs]
    # window 1's guide: the finished clip's last 2 latents (= window 0's latents 2, 3), at strength 0.7
    guide = [c for c in spy.calls[1]["conditions"] if isinstance(c, LatentGuide)][0]
    assert guide.strength == 0.7 and torch.equal(guide.video, v[0][:, :, 2:4])
    start = audio_placements(windows, 57, 24.0, 25.0)[1][0]  # round(16 / 24 * 25) = 17
    n = round(9 / 24 * 25)  # the guide's span: its 2 latents are 9 frames of the new window
    assert start == 17 and torch.equal(guide.audio, spy.outputs[0].audio.float().cpu()[:, :, start:start + n])
    # joined (window latent 0 dropped, 1 latent blended 1/2-1/2): window 0's latents 0..2 | 3 with window 1's 1 |
    # window 1's 2 | window 1's 3 with window 2's 1 | window 2's 2, 3
    half = torch.tensor(0.5)
    assert torch.equal(out.frames[:, :, :3], v[0][:, :, :3])
    torch.testing.assert_close(out.frames[:, :, 3], v[0][:, :, 3] * (1 - half) + v[1][:, :, 1] * half)
    assert torch.equal(out.frames[:, :, 4], v[1][:, :, 2])
    torch.testing.assert_close(out.frames[:, :, 5], v[1][:, :, 3] * (1 - half) + v[2][:, :, 1] * half)
    assert torch.equal(out.frames[:, :, 6:8], v[2][:, :, 2:4])


def test_adain_normalises_later_windows_to_the_first(tiny_pipe, monkeypatch):
    joined = []
    original = sliding.blend_video_latents
    monkeypatch.setattr(sliding, "blend_video_latents", lambda f, w, n: joined.append(w) or original(f, w, n))
    spy = CallSpy(tiny_pipe, monkeypatch)
    tiny_pipe.generate_long_video("a dog runs", output_type="latent", generator=_gen(), adain_factor=1.0, **THREE,
                                  **RUN)
    first = spy.outputs[0].frames.float()
    for window in joined:  # what is blended in: each later window with the first window's channel statistics
        torch.testing.assert_close(window.std(dim=(2, 3, 4)), first.std(dim=(2, 3, 4)), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(window.mean(dim=(2, 3, 4)), first.mean(dim=(2, 3, 4)), atol=1e-5, rtol=1e-4)


def test_whole_clip_keyframes_and_audio_land_in_their_windows(tiny_pipe, monkeypatch):
    spy = CallSpy(tiny_pipe, monkeypatch)
    key = np.random.RandomState(0).randint(0, 255, (64, 64, 3), dtype=np.uint8)
    t = torch.arange(round(57 / 24 * 16000)) / 16000
    sound = torch.stack([torch.sin(2 * torch.pi * 330 * t)] * 2) * 0.3
    conditions = [VideoCondition(key, 0), VideoCondition(key, 40, 0.8), VideoCondition(key, -1),
                  AudioCondition(sound, 16000)]
    out = tiny_pipe.generate_long_video("a dog runs", conditions=conditions, output_type="pt", generator=_gen(),
                                        **THREE, **RUN)
    frames = [[(c.frame_index, c.strength) for c in call["conditions"] if isinstance(c, VideoCondition)]
              for call in spy.calls]
    # frame 40 is in latent 5, first generated by window 1 (latents 2..5, first frame 16): local frame 24;
    # the last frame (56) in window 2 (first frame 32): local 24
    assert frames == [[(0, 1.0)], [(24, 0.8)], [(24, 1.0)]]
    for call, w in zip(spy.calls, plan_windows(57, 25, 16)):
        audio = [c for c in call["conditions"] if isinstance(c, AudioCondition)]
        first = round(w.first_frame / 24 * 16000)
        assert len(audio) == 1 and torch.equal(audio[0].waveform, sound[:, first:first + audio[0].waveform.shape[1]])
        guides = [c for c in call["conditions"] if isinstance(c, LatentGuide)]
        assert all(g.audio is None for g in guides)  # the sound is given: no audio guide
    plain = tiny_pipe("a dog runs", num_frames=57, conditions=[AudioCondition(sound, 16000)], output_type="pt",
                      generator=_gen(), **RUN)
    assert out.frames.shape[1] == 57 and torch.equal(out.audio, plain.audio)  # the given sound, as a one-call A2V


def test_memory_does_not_grow_with_windows(tiny_pipe):
    """Peak bytes allocated during a 5-window generation <= 1.15x a 1-window one (the issue's bound, on the tiny
    model), and within 10% of a 2-window one (after the first guided window only the finished latents kept on the
    CPU grow: measured +6% on the tiny model, whose working set is 0.37 MiB; +2.7% on SMALL)."""
    from diffusers_ltx2.memory.measure import AllocationTracker

    tiny_pipe.set_progress_bar_config(disable=True)
    peaks = {}
    for windows, frames in ((1, 41), (2, 73), (5, 169)):  # window 41, overlap 16
        assert len(plan_windows(frames, 41, 16)) == windows
        with AllocationTracker() as tracker:
            tiny_pipe.generate_long_video("a dog runs", output_type="latent", generator=_gen(), num_frames=frames,
                                          window=41, overlap=16, **RUN)
        peaks[windows] = tracker.peak
    assert peaks[5] <= 1.15 * peaks[1], peaks
    assert peaks[5] <= 1.10 * peaks[2], peaks


def test_the_clip_is_decoded_into_frames_assembled_on_the_cpu(tiny_pipe, monkeypatch):
    """The final decode of the whole clip copies each VAE tile to the CPU as it finishes (`output_device="cpu"`),
    so the device never holds the clip's frames; the frames equal a decode of the returned latents."""
    seen = []
    original = type(tiny_pipe).decode_video

    def spy(this, latents, output_type, **kwargs):
        seen.append(kwargs.get("output_device"))
        return original(this, latents, output_type, **kwargs)

    monkeypatch.setattr(type(tiny_pipe), "decode_video", spy)
    out = tiny_pipe.generate_long_video("a dog runs", output_type="pt", generator=_gen(), **THREE, **RUN)
    latents = tiny_pipe.generate_long_video("a dog runs", output_type="latent", generator=_gen(), **THREE, **RUN)
    assert seen == ["cpu"] and out.frames.device.type == "cpu"
    torch.testing.assert_close(out.frames, original(tiny_pipe, latents.frames, "pt"), rtol=0, atol=0)


def test_one_progress_bar_counts_windows_and_steps(tiny_pipe, monkeypatch):
    bars = []
    original = type(tiny_pipe).progress_bar

    def recording(self, iterable=None, total=None):
        bar = original(self, iterable=iterable, total=total)
        bars.append((bar, dict(self._progress_bar_config)))
        return bar

    monkeypatch.setattr(type(tiny_pipe), "progress_bar", recording)
    tiny_pipe.generate_long_video("a dog runs", output_type="latent", generator=_gen(), **THREE, **RUN)
    shown = [bar for bar, config in bars if not config.get("disable")]
    assert len(shown) == 1 and shown[0].total == 3 * 2 and shown[0].n == 6
    assert "window 3/3" in shown[0].desc
    assert len(bars) == 4  # the windows' own denoise bars were created disabled


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_frames=56), "num_frames must be 8k\\+1"),
    (dict(overlap=12), "overlap must be a multiple of 8"),
    (dict(overlap_strength=1.5), "overlap_strength must be a number in \\[0, 1\\]"),
    (dict(adain_factor=-0.1), "adain_factor must be"),
    (dict(latents=torch.zeros(1)), "sliding windows set latents themselves"),
    (dict(prompt=[(0, "a"), ("1.2s", "b"), ("1.3s", "c")]), "segment 1 .* not the main prompt of any window"),
    (dict(conditions=[VideoCondition(np.zeros((17, 64, 64, 3), np.uint8), 16)]), "runs past window 0"),
    (dict(conditions=[TemporalRegion(0.1, 0.2, video=False)]), "not TemporalRegion"),
    (dict(conditions=[VideoCondition(np.zeros((64, 64, 3), np.uint8), 60)]), "outside the clip"),
])
def test_refusals_before_any_model_runs(tiny_pipe, monkeypatch, kwargs, match):
    monkeypatch.setattr(tiny_pipe.transformer, "forward", lambda *a, **k: pytest.fail("the model ran"))
    call = dict(prompt="a dog", **THREE, **RUN)
    call.update(kwargs)
    with pytest.raises(ValueError, match=match):
        tiny_pipe.generate_long_video(**call)


def test_latent_guide_tokens_equal_ltx_core_keyframe_condition(tiny_pipe):
    """Video guide = ltx-core 1.0.0 `VideoConditionByKeyframeIndex(normalized latents, frame_idx=0, strength)`:
    the same appended clean tokens, denoise mask and positions; audio guide = the first audio tokens in place."""
    from ltx_core.components.patchifiers import VideoLatentPatchifier
    from ltx_core.conditioning.types import VideoConditionByKeyframeIndex
    from ltx_core.tools import VideoLatentTools
    from ltx_core.types import VideoLatentShape, VideoPixelShape

    from diffusers_ltx2.conditioning import check_conditions, initial_state
    from diffusers_ltx2.latents import layout as L

    g = torch.Generator().manual_seed(3)
    video = torch.randn(1, 16, 2, 2, 2, generator=g)
    audio = torch.randn(1, 2, 5, 16, generator=g)
    geometry = tiny_pipe.clip_geometry(1, 25, 64, 64, 24.0)
    state = initial_state(check_conditions([LatentGuide(video, audio, 0.3)], geometry), geometry,
                          tiny_pipe.latent_encoder(torch.device("cpu")), generator=_gen())
    pixel = VideoPixelShape(batch=1, frames=25, height=64, width=64, fps=24.0)
    tools = VideoLatentTools(VideoLatentPatchifier(patch_size=1), VideoLatentShape.from_pixel_shape(pixel, 16), 24.0)
    normalized = L.normalize_video(video, tiny_pipe.vae.latents_mean, tiny_pipe.vae.latents_std)
    initial = tools.create_initial_state("cpu", torch.float32)
    official = VideoConditionByKeyframeIndex(normalized, 0, 0.3).apply_to(initial, tools)
    n = state.video.num_target_tokens
    assert state.video.clean.shape[1] == official.clean_latent.shape[1] == n + 8
    torch.testing.assert_close(state.video.clean[:, n:], official.clean_latent[:, n:])
    torch.testing.assert_close(state.video.denoise_mask[:, n:], official.denoise_mask[:, n:, 0])
    torch.testing.assert_close(state.video.coords[:, :, n:], official.positions[:, :, n:])
    tokens = L.normalize_audio_tokens(L.pack_audio(audio), tiny_pipe.audio_vae.latents_mean,
                                      tiny_pipe.audio_vae.latents_std)
    torch.testing.assert_close(state.audio.clean[:, :5], tokens)
    assert torch.all(state.audio.denoise_mask[:, :5] == 0.7) and torch.all(state.audio.denoise_mask[:, 5:] == 1)


def test_two_stage_pipelines_are_refused_and_their_one_stage_form_runs_the_windows(tiny_components):
    """A two-stage (or DFR) call's first stage runs at half size, where the previous window's full-size guide does
    not fit (it failed in window 2 with a shape error): refused before any model runs, naming the way out, which
    works."""
    from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel

    from diffusers_ltx2 import LTX2AudioVideoPipeline, LTX2DFRPipeline, LTX2Scheduler, LTX2TwoStagePipeline

    up = LTX2LatentUpsamplerModel(in_channels=tiny_components["vae"].config.latent_channels, mid_channels=32,
                                  num_blocks_per_stage=1, use_rational_resampler=False).eval()
    two = LTX2TwoStagePipeline(scheduler=LTX2Scheduler(), latent_upsampler=up, **tiny_components)
    two.set_progress_bar_config(disable=True)
    calls = []
    two.transformer.register_forward_pre_hook(lambda *a: calls.append(1))
    for cls in (LTX2TwoStagePipeline, LTX2DFRPipeline):
        with pytest.raises(ValueError, match="half-size first stage cannot take them"):
            sliding.generate_long_video(cls.__new__(cls) if cls is LTX2DFRPipeline else two, "a fox", **THREE,
                                        **RUN)
    assert not calls
    one = LTX2AudioVideoPipeline.from_pipe(two)
    out = one.generate_long_video("a fox", output_type="latent", generator=_gen(), **THREE, **RUN)
    assert out.frames.shape[2] == (THREE["num_frames"] - 1) // 8 + 1
