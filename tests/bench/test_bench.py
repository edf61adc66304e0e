import json

import pytest

from cachepilot.bench.methods import all_methods, cachepilot_methods, diffusers_methods
from cachepilot.bench.report import write_report
from cachepilot.bench.runner import BenchConfig, overhead_fraction, run_bench


def test_tiny_sweep_writes_rows_and_report(pipe, classifier, tmp_path):
    ours = {m.name: m for m in cachepilot_methods()}
    peers = {m.name: m for m in diffusers_methods()}
    methods = [ours["always"], ours["fixed+taylor1"], peers["diffusers-fbcache"], peers["diffusers-taylorseer"]]
    for m in methods[1:]:
        m.knobs = list(m.knobs)[:2]
    config = BenchConfig(samples=10, steps=8, batch_size=10, repeats=1)
    from cachepilot.embedded.digits.data import load_digits_split
    from cachepilot.embedded.digits.metrics import digits_quality

    quality = digits_quality(classifier, load_digits_split().held_out_images)
    kept = []  # what an interrupted sweep would keep: the rows so far, after each one
    rows = run_bench(pipe, methods, config, quality=quality, progress=False,
                     on_row=lambda so_far: kept.append([dict(r) for r in so_far]))
    assert [len(k) for k in kept] == list(range(2, len(rows) + 1)) and kept[-1] == rows
    assert [r["method"] for r in rows][:2] == ["full", "always"]
    full, always = rows[0], rows[1]
    assert full["compute_fraction"] == 1.0 and always["compute_fraction"] == 1.0
    assert always["psnr"] == pytest.approx(100.0)  # bit-exact: capped PSNR
    fixed2 = next(r for r in rows if r["method"] == "fixed+taylor1" and r["knob"] == 2)
    assert fixed2["compute_fraction"] == pytest.approx(0.5)
    assert 0 < fixed2["psnr"] < 100
    for r in rows:
        assert set(r) >= {"method", "knob", "compute_fraction", "speedup", "psnr", "ssim", "class_acc", "fd"}
    assert set(overhead_fraction(rows)) >= {"always@None", "fixed+taylor1@2"}
    write_report(rows, tmp_path, {"samples": 10})
    assert json.loads((tmp_path / "results.json").read_text())[0]["method"] == "full"
    assert "| fixed+taylor1 | 2 |" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "pareto.png").stat().st_size > 1000


def test_method_names_are_unique():
    names = [m.name for m in all_methods()]
    assert len(names) == len(set(names))


def test_a_method_giving_nan_images_is_a_clear_error_naming_it(pipe, classifier):
    """Checked before any metric: the unfixed bench segfaults in the Fréchet distance (MKL on NaN)."""
    from cachepilot.bench.methods import Method
    from cachepilot.errors import CachepilotError

    handles = []

    def apply(p, knob):
        last = p.transformer.transformer_blocks[-1]
        handles.append(last.register_forward_hook(lambda m, i, out: out * float("nan")))
        return p

    def remove(p):
        handles.pop().remove()

    broken = Method("nan-maker", [1], apply, remove)
    config = BenchConfig(samples=4, steps=3, batch_size=4, repeats=1)
    quality_calls = []

    def quality(images, conditions):
        quality_calls.append(images)
        return {}

    with pytest.raises(CachepilotError, match="nan-maker .* non-finite"):
        run_bench(pipe, [broken], config, quality=quality, progress=False)
    assert len(quality_calls) == 1  # the full-compute row only: the NaN images never reached a metric
    assert not handles


def test_searched_schedules_at_another_step_count_are_resampled_to_the_bench_count(pipe):
    """The shipped digits cache was searched at 50 steps: a 20-step bench offers them resampled, with the
    budget's computes exactly, the first and last step computed."""
    import cachepilot
    from cachepilot.policies.budget import budget_computes

    by_name = {m.name: m for m in cachepilot_methods(steps=20)}
    assert "searched-schedule" not in by_name and "searched-schedule" in {m.name for m in cachepilot_methods(steps=50)}
    resampled = by_name["resampled-schedule"]
    for target in resampled.knobs:
        resampled.apply(pipe, target)
        try:
            pipe([3, 4], num_inference_steps=20, output_type="pt")
            decisions = cachepilot.last_stats(pipe).decisions
        finally:
            resampled.remove(pipe)
        computed = (decisions[:, 0] == 0)
        assert int(computed.sum()) == budget_computes(target, 20) and computed[0] and computed[-1]


