"""`ltx2 ui` without a browser: its job queue runs the `ltx2` commands' own resolution and pipeline calls on the
tiny model (every mode), progress per step, cancel at the next step, settings files that `ltx2 COMMAND
--from-settings` re-runs to the same latents, upload checks, the form -> command mapping, and the file guard."""

from __future__ import annotations

import json
import os
import re

import av
import numpy as np
import pytest

from media_files import frame_colours, tone, write_audio, write_video

from diffusers_ltx2.cli import main, parse_args, resolve

FAST = dict(steps=2, dtype="fp32", device="cpu", num_frames=9, height=64, width=64)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo files `ltx2 ui` builds (tiny model, LoRAs, upsampler) and media to upload."""
    from diffusers_ltx2.ui.demo_model import ensure_demo_model

    root = tmp_path_factory.mktemp("ui")
    paths = ensure_demo_model(str(root / "demo"))
    media = root / "media"
    media.mkdir()
    paths["clip"] = write_video(media / "clip.mp4", frame_colours(17, 64, 64), fps=24,
                                audio=tone(1.0, 48000, freqs=(440.0, 440.0)), sample_rate=48000)
    paths["wav"] = write_audio(media / "tone.wav", tone(1.0, 48000, freqs=(440.0, 440.0)), 48000)
    (media / "notes.mp4").write_text("not a video\n")
    (media / "empty.wav").write_bytes(b"")
    paths["media"] = str(media)
    return paths


@pytest.fixture()
def queue(tmp_path):
    from diffusers_ltx2.ui.jobs import JobQueue

    out = tmp_path / "out"
    out.mkdir()
    q = JobQueue(str(out))
    yield q
    q.close(timeout=30)


@pytest.fixture()
def final_latents(monkeypatch):
    """The latents after the last step of every pipeline call (through the public `callback_on_step_end`,
    chained before the caller's own callback)."""
    from diffusers_ltx2 import LTX2AudioVideoPipeline

    seen = []
    original = LTX2AudioVideoPipeline.__call__

    def spy(self, *args, **kwargs):
        theirs, record = kwargs.get("callback_on_step_end"), {}

        def callback(pipe, step, sigma, tensors):
            record.update({k: v.detach().clone() for k, v in tensors.items()})
            return theirs(pipe, step, sigma, tensors) if theirs is not None else {}

        kwargs.update(callback_on_step_end=callback, callback_on_step_end_tensor_inputs=["latents", "audio_latents"])
        out = original(self, *args, **kwargs)
        seen.append(record)
        return out

    monkeypatch.setattr(LTX2AudioVideoPipeline, "__call__", spy)
    return seen


def _streams(path):
    with av.open(str(path)) as container:
        return sorted(s.type for s in container.streams)


def _decoded(path):
    with av.open(str(path)) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    with av.open(str(path)) as container:
        audio = np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=-1)
    return frames, audio


# ------------------------------------------------------------------------------------------- settings files


def test_settings_rerun_with_the_cli_gives_the_same_latents(demo, queue, final_latents, tmp_path):
    values = dict(FAST, model=demo["model"], prompt="a red bird", seed=3, lora=[f"{demo['loras']}/tiny-style"
                                                                                ".safetensors:0.5"])
    job = queue.wait(queue.submit("text/image to video", "generate", values).id, timeout=300)
    assert job.state == "done", job.error
    assert _streams(job.output) == ["audio", "video"]
    saved = json.loads(open(job.settings).read())
    assert saved["command"] == "generate" and saved["values"]["seed"] == 3 and saved["values"]["steps"] == 2
    assert saved["values"]["lora"] == [f"{demo['loras']}/tiny-style.safetensors:0.5"]
    again = tmp_path / "again.mp4"
    assert main(["generate", "--from-settings", job.settings, "--output", str(again), "--no-progress"]) == 0
    ui, cli = final_latents
    for name in ("latents", "audio_latents"):
        assert ui[name].shape == cli[name].shape and np.array_equal(ui[name].numpy(), cli[name].numpy()), name
    for a, b in zip(_decoded(job.output), _decoded(again)):
        assert np.array_equal(a, b)


