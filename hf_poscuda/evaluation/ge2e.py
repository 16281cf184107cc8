"""A real pretrained adversary: the GE2E speaker encoder of the ``Resemblyzer`` wheel (0.1.4, Apache-2.0).

``resemblyzer/pretrained.pt`` holds a GE2E encoder (Wan et al., 2018) trained by Resemble AI on LibriSpeech,
VoxCeleb 1 and 2: 40 mel bands (25 ms windows, 10 ms hop, 16 kHz) into a 3-layer LSTM of 256 units, a linear layer
of 256 with ReLU, L2-normalised. It was trained elsewhere, on far more speech than this project has, which makes
it the stronger adversary the fine-tuning threat asked for. It is an *evaluation* model only: it is never used to
design a protection (held out).

The wheel's own dependencies (librosa, and webrtcvad, an sdist that needs a compiler) are not needed: install it
with ``pip install --no-deps resemblyzer==0.1.4`` (``.ci/setup`` does) and this module reads the weights file
without importing the package. The front end is implemented here and checked against the package's own numbers on
a test clip (``tests/data/ge2e_reference.json``, made by ``tests/make_ge2e_reference.py`` with librosa and the real
package). As the package does, clips are resampled to 16 kHz, normalised to -30 dBFS (louder only), and short
clips padded to one 1.6 s partial; longer ones are embedded as overlapping 1.6 s partials, averaged. Unlike the
package, long silences are not trimmed (its webrtcvad step): FSDD clips hold no long silence.

Three adversaries (``GE2E_MODES``): a linear probe on the frozen embeddings, a small MLP head on them, and
fine-tuning the encoder's last LSTM layer with a linear head (the lower two layers frozen).
"""

from __future__ import annotations

import importlib.util
import logging
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

SAMPLING_RATE = 16000
N_FFT = 400  # 25 ms
HOP = 160  # 10 ms
N_MELS = 40
PARTIAL_FRAMES = 160  # 1.6 s
TARGET_DBFS = -30.0
GE2E_MODES = ("probe", "mlp", "finetune")
INSTALL_HINT = "pip install --no-deps resemblyzer==0.1.4"


def weights_path() -> Path:
    """Path of ``resemblyzer/pretrained.pt`` in the installed wheel (found without importing the package).

    Raises:
        ImportError: the wheel is not installed.
    """
    spec = importlib.util.find_spec("resemblyzer")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location) / "pretrained.pt"
        if path.is_file():
            return path
    raise ImportError(f"The GE2E adversary needs the Resemblyzer wheel's weights: {INSTALL_HINT} (its own "
                      "dependencies are not needed).")


def available() -> bool:
    """Whether the GE2E weights are installed."""
    try:
        weights_path()
    except ImportError:
        return False
    return True


class GE2EEncoder(nn.Module):
    """The Resemblyzer voice encoder: mel frames ``[batch, frames, 40]`` -> L2-normalised embeddings ``[batch, 256]``."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(N_MELS, 256, 3, batch_first=True)
        self.linear = nn.Linear(256, 256)
        self.relu = nn.ReLU()

    @classmethod
    def pretrained(cls) -> GE2EEncoder:
        model = cls()
        state = torch.load(weights_path(), map_location="cpu", weights_only=True)["model_state"]
        model.load_state_dict({k: v for k, v in state.items() if not k.startswith("similarity")}, strict=True)
        return model.eval()

    def embed_hidden(self, hidden: torch.Tensor) -> torch.Tensor:
        raw = self.relu(self.linear(hidden))
        return raw / torch.norm(raw, dim=1, keepdim=True).clamp_min(1e-12)

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        _, (hidden, _) = self.lstm(mels)
        return self.embed_hidden(hidden[-1])


@lru_cache(maxsize=1)
def _mel_basis() -> np.ndarray:
    from transformers.audio_utils import mel_filter_bank

    # librosa.filters.mel(sr=16000, n_fft=400, n_mels=40): Slaney scale and area normalisation, 0 to 8 kHz
    return mel_filter_bank(num_frequency_bins=N_FFT // 2 + 1, num_mel_filters=N_MELS, min_frequency=0.0,
                           max_frequency=SAMPLING_RATE / 2, sampling_rate=SAMPLING_RATE, norm="slaney",
                           mel_scale="slaney").astype(np.float64)


def mel_frames(wav: np.ndarray) -> np.ndarray:
    """Mel power frames ``[frames, 40]`` (float32) of a 16 kHz clip, as ``librosa.feature.melspectrogram`` computes
    them with the package's settings (centred frames, zero padding, periodic Hann window, power 2)."""
    x = np.pad(np.asarray(wav, dtype=np.float64), N_FFT // 2)
    frames = np.lib.stride_tricks.sliding_window_view(x, N_FFT)[::HOP]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)
    power = np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2
    return (power @ _mel_basis()).astype(np.float32)


