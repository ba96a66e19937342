"""The multi-rank layouts on NCCL, when this machine has two or more CUDA GPUs (skipped otherwise; the CPU gloo
tests in `test_distributed_multiprocess.py` cover everything else). Ring attention is not exercised: it needs an
attention backend returning the log-sum-exp (flash / cuDNN), which takes bf16 / fp16 only, and these checks run
the tiny model in fp32."""

from __future__ import annotations

import pytest
import torch

from distributed_harness import run_ranks, unwrap

pytestmark = [pytest.mark.slow, pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")]

JOBS = [(name, layout) for name in ("guided", "keyframe_a2v", "two_stage")
        for layout in (dict(passes=2), dict(sequence=2), dict(sequence=2, sequence_attention="allgather"))]


def test_nccl_layouts_equal_one_gpu():
    for rank in unwrap(run_ranks("parallel_workers:gpu_suite", 2, JOBS)):
        for key, (alone, parallel) in rank.items():
            for modality in ("video", "audio"):
                diff = (alone[modality] - parallel[modality]).abs().max().item()
                assert diff <= 1e-4, (key, modality, diff)  # GPU kernels pick other algorithms by batch size
