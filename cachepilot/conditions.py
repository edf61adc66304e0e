"""Conditions are data: the per-sample call kwargs a user's diffusers pipeline is sampled with.

A condition is one dict of pipeline call kwargs (``{"prompt": "a cat", "guidance_scale": 4.5}`` or
``{"class_labels": 3}``). Policies are trained, validated and evaluated on conditions read from a
file, a saved dataset or a class range, so the split must be reproducible from the data alone:
each condition's split depends only on its canonical JSON and a seed.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cachepilot.errors import InvalidInputError

PER_SAMPLE_KEYS = (
    "prompt", "prompt_2", "prompt_3",
    "negative_prompt", "negative_prompt_2", "negative_prompt_3",
    "class_labels",
)
PROMPT_KEYS = ("prompt", "prompt_2", "prompt_3")
NEGATIVE_PROMPT_KEYS = ("negative_prompt", "negative_prompt_2", "negative_prompt_3")
SPLIT_NAMES = ("train", "validation", "evaluation")
SPLIT_BY = ("auto", "conditions", "seeds")


# ----------------------------------------------------------------------------- one condition

def _check_condition(condition: Any, where: str) -> dict:
    """Reject what a pipeline call would fail on later, deep inside, with no hint of which sample."""
    if not isinstance(condition, dict):
        raise InvalidInputError(
            f"{where}: a condition must be a JSON object of pipeline call kwargs, "
            f"got {type(condition).__name__} {condition!r:.60}"
        )
    for key, value in condition.items():
        if not isinstance(key, str):
            raise InvalidInputError(f"{where}: call kwarg names must be strings, got {key!r}")
        if key in PROMPT_KEYS and not (isinstance(value, str) and value.strip()):
            raise InvalidInputError(f"{where}: {key} must be a non-empty string, got {value!r:.60}")
        if key in NEGATIVE_PROMPT_KEYS and not isinstance(value, str):
            raise InvalidInputError(f"{where}: {key} must be a string, got {value!r:.60}")
        if key == "class_labels" and not (
            isinstance(value, int) and not isinstance(value, bool) and value >= 0
        ):
            raise InvalidInputError(
                f"{where}: class_labels must be one integer >= 0 per condition, got {value!r:.60}"
            )
    try:
        json.dumps(condition, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise InvalidInputError(
            f"{where}: a condition must be JSON-serialisable so it can be stored with the checkpoint ({err})"
        ) from None
    return condition


def condition_key(condition: dict) -> str:
    """Canonical JSON (sorted keys, compact): a stable, hashable identity of a condition.

    Reference stores and the split key on it, so it must not depend on dict order or process.
    """
    try:
        return json.dumps(condition, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as err:
        raise InvalidInputError(f"condition {condition!r:.80} is not JSON-serialisable ({err})") from None


def _is_class_only(condition: dict) -> bool:
    """Class-conditional without text: few distinct values, so held-out classes make no sense."""
    return "class_labels" in condition and not any(k in condition for k in PROMPT_KEYS)


# ----------------------------------------------------------------------------- a set of them

@dataclass(frozen=True)
class ConditionSet:
    """The conditions a policy is trained or measured on, and where they came from."""

    conditions: tuple[dict, ...]
    source: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "conditions", tuple(self.conditions))
        for i, condition in enumerate(self.conditions):
            _check_condition(condition, f"{self.source}, condition {i + 1}")

    def __len__(self) -> int:
        return len(self.conditions)

    def to_json(self) -> dict:
        """Plain data for the checkpoint record, so a policy says what it was trained on."""
        return {"source": self.source, "conditions": [dict(c) for c in self.conditions]}

    @classmethod
    def from_json(cls, data: dict) -> ConditionSet:
        """Inverse of `to_json`."""
        if not (isinstance(data, dict) and isinstance(data.get("source"), str)
                and isinstance(data.get("conditions"), list)):
            raise InvalidInputError(
                "a condition set record must be {'source': str, 'conditions': [...]}: "
                "the checkpoint record is corrupt, re-create it"
            )
        return cls(tuple(dict(c) if isinstance(c, dict) else c for c in data["conditions"]), data["source"])


def _dedupe(conditions: list[dict]) -> tuple[dict, ...]:
    """Drop repeats (first kept): a repeated condition would be one key in two places."""
    seen: set[str] = set()
    unique = []
    for condition in conditions:
        key = condition_key(condition)
        if key not in seen:
            seen.add(key)
            unique.append(condition)
    return tuple(unique)


def _finish(conditions: list[dict], source: str) -> ConditionSet:
    if not conditions:
        raise InvalidInputError(f"{source} holds no conditions: add at least one prompt or class")
    return ConditionSet(_dedupe(conditions), source)


# ----------------------------------------------------------------------------- loaders

def _read_text(path: Path) -> str:
    if not path.exists():
        raise InvalidInputError(f"conditions file not found: {path} (give a .txt, .jsonl, .json or dataset directory)")
    if not path.is_file():
        raise InvalidInputError(f"conditions source {path} is neither a file nor a saved dataset directory")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InvalidInputError(f"{path} is not UTF-8 text: save it as UTF-8") from None


def _load_txt(path: Path) -> ConditionSet:
    """One prompt per non-blank line: the simplest thing a user can write."""
    conditions = [{"prompt": line.strip()} for line in _read_text(path).splitlines() if line.strip()]
    return _finish(conditions, str(path))


def _load_jsonl(path: Path) -> ConditionSet:
    """One JSON object of call kwargs per non-blank line; errors name the line."""
    conditions = []
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            raise InvalidInputError(f"{where} is not valid JSON ({err.msg}): write one JSON object per line") from None
        conditions.append(_check_condition(value, where))
    return _finish(conditions, str(path))


def _load_json(path: Path) -> ConditionSet:
    """A list of condition objects (or of prompt strings), or a `ConditionSet.to_json` record."""
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as err:
        raise InvalidInputError(
            f"{path} is not valid JSON ({err}): fix it, or use .jsonl with one object per line"
        ) from None
    if isinstance(data, dict) and isinstance(data.get("conditions"), list):
        data = data["conditions"]
    if not isinstance(data, list):
        raise InvalidInputError(
            f"{path} must hold a JSON list of condition objects (or {{'conditions': [...]}}), got {type(data).__name__}"
        )
    conditions = []
    for i, item in enumerate(data):
        where = f"{path}, item {i + 1}"
        conditions.append(_check_condition({"prompt": item} if isinstance(item, str) else item, where))
    return _finish(conditions, str(path))


def _is_int_feature(feature: Any) -> bool:
    import datasets

    if isinstance(feature, datasets.ClassLabel):
        return True
    return isinstance(feature, datasets.Value) and feature.dtype.startswith(("int", "uint"))


def _from_dataset(dataset: Any, column: str, source: str) -> ConditionSet:
    """Prompts from a text column; class labels from `class_labels` or an integer/ClassLabel column."""
    import datasets

    if isinstance(dataset, datasets.DatasetDict):
        if "train" not in dataset:
            raise InvalidInputError(
                f"{source} has no 'train' split (splits: {', '.join(dataset)}): "
                f"save that split alone or use hf:NAME:SPLIT"
            )
        dataset = dataset["train"]
    if column not in dataset.column_names:
        raise InvalidInputError(
            f"{source} has no column {column!r} (columns: {', '.join(dataset.column_names)}): "
            f"pass one of them as column"
        )
    as_class = column == "class_labels" or _is_int_feature(dataset.features[column])
    key = "class_labels" if as_class else "prompt"
    conditions = []
    for i, value in enumerate(dataset[column]):
        if isinstance(value, str):
            value = value.strip()
        conditions.append(_check_condition({key: value}, f"{source}, column {column!r}, row {i}"))
    return _finish(conditions, source)


def _load_dataset_dir(path: Path, column: str) -> ConditionSet:
    import datasets

    try:
        dataset = datasets.load_from_disk(str(path))
    except FileNotFoundError as err:
        raise InvalidInputError(
            f"{path} is a directory but not a dataset saved with datasets' save_to_disk ({err})"
        ) from None
    return _from_dataset(dataset, column, str(path))


def _load_hub(spec: str, column: str) -> ConditionSet:
    """`hf:NAME` or `hf:NAME:SPLIT` through `datasets.load_dataset` (cache or network)."""
    import datasets

    name, _, split = spec[len("hf:"):].partition(":")
    if not name:
        raise InvalidInputError(f"{spec!r}: give a dataset name, as hf:NAME or hf:NAME:SPLIT")
    try:
        dataset = datasets.load_dataset(name, split=split or "train")
    except Exception as err:  # hub, network, unknown split: all mean the spec can't be read
        raise InvalidInputError(f"{spec!r} could not be loaded with datasets.load_dataset: {err}") from err
    return _from_dataset(dataset, column, spec)


def _parse_classes(spec: str) -> ConditionSet:
    """`classes:A-B` (inclusive) or `classes:0,3,7` (items may mix both)."""
    body = spec[len("classes:"):]
    labels: list[int] = []
    for item in body.split(","):
        item = item.strip()
        low, dash, high = item.partition("-")
        try:
            if dash:
                first, last = int(low), int(high)
                if last < first:
                    raise ValueError
                labels.extend(range(first, last + 1))
            elif item:
                labels.append(int(item))
        except ValueError:
            raise InvalidInputError(
                f"{spec!r}: {item!r} is not a class id or range: write classes:A-B or classes:0,3,7 (ids >= 0)"
            ) from None
    return _finish([{"class_labels": label} for label in labels], spec)


def load_conditions(source: str | Path, column: str = "prompt") -> ConditionSet:
    """Read conditions from a `.txt`/`.jsonl`/`.json` file, a saved dataset, `hf:NAME[:SPLIT]` or `classes:...`.

    - text file (any suffix but .jsonl/.json): one prompt per non-blank line;
    - `.jsonl`: one JSON object of pipeline call kwargs per non-blank line;
    - `.json`: a list of such objects (or of prompt strings);
    - a `save_to_disk` directory (a DatasetDict gives its 'train' split) or `hf:NAME[:SPLIT]`:
      `column`'s values as prompts, or as class labels if `column` is 'class_labels' or holds integers;
    - `classes:A-B` / `classes:0,3,7`: one `{"class_labels": i}` each.

    Repeated conditions are kept once (first occurrence), since a condition's key is its identity.
    """
    if isinstance(source, str) and source.startswith("classes:"):
        return _parse_classes(source)
    if isinstance(source, str) and source.startswith("hf:"):
        return _load_hub(source, column)
    path = Path(source).expanduser()
    if path.is_dir():
        return _load_dataset_dir(path, column)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _load_jsonl(path)
    if suffix == ".json":
        return _load_json(path)
    return _load_txt(path)


def class_conditions(num_classes: int) -> ConditionSet:
    """Every class of a class-conditional model, 0..num_classes-1."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise InvalidInputError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    return ConditionSet(tuple({"class_labels": i} for i in range(num_classes)), f"classes:0-{num_classes - 1}")


