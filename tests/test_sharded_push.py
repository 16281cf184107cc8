"""Sharded pushes (``push --streaming``; ``--engine ray`` is in test_ray.py) against the local test Hub: the same
bytes as ``ds.map``, a card and Audio features after ``load_dataset(repo_id)``, resuming an interrupted push
without redoing committed shards, and bad input stopped before anything is uploaded."""

from __future__ import annotations

import pytest
from datasets import Audio, ClassLabel, DatasetDict, load_dataset
from typer.testing import CliRunner

from hf_poscuda import PosCUDA, PosCUDAKey
from hf_poscuda.cli import app
from hf_poscuda.hub import PROTECTION_FILE, CardInputs, ProtectionRecord, push_stream
from hf_poscuda.hub.plan import with_data_files
from hf_poscuda.shards import iter_shards
from hf_poscuda.streaming import protected_stream
from tests.conftest import make_dataset

runner = CliRunner()
KEY = PosCUDAKey(bytes(range(32)))


def _bytes(ds):
    return [a["bytes"] for a in ds.cast_column("audio", Audio(decode=False))["audio"]]


def _writes(hub):
    return [r for r in hub.requests if r[0] in ("POST", "PUT") and ("/commit/" in r[1] or "lfs-upload" in r[1]
                                                                    or "/repos/create" in r[1])]


@pytest.fixture
def saved(tmp_path):
    folder = tmp_path / "src"
    DatasetDict({"train": make_dataset(12), "test": make_dataset(5, seed=1)}).save_to_disk(str(folder))
    return folder


def test_streaming_push_round_trips_with_the_bytes_of_map_and_a_card(hub, tmp_path, saved):
    KEY.save(tmp_path / "k.key")
    result = runner.invoke(app, ["push", str(saved), "alice/streamed", "--key", str(tmp_path / "k.key"),
                                 "--streaming", "--rows-per-shard", "5", "--license", "mit"])
    assert result.exit_code == 0, result.output
    assert "[train] shards uploaded: 3, already on the Hub: 0" in result.output
    files = hub.files("alice/streamed")
    assert sorted(f for f in files if f.startswith("data/")) == [
        "data/test-00000.parquet", "data/train-00000.parquet", "data/train-00001.parquet", "data/train-00002.parquet"]
    got = load_dataset("alice/streamed")
    source = DatasetDict.load_from_disk(str(saved))
    for name in ("train", "test"):
        want = source[name].map(PosCUDA.for_dataset(source[name], KEY), batched=True)
        assert got[name]["id"] == source[name]["id"]  # every row, in order
        assert _bytes(got[name]) == _bytes(want)  # byte for byte what ds.map gives
    assert isinstance(got["train"].features["audio"], Audio)
    assert isinstance(got["train"].features["label"], ClassLabel)
    card = files["README.md"].decode()
    assert "path: data/train-*" in card and "path: data/test-*" in card
    assert KEY.key_id in card and "PosCUDA" in card
    record = ProtectionRecord.from_json(files[PROTECTION_FILE].decode())
    assert record.summaries()["train"].clips == 12 and record.summaries()["test"].clips == 5
    assert record.progress("default", "train").complete
    assert not KEY.appears_in(b"".join(files.values()))
    checked = runner.invoke(app, ["verify", "alice/streamed", "--key", str(tmp_path / "k.key"), "--original",
                                  str(saved)])
    assert checked.exit_code == 0 and "12 identical, 0 differing, 0 missing" in checked.output, checked.output