def test_from_settings_merges_refuses_overwrites_and_other_commands(demo, queue, tmp_path, capsys):
    job = queue.wait(queue.submit("retake", "retake", dict(model=demo["model"], prompt="p", input=demo["clip"],
                                                           start=0.1, end=0.4, steps=2, dtype="fp32")).id, 300)
    assert job.state == "done", job.error
    # flags given win over the file's; the required --model / --input come from the file
    command, values = parse_args(["retake", "--from-settings", job.settings, "--seed", "7", "--output", "x.mp4"])
    args = resolve("retake", values).args
    assert (args.seed, args.input, args.start, args.end) == (7, demo["clip"], 0.1, 0.4)
    assert main(["generate", "--from-settings", job.settings]) == 2
    assert f"holds `ltx2 retake` settings: run ltx2 retake --from-settings {job.settings}" in capsys.readouterr().err
    assert main(["retake", "--from-settings", job.settings]) == 2  # the recorded output exists
    assert "would be overwritten: pass --output" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    edited = json.loads(open(job.settings).read())
    edited["values"]["steps"] = 0  # edited by hand
    bad.write_text(json.dumps(edited))
    assert main(["retake", "--from-settings", str(bad), "--output", str(tmp_path / "o.mp4")]) == 2
    assert "--steps: must be >= 1" in capsys.readouterr().err  # checked like the command line
    bad.write_text("[1, 2")
    assert main(["retake", "--from-settings", str(bad)]) == 2
    assert "not valid JSON" in capsys.readouterr().err


# ------------------------------------------------------------------------------------- every mode, progress


@pytest.mark.slow
def test_every_mode_runs_through_the_queue(demo, queue):
    from diffusers_ltx2.ui.modes import job_request

    shared = dict(prompt="waves", steps=2, dtype="fp32", device="cpu", num_frames=9, height=64, width=64,
                  frame_rate=24.0, seed=0, guidance_preset="CFG only", video_cfg=2.0, audio_cfg=2.0)
    image = os.path.join(demo["media"], "key.png")
    import PIL.Image

    PIL.Image.fromarray(frame_colours(1, 64, 64)[0]).save(image)
    forms = {
        "text/image to video": dict(keyframes=[image, image], keyframe_frames=""),
        "audio to video": dict(audio=demo["wav"]),
        "video to audio (foley)": dict(input=demo["clip"]),
        "retake": dict(input=demo["clip"], start=0.2, end=0.5, retake_what="video only"),
        "extend": dict(input=demo["clip"], frames=8, overlap=8, overlap_strength=0.5),
        "IC-LoRA control": dict(control_video=demo["clip"], preprocess="canny",
                                ic_lora="tiny-ic-lora-union.safetensors"),
        "two-stage / distilled": dict(distilled_lora="tiny-distilled-lora.safetensors", upsampler=demo["upsampler"],
                                      height=128, width=128),
        "audio only": dict(),
    }
    jobs = {}
    for mode, extra in forms.items():
        request = job_request(mode, dict(shared, **extra), model=demo["model"], lora_dir=demo["loras"])
        jobs[mode] = queue.submit(request.mode, request.command, request.values, encode=request.encode)
    for mode, job in jobs.items():
        job = queue.wait(job.id, timeout=600)
        assert job.state == "done", (mode, job.error)
        assert os.path.isfile(job.settings)
        if mode == "audio only":
            assert job.output.endswith(".wav") and _streams(job.output) == ["audio"]
        else:
            assert _streams(job.output) == ["audio", "video"], mode
        stages = 2 if mode == "two-stage / distilled" else 1
        assert job.stages == stages and job.events[-1][0] == stages, mode
        # one progress update per denoising step of every stage
        for stage in range(1, stages + 1):
            steps = [(i, n) for s, i, n in job.events if s == stage]
            assert steps == [(i, steps[0][1]) for i in range(1, steps[0][1] + 1)], (mode, stage)
    assert jobs["two-stage / distilled"].events[-1][2] == 3  # the 3 refinement steps