def test_a_cache_with_masks_searched_at_the_bench_count_offers_those(tmp_path):
    import json

    from cachepilot.checkpoints import DEFAULT_CACHE

    (tmp_path / "searched_schedules.json").write_text((DEFAULT_CACHE / "searched_schedules.json").read_text())
    (tmp_path / "searched_schedules_20.json").write_text(json.dumps(
        {"num_steps": 20, "predictor": "taylor:2", "schedules": {"0.3": {"mask": "11100100100100100100"}}}))
    at_20 = {m.name: m for m in cachepilot_methods(steps=20, cache=tmp_path)}
    assert "resampled-schedule" not in at_20 and at_20["searched-schedule"].knobs == [0.3]
    at_50 = {m.name for m in cachepilot_methods(steps=50, cache=tmp_path)}
    assert "searched-schedule" in at_50  # the default file, searched at 50
    assert "resampled-schedule" in {m.name for m in cachepilot_methods(steps=30, cache=tmp_path)}


def test_the_report_sets_the_cache_against_the_best_method_without_a_fit(tmp_path):
    from cachepilot.bench.report import versus_no_fit

    def row(method, knob, compute, psnr):
        return {"method": method, "knob": knob, "compute_fraction": compute, "speedup": 1 / compute, "psnr": psnr,
                "ssim": 1.0, "class_acc": None, "fd": 1.0}

    rows = [row("full", None, 1.0, 100.0), row("fixed+taylor2", 3, 0.35, 40.0), row("fixed+taylor2", 5, 0.2, 30.0),
            row("fewer-steps", 0.3, 0.3, 33.0), row("cache-dit-dbcache", 0.2, 0.302, 35.0),  # within the slack
            row("learned-policy", 0.3, 0.29, 37.5), row("searched-schedule", 0.3, 0.3, 38.0),
            row("learned-policy", 0.2, 0.2, 29.0)]
    table = {e["budget"]: e for e in versus_no_fit(rows, {"learned-policy", "searched-schedule"})}
    assert table[0.3]["no_fit"]["method"] == "cache-dit-dbcache"  # fewer steps and Taylor lose at 0.3
    assert table[0.3]["fit"]["method"] == "searched-schedule" and table[0.3]["policy"]["psnr"] == 37.5
    assert table[0.2]["no_fit"]["psnr"] == 30.0 and table[0.2]["policy"]["psnr"] == 29.0
    assert table[0.4]["no_fit"]["psnr"] == 40.0 and table[0.4]["policy"]["psnr"] == 37.5
    write_report(rows, tmp_path, {"samples": 2}, fitted={"learned-policy", "searched-schedule"},
                 missing={"cache-dit": "pip install cache-dit"})
    text = (tmp_path / "results.md").read_text()
    assert text.index("cache-dit is not installed") < text.index("samples=2")  # said first
    assert "| 0.3 | cache-dit-dbcache@0.2 (0.302) | 35.00 | searched-schedule@0.3 (0.300) | 38.00 | " \
           "learned-policy@0.3 (0.290) | 37.50 | +2.50 |" in text


def test_methods_read_from_a_cache_checkpoint_are_marked_as_needing_a_fit():
    methods = {m.name: m for m in all_methods(50)}
    assert methods["learned-policy"].needs_fit and methods["fixed+learned"].needs_fit
    assert not methods["fewer-steps"].needs_fit and not methods["fixed+taylor2"].needs_fit


def test_a_peer_that_is_not_installed_is_named_with_how_to_add_it(monkeypatch):
    from cachepilot.bench import methods

    monkeypatch.setitem(methods.PEERS, "nopeer", ("cachepilot_no_such_module", "pip install nopeer"))
    assert methods.missing_peers()["nopeer"] == "pip install nopeer"