def test_an_interrupted_push_resumes_without_redoing_committed_shards(hub, saved):
    stream = protected_stream(str(saved), KEY, split="train", batch_size=4)
    full_tables = stream.tables

    def crashing(skip: int):
        tables = full_tables(skip)

        def gen():
            rows = 0
            for table in tables:
                yield table
                rows += table.num_rows
                if rows >= 8:
                    raise ConnectionError("the machine went down")
        return gen()

    stream.tables = crashing
    options = {"card": CardInputs(license="mit"), "rows_per_shard": 4, "commit_every": 1}
    with pytest.raises(ConnectionError):
        push_stream(stream, "alice/resumed", KEY, **options)
    committed = sorted(f for f in hub.files("alice/resumed") if f.startswith("data/"))
    assert committed == ["data/train-00000.parquet", "data/train-00001.parquet"], committed
    assert "README.md" not in hub.files("alice/resumed")  # no card before the split is complete
    uploads_before = sum("lfs-upload" in r[1] for r in hub.requests)

    stream.tables = full_tables
    rows_protected: list[int] = []

    def counting(skip: int):
        rows_protected.append(skip)
        return full_tables(skip)

    stream.tables = counting
    result = push_stream(stream, "alice/resumed", KEY, **options)
    assert rows_protected == [8]  # the committed shards' rows are skipped, not protected again
    assert (result.shards_uploaded, result.shards_skipped) == (1, 2)
    assert sum("lfs-upload" in r[1] for r in hub.requests) - uploads_before == 1
    got = load_dataset("alice/resumed", split="train")
    source = DatasetDict.load_from_disk(str(saved))["train"]
    assert _bytes(got) == _bytes(source.map(PosCUDA.for_dataset(source, KEY), batched=True))
    assert got["id"] == source["id"]

    again = push_stream(stream, "alice/resumed", KEY, **options)  # done already: only the card is renewed
    assert (again.shards_uploaded, again.shards_skipped) == (0, 3) and rows_protected == [8]


def test_a_changed_shard_on_the_hub_is_uploaded_again(hub, saved):
    from huggingface_hub import CommitOperationAdd, HfApi

    stream = protected_stream(str(saved), KEY, split="train")
    options = {"card": CardInputs(license="mit"), "rows_per_shard": 6}
    push_stream(stream, "alice/changed", KEY, **options)
    HfApi().create_commit("alice/changed", [CommitOperationAdd("data/train-00001.parquet", b"not the shard")],
                          commit_message="tamper", repo_type="dataset")
    result = push_stream(stream, "alice/changed", KEY, **options)
    assert (result.shards_uploaded, result.shards_skipped) == (1, 1)
    got = load_dataset("alice/changed", split="train")
    assert len(got) == 12


def test_bad_labels_stop_a_streaming_push_before_anything_is_uploaded(hub, tmp_path):
    from datasets import Value

    ds = make_dataset(6)
    ds = ds.cast_column("label", Value("int64")).map(lambda r, i: {"label": None if i == 5 else r["label"]},
                                                      with_indices=True)
    ds.save_to_disk(str(tmp_path / "bad"))
    stream = protected_stream(str(tmp_path / "bad"), KEY)
    before = len(_writes(hub))
    with pytest.raises(ValueError, match="Unlabelled row"):
        push_stream(stream, "alice/bad", KEY, card=CardInputs(license="mit"))
    assert len(_writes(hub)) == before and ("dataset", "alice/bad") not in hub.repos


def test_another_key_cannot_stream_into_a_protected_repo(hub, saved):
    push_stream(protected_stream(str(saved), KEY, split="test"), "alice/one-key", KEY, card=CardInputs(license="mit"))
    other = PosCUDAKey(bytes(range(1, 33)))
    with pytest.raises(ValueError, match="key id"):
        push_stream(protected_stream(str(saved), other, split="train"), "alice/one-key", other,
                    card=CardInputs(license="mit"))


def test_streaming_cli_refuses_options_it_would_ignore(tmp_path, saved):
    KEY.save(tmp_path / "k.key")
    for extra, message in ((["--dry-run"], "--dry-run is not available"), (["--engine", "ray"], "not both"),
                           (["--num-proc", "2"], "--num-proc")):
        result = runner.invoke(app, ["push", str(saved), "alice/x", "--key", str(tmp_path / "k.key"), "--streaming",
                                     *extra])
        assert result.exit_code == 1 and message in result.output, result.output
    result = runner.invoke(app, ["push", str(saved), "alice/x", "--key", str(tmp_path / "k.key"),
                                 "--rows-per-shard", "3"])
    assert result.exit_code == 1 and "--rows-per-shard is an option" in result.output


