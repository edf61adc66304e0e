import json

import pytest
import torch

import cachepilot
from cachepilot import CheckpointError
from cachepilot.checkpoints import DEFAULT_PREDICTOR
from cachepilot.driver import SamplingDriver
from cachepilot.core.predictor import ForecastContext
from cachepilot.predictors.gated import GATE_FILE, Gated, nearest_count
from cachepilot.predictors.learned import Learned, ResidualForecaster
from cachepilot.predictors.spec import make_predictor
from cachepilot.policies.baselines import taylorseer_mask
from cachepilot.predictors.dmd import DMD
from cachepilot.predictors.gated import SCHEDULE_CHOICES
from cachepilot.predictors.taylor import Reuse, Taylor
from cachepilot.train.calibrate_forecaster import WHOLE_TIE_ORDER, calibrate_gate, calibration_schedule


def _head(hidden: int = 4) -> Learned:
    torch.manual_seed(0)
    model = ResidualForecaster(hidden, history=3, rank=2, width=8)
    for layer in (model.mix[-1], model.up):  # away from the zero init: the head must differ from Taylor
        torch.nn.init.normal_(layer.weight, std=0.3)
    return Learned(model)


def _history(predictor, steps_per_row):
    history = predictor.new_history()
    history.allocate(torch.zeros(len(steps_per_row), 3, 4))
    base = torch.randn(len(steps_per_row), 3, 4, generator=torch.Generator().manual_seed(1))
    for k in range(max(len(s) for s in steps_per_row)):
        for r, steps in enumerate(steps_per_row):
            if k < len(steps):
                history.update(torch.tensor([r]), steps[k], (base[r] * (1 + steps[k]) ** 1.5)[None])
    return history


def test_each_row_gets_the_forecaster_of_its_spacing():
    head = _head()
    gated = Gated(head, {20: ["taylor:1", "taylor:1", "taylor:2", "taylor:2", "learned"]})
    # rows' last two computes 2, 3, 5 and 9 steps apart (9: clamped to the table's last entry)
    history = _history(gated, [[0, 2, 4], [0, 3, 6], [0, 5, 10], [0, 9, 18]])
    context = ForecastContext(20, torch.randn(4, 3, 4), torch.randn(4, 3, 4))
    out = gated.predict(history, 19, None, context)
    expected = [Taylor(1), Taylor(2), head, head]
    for row, forecaster in enumerate(expected):
        torch.testing.assert_close(out[row], forecaster.predict(history, 19, None, context)[row])
    assert not torch.allclose(out[2], Taylor(2).predict(history, 19, None, context)[2])
    rows = torch.tensor([1, 3])  # a subset of rows, as the engine forecasts them
    sub = ForecastContext(20, context.hidden[rows], context.hidden_at_compute[rows])
    torch.testing.assert_close(gated.predict(history, 19, rows, sub), out[rows])


def test_the_nearest_calibrated_count_is_used():
    assert nearest_count([20, 50, 100], 30) == 20 and nearest_count([20, 50, 100], 35) == 50
    assert nearest_count([20, 50, 100], 250) == 100 and nearest_count([20, 50, 100], 4) == 20
    head = _head()
    gated = Gated(head, {20: ["learned"], 50: ["taylor:1"]})
    history = _history(gated, [[0, 3, 6]])
    at_60 = gated.predict(history, 8, None, ForecastContext(60, torch.randn(1, 3, 4), torch.randn(1, 3, 4)))
    torch.testing.assert_close(at_60, Taylor(1).predict(history, 8))


def test_a_missing_or_bad_gate_is_a_clear_error(tmp_path):
    _head(8).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="calibrate-forecaster"):
        make_predictor(f"gated:{tmp_path}")
    (tmp_path / GATE_FILE).write_text(json.dumps({"counts": {"20": {"choices": ["taylor:3"]}}}))
    with pytest.raises(CheckpointError, match="non-empty list"):
        make_predictor(f"gated:{tmp_path}")
    (tmp_path / GATE_FILE).write_text(json.dumps({"counts": {}}))
    with pytest.raises(CheckpointError, match="no calibrated step count"):
        make_predictor(f"gated:{tmp_path}")


