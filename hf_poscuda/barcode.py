"""Spectral barcodes: per-class filters that cut and boost key-chosen bands of a mel-spaced band layout.

A barcode is a vector of band gains in dB over ``num_bands`` bands spaced evenly on the mel scale between
``band_low_hz`` and ``band_high_hz`` (see :class:`~hf_poscuda.config.PosCUDAConfig`). Each band contributes a
raised-cosine bump one band wide on each side, so neighbouring marked bands merge into one flat cut or boost and
the gain curve is smooth. The curve is realised as a linear-phase FIR with :func:`scipy.signal.firwin2`
(frequency sampling, Hamming window): every filter of every class has the same length and delay, so
cross-fading between them never cancels (they are in phase) and the mix is again a zero-phase filter.

Which bands a class marks comes from the key. Patterns are drawn class after class, and a draw is kept only if
it differs from every earlier class's pattern in at least as many bands as it marks (relaxed step by step if a
large class count makes that impossible), so no two classes get near-identical barcodes, whatever the key.
Class ``c``'s pattern depends on the key and on the classes before it only, so it is the same whatever the number
of classes in a batch.
"""

from __future__ import annotations

import math

import numpy as np

from .config import PosCUDAConfig
from .key import PosCUDAKey

_MAX_DRAWS = 200  # draws per distance level before the required distance is relaxed by one band


