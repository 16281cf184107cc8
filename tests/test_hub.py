"""Pushing to the Hub, against the local Hub-compatible server of tests/hub_server.py (real datasets and
huggingface_hub clients; HF_ENDPOINT points there, see conftest.py)."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest
import soundfile as sf
import yaml
from datasets import Dataset, DatasetDict, load_dataset
from typer.testing import CliRunner

from hf_poscuda import PosCUDAKey
from hf_poscuda.cli import app
from hf_poscuda.hub import PROTECTION_FILE, HubAuthError, RetryPolicy, push_protected
from hf_poscuda.key import SecretLeakError
from hf_poscuda.protect import protect_splits
from tests.conftest import make_dataset

runner = CliRunner()
FAST = RetryPolicy(initial_delay=0.01)


@pytest.fixture
def key_file(tmp_path):
    path = tmp_path / "keys" / "my.key"
    path.parent.mkdir()
    result = runner.invoke(app, ["keygen", str(path)])
    assert result.exit_code == 0, result.output
    return path


@pytest.fixture
def source(tmp_path):
    folder = tmp_path / "my_dataset"
    DatasetDict({"train": make_dataset(12), "test": make_dataset(5, seed=1)}).save_to_disk(str(folder))
    return folder


def front_matter(card: str) -> dict:
    match = re.match(r"^---\n(.*?)\n---\n", card, re.S)
    assert match, "card has no YAML header"
    return yaml.safe_load(match.group(1))


def audio_arrays(ds: Dataset) -> list[np.ndarray]:
    out = []
    for item in ds.cast_column("audio", ds.features["audio"].__class__(decode=False))["audio"]:
        data, _ = sf.read(io.BytesIO(item["bytes"]), dtype="float32", always_2d=True)
        out.append(data)
    return out


def push_cli(*args: str):
    return runner.invoke(app, ["push", *args])


def test_keygen_then_push_round_trips_protected_audio(hub, key_file, source):
    result = push_cli(str(source), "alice/my-dataset-protected", "--key", str(key_file), "--license", "cc-by-4.0")
    assert result.exit_code == 0, result.output
    assert "Pushed train, test" in result.output

    key = PosCUDAKey.load(key_file)
    expected, _ = protect_splits(DatasetDict.load_from_disk(str(source)), key)
    pulled = load_dataset("alice/my-dataset-protected")
    assert set(pulled) == {"train", "test"}
    original = DatasetDict.load_from_disk(str(source))
    for split in ("train", "test"):
        assert pulled[split]["id"] == original[split]["id"]  # order and other columns kept
        assert pulled[split]["label"] == original[split]["label"]
        got, want, before = audio_arrays(pulled[split]), audio_arrays(expected[split]), audio_arrays(original[split])
        assert all(np.array_equal(g, w) for g, w in zip(got, want, strict=True))  # sample for sample
        assert not any(np.allclose(g, b) for g, b in zip(got, before, strict=True))  # and it is protected

    files = hub.files("alice/my-dataset-protected")
    assert {"README.md", PROTECTION_FILE} <= set(files)
    meta = front_matter(files["README.md"].decode())
    assert meta["license"] == "cc-by-4.0"
    assert meta["task_categories"] == ["audio-classification"]
    assert {"unlearnable", "poscuda", "privacy", "audio"} <= set(meta["tags"])
    assert meta["pretty_name"] == "my_dataset (PosCUDA-protected)"
    assert meta["size_categories"] == ["n<1K"]
    assert {s["name"] for s in meta["dataset_info"]["splits"]} == {"train", "test"}  # push_to_hub's, kept
    assert meta["configs"][0]["config_name"] == "default"
    card = files["README.md"].decode()
    assert key.key_id in card and "Not measured for this dataset" in card
    record = json.loads(files[PROTECTION_FILE])
    assert record["key_id"] == key.key_id and set(record["splits"]["default"]) == {"train", "test"}


def test_no_trace_of_the_secret_anywhere_on_the_hub(hub, key_file, source, caplog):
    import logging

    caplog.set_level(logging.DEBUG)
    outputs = [push_cli(str(source), "alice/p", "-k", str(key_file), "--license", "mit", "--quality-clips", "3"),
               push_cli(str(source), "alice/p", "-k", str(key_file), "--split", "train")]
    assert all(r.exit_code == 0 for r in outputs)
    key = PosCUDAKey.load(key_file)
    for text in [caplog.text, *(r.output for r in outputs)]:  # logs (DEBUG) and console output
        assert not key.appears_in(text.encode())
    stored = hub.all_stored_bytes()
    assert len(stored) > 5
    for name, data in stored:
        for form in key.secret_forms():
            assert form not in data, f"secret found in {name}"
    # the scan itself works: the same check finds the secret where it is
    assert key.appears_in(b"xx" + key._secret.hex().encode() + b"yy")


def test_a_secret_in_the_data_is_refused_before_anything_is_uploaded(hub, key):
    ds = make_dataset(4).add_column("note", [key._secret.hex()] + ["ok"] * 3)
    protected, summaries = protect_splits(ds, key)
    with pytest.raises(SecretLeakError, match="column 'note'") as info:
        push_protected(protected, summaries, "alice/leak", key, license="mit", retry=FAST)
    assert key._secret.hex() not in str(info.value)
    assert hub.repos == {}


def test_second_split_keeps_the_first_and_repush_updates_in_place(hub, key_file, source):
    assert push_cli(str(source), "alice/p", "-k", str(key_file), "--license", "mit", "--split", "train").exit_code == 0
    first = hub.files("alice/p")
    result = push_cli(str(source), "alice/p", "-k", str(key_file), "--split", "test")
    assert result.exit_code == 0, result.output
    files = hub.files("alice/p")
    assert first["data/train-00000-of-00001.parquet"] == files["data/train-00000-of-00001.parquet"]
    assert "data/test-00000-of-00001.parquet" in files
    card = files["README.md"].decode()
    assert "| `train` | 12 |" in card and "| `test` | 5 |" in card  # the card describes both splits
    assert front_matter(card)["license"] == "mit"  # kept from the first push
    assert set(load_dataset("alice/p")) == {"train", "test"}

    commits = len(hub.repo("alice/p").commits)
    assert push_cli(str(source), "alice/p", "-k", str(key_file), "--split", "test").exit_code == 0
    again = hub.files("alice/p")
    assert sorted(again) == sorted(files)  # same files, updated in place, no duplicates
    assert again["data/test-00000-of-00001.parquet"] == files["data/test-00000-of-00001.parquet"]  # deterministic
    assert len(hub.repo("alice/p").commits) > commits


def test_private_repo(hub, key_file, source):
    assert push_cli(str(source), "alice/secret-ds", "-k", str(key_file), "--license", "mit", "--private").exit_code == 0
    assert hub.repo("alice/secret-ds").private is True
    assert push_cli(str(source), "alice/open-ds", "-k", str(key_file), "--license", "mit").exit_code == 0
    assert hub.repo("alice/open-ds").private is False


def test_transient_errors_are_retried(hub, key, caplog):
    protected, summaries = protect_splits(make_dataset(6), key)
    # the commit POST, which huggingface_hub does not retry itself: first a 500, then a dropped connection
    hub.fail_next("POST", r"/commit/main$", status=500)
    hub.fail_next("POST", r"/commit/main$", status=None)
    result = push_protected(protected, summaries, "alice/flaky", key, license="mit", retry=FAST)
    commits = [status for method, path, status in hub.requests if path == "/api/datasets/alice/flaky/commit/main"]
    assert commits[:3] == [500, 0, 200]
    assert result.pushed == ["train"] and "data/train-00000-of-00001.parquet" in hub.files("alice/flaky")
    assert "retry 1/4" in caplog.text and "retry 2/4" in caplog.text


def test_persistent_server_errors_give_up_with_a_clear_error(hub, key):
    from hf_poscuda.hub import HubPushError

    protected, summaries = protect_splits(make_dataset(4), key)
    hub.fail_next("POST", r"/commit/main$", status=503, times=100)
    with pytest.raises(HubPushError, match="failed after 3 tries"):
        push_protected(protected, summaries, "alice/down", key, license="mit", retry=RetryPolicy(3, 0.0, 0.0))


def test_bad_token_says_how_to_log_in(hub, key_file, source):
    result = push_cli(str(source), "alice/p", "-k", str(key_file), "--license", "mit", "--token", "hf_wrong")
    assert result.exit_code == 1
    assert "401" in result.output and "hf auth login" in result.output and "HF_TOKEN" in result.output
    assert "Traceback" not in result.output and "hf_wrong" not in result.output
    assert result.output.strip().count("\n") == 0 or "Error:" in result.output.splitlines()[-1]


def test_pushing_to_someone_elses_namespace_is_a_clear_error(hub, key):
    protected, summaries = protect_splits(make_dataset(4), key)
    with pytest.raises(HubAuthError, match="403|write access"):
        push_protected(protected, summaries, "bob/p", key, license="mit", retry=FAST)


def test_key_inside_the_source_folder_is_refused(hub, tmp_path, source):
    key_path = source / "my.key"
    PosCUDAKey.generate().save(key_path)
    result = push_cli(str(source), "alice/p", "-k", str(key_path), "--license", "mit")
    assert result.exit_code == 1 and "lies inside" in result.output
    assert hub.repos == {}


def test_unknown_license_is_asked_for_before_uploading(hub, key_file, source):
    result = push_cli(str(source), "alice/p", "-k", str(key_file))
    assert result.exit_code == 1 and "--license" in result.output
    assert hub.repos == {}


def test_license_and_source_are_carried_from_a_hub_source(hub, key_file):
    from huggingface_hub import DatasetCard, DatasetCardData

    DatasetDict({"train": make_dataset(6)}).push_to_hub("alice/raw-speech")
    card = DatasetCard.from_template(DatasetCardData(license="cc-by-sa-4.0", pretty_name="Raw speech"))
    card.push_to_hub("alice/raw-speech", repo_type="dataset")
    result = push_cli("alice/raw-speech", "alice/raw-speech-protected", "-k", str(key_file))
    assert result.exit_code == 0, result.output
    meta = front_matter(hub.files("alice/raw-speech-protected")["README.md"].decode())
    assert meta["license"] == "cc-by-sa-4.0" and meta["source_datasets"] == ["alice/raw-speech"]
    assert "https://huggingface.co/datasets/alice/raw-speech" in hub.files("alice/raw-speech-protected")["README.md"].decode()


def test_another_key_cannot_push_into_the_same_repo(hub, key, other_key):
    protected, summaries = protect_splits(make_dataset(4), key)
    push_protected(protected, summaries, "alice/p", key, license="mit", retry=FAST)
    protected, summaries = protect_splits(make_dataset(4), other_key, splits=None)
    with pytest.raises(ValueError, match="same key"):
        push_protected(protected, summaries, "alice/p", other_key, retry=FAST)


def _report(config: dict, key_id: str, attacks: bool = False) -> dict:
    run = lambda acc, peak=None: {"test_accuracy": acc, "train_accuracy": 1.0, "steps": 10, "curve": [],  # noqa: E731
                                  **({"peak_test_accuracy": peak} if peak is not None else {})}
    entry = {
        "name": "default", "config": config, "key_id": key_id, "train_clips": 12, "test_clips": 5,
        "quality": {"pesq": 4.2, "snr_db_overall": 1.5},
        "models": {"logmel_cnn": {"clean": run(0.9), "protected": run(0.35)},
                   "raw_cnn": {"clean": run(0.8), "protected": run(0.15, 0.18)}},
    }
    if attacks:
        entry["attacks"] = {"mp3": {"kind": "preprocess", "description": "MP3 re-encoding at 32 kbit/s",
                                    "quality": {"pesq": 3.9}, "models": {"logmel_cnn": run(0.5), "raw_cnn": run(0.2)}}}
    return {"schema_version": 1, "dataset": "tiny", "recipe": {"seed": 0}, "settings": [entry]}


def test_eval_report_goes_on_the_card_and_must_match_the_parameters(hub, key_file, source, tmp_path):
    from hf_poscuda import PosCUDAConfig

    key = PosCUDAKey.load(key_file)
    report = tmp_path / "report.json"
    report.write_text(json.dumps(_report(PosCUDAConfig.from_preset("paper").to_dict(), key.key_id)))
    result = push_cli(str(source), "alice/p", "-k", str(key_file), "--license", "mit", "--eval-report", str(report))
    assert result.exit_code == 1 and "no setting with the parameters" in result.output
    assert hub.repos == {}

    report.write_text(json.dumps(_report(PosCUDAConfig().to_dict(), key.key_id, attacks=True)))
    result = push_cli(str(source), "alice/p", "-k", str(key_file), "--license", "mit", "--eval-report", str(report))
    assert result.exit_code == 0, result.output
    card = hub.files("alice/p")["README.md"].decode()
    assert "| logmel_cnn | 90.0 % | 35.0 % | – | **no** |" in card  # a report without curves: no best epoch
    assert "| raw_cnn | 80.0 % | 15.0 % | 18.0 % | yes |" in card
    assert "did not hold for every model" in card
    assert "| `mp3`: MP3 re-encoding at 32 kbit/s | preprocess | 3.90 | 50.0 % (+15.0) | 20.0 % (+5.0) |" in card
    # the public chart: accuracies only, uploaded next to the card and shown in it
    from PIL import Image

    from hf_poscuda.figures import FIGURE_FILE, evaluation_chart

    chart = hub.files("alice/p")[FIGURE_FILE]
    assert f"]({FIGURE_FILE})" in card and Image.open(io.BytesIO(chart)).format == "PNG"
    entry = _report(PosCUDAConfig().to_dict(), key.key_id, attacks=True)["settings"][0]
    assert chart == evaluation_chart(entry)  # deterministic: a re-push uploads identical bytes
    assert not key.appears_in(chart)
    # a later push without a report keeps the measured results on the card
    assert push_cli(str(source), "alice/p", "-k", str(key_file), "--split", "test").exit_code == 0
    assert "| raw_cnn | 80.0 % | 15.0 % | 18.0 % | yes |" in hub.files("alice/p")["README.md"].decode()


def test_card_command_previews_the_card(tmp_path, key_file, source):
    out = tmp_path / "README.md"
    result = runner.invoke(app, ["card", str(source), "-k", str(key_file), "--license", "mit", "-o", str(out),
                                 "--repo-id", "alice/p"])
    assert result.exit_code == 0, result.output
    card = out.read_text()
    meta = front_matter(card)
    assert meta["license"] == "mit" and "dataset_info" not in meta
    row = re.search(r"\| `train` \| 12 \| 4 \| (\S+) \| (\S+) \| (\S+) \| (\S+) \| (\S+) \|", card)
    assert row, card
    snr, seg, lsd, pesq = (float(v) for v in row.groups()[:4])
    assert -5 < snr < 60 and 0 < lsd < 30 and 1.0 <= pesq <= 4.6  # real measured numbers
    assert 'load_dataset("alice/p")' in card


def test_push_to_a_branch_leaves_main_alone(hub, key_file, source):
    assert push_cli(str(source), "alice/p", "-k", str(key_file), "--license", "mit", "--split", "train").exit_code == 0
    main_before = hub.files("alice/p")
    result = push_cli(str(source), "alice/p", "-k", str(key_file), "--split", "test", "--revision", "dev",
                      "--commit-message", "protect test split")
    assert result.exit_code == 0, result.output
    assert hub.files("alice/p") == main_before
    dev = hub.files("alice/p", revision="dev")
    assert "data/test-00000-of-00001.parquet" in dev and "data/train-00000-of-00001.parquet" in dev
    assert "| `test` | 5 |" in dev["README.md"].decode()
    messages = [c.summary for c in hub.repo("alice/p").commits.values()]
    assert "protect test split" in messages
    assert set(load_dataset("alice/p", revision="dev")) == {"train", "test"}


def test_a_secret_in_the_card_text_stops_the_push_before_any_upload(hub, key):
    protected, summaries = protect_splits(make_dataset(4), key)
    with pytest.raises(SecretLeakError):
        push_protected(protected, summaries, "alice/p", key, license="mit", pretty_name=f"x {key._secret.hex()}",
                       retry=FAST)
    assert hub.repos == {}


def test_dry_run_uploads_nothing_and_shows_the_plan(hub, key_file, source, tmp_path):
    out = tmp_path / "plan"
    result = push_cli(str(source), "alice/dry", "-k", str(key_file), "--license", "mit", "--dry-run",
                      "--dry-run-dir", str(out), "--quality-clips", "2")
    assert result.exit_code == 0, result.output
    writes = [r for r in hub.requests if r[0] in ("POST", "PUT", "DELETE", "PATCH")]
    assert writes == [] and hub.repos == {}  # the server's request log: reads only
    assert "nothing was uploaded" in result.output and "would create alice/dry" in result.output
    for path in ("data/train-00000-of-00001.parquet", "data/test-00000-of-00001.parquet", "README.md",
                 PROTECTION_FILE, "commit: Upload PosCUDA-protected split train", "commit: Update the PosCUDA"):
        assert path in result.output
    key = PosCUDAKey.load(key_file)
    card = (out / "README.md").read_text()
    assert key.key_id in card and front_matter(card)["license"] == "mit"
    assert json.loads((out / PROTECTION_FILE).read_text())["key_id"] == key.key_id
    assert not key.appears_in(result.output.encode()) and not key.appears_in(card.encode())
    # the same push for real then publishes that card body (plus push_to_hub's dataset_info in the YAML)
    real = push_cli(str(source), "alice/dry", "-k", str(key_file), "--license", "mit", "--quality-clips", "2")
    assert real.exit_code == 0, real.output
    published = hub.files("alice/dry")["README.md"].decode()
    assert published.split("\n---\n", 1)[1] == card.split("\n---\n", 1)[1]


def test_dry_run_still_refuses_what_push_refuses(hub, key):
    ds = make_dataset(4).add_column("note", [key._secret.hex()] + ["ok"] * 3)
    protected, summaries = protect_splits(ds, key)
    with pytest.raises(SecretLeakError):
        push_protected(protected, summaries, "alice/leak", key, license="mit", retry=FAST, dry_run=True)
    clean, clean_summaries = protect_splits(make_dataset(4), key)
    with pytest.raises(ValueError, match="needs a license"):
        push_protected(clean, clean_summaries, "alice/nolicense", key, retry=FAST, dry_run=True)
    assert hub.repos == {}


def test_checkpoint_reachability_asks_through_huggingface_hub(hub):
    """The probe uses HfApi (its endpoint, session, proxies and token), not a raw request of its own."""
    from hf_poscuda.evaluation.models import check_hub_reachable

    check_hub_reachable("nobody/missing-model")  # the Hub answers (404): reachable; transformers reports the 404
    assert any(method == "GET" and "/api/models/nobody/missing-model" in path for method, path, _ in hub.requests)


def test_verify_a_pushed_repo(hub, key_file, source, tmp_path):
    """`verify` on a Hub repo: the key id from its poscuda.json, and byte for byte against the original."""
    assert push_cli(str(source), "alice/v", "-k", str(key_file), "--license", "mit", "--quality-clips", "0").exit_code == 0
    key = PosCUDAKey.load(key_file)
    exact = runner.invoke(app, ["verify", "alice/v", "--key", str(key_file), "--original", str(source)])
    assert exact.exit_code == 0, exact.output
    assert f"key id on record: {key.key_id} (matches)" in exact.output
    assert "12 identical, 0 differing, 0 missing" in exact.output and "5 identical" in exact.output
    other = tmp_path / "other.key"
    assert runner.invoke(app, ["keygen", str(other)]).exit_code == 0
    wrong = runner.invoke(app, ["verify", "alice/v", "--key", str(other), "--original", str(source)])
    assert wrong.exit_code == 1 and "(differs)" in wrong.output and "0 identical" in wrong.output
    missing = runner.invoke(app, ["verify", "alice/nothing-here", "--key", str(key_file)])
    assert missing.exit_code == 2
