"""Several gloo ranks on this machine (spawned like torchrun, tiny model, 2 steps): every layout gives the
single-process latents, the IC-LoRA bias and the VAE tiles stay exact, memory per rank halves, communication is what
the formulas say, a failing rank ends the job with its error, and `ltx2 generate` runs prompt lists over ranks.

Tolerance 1e-5 (absolute, on latents up to ~8): the batched guidance passes of one process and the smaller
batches of the ranks differ by float32 rounding (~1 ulp per op) that the guidance scales (up to cfg 7) amplify; the
same difference appears in one process between one batched call and `max_batch_passes=2` (checked to be the rank
result exactly).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import av
import numpy as np
import pytest
import torch

import parallel_workers as W
from distributed_harness import free_port, run_ranks, unwrap

pytestmark = pytest.mark.slow

CALLS = ("guided", "keyframe_a2v", "two_stage")
JOBS = {2: [(n, l) for n in CALLS for l in (dict(passes=2), dict(sequence=2))],
        4: [(n, l) for n in CALLS for l in (dict(passes=4), dict(sequence=4), dict(passes=2, sequence=2))]}
TOL = 1e-5


@pytest.fixture(scope="module")
def references():
    return {name: W.reference(name) for name in CALLS}


@pytest.fixture(scope="module")
def ranks2():
    return unwrap(run_ranks("parallel_workers:everything", 2, JOBS[2]))


@pytest.fixture(scope="module")
def ranks4():
    return unwrap(run_ranks("parallel_workers:everything", 4, JOBS[4]))


def _layout_key(kwargs):
    from diffusers_ltx2.distributed import ParallelLayout

    return repr(ParallelLayout(**kwargs))


@pytest.mark.parametrize("world", [2, 4])
def test_every_layout_gives_the_single_process_latents(world, request, references):
    ranks = request.getfixturevalue(f"ranks{world}")
    for name, layout in JOBS[world]:
        outs = [r["jobs"][(name, _layout_key(layout))] for r in ranks]
        for rank, out in enumerate(outs):
            for key in ("video", "audio"):
                diff = (out[key] - references[name][key]).abs().max().item()
                assert diff <= TOL, (name, layout, rank, key, diff)
                assert torch.equal(out[key], outs[0][key]), (name, layout, rank, key)  # every rank: same latents
        shards = layout.get("sequence", 1)
        tokens = {n for r in outs for _, n in r["attn1"]}
        full = {"guided": {8}, "keyframe_a2v": {12}, "two_stage": {12, 48}}[name]
        assert tokens == {n // shards for n in full}, (name, layout, tokens)  # the video tokens really are split
        if layout.get("passes", 1) > 1:  # each rank ran a share: fewer rows than the 4 passes need
            assert max(rows for r in outs for rows, _ in r["attn1"]) < 3, (name, layout)


def test_pass_parallel_is_one_process_with_the_same_pass_batches(ranks2):
    """The 1e-5 is rounding: one process batching [cond, perturbed] + [isolated, uncond] gives the ranks' result."""
    from diffusers_ltx2.factory import TINY_CLIP

    pipe = W.one_stage()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the ranks run (distributed_harness): a CPU matmul's sums depend on the threads
    try:
        out = pipe(W.PROMPT, negative_prompt=W.NEGATIVE, **TINY_CLIP, num_inference_steps=2, output_type="latent",
                   generator=W._generator(), max_batch_passes=2)
    finally:
        torch.set_num_threads(threads)
    got = ranks2[0]["jobs"][("guided", _layout_key(dict(passes=2)))]
    assert (got["video"] - out.frames).abs().max().item() <= 1e-6
    assert (got["audio"] - out.audio).abs().max().item() <= 1e-6


@pytest.mark.parametrize("world", [2, 4])
def test_ic_lora_bias_under_sequence_parallel(world, request):
    """STG, isolation and the IC-LoRA attention bias with the video tokens split (2 ranks: Ulysses, the biased
    self-attention through gathered keys; 4 ranks: 2 heads do not split 4 ways, gathered keys throughout)."""
    for rank in request.getfixturevalue(f"ranks{world}"):
        single, sharded = rank["extras"]["bias_single"], rank["extras"]["bias_sequence"]
        for name, (video, audio) in single["biased"].items():
            assert (sharded["biased"][name][0] - video).abs().max().item() <= 1e-6, name
            assert (sharded["biased"][name][1] - audio).abs().max().item() <= 1e-6, name
            # the bias matters: without it the prediction moves far more than the tolerance
            assert (single["unbiased"][name][0] - video).abs().max().item() > 1e-2, name
            # disable_sequence_parallel gives the one-process transformer back
            assert torch.equal(rank["extras"]["bias_after_disable"]["biased"][name][0], video), name


