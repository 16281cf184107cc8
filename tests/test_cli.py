from __future__ import annotations

import json
import math
import stat

import pytest
from datasets import DatasetDict, load_from_disk
from typer.testing import CliRunner

from hf_poscuda import PosCUDAKey
from hf_poscuda.cli import app
from tests.conftest import make_dataset

runner = CliRunner()


@pytest.fixture
def key_file(tmp_path):
    path = tmp_path / "my.key"
    result = runner.invoke(app, ["keygen", str(path)])
    assert result.exit_code == 0, result.output
    return path


def test_keygen_creates_private_key_and_prints_only_the_id(key_file):
    key = PosCUDAKey.load(key_file)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    result = runner.invoke(app, ["keygen", str(key_file)])
    assert result.exit_code == 1 and "already exists" in result.output and "Traceback" not in result.output
    assert key._secret.hex() not in result.output


def test_protect_saved_dataset(tmp_path, key_file):
    DatasetDict({"train": make_dataset(10), "test": make_dataset(4)}).save_to_disk(str(tmp_path / "src"))
    out = tmp_path / "out"
    result = runner.invoke(app, ["protect", str(tmp_path / "src"), str(out), "--key", str(key_file), "--batch-size", "3"])
    assert result.exit_code == 0, result.output
    assert "[train] clips: 10 | classes: 4" in result.output and "[test] clips: 4" in result.output  # all splits
    protected = load_from_disk(str(out))
    assert len(protected["train"]) == 10 and protected["train"].features == make_dataset(1).features
    summary = json.loads((out / "poscuda_summary.json").read_text())
    assert summary["train"]["key_id"] == PosCUDAKey.load(key_file).key_id
    # measured, and the audio did change; it can be below 0 dB for some keys (the 12 dB boosts), so no sign check
    assert math.isfinite(summary["train"]["snr_db"]) and summary["train"]["snr_db"] < 20
    assert summary["test"]["clips"] == 4

    one = tmp_path / "one"
    result = runner.invoke(app, ["protect", str(tmp_path / "src"), str(one), "-k", str(key_file), "--split", "test"])
    assert result.exit_code == 0, result.output
    assert list(load_from_disk(str(one))) == ["test"]
    secret = PosCUDAKey.load(key_file)._secret.hex()
    for f in out.rglob("*"):
        if f.is_file():
            assert secret.encode() not in f.read_bytes()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--split", "validation"], "Split(s) ['validation'] not found"),
        (["--label-column", "digit"], "Column 'digit' not found"),
        (["--preset", "nope"], "Unknown preset"),
    ],
)
def test_protect_user_errors_are_one_line(tmp_path, key_file, extra, message):
    DatasetDict({"train": make_dataset(4)}).save_to_disk(str(tmp_path / "src"))
    result = runner.invoke(app, ["protect", str(tmp_path / "src"), str(tmp_path / "o"), "-k", str(key_file), *extra])
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()


def test_protect_empty_split_is_an_error(tmp_path, key_file, monkeypatch):
    DatasetDict({"train": make_dataset(4).select([])}).save_to_disk(str(tmp_path / "src"))
    result = runner.invoke(app, ["protect", str(tmp_path / "src"), str(tmp_path / "o"), "-k", str(key_file)])
    assert result.exit_code == 1 and "empty" in result.output and "Traceback" not in result.output
    # an empty split that loads fine (e.g. from the Hub) is refused by protect_dataset itself
    monkeypatch.setattr("hf_poscuda.sources.load_audio_dataset", lambda source, **kw: make_dataset(4).select([]))
    result = runner.invoke(app, ["protect", "user/whatever", str(tmp_path / "o"), "-k", str(key_file)])
    assert result.exit_code == 1 and "The split is empty" in result.output
    assert not (tmp_path / "o").exists()


def test_protect_refuses_public_key_file(tmp_path, key_file):
    key_file.chmod(0o644)
    DatasetDict({"train": make_dataset(4)}).save_to_disk(str(tmp_path / "src"))
    result = runner.invoke(app, ["protect", str(tmp_path / "src"), str(tmp_path / "o"), "-k", str(key_file)])
    assert result.exit_code == 1 and "chmod 600" in result.output


