"""Long clips protected by blocks (issue 20): the same bytes as the whole clip in memory, at block boundaries,
segment boundaries inside and across blocks, stereo, every rate, just over the threshold and with level scaling;
and every engine (``ds.map``, streaming, Ray: see tests/test_ray.py) takes the block path."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
import soundfile as sf
import torch
from datasets import Audio, ClassLabel, Dataset, Features

from hf_poscuda import PosCUDA, PosCUDAConfig, PosCUDAKey, PosCUDATransform
from hf_poscuda import transform as transform_module
from hf_poscuda.transform import fft_size
from tests.conftest import wav_bytes

KEY = PosCUDAKey(bytes(range(32)))
RATES = [8000, 16000, 22050, 44100, 48000]
CONFIGS = {
    "default": PosCUDAConfig(),  # segments over the active region, two filters: one lerp
    "three filters": PosCUDAConfig(filters_per_class=3, vary_cuts=1),  # weighted sum of three
    "whole barcode": PosCUDAConfig(placement="whole"),  # one filter, no segments
    "clip region": PosCUDAConfig(segment_region="clip"),
}
SMALL_BLOCKS = 1 << 15  # FFT groups of at most two seconds, so short clips span several


def utterances(seconds: float, sr: int, channels: int = 1, seed: int = 0, loud: float = 0.3) -> torch.Tensor:
    """Noise under a slow envelope with silent stretches (an active region that is not the whole clip)."""
    g = torch.Generator().manual_seed(seed)
    n = round(seconds * sr)
    t = torch.arange(n, dtype=torch.float64) / sr
    envelope = torch.sin(t * 1.3).abs() ** 2 * (t > 0.4 * min(seconds, 1.0)) * (t < seconds - 0.3)
    x = torch.randn(channels, n, generator=g, dtype=torch.float64) * envelope * loud
    return x.to(torch.float32)


def by_blocks(transform: PosCUDATransform, x: torch.Tensor, label: int, sr: int) -> tuple[torch.Tensor, list]:
    """Protect ``x`` (``[channels, n]``) through ``protect_in_blocks``, recording the reads."""
    out = torch.full_like(x, float("nan"))
    reads: list[tuple[int, int]] = []

    def read(start: int, stop: int) -> torch.Tensor:
        reads.append((start, stop))
        return x[:, start:stop].clone()

    def write(start: int, block: torch.Tensor) -> None:
        out[:, start : start + block.shape[-1]] = block

    transform.protect_in_blocks(read, write, x.shape[-1], label, sr)
    return out, reads


def whole(transform: PosCUDATransform, x: torch.Tensor, label: int, sr: int) -> torch.Tensor:
    return transform(x[None].clone(), torch.tensor([x.shape[-1]]), torch.tensor([label]), sr)[0]


def reference(transform: PosCUDATransform, x: torch.Tensor, label: int, sr: int) -> torch.Tensor:
    """The whole-clip algorithm, step by step on the whole clip: active region, filters, cross-fades, level."""
    cfg, n = transform.config, x.shape[-1]
    start, stop = 0, n
    if transform_module._uses_active_region(cfg):
        lo, hi = transform_module._active_region(x[None], torch.tensor([n]), cfg, sr)
        start, stop = int(lo), int(hi)
    offsets, order = transform.class_schedules(label + 1)
    schedule = transform_module._Schedule.of(n, start, stop, offsets[label], order[label], cfg, sr)
    bank = torch.from_numpy(transform.class_banks(label + 1, sr)[label]).to(x.dtype)
    spectra = torch.fft.rfft(bank, n=fft_size(n, bank.shape[-1]))[torch.from_numpy(schedule.used)]
    out = transform_module._crossfade(transform_module.fft_filter(x, bank, spectra=spectra), schedule, 0)
    scaled = transform_module._limit_level(x[None], out[None])
    return out if scaled is None else scaled[0]


def group_samples(transform: PosCUDATransform, n: int, sr: int, channels: int, filters: int = 2) -> int:
    """Samples per FFT group (the block unit) of an ``n``-sample clip, at the current ``FFT_BLOCK_ELEMENTS``."""
    k = transform.config.filter_taps(sr)
    n_fft = fft_size(n, k)
    return max(1, transform_module.FFT_BLOCK_ELEMENTS // (n_fft * channels * filters)) * (n_fft - k + 1)


def straddling_fades(transform: PosCUDATransform, n: int, sr: int, channels: int, label: int) -> int:
    """How many cross-fades of a clip's schedule (region: the whole clip) cross an FFT group's edge."""
    offsets, order = transform.class_schedules(label + 1)
    schedule = transform_module._Schedule.of(n, 0, n, offsets[label], order[label], transform.config, sr)
    block, b, half = group_samples(transform, n, sr, channels), schedule.bounds, schedule.fade / 2
    return int(np.sum(np.floor((b - half) / block) != np.floor((b + half) / block)))


CASES = [("default", sr, channels) for sr in RATES for channels in (1, 2)] + [
    ("three filters", 16000, 1), ("three filters", 44100, 2), ("whole barcode", 22050, 1),
    ("whole barcode", 48000, 2), ("clip region", 8000, 2), ("clip region", 48000, 1)]


@pytest.mark.parametrize(("name", "sr", "channels"), CASES)
def test_blocks_give_the_whole_clip_bytes(monkeypatch, name, sr, channels):
    monkeypatch.setattr(transform_module, "FFT_BLOCK_ELEMENTS", SMALL_BLOCKS)
    t = PosCUDATransform(KEY, CONFIGS[name])
    x = utterances(4.0, sr, channels, seed=sr + channels)
    label = 3
    got, reads = by_blocks(t, x, label, sr)
    assert torch.equal(got, whole(t, x, label, sr)) and torch.equal(got, reference(t, x, label, sr))
    # every pass reads the clip in order from its start, a block at a time
    assert sum(start == 0 for start, _ in reads) >= 2
    assert all(a[1] == b[0] for a, b in itertools.pairwise(reads) if b[0] != 0)
    assert max(stop - start for start, stop in reads) <= SMALL_BLOCKS
    assert x.shape[-1] > 2 * group_samples(t, x.shape[-1], sr, channels, 3 if name == "three filters" else 2)


@pytest.mark.parametrize(("sr", "channels"), [(8000, 1), (16000, 2), (44100, 1)])
def test_fades_across_block_edges(monkeypatch, sr, channels):
    """Segment boundaries inside blocks and cross-fades over a block's edge: a length where one does."""
    monkeypatch.setattr(transform_module, "FFT_BLOCK_ELEMENTS", SMALL_BLOCKS)
    t = PosCUDATransform(KEY, CONFIGS["clip region"])
    n = next(n for n in range(3 * sr, 4 * sr, sr // 50) if straddling_fades(t, n, sr, channels, 1))
    x = utterances(n / sr, sr, channels, seed=n)
    assert torch.equal(by_blocks(t, x, 1, sr)[0], whole(t, x, 1, sr))


@pytest.mark.parametrize("sr", RATES)
def test_level_scaling_is_the_whole_clips(monkeypatch, sr):
    """A loud burst in one block passes full scale once filtered: the clip's one factor, found in one block, scales
    every block; the other blocks, within the level, do not change it."""
    monkeypatch.setattr(transform_module, "FFT_BLOCK_ELEMENTS", SMALL_BLOCKS)
    scaled = []
    real = transform_module._scaled_back
    monkeypatch.setattr(transform_module, "_scaled_back", lambda *a: scaled.append(1) or real(*a))
    t = PosCUDATransform(KEY, CONFIGS["default"])
    for channels in (1, 2):
        x = utterances(4.0, sr, channels, seed=7, loud=0.1)
        burst = slice(int(2.2 * sr), int(2.3 * sr))
        x[:, burst] = torch.sign(x[:, burst]) * 0.999  # a square burst at full scale: the boosts pass it
        got, _ = by_blocks(t, x, 1, sr)
        want = reference(t, x, 1, sr)
        assert torch.equal(got, want) and torch.equal(got, whole(t, x, 1, sr)) and float(got.abs().max()) <= 1.0
    assert len(scaled) >= 6  # reference, whole and block paths, mono and stereo: the limiter ran in each


def test_clips_just_over_the_threshold_at_default_blocks():
    """Production block sizes: a 300 s clip at 16 kHz spans three FFT groups; the map's threshold is exclusive."""
    sr = 16000
    t = PosCUDATransform(KEY)
    x = utterances(300.0, sr, seed=1)
    assert torch.equal(by_blocks(t, x, 2, sr)[0], whole(t, x, 2, sr))
    for sr in RATES:
        limit = 5 * sr
        clips = [utterances((limit + extra) / sr, sr, seed=extra) for extra in (0, 1)]
        items = [{"bytes": wav_bytes(c[0].numpy(), sr), "path": f"c{i}.wav"} for i, c in enumerate(clips)]
        batch = {"audio": items, "label": [0, 1]}
        bounded = PosCUDA(KEY, max_batch_samples=limit)
        assert [bounded._in_blocks(bounded_clip) for bounded_clip in _clips(items)] == [False, True]
        assert _out(bounded(batch)) == _out(PosCUDA(KEY, max_batch_samples=None)(batch))


def _clips(items: list[dict]) -> list:
    from hf_poscuda.audio_io import open_clip

    return [open_clip(item, i) for i, item in enumerate(items)]


def _out(columns: dict) -> list[bytes]:
    return [bytes(a["bytes"]) for a in columns["audio"]]


def _long_dataset(sr: int = 8000, channels: int = 1, decode: bool = False, flac_source: bool = False) -> Dataset:
    rows, labels = [], []
    for i, seconds in enumerate([0.5, 7.3, 1.0, 12.0]):
        x = utterances(seconds, sr, channels, seed=i).numpy()
        buffer = io.BytesIO()
        sf.write(buffer, x.T, sr, format="FLAC" if flac_source else "WAV", subtype="PCM_16")
        rows.append({"bytes": buffer.getvalue(), "path": f"clip_{i}.{'flac' if flac_source else 'wav'}"})
        labels.append(i % 3)
    features = Features({"audio": Audio(decode=decode), "label": ClassLabel(names=["a", "b", "c"])})
    return Dataset.from_dict({"audio": rows, "label": labels}, features=features)


def _bytes(ds: Dataset) -> list[bytes]:
    return [a["bytes"] for a in ds.cast_column("audio", Audio(decode=False))["audio"]]


@pytest.mark.parametrize("output_format", ["wav", "flac"])
@pytest.mark.parametrize("channels", [1, 2])
def test_map_by_blocks_gives_the_bytes_of_the_padded_path(monkeypatch, output_format, channels):
    monkeypatch.setattr(transform_module, "FFT_BLOCK_ELEMENTS", SMALL_BLOCKS)
    calls = []
    real = PosCUDA._protect_in_blocks
    monkeypatch.setattr(PosCUDA, "_protect_in_blocks", lambda self, *a: calls.append(a[0].frames) or real(self, *a))
    for decode, flac_source in ((False, False), (True, True)):
        ds = _long_dataset(channels=channels, decode=decode, flac_source=flac_source)
        blocked = _bytes(ds.map(PosCUDA(KEY, output_format=output_format, max_batch_samples=20000), batched=True))
        padded = _bytes(ds.map(PosCUDA(KEY, output_format=output_format, max_batch_samples=None), batched=True))
        assert blocked == padded
    assert sorted(set(calls)) == [int(7.3 * 8000), 12 * 8000]  # only the clips over the bound


def test_arrays_and_random_taps_go_the_way_they_can():
    """A decoded array is read by blocks from memory; a random-tap config protects a long clip whole, alone."""
    x = utterances(12.0, 8000, seed=3)[0].numpy()
    raw = Dataset.from_dict({"audio": [{"bytes": wav_bytes(x, 8000, "FLOAT"), "path": None}], "label": [1]})
    want = _bytes(raw.map(PosCUDA(KEY, max_batch_samples=None), batched=True))
    arrays = {"audio": [{"array": x, "sampling_rate": 8000}], "label": [1]}
    assert _out(PosCUDA(KEY, max_batch_samples=10000)(arrays)) == want
    v01 = PosCUDAConfig.from_preset("v0.1")
    fn = PosCUDA(KEY, v01, max_batch_samples=10000)
    assert not fn._in_blocks(_clips(raw["audio"])[0])
    assert _bytes(raw.map(fn, batched=True)) == _bytes(raw.map(PosCUDA(KEY, v01, max_batch_samples=None),
                                                               batched=True))
    with pytest.raises(ValueError, match="segment or barcode config"):
        fn.transform.protect_in_blocks(lambda a, b: torch.zeros(1, b - a), lambda s, b: None, 10, 0, 8000)


def test_nan_in_a_long_clip_is_refused_with_its_row():
    x = utterances(3.0, 8000)[0].numpy()
    x[20000] = np.nan
    ds = Dataset.from_dict({"audio": [{"bytes": wav_bytes(x, 8000, "FLOAT"), "path": "bad.wav"}], "label": [0]})
    with pytest.raises(ValueError, match="NaN or infinite.*bad.wav"):
        PosCUDA(KEY, max_batch_samples=1000)(ds.cast_column("audio", Audio(decode=False))[:1])


def test_streaming_engine_protects_long_clips_by_blocks(monkeypatch, tmp_path):
    """``protected_stream`` runs the same callable: a long clip goes by blocks there too, with the same bytes."""
    import pyarrow as pa

    from hf_poscuda import streaming

    calls = []

    class SmallBound(PosCUDA):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "max_batch_samples": 20000})

        def _protect_in_blocks(self, clip, label, device):
            calls.append(clip.frames)
            return super()._protect_in_blocks(clip, label, device)

    monkeypatch.setattr(streaming, "PosCUDA", SmallBound)
    ds = _long_dataset()
    ds.save_to_disk(str(tmp_path / "long"))
    stream = streaming.protected_stream(str(tmp_path / "long"), KEY)
    got = pa.concat_tables(list(stream.tables(0)))
    assert [a["bytes"] for a in got.column("audio").to_pylist()] == _bytes(ds.map(PosCUDA(KEY), batched=True))
    assert sorted(calls) == [int(7.3 * 8000), 12 * 8000]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("channels", [1, 2])