def test_shards_keep_row_order_and_bounds():
    import pyarrow as pa

    batches = [pa.table({"x": list(range(i, i + 7))}) for i in range(0, 21, 7)]
    shards = list(iter_shards(batches, None, rows_per_shard=5))
    assert [t.num_rows for t in shards] == [5, 5, 5, 5, 1]
    assert sum((t["x"].to_pylist() for t in shards), []) == list(range(21))
    by_bytes = list(iter_shards(batches, None, max_shard_bytes=8 * 7))  # one 7-row batch of int64 per shard
    assert [t.num_rows for t in by_bytes] == [7, 7, 7]
    with pytest.raises(ValueError, match="rows_per_shard"):
        list(iter_shards(batches, None, rows_per_shard=0))


def test_card_yaml_points_the_config_at_the_shards_and_keeps_other_splits():
    existing = {"configs": [{"config_name": "default", "data_files": [{"split": "test", "path": "data/test-*"},
                                                                      {"split": "train", "path": "old/*"}]}],
                "dataset_info": {"features": [], "splits": [{"name": "train", "num_examples": 3},
                                                            {"name": "test", "num_examples": 2}],
                                 "dataset_size": 10}}
    merged = with_data_files(existing, "default", "train", make_dataset(1).features, 7, 700)
    assert merged["configs"][0]["data_files"] == [{"split": "test", "path": "data/test-*"},
                                                  {"split": "train", "path": "data/train-*"}]
    assert merged["dataset_info"]["splits"] == [{"name": "test", "num_examples": 2},
                                                {"name": "train", "num_bytes": 700, "num_examples": 7}]
    assert "dataset_size" not in merged["dataset_info"]
    assert merged["dataset_info"]["features"][0] == {"name": "audio", "dtype": "audio"}


def test_streaming_push_from_a_hub_source(hub, tmp_path):
    source = DatasetDict({"train": make_dataset(7), "test": make_dataset(3, seed=1)})
    source.push_to_hub("alice/speech")
    KEY.save(tmp_path / "k.key")
    result = runner.invoke(app, ["push", "alice/speech", "alice/speech-protected", "--key", str(tmp_path / "k.key"),
                                 "--streaming", "--split", "train", "--license", "cc-by-4.0"])
    assert result.exit_code == 0, result.output
    got = load_dataset("alice/speech-protected", split="train")
    want = source["train"].map(PosCUDA.for_dataset(source["train"], KEY), batched=True)
    assert got["id"] == source["train"]["id"] and _bytes(got) == _bytes(want)
    card = hub.files("alice/speech-protected")["README.md"].decode()
    assert "alice/speech" in card and "cc-by-4.0" in card


def test_a_sharded_push_replaces_a_push_to_hub_split_and_keeps_the_others(hub, saved):
    from hf_poscuda import protect_splits, push_protected

    source = DatasetDict.load_from_disk(str(saved))
    protected, summaries = protect_splits(source, KEY)
    push_protected(protected, summaries, "alice/mixed", KEY, license="mit")
    before = sorted(f for f in hub.files("alice/mixed") if f.startswith("data/"))
    assert before == ["data/test-00000-of-00001.parquet", "data/train-00000-of-00001.parquet"]
    push_stream(protected_stream(str(saved), KEY, split="train"), "alice/mixed", KEY, rows_per_shard=5)
    after = sorted(f for f in hub.files("alice/mixed") if f.startswith("data/"))
    assert after == ["data/test-00000-of-00001.parquet", "data/train-00000.parquet", "data/train-00001.parquet",
                     "data/train-00002.parquet"]
    got = load_dataset("alice/mixed")
    assert len(got["train"]) == 12 and len(got["test"]) == 5
    assert _bytes(got["train"]) == _bytes(protected["train"]) and _bytes(got["test"]) == _bytes(protected["test"])
    record = ProtectionRecord.from_json(hub.files("alice/mixed")[PROTECTION_FILE].decode())
    assert set(record.summaries()) == {"train", "test"}  # the license came from the repo's card


