"""The committed FSDD results: the package default is the setting they chose, and (slow) they reproduce."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hf_poscuda import PRESETS, PosCUDAConfig, PosCUDAKey

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "examples" / "results" / "fsdd" / "report.json"
FSDD = ROOT.parent / "shared" / "data" / "fsdd" / "recordings"
DEFAULT_SETTING = "default"  # the name the sweep gives the chosen setting
PUBLIC_TEST_KEY = PosCUDAKey(bytes(range(32)))  # public on purpose: it protects nothing, it makes runs repeatable


def committed() -> dict:
    return {s["name"]: s for s in json.loads(REPORT.read_text())["settings"]}


def key_runs() -> list[dict]:
    """The default re-run under other keys (the protection strength moves with the key)."""
    return json.loads((REPORT.parent / "key_noise.json").read_text())


def test_key_noise_record_matches_the_default_and_has_the_public_test_run():
    runs = key_runs()
    assert len(runs) >= 5 and all(r["name"] == DEFAULT_SETTING for r in runs)
    public = [r for r in runs if r.get("public_test_key")]
    assert len(public) == 1 and public[0]["key_id"] == PUBLIC_TEST_KEY.key_id
    for run in runs:
        assert set(run["accuracy"]) == {"logmel_cnn", "raw_cnn"} and 3.5 <= run["pesq"] <= 4.6


def test_package_default_is_the_setting_the_numbers_chose():
    settings = committed()
    assert settings[DEFAULT_SETTING]["config"] == PosCUDAConfig().to_dict() == PRESETS["default"].to_dict()
    assert settings["paper"]["config"] == PRESETS["paper"].to_dict()  # the literal paper stays available by name
    assert settings["cuda-whole"]["config"] == PRESETS["cuda"].to_dict()


@pytest.mark.slow
@pytest.mark.skipif(not FSDD.is_dir(), reason="needs ../shared/data/fsdd")
def test_default_setting_reproduces_the_committed_fsdd_numbers():
    from hf_poscuda.data import load_fsdd
    from hf_poscuda.evaluation import ModelSpec, TrainingRecipe, evaluate_protection

    report = json.loads(REPORT.read_text())
    (want,) = [r for r in key_runs() if r.get("public_test_key")]
    entry = evaluate_protection(
        load_fsdd(FSDD), PUBLIC_TEST_KEY, PosCUDAConfig(), [ModelSpec("logmel_cnn"), ModelSpec("raw_cnn")],
        TrainingRecipe(**report["recipe"]), name=DEFAULT_SETTING, quality_clips=50,
    )
    for model in ("logmel_cnn", "raw_cnn"):
        got = entry["models"][model]
        # same key, seed and recipe: only floating-point differences between machines remain (15 of 300 clips)
        assert abs(got["clean"]["test_accuracy"] - want["clean_accuracy"][model]) <= 0.05
        assert abs(got["protected"]["test_accuracy"] - want["accuracy"][model]) <= 0.05
        assert got["clean"]["test_accuracy"] - got["protected"]["test_accuracy"] >= 0.3  # protection had an effect
    assert abs(entry["quality"]["pesq"] - want["pesq"]) <= 0.05


ATTACK_REPORT = ROOT / "examples" / "results" / "fsdd_attacks" / "report.json"


def test_committed_robustness_results_cover_every_countermeasure_for_the_default():
    from hf_poscuda.evaluation import ATTACKS

    report = json.loads(ATTACK_REPORT.read_text())
    settings = {s["name"]: s for s in report["settings"]}
    default = settings[DEFAULT_SETTING]
    assert default["config"] == PosCUDAConfig().to_dict()  # the README's robustness table is the shipped default's
    assert default["key_id"] == PUBLIC_TEST_KEY.key_id
    assert set(default["attacks"]) == set(ATTACKS)
    for name, result in default["attacks"].items():
        expected = {m for m in ("logmel_cnn", "raw_cnn") if ATTACKS[name].applies_to(m)}
        assert set(result["models"]) == expected, name
        assert result["kind"] == ATTACKS[name].kind
    # the no-countermeasure run is the recorded public-key run of the slow test, repeated (same key, seed, recipe)
    (public,) = [r for r in key_runs() if r.get("public_test_key")]
    for model, run in default["models"].items():
        assert abs(run["protected"]["test_accuracy"] - public["accuracy"][model]) <= 0.05
    # every hardening candidate is compared with the default under the same countermeasures
    for name, entry in settings.items():
        assert entry["key_id"] == PUBLIC_TEST_KEY.key_id and set(entry["attacks"]) <= set(default["attacks"]), name
