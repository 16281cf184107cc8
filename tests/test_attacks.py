"""Countermeasures: each one changes audio as documented and keeps shape and sampling rate."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from datasets import DatasetDict

from hf_poscuda import PosCUDAConfig
from hf_poscuda.evaluation import ATTACKS, ModelSpec, TrainingRecipe, evaluate_protection, get_attack
from hf_poscuda.evaluation.attacks import (
    add_noise,
    attack_quality,
    blind_eq,
    cmvn,
    mixup,
    random_eq,
    random_eq_tv,
    sliding_eq,
    spec_augment,
)
from hf_poscuda.evaluation.report import attacks_markdown, build_report, report_markdown
from tests.conftest import make_dataset, speechlike

SR = 8000


def tone(freq: float, n: int = SR, amp: float = 0.3) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(n) / SR)).astype(np.float32)


def level_db(x: np.ndarray, freq: float) -> float:
    """Amplitude (dB) of ``freq`` in the middle half of ``x`` (edges of filtfilt/codec excluded)."""
    mid = x[len(x) // 4 : 3 * len(x) // 4]
    t = np.arange(len(mid)) / SR
    c = np.abs(np.dot(mid, np.exp(-2j * np.pi * freq * t))) * 2 / len(mid)
    return 20 * np.log10(c + 1e-12)


@pytest.fixture
def batch() -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.stack([speechlike(rng, SR, SR) for _ in range(4)])


@pytest.mark.parametrize("name", [n for n, a in ATTACKS.items() if a.waveform is not None])
def test_waveform_countermeasures_keep_shape_and_change_audio(name, batch):
    out = get_attack(name).apply(batch, SR, np.random.default_rng(1))
    assert out.shape == batch.shape and out.dtype == np.float32
    assert np.isfinite(out).all() and not np.array_equal(out, batch)


def test_time_shift_is_a_bounded_shift(batch):
    out = get_attack("time_shift").apply(batch, SR, np.random.default_rng(3))
    limit = int(0.2 * SR)
    for x, y in zip(batch, out, strict=True):
        shifts = [s for s in range(-limit, limit + 1)
                  if np.array_equal(y[max(s, 0): SR + min(s, 0)], x[max(-s, 0): SR - max(s, 0)])]
        assert shifts, "output is not a shifted copy of the input"


def test_random_crop_keeps_one_window_of_at_least_70_percent(batch):
    out = get_attack("random_crop").apply(batch, SR, np.random.default_rng(4))
    for x, y in zip(batch, out, strict=True):
        nz = np.flatnonzero(y)
        window = y[nz[0] : nz[-1] + 1]
        found = any(np.array_equal(window, x[i : i + len(window)]) for i in range(SR - len(window) + 1))
        assert found and nz[-1] - nz[0] + 1 <= SR


@pytest.mark.parametrize(
    "name, kept, removed",
    [("lowpass", 500, 3000), ("resample", 1000, 3000), ("bandlimit", 1000, 100)],
)
def test_filters_remove_the_documented_band(name, kept, removed):
    x = np.stack([tone(kept) + tone(removed)])
    y = get_attack(name).apply(x, SR, np.random.default_rng(0))[0]
    assert abs(level_db(y, kept) - level_db(x[0], kept)) < 1.0
    assert level_db(y, removed) < level_db(x[0], removed) - 30


def test_preemphasis_and_sharpen_boost_high_frequencies():
    x = np.stack([tone(200) + tone(3500)])
    y = get_attack("preemphasis").apply(x, SR, np.random.default_rng(0))
    assert np.allclose(y[0, 1:], x[0, 1:] - 0.97 * x[0, :-1], atol=1e-6)
    for name in ("preemphasis", "sharpen"):
        y = get_attack(name).apply(x, SR, np.random.default_rng(0))[0]
        gain_high = level_db(y, 3500) - level_db(x[0], 3500)
        gain_low = level_db(y, 200) - level_db(x[0], 200)
        assert gain_high > gain_low + 5, name


@pytest.mark.parametrize("name", ["mp3", "opus"])
def test_codecs_round_trip_aligned_and_lossy(name, batch):
    y = get_attack(name).apply(batch, SR, np.random.default_rng(0))
    for a, b in zip(batch, y, strict=True):
        snr = 10 * np.log10((a**2).sum() / ((a - b) ** 2).sum())
        assert 3 < snr < 60  # close to the input, but not equal
    # alignment, on noise (speech is periodic, so its correlation peaks repeat at the pitch period)
    noise = np.convolve(np.random.default_rng(5).standard_normal(SR), np.ones(3) / 3, "same").astype(np.float32)
    b = get_attack(name).apply(0.1 * noise[None], SR, np.random.default_rng(0))[0]
    lags = [np.dot(noise[200:-200], b[200 + k : len(b) - 200 + k]) for k in range(-100, 101)]
    assert abs(int(np.argmax(lags)) - 100) <= 1  # no codec delay left


@pytest.mark.parametrize("snr_db", [10.0, 20.0, 30.0])
def test_noise_hits_its_snr_and_is_fresh_each_call(batch, snr_db):
    rng = np.random.default_rng(0)
    y1, y2 = add_noise(batch, SR, rng, snr_db=snr_db), add_noise(batch, SR, rng, snr_db=snr_db)
    measured = 10 * np.log10((batch.astype(np.float64) ** 2).sum() / ((y1 - batch) ** 2).sum())
    assert abs(measured - snr_db) < 0.5 and not np.array_equal(y1, y2)


def test_mixup_mixes_audio_and_labels_with_the_same_weights(batch):
    targets = np.eye(4, dtype=np.float32)
    audio, mixed = mixup(batch, targets, np.random.default_rng(0))
    assert np.allclose(mixed.sum(1), 1.0) and audio.shape == batch.shape
    assert not np.array_equal(audio, batch)
    for i in range(4):
        others = [j for j in np.flatnonzero(mixed[i]) if j != i]  # one-hot targets: the partner's class
        if not others:  # paired with itself
            assert np.allclose(audio[i], batch[i], atol=1e-6)
            continue
        lam, partner = mixed[i, i], others[0]
        assert np.allclose(audio[i], lam * batch[i] + (1 - lam) * batch[partner], atol=1e-5)


def test_spec_augment_masks_bands_and_frames():
    spec = torch.randn(3, 40, 100)
    out = spec_augment(spec, torch.Generator().manual_seed(0), max_freq=8, max_time=10)
    assert out.shape == spec.shape and not torch.equal(out, spec)
    changed = (out != spec).float()
    assert changed.mean() < 0.6  # masks, not a rewrite
    assert not torch.equal(spec_augment(spec, torch.Generator().manual_seed(1)), out)


def test_unknown_countermeasure_lists_the_known_ones():
    with pytest.raises(ValueError, match="mp3"):
        get_attack("jpeg")
    assert get_attack("specaugment").applies_to("logmel_cnn") and not get_attack("specaugment").applies_to("raw_cnn")


def test_attack_quality_is_what_the_countermeasure_costs(batch):
    q = attack_quality(batch, SR, get_attack("noise-10db"))
    assert abs(q["snr_db"] - 10) < 0.5 and 1.0 <= q["pesq"] < 3.5
    assert attack_quality(batch, SR, get_attack("mixup"))["clips"] == 0


def test_evaluation_runs_countermeasures_and_reports_them(key):
    data = DatasetDict({"train": make_dataset(24, num_classes=2), "test": make_dataset(8, num_classes=2, seed=3)})
    entry = evaluate_protection(
        data, key, PosCUDAConfig(), [ModelSpec("logmel_cnn"), ModelSpec("raw_cnn")],
        TrainingRecipe(epochs=1, batch_size=8, clip_seconds=0.5), quality_clips=4,
        attacks=["mp3", "specaugment", "mixup", "time_shift"],
    )
    assert set(entry["attacks"]) == {"mp3", "specaugment", "mixup", "time_shift"}
    assert set(entry["attacks"]["specaugment"]["models"]) == {"logmel_cnn"}  # raw audio has no spectrogram
    assert set(entry["attacks"]["mp3"]["models"]) == {"logmel_cnn", "raw_cnn"}
    assert entry["attacks"]["mp3"]["kind"] == "preprocess" and np.isfinite(entry["attacks"]["mp3"]["quality"]["pesq"])
    report = build_report([entry], TrainingRecipe(epochs=1), "tiny")
    table = attacks_markdown(report, entry["name"])
    assert "| protected + `specaugment`" in table and "| n/a |" in table
    assert table in report_markdown(report)
    entry["attacks"]["mp3"]["clean_models"] = {"raw_cnn": {"test_accuracy": 0.875}}  # a clean-data baseline
    assert "[clean: 87.5 %]" in attacks_markdown(build_report([entry], TrainingRecipe(epochs=1), "tiny"), entry["name"])
    with pytest.raises(ValueError, match="Unknown countermeasure"):
        evaluate_protection(data, key, PosCUDAConfig(), [ModelSpec("raw_cnn")], attacks=["nope"])


# ------------------------------------------------------------------ equalisation and random-EQ countermeasures
def _filtered(batch: np.ndarray, taps: np.ndarray) -> np.ndarray:
    return np.stack([np.convolve(x, taps, mode="same") for x in batch]).astype(np.float32)


def test_blind_eq_divides_out_a_fixed_channel(batch):
    """A time-invariant (zero-phase) filter, i.e. a recording channel, is mostly gone after blind EQ: filtered
    and unfiltered clips come out much closer than they went in."""
    taps = np.zeros(65)
    taps[32], taps[[24, 40]], taps[[14, 50]] = 1.0, -0.35, 0.2  # a strong symmetric colouring
    coloured = _filtered(batch, taps)
    rng = np.random.default_rng(0)
    eq_clean, eq_coloured = blind_eq(batch, SR, rng), blind_eq(coloured, SR, rng)
    unit = lambda a: a / np.sqrt((a**2).mean())  # noqa: E731
    rel = lambda a, b: float(((a - b) ** 2).sum() / (b**2).sum())  # noqa: E731
    assert rel(eq_coloured, eq_clean) < 0.4 * rel(unit(coloured), unit(batch))
    np.testing.assert_allclose(np.sqrt((eq_clean**2).mean(1)), np.sqrt((batch**2).mean(1)), rtol=1e-4)  # RMS kept


def test_sliding_eq_follows_a_change_along_the_clip():
    """A colouring switched halfway through: blind EQ leaves the switch, a sliding window removes most of it."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 2 * SR)).astype(np.float32) * 0.1
    lowpassed = _filtered(x, np.hanning(9) / np.hanning(9).sum())
    switched = np.concatenate([x[:, :SR], lowpassed[:, SR:]], axis=1)
    high = lambda y: level_db_band(y[0, SR + SR // 4 : 2 * SR - SR // 4], 3000) - level_db_band(  # noqa: E731
        y[0, SR // 4 : SR - SR // 4], 3000
    )
    assert high(switched) < -10
    assert high(blind_eq(switched, SR, rng)) < -6  # one equaliser cannot undo a change along the clip
    assert high(sliding_eq(switched, SR, rng)) > high(blind_eq(switched, SR, rng)) + 4


def level_db_band(x: np.ndarray, freq: float, width: float = 400.0) -> float:
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / SR)
    return 10 * np.log10(spec[(f > freq - width / 2) & (f < freq + width / 2)].mean() + 1e-20)


def test_random_eq_is_smooth_bounded_and_fresh(batch):
    rng = np.random.default_rng(2)
    a, b = random_eq(batch, SR, rng), random_eq(batch, SR, rng)
    assert a.shape == batch.shape and not np.array_equal(a, b)
    gain = np.abs(np.fft.rfft(a[0])) / (np.abs(np.fft.rfft(batch[0])) + 1e-12)
    f = np.fft.rfftfreq(SR, 1 / SR)
    strong = np.abs(np.fft.rfft(batch[0])) > 1e-2 * np.abs(np.fft.rfft(batch[0])).max()
    db = 20 * np.log10(gain[strong & (f > 60)])
    assert db.max() <= 10.01 and db.min() >= -10.01 and db.std() > 1.0


def test_random_eq_tv_changes_the_colouring_along_the_clip():
    x = np.random.default_rng(3).standard_normal((8, SR)).astype(np.float32) * 0.1

    def spread_db(y: np.ndarray) -> float:  # largest change of the 2 kHz gain between 125 ms frames of one clip
        frames = range(SR // 8, SR - SR // 8, SR // 8)
        return max(
            np.ptp([level_db_band(b[s : s + SR // 8], 2000) - level_db_band(a[s : s + SR // 8], 2000) for s in frames])
            for a, b in zip(x, y, strict=True)
        )

    assert spread_db(random_eq_tv(x, SR, np.random.default_rng(4))) > 4.0  # not one fixed EQ per clip
    assert spread_db(random_eq(x, SR, np.random.default_rng(4))) < 1.5


def test_cmvn_normalises_each_band_over_active_frames():
    spec = torch.randn(2, 40, 100) + torch.linspace(0, 5, 40)[None, :, None]
    spec[:, :, 80:] = math.log(1e-6)  # padding: silent frames that must not count
    out = cmvn(spec)
    active = out[:, :, :80]
    torch.testing.assert_close(active.mean(-1), torch.zeros(2, 40), atol=1e-4, rtol=0)
    torch.testing.assert_close(active.std(-1, unbiased=False), torch.ones(2, 40), atol=1e-3, rtol=0)


def test_combinations_apply_every_part_in_order(batch):
    combo = get_attack("bandlimit+blind_eq")
    assert combo.kind == "preprocess" and [p.name for p in combo.parts] == ["bandlimit", "blind_eq"]
    assert get_attack("blind_eq+random_eq_tv").kind == "augment"
    assert get_attack("cmvn+random_eq").applies_to("logmel_cnn") and not get_attack("cmvn+random_eq").applies_to(
        "raw_cnn"
    )
    for bad, message in (("mixup+specaugment", "at most one"), ("mp3+mp3", "twice"), ("mp3+nope", "Unknown")):
        with pytest.raises(ValueError, match=message):
            get_attack(bad)
    q = attack_quality(batch, SR, combo)
    assert q["clips"] == 4 and np.isfinite(q["pesq"])


def test_evaluation_runs_feature_and_combined_countermeasures(key):
    data = DatasetDict({"train": make_dataset(16, num_classes=2), "test": make_dataset(8, num_classes=2, seed=3)})
    entry = evaluate_protection(
        data, key, PosCUDAConfig(filter_family="barcode", placement="segments", filters_per_class=2, vary_cuts=2),
        [ModelSpec("logmel_cnn"), ModelSpec("raw_cnn")], TrainingRecipe(epochs=1, batch_size=8, clip_seconds=0.5),
        quality_clips=2, attacks=["cmvn", "blind_eq+random_eq"],
    )
    assert set(entry["attacks"]["cmvn"]["models"]) == {"logmel_cnn"}
    assert set(entry["attacks"]["blind_eq+random_eq"]["models"]) == {"logmel_cnn", "raw_cnn"}
    assert entry["attacks"]["cmvn"]["kind"] == "feature"


def test_class_eq_removes_a_class_filter_from_the_training_set():
    """class_eq (labelled training data only) moves each class's average spectrum to the common one: a strong static
    class filter is undone, up to the classes' own differences, while clips keep their RMS."""
    from scipy.signal import firwin2

    from hf_poscuda.evaluation.attacks import class_eq, get_attack

    rng = np.random.default_rng(0)
    sr, n = 8000, 8000
    audio = (rng.standard_normal((40, n)) * 0.1).astype(np.float32)
    labels = np.repeat([0, 1], 20)
    lowpass = firwin2(257, [0, 1500, 2000, 4000], [1, 1, 0.03, 0.03], fs=sr)  # class 1: -30 dB above 2 kHz
    filtered = audio.copy()
    filtered[20:] = np.stack([np.convolve(x, lowpass, mode="same") for x in audio[20:]]).astype(np.float32)

    def high_band_db(x: np.ndarray) -> float:
        spectrum = np.abs(np.fft.rfft(x, axis=-1)) ** 2
        return float(10 * np.log10(spectrum[:, 2500:].mean() / spectrum[:, :1500].mean()))

    assert high_band_db(filtered[20:]) - high_band_db(filtered[:20]) < -25
    out = class_eq(filtered, labels, sr)
    assert out.shape == filtered.shape and out.dtype == np.float32
    assert abs(high_band_db(out[20:]) - high_band_db(out[:20])) < 3  # the class difference is gone
    np.testing.assert_allclose(np.sqrt((out**2).mean(1)), np.sqrt((filtered**2).mean(1)), rtol=1e-4)
    attack = get_attack("class_eq")
    assert attack.kind == "dataset" and not attack.in_training
    with pytest.raises(ValueError, match="labelled"):
        attack.apply(filtered, sr, rng)
    assert get_attack("class_eq+blind_eq").kind == "dataset"
