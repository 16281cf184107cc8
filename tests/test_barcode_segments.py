"""Spectral barcodes and time-varying (segment) placement: filter design, key derivation, the FFT path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hf_poscuda import PRESETS, PosCUDAConfig, PosCUDATransform
from hf_poscuda.barcode import band_centres_hz, class_patterns, design_fir, gain_curve_db
from hf_poscuda.evaluation.attacks import blind_eq
from hf_poscuda.transform import class_filter_banks, class_schedule, fft_filter

SR = 8000
BARCODE = PRESETS["barcode"]
TV = BARCODE.replace(placement="segments", filters_per_class=2, vary_cuts=2, vary_from_band=0, segment_region="clip",
                     segment_seconds=None)


def noise(b: int = 4, t: int = SR, c: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, c, t, generator=torch.Generator().manual_seed(seed)) * 0.1


def response_db(taps: np.ndarray, freqs: np.ndarray, sr: int) -> np.ndarray:
    n = np.arange(len(taps)) - (len(taps) - 1) / 2
    return 20 * np.log10(np.abs(np.exp(-2j * np.pi * freqs[:, None] * n[None, :] / sr) @ taps) + 1e-12)


@pytest.mark.parametrize("sr", [8000, 16000, 44100])
def test_barcode_fir_cuts_and_boosts_the_chosen_bands(key, sr):
    cfg = BARCODE.replace(num_cuts=4, num_boosts=2, cut_db=30.0, boost_db=12.0)
    (pattern,), = class_patterns(key, cfg, 1)
    taps = design_fir(pattern, cfg, sr)
    assert len(taps) == cfg.filter_taps(sr) and len(taps) % 2 == 1
    np.testing.assert_allclose(taps, taps[::-1], atol=1e-12)  # linear phase
    centres = band_centres_hz(cfg, sr)
    got = response_db(taps, centres, sr)
    assert (pattern == -30).sum() == 4 and (pattern == 12).sum() == 2
    assert np.all(got[pattern == 12] > 9.0) and np.all(got[pattern == 12] < 13.5)
    assert np.all(got[pattern == -30] < -15.0)  # narrow low bands are shallower than 30 dB with a finite FIR
    untouched = (pattern == 0) & (np.abs(gain_curve_db(pattern, centres, cfg, sr)) < 0.5)
    assert untouched.any() and np.all(np.abs(got[untouched]) < 3.0)
    np.testing.assert_allclose(centres, band_centres_hz(cfg, 8000))  # the same bands at every rate


def test_barcode_needs_a_rate_that_holds_the_layout(key):
    with pytest.raises(ValueError, match="too low"):
        class_filter_banks(key, BARCODE.replace(band_low_hz=500.0), 1, 1000)


def test_class_patterns_are_deterministic_distinct_and_prefix_stable(key, other_key):
    cfg = TV.replace(vary_cuts=2, vary_boosts=1)
    ten = class_patterns(key, cfg, 10)
    assert ten.shape == (10, 2, cfg.num_bands)
    np.testing.assert_array_equal(class_patterns(key, cfg, 4), ten[:4])  # class c depends on classes < c only
    assert not np.array_equal(class_patterns(other_key, cfg, 10), ten)
    static = np.sign(ten[:, 0] * (ten[:, 0] == ten[:, 1]))
    for a in range(10):
        # every filter: 4 static cuts + 2 static boosts + its own 2 cuts + 1 boost; the two filters' own bands differ
        assert (ten[a] == -30).sum(axis=1).tolist() == [6, 6] and (ten[a] == 12).sum(axis=1).tolist() == [3, 3]
        assert not np.array_equal(ten[a, 0], ten[a, 1])
        for b in range(a):
            assert (static[a] != static[b]).sum() >= 6  # static parts differ in at least as many bands as they mark


def test_schedule_alternates_filters_and_jitters_boundaries(key):
    offsets, order = class_schedule(key, TV.replace(filters_per_class=3, vary_cuts=1, boundary_jitter=0.4), 5)
    assert np.all(order[1:] != order[:-1]) and set(order.tolist()) == {0, 1, 2}
    assert np.all(np.abs(offsets) <= 0.2) and np.ptp(offsets) > 0.1


def test_fft_filter_is_the_centred_convolution_for_any_length():
    g = torch.Generator().manual_seed(0)
    taps = torch.randn(3, 257, generator=g, dtype=torch.float64)
    for length in (1, 100, 5000, 70000):
        x = torch.randn(2, length, generator=g, dtype=torch.float64)
        ref = torch.stack([
            torch.nn.functional.conv1d(x[:, None], torch.flip(t, [0])[None, None], padding=128)[:, 0] for t in taps
        ])
        torch.testing.assert_close(fft_filter(x, taps), ref, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(fft_filter(x, taps, max_block_elements=1), ref, rtol=1e-9, atol=1e-9)


def test_whole_clip_barcode_is_the_class_fir(key):
    x = noise(b=3)
    labels = torch.tensor([0, 4, 4])
    y = PosCUDATransform(key, BARCODE)(x, torch.tensor([SR] * 3), labels, SR)
    banks = class_filter_banks(key, BARCODE, 5, SR)
    for i, c in enumerate(labels.tolist()):
        ref = np.convolve(x[i, 0].double().numpy(), banks[c, 0], mode="same")
        np.testing.assert_allclose(y[i, 0].numpy(), ref, rtol=1e-4, atol=2e-6)
    assert torch.equal(y[1], PosCUDATransform(key, BARCODE)(x[1:2], torch.tensor([SR]), torch.tensor([4]), SR)[0])


def test_segments_switch_filters_along_the_clip(key):
    cfg = TV.replace(num_segments=4, crossfade_seconds=0.02, boundary_jitter=0.0)
    x = noise(b=1, t=8 * SR)
    y = PosCUDATransform(key, cfg)(x, torch.tensor([8 * SR]), torch.tensor([3]), SR)[0, 0].double().numpy()
    banks = class_filter_banks(key, cfg, 4, SR)[3]
    _, order = class_schedule(key, cfg, 3)
    filtered = [np.convolve(x[0, 0].double().numpy(), taps, mode="same") for taps in banks]
    for j in range(4):  # the middle of segment j (no jitter: 2 s each) is filter order[j] exactly
        mid = slice(j * 2 * SR + SR // 2, j * 2 * SR + 3 * SR // 2)
        np.testing.assert_allclose(y[mid], filtered[order[j]][mid], rtol=1e-4, atol=2e-6)
        assert not np.allclose(y[mid], filtered[1 - order[j]][mid], atol=1e-3)
    # within a cross-fade the output lies between the two filters' outputs
    edge = 2 * SR
    a, b = filtered[order[0]][edge], filtered[order[1]][edge]
    assert min(a, b) - 1e-5 <= y[edge] <= max(a, b) + 1e-5


@pytest.mark.parametrize("filters, segments", [(2, 7), (3, 7), (3, 100)])
def test_identical_filters_make_segments_equal_to_one_filter(key, filters, segments):
    """Cross-fade weights sum to one: with every filter of a class equal, segments change nothing (also past the
    schedule's 64 entries, where a filter can follow itself and no fade may be made)."""
    same = BARCODE.replace(placement="segments", filters_per_class=filters, segment_region="clip", vary_cuts=0,
                           num_segments=segments, crossfade_seconds=0.003)
    x = noise(b=8)
    args = (torch.full((8,), SR), torch.arange(8), SR)
    torch.testing.assert_close(PosCUDATransform(key, same)(x, *args), PosCUDATransform(key, BARCODE)(x, *args))


def test_active_region_segments_cover_the_speech(key):
    x = torch.zeros(2, 1, SR)
    x[:, 0, 3000:5000] = 0.3 * torch.sin(torch.arange(2000) * 0.7)
    cfg = TV.replace(segment_region="active", num_segments=4, crossfade_seconds=0.005, boundary_jitter=0.0)
    y = PosCUDATransform(key, cfg)(x, torch.tensor([SR, SR]), torch.tensor([0, 0]), SR)
    banks = class_filter_banks(key, cfg, 1, SR)[0]
    _, order = class_schedule(key, cfg, 0)
    for j in range(4):  # four 500-sample segments inside [3000, 5000)
        mid = slice(3000 + 500 * j + 150, 3000 + 500 * j + 350)
        ref = np.convolve(x[0, 0].double().numpy(), banks[order[j]], mode="same")[mid]
        np.testing.assert_allclose(y[0, 0, mid].numpy(), ref, rtol=1e-4, atol=2e-6)


@pytest.mark.parametrize("cfg", [BARCODE, TV, TV.replace(segment_region="active", segment_seconds=0.1)])
def test_rows_do_not_depend_on_the_batch(key, cfg):
    lengths = [8000, 300, 5000, 7999, 1, 0, 12000]
    x = noise(b=7, t=12000)
    x = torch.where(torch.arange(12000)[None, None, :] < torch.tensor(lengths)[:, None, None], x, 0.0)
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 6])
    t = PosCUDATransform(key, cfg)
    together = t(x, torch.tensor(lengths), labels, SR)
    assert torch.equal(together[:, :, 8000:][0], x[0, :, 8000:])  # padding untouched
    for i, n in enumerate(lengths):
        alone = t(x[i : i + 1, :, :n], torch.tensor([n]), labels[i : i + 1], SR)
        assert torch.equal(alone, together[i : i + 1, :, :n])


