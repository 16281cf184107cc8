"""The Ray Data engine, on a real local Ray cluster (2 CPUs) started by the tests: same bytes as `ds.map`, rows in
order, Parquet that loads as `Audio` again, and bad input stopped before anything is written."""

from __future__ import annotations

import sys

import pytest
from datasets import Audio, ClassLabel, DatasetDict, load_dataset

from hf_poscuda import PosCUDA, PosCUDAKey
from tests.conftest import make_dataset

ray = pytest.importorskip("ray", reason="the Ray engine is an optional extra: pip install 'hf-poscuda[ray]'")
from hf_poscuda.ray_engine import protect_with_ray  # noqa: E402

KEY = PosCUDAKey(bytes(range(32)))


@pytest.fixture(scope="module", autouse=True)
def cluster():
    import os

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report attempts from CI machines
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def _bytes(ds):
    return [a["bytes"] for a in ds.cast_column("audio", Audio(decode=False))["audio"]]


def test_ray_output_is_map_output_row_for_row_and_loads_as_audio(tmp_path):
    ds = make_dataset(23)
    for i in range(3):  # three source shards: rows must come back in order across them
        ds.shard(3, i, contiguous=True).to_parquet(str(tmp_path / "src" / f"train-{i:05d}-of-00003.parquet"))
    make_dataset(4, seed=1).to_parquet(str(tmp_path / "src" / "test-00000-of-00001.parquet"))
    with pytest.raises(ValueError, match="several splits"):  # never merge train and test rows
        protect_with_ray(str(tmp_path / "src"), str(tmp_path / "out"), KEY)
    with pytest.raises(ValueError, match="No Parquet files of split 'validation'"):
        protect_with_ray(str(tmp_path / "src"), str(tmp_path / "out"), KEY, split="validation")
    result = protect_with_ray(str(tmp_path / "src"), str(tmp_path / "out"), KEY, split="train", batch_size=5,
                              rows_per_shard=2)  # more than 10 files from one write task: -10 after -9
    assert result.rows == 23 and result.label_names == ["c0", "c1", "c2", "c3"]
    assert len(result.files) >= 3, result.files
    assert all(f.split("/")[-1].startswith("train-") for f in result.files)
    assert not list((tmp_path / "out").glob(".ray-*"))  # the staging folder is gone
    got = load_dataset("parquet", data_dir=str(tmp_path / "out"))["train"]
    assert isinstance(got.features["audio"], Audio) and isinstance(got.features["label"], ClassLabel)
    want = ds.map(PosCUDA.for_dataset(ds, KEY), batched=True)
    assert got["id"] == ds["id"], (result.files, got["id"])  # every row, in order
    assert got["label"] == ds["label"]
    assert _bytes(got) == _bytes(want)  # byte for byte what ds.map gives


def test_ray_reads_a_save_to_disk_split(tmp_path):
    data = DatasetDict({"train": make_dataset(6), "test": make_dataset(4, seed=1)})
    data.save_to_disk(str(tmp_path / "saved"))
    protect_with_ray(str(tmp_path / "saved"), str(tmp_path / "out"), KEY, split="test")
    got = load_dataset("parquet", data_dir=str(tmp_path / "out"))
    assert list(got) == ["test"]
    assert _bytes(got["test"]) == _bytes(data["test"].map(PosCUDA.for_dataset(data["test"], KEY), batched=True))
    with pytest.raises(ValueError, match="pass split="):
        protect_with_ray(str(tmp_path / "saved"), str(tmp_path / "out2"), KEY)