def test_string_labels_stream_in_sorted_order_like_map(hub, tmp_path):
    from datasets import Value

    ds = make_dataset(8).cast_column("label", Value("int64"))
    ds = ds.map(lambda r: {"label": ["yes", "no", "maybe", "no"][r["label"]]}).cast_column("label", Value("string"))
    ds.save_to_disk(str(tmp_path / "strings"))
    stream = protected_stream(str(tmp_path / "strings"), KEY)
    assert stream.label_names == ["maybe", "no", "yes"]
    push_stream(stream, "alice/strings", KEY, card=CardInputs(license="mit"))
    got = load_dataset("alice/strings", split="train")
    assert got["label"] == ds["label"] and _bytes(got) == _bytes(ds.map(PosCUDA.for_dataset(ds, KEY), batched=True))


def test_review_cases_new_branch_replaced_partial_push_and_bad_sizes(hub, saved):
    from huggingface_hub import HfApi

    stream = protected_stream(str(saved), KEY, split="test")
    push_stream(stream, "alice/branches", KEY, card=CardInputs(license="mit"))
    # the same push to a branch that does not exist yet: main's record must not make it look up the branch
    result = push_stream(stream, "alice/branches", KEY, revision="dev")
    assert result.shards_uploaded == 1 and "data/test-00000.parquet" in hub.files("alice/branches", "dev")

    with pytest.raises(ValueError, match="rows_per_shard must be >= 1"):
        push_stream(stream, "alice/never", KEY, card=CardInputs(license="mit"), rows_per_shard=0)
    assert ("dataset", "alice/never") not in hub.repos

    # a first push with key A interrupted after a commit; a push with key B replaces it and deletes A's shards
    crashing = protected_stream(str(saved), KEY, split="train", batch_size=4)
    tables = crashing.tables

    def crash(skip):
        def gen():
            for i, table in enumerate(tables(skip)):
                if i == 2:
                    raise ConnectionError("down")
                yield table
        return gen()

    crashing.tables = crash
    with pytest.raises(ConnectionError):
        push_stream(crashing, "alice/replaced", KEY, card=CardInputs(license="mit"), rows_per_shard=4, commit_every=1)
    assert "data/train-00000.parquet" in hub.files("alice/replaced")
    other = PosCUDAKey(bytes(range(1, 33)))
    push_stream(protected_stream(str(saved), other, split="test"), "alice/replaced", other,
                card=CardInputs(license="mit"))
    files = hub.files("alice/replaced")
    assert sorted(f for f in files if f.startswith("data/")) == ["data/test-00000.parquet"]
    record = ProtectionRecord.from_json(files[PROTECTION_FILE].decode())
    assert record.key_id == other.key_id and set(record.uploads["default"]) == {"test"}
    assert HfApi().list_repo_files("alice/replaced", repo_type="dataset")
    # the same with the same split: the new key's first commit rewrites the paths the old one left
    with pytest.raises(ConnectionError):
        push_stream(crashing, "alice/replaced-same", KEY, card=CardInputs(license="mit"), rows_per_shard=4,
                    commit_every=1)
    stream_b = protected_stream(str(saved), other, split="train")
    push_stream(stream_b, "alice/replaced-same", other, card=CardInputs(license="mit"), rows_per_shard=6,
                commit_every=1)
    got = load_dataset("alice/replaced-same", split="train")
    source = DatasetDict.load_from_disk(str(saved))["train"]
    assert _bytes(got) == _bytes(source.map(PosCUDA.for_dataset(source, other), batched=True))
    assert sorted(f for f in hub.files("alice/replaced-same") if f.startswith("data/")) == [
        "data/train-00000.parquet", "data/train-00001.parquet"]


