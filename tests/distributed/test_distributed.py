"""The distributed package without a process group: how passes are split, layouts, the launcher environment,
prompt lists, the decoded tile shape, and `ltx2 generate`'s checks of the new flags (before any model loads)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import torch

from diffusers_ltx2.distributed.layout import ParallelLayout
from diffusers_ltx2.distributed.passes import assign_passes, pass_gather_bytes
from diffusers_ltx2.distributed.prompt_list import (
    clips_of_group, output_path, parse_prompt_list, pending_clips, read_prompt_list,
)
from diffusers_ltx2.distributed.runtime import LaunchEnv, launch_env
from diffusers_ltx2.guiders import ModalityGuidanceParams, MultimodalGuider, ScheduledGuider
from diffusers_ltx2.transformer.grouping import prefix_key


def _names(shares):
    return [[p.name for p in share] for share in shares]


def test_passes_are_split_with_prefix_sharing_passes_together():
    plan = MultimodalGuider().plan(0, 4, 1.0)  # cond, uncond, perturbed, isolated
    two = assign_passes(list(plan.passes), 2)
    assert sorted(map(sorted, _names(two))) == [["cond", "perturbed"], ["isolated", "uncond"]]
    for share in two:  # every share holds whole prefix clusters
        keys = {prefix_key(p) for p in share}
        assert all(sum(prefix_key(q) == k for q in plan.passes) == sum(prefix_key(q) == k for q in share)
                   for k in keys)
    four = assign_passes(list(plan.passes), 4)
    assert sorted(len(s) for s in four) == [1, 1, 1, 1]
    eight = assign_passes(list(plan.passes), 8)
    assert sum(map(len, eight)) == 4 and sum(1 for s in eight if not s) == 4
    assert assign_passes([], 3) == [[], [], []]
    with pytest.raises(ValueError, match="num_groups"):
        assign_passes(list(plan.passes), 0)


def test_the_split_follows_every_steps_plan():
    """skip_step, a frozen modality and a sigma-scheduled guider change the passes from step to step: every step's
    shares hold exactly that step's passes, none twice."""
    skipping = MultimodalGuider(video=ModalityGuidanceParams(cfg=3.0, stg=1.0, modality_scale=3.0, skip_step=1),
                                audio=ModalityGuidanceParams(cfg=7.0, stg=0.0, modality_scale=1.0, skip_step=1))
    frozen = MultimodalGuider().for_frozen(audio=True)
    scheduled = ScheduledGuider(video={float("inf"): dict(cfg=3, stg=1, modality_scale=3), 0.5: dict(cfg=3)})
    counts = set()
    for guider in (skipping, frozen, scheduled):
        for step, sigma in enumerate((1.0, 0.8, 0.6, 0.4, 0.2)):
            plan = guider.plan(step, 5, sigma)
            for groups in (2, 4):
                shares = assign_passes(list(plan.passes), groups)
                names = [p.name for s in shares for p in s]
                assert sorted(names) == sorted(p.name for p in plan.passes)
                counts.add(len(plan.passes))
    assert len(counts) >= 3  # the plans really differ


def test_pass_gather_bytes_from_shapes():
    plan = MultimodalGuider().plan(0, 4, 1.0)
    shares = assign_passes(list(plan.passes), 2)
    got = pass_gather_bytes(shares, plan, (1, 8, 16), (1, 9, 32))
    per_pass = (8 * 16 + 9 * 32) * 4
    assert got == {"buffer": 2 * per_pass, "received": 2 * per_pass, "total": 4 * per_pass}


