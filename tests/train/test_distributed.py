"""Fit stages under `torchrun`: a real two-process run (gloo, CPU) of `cachepilot search-schedule` and
`cachepilot calibrate-forecaster` on the embedded digits model finds what one process finds, bit for bit, and
only rank 0 writes (`train/distributed.py`).

This file is also the worker: `python -m torch.distributed.run --nproc-per-node 2 test_distributed.py OUT`
runs `_worker` on each rank, and plain `python test_distributed.py OUT` runs it as the one process. Both runs
are subprocesses (side by side) with the same thread settings (OMP_NUM_THREADS=1), so the comparison is exact. The digits
model is trained and its learned head forecasts unlike Taylor, so the candidates' scores differ.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

WORLD = 2
TIMEOUT_S = 240
SEARCH = ["search-schedule", "--steps", "10", "--targets", "0.4", "--samples", "2", "--max-sweeps", "2",
          "--select-samples", "2", "--predictor", "learned"]
CALIBRATE = ["calibrate-forecaster", "--steps", "6", "--intervals", "1", "2", "3", "--samples", "2",
             "--schedules", "fixed:3", "ts-schedule:2"]
LEAN_FIT = ["fit", "--recipe", "lean", "--steps", "6", "--targets", "0.4", "0.5", "--search-samples", "3"]
COUNTS = (5, 1, 0)  # items the gather test spreads over the ranks: uneven, fewer than the ranks, none


def _worker(out: Path) -> None:
    """Run both commands, recording what this process wrote and printed, and a gather of every COUNTS."""
    import contextlib
    import io

    from cachepilot.cli import main
    from cachepilot.searched import SearchedSchedules
    from cachepilot.train import calibrate_forecaster, distributed

    rank, world = distributed.setup()
    writes: list[str] = []
    write_gate, write_searched = calibrate_forecaster.write_gate, SearchedSchedules.write
    calibrate_forecaster.write_gate = lambda path, record: writes.append("gate") or write_gate(path, record)
    SearchedSchedules.write = lambda self, path: writes.append("search") or write_searched(self, path)
    computed: dict[int, list[int]] = {}
    gathered = {n: distributed.map_shared(lambda i, n=n: computed.setdefault(n, []).append(i) or i * 1.5 - n,
                                          range(n)) for n in COUNTS}
    printed = io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(printed):
        codes = [main(SEARCH + ["--out", str(out / "searched.json")]), main([CALIBRATE[0], str(out / "head"), *CALIBRATE[1:]])]
    fit_printed = io.StringIO()  # its own: it names its directory and its wall seconds
    with contextlib.redirect_stdout(fit_printed):
        fit_code = main(LEAN_FIT + ["--out", str(out / "lean")])
    (out / f"rank{rank}.json").write_text(json.dumps({
        "world": world, "codes": codes, "writes": writes, "printed": printed.getvalue(), "computed": computed,
        "gathered": gathered, "seconds": time.perf_counter() - started, "fit_code": fit_code,
        "fit_printed": fit_printed.getvalue()}))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(out: Path, processes: int) -> subprocess.Popen:
    """The worker as `processes` torchrun ranks (1: plain python), its output to OUT/log.txt."""
    from cachepilot.checkpoints import DEFAULT_PREDICTOR
    from cachepilot.predictors.learned import Learned

    Learned.from_pretrained(DEFAULT_PREDICTOR).save_pretrained(out / "head")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    launcher = [] if processes == 1 else ["-m", "torch.distributed.run", "--nproc-per-node", str(processes),
                                          "--master-addr", "127.0.0.1", "--master-port", str(_free_port())]
    with open(out / "log.txt", "w") as log:
        return subprocess.Popen([sys.executable, *launcher, __file__, str(out)], env=env, stdout=log,
                                stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[int, tuple[Path, list[dict]]]:
    """Each run's directory and its processes' records; the one-process and the two-rank run side by side."""
    outs = {n: tmp_path_factory.mktemp(f"processes{n}") for n in (1, WORLD)}
    procs = {n: _start(out, n) for n, out in outs.items()}
    deadline = time.monotonic() + TIMEOUT_S
    try:
        for n, proc in procs.items():
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for n, proc in procs.items():
        if proc.returncode != 0:
            pytest.fail(f"{n} process(es) exited with {proc.returncode}:\n{(outs[n] / 'log.txt').read_text()[-4000:]}")
    return {n: (out, [json.loads((out / f"rank{r}.json").read_text()) for r in range(n)]) for n, out in outs.items()}


def test_two_ranks_search_and_calibrate_exactly_as_one_process(runs):
    (one, [single]), (two, ranks) = runs[1], runs[WORLD]
    assert single["world"] == 1 and [r["world"] for r in ranks] == [WORLD, WORLD]
    assert single["codes"] == [0, 0] and all(r["codes"] == [0, 0] for r in ranks)
    searched = json.loads((two / "searched.json").read_text())
    assert searched == json.loads((one / "searched.json").read_text())  # the mask and its score, exactly
    gate = json.loads((two / "head" / "forecaster_gate.json").read_text())
    assert gate == json.loads((one / "head" / "forecaster_gate.json").read_text())
    scores = [db for entry in gate["counts"]["6"]["psnr"].values() for db in entry.values()]
    assert len(set(scores)) > 1  # the forecasters differ: a mis-ordered gather would show


def test_only_rank_zero_writes_and_prints(runs):
    (_, [single]), (_, ranks) = runs[1], runs[WORLD]
    assert ranks[0]["writes"] == single["writes"] and "gate" in single["writes"] and "search" in single["writes"]
    assert ranks[1]["writes"] == [] and ranks[1]["printed"] == ""
    assert ranks[0]["printed"] == single["printed"] and "target 0.4" in single["printed"]


def test_the_gather_puts_every_rank_s_share_back_in_order(runs):
    (_, [single]), (_, ranks) = runs[1], runs[WORLD]
    for n in COUNTS:
        expected = [i * 1.5 - n for i in range(n)]
        assert single["gathered"][str(n)] == expected
        assert [r["gathered"][str(n)] for r in ranks] == [expected, expected]
        assert [r["computed"].get(str(n), []) for r in ranks] == [list(range(0, n, 2)), list(range(1, n, 2))]


def test_share_and_merge_round_robin():
    from cachepilot.train.distributed import merge, share

    assert [list(share(7, r, 3)) for r in range(3)] == [[0, 3, 6], [1, 4], [2, 5]]
    assert list(share(1, 1, 2)) == [] and list(share(0, 0, 1)) == []
    parts = [[10.0, 13.0, 16.0], [11.0, 14.0], [12.0, 15.0]]
    assert merge(parts, 7) == [10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 16.0]
    assert merge([[0.5], []], 1) == [0.5]


def test_one_process_calls_no_collective(monkeypatch):
    import torch.distributed as dist

    from cachepilot.train import distributed

    def fail(*args, **kwargs):
        raise AssertionError("a collective was called in a single process")

    for name in ("all_gather", "barrier", "init_process_group"):
        monkeypatch.setattr(dist, name, fail)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.setup() == (0, 1) and not distributed.is_distributed()
    assert distributed.map_shared(lambda x: x * 2, [1, 2, 3]) == [2.0, 4.0, 6.0]
    assert distributed.on_rank_zero(lambda: "written") == "written"


def test_collect_takes_its_rank_from_torchrun_s_environment_without_joining(monkeypatch):
    import torch.distributed as dist

    from cachepilot.train import distributed

    monkeypatch.setattr(dist, "init_process_group", lambda *a, **k: pytest.fail("collect needs no process group"))
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert distributed.launched() == (1, 3)


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))


def test_two_ranks_fit_the_lean_recipe_as_one_process(runs):
    """`torchrun ... cachepilot fit --recipe lean`: every rank scores its share, rank 0 writes the same checkpoint as
    one process, and the record counts what all ranks spent: the search's scores once (the references on every
    rank), the bench on rank 0 alone, the conditions' check and the probe on every rank."""
    (one, [single]), (two, ranks) = runs[1], runs[WORLD]
    assert single["fit_code"] == 0 and all(r["fit_code"] == 0 for r in ranks)
    searched = [json.loads((d / "lean" / "searched_schedules.json").read_text()) for d in (one, two)]
    assert searched[0] == searched[1]  # masks, forecasters and their scores, exactly
    costs = [json.loads((d / "lean" / "cachepilot_config.json").read_text())["cost"] for d in (one, two)]
    # the candidates' scores once; each rank samples the references itself (3 samples x 6 steps, 1 copy)
    assert costs[1]["schedules"]["evaluations"] == costs[0]["schedules"]["evaluations"] + (WORLD - 1) * 3 * 6
    assert costs[1]["bench"]["evaluations"] == costs[0]["bench"]["evaluations"] > 0
    assert costs[1]["check"]["evaluations"] == WORLD * costs[0]["check"]["evaluations"]
    assert (two / "lean" / "README.md").is_file() and ranks[1]["fit_printed"] == ""
    assert "fitted cache written" in ranks[0]["fit_printed"]


def test_the_full_recipe_is_refused_under_torchrun(monkeypatch, tmp_path):
    from cachepilot.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert main(["fit", "--out", str(tmp_path / "full")]) != 0
    assert not (tmp_path / "full").exists()