def preprocess(wav: np.ndarray, sampling_rate: int) -> np.ndarray:
    """Resample to 16 kHz and raise the level to -30 dBFS if it is lower (the package's ``preprocess_wav`` without
    its silence trimming)."""
    from ..quality import change_rate

    wav = change_rate(np.asarray(wav, dtype=np.float64), sampling_rate, SAMPLING_RATE)
    rms = math.sqrt(float(np.mean((wav * 32767) ** 2))) if len(wav) else 0.0
    if rms > 0:
        change = TARGET_DBFS - 20 * math.log10(rms / 32767)
        if change > 0:
            wav = wav * 10 ** (change / 20)
    return wav.astype(np.float32)


def partial_slices(n_samples: int, rate: float = 1.3, min_coverage: float = 0.75) -> list[slice]:
    """The package's partial utterances (``VoiceEncoder.compute_partial_slices``): mel-frame slices of 1.6 s."""
    n_frames = int(np.ceil((n_samples + 1) / HOP))
    step = int(np.round((SAMPLING_RATE / rate) / HOP))
    slices = [slice(i, i + PARTIAL_FRAMES) for i in range(0, max(1, n_frames - PARTIAL_FRAMES + step + 1), step)]
    last = slices[-1]
    coverage = (n_samples - last.start * HOP) / (PARTIAL_FRAMES * HOP)
    if coverage < min_coverage and len(slices) > 1:
        slices = slices[:-1]
    return slices


def utterance_mels(wav: np.ndarray, sampling_rate: int) -> np.ndarray:
    """The partials' mel frames ``[partials, 160, 40]`` of one clip (preprocessed, padded as the package pads)."""
    wav = preprocess(wav, sampling_rate)
    slices = partial_slices(len(wav))
    needed = slices[-1].stop * HOP
    if needed >= len(wav):
        wav = np.pad(wav, (0, needed - len(wav)))
    mel = mel_frames(wav)
    return np.stack([mel[s] for s in slices])


def embed_utterances(encoder: GE2EEncoder, clips: list[np.ndarray], sampling_rate: int,
                     batch_size: int = 64) -> np.ndarray:
    """Utterance embeddings ``[clips, 256]`` (mean of the partials' embeddings, L2-normalised), as
    ``VoiceEncoder.embed_utterance``."""
    mels = [utterance_mels(c, sampling_rate) for c in clips]
    owner = np.concatenate([[i] * len(m) for i, m in enumerate(mels)])
    flat = np.concatenate(mels)
    out = []
    with torch.no_grad():
        for i in range(0, len(flat), batch_size):
            out.append(encoder(torch.from_numpy(flat[i : i + batch_size])).numpy())
    partials = np.concatenate(out)
    sums = np.zeros((len(clips), partials.shape[1]))
    np.add.at(sums, owner, partials)
    return (sums / np.linalg.norm(sums, axis=1, keepdims=True)).astype(np.float32)


# ------------------------------------------------------------------------------------------ the adversaries
@dataclass
class GE2EResult:
    """One GE2E adversary run: clean-test accuracy (final and best epoch) and the trained predictor."""

    test_accuracy: float
    peak_test_accuracy: float
    train_accuracy: float
    curve: list[float]
    predictor: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {"test_accuracy": self.test_accuracy, "peak_test_accuracy": self.peak_test_accuracy,
                "train_accuracy": self.train_accuracy, "curve": self.curve}


def _first_partials(mels: list[np.ndarray]) -> np.ndarray:
    return np.stack([m[0] for m in mels])


