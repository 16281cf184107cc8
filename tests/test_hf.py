from __future__ import annotations

import io
import math
import pickle

import numpy as np
import pytest
import soundfile as sf
from datasets import Audio, Dataset, Features, Value

from hf_poscuda import PosCUDA, PosCUDAConfig, PosCUDAKey
from tests.conftest import decode, make_dataset, wav_bytes

SECRET_HEX = bytes(range(32)).hex()
PATCH = PosCUDAConfig.from_preset("v0.1", patch_seconds=0.05, num_patches=1, placement="relative")  # one 50 ms patch


def raw(ds: Dataset) -> Dataset:
    return ds.cast_column("audio", Audio(decode=False))


def rows(ds: Dataset) -> list[dict]:
    return raw(ds).to_list()


def test_map_keeps_rows_columns_and_feature(dataset, key):
    out = dataset.map(PosCUDA(key, PATCH), batched=True)
    assert out.features == dataset.features
    assert out["id"] == dataset["id"] and out["label"] == dataset["label"]
    for before, after in zip(rows(dataset), rows(out)):
        x, sr_x = decode(before["audio"])
        y, sr_y = decode(after["audio"])
        assert sr_x == sr_y and x.shape == y.shape
        assert after["audio"]["path"] == before["audio"]["path"]  # .wav stays .wav
        changed = np.flatnonzero(x[0] != y[0])
        assert 0 < changed.size <= 400  # one 50 ms patch at 8 kHz
        assert changed.max() - changed.min() < 400
        np.testing.assert_array_equal(np.delete(x, changed, axis=1), np.delete(y, changed, axis=1))


def test_decoding_and_raw_columns_give_identical_bytes(dataset, key):
    a = rows(dataset.map(PosCUDA(key), batched=True))
    b = rows(raw(dataset).map(PosCUDA(key), batched=True))
    assert a == b


@pytest.mark.parametrize("batch_size", [1, 7, 1000])
def test_identical_rows_for_any_batch_size(dataset, key, batch_size):
    reference = rows(raw(dataset).map(PosCUDA(key), batched=True, batch_size=5))
    assert rows(raw(dataset).map(PosCUDA(key), batched=True, batch_size=batch_size)) == reference


def test_num_proc_two_gives_identical_rows_without_deadlock(dataset, key):
    import torch

    torch.randn(512, 512) @ torch.randn(512, 512)  # use the parent's thread pool before fork
    reference = rows(raw(dataset).map(PosCUDA(key), batched=True, batch_size=4))
    assert rows(raw(dataset).map(PosCUDA(key), batched=True, batch_size=4, num_proc=2)) == reference


def test_streaming_iterable_dataset_gives_identical_rows(dataset, key):
    reference = rows(raw(dataset).map(PosCUDA(key), batched=True, batch_size=5))
    streamed = raw(dataset).to_iterable_dataset(num_shards=3).map(PosCUDA(key), batched=True, batch_size=4)
    assert list(streamed) == reference
    streamed_decoding = dataset.to_iterable_dataset().map(PosCUDA(key), batched=True, batch_size=4)
    assert [r["audio"]["bytes"] for r in streamed_decoding] == [r["audio"]["bytes"] for r in reference]


def test_cache_reused_for_identical_map_and_not_for_other_key_or_knob(tmp_path, key, other_key):
    ds = raw(make_dataset(8))
    ds.save_to_disk(str(tmp_path / "src"))
    from datasets import load_from_disk

    src = load_from_disk(str(tmp_path / "src"))
    first = src.map(PosCUDA(key), batched=True)
    second = src.map(PosCUDA(PosCUDAKey(bytes(range(32)))), batched=True)  # equal key, new objects
    assert first._fingerprint == second._fingerprint
    assert first.cache_files == second.cache_files
    other = src.map(PosCUDA(other_key), batched=True)
    knob = src.map(PosCUDA(key, PosCUDAConfig(kernel_size=11)), batched=True)
    assert len({first._fingerprint, other._fingerprint, knob._fingerprint}) == 3
    names = " ".join(p.name for p in (tmp_path / "src").iterdir())
    assert SECRET_HEX not in names and SECRET_HEX[:16] not in names
    assert key.key_id not in names