def test_layouts_from_modes_and_rank_coordinates():
    assert ParallelLayout.from_mode("passes", 4) == ParallelLayout(4, 1)
    assert ParallelLayout.from_mode("sequence", 2) == ParallelLayout(1, 2)
    assert ParallelLayout.from_mode("passes+sequence", 8) == ParallelLayout(2, 4)
    assert ParallelLayout.from_mode(None, 1).size == 1
    for mode, ranks, message in (("passes+sequence", 2, "even number >= 4"), ("passes+sequence", 6 - 1, "even"),
                                 ("passes", 1, "at least 2"), ("tensor", 2, "must be one of")):
        with pytest.raises(ValueError, match=message):
            ParallelLayout.from_mode(mode, ranks)
    with pytest.raises(ValueError, match="sequence_attention"):
        ParallelLayout(1, 2, "flash")
    layout = ParallelLayout(2, 2)  # 8 ranks: 2 clip groups of 2 pass groups x 2 shards
    assert [layout.coordinates(r) for r in range(8)] == [
        (0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 1), (1, 0, 0), (1, 0, 1), (1, 1, 0), (1, 1, 1)]


def test_launcher_environment():
    assert launch_env({}) is None
    env = dict(RANK="1", WORLD_SIZE="2", LOCAL_RANK="1", MASTER_ADDR="127.0.0.1", MASTER_PORT="29500")
    assert launch_env(env) == LaunchEnv(rank=1, world_size=2, local_rank=1)
    with pytest.raises(ValueError, match="MASTER_PORT"):
        launch_env({k: v for k, v in env.items() if k != "MASTER_PORT"})
    with pytest.raises(ValueError, match="integers"):
        launch_env({**env, "RANK": "one"})
    with pytest.raises(ValueError, match="not in"):
        launch_env({**env, "RANK": "2"})


LIST = """# clips for the demo
a fox runs through the snow

42\ta red kite over a windy beach
{"prompt": "rain on a tin roof", "seed": 7, "name": "rain"}
  waves at night  
"""


def test_prompt_list_format(tmp_path):
    clips = parse_prompt_list(LIST, default_seed=100, source="list.txt")
    assert [(c.index, c.line, c.prompt, c.seed) for c in clips] == [
        (0, 2, "a fox runs through the snow", 100), (1, 4, "a red kite over a windy beach", 42),
        (2, 5, "rain on a tin roof", 7), (3, 6, "waves at night", 103)]
    assert clips[2].name == "rain"
    assert clips[0].name.startswith("0000_seed100_") and len(clips[0].name) == len("0000_seed100_") + 8
    # an edited prompt gets a new name, an unchanged one keeps it
    again = parse_prompt_list(LIST.replace("waves at night", "waves at dawn"), default_seed=100)
    assert again[0].name == clips[0].name and again[3].name != clips[3].name
    path = tmp_path / "list.txt"
    path.write_text(LIST, encoding="utf-8")
    assert read_prompt_list(str(path), default_seed=100) == clips
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "rain.mp4").write_bytes(b"done")
    (folder / ".tmp-abc.mp4").write_bytes(b"partial")  # a temporary file is not a finished output
    assert [c.name for c in pending_clips(clips, str(folder))] == [clips[0].name, clips[1].name, clips[3].name]
    assert output_path(str(folder), clips[2]) == str(folder / "rain.mp4")
    assert [c.index for c in clips_of_group(clips, 1, 2)] == [1, 3]
    assert [c.index for c in clips_of_group(clips, 0, 3)] == [0, 3]


@pytest.mark.parametrize("text,message", [
    ("", "no prompts"),
    ("# only a comment\n\n", "no prompts"),
    ('{"prompt": "a", "seeds": 3}', "list.txt:1: unknown keys"),
    ('{"prompt": 3}', "'prompt' must be a string"),
    ("a\n{not json", "list.txt:2: not a JSON object"),
    ('{"prompt": "a", "seed": -1}', "seed must be"),
    ('{"prompt": "a", "seed": true}', "seed must be"),
    ('{"prompt": "a", "name": "../x"}', "'name' must be"),
    ('{"prompt": "  "}', "empty prompt"),
    ('{"prompt": "a", "name": "x"}\n{"prompt": "b", "name": "x"}',
     "list.txt:2: output name 'x' is already used on line 1"),
])
def test_prompt_list_errors_name_the_line(text, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_prompt_list(text, source="list.txt")


def test_prompt_list_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_prompt_list(str(tmp_path / "missing.txt"))
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9 au lait".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8"):
        read_prompt_list(str(bad))


