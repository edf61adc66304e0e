"""The full recipe's masks: per target the head's searched mask or one of the best starts scored with Taylor-1,
whichever scores higher with its best forecaster on the gate's samples.

The full search scores its moves with one forecaster, the gated head, so its masks are the head's: the masks that
suit a Taylor forecast (computes packed where Taylor's error grows) are never reached from its start. On the digits
model at 50 steps this choice lifted the searched schedules by 0.7 / 1.9 / 3.9 dB at 0.3 / 0.4 / 0.5 held out over
the head's masks, and on the scenes model it took a start at 4 of 8 points (`docs/research-log.md`). The search's
starts scored with Taylor-1 on the search samples (`train.lean.ranked_starts`) cost a fraction of a search; the
`STARTS` best by median (on 16 samples the first medians were 0.15-0.35 dB apart on the digits model, and the second
or third scored up to 1.5 dB higher with the gate's forecasters) and the head's mask are then scored whole with every
forecaster the gate chooses among (`calibrate_gate`'s schedules, on the gate's own samples and seed), so the gate's
entry for the mask that ships is its forecaster at a call, and the policy's prior is the chosen mask. A tie keeps
the head's mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cachepilot.driver import SamplingDriver
from cachepilot.errors import InvalidInputError
from cachepilot.predictors.gated import GATE_FILE
from cachepilot.records import read_json_object
from cachepilot.searched import SearchedSchedules, mask_string
from cachepilot.seeds import SEARCH
from cachepilot.train import distributed

CHOICE_KEY = "mask_choice"  # the searched-schedules settings that record the choice (and that it was made)
CANDIDATE_FORECASTER = "taylor:1"
STARTS = 3  # the best starts under Taylor-1 that compete with the head's mask


def stored_gate(head: str | Path) -> dict:
    """The calibrated gate beside the head: candidates are scored on its samples and seed, with its intervals and
    counts, so that `calibrate_gate` keeps its spacing tables and adds the masks alone (it starts afresh on other
    settings)."""
    path = Path(head) / GATE_FILE
    if not path.is_file():
        raise InvalidInputError(f"choosing masks needs the calibrated gate at {path}: run the gate stage first")
    record = read_json_object(path, "the forecaster gate")
    return {"samples": int(record["samples"]), "seed": int(record["seed"]),
            "intervals": [int(n) for n in record["intervals"]], "counts": sorted(int(n) for n in record["counts"])}


def start_label(rank: int) -> str:
    """The record's name of the start ranked `rank` (from 0) under Taylor-1."""
    return f"{CANDIDATE_FORECASTER} start {rank + 1}"


def choose_masks(pipe, head: str | Path, schedules: str | Path, conditions: Sequence[dict],
                 call_kwargs: dict | None = None, search_samples: int = 16, batch_size: int = 64,
                 starts: int = STARTS, progress: bool = True) -> dict:
    """Per target of the searched-schedules file `schedules`, the head's mask or one of the `starts` best starts
    under Taylor-1 (median over `search_samples` samples, the search's seeds), the one whose best forecaster scores
    higher on the gate's samples; the file rewritten with the choice and every candidate's scores
    (settings[CHOICE_KEY]). Returns that record. The gate beside `head` gains an entry per candidate mask. The
    pipeline must be unhooked."""
    from cachepilot.train.calibrate_forecaster import calibrate_gate
    from cachepilot.train.incremental import MaskScorer
    from cachepilot.train.lean import ranked_starts

    searched = SearchedSchedules.read(schedules)
    gate = stored_gate(head)
    targets = sorted(float(t) for t in searched.schedules)
    driver = SamplingDriver(pipe, searched.num_steps, call_kwargs, batch_size)
    scorer = MaskScorer(driver, list(conditions), 0, search_samples, SEARCH)
    ranked = ranked_starts(scorer.per_sample, searched.num_steps, targets, CANDIDATE_FORECASTER, search_samples)
    candidates = {}
    for target in targets:
        head_mask = searched.schedules[f"{target:g}"]["mask"]
        others = [mask_string(mask) for mask, _ in ranked[target][:starts]]
        candidates[target] = {"head": head_mask, **{start_label(i): m for i, m in enumerate(others) if m != head_mask}}
    specs = list(dict.fromkeys(f"schedule:{m}" for by in candidates.values() for m in by.values()))
    scores = calibrate_gate(pipe, head, conditions, gate["counts"] or [searched.num_steps], gate["intervals"],
                            gate["samples"], call_kwargs, gate["seed"], out=Path(head), progress=progress,
                            schedules=specs, schedule_counts=[searched.num_steps])
    entries = scores["schedules"][str(searched.num_steps)]
    record = {}
    for target in targets:
        scored = {}
        for source, mask in candidates[target].items():
            entry = entries[f"schedule:{mask}"]
            scored[source] = {"mask": mask, "forecaster": entry["choice"], "psnr": entry["psnr"][entry["choice"]]}
        kept = max(scored, key=lambda s: scored[s]["psnr"])  # the head's first: a tie keeps it
        record[f"{target:g}"] = {"kept": kept, "candidates": scored}
        if kept != "head":
            searched.add(target, scored[kept]["mask"], scored[kept]["psnr"])
    searched.settings[CHOICE_KEY] = {"samples": gate["samples"], "seed": gate["seed"], "search_samples": search_samples,
                                     "starts": starts, "targets": record}
    distributed.on_rank_zero(searched.write, schedules)
    return record