def test_cancel_stops_within_one_step_and_the_next_job_runs(demo, queue):
    import time

    values = dict(FAST, model=demo["model"], prompt="p")
    long = queue.submit("text/image to video", "generate", dict(values, steps=20000))
    waiting = queue.submit("text/image to video", "generate", dict(values, steps=20000))
    after = queue.submit("text/image to video", "generate", values)
    while queue.get(long.id).step < 2:
        time.sleep(0.01)
    assert queue.cancel(waiting.id) and queue.get(waiting.id).state == "cancelled"  # dropped from the queue
    assert queue.cancel(long.id)
    long = queue.wait(long.id, timeout=120)
    assert long.state == "cancelled" and long.output is None
    assert long.stopped_step - long.cancel_step <= 1 and long.stopped_step < 20000
    assert queue.wait(after.id, timeout=300).state == "done"
    assert queue.get(waiting.id).events == []  # never ran
    assert not queue.cancel(after.id)  # finished: nothing to cancel
    names = os.listdir(queue.output_dir)
    assert not [n for n in names if n.startswith(".tmp-")]  # nothing half-written
    assert sorted(n.rsplit(".", 1)[1] for n in names if "-001-" in n) == []  # the cancelled job wrote nothing


def test_a_bad_job_fails_with_one_line_and_the_queue_goes_on(demo, queue):
    from diffusers_ltx2.ui.modes import job_request

    with pytest.raises(ValueError, match="--num-frames .* 8k\\+1"):  # refused at submission, as the CLI does
        queue.submit("t2v", "generate", dict(FAST, model=demo["model"], prompt="p", num_frames=10))
    request = job_request("audio to video", dict(prompt="p", audio=os.path.join(demo["media"], "empty.wav"),
                                                 **FAST), model=demo["model"])
    bad = queue.wait(queue.submit(request.mode, request.command, request.values).id, timeout=300)
    assert bad.state == "failed" and "\n" not in bad.error and "--audio" in bad.error
    good = queue.submit("t2v", "generate", dict(FAST, model=demo["model"], prompt="p"))
    assert queue.wait(good.id, timeout=300).state == "done"


# ------------------------------------------------------------------------------------------ forms and uploads


def test_forms_become_the_cli_arguments(demo):
    from diffusers_ltx2.ui.modes import job_request

    loras = demo["loras"]
    r = job_request("IC-LoRA control", dict(prompt="p", control_video="c.mp4", ic_lora="tiny-ic-lora-union"
                                            ".safetensors", ic_lora_strength=0.8, lora_1="tiny-style.safetensors",
                                            lora_1_strength=0.3, guidance_preset="no guidance (distilled "
                                            "checkpoints)", seed=4.0), model="m", lora_dir=loras)
    assert r.command == "control" and r.values["no_guidance"] and r.values["seed"] == 4
    assert r.values["lora"] == [f"{loras}/tiny-ic-lora-union.safetensors:0.8", f"{loras}/tiny-style.safetensors:0.3"]
    r = job_request("retake", dict(prompt="p", input="c.mp4", start=0.5, end=1.0, retake_what="audio only",
                                   num_frames=9), model="m")
    assert r.values["no_video"] and not r.values["no_audio"] and "num_frames" not in r.values  # sizes: the clip's
    r = job_request("text/image to video", dict(prompt="p", keyframes=["a.png", "b.png", "c.png"],
                                                keyframe_frames="0, 40, -1"), model="m")
    assert r.values["image"] == ["a.png@0", "b.png@40", "c.png@-1"]
    r = job_request("audio only", dict(prompt="p"), model="m")
    assert r.values["audio_only"] and r.suffix == "wav"
    r = job_request("text/image to video", dict(prompt="p", prompt_source="LTX API"), model="m",
                    api={"model_id": "x"})
    assert [e["dest"] for e in r.encode] == ["conditioning", "negative_conditioning"]
    assert all(e["api"] and e["model_id"] == "x" and "key" not in str(e).lower() for e in r.encode)
    with pytest.raises(ValueError, match="pick a file of the LoRA folder"):
        job_request("text/image to video", dict(prompt="p", lora_1="../outside.safetensors"), model="m",
                    lora_dir=loras)
    with pytest.raises(ValueError, match="--input: upload a video clip"):
        job_request("video to audio (foley)", dict(prompt="p"), model="m")


