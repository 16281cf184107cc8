"""Countermeasures an adversary can apply when training on a protected split.

Each countermeasure is a small named function. Waveform countermeasures take a batch of fixed-length mono clips
``[N, samples]`` (float32) and return a batch of the same shape and sampling rate; random ones draw from the
``numpy.random.Generator`` they are given. Two countermeasures are not waveform functions: ``mixup`` mixes
clips *and* labels, and ``specaugment`` masks the log-mel spectrogram inside the log-mel CNN.

Each has a ``kind``:

- ``"preprocess"``: applied once to the whole protected train split before training (re-encoding, filtering);
- ``"augment"``: applied afresh to every training batch (random shifts, crops, noise, mixup, masking).

:data:`ATTACKS` maps names to :class:`Attack` objects; ``hf-poscuda evaluate --attack NAME`` runs any subset.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

logger = logging.getLogger(__name__)

WaveformFn = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]
#: ``(audio [N, T], labels [N], sampling_rate) -> audio [N, T]``: a step on the labelled training set only.
LabelledFn = Callable[[np.ndarray, np.ndarray, int], np.ndarray]


def _check_batch(audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 2:
        raise ValueError(f"Countermeasures take a batch of mono clips [N, samples]; got shape {audio.shape}.")
    return audio


# ------------------------------------------------------------------------------------------ position attacks
def time_shift(
    audio: np.ndarray, sampling_rate: int, rng: np.random.Generator, max_seconds: float = 0.2
) -> np.ndarray:
    """Shift each clip by a random offset in ``[-max_seconds, max_seconds]``; the gap is filled with zeros."""
    audio = _check_batch(audio)
    out = np.zeros_like(audio)
    n = audio.shape[1]
    limit = int(round(max_seconds * sampling_rate))
    for i, shift in enumerate(rng.integers(-limit, limit + 1, size=len(audio))):
        if shift >= 0:
            out[i, shift:] = audio[i, : n - shift]
        else:
            out[i, :shift] = audio[i, -shift:]
    return out


def random_crop(
    audio: np.ndarray, sampling_rate: int, rng: np.random.Generator, min_fraction: float = 0.7
) -> np.ndarray:
    """Keep a random window of ``U(min_fraction, 1)`` of each clip, moved to a random place; zeros elsewhere."""
    audio = _check_batch(audio)
    out = np.zeros_like(audio)
    n = audio.shape[1]
    for i in range(len(audio)):
        length = max(1, int(rng.uniform(min_fraction, 1.0) * n))
        src = int(rng.integers(0, n - length + 1))
        dst = int(rng.integers(0, n - length + 1))
        out[i, dst : dst + length] = audio[i, src : src + length]
    return out


# ---------------------------------------------------------------------------------------- spectral attacks
def resample(audio: np.ndarray, sampling_rate: int, rng: np.random.Generator, factor: float = 0.5) -> np.ndarray:
    """Resample down to ``factor * sampling_rate`` and back (removes everything above the lower Nyquist)."""
    from fractions import Fraction

    from scipy.signal import resample_poly

    audio = _check_batch(audio)
    ratio = Fraction(factor).limit_denominator(16)
    down = resample_poly(audio, ratio.numerator, ratio.denominator, axis=-1)
    back = resample_poly(down, ratio.denominator, ratio.numerator, axis=-1)
    return _fit_length(back, audio.shape[1])


def lowpass(audio: np.ndarray, sampling_rate: int, rng: np.random.Generator, cutoff_hz: float = 2000.0) -> np.ndarray:
    """Zero-phase 8th-order Butterworth low-pass at ``cutoff_hz`` (capped at 45 % of the sampling rate)."""
    from scipy.signal import butter, sosfiltfilt

    audio = _check_batch(audio)
    sos = butter(8, min(cutoff_hz, 0.45 * sampling_rate), btype="lowpass", fs=sampling_rate, output="sos")
    return sosfiltfilt(sos, audio, axis=-1).astype(np.float32)


def bandlimit(
    audio: np.ndarray, sampling_rate: int, rng: np.random.Generator, low_hz: float = 300.0, high_hz: float = 3400.0
) -> np.ndarray:
    """Zero-phase band-pass to the telephone band ``[low_hz, high_hz]`` (high edge capped at 45 % of the rate)."""
    from scipy.signal import butter, sosfiltfilt

    audio = _check_batch(audio)
    high = min(high_hz, 0.45 * sampling_rate)
    sos = butter(4, [low_hz, high], btype="bandpass", fs=sampling_rate, output="sos")
    return sosfiltfilt(sos, audio, axis=-1).astype(np.float32)


def preemphasis(audio: np.ndarray, sampling_rate: int, rng: np.random.Generator, coef: float = 0.97) -> np.ndarray:
    """First-order pre-emphasis ``y[n] = x[n] - coef * x[n-1]`` (a high-frequency boost / whitening filter)."""
    audio = _check_batch(audio)
    out = audio.copy()
    out[:, 1:] -= coef * audio[:, :-1]
    return out


def sharpen(audio: np.ndarray, sampling_rate: int, rng: np.random.Generator, amount: float = 1.0) -> np.ndarray:
    """Unsharp masking: ``x + amount * (x - smooth(x))`` with a 9-tap Hann smoother (boosts high frequencies)."""
    from scipy.ndimage import convolve1d

    audio = _check_batch(audio)
    window = np.hanning(11)[1:-1]
    smooth = convolve1d(audio, window / window.sum(), axis=-1, mode="constant")
    return (audio + amount * (audio - smooth)).astype(np.float32)


# --------------------------------------------------------------------------------- equalisation (channel removal)
def _stft_setup(sampling_rate: int) -> tuple[int, int, torch.Tensor]:
    n_fft = 1 << (int(0.032 * sampling_rate) - 1).bit_length()  # 32 ms: 256 at 8 kHz, 512 at 16 kHz
    return n_fft, n_fft // 4, torch.hann_window(n_fft, dtype=torch.float64)


def _equalise(audio: np.ndarray, sampling_rate: int, window_seconds: float | None, active_db: float = 40.0) -> np.ndarray:
    """Divide each clip's STFT by its average magnitude spectrum (geometric mean over active frames), over the
    whole clip (``window_seconds=None``) or over a sliding window of frames, resynthesise, keep each clip's RMS."""
    x = torch.from_numpy(_check_batch(audio).astype(np.float64))
    n_fft, hop, window = _stft_setup(sampling_rate)
    spec = torch.stft(x, n_fft, hop, window=window, return_complex=True)  # [N, F, frames]
    mag = spec.abs()
    energy = mag.pow(2).sum(dim=1)  # [N, frames]
    active = (energy >= energy.amax(dim=-1, keepdim=True) * 10 ** (-active_db / 10)) & (energy > 0)
    logmag = torch.log(mag + 1e-9) * active[:, None, :]
    weight = active[:, None, :].to(torch.float64)
    mean = logmag.sum(-1, keepdim=True) / weight.sum(-1, keepdim=True).clamp(min=1)  # over the whole clip
    if window_seconds is not None:  # local geometric mean over the active frames within +-window/2
        half = max(1, int(round(window_seconds * sampling_rate / hop / 2)))
        box = torch.ones(1, 1, 2 * half + 1, dtype=torch.float64)
        N, Fq, T = logmag.shape
        local = torch.nn.functional.conv1d(logmag.reshape(N * Fq, 1, T), box, padding=half).reshape(N, Fq, T)
        count = torch.nn.functional.conv1d(weight[:, 0:1, :], box, padding=half)  # [N, 1, T]
        mean = torch.where(count > 0, local / count.clamp(min=1), mean)
    equalised = spec / torch.exp(mean)
    y = torch.istft(equalised, n_fft, hop, window=window, length=x.shape[-1])
    rms_in = x.pow(2).mean(-1, keepdim=True).sqrt()
    rms_out = y.pow(2).mean(-1, keepdim=True).sqrt()
    y = torch.where(rms_out > 0, y * rms_in / rms_out.clamp(min=1e-12), y)
    return y.numpy().astype(np.float32)