def test_calibration_measures_every_choice_writes_the_gate_and_resumes(pipe, tmp_path, monkeypatch):
    head = tmp_path / "head"
    Learned.from_pretrained(DEFAULT_PREDICTOR).save_pretrained(head)
    conditions = [{"class_labels": c} for c in range(3)]
    record = calibrate_gate(pipe, head, conditions, [6], intervals=[2, 4], samples=2, out=head, progress=False)
    entry = record["counts"]["6"]
    assert set(entry["psnr"]) == {"2", "4"} and all(set(v) == {"learned", "taylor:1", "taylor:2"}
                                                    for v in entry["psnr"].values())
    # the winner of each interval (a tie to the cheaper); spacings not calibrated take the one below (or the first)
    winners = {n: max(("taylor:1", "taylor:2", "learned"), key=v.get) for n, v in entry["psnr"].items()}
    assert entry["choices"] == [winners["2"], winners["2"], winners["2"], winners["4"]]
    assert json.loads((head / GATE_FILE).read_text()) == json.loads(json.dumps(record))
    # a second call with the same settings measures only the counts missing
    calls = []
    from cachepilot.train import calibrate_forecaster

    original = calibrate_forecaster.SamplingDriver
    monkeypatch.setattr(calibrate_forecaster, "SamplingDriver", lambda *a, **k: calls.append(a[1]) or original(*a, **k))
    calibrate_gate(pipe, head, conditions, [6, 8], intervals=[2, 4], samples=2, out=head, progress=False)
    assert calls == [8] and set(json.loads((head / GATE_FILE).read_text())["counts"]) == {"6", "8"}
    # other samples or intervals would start a new gate and drop the counts not asked for: refused, nothing sampled
    stored = (head / GATE_FILE).read_text()
    from cachepilot import InvalidInputError

    for other in (dict(samples=3, intervals=[2, 4]), dict(samples=2, intervals=[2])):
        with pytest.raises(InvalidInputError, match="calibrated with other"):
            calibrate_gate(pipe, head, conditions, [6], out=head, progress=False, **other)
    assert calls == [8] and (head / GATE_FILE).read_text() == stored
    # the engine runs it: a cached call with the gated head gives finite images
    engine = cachepilot.enable(pipe, "fixed:2", f"gated:{head}")
    try:
        images = SamplingDriver(pipe, 8).sample(conditions[:2], [1, 2]).images
    finally:
        cachepilot.disable(pipe)
    assert engine.predictor.spec() == f"gated:{head}" and torch.isfinite(images).all()


def test_spacing_one_has_its_own_schedule():
    pairs = calibration_schedule(1, 10)
    assert pairs == "schedule:1101101101"  # every forecast one step after two adjacent computes; the last computed
    assert calibration_schedule(3, 10) == "fixed:3"


