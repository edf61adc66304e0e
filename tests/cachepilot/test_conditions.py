import json

import datasets
import pytest

from cachepilot.conditions import (
    PER_SAMPLE_KEYS,
    ConditionSet,
    ConditionSplit,
    batch_call_kwargs,
    class_conditions,
    condition_key,
    group_by_shared,
    load_conditions,
    split_conditions,
)
from cachepilot.errors import InvalidInputError


def _prompts(n, start=0):
    return ConditionSet(tuple({"prompt": f"prompt number {i}"} for i in range(start, start + n)), "test")


# ----------------------------------------------------------------------------- loading

def test_txt_skips_blank_lines_and_strips(tmp_path):
    f = tmp_path / "prompts.txt"
    f.write_text("a cat\n\n   \n  a dog on a beach  \na cat\n")
    cs = load_conditions(f)
    assert cs.conditions == ({"prompt": "a cat"}, {"prompt": "a dog on a beach"})  # repeat kept once
    assert len(cs) == 2
    assert cs.source == str(f)


def test_other_suffix_is_text(tmp_path):
    f = tmp_path / "prompts.csv"
    f.write_text("one\ntwo\n")
    assert load_conditions(str(f)).conditions == ({"prompt": "one"}, {"prompt": "two"})


def test_jsonl(tmp_path):
    f = tmp_path / "c.jsonl"
    f.write_text(
        '{"prompt": "a cat", "guidance_scale": 4.5, "height": 512}\n\n'
        '{"prompt": "a dog", "negative_prompt": "", "num_frames": 16}\n'
        '{"class_labels": 3}\n'
    )
    cs = load_conditions(f)
    assert cs.conditions[0] == {"prompt": "a cat", "guidance_scale": 4.5, "height": 512}
    assert cs.conditions[2] == {"class_labels": 3}


def test_jsonl_malformed_line_names_file_and_line(tmp_path):
    f = tmp_path / "c.jsonl"
    f.write_text('{"prompt": "ok"}\n\n{"prompt": oops}\n')
    with pytest.raises(InvalidInputError, match=r"c\.jsonl, line 3 is not valid JSON"):
        load_conditions(f)


def test_jsonl_non_object_line(tmp_path):
    f = tmp_path / "c.jsonl"
    f.write_text('{"prompt": "ok"}\n"just a string"\n')
    with pytest.raises(InvalidInputError, match=r"line 2: a condition must be a JSON object"):
        load_conditions(f)


@pytest.mark.parametrize("line, match", [
    ('{"prompt": ""}', "prompt must be a non-empty string"),
    ('{"prompt": 5}', "prompt must be a non-empty string"),
    ('{"class_labels": -1}', "class_labels must be one integer >= 0"),
    ('{"class_labels": [1, 2]}', "class_labels must be one integer >= 0"),
    ('{"class_labels": true}', "class_labels must be one integer >= 0"),
])
def test_jsonl_bad_values(tmp_path, line, match):
    f = tmp_path / "c.jsonl"
    f.write_text(line + "\n")
    with pytest.raises(InvalidInputError, match=match) as err:
        load_conditions(f)
    assert "line 1" in str(err.value)


def test_json_list(tmp_path):
    f = tmp_path / "c.json"
    f.write_text(json.dumps(["a cat", {"prompt": "a dog", "guidance_scale": 2.0}]))
    assert load_conditions(f).conditions == ({"prompt": "a cat"}, {"prompt": "a dog", "guidance_scale": 2.0})


def test_empty_file(tmp_path):
    f = tmp_path / "empty.txt"
    f.write_text("\n  \n")
    with pytest.raises(InvalidInputError, match="holds no conditions"):
        load_conditions(f)
    g = tmp_path / "empty.jsonl"
    g.write_text("")
    with pytest.raises(InvalidInputError, match="holds no conditions"):
        load_conditions(g)


def test_missing_file(tmp_path):
    with pytest.raises(InvalidInputError, match="not found"):
        load_conditions(tmp_path / "nope.txt")


def test_dataset_dir_column(tmp_path):
    d = tmp_path / "ds"
    datasets.Dataset.from_dict({"text": ["a cat", "a dog"], "id": [0, 1]}).save_to_disk(str(d))
    cs = load_conditions(d, column="text")
    assert cs.conditions == ({"prompt": "a cat"}, {"prompt": "a dog"})


def test_dataset_dir_missing_column_names_available(tmp_path):
    d = tmp_path / "ds"
    datasets.Dataset.from_dict({"text": ["a cat"], "id": [0]}).save_to_disk(str(d))
    with pytest.raises(InvalidInputError, match=r"no column 'prompt' \(columns: text, id\)"):
        load_conditions(d)


def test_dataset_dict_takes_train_and_class_labels(tmp_path):
    d = tmp_path / "dd"
    datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"class_labels": [1, 4, 1]}),
        "test": datasets.Dataset.from_dict({"class_labels": [9]}),
    }).save_to_disk(str(d))
    assert load_conditions(d, column="class_labels").conditions == ({"class_labels": 1}, {"class_labels": 4})


def test_integer_column_gives_class_labels(tmp_path):
    d = tmp_path / "ds"
    datasets.Dataset.from_dict({"label": [2, 7]}).save_to_disk(str(d))
    assert load_conditions(d, column="label").conditions == ({"class_labels": 2}, {"class_labels": 7})


def test_hf_spec(monkeypatch):
    calls = []

    def fake_load_dataset(name, split):
        calls.append((name, split))
        return datasets.Dataset.from_dict({"prompt": ["x", "y"]})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert len(load_conditions("hf:user/prompts")) == 2
    load_conditions("hf:user/prompts:validation")
    assert calls == [("user/prompts", "train"), ("user/prompts", "validation")]