def mel(hz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale."""
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def band_range_hz(config: PosCUDAConfig, sampling_rate: int) -> tuple[float, float]:
    """The layout's lower and upper edge in Hz at ``sampling_rate`` (upper capped at 45 % of the rate).

    Raises:
        ValueError: the sampling rate is too low for the layout.
    """
    high = min(config.band_high_hz, 0.45 * sampling_rate)
    if high <= config.band_low_hz:
        raise ValueError(
            f"Sampling rate {sampling_rate} Hz is too low for a barcode starting at band_low_hz="
            f"{config.band_low_hz} Hz (the layout ends at 45 % of the rate, {0.45 * sampling_rate:.0f} Hz). "
            "Lower band_low_hz or resample the audio."
        )
    return config.band_low_hz, high


def band_centres_hz(config: PosCUDAConfig, sampling_rate: int) -> np.ndarray:
    """Centre frequency of each band (Hz), evenly spaced on the mel scale."""
    low, high = band_range_hz(config, sampling_rate)
    m_low, m_high = float(mel(low)), float(mel(high))
    m = m_low + (np.arange(config.num_bands) + 0.5) * (m_high - m_low) / config.num_bands
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def gain_curve_db(
    pattern_db: np.ndarray, freqs_hz: np.ndarray, config: PosCUDAConfig, sampling_rate: int
) -> np.ndarray:
    """Gain in dB at ``freqs_hz`` of a barcode with band gains ``pattern_db`` (``[num_bands]``)."""
    low, high = band_range_hz(config, sampling_rate)
    m_low, m_high = float(mel(low)), float(mel(high))
    u = (mel(freqs_hz) - m_low) / (m_high - m_low) * config.num_bands - 0.5  # band b's centre at u = b
    dist = u[None, :] - np.arange(config.num_bands)[:, None]
    bumps = np.where(np.abs(dist) < 1.0, 0.5 + 0.5 * np.cos(np.pi * np.clip(dist, -1.0, 1.0)), 0.0)
    return np.asarray(pattern_db, dtype=np.float64) @ bumps


def design_fir(pattern_db: np.ndarray, config: PosCUDAConfig, sampling_rate: int) -> np.ndarray:
    """Linear-phase FIR taps (float64, ``config.filter_taps(sampling_rate)`` of them) for one barcode."""
    from scipy.signal import firwin2

    taps = config.filter_taps(sampling_rate)
    freqs = np.linspace(0.0, sampling_rate / 2.0, 4097)
    gains = 10.0 ** (gain_curve_db(pattern_db, freqs, config, sampling_rate) / 20.0)
    nfreqs = 1 + 2 ** int(math.ceil(math.log2(max(taps, 2) * 4)))
    return firwin2(taps, freqs, gains, nfreqs=nfreqs, fs=sampling_rate, window="hamming")


# ---------------------------------------------------------------------- band patterns (from the key)
def _permutation(key: PosCUDAKey, purpose: str, index: int, n: int) -> np.ndarray:
    return np.argsort(key.uniform(purpose, index, n), kind="stable")


def _pattern(bands: np.ndarray, cuts: int, boosts: int, cut_db: float, boost_db: float, n: int) -> np.ndarray:
    out = np.zeros(n)
    out[bands[:cuts]] = -cut_db
    out[bands[cuts : cuts + boosts]] = boost_db
    return out


def _distance(a: np.ndarray, b: np.ndarray) -> int:
    """Bands marked differently (cut / boost / untouched) in two patterns."""
    return int((np.sign(a) != np.sign(b)).sum())


def designed_static(key: PosCUDAKey, config: PosCUDAConfig, num_classes: int) -> np.ndarray:
    """The static band gains ``[num_classes, num_bands]`` of ``filter_family="designed"``, from the key's design.

    Raises:
        ValueError: the key has no design, the design is for another band layout or fewer classes, or its gains
            leave the config's ``[-cut_db, +boost_db]`` budget.
    """
    design = key.design
    if design is None:
        raise ValueError(
            "filter_family='designed' needs a key that carries a designed signature table; make one with "
            "`hf-poscuda design SOURCE --key KEY` (it writes the table into the key file), or use another preset."
        )
    if not design.matches(config.num_bands, config.band_low_hz, config.band_high_hz):
        raise ValueError(
            f"The key's design is for {design.num_bands} bands from {design.band_low_hz:g} to {design.band_high_hz:g} "
            f"Hz, but the config has {config.num_bands} bands from {config.band_low_hz:g} to {config.band_high_hz:g} "
            "Hz. Use the layout it was designed for, or design again."
        )
    if num_classes > design.num_classes:
        raise ValueError(f"The key's design covers {design.num_classes} classes, but class {num_classes - 1} was "
                         "asked for. Design it on data with every class.")
    gains = design.static_db[:num_classes]
    if gains.min(initial=0.0) < -config.cut_db - 1e-6 or gains.max(initial=0.0) > config.boost_db + 1e-6:
        raise ValueError(f"The key's design has gains from {gains.min():.1f} to {gains.max():.1f} dB, outside the "
                         f"config's budget -cut_db={-config.cut_db:g} .. +boost_db={config.boost_db:g}.")
    return gains


def class_patterns(key: PosCUDAKey, config: PosCUDAConfig, num_classes: int) -> np.ndarray:
    """Band gains in dB, ``[num_classes, filters_per_class, num_bands]``, of every class's filters.

    Each class has a *static* part (``num_cuts`` + ``num_boosts`` bands, in all its filters) and, per filter, a
    *varying* part (``vary_cuts`` + ``vary_boosts`` bands from band ``vary_from_band`` up, disjoint between its
    filters, drawn first; the static bands come from the remaining ones). A class's draw is kept when its static
    pattern differs from every earlier class's in at least as many bands as it marks, and the difference between
    its first two filters (what survives equalisation) in at least as many bands as one filter's varying part
    marks; after every ``200`` rejected draws one band less is asked for.
    """
    n, per_class = config.num_bands, config.filters_per_class
    static_n, vary_n = config.num_cuts + config.num_boosts, config.vary_cuts + config.vary_boosts
    designed = designed_static(key, config, num_classes) if config.filter_family == "designed" else None
    if designed is not None:
        static_n = 0  # the design sets the static part; only the varying parts are drawn and kept apart
    out = np.zeros((num_classes, per_class, n))
    statics: list[np.ndarray] = []
    differences: list[np.ndarray] = []
    for c in range(num_classes):
        draw = 0
        need_static = static_n + (vary_n if per_class == 1 else 0)
        need_vary = vary_n if per_class > 1 else 0
        while True:
            perm = _permutation(key, f"barcode/{draw}", c, n)
            varying = perm[perm >= config.vary_from_band][: per_class * vary_n]
            rest = perm[~np.isin(perm, varying)]
            static = (designed[c] if designed is not None
                      else _pattern(rest, config.num_cuts, config.num_boosts, config.cut_db, config.boost_db, n))
            filters = static[None, :] + np.stack([
                _pattern(varying[m * vary_n :], config.vary_cuts, config.vary_boosts, config.vary_cut_db,
                         config.vary_boost_db, n)
                for m in range(per_class)
            ])
            mean = filters.mean(axis=0) if per_class == 1 else static
            difference = filters[0] - filters[1 % per_class]
            if (designed is not None or all(_distance(mean, s) >= need_static for s in statics)) and all(
                _distance(difference, d) >= need_vary for d in differences
            ):
                break
            draw += 1
            if draw % _MAX_DRAWS == 0:  # a dense layout for this many classes: ask for one band less
                need_static, need_vary = max(0, need_static - 1), max(0, need_vary - 1)
        statics.append(mean)
        differences.append(difference)
        out[c] = filters
    return out