def test_a_calibrated_schedule_takes_its_whole_schedule_choice():
    head = _head()
    gated = Gated(head, {20: ["learned"]}, schedules={20: {"fixed:3": "taylor:2", "learned@0.3": "taylor:1",
                                                           "fixed:4": "table", "fixed:5": "taylor:1.5",
                                                           "fixed:6": "reuse", "learned@0.2": "dmd:1"}})
    history = _history(gated, [[0, 3, 6], [0, 2, 4]])
    hidden = torch.randn(2, 3, 4)

    def forecast(steps, policy):
        return gated.predict(history, 9, None, ForecastContext(steps, hidden, hidden, policy))

    torch.testing.assert_close(forecast(20, "fixed:3"), Taylor(2).predict(history, 9))
    torch.testing.assert_close(forecast(20, "learned@0.3"), Taylor(1).predict(history, 9))
    torch.testing.assert_close(forecast(20, "fixed:5"), Taylor(1.5).predict(history, 9))
    # the field's forecasters that fit the head's history, as whole-schedule choices
    torch.testing.assert_close(forecast(20, "fixed:6"), Reuse().predict(history, 9))
    torch.testing.assert_close(forecast(20, "learned@0.2"), DMD(1).predict(history, 9))
    assert not torch.allclose(forecast(20, "learned@0.2"), forecast(20, "learned@0.3"))
    # another policy, or the same one at a count it was not scored at: the spacing table
    table = head.predict(history, 9, None, ForecastContext(20, hidden, hidden))
    torch.testing.assert_close(forecast(20, "fixed:2"), table)
    torch.testing.assert_close(forecast(20, "fixed:4"), table)  # calibrated: the table's mix won
    torch.testing.assert_close(forecast(30, "fixed:3"), head.predict(history, 9, None, ForecastContext(30, hidden, hidden)))
    with pytest.raises(CheckpointError, match="policy specs"):
        Gated(head, {20: ["learned"]}, schedules={20: {"fixed:3": "taylor:3"}})


def test_the_engine_tells_the_forecaster_which_policy_decides(pipe):
    seen = []

    class Recording(Taylor):
        def predict(self, history, step, rows=None, context=None):
            seen.append((context.num_steps, context.policy))
            return super().predict(history, step, rows, context)

    cachepilot.enable(pipe, "fixed:3", Recording(1))
    try:
        SamplingDriver(pipe, 7).sample([{"class_labels": 1}], [0])
    finally:
        cachepilot.disable(pipe)
    assert seen and set(seen) == {(7, "fixed:3")}


def test_whole_schedules_are_calibrated_stored_and_resumed(pipe, tmp_path, monkeypatch):
    head = tmp_path / "head"
    Learned.from_pretrained(DEFAULT_PREDICTOR).save_pretrained(head)
    conditions = [{"class_labels": c} for c in range(3)]
    specs = ["fixed:3", "ts-schedule:2", "schedule:110101", "threshold:0.1"]
    record = calibrate_gate(pipe, head, conditions, [6], intervals=[2], samples=2, out=head, progress=False,
                            schedules=specs)
    stored = record["schedules"]["6"]
    keys = {"fixed:3", "schedule:" + taylorseer_mask(2, 6), "schedule:110101", "threshold:0.1"}
    assert set(stored) == keys
    for entry in stored.values():  # each forecaster, and the spacing table's mix
        assert set(entry["psnr"]) == set(SCHEDULE_CHOICES)
        assert entry["choice"] == max(WHOLE_TIE_ORDER, key=entry["psnr"].get)
    gated = make_predictor(f"gated:{head}")
    assert gated.schedules == {6: {k: v["choice"] for k, v in stored.items()}}
    # more counts later: only what is missing is sampled (a 6-step mask does not apply at 8 steps)
    calls = []
    from cachepilot.train import calibrate_forecaster

    original = calibrate_forecaster.SamplingDriver
    monkeypatch.setattr(calibrate_forecaster, "SamplingDriver", lambda *a, **k: calls.append(a[1]) or original(*a, **k))
    record = calibrate_gate(pipe, head, conditions, [6], intervals=[2], samples=2, out=head, progress=False,
                            schedules=specs, schedule_counts=[6, 8])
    assert calls == [8] and set(record["schedules"]["8"]) == {"fixed:3", "schedule:" + taylorseer_mask(2, 8),
                                                             "threshold:0.1"}


def test_a_bad_schedule_spec_fails_before_sampling():
    from cachepilot import InvalidInputError
    from cachepilot.train.calibrate_forecaster import schedule_policies

    with pytest.raises(InvalidInputError, match="--policy"):
        schedule_policies("learned:0.3", 20)
    with pytest.raises(InvalidInputError, match="bad schedule spec"):
        schedule_policies("ts-schedule:x", 20)
    with pytest.raises(InvalidInputError):
        schedule_policies("sometimes:3", 20)
    assert schedule_policies("schedule:1101", 20) == []  # another count's mask