def test_bad_input_stops_before_anything_is_written(tmp_path):
    ds = make_dataset(5)
    ds.to_parquet(str(tmp_path / "src" / "train.parquet"))
    with pytest.raises(ValueError, match="Column 'speaker' not found"):
        protect_with_ray(str(tmp_path / "src"), str(tmp_path / "out"), KEY, label_column="speaker")
    bad = ds.cast_column("label", ClassLabel(names=["c0", "c1", "c2", "c3", "c4"])).map(
        lambda r, i: {"label": 4 if i == 3 else r["label"]}, with_indices=True)
    bad.to_parquet(str(tmp_path / "bad" / "train.parquet"))
    with pytest.raises(ValueError, match="Label 4"):
        protect_with_ray(str(tmp_path / "bad"), str(tmp_path / "out"), KEY, label_names=["c0", "c1", "c2", "c3"])
    with pytest.raises(ValueError, match="leave none to read and write"):
        protect_with_ray(str(tmp_path / "src"), str(tmp_path / "out"), KEY, concurrency=2)
    assert not list(tmp_path.glob("out/**/*.parquet"))  # nothing written


def test_cli_protect_with_the_ray_engine(tmp_path):
    import json

    from typer.testing import CliRunner

    from hf_poscuda.cli import app

    runner = CliRunner()
    key_file = tmp_path / "keys" / "k.key"
    key_file.parent.mkdir()
    assert runner.invoke(app, ["keygen", str(key_file)]).exit_code == 0
    data = DatasetDict({"train": make_dataset(7), "test": make_dataset(3, seed=1)})
    data.save_to_disk(str(tmp_path / "saved"))
    out = tmp_path / "out"
    done = runner.invoke(app, ["protect", str(tmp_path / "saved"), str(out), "--key", str(key_file), "--engine", "ray",
                               "--split", "train", "--split", "test", "--num-workers", "1"])
    assert done.exit_code == 0, done.output
    got = load_dataset("parquet", data_dir=str(out))
    key = PosCUDAKey.load(key_file)
    for name in ("train", "test"):
        want = data[name].map(PosCUDA.for_dataset(data[name], key), batched=True)
        assert _bytes(got[name]) == _bytes(want)
    record = json.loads((out / "poscuda_summary.json").read_text())
    assert record["train"]["key_id"] == key.key_id and record["test"]["clips"] == 3
    checked = runner.invoke(app, ["verify", str(out), "--key", str(key_file), "--original", str(tmp_path / "saved")])
    assert checked.exit_code == 0, checked.output  # both splits of the Parquet folder, byte for byte
    assert "7 identical, 0 differing" in checked.output and "3 identical, 0 differing" in checked.output
    assert not key.appears_in(done.output.encode()) and not key.appears_in((out / "poscuda_summary.json").read_bytes())
    wrong = runner.invoke(app, ["protect", str(tmp_path / "saved"), str(tmp_path / "o2"), "--key", str(key_file),
                                "--num-workers", "2"])
    assert wrong.exit_code == 1 and "options of --engine ray" in wrong.output