def test_picklable_and_repr_has_no_secret(key):
    fn = PosCUDA(key)
    clone = pickle.loads(pickle.dumps(fn))
    assert clone.key == key and clone.config == fn.config
    assert SECRET_HEX not in repr(fn) and key.key_id in repr(fn)


def test_stereo_and_variable_lengths_kept(key):
    rng = np.random.default_rng(1)
    stereo = [rng.standard_normal((2, n)).astype(np.float32) * 0.1 for n in (900, 4000, 2500)]
    ds = Dataset.from_dict(
        {"audio": [{"bytes": wav_bytes(s, 8000), "path": None} for s in stereo], "label": [0, 1, 2]}
    ).cast_column("audio", Audio())
    out = rows(ds.map(PosCUDA(key), batched=True))
    for s, row in zip(stereo, out):
        y, _ = decode(row["audio"])
        assert y.shape == s.shape
        assert row["audio"]["path"] is None


@pytest.mark.parametrize("rates", [(8000, 16000), (16000, 8000)])
def test_mixed_sampling_rates_are_kept_per_clip(key, rates):
    rng = np.random.default_rng(2)
    items = [{"bytes": wav_bytes(rng.standard_normal(sr // 2) * 0.1, sr), "path": f"{sr}.wav"} for sr in rates]
    ds = Dataset.from_dict({"audio": items, "label": [0, 0]}).cast_column("audio", Audio(decode=False))
    out = ds.map(PosCUDA(key, PATCH), batched=True).to_list()
    changed = {}
    for row, item, sr in zip(out, items, rates):
        y, rate = decode(row["audio"])
        x, _ = decode(item)
        assert rate == sr and y.shape == x.shape
        changed[sr] = np.flatnonzero(y[0] != x[0])
        assert np.array_equal(np.delete(y[0], changed[sr]), np.delete(x[0], changed[sr]))  # nothing else touched
    # the patch is 50 ms at each clip's own rate
    assert 0 < changed[8000].size <= 400 < changed[16000].size <= 800


def test_string_labels_need_explicit_or_dataset_mapping(key):
    base = make_dataset(6, num_classes=3)
    names = base.features["label"].names
    ds = base.cast_column("label", Value("string")).map(lambda r: {"label": names[int(r["label"])]})
    with pytest.raises(ValueError, match="label_names"):
        ds.map(PosCUDA(key), batched=True)
    fn = PosCUDA.for_dataset(ds, key)
    assert fn.label_names == tuple(sorted(names))
    by_names = rows(ds.map(fn, batched=True))
    by_index = rows(base.map(PosCUDA(key), batched=True))  # ClassLabel names c0, c1, c2 are sorted already
    assert [r["audio"] for r in by_names] == [r["audio"] for r in by_index]


def test_empty_dataset_maps_to_empty(key):
    out = make_dataset(4).select([]).map(PosCUDA(key), batched=True)
    assert len(out) == 0 and out.features["audio"] == Audio()


def test_flac_output_is_smaller_and_close(dataset, key):
    wav = rows(dataset.map(PosCUDA(key), batched=True))
    flac = rows(dataset.map(PosCUDA(key, output_format="flac"), batched=True))
    assert flac[0]["audio"]["path"].endswith(".flac")
    assert sum(len(r["audio"]["bytes"]) for r in flac) < sum(len(r["audio"]["bytes"]) for r in wav)
    np.testing.assert_allclose(decode(flac[0]["audio"])[0], decode(wav[0]["audio"])[0], atol=2e-7)


def test_perturbation_survives_the_write(key):
    """Float WAV keeps changes far below the 16-bit step (3e-5) that PCM_16 would round away."""
    quiet = (5e-6 * np.sin(np.arange(4000) / 3.0)).astype(np.float32)
    ds = Dataset.from_dict({"audio": [{"bytes": wav_bytes(quiet, 8000, "FLOAT"), "path": "q.wav"}], "label": [0]})
    out = rows(ds.cast_column("audio", Audio()).map(PosCUDA(key), batched=True))
    y = decode(out[0]["audio"])[0][0]
    diff = np.abs(y - quiet)
    assert 0 < diff.max() < 3e-5
    assert np.array_equal(np.round(y * 32768), np.round(quiet * 32768))  # 16-bit PCM would have erased it


def test_float_wav_is_deterministic_and_readable_by_soundfile_and_torchcodec():
    from torchcodec.decoders import AudioDecoder

    from hf_poscuda.audio_io import float_wav_bytes

    data = np.random.default_rng(0).standard_normal((2, 1001)).astype(np.float32) * 1.5  # above 1.0 on purpose
    blob = float_wav_bytes(data, 16000)
    assert blob == float_wav_bytes(data.copy(), 16000)
    back, sr = decode({"bytes": blob})
    assert sr == 16000 and np.array_equal(back, data)
    decoded = AudioDecoder(blob).get_all_samples()
    assert decoded.sample_rate == 16000 and np.array_equal(decoded.data.numpy(), data)


# ------------------------------------------------------------------ bad input
def bad(ds: Dataset, fn: PosCUDA, match: str) -> None:
    before = rows(ds) if len(ds) else []
    with pytest.raises(ValueError, match=match):
        ds.map(fn, batched=True)
    assert (rows(ds) if len(ds) else []) == before  # nothing lost or reordered


def test_missing_columns(dataset, key):
    bad(dataset, PosCUDA(key, audio_column="speech"), "Column 'speech' not found.*audio_column")
    bad(dataset, PosCUDA(key, label_column="digit"), "Column 'digit' not found.*label_column")


def test_column_that_is_not_audio(dataset, key):
    bad(dataset, PosCUDA(key, audio_column="id"), "does not hold audio.*cast_column")
    with pytest.raises(ValueError, match="not an Audio feature"):
        PosCUDA.for_dataset(dataset, key, audio_column="id")


def test_nan_and_inf_samples(key):
    for value in (np.nan, np.inf):
        x = np.zeros(800, dtype=np.float32)
        x[10] = value
        ds = Dataset.from_dict(
            {"audio": [{"bytes": wav_bytes(np.zeros(800), 8000), "path": "ok.wav"}, {"bytes": wav_bytes(x, 8000, "FLOAT"), "path": "bad.wav"}], "label": [0, 1]}
        ).cast_column("audio", Audio())
        bad(ds, PosCUDA(key), "NaN or infinite.*bad.wav")


@pytest.mark.parametrize(
    "labels, feature, kwargs, match",
    [
        ([0, 5], Value("int64"), {"num_classes": 3}, r"outside the known classes \[0, 3\)"),
        ([0, -1], Value("int64"), {}, "outside the known classes"),
        ([0, None], Value("int64"), {}, "Unlabelled row"),
        ([0.0, 1.5], Value("float32"), {}, "Non-integer label"),
        (["a", "z"], Value("string"), {"label_names": ["a", "b"]}, "Unknown label 'z'"),
    ],
)
def test_bad_labels(key, labels, feature, kwargs, match):
    ds = Dataset.from_dict(
        {"audio": [{"bytes": wav_bytes(np.zeros(800), 8000), "path": None}] * 2, "label": labels},
        features=Features({"audio": Audio(), "label": feature}),
    )
    bad(ds, PosCUDA(key, **kwargs), match)


def test_class_label_bounds_from_dataset(key):
    ds = make_dataset(4, num_classes=2)
    fn = PosCUDA.for_dataset(ds, key)
    assert fn.num_classes == 2 and fn.label_names == ("c0", "c1")
    with pytest.raises(ValueError, match="outside the known classes"):
        fn.label_index(2, 0)


def test_constructor_validation(key):
    with pytest.raises(TypeError):
        PosCUDA("not a key")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="output_format"):
        PosCUDA(key, output_format="mp3")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="distinct"):
        PosCUDA(key, label_names=["a", "a"])


def test_not_batched_is_refused(dataset, key):
    with pytest.raises(ValueError, match="batched=True"):
        dataset.map(PosCUDA(key))


def test_array_dicts_are_accepted(key):
    from hf_poscuda.audio_io import read_clip

    data, sr, path = read_clip({"array": np.ones(10), "sampling_rate": 8000, "path": "a.wav"}, 0)
    assert data.shape == (1, 10) and sr == 8000 and path == "a.wav"
    with pytest.raises(ValueError, match="sampling_rate"):
        read_clip({"array": np.ones(10), "sampling_rate": None}, 0)
    assert math.isfinite(float(data.sum()))


def test_flac_refuses_a_clip_above_full_scale_instead_of_clipping_it():
    import io

    import soundfile as sf

    from hf_poscuda.audio_io import encode_audio

    with pytest.raises(ValueError, match="above full scale.*output_format='wav'"):
        encode_audio(np.array([[0.5, 1.2, -0.3]], dtype=np.float32), 8000, "flac")
    data, _ = sf.read(io.BytesIO(encode_audio(np.array([[0.5, 1.2]], dtype=np.float32), 8000, "wav")))
    assert data[1] == pytest.approx(1.2)  # float WAV keeps it


def _audio_bytes(ds):
    return [a["bytes"] for a in ds.cast_column("audio", Audio(decode=False))["audio"]]


def test_memory_bound_splits_batches_by_length_without_changing_a_byte(key):
    from hf_poscuda.map_callable import length_groups

    ds = make_dataset(12, min_len=0.05, max_len=2.0)  # 400 to 16,000 samples
    unbounded = _audio_bytes(ds.map(PosCUDA(key, max_batch_samples=None), batched=True, batch_size=12))
    bounded = _audio_bytes(ds.map(PosCUDA(key, max_batch_samples=9000), batched=True, batch_size=12))
    one_by_one = _audio_bytes(ds.map(PosCUDA(key), batched=True, batch_size=1))
    assert bounded == unbounded == one_by_one
    lengths = [len(sf.read(io.BytesIO(b))[0]) for b in _audio_bytes(ds)]
    groups = length_groups(lengths, 1, 9000)
    assert sorted(i for g in groups for i in g) == list(range(12))  # every clip once
    assert all(len(g) * max(lengths[i] for i in g) <= 9000 or len(g) == 1 for g in groups)
    assert any(len(g) > 1 for g in groups) and any(max(lengths[i] for i in g) > 9000 for g in groups)
    with pytest.raises(ValueError, match="max_batch_samples"):
        PosCUDA(key, max_batch_samples=0)


def test_arrow_batches_give_the_bytes_map_gives(key):
    import pyarrow as pa

    ds = make_dataset(9, min_len=0.2, max_len=1.2)
    fn = PosCUDA.for_dataset(ds, key)
    want = ds.map(fn, batched=True, batch_size=4)
    table = ds.data.table
    got = pa.concat_tables([fn(batch) for batch in table.to_batches(max_chunksize=4)])  # RecordBatches, as Ray
    assert got.schema == table.schema  # datasets' features metadata kept
    assert got.column("id").to_pylist() == ds["id"] and got.column("label").to_pylist() == ds["label"]
    assert [a["bytes"] for a in got.column("audio").to_pylist()] == _audio_bytes(want)
    with pytest.raises(ValueError, match="Column 'label' not found"):
        fn(table.drop_columns(["label"]))
    index = table.schema.get_field_index("label")
    strings = table.set_column(index, "label", pa.array([f"c{label}" for label in ds["label"]]))
    named = PosCUDA(key, label_names=[f"c{i}" for i in range(4)])
    assert [a["bytes"] for a in named(strings).column("audio").to_pylist()] == _audio_bytes(want)