@pytest.mark.parametrize("world", [2, 4])
def test_parallel_vae_decode_is_the_tiled_decode(world, request):
    for rank in request.getfixturevalue(f"ranks{world}"):
        extras = rank["extras"]
        assert torch.equal(extras["decode_parallel"], extras["decode_single"])
        num_tiles, decoded, received = extras["decode_tiles"]
        assert num_tiles == 12 and decoded == num_tiles // world  # tiles dealt over the ranks
        assert received > 0
        # the pipelines decode through the streamed tiled decode (not `vae._decode`): dealt over the ranks too
        assert torch.equal(extras["pipeline_decode_parallel"], extras["pipeline_decode_single"])
        assert extras["pipeline_decode_tiles"] == (12, 12 // world)


def test_memory_per_rank_with_pass_parallel(ranks2):
    for rank in ranks2:
        single, parallel = max(rank["extras"]["single_peaks"]), max(rank["extras"]["parallel_peaks"])
        assert parallel <= 0.6 * single, (parallel, single)


@pytest.mark.parametrize("world", [2, 4])
def test_counted_communication_is_the_formula(world, request):
    for rank in request.getfixturevalue(f"ranks{world}"):
        comm = rank["comm"]
        passes = comm["passes"]["counted"]
        assert passes["all_gather"] == comm["passes"]["formula"]
        assert passes["all_reduce"] == 4 * (world - 1)  # the step's status flag
        sequence = {k: v for k, v in comm["sequence"]["counted"].items() if k != "all_reduce"}
        assert sum(sequence.values()) == comm["sequence"]["formula"]


# -- failures ----------------------------------------------------------------------------------------------------

def test_a_rank_raising_mid_step_ends_the_job_with_its_error():
    ranks = run_ranks("parallel_workers:fail_mid_step", 2, "raise", dict(passes=2), 30.0, timeout=300)
    zero, one = ranks[0]["result"], ranks[1]["result"]
    assert one["type"] == "RuntimeError" and one["message"] == "injected failure"
    assert zero["type"] == "RankFailedError" and zero["rank"] == 1
    assert "injected failure" in zero["message"]
    assert zero["seconds"] < 30.0  # told at the step's status exchange, not after the timeout


def test_a_rank_hanging_after_its_error_ends_the_job_within_the_timeout():
    """Sequence parallel: rank 0 waits inside the transformer's all-to-all for a rank that raised and then hangs
    without exiting; the collective times out and rank 0 names rank 1's error."""
    timeout = 10.0
    ranks = run_ranks("parallel_workers:fail_mid_step", 2, "raise_and_stay", dict(sequence=2), timeout, timeout=300)
    zero = ranks[0]["result"]
    assert zero["type"] == "RankFailedError" and zero["rank"] == 1 and "injected failure" in zero["message"]
    assert zero["seconds"] < timeout + 10.0  # the timeout, plus the first step and the error lookup


def test_a_rank_dying_mid_step_ends_the_job():
    ranks = run_ranks("parallel_workers:fail_mid_step", 2, "exit", dict(passes=2), 30.0, timeout=300)
    assert ranks[1]["exitcode"] == 7
    zero = ranks[0]["result"]
    assert zero["type"] == "PeerLostError" and zero["seconds"] < 30.0


# -- the command line under torchrun -------------------------------------------------------------------------------

def _torchrun(nproc: int, *args, timeout=600):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-port",
           str(free_port()), "-m", "diffusers_ltx2", "generate", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from diffusers_ltx2 import LTX2AudioVideoPipeline, LTX2Scheduler, MultimodalGuider
    from diffusers_ltx2.factory import TINY, build_components

    path = tmp_path_factory.mktemp("model")
    LTX2AudioVideoPipeline(scheduler=LTX2Scheduler(), guider=MultimodalGuider(),
                           **build_components(TINY)).save_pretrained(str(path))
    return path


CLIP = ["--num-frames", "9", "--height", "64", "--width", "64", "--steps", "2", "--dtype", "fp32", "--device", "cpu"]


def _frames(path):
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def test_prompt_list_over_two_ranks_writes_each_clip_once_and_resumes(model_dir, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text('a cat walks\n# a comment\n7\ta dog runs\n{"prompt": "rain", "seed": 3, "name": "rain"}\n'
                       "a red kite\nwaves at night\n")
    out = tmp_path / "clips"
    first = _torchrun(2, "--model", str(model_dir), "--prompts", str(listing), "--output", str(out), *CLIP)
    assert first.returncode == 0, first.stderr[-3000:]
    names = sorted(os.listdir(out))
    assert len(names) == 5 and "rain.mp4" in names and not any(n.startswith(".tmp") for n in names)
    wrote = [line.split("wrote ", 1)[1] for line in first.stdout.splitlines() if "wrote " in line]
    assert sorted(os.path.basename(p) for p in wrote) == names  # each clip written once
    assert {line.split("]")[0] for line in first.stdout.splitlines() if "wrote " in line} == {"[rank 0", "[rank 1"}
    stamps = {n: os.stat(out / n).st_mtime_ns for n in names}
    again = _torchrun(2, "--model", str(model_dir), "--prompts", str(listing), "--output", str(out), *CLIP)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "5 of 5 clips already in" in again.stdout and "wrote" not in again.stdout
    assert {n: os.stat(out / n).st_mtime_ns for n in os.listdir(out)} == stamps


@pytest.mark.skipif(shutil.which("accelerate") is None, reason="the accelerate launcher is not on PATH")
def test_one_clip_over_two_ranks_by_accelerate_is_the_one_process_clip(model_dir, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    one = tmp_path / "one.mp4"
    single = subprocess.run([sys.executable, "-m", "diffusers_ltx2", "generate", "--model", str(model_dir),
                             "--prompt", "a cat walks", "--output", str(one), *CLIP], capture_output=True, text=True,
                            env=env, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    two = tmp_path / "two.mp4"
    result = subprocess.run(
        [shutil.which("accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
         "-m", "diffusers_ltx2", "generate", "--model", str(model_dir), "--prompt", "a cat walks", "--output",
         str(two), "--parallel", "sequence", *CLIP],
        capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("wrote ") == 1  # rank 0 only
    assert np.array_equal(_frames(two), _frames(one))
