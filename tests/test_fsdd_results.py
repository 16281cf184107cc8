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
# Measured spread of protected-train accuracy across 3 keys (examples/results/fsdd/key_noise.json plus the sweep
# key): log-mel 38.7-46.7 %, raw 47.7-59.3 %. A fresh key may land anywhere in about that range.
KEY_NOISE = 0.15


def committed() -> dict:
    return {s["name"]: s for s in json.loads(REPORT.read_text())["settings"]}


def test_key_noise_record_is_within_the_allowed_spread():
    expected = committed()[DEFAULT_SETTING]["models"]
    runs = json.loads((REPORT.parent / "key_noise.json").read_text())
    assert runs and all(r["name"] == DEFAULT_SETTING for r in runs)
    for run in runs:
        for model, acc in run["accuracy"].items():
            assert abs(acc - expected[model]["protected"]["test_accuracy"]) <= KEY_NOISE


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
    expected = committed()[DEFAULT_SETTING]
    entry = evaluate_protection(
        load_fsdd(FSDD), PosCUDAKey.generate(), PosCUDAConfig(), [ModelSpec("logmel_cnn"), ModelSpec("raw_cnn")],
        TrainingRecipe(**report["recipe"]), name=DEFAULT_SETTING, quality_clips=50,
    )
    for model in ("logmel_cnn", "raw_cnn"):
        got, want = entry["models"][model], expected["models"][model]
        assert abs(got["clean"]["test_accuracy"] - want["clean"]["test_accuracy"]) <= 0.05
        # a fresh key draws other filters and positions: allow the key-to-key spread measured in the README
        assert abs(got["protected"]["test_accuracy"] - want["protected"]["test_accuracy"]) <= KEY_NOISE
    assert abs(entry["quality"]["pesq"] - expected["quality"]["pesq"]) <= 0.3