def train_ge2e(
    mode: str, train_clips: list[np.ndarray], train_labels: np.ndarray, test_clips: list[np.ndarray],
    test_labels: np.ndarray, sampling_rate: int, *, epochs: int | None = None, seed: int = 0,
    encoder: GE2EEncoder | None = None,
) -> GE2EResult:
    """Train a GE2E adversary (see :data:`GE2E_MODES`) on ``train_clips`` and test it on ``test_clips``.

    ``"probe"`` (linear, 100 epochs) and ``"mlp"`` (256 -> 256 -> classes, dropout 0.2, 100 epochs) train on the
    frozen utterance embeddings with AdamW (full batch, learning rate 1e-2 / 3e-3); ``"finetune"`` trains the last
    LSTM layer, the encoder's linear layer and a linear head (15 epochs, batch 64, learning rate 1e-3) on the
    first 1.6 s partial of each clip, the lower two LSTM layers frozen (their outputs are computed once).
    """
    if mode not in GE2E_MODES:
        raise ValueError(f"Unknown GE2E mode {mode!r}; choose one of {list(GE2E_MODES)}.")
    torch.manual_seed(seed)
    encoder = encoder or GE2EEncoder.pretrained()
    classes = int(max(train_labels.max(), test_labels.max()) + 1)
    y_train, y_test = torch.from_numpy(train_labels.astype(np.int64)), torch.from_numpy(test_labels.astype(np.int64))
    if mode in ("probe", "mlp"):
        x_train = torch.from_numpy(embed_utterances(encoder, train_clips, sampling_rate))
        x_test = torch.from_numpy(embed_utterances(encoder, test_clips, sampling_rate))
        if mode == "probe":
            head: nn.Module = nn.Linear(x_train.shape[1], classes)
        else:
            head = nn.Sequential(nn.Linear(x_train.shape[1], 256), nn.ReLU(), nn.Dropout(0.2), nn.Linear(256, classes))
        epochs = epochs or 100
        optimizer = torch.optim.AdamW(head.parameters(), lr=1e-2 if mode == "probe" else 3e-3, weight_decay=1e-3)
        curve = []
        for _ in range(epochs):
            head.train()
            optimizer.zero_grad()
            nn.functional.cross_entropy(head(x_train), y_train).backward()
            optimizer.step()
            head.eval()
            with torch.no_grad():
                curve.append(float((head(x_test).argmax(-1) == y_test).float().mean()))
        head.eval()
        with torch.no_grad():
            train_acc = float((head(x_train).argmax(-1) == y_train).float().mean())

        def predict_embeddings(clips: list[np.ndarray], sr: int) -> np.ndarray:
            with torch.no_grad():
                return head(torch.from_numpy(embed_utterances(encoder, clips, sr))).double().numpy()

        return GE2EResult(curve[-1], max(curve), train_acc, [round(c, 4) for c in curve], predict_embeddings)
    return _finetune(encoder, train_clips, y_train, test_clips, y_test, sampling_rate, classes, epochs or 15)


def _finetune(encoder: GE2EEncoder, train_clips: list[np.ndarray], y_train: torch.Tensor, test_clips: list[np.ndarray],
              y_test: torch.Tensor, sampling_rate: int, classes: int, epochs: int) -> GE2EResult:
    lower = nn.LSTM(N_MELS, 256, 2, batch_first=True)
    top = nn.LSTM(256, 256, 1, batch_first=True)
    state = encoder.lstm.state_dict()
    lower.load_state_dict({k: v for k, v in state.items() if k.endswith(("_l0", "_l1"))})
    top.load_state_dict({k.replace("_l2", "_l0"): v for k, v in state.items() if k.endswith("_l2")})
    linear = nn.Linear(256, 256)
    linear.load_state_dict(encoder.linear.state_dict())
    head = nn.Linear(256, classes)

    def lower_outputs(clips: list[np.ndarray], sr: int) -> torch.Tensor:
        mels = torch.from_numpy(_first_partials([utterance_mels(c, sr) for c in clips]))
        with torch.no_grad():
            return torch.cat([lower(mels[i : i + 64])[0] for i in range(0, len(mels), 64)])

    def forward(h: torch.Tensor) -> torch.Tensor:
        _, (hidden, _) = top(h)
        raw = torch.relu(linear(hidden[-1]))
        return head(raw / torch.norm(raw, dim=1, keepdim=True).clamp_min(1e-12))

    h_train, h_test = lower_outputs(train_clips, sampling_rate), lower_outputs(test_clips, sampling_rate)
    params = [*top.parameters(), *linear.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-3)
    g = torch.Generator().manual_seed(0)

    def accuracy(h: torch.Tensor, y: torch.Tensor) -> float:
        with torch.no_grad():
            return float(torch.cat([forward(h[i : i + 256]).argmax(-1) for i in range(0, len(h), 256)]).eq(y)
                         .float().mean())

    curve = []
    for _ in range(epochs):
        order = torch.randperm(len(h_train), generator=g)
        for i in range(0, len(order), 64):
            idx = order[i : i + 64]
            optimizer.zero_grad()
            nn.functional.cross_entropy(forward(h_train[idx]), y_train[idx]).backward()
            optimizer.step()
        curve.append(accuracy(h_test, y_test))

    def predict(clips: list[np.ndarray], sr: int) -> np.ndarray:
        h = lower_outputs(clips, sr)
        with torch.no_grad():
            return forward(h).double().numpy()

    return GE2EResult(curve[-1], max(curve), accuracy(h_train, y_train), [round(c, 4) for c in curve], predict)