def test_uploads_are_checked_like_the_cli_checks_files(demo):
    from diffusers_ltx2.ui.uploads import check_upload

    media = demo["media"]
    assert check_upload(demo["clip"], "video", "--input") == demo["clip"]
    assert check_upload(demo["wav"], "audio", "--audio") == demo["wav"]
    cases = [
        (os.path.join(media, "notes.mp4"), "video", "--input notes.mp4: is not a readable video"),
        (os.path.join(media, "empty.wav"), "audio", "--audio empty.wav: the file is empty (0 bytes)"),
        (demo["wav"], "video", "--input tone.wav: not a video clip (accepted: .mp4"),
        (os.path.join(media, "notes.mp4"), "image", "not an image"),
    ]
    for path, kind, message in cases:
        with pytest.raises(ValueError, match=re.escape(message)):
            check_upload(path, kind, {"video": "--input", "audio": "--audio", "image": "--image"}[kind])
    with pytest.raises(ValueError, match="more than the 1 MB upload limit"):
        big = os.path.join(media, "big.wav")
        write_audio(big, tone(12.0, 48000), 48000)
        check_upload(big, "audio", "--audio", max_bytes=1000**2)


# ----------------------------------------------------------------------------------------------- the server


def test_file_requests_outside_the_output_folder_are_refused(tmp_path):
    from diffusers_ltx2.ui.server import inside, requested_file

    out = tmp_path / "out"
    out.mkdir()
    (out / "a.mp4").write_bytes(b"x")
    os.symlink(tmp_path, out / "link")
    assert requested_file(f"/gradio_api/file={out}/a.mp4") == f"{out}/a.mp4"
    assert requested_file("/gradio_api/file/etc/passwd") == "etc/passwd"
    assert requested_file(f"/gradio_api/file={out}/%252e%252e/x") == f"{out}/../x"
    assert requested_file("/gradio_api/queue/join") is None
    assert inside(f"{out}/a.mp4", str(out))
    for path in (f"{out}/../secret", "/etc/passwd", f"{out}/link/secret", "http://example.com/x", "//host/x"):
        assert not inside(path, str(out)), path