def pipeline_conditions(pipe: Any, prompts: str | Path | ConditionSet | None = None) -> ConditionSet:
    """The conditions a pipeline is sampled on: `prompts` (a ConditionSet or anything `load_conditions` reads),
    else every class of a class-conditional pipeline (`num_classes`, or diffusers' DiTPipeline `labels`); a
    text-conditioned pipeline without prompts is an error that says what to pass."""
    if isinstance(prompts, ConditionSet):
        return prompts
    if prompts is not None:
        return load_conditions(prompts)
    num_classes = getattr(pipe, "num_classes", None)
    labels = getattr(pipe, "labels", None)  # diffusers' DiTPipeline: class name -> id, from id2label
    if num_classes is None and isinstance(labels, dict) and labels:
        ids = sorted({int(i) for i in labels.values()})
        return ConditionSet(tuple({"class_labels": i} for i in ids), f"{type(pipe).__name__} classes")
    if num_classes is None:
        raise InvalidInputError(f"{type(pipe).__name__} is conditioned on text: pass --prompts FILE "
                                "(one prompt per line, or a JSONL of call kwargs)")
    return class_conditions(int(num_classes))


# ----------------------------------------------------------------------------- splits

@dataclass(frozen=True)
class ConditionSplit:
    """Train / validation / evaluation conditions, and whether they differ by condition or only by seed."""

    train: ConditionSet
    validation: ConditionSet
    evaluation: ConditionSet
    by: str

    def to_json(self) -> dict:
        """Plain data for the checkpoint record."""
        return {"by": self.by, **{name: getattr(self, name).to_json() for name in SPLIT_NAMES}}

    @classmethod
    def from_json(cls, data: dict) -> ConditionSplit:
        """Inverse of `to_json`."""
        if not (isinstance(data, dict) and data.get("by") in ("conditions", "seeds")
                and all(name in data for name in SPLIT_NAMES)):
            raise InvalidInputError(
                "a condition split record must hold 'by' ('conditions' or 'seeds') and "
                "'train', 'validation', 'evaluation': the checkpoint record is corrupt, re-create it"
            )
        return cls(*(ConditionSet.from_json(data[name]) for name in SPLIT_NAMES), by=data["by"])


