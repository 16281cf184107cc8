"""The multi-key protocol: cached runs, resuming, mean / worst-key summaries and their tables."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
from datasets import DatasetDict

from hf_poscuda import PosCUDAConfig, PosCUDAKey
from hf_poscuda.evaluation import DataSpec, ModelSpec, TrainingRecipe, public_eval_key, run_grid, summarise
from hf_poscuda.evaluation.protocol import attacks_summary_markdown, summary_markdown
from tests.conftest import make_dataset


def test_public_eval_keys_are_published_derivations():
    assert public_eval_key(0) == PosCUDAKey(bytes(range(32)))
    assert public_eval_key(3) == PosCUDAKey(hashlib.sha256(b"hf-poscuda/public-eval-key/3").digest())
    assert len({public_eval_key(i).key_id for i in range(5)}) == 5


@pytest.fixture
def grid(tmp_path):
    loads = []

    def load(spec: DataSpec) -> DatasetDict:
        loads.append(spec)
        return DatasetDict({"train": make_dataset(16, num_classes=2), "test": make_dataset(6, num_classes=2, seed=2)})

    args = dict(
        load=load, settings={"tv": PosCUDAConfig(), "v0.1": PosCUDAConfig.from_preset("v0.1")}, keys=[0, 1],
        data=[DataSpec("official", 8000)], models=[ModelSpec("raw_cnn")], attacks=["none", "blind_eq"],
        output=tmp_path, recipe=TrainingRecipe(epochs=1, batch_size=8, clip_seconds=0.5), quality_clips=2,
        clean_attacks=["blind_eq"],
    )
    return args, loads, tmp_path


def test_run_grid_records_every_run_once_and_resumes(grid):
    args, loads, out = grid
    runs = run_grid(**args)
    # 2 clean runs (none, blind_eq) + 2 settings x 2 keys x 2 countermeasures
    assert len(runs) == 2 + 8 and len(loads) == 1
    assert {(r["setting"], r["key"], r["attack"]) for r in runs if r["setting"] != "clean"} == {
        (s, k, a) for s in ("tv", "v0.1") for k in (0, 1) for a in ("none", "blind_eq")
    }
    for r in runs:
        assert 0.0 <= r["test_accuracy"] <= r["peak_test_accuracy"] <= 1.0 and len(r["curve"]) == 1
        assert r["key_id"] == (public_eval_key(r["key"]).key_id if r["setting"] != "clean" else None)
    quality = [json.loads(line) for line in (out / "quality.jsonl").read_text().splitlines()]
    assert len(quality) == 4 and all(q["clips"] == 2 for q in quality)
    text = (out / "runs.jsonl").read_text() + (out / "quality.jsonl").read_text()
    assert bytes(range(32)).hex() not in text  # public key 0's secret is public, but still never written
    assert run_grid(**args) == runs and len(loads) == 1  # a re-run trains nothing and loads nothing


def test_unknown_countermeasure_fails_before_training(grid):
    args, loads, _ = grid
    with pytest.raises(ValueError, match="Unknown countermeasure"):
        run_grid(**{**args, "attacks": ["none", "jpeg"]})
    assert loads == []


def test_the_clean_baseline_name_is_reserved(grid):
    args, loads, _ = grid
    with pytest.raises(ValueError, match="unprotected baseline"):
        run_grid(**{**args, "settings": {"clean": PosCUDAConfig()}})
    assert loads == []


def test_summaries_give_mean_and_worst_key():
    runs = [
        {"setting": "s", "key": k, "split": "official", "sampling_rate": 8000, "model": "m", "attack": "none",
         "test_accuracy": acc, "peak_test_accuracy": acc + 0.1}
        for k, acc in enumerate([0.1, 0.3, 0.2])
    ]
    runs.append(dict(runs[1]))  # the same run recorded twice counts once
    quality = [{"setting": "s", "key": k, "split": "official", "sampling_rate": 8000, "pesq": p}
               for k, p in enumerate([3.9, 4.1, 4.0])]
    (row,) = summarise(runs, quality)
    assert row["keys"] == 3 and row["mean"] == pytest.approx(0.2) and row["worst"] == 0.3 and row["best"] == 0.1
    assert row["peak_mean"] == pytest.approx(0.3) and row["pesq"] == pytest.approx(4.0) and row["pesq_worst"] == 3.9
    table = summary_markdown([row], ["m"], peak=True)
    assert "| s | 4.00 | 3 | 20.0 (30) [30] |" in table
    assert "| none | – | – | 3 | 20.0 (30) [30] |" in attacks_summary_markdown([row], "s", ["m"], ["none"])


def test_a_setting_name_stands_for_one_parameter_set(grid):
    args, _, _ = grid
    run_grid(**{**args, "attacks": ["none"], "keys": [0]})
    with pytest.raises(ValueError, match="other parameters"):
        run_grid(**{**args, "settings": {"tv": PosCUDAConfig(cut_db=20.0)}, "attacks": ["none"], "keys": [0]})


def test_a_run_interrupted_while_writing_its_line_is_run_again(grid):
    args, _, _ = grid
    runs = run_grid(**args)
    path = Path(args["output"]) / "runs.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])  # the last write was cut short
    ident = lambda rs: sorted((r["setting"], r["key"], r["model"], r["attack"]) for r in rs)  # noqa: E731
    again = run_grid(**args)
    assert ident(again) == ident(runs) and again[:-1] == runs[:-1]  # that run is done again, nothing else
    assert path.read_text().count("\n") == len(runs) and path.read_text().endswith("\n")


def test_an_unfinished_last_record_is_ignored_when_reading(tmp_path):
    from hf_poscuda.evaluation.protocol import _read_jsonl

    path = tmp_path / "runs.jsonl"
    path.write_text('{"setting": "a", "key": 0}\n{"setting": "a", "ke')
    assert _read_jsonl(path) == [{"setting": "a", "key": 0}]
    path.write_text('{"setting": "a", "ke\n{"setting": "a", "key": 0}\n')
    with pytest.raises(json.JSONDecodeError):  # damage anywhere else is not silently skipped
        _read_jsonl(path)


def test_designed_settings_design_each_key_once_and_record_the_design(grid, monkeypatch):
    """A designed setting gets each key's table designed on the train split, kept in designs.jsonl and reused; the
    speaker task is recorded as such."""
    from hf_poscuda.evaluation import design as design_module
    from hf_poscuda.evaluation.design import DesignRecipe

    args, _, out = grid
    calls = []
    real = design_module.design_signatures

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(design_module, "design_signatures", counting)
    args |= {"settings": {"designed": PosCUDAConfig(filter_family="designed")}, "keys": [0], "attacks": ["none"],
             "clean_attacks": [], "data": [DataSpec("official", 8000, "speakers")],
             "design_recipe": DesignRecipe(surrogates=("raw_cnn",), steps=3, surrogate_epochs=1)}
    runs = run_grid(**args)
    designs = [json.loads(line) for line in (out / "designs.jsonl").read_text().splitlines()]
    assert len(calls) == 1 and len(designs) == 1 and designs[0]["task"] == "speakers"
    (designed,) = [r for r in runs if r["setting"] == "designed"]
    assert designed["design_id"] == designs[0]["design_id"] and designed["task"] == "speakers"
    (out / "runs.jsonl").write_text("")  # the runs again: the design is read back, not made again
    run_grid(**args)
    assert len(calls) == 1


def test_a_design_stored_by_another_worker_meanwhile_wins(tmp_path, monkeypatch):
    """Two workers that both miss a key's design both design it; the second to finish keeps the first one's record
    (one line in designs.jsonl) and protects with it, so every run of that key uses the same table."""
    from hf_poscuda.evaluation import design as design_module
    from hf_poscuda.evaluation.design import DesignRecipe
    from hf_poscuda.evaluation.protocol import designed_key

    key, config = PosCUDAKey(bytes(range(32))), PosCUDAConfig(filter_family="designed")
    recipe, spec = DesignRecipe(surrogates=("raw_cnn",), steps=1, surrogate_epochs=1), DataSpec("official", 8000)
    train, path = make_dataset(8, num_classes=2), tmp_path / "designs.jsonl"
    real = design_module.design_signatures

    def racing(*a, **k):  # the other worker appends its design while this one is still designing
        if not path.exists():
            monkeypatch.setattr(design_module, "design_signatures", real)
            designed_key(key, 0, spec, train, config, recipe, path)
        design = real(*a, **k)
        return dataclasses.replace(design, static_db=design.static_db / 2)  # a different table than the first

    monkeypatch.setattr(design_module, "design_signatures", racing)
    mine = designed_key(key, 0, spec, train, config, recipe, path)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == 1
    assert mine.design.design_id == records[0]["design_id"]


def test_the_goals_scorecard_says_met_only_over_enough_keys_and_every_named_model():
    from hf_poscuda.evaluation.protocol import Goal, goals_markdown

    def row(setting, model, mean, worst, keys=5, attack="none", task="digits", pesq=3.6):
        return {"setting": setting, "task": task, "split": "official", "sampling_rate": 8000, "model": model,
                "attack": attack, "mean": mean, "worst": worst, "keys": keys, "pesq": pesq}

    goals = [Goal("g", "digits", "official", ("a", "b"), 0.20, 0.25),
             Goal("cm", "digits", "official", (), 0.30, countermeasures=True)]
    rows = [row("ok", "a", 0.10, 0.12), row("ok", "b", 0.20, 0.25),
            row("few", "a", 0.10, 0.12, keys=3), row("few", "b", 0.15, 0.20, keys=3),
            row("worst", "a", 0.18, 0.30), row("worst", "b", 0.10, 0.12),
            row("half", "a", 0.10, 0.12),
            row("ok", "a", 0.35, 0.40, attack="class_eq", keys=2),
            row("default", "a", 0.10, 0.12, pesq=3.9)]
    table = goals_markdown(rows, ["ok", "few", "worst", "half", "none", "default"], goals)
    g_line, cm_line, pesq_line = table.splitlines()[2:]
    cells = [c.strip() for c in g_line.split("|")[2:-1]]
    assert cells[0] == "**met**: b 20.0 (25)"
    assert cells[1] == "**met so far**: b 15.0 (20) (3 keys)"
    assert cells[2].startswith("**missed**: a 18.0 (30)")  # the mean is under the bound, the worst key is not
    assert cells[3] == "**met so far**: a 10.0 (12) (not measured: b)"
    assert cells[4] == "not measured"
    assert "**missed**: a + class_eq 35.0 (40) (2 keys)" in cm_line
    assert "**met**: 3.60 (floor 3.5)" in pesq_line and "**missed**: 3.90 (floor 4.0)" in pesq_line


def test_a_design_recorded_before_a_recipe_field_existed_is_still_found(tmp_path, monkeypatch):
    """designs.jsonl records written before DesignRecipe gained a field match the recipe with that field at its
    default, and only then: the recorded designs stay in use, a recipe that differs designs anew."""
    from hf_poscuda.evaluation import design as design_module
    from hf_poscuda.evaluation.design import DesignRecipe
    from hf_poscuda.evaluation.protocol import designed_key

    key, config = PosCUDAKey(bytes(range(32))), PosCUDAConfig(filter_family="designed")
    spec, train, path = DataSpec("official", 8000), make_dataset(8, num_classes=2), tmp_path / "designs.jsonl"
    recipe = DesignRecipe(surrogates=("raw_cnn",), steps=1, surrogate_epochs=1)
    designed_key(key, 0, spec, train, config, recipe, path)
    record = json.loads(path.read_text())
    del record["recipe"]["targets"]  # as written before the field existed
    path.write_text(json.dumps(record) + "\n")
    monkeypatch.setattr(design_module, "design_signatures", lambda *a, **k: pytest.fail("designed again"))
    assert designed_key(key, 0, spec, train, config, recipe, path).design.design_id == record["design_id"]
    monkeypatch.undo()
    designed_key(key, 0, spec, train, config, dataclasses.replace(recipe, targets="nearest"), path)
    assert len(path.read_text().splitlines()) == 2