def test_demo_on_embedded_dataset(tmp_path):
    out = tmp_path / "demo"
    result = runner.invoke(app, ["demo", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert "[train] clips: 240 | classes: 10" in result.output and "[test] clips: 120" in result.output
    assert stat.S_IMODE((tmp_path / "demo.key").stat().st_mode) == 0o600
    loaded = load_from_disk(str(out))
    assert loaded["train"].num_rows == 240 and loaded["train"].features["label"].names[3] == "3"


def test_protect_refuses_a_key_inside_the_output_folder(tmp_path):
    DatasetDict({"train": make_dataset(4)}).save_to_disk(str(tmp_path / "src"))
    (tmp_path / "out").mkdir()
    PosCUDAKey.generate().save(tmp_path / "out" / "k.key")
    result = runner.invoke(app, ["protect", str(tmp_path / "src"), str(tmp_path / "out"), "-k", str(tmp_path / "out" / "k.key")])
    assert result.exit_code == 1 and "lies inside" in result.output
    assert (tmp_path / "out" / "k.key").is_file()


def test_keygen_force_replaces_a_key(tmp_path):
    path = tmp_path / "k.key"
    assert runner.invoke(app, ["keygen", str(path)]).exit_code == 0
    first = PosCUDAKey.load(path)
    assert runner.invoke(app, ["keygen", str(path)]).exit_code == 1
    assert runner.invoke(app, ["keygen", str(path), "--force"]).exit_code == 0
    assert PosCUDAKey.load(path) != first


def test_knob_overrides_reach_the_config(tmp_path, key_file):
    DatasetDict({"train": make_dataset(4)}).save_to_disk(str(tmp_path / "src"))
    out = tmp_path / "o"
    result = runner.invoke(app, ["protect", str(tmp_path / "src"), str(out), "-k", str(key_file), "--preset", "cuda",
                                 "--set", "kernel_size=33"])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "poscuda_summary.json").read_text())["train"]["config"]
    assert config["kernel_size"] == 33 and config["identity_tap"] is True  # override on top of the preset
    result = runner.invoke(app, ["protect", str(tmp_path / "src"), str(tmp_path / "o2"), "-k", str(key_file),
                                 "--set", "kernel_size=4"])
    assert result.exit_code == 1 and "kernel_size must be an odd int" in result.output
    for bad, message in (("kernel=3", "Unknown knob 'kernel'"), ("kernel_size", "knob=value"),
                         ("kernel_size=big", "takes a int value")):
        result = runner.invoke(app, ["protect", str(tmp_path / "src"), str(tmp_path / "o3"), "-k", str(key_file),
                                     "--set", bad])
        assert result.exit_code == 1 and message in result.output, bad
    result = runner.invoke(app, ["protect", str(tmp_path / "src"), str(tmp_path / "o4"), "-k", str(key_file),
                                 "--set", "filter_family=barcode", "--set", "placement=segments",
                                 "--set", "filters_per_class=2", "--set", "vary_cuts=2", "--set", "segment_seconds=none"])
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "o4" / "poscuda_summary.json").read_text())["train"]["config"]
    assert config["placement"] == "segments" and config["vary_cuts"] == 2 and config["segment_seconds"] is None


def test_evaluate_with_countermeasures(tmp_path):
    src = tmp_path / "src"
    DatasetDict({"train": make_dataset(16, num_classes=2), "test": make_dataset(6, num_classes=2, seed=2)}).save_to_disk(
        str(src)
    )
    out = tmp_path / "eval"
    args = ["evaluate", str(src), "-o", str(out), "--models", "raw_cnn", "--epochs", "1", "--quality-clips", "2"]
    result = runner.invoke(app, [*args, "--attack", "nope"])
    assert result.exit_code == 1 and "Unknown countermeasure 'nope'" in result.output
    result = runner.invoke(app, [*args, "--attack", "lowpass", "--attack", "noise-20db"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["dataset"] == "src"  # a local folder is named, never its full path
    assert set(report["settings"][0]["attacks"]) == {"lowpass", "noise-20db"}
    assert "protected + `lowpass`" in (out / "report.md").read_text()