def test_hf_spec_failure_is_invalid_input(monkeypatch):
    def boom(name, split):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", boom)
    with pytest.raises(InvalidInputError, match="could not be loaded.*offline"):
        load_conditions("hf:user/prompts")


def test_classes_spec():
    assert [c["class_labels"] for c in load_conditions("classes:2-5").conditions] == [2, 3, 4, 5]
    assert [c["class_labels"] for c in load_conditions("classes:0,3,7").conditions] == [0, 3, 7]
    assert load_conditions("classes:1").conditions == ({"class_labels": 1},)
    for bad in ("classes:5-2", "classes:a-b", "classes:-1", "classes:"):
        with pytest.raises(InvalidInputError):
            load_conditions(bad)


def test_class_conditions():
    cs = class_conditions(3)
    assert cs.conditions == ({"class_labels": 0}, {"class_labels": 1}, {"class_labels": 2})
    with pytest.raises(InvalidInputError):
        class_conditions(0)


def test_condition_key_is_canonical():
    assert condition_key({"b": 1, "a": "x"}) == condition_key({"a": "x", "b": 1}) == '{"a":"x","b":1}'
    with pytest.raises(InvalidInputError):
        condition_key({"a": object()})


# ----------------------------------------------------------------------------- splits

def test_split_deterministic_disjoint_and_covering():
    cs = _prompts(50)
    a, b = split_conditions(cs, seed=3), split_conditions(cs, seed=3)
    assert a == b and a.by == "conditions"
    parts = [set(map(condition_key, s.conditions)) for s in (a.train, a.validation, a.evaluation)]
    assert all(parts)
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert set.union(*parts) == set(map(condition_key, cs.conditions))
    assert split_conditions(cs, seed=4) != a


def test_adding_conditions_keeps_existing_in_place():
    small, large = _prompts(40), ConditionSet(_prompts(40).conditions + _prompts(30, start=40).conditions, "test")
    before, after = split_conditions(small), split_conditions(large)
    for name in ("train", "validation", "evaluation"):
        old = set(map(condition_key, getattr(before, name).conditions))
        new = set(map(condition_key, getattr(after, name).conditions))
        assert old <= new


def test_small_split_is_non_empty():
    split = split_conditions(_prompts(3), by="conditions")
    assert [len(split.train), len(split.validation), len(split.evaluation)] == [1, 1, 1]
    with pytest.raises(InvalidInputError, match="too few"):
        split_conditions(_prompts(2), by="conditions")


def test_auto_uses_seeds_for_classes_and_few_conditions():
    classes = class_conditions(10)
    split = split_conditions(classes)
    assert split.by == "seeds"
    assert split.train == split.validation == split.evaluation == classes
    assert split_conditions(_prompts(5)).by == "seeds"
    assert split_conditions(_prompts(6)).by == "conditions"


def test_split_bad_arguments():
    with pytest.raises(InvalidInputError, match="fractions"):
        split_conditions(_prompts(10), fractions=(0.5, 0.5, 0.5))
    with pytest.raises(InvalidInputError, match="by must be"):
        split_conditions(_prompts(10), by="classes")


def test_json_round_trip():
    cs = _prompts(8)
    assert ConditionSet.from_json(json.loads(json.dumps(cs.to_json()))) == cs
    split = split_conditions(cs)
    assert ConditionSplit.from_json(json.loads(json.dumps(split.to_json()))) == split
    with pytest.raises(InvalidInputError):
        ConditionSet.from_json({"conditions": "nope"})


# ----------------------------------------------------------------------------- batching

def test_batch_call_kwargs_merges():
    kwargs = batch_call_kwargs([
        {"prompt": "a", "negative_prompt": "blur", "guidance_scale": 3.5, "height": 64},
        {"prompt": "b", "negative_prompt": "", "guidance_scale": 3.5, "height": 64},
    ])
    assert kwargs == {"prompt": ["a", "b"], "negative_prompt": ["blur", ""], "guidance_scale": 3.5, "height": 64}
    assert batch_call_kwargs([{"class_labels": 1}, {"class_labels": 0}]) == {"class_labels": [1, 0]}
    assert set(PER_SAMPLE_KEYS) >= {"prompt", "class_labels"}


def test_batch_call_kwargs_errors():
    with pytest.raises(InvalidInputError, match=r"must share guidance_scale \(got 3\.5 and 5\.0\): group them"):
        batch_call_kwargs([{"prompt": "a", "guidance_scale": 3.5}, {"prompt": "b", "guidance_scale": 5.0}])
    with pytest.raises(InvalidInputError, match="negative_prompt"):
        batch_call_kwargs([{"prompt": "a", "negative_prompt": "x"}, {"prompt": "b"}])
    with pytest.raises(InvalidInputError, match="height"):
        batch_call_kwargs([{"prompt": "a", "height": 64}, {"prompt": "b"}])
    with pytest.raises(InvalidInputError, match="no conditions"):
        batch_call_kwargs([])


def test_group_by_shared():
    conds = [
        {"prompt": "a", "guidance_scale": 3.5},
        {"prompt": "b", "guidance_scale": 5.0},
        {"prompt": "c", "guidance_scale": 3.5},
        {"prompt": "d", "guidance_scale": 3.5, "negative_prompt": "x"},
        {"prompt": "e", "guidance_scale": 5.0},
    ]
    groups = group_by_shared(conds)
    assert groups == [[0, 2], [1, 4], [3]]
    for group in groups:
        batch_call_kwargs([conds[i] for i in group])  # every group is one valid call
    assert group_by_shared([]) == []