def class_eq(audio: np.ndarray, labels: np.ndarray, sampling_rate: int, active_db: float = 40.0) -> np.ndarray:
    """Class-wise equalisation of a labelled training set, the adaptive attack on *class-wise* filters by an
    adversary who reads the card: each class's long-term average log spectrum (over the active frames of all its
    clips; 32 ms Hann STFT, 75 % overlap) is moved to the average over all classes, by one zero-phase gain curve per
    class applied to every clip of it; each clip's RMS is kept. It removes any time-invariant class filter (random
    or designed barcode) to the STFT's resolution, along with each class's natural average spectrum; time-varying
    parts are averaged, not removed. Test audio is not touched (its labels are unknown)."""
    x = torch.from_numpy(_check_batch(audio).astype(np.float64))
    y_labels = np.asarray(labels)
    n_fft, hop, window = _stft_setup(sampling_rate)
    spec = torch.stft(x, n_fft, hop, window=window, return_complex=True)  # [N, F, frames]
    mag = spec.abs()
    energy = mag.pow(2).sum(dim=1)
    active = ((energy >= energy.amax(dim=-1, keepdim=True) * 10 ** (-active_db / 10)) & (energy > 0)).to(torch.float64)
    logsum = (torch.log(mag + 1e-9) * active[:, None, :]).sum(-1)  # [N, F]
    frames = active.sum(-1)  # [N]
    classes = np.unique(y_labels)
    class_mean = {}
    for c in classes:
        rows = torch.from_numpy(np.flatnonzero(y_labels == c))
        class_mean[c] = logsum[rows].sum(0) / frames[rows].sum().clamp(min=1)
    overall = torch.stack([class_mean[c] for c in classes]).mean(0)  # every class counts the same
    gain = torch.stack([overall - class_mean[c] for c in y_labels])  # [N, F], log
    out = torch.istft(spec * torch.exp(gain)[:, :, None], n_fft, hop, window=window, length=x.shape[-1])
    rms_in, rms_out = x.pow(2).mean(-1, keepdim=True).sqrt(), out.pow(2).mean(-1, keepdim=True).sqrt()
    out = torch.where(rms_out > 0, out * rms_in / rms_out.clamp(min=1e-12), out)
    return out.numpy().astype(np.float32)


