import pytest
import torch

from cachepilot.driver import SamplingDriver, unhooked_twin
from cachepilot.envs.references import ReferenceStore

STEPS = 6


@pytest.fixture(scope="module")
def driver(pipe):
    return SamplingDriver(unhooked_twin(pipe), STEPS)


def _counting(store: ReferenceStore, monkeypatch) -> list[int]:
    """The number of samples of every reference call the store's driver makes."""
    calls = []
    sample = store.driver.sample

    def counted(conditions, seeds, trajectory=False):
        calls.append(len(seeds))
        return sample(conditions, seeds, trajectory=trajectory)

    monkeypatch.setattr(store.driver, "sample", counted)
    return calls


def test_store_keeps_at_most_its_budget_least_recently_used_first(driver, monkeypatch):
    conditions = [{"class_labels": c} for c in (0, 1, 2)]
    full = ReferenceStore(driver, max_bytes=None)
    full.compute([1, 2, 3], conditions)
    one = full.trajectory(1, conditions[0])
    size = one.numel() * one.element_size()
    store = ReferenceStore(driver, max_bytes=2 * size)  # room for two trajectories
    calls = _counting(store, monkeypatch)
    store.compute([1, 2, 3], conditions)
    assert calls == [3] and store.bytes == 2 * size and len(store.trajectories) == 2
    # the batch just computed is handed out whole, the evicted first pair too, without another run
    for seed, condition in zip([1, 2, 3], conditions):
        assert torch.equal(store.trajectory(seed, condition), full.trajectory(seed, condition))
    assert calls == [3]
    store.compute([2], [conditions[1]])  # kept: no run, and now the most recently used
    assert calls == [3]
    store.compute([4], [conditions[0]])  # a new pair evicts the least recently used (seed 3), not seed 2
    assert calls == [3, 1] and store.bytes <= 2 * size
    assert {k[0] for k in store.trajectories} == {2, 4}
    recomputed = store.trajectory(3, conditions[2])  # alone now, not in a batch of 3: equal up to rounding
    assert torch.allclose(recomputed, full.trajectory(3, conditions[2]), atol=1e-5)
    assert calls == [3, 1, 1] and store.computed == 5


def test_store_without_room_still_hands_out_the_batch(driver, monkeypatch):
    store = ReferenceStore(driver, max_bytes=0)
    calls = _counting(store, monkeypatch)
    store.compute([5, 6], [{"class_labels": 3}, {"class_labels": 4}])
    assert store.trajectory(6, {"class_labels": 4}).shape[0] == STEPS
    assert calls == [2] and store.bytes == 0 and not store.trajectories
    with pytest.raises(ValueError, match="max_bytes"):
        ReferenceStore(driver, max_bytes=-1)
