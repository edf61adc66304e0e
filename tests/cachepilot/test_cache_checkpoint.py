"""`CacheCheckpoint`: one owner of a cache checkpoint directory, one forecaster rule, the schedules file read and
written only through it."""

import json
import shutil

import pytest

from cachepilot import CheckpointError, InvalidInputError
from cachepilot.cache_checkpoint import FALLBACK_PREDICTOR, CacheCheckpoint
from cachepilot.checkpoints import CHECKPOINTS_DIR, DEFAULT_CACHE
from cachepilot.predictors.gated import GATE_FILE
from cachepilot.searched import SearchedSchedules


def test_the_forecaster_rule_is_gate_then_head_then_taylor(tmp_path):
    shipped = CacheCheckpoint.from_pretrained()
    assert shipped.root == DEFAULT_CACHE and shipped.has_gate
    assert shipped.predictor_spec() == f"gated:{DEFAULT_CACHE / 'predictors'}"
    head_only = tmp_path / "head-only"
    shutil.copytree(DEFAULT_CACHE, head_only)
    (head_only / "predictors" / GATE_FILE).unlink()  # a head never calibrated: the head itself
    assert CacheCheckpoint(head_only).predictor_spec() == f"learned:{head_only / 'predictors'}"
    bare = tmp_path / "bare"
    shutil.copytree(DEFAULT_CACHE / "policy", bare)  # a bare exported policy: no head, so Taylor-2
    checkpoint = CacheCheckpoint(bare)
    assert checkpoint.policy_dir == bare and checkpoint.predictor_dir is None
    assert checkpoint.predictor_spec() == FALLBACK_PREDICTOR == "taylor:2"
    assert checkpoint.policy(0.4).target == 0.4


def test_save_and_load_round_trip_keeps_every_part(tmp_path):
    source = CacheCheckpoint.from_pretrained(CHECKPOINTS_DIR / "scenes-flux-cache")
    copy = CacheCheckpoint.from_pretrained(source.save_pretrained(tmp_path / "copy"))
    assert copy.has_gate and (copy.predictor_dir / GATE_FILE).is_file()
    assert [p.name for p in copy.schedule_files()] == [p.name for p in source.schedule_files()]
    assert copy.schedules(50).num_steps == 50 and copy.schedules().masks() == source.schedules().masks()
    assert copy.schedules(33).num_steps == source.schedules().num_steps  # no file at 33: the main one
    assert copy.conditions().to_json() == source.conditions().to_json()
    assert copy.fingerprint() == source.fingerprint()
    assert copy.prior().searched_steps() == source.prior().searched_steps()


def test_schedules_are_written_atomically_and_read_back(tmp_path):
    checkpoint = CacheCheckpoint(tmp_path)
    assert checkpoint.schedules() is None and checkpoint.prior().searched_steps() == []
    found = SearchedSchedules(num_steps=4, predictor="learned", settings={"samples": 2})
    found.add(0.5, [True, False, True, True], 41.5)
    checkpoint.write_schedules(found)
    assert json.loads((tmp_path / "searched_schedules.json").read_text())["schedules"] == {
        "0.5": {"mask": "1011", "train_psnr": 41.5}}
    assert not list(tmp_path.glob("*.tmp"))
    assert checkpoint.schedules().masks() == {0.5: "1011"}
    assert checkpoint.schedule_predictor(checkpoint.schedules()) == "taylor:2"  # searched with a head it lacks
    (tmp_path / "searched_schedules.json").write_text("{}")
    with pytest.raises(CheckpointError, match="searched_schedules"):
        checkpoint.schedules()


def test_a_checkpoint_for_another_backbone_fails_naming_the_field(pipe):
    import cachepilot

    with pytest.raises(CheckpointError, match="backbone_class"):  # the scenes (Flux) cache on the digits DiT
        cachepilot.enable(pipe, checkpoint=CHECKPOINTS_DIR / "scenes-flux-cache", speed=0.3)
    assert cachepilot.last_stats(pipe) is None


def _fitted_copy(tmp_path, selection: dict | None):
    """The shipped digits checkpoint copied, its policy config given a fit's `selection` record (None: as shipped)."""
    root = tmp_path / "cache"
    CacheCheckpoint.from_pretrained().save_pretrained(root)
    if selection is not None:
        config = json.loads((root / "policy" / "config.json").read_text())
        (root / "policy" / "config.json").write_text(json.dumps({**config, "selection": selection}))
    return CacheCheckpoint(root)


def test_shipped_checkpoints_and_winning_policies_keep_the_learned_policy(tmp_path):
    from cachepilot.policies.learned import LearnedPolicy

    for root in (DEFAULT_CACHE, CHECKPOINTS_DIR / "scenes-flux-cache"):  # no selection record: as before
        checkpoint = CacheCheckpoint(root)
        assert checkpoint.selection() == {} and not checkpoint.ships_searched
        assert type(checkpoint.policy(0.3)) is LearnedPolicy
    won = _fitted_copy(tmp_path, {"kind": "learned", "gain_db": 0.8, "margin_db": 0.1, "reason": "beat"})
    assert type(won.policy(0.3)) is LearnedPolicy


def test_a_checkpoint_shipping_its_searched_schedule_runs_it(tmp_path, pipe):
    import cachepilot
    from cachepilot.cache_checkpoint import SearchedSchedulePolicy
    from cachepilot.policies.learned import LearnedPolicy

    lost = _fitted_copy(tmp_path, {"kind": "searched", "gain_db": -0.4, "margin_db": 0.1, "reason": "did not beat"})
    assert lost.ships_searched
    masks = lost.schedules().masks()
    target = sorted(masks)[0]
    policy = lost.policy(target)
    assert isinstance(policy, SearchedSchedulePolicy) and policy.spec() == "schedule:" + masks[target]
    assert type(lost.policy(target, actor=True)) is LearnedPolicy
    other = lost.policy(0.33)  # between searched targets: the prior's interpolated mask, at the call's count
    other.reset(20, 2)
    assert other.mask.tolist() == lost.prior().mask(0.33, 20)
    with pytest.raises(InvalidInputError, match="target compute fraction"):
        lost.policy(1.5)
    cachepilot.enable(pipe, checkpoint=lost.root, speed=target)
    try:
        pipe([1, 2], num_inference_steps=len(masks[target]), output_type="pt")
        stats = cachepilot.last_stats(pipe)
    finally:
        cachepilot.disable(pipe)
    from cachepilot.core.actions import Action

    assert (stats.decisions == int(Action.COMPUTE)).T.tolist() == [[c == "1" for c in masks[target]]] * 2