def blind_eq(audio: np.ndarray, sampling_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Blind spectral equalisation: divide each clip's STFT (32 ms Hann, 75 % overlap) by its own long-term
    average magnitude spectrum (geometric mean over frames within 40 dB of the loudest), resynthesise and restore
    the clip's RMS. Divides out a time-invariant filter (a recording channel) to the resolution of its 32 ms
    window: the magnitude part of it, not its phase."""
    return _equalise(audio, sampling_rate, None)


def sliding_eq(
    audio: np.ndarray, sampling_rate: int, rng: np.random.Generator, window_seconds: float = 0.2
) -> np.ndarray:
    """Blind equalisation with a *local* average spectrum (geometric mean over active frames within
    ±``window_seconds``/2): an adaptive attack on filters that change along the clip slower than the window."""
    return _equalise(audio, sampling_rate, window_seconds)


def _random_gain_db(rng: np.random.Generator, n: int, freqs: np.ndarray, sampling_rate: int, max_db: float,
                    knots: int) -> np.ndarray:
    """``n`` smooth random gain curves (dB) at ``freqs``: ``knots`` log-spaced knots, gains ``U(-max_db, max_db)``,
    interpolated linearly in log frequency."""
    knot_f = np.geomspace(50.0, sampling_rate / 2, knots)
    gains = rng.uniform(-max_db, max_db, size=(n, knots))
    logf = np.log(np.clip(freqs, 50.0, None))
    return np.stack([np.interp(logf, np.log(knot_f), g) for g in gains])


def random_eq(
    audio: np.ndarray, sampling_rate: int, rng: np.random.Generator, max_db: float = 10.0, knots: int = 8
) -> np.ndarray:
    """Random-EQ augmentation: a fresh smooth random gain curve per clip (``knots`` knots, ±``max_db`` dB), applied
    to the whole clip in the frequency domain. Teaches the model to ignore fixed spectral colouring."""
    audio = _check_batch(audio)
    spec = np.fft.rfft(audio.astype(np.float64), axis=-1)
    freqs = np.fft.rfftfreq(audio.shape[1], 1.0 / sampling_rate)
    gain = 10 ** (_random_gain_db(rng, len(audio), freqs, sampling_rate, max_db, knots) / 20)
    return np.fft.irfft(spec * gain, n=audio.shape[1], axis=-1).astype(np.float32)


def random_eq_tv(
    audio: np.ndarray, sampling_rate: int, rng: np.random.Generator, max_db: float = 10.0, knots: int = 8
) -> np.ndarray:
    """Time-varying random-EQ augmentation: per clip, two random smooth gain curves (as :func:`random_eq`)
    morphed into each other along the clip with a raised cosine of random rate (1-4 Hz) and phase, applied in the
    STFT domain. Teaches the model to ignore spectral colouring that changes along the clip."""
    audio = _check_batch(audio)
    x = torch.from_numpy(audio.astype(np.float64))
    n_fft, hop, window = _stft_setup(sampling_rate)
    spec = torch.stft(x, n_fft, hop, window=window, return_complex=True)  # [N, F, T]
    N, Fq, T = spec.shape
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sampling_rate)
    g1 = _random_gain_db(rng, N, freqs, sampling_rate, max_db, knots)
    g2 = _random_gain_db(rng, N, freqs, sampling_rate, max_db, knots)
    t = np.arange(T) * hop / sampling_rate
    rate, phase = rng.uniform(1.0, 4.0, size=(N, 1)), rng.uniform(0, 2 * np.pi, size=(N, 1))
    alpha = 0.5 - 0.5 * np.cos(2 * np.pi * rate * t[None, :] + phase)  # [N, T]
    gain_db = g1[:, :, None] + alpha[:, None, :] * (g2 - g1)[:, :, None]
    y = torch.istft(spec * torch.from_numpy(10 ** (gain_db / 20)), n_fft, hop, window=window, length=audio.shape[1])
    return y.numpy().astype(np.float32)


def cmvn(logmel: torch.Tensor, active_db: float = 40.0) -> torch.Tensor:
    """Per-utterance mean and variance normalisation of each band of a ``[batch, mels, frames]`` log-mel
    spectrogram, with statistics over the clip's active frames (within ``active_db`` of its loudest frame, so
    zero padding does not count). Subtracting each band's mean log energy divides out the clip's average
    spectrum: blind equalisation in the log-mel domain."""
    frame_energy = torch.logsumexp(logmel, dim=1, keepdim=True)  # [B, 1, T]
    threshold = frame_energy.amax(dim=-1, keepdim=True) - active_db * math.log(10) / 10
    w = (frame_energy >= threshold).to(logmel.dtype)
    count = w.sum(dim=-1, keepdim=True).clamp(min=1)
    mean = (logmel * w).sum(dim=-1, keepdim=True) / count
    var = ((logmel - mean).pow(2) * w).sum(dim=-1, keepdim=True) / count
    return (logmel - mean) / (var.sqrt() + 1e-5)


# ------------------------------------------------------------------------------------------------- codecs
def mp3(audio: np.ndarray, sampling_rate: int, rng: np.random.Generator, bit_rate: int = 32000) -> np.ndarray:
    """Encode each clip as MP3 at ``bit_rate`` and decode it back (FFmpeg through torchcodec)."""
    return _codec_roundtrip(_check_batch(audio), sampling_rate, "mp3", bit_rate, codec_rate=sampling_rate)


def opus(audio: np.ndarray, sampling_rate: int, rng: np.random.Generator, bit_rate: int = 16000) -> np.ndarray:
    """Encode each clip as Opus at ``bit_rate`` (at 48 kHz, Opus's native rate) and decode it back."""
    return _codec_roundtrip(_check_batch(audio), sampling_rate, "opus", bit_rate, codec_rate=48000)


def _codec_roundtrip(audio: np.ndarray, sampling_rate: int, fmt: str, bit_rate: int, codec_rate: int) -> np.ndarray:
    from torchcodec.decoders import AudioDecoder
    from torchcodec.encoders import AudioEncoder

    from ..quality import change_rate

    out = np.empty_like(audio)
    for i, clip in enumerate(audio):
        x = change_rate(clip, sampling_rate, codec_rate).astype(np.float32)
        encoded = AudioEncoder(torch.from_numpy(np.ascontiguousarray(x))[None], sample_rate=codec_rate).to_tensor(
            format=fmt, bit_rate=bit_rate
        )
        decoded = AudioDecoder(encoded.numpy().tobytes()).get_all_samples()
        y = change_rate(decoded.data[0].numpy(), decoded.sample_rate, sampling_rate)
        out[i] = _fit_length(y[None], audio.shape[1])[0]
    return out


# ---------------------------------------------------------------------------------------------- noise
def add_noise(audio: np.ndarray, sampling_rate: int, rng: np.random.Generator, snr_db: float = 20.0) -> np.ndarray:
    """Add white Gaussian noise at ``snr_db`` relative to each clip's power (silent clips stay silent)."""
    audio = _check_batch(audio)
    power = (audio.astype(np.float64) ** 2).mean(axis=1, keepdims=True)
    scale = np.sqrt(power / 10 ** (snr_db / 10))
    return (audio + scale * rng.standard_normal(audio.shape)).astype(np.float32)


# ------------------------------------------------------------------------------ batch-level augmentations
def mixup(
    audio: np.ndarray, targets: np.ndarray, rng: np.random.Generator, alpha: float = 0.4
) -> tuple[np.ndarray, np.ndarray]:
    """Mixup (Zhang et al., 2018): each clip and its one-hot target are mixed with a random partner's.

    Args:
        audio (`np.ndarray`): ``[N, samples]``.
        targets (`np.ndarray`): ``[N, classes]`` probabilities.
        alpha (`float`, defaults to `0.4`): mixing weights are ``Beta(alpha, alpha)``.
    """
    audio = _check_batch(audio)
    lam = rng.beta(alpha, alpha, size=(len(audio), 1)).astype(np.float32)
    partner = rng.permutation(len(audio))
    return lam * audio + (1 - lam) * audio[partner], lam * targets + (1 - lam) * targets[partner]


def spec_augment(
    spec: torch.Tensor, generator: torch.Generator, freq_masks: int = 2, max_freq: int = 8, time_masks: int = 2,
    max_time: int = 10,
) -> torch.Tensor:
    """SpecAugment-style masking (Park et al., 2019) of a ``[batch, mels, frames]`` spectrogram.

    Each example gets ``freq_masks`` bands of up to ``max_freq`` mel bins and ``time_masks`` spans of up to
    ``max_time`` frames set to the example's mean value.
    """
    out = spec.clone()
    batch, mels, frames = spec.shape
    fill = spec.mean(dim=(1, 2))
    for b in range(batch):
        for size_limit, count, axis_len, axis in ((max_freq, freq_masks, mels, 1), (max_time, time_masks, frames, 2)):
            for _ in range(count):
                size = int(torch.randint(0, size_limit + 1, (1,), generator=generator))
                start = int(torch.randint(0, max(1, axis_len - size + 1), (1,), generator=generator))
                if axis == 1:
                    out[b, start : start + size, :] = fill[b]
                else:
                    out[b, :, start : start + size] = fill[b]
    return out


def _fit_length(audio: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros((audio.shape[0], n), dtype=np.float32)
    m = min(n, audio.shape[1])
    out[:, :m] = audio[:, :m]
    return out


# ------------------------------------------------------------------------------------------------ registry
AttackKind = Literal["preprocess", "augment", "feature", "dataset"]
BatchKind = Literal["mixup", "specaugment"]
FeatureKind = Literal["cmvn"]


@dataclass(frozen=True)
class Attack:
    """A named countermeasure.

    Args:
        name (`str`): registry name (``hf-poscuda evaluate --attack NAME``).
        kind (`str`): ``"preprocess"`` (a waveform step of the adversary's pipeline: applied once to the train
            *and* the test audio), ``"augment"`` (every training batch), ``"feature"`` (a step inside the
            model's feature extraction, for training and testing) or ``"dataset"`` (a step on the labelled training
            set only, once: what an adversary can do to a scraped copy before training, e.g. class-wise
            equalisation; test audio is untouched).
        description (`str`): one line for reports and cards.
        waveform (`Callable`, *optional*): ``(audio [N, T], sampling_rate, rng) -> audio [N, T]``.
        batch (`str`, *optional*): ``"mixup"`` or ``"specaugment"`` for the two non-waveform augmentations.
        feature (`str`, *optional*): ``"cmvn"`` for the log-mel normalisation.
        labelled (`Callable`, *optional*): ``(audio, labels, sampling_rate) -> audio`` for ``"dataset"`` steps.
        models (`tuple[str, ...]`, *optional*): the models it applies to (``None``: all).
        steps (`tuple[Attack, ...]`): for a combination (``"a+b"``), its parts in order; empty otherwise.
    """

    name: str
    kind: AttackKind
    description: str
    waveform: WaveformFn | None = None
    batch: BatchKind | None = None
    feature: FeatureKind | None = None
    models: tuple[str, ...] | None = None
    steps: tuple[Attack, ...] = ()
    labelled: LabelledFn | None = None

    def __post_init__(self) -> None:
        if self.steps:
            return
        if sum(x is not None for x in (self.waveform, self.batch, self.feature, self.labelled)) != 1:
            raise ValueError(f"Attack {self.name!r} needs exactly one of waveform, batch, feature or labelled.")
        if (self.labelled is not None) != (self.kind == "dataset"):
            raise ValueError(f"Attack {self.name!r}: labelled steps have kind 'dataset' and vice versa.")
        if self.batch is not None and self.kind != "augment":
            raise ValueError(f"Attack {self.name!r}: batch countermeasures are training-time augmentations.")
        if (self.feature is not None) != (self.kind == "feature"):
            raise ValueError(f"Attack {self.name!r}: feature countermeasures have kind 'feature' and vice versa.")

    @property
    def parts(self) -> tuple[Attack, ...]:
        """The single countermeasures this one is made of (itself, unless it is a combination)."""
        return self.steps or (self,)

    def applies_to(self, model: str) -> bool:
        """Whether this countermeasure can be used with ``model`` (a model name such as ``"raw_cnn"``)."""
        base = model.split(":")[0].split("-")[0]
        return all(p.models is None or base in p.models for p in self.parts)

    @property
    def in_training(self) -> bool:
        """Whether a part acts during training (an augmentation or a feature step), not only on the data."""
        return any(p.kind in ("augment", "feature") for p in self.parts)

    def apply_labelled(self, audio: np.ndarray, labels: np.ndarray, sampling_rate: int) -> np.ndarray:
        """Apply a ``"dataset"`` step to a labelled training set (same shape out)."""
        if self.labelled is None:
            raise ValueError(f"{self.name!r} is not a step on the labelled training set.")
        out = self.labelled(audio, labels, sampling_rate)
        if out.shape != np.shape(audio):
            raise RuntimeError(f"Countermeasure {self.name!r} changed the shape {np.shape(audio)} -> {out.shape}.")
        return out

    def apply(self, audio: np.ndarray, sampling_rate: int, rng: np.random.Generator) -> np.ndarray:
        """Apply a waveform countermeasure to ``[N, samples]`` clips (same shape out)."""
        if self.labelled is not None:
            raise ValueError(f"{self.name!r} needs the labels: it is a step on the labelled training set "
                             "(Attack.apply_labelled).")
        if self.waveform is None:
            raise ValueError(f"{self.name!r} is not a waveform countermeasure; it acts inside training.")
        out = self.waveform(audio, sampling_rate, rng)
        if out.shape != np.shape(audio):
            raise RuntimeError(f"Countermeasure {self.name!r} changed the shape {np.shape(audio)} -> {out.shape}.")
        return out


def _partial(fn: Callable[..., np.ndarray], **kwargs: float) -> WaveformFn:
    def call(audio: np.ndarray, sampling_rate: int, rng: np.random.Generator) -> np.ndarray:
        return fn(audio, sampling_rate, rng, **kwargs)

    call.__name__ = fn.__name__
    return call


ATTACKS: dict[str, Attack] = {
    a.name: a
    for a in [
        Attack("time_shift", "augment", "random time shift of up to ±0.2 s per clip and batch", time_shift),
        Attack("random_crop", "augment", "random 70–100 % crop moved to a random place, per clip and batch",
               random_crop),
        Attack("resample", "preprocess", "resample to half the rate and back (drops the upper half-band)", resample),
        Attack("lowpass", "preprocess", "8th-order Butterworth low-pass at 2 kHz, zero phase", lowpass),
        Attack("bandlimit", "preprocess", "telephone band-pass 300–3400 Hz, zero phase", bandlimit),
        Attack("mp3", "preprocess", "MP3 re-encoding at 32 kbit/s", mp3),
        Attack("opus", "preprocess", "Opus re-encoding at 16 kbit/s (via 48 kHz)", opus),
        Attack("noise-30db", "augment", "white noise at 30 dB SNR, fresh per batch", _partial(add_noise, snr_db=30)),
        Attack("noise-20db", "augment", "white noise at 20 dB SNR, fresh per batch", _partial(add_noise, snr_db=20)),
        Attack("noise-10db", "augment", "white noise at 10 dB SNR, fresh per batch", _partial(add_noise, snr_db=10)),
        Attack("preemphasis", "preprocess", "pre-emphasis y[n] = x[n] - 0.97 x[n-1]", preemphasis),
        Attack("sharpen", "preprocess", "unsharp masking, amount 1 (9-tap Hann smoother)", sharpen),
        Attack("mixup", "augment", "mixup of clips and labels, Beta(0.4, 0.4)", batch="mixup"),
        Attack("specaugment", "augment", "SpecAugment masks: 2 × ≤8 mel bands, 2 × ≤10 frames (log-mel CNN only)",
               batch="specaugment", models=("logmel_cnn",)),
        Attack("blind_eq", "preprocess", "blind equalisation: each clip divided by its own long-term average "
               "spectrum", blind_eq),
        Attack("sliding_eq", "preprocess", "equalisation by a local average spectrum (±0.1 s sliding window)",
               sliding_eq),
        Attack("cmvn", "feature", "per-utterance mean/variance normalisation of each log-mel band (log-mel CNN only)",
               feature="cmvn", models=("logmel_cnn",)),
        Attack("random_eq", "augment", "random smooth EQ (8 knots, ±10 dB) per clip and batch", random_eq),
        Attack("random_eq_tv", "augment", "time-varying random EQ (two ±10 dB curves morphed at 1–4 Hz) per clip "
               "and batch", random_eq_tv),
        Attack("class_eq", "dataset", "class-wise equalisation of the training set: each class's average spectrum "
               "moved to the average of all classes (needs the labels: training data only)", labelled=class_eq),
    ]
}


def get_attack(name: str) -> Attack:
    """Look up a countermeasure by name; ``"a+b+c"`` combines several (see :func:`combine`).

    Raises:
        ValueError: an unknown name (the message lists the known ones), or an impossible combination.
    """
    if "+" in name:
        return combine([get_attack(part) for part in name.split("+")])
    if name not in ATTACKS:
        raise ValueError(f"Unknown countermeasure {name!r}; choose from {list(ATTACKS)} or join several with '+'.")
    return ATTACKS[name]


def combine(parts: list[Attack]) -> Attack:
    """One countermeasure made of several: preprocessing steps run in order on the data, augmentations run in
    order on every batch, a feature step acts in the model. At most one of ``mixup``/``specaugment``.

    Example:

    ```py
    >>> from hf_poscuda.evaluation.attacks import get_attack
    >>> a = get_attack("blind_eq+random_eq_tv")
    >>> a.name, a.kind, [p.kind for p in a.parts]
    ('blind_eq+random_eq_tv', 'augment', ['preprocess', 'augment'])
    ```
    """
    flat = [p for a in parts for p in a.parts]
    if len(flat) < 2:
        raise ValueError("A combination needs at least two countermeasures.")
    if len({p.name for p in flat}) != len(flat):
        raise ValueError(f"Countermeasure listed twice in {'+'.join(p.name for p in flat)!r}.")
    if sum(p.batch is not None for p in flat) > 1 or sum(p.feature is not None for p in flat) > 1:
        raise ValueError("A combination may hold at most one of mixup/specaugment and one feature step.")
    kinds = {p.kind for p in flat}
    kind: AttackKind = ("augment" if "augment" in kinds else "feature" if "feature" in kinds
                        else "dataset" if "dataset" in kinds else "preprocess")
    models = [set(p.models) for p in flat if p.models is not None]
    return Attack(
        name="+".join(p.name for p in flat), kind=kind, description="; then ".join(p.description for p in flat),
        models=tuple(sorted(set.intersection(*models))) if models else None, steps=tuple(flat),
    )


def attack_quality(audio: np.ndarray, sampling_rate: int, attack: Attack, seed: int = 0) -> dict[str, float]:
    """What the waveform steps of a countermeasure cost the adversary: mean PESQ and overall SNR of the output
    against the input clips (``nan`` when it has no waveform step)."""
    from ..quality import energies, energy_ratio_db, pesq_score

    waveform = [p for p in attack.parts if p.waveform is not None]
    if not waveform:
        return {"pesq": math.nan, "snr_db": math.nan, "clips": 0}
    rng = np.random.default_rng(seed)
    attacked = audio
    for part in waveform:
        attacked = part.apply(attacked, sampling_rate, rng)
    scores = [pesq_score(x, y, sampling_rate) for x, y in zip(audio, attacked, strict=True)]
    finite = [s for s in scores if math.isfinite(s)]
    return {
        "pesq": float(np.mean(finite)) if finite else math.nan,
        "snr_db": energy_ratio_db(*energies(audio, attacked)),
        "clips": len(audio),
    }