def test_cli_checks_every_split_before_pushing_any_and_handles_config_names(hub, tmp_path):
    from datasets import Value

    good = make_dataset(4)
    bad = make_dataset(3, seed=1).cast_column("label", Value("int64")).map(
        lambda r, i: {"label": None if i == 2 else r["label"]}, with_indices=True)
    DatasetDict({"train": good, "test": bad}).save_to_disk(str(tmp_path / "src"))
    KEY.save(tmp_path / "k.key")
    args = ["push", str(tmp_path / "src"), "alice/two", "--key", str(tmp_path / "k.key"), "--streaming",
            "--license", "mit"]
    before = len(_writes(hub))
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and "Unlabelled row" in result.output, result.output
    assert len(_writes(hub)) == before, "nothing may be uploaded when any split is bad"
    DatasetDict({"train": good}).save_to_disk(str(tmp_path / "one"))
    result = runner.invoke(app, ["push", str(tmp_path / "one"), "alice/configs", "--key", str(tmp_path / "k.key"),
                                 "--streaming", "--license", "mit", "--config-name", "clean"])
    assert result.exit_code == 0, result.output
    assert "clean/train-00000.parquet" in hub.files("alice/configs")
    assert len(load_dataset("alice/configs", "clean", split="train")) == 4


def test_ray_options_that_would_be_ignored_are_refused(tmp_path, saved):
    KEY.save(tmp_path / "k.key")
    for extra in (["--config", "x"], ["--device", "cpu"]):
        result = runner.invoke(app, ["push", str(saved), "alice/x", "--key", str(tmp_path / "k.key"), "--engine",
                                     "ray", *extra])
        assert result.exit_code == 1 and "not used by --engine ray" in result.output, result.output


def test_the_fingerprint_of_a_local_source_follows_its_files(tmp_path, saved):
    import os

    from hf_poscuda.shards import source_identity

    first = source_identity(str(saved))
    arrow = next(saved.rglob("*.arrow"))
    os.utime(arrow, ns=(arrow.stat().st_atime_ns, arrow.stat().st_mtime_ns + 10**9))  # same size, rewritten
    assert source_identity(str(saved)) != first


def test_bare_data_files_patterns_are_kept_as_the_train_split():
    merged = with_data_files({"configs": [{"config_name": "default", "data_files": "data/*.parquet"}]}, "default",
                             "test", None)
    assert merged["configs"][0]["data_files"] == [{"split": "train", "path": "data/*.parquet"},
                                                  {"split": "test", "path": "data/test-*"}]


def test_merge_record_keeps_finished_repos_to_one_key_and_replaces_abandoned_uploads():
    from hf_poscuda.hub.plan import merge_record
    from hf_poscuda.hub.record import ShardUpload, UploadProgress

    other = PosCUDAKey(bytes(range(1, 33)))
    fresh, abandoned = merge_record(None, "a/b", KEY, {"k": 1})
    assert fresh.key_id == KEY.key_id and abandoned == []
    partial = ProtectionRecord(other.key_id, {"k": 1})
    partial.set_progress("default", "train", UploadProgress("f", [ShardUpload("data/train-00000.parquet", 4, "s", 1.0,
                                                                              [0])]))
    replaced, abandoned = merge_record(partial, "a/b", KEY, {"k": 2})
    assert replaced.key_id == KEY.key_id and replaced.uploads == {} and abandoned == ["data/train-00000.parquet"]
    finished = ProtectionRecord(other.key_id, {"k": 1}, splits={"default": {"train": {}}})
    with pytest.raises(ValueError, match="key id"):
        merge_record(finished, "a/b", KEY, {"k": 1})
    with pytest.raises(ValueError, match="other parameters"):
        merge_record(ProtectionRecord(KEY.key_id, {"k": 1}, splits={"default": {"train": {}}}), "a/b", KEY, {"k": 2})
    same = ProtectionRecord(KEY.key_id, {"k": 1}, splits={"default": {"train": {}}})
    assert merge_record(same, "a/b", KEY, {"k": 1}) == (same, [])
