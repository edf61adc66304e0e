"""Context parallelism: two gloo ranks on CPU, each holding half of the sequence, observe what the unsharded
model observes and take its decisions (`runtime/parallel.py`).

The two ranks run once per module (`parallel_worker.py`, ~20 s: most of it importing diffusers twice); the
unsharded references are computed here, in a single process. A real diffusers run is tested with Ulysses
attention (native backend over gloo). Ring attention cannot run on CPU: the native backend raises
"ValueError: Native attention does not support return_lse=True" and every other backend needs CUDA and
fp16 / bf16 (see parallel_worker.py's docstring for the two workarounds Ulysses needs on CPU).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

import cachepilot
from cachepilot.core.actions import Action
from cachepilot.runtime.engine import _relative_l1
from cachepilot.runtime.parallel import SequenceReducer, context_parallel_group

from .parallel_worker import SPLITS, drifting_latents, drive, enable, flux, reduction_tensors, sample, spread
from .tiny_models import build

WORLD = 2
WORKER = Path(__file__).with_name("parallel_worker.py")
TIMEOUT_S = 300

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with gloo is not available")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    """What each of the two ranks saw (see parallel_worker.main)."""
    out = tmp_path_factory.mktemp("context_parallel")
    env = {**os.environ, "WORLD_SIZE": str(WORLD), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
           "OMP_NUM_THREADS": "1"}
    procs = []
    for rank in range(WORLD):
        log = open(out / f"log{rank}.txt", "w")
        procs.append(subprocess.Popen([sys.executable, str(WORKER), str(out)], env={**env, "RANK": str(rank)},
                                      stdout=log, stderr=subprocess.STDOUT))
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while any(p.poll() is None for p in procs):
            failed = [p for p in procs if p.poll() not in (None, 0)]
            if failed or time.monotonic() > deadline:  # a rank left alone would wait in a collective
                break
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for rank, p in enumerate(procs):
        if p.returncode != 0:
            log = (out / f"log{rank}.txt").read_text()
            pytest.fail(f"rank {rank} exited with {p.returncode}:\n{log[-3000:]}")
    return [torch.load(out / f"rank{rank}.pt") for rank in range(WORLD)]


@pytest.mark.parametrize("split", SPLITS)
def test_reduction_gives_every_rank_the_unsharded_change(ranks, split):
    a, b = reduction_tensors()
    n = sum(SPLITS[split])
    reference = _relative_l1(a[:, :n], b[:, :n])
    seen = [r[f"reduction_{split}"] for r in ranks]
    assert torch.equal(seen[0]["global"], seen[1]["global"])
    torch.testing.assert_close(seen[0]["global"], reference, rtol=1e-6, atol=1e-7)
    for s in seen:  # without the reduction each rank sees its own, different value
        assert (s["local"] - reference).abs().min() > 0.1
        assert s["finite"].tolist() == [1]


def test_nonfinite_on_one_rank_is_seen_by_all(ranks):
    assert [r["finite_poisoned"].tolist() for r in ranks] == [[0], [0]]


def _unsharded_manual_run() -> dict:
    model, x, kwargs = flux()
    policy = enable(model)
    drive(model, drifting_latents(x), kwargs)
    return {"decisions": cachepilot.last_stats(model).decisions, "observed": torch.stack(policy.seen)}


def test_ranks_decide_alike_only_with_the_reduction(ranks):
    reference = _unsharded_manual_run()
    without = [r["manual_without"]["decisions"] for r in ranks]
    with_ = [r["manual_with"]["decisions"] for r in ranks]
    assert all(r["group_found"] for r in ranks)
    # each half alone: the fast half computes every step, the slow one never recomputes
    assert not torch.equal(without[0], without[1])
    assert not torch.equal(without[0], reference["decisions"]) and not torch.equal(without[1], reference["decisions"])
    for decisions in with_:
        assert torch.equal(decisions, reference["decisions"])
    assert torch.equal(ranks[0]["manual_with"]["observed"], ranks[1]["manual_with"]["observed"])
    # change and accumulated depend only on the (fixed) stack inputs: the unsharded values
    torch.testing.assert_close(ranks[0]["manual_with"]["observed"][:, :2], reference["observed"][:, :2],
                               rtol=1e-5, atol=1e-6)
    computes = (reference["decisions"] == Action.COMPUTE).sum()
    assert 0 < computes < reference["decisions"].numel()  # a mix, so the decisions could differ


def _unsharded_sampling(family: str) -> dict:
    model, x, kwargs = flux() if family == "flux" else build(family, 2)
    policy = enable(model)
    outputs = sample(model, spread(x), kwargs)
    return {"decisions": cachepilot.last_stats(model).decisions, "observed": torch.stack(policy.seen),
            "outputs": outputs}


@pytest.mark.parametrize("run", ["flux_cache_first", "flux_parallel_first", "wan"])
def test_diffusers_ulysses_run_matches_the_unsharded_model(ranks, run):
    """Real `enable_parallelism` (Ulysses, 2 ranks), cachepilot enabled before or after it; Wan's plan splits
    the input of the very block the stack hook sits on."""
    reference = _unsharded_sampling(run.split("_")[0])
    decisions = reference["decisions"]
    assert decisions[:, 0].tolist() != decisions[:, 1].tolist()  # the samples decide differently
    assert {int(Action.COMPUTE), int(Action.FORECAST)} <= set(decisions.unique().tolist())
    for seen in (r[run] for r in ranks):
        assert torch.equal(seen["decisions"], decisions)
        torch.testing.assert_close(seen["observed"], reference["observed"], rtol=1e-4, atol=1e-6)  # drift too
        torch.testing.assert_close(seen["outputs"], reference["outputs"], rtol=1e-4, atol=1e-5)
    assert torch.equal(ranks[0][run]["outputs"], ranks[1][run]["outputs"])


def test_no_process_group_no_collective(monkeypatch):
    """The single-process path finds no group and never calls a collective."""
    def fail(*args, **kwargs):
        raise AssertionError("a collective was called without context parallelism")

    monkeypatch.setattr(dist, "all_reduce", fail)
    model, x, kwargs = flux()
    engine = cachepilot.enable(model, "threshold:0.1", num_inference_steps=4)
    sample(model, spread(x), kwargs, steps=4)
    assert context_parallel_group(model) is None and engine.reducer is None
    assert SequenceReducer.for_model(model) is None
    assert cachepilot.last_stats(model).cached_steps > 0
