from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
from datasets import DatasetDict

from hf_poscuda import PosCUDAConfig
from hf_poscuda.evaluation import (
    AudioArrays,
    ModelSpec,
    TrainingRecipe,
    accuracy,
    build_hf_model,
    report_markdown,
    run_evaluation,
    setting_summary_markdown,
)
from hf_poscuda.evaluation.experiment import train_model
from hf_poscuda.evaluation.models import check_hub_reachable
from tests.conftest import make_dataset

SR = 8000
FREQS = (300.0, 700.0, 1500.0, 3000.0)


def tones(n_per_class: int, seed: int, informative: bool = True, cue: bool = False, gated: bool = False) -> AudioArrays:
    """Class c = a tone at FREQS[c] (if informative; else a random one of them), plus noise.

    With ``cue``, the label is also written as an obvious synthetic cue: a loud click train whose rate is the class.
    With ``gated``, the tone sounds in the first half of the clip only (a cue that is not static over the clip).
    """
    rng = np.random.default_rng(seed)
    t = np.arange(int(0.5 * SR)) / SR
    audio, labels = [], []
    for c in range(len(FREQS)):
        for _ in range(n_per_class):
            f = FREQS[c] if informative else FREQS[rng.integers(len(FREQS))]
            x = 0.3 * rng.uniform(0.5, 1.0) * np.sin(2 * np.pi * f * t + rng.uniform(0, 6))
            if gated:
                x[len(t) // 2 :] = 0.0
            x += 0.05 * rng.standard_normal(len(t))
            if cue:
                x[:: 40 * (c + 1)] += 0.9
            audio.append(x.astype(np.float32))
            labels.append(c)
    return AudioArrays(np.stack(audio), np.asarray(labels), SR)


def test_accuracy_metric_loads_offline_from_the_package():
    assert accuracy(np.array([0, 1, 2, 0]), np.array([0, 1, 1, 0])) == 0.75
    assert math.isnan(accuracy(np.array([]), np.array([])))


@pytest.mark.parametrize("model", ["logmel_cnn", "raw_cnn", "xvector"])
def test_control_evaluation_detects_learning(model):
    # the x-vector divides out what is static over a clip (a steady tone too): its tones sound in half the clip
    gated = model == "xvector"
    recipe = TrainingRecipe(epochs=8, batch_size=16, eval_every_epoch=False)
    result = train_model(ModelSpec(model), tones(20, 0, gated=gated), tones(10, 1, gated=gated), recipe, "control")
    assert result.test_accuracy >= 0.9 and result.train_accuracy >= 0.9
    assert result.steps == 8 * 5 and len(result.curve) == 8


def test_xvector_divides_out_a_static_filter_the_log_mel_cnn_does_not():
    """The x-vector TDNN removes each mel band's mean over the clip, as speaker-recognition front ends do: a gain
    that is constant over the clip in every band (a static class filter, to the front end's resolution) leaves its
    output unchanged. The log-mel CNN normalises the whole spectrogram only, so the same gains change its output."""
    import torch

    from hf_poscuda.evaluation import build_cnn

    class Shifted(torch.nn.Module):
        def __init__(self, frontend: torch.nn.Module) -> None:
            super().__init__()
            self.frontend = frontend

        def forward(self, audio: torch.Tensor) -> torch.Tensor:
            return self.frontend(audio) + torch.linspace(-3.0, 3.0, 40)[None, :, None]  # ±3 nepers per band

    audio = torch.from_numpy(tones(2, 0).audio)
    for name, invariant in (("xvector", True), ("logmel_cnn", False)):
        torch.manual_seed(0)
        model = build_cnn(name, 4, SR).eval()
        with torch.no_grad():
            plain = model(audio)
            model.logmel = Shifted(model.logmel)
            shifted = model(audio)
        assert torch.allclose(plain, shifted, atol=1e-4) is invariant, name


def test_control_evaluation_detects_a_shortcut():
    """Labels only in a synthetic cue during training: learned (train accuracy high), useless on clean test."""
    recipe = TrainingRecipe(epochs=8, batch_size=16, eval_every_epoch=False)
    cued = tones(20, 0, informative=False, cue=True)
    result = train_model(ModelSpec("raw_cnn"), cued, tones(10, 1), recipe, "shortcut")
    assert result.train_accuracy >= 0.75  # the cue is learned (chance is 0.25)...
    assert result.test_accuracy <= 0.45  # ...and is useless on clean test audio


@pytest.mark.parametrize("name", ["wav2vec2", "ast"])
def test_tiny_transformers_train_with_trainer(name):
    recipe = TrainingRecipe(hf_epochs=2, batch_size=8, hf_learning_rate=1e-3)
    result = train_model(ModelSpec(name, preset="tiny"), tones(4, 0), tones(2, 1), recipe, name)
    assert result.steps == 2 * 2  # 16 clips / batch 8, two epochs
    assert 0.0 <= result.test_accuracy <= 1.0 and 0.0 <= result.train_accuracy <= 1.0
    assert [p["epoch"] for p in result.curve] == [1.0, 2.0]


@pytest.mark.parametrize("name", ["wav2vec2", "ast"])
def test_local_checkpoint_is_fine_tuned_with_a_new_head(tmp_path, name):
    model, extractor = build_hf_model(name, 3, SR, preset="tiny")
    model.save_pretrained(tmp_path)
    extractor.save_pretrained(tmp_path)
    loaded, loaded_extractor = build_hf_model(name, 4, SR, checkpoint=str(tmp_path))
    assert loaded.config.num_labels == 4 and loaded_extractor.sampling_rate == SR
    recipe = TrainingRecipe(hf_epochs=1, batch_size=8, eval_every_epoch=False)
    result = train_model(ModelSpec(name, checkpoint=str(tmp_path)), tones(2, 0), tones(1, 1), recipe, "ckpt")
    assert result.steps == 1


def test_unreachable_hub_fails_fast_with_advice(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # closed port: refused at once
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    start = time.perf_counter()
    with pytest.raises(OSError, match="local checkpoint folder.*HF_HUB_OFFLINE=1"):
        build_hf_model("wav2vec2", 10, SR, checkpoint="facebook/wav2vec2-base")
    assert time.perf_counter() - start < 10
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    check_hub_reachable("facebook/wav2vec2-base")  # offline mode: no probe, transformers uses the cache


def test_model_spec_parsing_and_validation():
    assert ModelSpec.parse("ast-small") == ModelSpec("ast", preset="small")
    # a bare name means the size the README measured, not the test-only tiny one
    assert ModelSpec.parse("ast").label == "ast-small" and ModelSpec.parse("wav2vec2-tiny").label == "wav2vec2-tiny"
    assert ModelSpec.parse("wav2vec2:./ckpt") == ModelSpec("wav2vec2", checkpoint="./ckpt")
    assert ModelSpec.parse("logmel-cnn").name == "logmel_cnn"
    with pytest.raises(ValueError, match="Unknown model"):
        ModelSpec("resnet")
    with pytest.raises(ValueError, match="no checkpoint"):
        ModelSpec("raw_cnn", checkpoint="x")


def test_run_evaluation_report_schema_and_files(tmp_path, key):
    data = DatasetDict({"train": make_dataset(24, min_len=0.5), "test": make_dataset(8, seed=1, min_len=0.5)})
    recipe = TrainingRecipe(epochs=2, batch_size=8, clip_seconds=0.5)
    settings = {"default": PosCUDAConfig(), "cuda": PosCUDAConfig.from_preset("cuda")}
    report = run_evaluation(
        data, key, settings, [ModelSpec("raw_cnn")], recipe, dataset_name="synthetic", output=str(tmp_path),
        quality_clips=5,
    )
    loaded = json.loads((tmp_path / "report.json").read_text())
    assert loaded["schema_version"] == 1 and loaded["recipe"]["seed"] == 0
    assert set(loaded["versions"]) >= {"hf_poscuda", "torch", "transformers", "datasets"}
    assert [s["name"] for s in loaded["settings"]] == ["default", "cuda"]
    entry = loaded["settings"][1]
    assert entry["key_id"] == key.key_id and entry["config"]["placement"] == "whole"
    assert entry["train_clips"] == 24 and entry["test_clips"] == 8 and entry["sampling_rate"] == 8000
    assert entry["num_classes"] == len(set(data["train"]["label"]) | set(data["test"]["label"]))
    assert {"pesq", "stoi", "snr_db", "segmental_snr_db", "lsd_db", "snr_db_overall"} <= set(entry["quality"])
    run = entry["models"]["raw_cnn"]
    for kind in ("clean", "protected"):
        assert set(run[kind]) == {"test_accuracy", "train_accuracy", "steps", "curve", "peak_test_accuracy"}
        assert len(run[kind]["curve"]) == 2
        # what an adversary who stops early gets: the best clean-test accuracy over the epochs
        assert run[kind]["peak_test_accuracy"] == max(p["test_accuracy"] for p in run[kind]["curve"])
    assert run["clean"] == loaded["settings"][0]["models"]["raw_cnn"]["clean"]  # clean run shared, same recipe
    assert run["clean"]["steps"] == run["protected"]["steps"]
    assert bytes(range(32)).hex() not in (tmp_path / "report.json").read_text()
    md = (tmp_path / "report.md").read_text()
    assert md == report_markdown(report) and "| cuda |" in md and "clean training" in md
    for png in ("accuracy_vs_pesq.png", "curves.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
    summary = setting_summary_markdown(report, "cuda", goal_accuracy=-1.0)  # an impossible goal: never "held"
    row = summary.split("| raw_cnn |")[1].splitlines()[0]
    weak = run["clean"]["test_accuracy"] < 2 / entry["num_classes"]  # 2 epochs on 24 clips may learn nothing
    assert ("no evidence" in row) == weak and ("**no**" in row) == (not weak) and "yes" not in row
    with pytest.raises(ValueError, match="not in the report"):
        setting_summary_markdown(report, "nope")


def test_evaluation_refuses_missing_split(key):
    with pytest.raises(ValueError, match="Split 'test' not found"):
        run_evaluation(DatasetDict({"train": make_dataset(4)}), key, {"d": PosCUDAConfig()}, [ModelSpec("raw_cnn")])