def test_push_with_ray_round_trips_through_the_hub_and_resumes(hub, tmp_path):
    from typer.testing import CliRunner

    from hf_poscuda.cli import app
    from hf_poscuda.hub import PROTECTION_FILE, ProtectionRecord

    data = DatasetDict({"train": make_dataset(11), "test": make_dataset(3, seed=1)})
    data.save_to_disk(str(tmp_path / "saved"))
    KEY.save(tmp_path / "k.key")
    args = ["push", str(tmp_path / "saved"), "alice/rayed", "--key", str(tmp_path / "k.key"), "--engine", "ray",
            "--split", "train", "--rows-per-shard", "4", "--license", "mit", "--batch-size", "3"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "shards uploaded: 3, already on the Hub: 0" in result.output
    got = load_dataset("alice/rayed", split="train")
    want = data["train"].map(PosCUDA.for_dataset(data["train"], KEY), batched=True)
    assert got["id"] == data["train"]["id"] and _bytes(got) == _bytes(want)
    assert isinstance(got.features["audio"], Audio) and isinstance(got.features["label"], ClassLabel)
    files = hub.files("alice/rayed")
    assert KEY.key_id in files["README.md"].decode()
    assert ProtectionRecord.from_json(files[PROTECTION_FILE].decode()).summaries()["train"].clips == 11
    again = CliRunner().invoke(app, args)  # a finished push is not protected or uploaded again
    assert again.exit_code == 0 and "shards uploaded: 0, already on the Hub: 3" in again.output, again.output


def test_a_resumed_ray_stream_skips_whole_source_files_and_drops_the_rest(tmp_path):
    import pyarrow as pa

    from hf_poscuda.ray_engine import ray_stream

    ds = make_dataset(23)
    for i in range(3):  # 8 + 8 + 7 rows
        ds.shard(3, i, contiguous=True).to_parquet(str(tmp_path / "src" / f"train-{i:05d}-of-00003.parquet"))
    stream = ray_stream(str(tmp_path / "src"), KEY, batch_size=5)
    assert stream.num_rows == 23 and stream.split == "train"
    rest = pa.concat_tables(list(stream.tables(9)))
    want = ds.map(PosCUDA.for_dataset(ds, KEY), batched=True).select(range(9, 23))
    assert rest.column("id").to_pylist() == want["id"]
    assert [a["bytes"] for a in rest.column("audio").to_pylist()] == _bytes(want)
    figures = stream.sample()
    assert figures.snr_clips == 23 and figures.snr_db > -10
    assert stream.check() == 23
    make_dataset(3).to_parquet(str(tmp_path / "only_test" / "test-00000-of-00001.parquet"))
    assert ray_stream(str(tmp_path / "only_test"), KEY).split == "test"  # named by its files, not "train"


def test_ray_reads_hf_paths_from_the_hub(hub, tmp_path):
    data = DatasetDict({"train": make_dataset(9), "test": make_dataset(3, seed=1)})
    data.push_to_hub("alice/parquet-source")
    result = protect_with_ray("hf://datasets/alice/parquet-source", str(tmp_path / "out"), KEY, split="train",
                              batch_size=4)
    assert result.rows == 9
    got = load_dataset("parquet", data_dir=str(tmp_path / "out"))["train"]
    want = data["train"].map(PosCUDA.for_dataset(data["train"], KEY), batched=True)
    assert got["id"] == data["train"]["id"] and _bytes(got) == _bytes(want)
    with pytest.raises(ValueError, match="No Parquet files of split 'validation'"):
        protect_with_ray("hf://datasets/alice/parquet-source", str(tmp_path / "out2"), KEY, split="validation")


MARK = b"<by blocks>"


class SmallBound(PosCUDA):
    """PosCUDA whose bound is 20,000 samples, and whose rows protected by blocks end with ``MARK``: in Ray's actors,
    their output shows which path each row took."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{**kwargs, "max_batch_samples": 20000})

    def _protect_in_blocks(self, clip, label, device):
        return bytes(super()._protect_in_blocks(clip, label, device)) + MARK


def test_ray_actors_protect_long_clips_by_blocks(tmp_path, monkeypatch):
    from hf_poscuda import ray_engine

    ds = make_dataset(6, min_len=1.0, max_len=4.0)  # 8,000 to 32,000 samples at 8 kHz
    ds.to_parquet(str(tmp_path / "src" / "train-00000-of-00001.parquet"))
    monkeypatch.setattr(ray_engine, "PosCUDA", SmallBound)
    module = sys.modules[SmallBound.__module__]
    ray.cloudpickle.register_pickle_by_value(module)  # the actors cannot import this test module by name
    try:
        protect_with_ray(str(tmp_path / "src"), str(tmp_path / "out"), KEY, batch_size=4)
    finally:
        ray.cloudpickle.unregister_pickle_by_value(module)
    got = _bytes(load_dataset("parquet", data_dir=str(tmp_path / "out"))["train"])
    want = _bytes(ds.map(PosCUDA.for_dataset(ds, KEY), batched=True))
    long = [len(a["array"]) > 20000 for a in ds["audio"]]
    assert any(long) and not all(long)
    assert got == [w + MARK if is_long else w for w, is_long in zip(want, long)]