def _unit_hash(key: str, seed: int) -> float:
    """A uniform number in [0, 1) fixed by key and seed alone (sha256, not the salted `hash`)."""
    digest = hashlib.sha256(f"{seed}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    values = tuple(fractions)
    if (len(values) != 3 or not all(isinstance(f, (int, float)) and f > 0 for f in values)
            or not math.isclose(sum(values), 1.0, abs_tol=1e-6)):
        raise InvalidInputError(
            f"fractions must be three numbers > 0 summing to 1 (train, validation, evaluation), got {fractions!r}"
        )
    return values  # type: ignore[return-value]


def split_conditions(
    conditions: ConditionSet,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    by: str = "auto",
) -> ConditionSplit:
    """Split deterministically, so adding conditions to a file never moves existing ones.

    by="conditions": disjoint sets, each condition placed by a hash of its key and `seed`.
    by="seeds": all three hold every condition; only the noise seeds differ (class-conditional
    models with few classes are evaluated on the same classes). by="auto" picks "conditions"
    when there are >= 6 conditions and none is class-only, else "seeds".
    """
    if by not in SPLIT_BY:
        raise InvalidInputError(f"by must be one of {', '.join(SPLIT_BY)}, got {by!r}")
    fractions = _check_fractions(fractions)
    if len(conditions) == 0:
        raise InvalidInputError(f"{conditions.source} holds no conditions: nothing to split")
    if by == "auto":
        by = "conditions" if len(conditions) >= 6 and not any(map(_is_class_only, conditions.conditions)) else "seeds"
    if by == "seeds":
        return ConditionSplit(conditions, conditions, conditions, by="seeds")

    # group by key so repeats of one condition can never land in two splits
    indices_by_key: dict[str, list[int]] = {}
    for i, condition in enumerate(conditions.conditions):
        indices_by_key.setdefault(condition_key(condition), []).append(i)
    if len(indices_by_key) < 3:
        raise InvalidInputError(
            f"{conditions.source} holds {len(indices_by_key)} distinct condition(s), too few to split by "
            f"conditions into train, validation and evaluation: add conditions or use by='seeds'"
        )
    bounds = (fractions[0], fractions[0] + fractions[1])
    position = {key: _unit_hash(key, seed) for key in indices_by_key}
    buckets: list[list[str]] = [[], [], []]
    for key, u in position.items():
        buckets[0 if u < bounds[0] else 1 if u < bounds[1] else 2].append(key)
    # tiny sets: fill an empty split from the largest (first on ties), taking its lowest-hash key
    for empty in range(3):
        if not buckets[empty]:
            donor = max(range(3), key=lambda b: (len(buckets[b]), -b))
            moved = min(buckets[donor], key=lambda k: (position[k], k))
            buckets[donor].remove(moved)
            buckets[empty].append(moved)

    def subset(keys: list[str], name: str) -> ConditionSet:
        indices = sorted(i for key in keys for i in indices_by_key[key])
        return ConditionSet(tuple(conditions.conditions[i] for i in indices), f"{conditions.source} [{name}]")

    return ConditionSplit(*(subset(keys, name) for keys, name in zip(buckets, SPLIT_NAMES)), by="conditions")


# ----------------------------------------------------------------------------- batching

def _shared_kwargs(condition: dict) -> dict:
    return {k: v for k, v in condition.items() if k not in PER_SAMPLE_KEYS}


def _show(value: Any) -> str:
    return json.dumps(value, sort_keys=True) if not isinstance(value, str) else repr(value)


def batch_call_kwargs(conditions: Sequence[dict]) -> dict:
    """Merge per-sample conditions into the kwargs of ONE batched pipeline call.

    Keys in PER_SAMPLE_KEYS become lists, one entry per sample; every other kwarg (guidance_scale,
    height, ...) applies to the whole call, so all samples must agree on it. Values are compared as
    canonical JSON, as `group_by_shared` groups them.
    """
    conditions = list(conditions)
    if not conditions:
        raise InvalidInputError("batch_call_kwargs got no conditions: pass at least one")
    for i, condition in enumerate(conditions):
        _check_condition(condition, f"condition {i} of the batch")
    kwargs: dict = {}
    for key in PER_SAMPLE_KEYS:
        having = [key in c for c in conditions]
        if any(having) and not all(having):
            raise InvalidInputError(
                f"samples in one batch must all set {key} or none (condition {having.index(False)} lacks it, "
                f"condition {having.index(True)} has it): group them with group_by_shared"
            )
        if all(having):
            kwargs[key] = [c[key] for c in conditions]
    first = _shared_kwargs(conditions[0])
    for condition in conditions[1:]:
        other = _shared_kwargs(condition)
        for key in sorted(first.keys() | other.keys()):
            if key not in first or key not in other:
                raise InvalidInputError(
                    f"samples in one batch must share {key} (set in some, missing in others): group them"
                )
            if condition_key({"v": first[key]}) != condition_key({"v": other[key]}):
                raise InvalidInputError(
                    f"samples in one batch must share {key} "
                    f"(got {_show(first[key])} and {_show(other[key])}): group them"
                )
    kwargs.update(first)
    return kwargs


def group_by_shared(conditions: Sequence[dict]) -> list[list[int]]:
    """Indices grouped so each group is one valid `batch_call_kwargs` call, groups in first-seen order.

    Samples share a group when their non-per-sample kwargs are equal and they set the same
    per-sample keys (a prompt batch and a class batch can't be merged into one call).
    """
    groups: dict[str, list[int]] = {}
    for i, condition in enumerate(conditions):
        _check_condition(condition, f"condition {i}")
        signature = condition_key({
            "shared": _shared_kwargs(condition),
            "per_sample": sorted(k for k in condition if k in PER_SAMPLE_KEYS),
        })
        groups.setdefault(signature, []).append(i)
    return list(groups.values())