def test_cuda_blocks_give_the_cuda_whole_clip(monkeypatch, channels):
    monkeypatch.setattr(transform_module, "FFT_BLOCK_ELEMENTS", SMALL_BLOCKS)
    t = PosCUDATransform(KEY)
    x = utterances(9.0, 16000, channels, seed=5)
    x[:, 40000:41000] = torch.sign(x[:, 40000:41000]) * 0.999  # and a block that needs the level scaled
    got, _ = by_blocks(t, x.cuda(), 2, 16000)
    want = whole(t, x.cuda(), 2, 16000)
    assert got.device.type == "cuda" and got.dtype == torch.float32 and torch.equal(got, want)
    torch.testing.assert_close(got.cpu(), whole(t, x, 2, 16000), rtol=1e-4, atol=1e-5)


def test_a_float_wav_too_large_for_one_arrow_value_is_refused_before_any_work():
    ten_hours = np.broadcast_to(np.zeros(1, np.float32), (1, 10 * 3600 * 16000))  # no memory behind it
    batch = {"audio": [{"array": ten_hours, "sampling_rate": 16000}], "label": [0]}
    with pytest.raises(ValueError, match=r"2.30 GB float WAV.*at most 2 GiB \(9.3 h.*output_format='flac'"):
        PosCUDA(KEY)(batch)