def test_decoded_tile_shape_is_the_decoders(tiny_components):
    from diffusers_ltx2.distributed.vae import decoded_tile_shape

    vae = tiny_components["vae"]
    z = torch.randn(1, vae.config.latent_channels, 2, 2, 3)
    with torch.no_grad():
        out = vae.decoder(z, None)
    assert tuple(out.shape) == decoded_tile_shape(vae, z.shape)


# -- the CLI: the new flags are checked before anything loads ---------------------------------------------------

def _ltx2(*args, env=None, cwd=None):
    full = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    return subprocess.run([sys.executable, "-m", "diffusers_ltx2", "generate", *args], capture_output=True,
                          text=True, env=full, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from diffusers_ltx2 import LTX2AudioVideoPipeline, LTX2Scheduler, MultimodalGuider
    from diffusers_ltx2.factory import TINY, build_components

    path = tmp_path_factory.mktemp("model")
    LTX2AudioVideoPipeline(scheduler=LTX2Scheduler(), guider=MultimodalGuider(),
                           **build_components(TINY)).save_pretrained(str(path))
    return path


CLIP = ["--num-frames", "9", "--height", "64", "--width", "64", "--steps", "2", "--dtype", "fp32", "--device", "cpu"]


def test_cli_refuses_bad_parallel_arguments_before_loading(model_dir, tmp_path, monkeypatch, capsys):
    from diffusers_ltx2.cli import main

    listing = tmp_path / "list.txt"
    listing.write_text('a cat\n{"prompt": "b", "sed": 1}\n')
    good = tmp_path / "good.txt"
    good.write_text("a cat\n")
    launcher = dict(RANK="0", WORLD_SIZE="2", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT="1")
    cases = [
        (["--prompt", "a", "--output", str(tmp_path / "a.mp4"), "--parallel", "passes"], {},
         "--parallel passes needs several ranks"),
        (["--prompts", str(good), "--prompt", "a", "--output", str(tmp_path / "o")], {}, "drop --prompt"),
        (["--prompts", str(listing), "--output", str(tmp_path / "o")], {}, f"{listing}:2: unknown keys"),
        (["--prompts", str(tmp_path / "none.txt"), "--output", str(tmp_path / "o")], {}, "prompt list not found"),
        (["--prompts", str(good), "--output", str(listing)], {}, "is not a folder"),
        (["--prompts", str(good), "--output", str(tmp_path / "o"), "--audio-only"], {}, "--audio-only"),
        (["--prompts", str(good), "--output", str(tmp_path / "o"), "--enhance-prompt"], {}, "--enhance-prompt"),
        (["--prompt", "a", "--output", str(tmp_path / "a.mp4"), "--parallel", "passes+sequence"], launcher,
         "even number >= 4"),
        (["--prompts", str(good), "--output", str(tmp_path / "o"), "--ranks-per-clip", "2"], launcher,
         "needs --parallel"),
        (["--prompt", "a", "--output", str(tmp_path / "a.mp4"), "--parallel", "passes", "--ranks-per-clip", "1"],
         launcher, "must be 2"),
        # layout flags without --prompts / --parallel would be ignored: refused
        (["--prompt", "a", "--output", str(tmp_path / "a.mp4"), "--ranks-per-clip", "2"], {}, "only apply to"),
        (["--prompt", "a", "--output", str(tmp_path / "a.mp4"), "--sequence-attention", "ring"], {},
         "--sequence-attention only apply"),
        (["--prompt", "a", "--output", str(tmp_path / "a.mp4"), "--parallel-timeout", "5"], {}, "only apply to"),
    ]
    for args, env, message in cases:
        for name in launcher:
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        code = main(["generate", "--model", str(model_dir), *args, *CLIP])
        out, err = capsys.readouterr()
        assert code == 2, (args, err[-2000:])
        lines = [line for line in err.splitlines() if line.startswith("ltx2 generate: error")]
        assert len(lines) == 1 and message in lines[0], (args, err[-2000:])
        assert "[load]" not in out  # refused before any model loaded
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_cli_prompt_list_in_one_process_then_resumed(model_dir, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("a cat walks\n3\ta dog runs\n")
    out = tmp_path / "clips"
    first = _ltx2("--model", str(model_dir), "--prompts", str(listing), "--output", str(out), *CLIP)
    assert first.returncode == 0, first.stderr[-3000:]
    names = sorted(os.listdir(out))
    assert len(names) == 2 and names[1].startswith("0001_seed3_") and all(n.endswith(".mp4") for n in names)
    stamps = {n: os.stat(out / n).st_mtime_ns for n in names}
    again = _ltx2("--model", str(model_dir), "--prompts", str(listing), "--output", str(out), *CLIP)
    assert again.returncode == 0 and "2 of 2 clips already in" in again.stdout
    assert "[load]" not in again.stdout  # nothing left: no model loaded
    assert {n: os.stat(out / n).st_mtime_ns for n in os.listdir(out)} == stamps


def test_parallel_flags_are_refused_before_torch_is_imported(model_dir, tmp_path):
    """The argument layer's rule (every flag checked before the heavy imports) holds for the parallel options: the
    launcher's environment is read without torch (`distributed.launch`)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                             "MASTER_PORT")}
    listing = tmp_path / "list.txt"
    listing.write_text('{"prompt": "a", "sed": 1}\n')
    for args, message in (
            (["--prompt", "a", "--output", str(tmp_path / "a.mp4"), "--parallel", "passes"], "needs several ranks"),
            (["--prompts", str(listing), "--output", str(tmp_path / "o")], "unknown keys"),
            (["--prompts", str(listing), "--output", str(tmp_path / "o"), "--parallel-timeout", "0"],
             "--parallel-timeout")):
        code = ("import sys\nfrom diffusers_ltx2.cli import main\n"
                f"rc = main({['generate', '--model', str(model_dir), *args, *CLIP]!r})\n"
                "assert 'torch' not in sys.modules, 'torch was imported'\nsys.exit(rc)\n")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert message in proc.stderr and "torch was imported" not in proc.stderr, proc.stderr[-2000:]


def test_a_crafted_prompt_list_line_is_a_value_error():
    """A JSON line nested past the interpreter's recursion limit names the file and line (main's JSON rule,
    `json_files.parse_json`), instead of a RecursionError."""
    deep = '{"prompt": ' + "[" * 200_000 + "]" * 200_000 + "}"
    with pytest.raises(ValueError, match=r"list.txt:2: not a JSON object \(.*nested too deeply"):
        parse_prompt_list("a cat\n" + deep, source="list.txt")


def test_sequence_shard_cuts_per_token_timesteps_and_the_keyframe_marker():
    """LTX-2.5's keyframe marker `(B, N, 1)` is per video token: each shard gets its own tokens' rows, as the
    per-token timestep; a shared `(B, 1)` timestep stays whole; nothing to cut leaves the call alone."""
    from diffusers_ltx2.distributed.sequence import SequenceShard, _timestep_shard

    hook = _timestep_shard(SequenceShard(index=1, size=2, group=None, attention="ulysses"))
    hidden, t = torch.randn(2, 8, 4), torch.arange(16.0).view(2, 8)
    marker = torch.zeros(2, 8, 1)
    marker[:, 5] = 1.0
    _, kwargs = hook(None, (), dict(hidden_states=hidden, timestep=t, video_keyframes_mask=marker))
    assert torch.equal(kwargs["timestep"], t[:, 4:]) and torch.equal(kwargs["video_keyframes_mask"], marker[:, 4:])
    assert kwargs["hidden_states"] is hidden  # diffusers' context-parallel hooks split the tokens themselves
    assert hook(None, (), dict(hidden_states=hidden, timestep=torch.ones(2, 1))) is None