def test_ui_command_checks_its_arguments_before_starting(tmp_path, capsys):
    assert main(["ui", "--lora-dir", str(tmp_path / "nope")]) == 2
    assert "--lora-dir: folder not found" in capsys.readouterr().err
    assert main(["ui", "--model", str(tmp_path)]) == 2
    assert "not a diffusers pipeline folder" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main(["ui", "--output-dir", str(tmp_path / "file")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert main(["ui", "--port", "70000"]) == 2
    assert "--port: must be <= 65535" in capsys.readouterr().err


def test_the_memory_panel_plans_like_vram_budget(demo, capsys):
    """The page's plan is the one `ltx2 generate --vram-budget` prints for the same clip and budget."""
    from diffusers_ltx2.ui.planner import budget_text, detect_device, plan_for

    device, memory, text = detect_device()
    assert (device, memory) == ("cpu", None) or (device == "cuda" and memory > 0)
    assert budget_text(None) == "" and budget_text(int(79.65 * 1024**3)) == "79.6GiB"
    plan = plan_for(demo["model"], 9, 64, 64, 24.0, "3MB")
    args = resolve("generate", dict(model=demo["model"], prompt="p", output="o.mp4", num_frames=9, height=64,
                                    width=64, vram_budget="3MB", dtype="fp32", device="cpu"), call=True).args
    printed = capsys.readouterr().out
    assert plan["text"].splitlines()[1:] == printed.splitlines()[1:]  # the same plan (after the header line)
    assert (plan["quantize"], plan["offload"]) == (args.memory.quantization, args.memory.offload)
    with pytest.raises(ValueError, match="bad memory size"):
        plan_for(demo["model"], 9, 64, 64, 24.0, "lots")


# ------------------------------------------------------------------------------------------- prompt sources


def test_ltx_api_and_saved_conditioning_prompts_run_and_keep_the_key_out(demo, queue, final_latents, monkeypatch,
                                                                       tmp_path):
    """An LTX API prompt is encoded by `ltx2 encode --api` (a stand-in server speaking the protocol; the model id
    read from the model folder, as for a converted official checkpoint) and the job runs on its file; the same file
    given as saved conditioning gives the same latents; the key is sent only as the Authorization header: never in
    the settings, the job's log or any output file."""
    import shutil

    from test_api_encoder import MODEL_ID, FakeLTXAPI, Reply, conditioning_pickle

    from diffusers_ltx2.loaders.identity import context_dims
    from diffusers_ltx2.ui.modes import API, SAVED, job_request

    key = "sk-ui-queue-test-0a1b2c3d4e5f"
    monkeypatch.setenv("LTX_API_KEY", key)
    model = str(tmp_path / "model")  # the demo model with a checkpoint's API model id, where `ltx2 convert` puts it
    shutil.copytree(demo["model"], model)
    index = json.load(open(os.path.join(model, "model_index.json")))
    with open(os.path.join(model, "model_index.json"), "w") as f:
        json.dump(dict(index, model_identity=MODEL_ID), f)
    width = sum(context_dims(json.load(open(os.path.join(model, "connectors", "config.json")))))
    fake = FakeLTXAPI()
    fake.default = lambda request: Reply(200, conditioning_pickle(json.loads(request["body"])["prompt"], width=width))
    fake.thread.start()
    try:
        form = dict(FAST, prompt="a red bird", guidance_preset="no guidance (distilled checkpoints)")
        request = job_request("text/image to video", dict(form, prompt_source=API), model=model,
                              api={"base_url": fake.url})
        api_job = queue.wait(queue.submit(request.mode, request.command, request.values,
                                          encode=request.encode).id, timeout=300)
    finally:
        fake.server.shutdown()
        fake.server.server_close()
    assert api_job.state == "done", api_job.error
    assert [r["headers"]["Authorization"] for r in fake.requests] == [f"Bearer {key}"] * 2  # prompt, negative
    conditioning = api_job.values["conditioning"]
    assert os.path.dirname(conditioning) == queue.output_dir and api_job.values["prompt"] is None
    saved = json.load(open(api_job.settings))["values"]
    assert saved["conditioning"] == conditioning and saved["prompt"] is None
    request = job_request("text/image to video", dict(form, prompt_source=SAVED, conditioning=conditioning),
                          model=model)
    saved_job = queue.wait(queue.submit(request.mode, request.command, request.values).id, timeout=300)
    assert saved_job.state == "done", saved_job.error
    for name in ("latents", "audio_latents"):
        assert np.array_equal(final_latents[0][name].numpy(), final_latents[1][name].numpy()), name
    assert key not in "\n".join(api_job.log + saved_job.log)
    for name in os.listdir(queue.output_dir):
        with open(os.path.join(queue.output_dir, name), "rb") as f:
            assert key.encode() not in f.read(), name


# ------------------------------------------------------------------------------------------------- previews


def test_retake_window_preview_refuses_what_the_job_refuses(demo, queue, tmp_path):
    """The preview checks the window with `ltx2 retake`'s own layer: a 20-frame clip is used as its 17 (8k+1)
    frames, so an END inside the file but past those frames is refused by both, with the same line."""
    from diffusers_ltx2.ui.previews import retake_window

    clip = write_video(tmp_path / "twenty.mp4", frame_colours(20, 64, 64), fps=24,
                       audio=tone(20 / 24, 48000, freqs=(440.0, 440.0)), sample_rate=48000)
    pictures, text = retake_window(demo["model"], clip, 0.25, 0.5, queue.output_dir)
    assert [p.shape for p in pictures] == [(64, 64, 3)] * 2 and "frames 6-11 of the 17 used" in text
    assert pictures[0][0, 0, 0] == pytest.approx(frame_colours(20, 64, 64)[6][0, 0, 0], abs=3)
    past = "--end 0.8 is past the end of the clip, which lasts 0.7083 s (17 frames at 24 fps)"
    with pytest.raises(ValueError, match=re.escape(past)):
        retake_window(demo["model"], clip, 0.25, 0.8, queue.output_dir)
    job = queue.wait(queue.submit("retake", "retake", dict(FAST, model=demo["model"], prompt="p", input=clip,
                                                           start=0.25, end=0.8, num_frames=None, height=None,
                                                           width=None)).id, timeout=300)
    assert job.state == "failed" and past in job.error
    with pytest.raises(ValueError, match=re.escape("--start 0.5 must be before --end 0.25")):
        retake_window(demo["model"], clip, 0.5, 0.25, queue.output_dir)


def test_a_cancelled_job_leaves_no_tensor_behind(demo, queue, monkeypatch):
    """Cancel frees memory: once the job has stopped, nothing holds its latents (the callback's exception, the
    job, the pipeline and the queue keep no reference; on a GPU `torch.cuda.empty_cache` then returns them)."""
    import gc
    import time
    import weakref

    from diffusers_ltx2 import LTX2AudioVideoPipeline

    held = []
    original = LTX2AudioVideoPipeline.__call__

    def spy(self, *args, **kwargs):
        theirs = kwargs["callback_on_step_end"]

        def callback(pipe, step, sigma, tensors):
            held.extend(weakref.ref(t) for t in tensors.values())
            return theirs(pipe, step, sigma, tensors)

        kwargs.update(callback_on_step_end=callback, callback_on_step_end_tensor_inputs=["latents", "audio_latents"])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(LTX2AudioVideoPipeline, "__call__", spy)
    job = queue.submit("text/image to video", "generate", dict(FAST, model=demo["model"], prompt="p", steps=20000))
    while queue.get(job.id).step < 2:
        time.sleep(0.01)
    queue.cancel(job.id)
    assert queue.wait(job.id, timeout=120).state == "cancelled"
    gc.collect()
    assert held and [r for r in held if r() is not None] == []
    assert queue.pipelines.pipe is not None  # the loaded model stays for the next job


def test_a_stopped_job_is_reported_after_its_tensors_are_released(demo, queue, monkeypatch):
    """The queue releases a cancelled call's tensors (once the exception that stopped it, whose traceback holds the
    call's frames, is gone) before it reports the job stopped, so `wait()` never returns while they are held: the
    test above could otherwise find them alive on a loaded machine (it did once in the whole suite)."""
    import time

    from diffusers_ltx2.ui import jobs

    states_at_release = []
    original = jobs._release_memory

    def release():
        current = queue.get(job.id)
        if current is not None and current.cancel_requested:
            states_at_release.append(current.state)
        original()

    monkeypatch.setattr(jobs, "_release_memory", release)
    job = queue.submit("text/image to video", "generate", dict(FAST, model=demo["model"], prompt="p", steps=20000))
    while queue.get(job.id).step < 2:
        time.sleep(0.01)
    queue.cancel(job.id)
    assert queue.wait(job.id, timeout=120).state == "cancelled"
    assert states_at_release == ["running"]


def test_page_helpers_presets_plan_gallery_and_default_host(demo, queue):
    """The recommended preset is the official dev-checkpoint guidance (ltx-pipelines' `LTX_2_PARAMS`); the memory
    panel's button fills quantize / offload from the plan; a WAV output gets an audio player served from the output
    folder; the server binds 127.0.0.1 unless --host says otherwise."""
    import ltx_reference  # noqa: F401  (stubs torchaudio before ltx-pipelines is imported)
    from ltx_pipelines.utils.constants import LTX_2_PARAMS

    from diffusers_ltx2.ui import app as page
    from diffusers_ltx2.ui.jobs import DONE, Job
    from diffusers_ltx2.ui.modes import _DIALS, GUIDANCE_PRESETS
    from diffusers_ltx2.ui.planner import plan_for
    from diffusers_ltx2.ui.render import file_url, render_gallery

    official = []
    for params in (LTX_2_PARAMS.video_guider_params, LTX_2_PARAMS.audio_guider_params):
        official += [params.cfg_scale, params.stg_scale, params.modality_scale, params.rescale_scale, params.skip_step]
    assert page._preset_values("recommended (dev checkpoints)") == official
    assert len(official) == 2 * len(_DIALS) and GUIDANCE_PRESETS["no guidance (distilled checkpoints)"] is None

    ctx = page.AppContext(model=demo["model"], queue=queue)
    text, quantize, text_quantize, offload = page._plan(ctx, 9, 64, 64, 24.0, "3MB")
    plan = plan_for(demo["model"], 9, 64, 64, 24.0, "3MB")
    assert text == plan["text"] and "3MB" in text
    assert (quantize, text_quantize, offload) == tuple(plan[k] or "none" for k in ("quantize", "text_encoder_quantize",
                                                                                     "offload"))
    assert page._plan(ctx, 9, 64, 64, 24.0, "lots")[0].startswith("Error: ")

    wav = os.path.join(queue.output_dir, "a.wav")
    job = Job(1, "audio only", "generate", {}, state=DONE, output=wav, settings=wav[:-3] + "json")
    html_text = render_gallery([job])
    assert f'<audio controls preload="metadata" src="{file_url(wav)}">' in html_text and "<video" not in html_text
    assert file_url(wav).startswith("/gradio_api/file=" + queue.output_dir)

    assert resolve("ui", {}).args.host == "127.0.0.1"