def test_stereo_channels_get_the_same_filters(key):
    mono = noise(b=2)
    stereo = torch.cat([mono, 0.5 * mono], dim=1)
    args = (torch.tensor([SR, SR]), torch.tensor([0, 1]), SR)
    y = PosCUDATransform(key, TV)(stereo, *args)
    torch.testing.assert_close(y[:, 1], 0.5 * y[:, 0], rtol=1e-5, atol=1e-7)


def test_barcodes_never_clip(key):
    x = torch.sign(noise(b=3)) * 0.99
    y = PosCUDATransform(key, TV.replace(num_boosts=4, boost_db=18.0))(x, torch.tensor([SR] * 3), torch.arange(3), SR)
    assert float(y.abs().max()) <= 1.0 and not torch.equal(y, x)


def test_blind_equalisation_removes_a_whole_clip_barcode_but_not_segments(key):
    """A time-invariant filter is a recording channel: dividing each clip by its average spectrum undoes it.
    Filters that change along the clip leave a class signature behind."""
    rng = np.random.default_rng(0)
    from tests.conftest import speechlike

    clips = torch.from_numpy(np.stack([speechlike(rng, SR, SR) for _ in range(4)]))[:, None, :]
    args = (torch.tensor([SR] * 4), torch.arange(4), SR)
    reference = blind_eq(clips[:, 0].numpy(), SR, rng)

    def residual(cfg: PosCUDAConfig) -> float:
        eq = blind_eq(PosCUDATransform(key, cfg)(clips, *args)[:, 0].numpy(), SR, rng)
        return float(((eq - reference) ** 2).sum() / (reference**2).sum())

    whole = residual(BARCODE.replace(num_cuts=0, num_boosts=0, vary_cuts=4))
    segments = residual(TV.replace(num_cuts=0, num_boosts=0, vary_cuts=4))
    assert whole < 0.1 and segments > 3 * whole


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_segments_on_cuda_match_cpu_and_keep_device_dtype(key):
    cfg = TV.replace(segment_region="active")
    x = noise(b=6, t=12000)
    lengths = torch.tensor([12000, 300, 5000, 7999, 1, 8000])
    labels = torch.arange(6) % 4
    cpu = PosCUDATransform(key, cfg)(x, lengths, labels, SR)
    gpu = PosCUDATransform(key, cfg)(x.cuda(), lengths.cuda(), labels.cuda(), SR)
    assert gpu.device.type == "cuda" and gpu.dtype == x.dtype and gpu.shape == x.shape
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-5)


def test_a_class_filters_do_not_depend_on_how_many_classes_follow(key):
    """The transform grows its filter table as labels arrive: class c's filters must not depend on classes > c."""
    few, many = class_filter_banks(key, TV, 3, SR), class_filter_banks(key, TV, 12, SR)
    np.testing.assert_array_equal(few, many[:3])
    x = noise(b=3)
    args = (torch.full((3,), SR), torch.tensor([0, 1, 2]), SR)
    grown = PosCUDATransform(key, TV)
    grown(x[:1], args[0][:1], torch.tensor([5]), SR)  # a table built for 6 classes first
    torch.testing.assert_close(grown(x, *args), PosCUDATransform(key, TV)(x, *args), rtol=0, atol=0)
