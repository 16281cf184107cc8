"""Audio quality between original and protected clips: SNR, segmental SNR, log-spectral distance, PESQ, STOI.

PESQ and STOI need the optional ``pesq`` and ``pystoi`` packages (``pip install hf-poscuda[eval]``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

STOI_MIN_SECONDS = 0.4  # pystoi works on 384 ms frames at 10 kHz; shorter clips give meaningless scores


def _pair(original: np.ndarray, protected: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(original, dtype=np.float64)
    y = np.asarray(protected, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"original and protected must have the same shape, got {x.shape} and {y.shape}.")
    return x, y


def paired_clips(
    original: Any, protected: Any, max_clips: int, audio_column: str = "audio"
) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
    """Yield ``(original, protected, sampling_rate)``, float32 ``[channels, samples]``, for up to ``max_clips``
    evenly spaced rows. Both datasets must have the same rows in the same order (as ``map`` keeps them).
    """
    from datasets import Audio

    from .audio_io import read_clip

    rows = np.unique(np.linspace(0, len(original) - 1, num=min(max_clips, len(original))).astype(int)).tolist()
    a = original.cast_column(audio_column, Audio(decode=False)).select(rows)[audio_column]
    b = protected.cast_column(audio_column, Audio(decode=False)).select(rows)[audio_column]
    for row, (x_item, y_item) in enumerate(zip(a, b, strict=True)):
        x, sr, _ = read_clip(x_item, row, audio_column)
        y, _, _ = read_clip(y_item, row, audio_column)
        yield x, y, sr


def window_size(sampling_rate: int, seconds: float) -> int:
    """The power of two at or above ``seconds`` of samples: an FFT window for spectra of that resolution.

    Example:

    ```py
    >>> from hf_poscuda.quality import window_size
    >>> window_size(8000, 0.032), window_size(16000, 0.032)
    (256, 512)

    ```
    """
    return int(2 ** math.ceil(math.log2(seconds * sampling_rate)))


def dataset_snr(raw: Any, protected: Any, column: str = "audio", max_clips: int = 500) -> tuple[float, int]:
    """SNR of ``protected`` against ``raw`` over up to ``max_clips`` evenly spaced row pairs together (total signal
    energy over total change energy, in dB), and how many clips it was measured on."""
    signal = noise = 0.0
    clips = 0
    for x, y, _ in paired_clips(raw, protected, max_clips, column):
        s, n = energies(x, y)
        signal, noise, clips = signal + s, noise + n, clips + 1
    return energy_ratio_db(signal, noise), clips


def energies(original: np.ndarray, protected: np.ndarray) -> tuple[float, float]:
    """``(signal, change)``: the energy of ``original`` and of ``protected - original`` (float64 sums)."""
    x = np.asarray(original, dtype=np.float64)
    return float((x**2).sum()), float(((np.asarray(protected, dtype=np.float64) - x) ** 2).sum())


def energy_ratio_db(signal: float, noise: float) -> float:
    """``10 log10(signal / noise)`` for summed energies (the SNR over one or many clips); ``inf`` when ``noise``
    is 0. The one place every SNR of the package (summaries, quality, countermeasure costs) is computed.

    Example:

    ```py
    >>> from hf_poscuda.quality import energy_ratio_db
    >>> energy_ratio_db(100.0, 1.0), energy_ratio_db(1.0, 0.0)
    (20.0, inf)

    ```
    """
    if noise == 0.0:
        return math.inf
    return 10.0 * math.log10(max(signal, 1e-20) / noise)


def snr_db(original: np.ndarray, protected: np.ndarray) -> float:
    """Signal-to-noise ratio (dB) of ``protected`` against ``original``; ``inf`` when they are equal."""
    x, y = _pair(original, protected)
    return energy_ratio_db(*energies(x, y))


def segmental_snr_db(
    original: np.ndarray, protected: np.ndarray, sampling_rate: int, frame_seconds: float = 0.02
) -> float:
    """Mean per-frame SNR (dB), each frame clamped to [-10, 35] dB as is customary; silent frames skipped."""
    x, y = _pair(original, protected)
    x, y = x.reshape(-1, x.shape[-1]).mean(0), y.reshape(-1, y.shape[-1]).mean(0)
    n = max(1, int(frame_seconds * sampling_rate))
    frames = len(x) // n
    if frames == 0:
        return float(np.clip(snr_db(x, y), -10, 35))
    xs, ds = x[: frames * n].reshape(frames, n), (y - x)[: frames * n].reshape(frames, n)
    s, d = (xs**2).sum(1), (ds**2).sum(1)
    keep = s > 1e-10
    if not keep.any():
        return 35.0
    per = 10 * np.log10(s[keep] / np.maximum(d[keep], 1e-20))
    return float(np.clip(per, -10, 35).mean())


def log_spectral_distance(original: np.ndarray, protected: np.ndarray, n_fft: int = 512) -> float:
    """Root-mean-square difference (dB) of the log power spectra, averaged over frames."""
    x, y = _pair(original, protected)
    x, y = x.reshape(-1, x.shape[-1]).mean(0), y.reshape(-1, y.shape[-1]).mean(0)
    hop = n_fft // 2
    if len(x) < n_fft:
        x, y = np.pad(x, (0, n_fft - len(x))), np.pad(y, (0, n_fft - len(y)))
    window = np.hanning(n_fft)
    idx = np.arange(0, len(x) - n_fft + 1, hop)[:, None] + np.arange(n_fft)[None, :]
    px = np.abs(np.fft.rfft(x[idx] * window)) ** 2 + 1e-10
    py = np.abs(np.fft.rfft(y[idx] * window)) ** 2 + 1e-10
    return float(np.mean(np.sqrt(np.mean((10 * np.log10(px / py)) ** 2, axis=1))))


def pesq_score(original: np.ndarray, protected: np.ndarray, sampling_rate: int) -> float:
    """PESQ (ITU-T P.862) MOS-LQO: narrowband at 8 kHz, wideband at 16 kHz; other rates are resampled to 16 kHz.

    Returns NaN when PESQ cannot score the clip (e.g. no utterance detected).
    """
    try:
        from pesq import NoUtterancesError, pesq
    except ImportError as err:
        raise ImportError("PESQ needs the 'pesq' package: pip install 'hf-poscuda[eval]'") from err
    x, y = _pair(original, protected)
    x, y = x.reshape(-1, x.shape[-1]).mean(0), y.reshape(-1, y.shape[-1]).mean(0)
    if sampling_rate not in (8000, 16000):
        x, y = change_rate(x, sampling_rate, 16000), change_rate(y, sampling_rate, 16000)
        sampling_rate = 16000
    mode = "nb" if sampling_rate == 8000 else "wb"
    try:
        return float(pesq(sampling_rate, x.astype(np.float32), y.astype(np.float32), mode))
    except NoUtterancesError:
        return math.nan
    except Exception as err:  # the C library reports short/odd clips with generic errors
        logger.debug("PESQ failed on a clip: %s", err)
        return math.nan


def stoi_score(original: np.ndarray, protected: np.ndarray, sampling_rate: int) -> float:
    """STOI intelligibility in [0, 1]; NaN for clips shorter than 0.4 s, where it is meaningless."""
    try:
        from pystoi import stoi
    except ImportError as err:
        raise ImportError("STOI needs the 'pystoi' package: pip install 'hf-poscuda[eval]'") from err
    x, y = _pair(original, protected)
    x, y = x.reshape(-1, x.shape[-1]).mean(0), y.reshape(-1, y.shape[-1]).mean(0)
    if len(x) < STOI_MIN_SECONDS * sampling_rate:
        return math.nan
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        score = float(stoi(x, y, sampling_rate, extended=False))
    return math.nan if score <= 1e-5 else score  # pystoi returns 1e-5 when too few non-silent frames remain


def measure_quality(
    original: Any, protected: Any, max_clips: int = 100, audio_column: str = "audio", perceptual: bool | None = None
) -> dict[str, Any]:
    """Mean PESQ, STOI (clips >= 0.4 s), SNR, segmental SNR and log-spectral distance on evenly spaced clips.

    Args:
        original (`datasets.Dataset`), protected (`datasets.Dataset`): the same rows before and after protection.
        max_clips (`int`, defaults to `100`): how many evenly spaced clips to score.
        audio_column (`str`, defaults to `"audio"`): the Audio column.
        perceptual (`bool`, *optional*): also score PESQ and STOI; by default only when the optional ``pesq``
            and ``pystoi`` packages are installed (otherwise those metrics are NaN).

    Returns:
        `dict`: ``{metric: mean}`` for ``pesq``, ``stoi``, ``snr_db``, ``segmental_snr_db``, ``lsd_db``, plus
        ``{metric}_clips`` (clips the metric could score), ``snr_db_overall`` (energy ratio over all clips) and
        ``clips``.
    """
    if perceptual is None:
        perceptual = _have("pesq") and _have("pystoi")
    scores: dict[str, list[float]] = {"pesq": [], "stoi": [], "snr_db": [], "segmental_snr_db": [], "lsd_db": []}
    signal = noise = 0.0
    clips = 0
    for x, y, sr in paired_clips(original, protected, max_clips, audio_column):
        scores["pesq"].append(pesq_score(x, y, sr) if perceptual else math.nan)
        scores["stoi"].append(stoi_score(x, y, sr) if perceptual else math.nan)
        scores["snr_db"].append(snr_db(x, y))
        scores["segmental_snr_db"].append(segmental_snr_db(x, y, sr))
        scores["lsd_db"].append(log_spectral_distance(x, y))
        s, n = energies(x, y)
        signal, noise, clips = signal + s, noise + n, clips + 1
    out: dict[str, Any] = {"clips": clips}
    for name, values in scores.items():
        v = np.asarray(values, dtype=np.float64)
        v = v[np.isfinite(v)]
        out[name] = float(v.mean()) if len(v) else math.nan
        out[f"{name}_clips"] = int(len(v))
    out["snr_db_overall"] = energy_ratio_db(signal, noise)
    return out


def _have(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def change_rate(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Polyphase resampling of ``x`` (along its last axis) from ``sr_in`` to ``sr_out``; ``x`` itself if equal."""
    if sr_in == sr_out:
        return x
    from scipy.signal import resample_poly

    g = math.gcd(sr_in, sr_out)
    return resample_poly(x, sr_out // g, sr_in // g, axis=-1)
