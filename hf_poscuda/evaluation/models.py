"""Models the evaluation trains: three light convolutional baselines (pure torch) and wav2vec2 / AST (transformers).

The convolutional models see fixed-length raw audio ``[batch, samples]``; the log-mel CNN and the x-vector TDNN
compute their features inside the model (mel filters from ``transformers.audio_utils``), so every one of them
trains on exactly the stored audio.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

#: The convolutional models trained from scratch in plain torch (one recipe, :mod:`.training`). ``"xvector"`` is a
#: speaker-recognition network of another shape, never a design surrogate by default: a transfer test.
CNN_MODELS = ("logmel_cnn", "raw_cnn", "xvector")
HF_MODELS = ("wav2vec2", "ast")
#: The real pretrained speaker encoder of the Resemblyzer wheel (:mod:`hf_poscuda.evaluation.ge2e`); its adversaries
#: (``ModelSpec("ge2e", finetune=...)``): ``"probe"``, ``"mlp"`` or ``"finetune"`` (the last LSTM layer).
PRETRAINED_MODELS = ("ge2e",)
MODELS = CNN_MODELS + HF_MODELS + PRETRAINED_MODELS
#: How much of a pretrained checkpoint is trained: everything (``"full"``; wav2vec2's convolutional feature
#: encoder stays frozen, as in the transformers audio-classification recipe), the upper half of the transformer
#: and the head (``"partial"``), or the head alone on frozen features (``"probe"``, a linear probe).
FINETUNE_MODES = ("full", "partial", "probe")


class LogMel(nn.Module):
    """Log-mel spectrogram ``[batch, n_mels, frames]`` of raw audio ``[batch, samples]``: 25 ms Hann windows
    (FFT size the next power of two), 10 ms hop, ``n_mels`` Slaney mel bands from 20 Hz to Nyquist."""

    def __init__(self, sampling_rate: int, n_mels: int = 40) -> None:
        super().__init__()
        from transformers.audio_utils import mel_filter_bank

        self.n_fft = int(2 ** np.ceil(np.log2(0.025 * sampling_rate)))
        self.hop = int(0.010 * sampling_rate)
        mel = mel_filter_bank(
            num_frequency_bins=self.n_fft // 2 + 1, num_mel_filters=n_mels, min_frequency=20.0,
            max_frequency=sampling_rate / 2, sampling_rate=sampling_rate, norm="slaney", mel_scale="slaney",
        )
        self.register_buffer("mel", torch.tensor(mel, dtype=torch.float32), persistent=False)
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(audio, self.n_fft, self.hop, window=self.window, return_complex=True).abs().pow(2)
        return torch.log(torch.einsum("bft,fm->bmt", spec, self.mel) + 1e-6)


class LogMelCNN(nn.Module):
    """Log-mel spectrogram -> 4 conv blocks -> global average pooling -> linear.

    Args:
        num_classes (`int`): output classes.
        sampling_rate (`int`): input rate; 25 ms windows, 10 ms hop, 40 mel bands up to Nyquist.
        width (`int`, defaults to `16`): channels of the first block (doubled twice).
    """

    def __init__(self, num_classes: int, sampling_rate: int, width: int = 16, n_mels: int = 40) -> None:
        super().__init__()
        self.logmel = LogMel(sampling_rate, n_mels)
        chans = [1, width, width * 2, width * 4, width * 4]
        blocks: list[nn.Module] = []
        for a, b in zip(chans[:-1], chans[1:], strict=True):
            blocks += [nn.Conv2d(a, b, 3, padding=1), nn.BatchNorm2d(b), nn.ReLU(), nn.MaxPool2d(2)]
        self.features = nn.Sequential(*blocks[:-1])  # no pooling after the last block
        self.head = nn.Linear(chans[-1], num_classes)
        self.spec_transform: Any = None  # a training-time countermeasure on the log-mel input (SpecAugment)
        self.feature_transform: Any = None  # a feature step of the adversary's pipeline (CMVN), train and test

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        x = self.logmel(audio)
        if self.feature_transform is not None:
            x = self.feature_transform(x)
        if self.training and self.spec_transform is not None:
            x = self.spec_transform(x)
        x = (x - x.mean(dim=(1, 2), keepdim=True)) / (x.std(dim=(1, 2), keepdim=True) + 1e-5)
        return self.head(self.features(x[:, None]).mean(dim=(2, 3)))


class XVectorTDNN(nn.Module):
    """An x-vector speaker network (Snyder et al., 2018), scaled to FSDD: log-mel frames with cepstral-style mean
    normalisation per clip (each band's mean over time removed, as speaker-recognition front ends do) -> 5 TDNN
    layers (1-D convolutions over time, dilations 1, 2, 3, 1, 1; context 15 frames) -> statistics pooling (mean and
    standard deviation over time) -> a dense layer -> linear.

    Another shape than the two CNNs. The mean normalisation removes a gain that is constant over every frame of a
    clip; a static filter acts on the voiced frames only, so on clips padded with silence part of it stays (blind
    equalisation, which averages over active frames, removes more of it).

    Args:
        num_classes (`int`): output classes.
        sampling_rate (`int`): input rate; 25 ms windows, 10 ms hop, 40 mel bands up to Nyquist.
        width (`int`, defaults to `64`): channels of the frame layers (the last one has three times as many).
    """

    def __init__(self, num_classes: int, sampling_rate: int, width: int = 64, n_mels: int = 40) -> None:
        super().__init__()
        self.logmel = LogMel(sampling_rate, n_mels)
        shape = [(n_mels, width, 5, 1), (width, width, 3, 2), (width, width, 3, 3), (width, width, 1, 1),
                 (width, 3 * width, 1, 1)]
        layers: list[nn.Module] = []
        for a, b, kernel, dilation in shape:
            layers += [nn.Conv1d(a, b, kernel, dilation=dilation), nn.ReLU(), nn.BatchNorm1d(b)]
        self.frames = nn.Sequential(*layers)
        self.segment = nn.Sequential(nn.Linear(6 * width, width), nn.ReLU(), nn.BatchNorm1d(width))
        self.head = nn.Linear(width, num_classes)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        x = self.logmel(audio)
        h = self.frames(x - x.mean(dim=-1, keepdim=True))
        return self.head(self.segment(torch.cat([h.mean(dim=-1), h.std(dim=-1)], dim=-1)))


class RawCNN(nn.Module):
    """A raw-waveform CNN in the style of M5 (Dai et al., 2017): strided first conv, 4 blocks, global pooling."""

    def __init__(self, num_classes: int, sampling_rate: int, width: int = 32) -> None:
        super().__init__()
        first = max(8, int(0.010 * sampling_rate))  # 10 ms receptive field
        chans = [width, width, width * 2, width * 4]
        layers: list[nn.Module] = [
            nn.Conv1d(1, chans[0], first, stride=max(1, first // 4)), nn.BatchNorm1d(chans[0]), nn.ReLU(), nn.MaxPool1d(4)
        ]
        for a, b in zip(chans[:-1], chans[1:], strict=True):
            layers += [nn.Conv1d(a, b, 3, padding=1), nn.BatchNorm1d(b), nn.ReLU(), nn.MaxPool1d(4)]
        self.features = nn.Sequential(*layers[:-1])
        self.head = nn.Linear(chans[-1], num_classes)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        x = audio / (audio.abs().amax(dim=-1, keepdim=True) + 1e-5)
        return self.head(self.features(x[:, None]).mean(dim=-1))


def build_cnn(name: str, num_classes: int, sampling_rate: int) -> nn.Module:
    """Build ``"logmel_cnn"``, ``"raw_cnn"`` or ``"xvector"``."""
    if name == "logmel_cnn":
        return LogMelCNN(num_classes, sampling_rate)
    if name == "xvector":
        return XVectorTDNN(num_classes, sampling_rate)
    if name == "raw_cnn":
        return RawCNN(num_classes, sampling_rate)
    raise ValueError(f"Unknown CNN {name!r}; choose one of {list(CNN_MODELS)}.")


# ---------------------------------------------------------------------- transformers models
@dataclass(frozen=True)
class HFPreset:
    """Size of a from-scratch transformer."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int


HF_PRESETS: dict[str, HFPreset] = {
    "tiny": HFPreset(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
    "small": HFPreset(hidden_size=192, num_hidden_layers=4, num_attention_heads=4, intermediate_size=768),
}


def is_local_checkpoint(source: str) -> bool:
    return Path(source).is_dir()


def check_hub_reachable(repo_id: str, timeout: float = 3.0) -> None:
    """Fail fast (one request, no retries) when a Hub checkpoint cannot be fetched, with a message saying what to do.

    Skipped when ``HF_HUB_OFFLINE`` is set: then transformers uses the local cache only and fails at once.
    """
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError

    if constants.HF_HUB_OFFLINE:
        return
    try:
        HfApi().model_info(repo_id, timeout=timeout)  # the library's session: its proxies, token and endpoint
    except HfHubHTTPError:
        return  # the Hub answered (e.g. 401/404): transformers will report the precise problem at once
    except Exception as err:  # connection refused, DNS, timeout: the HTTP client's own error types
        raise OSError(
            f"Cannot reach the Hugging Face Hub ({constants.ENDPOINT}) to fetch checkpoint {repo_id!r}: "
            f"{type(err).__name__}. Pass a local checkpoint folder instead (save one with "
            "model.save_pretrained(path)), or set HF_HUB_OFFLINE=1 to use the local cache."
        ) from None


def freeze_for_finetuning(model: nn.Module, mode: str) -> nn.Module:
    """Freeze the parts of a wav2vec2 / AST classifier that ``mode`` (see :data:`FINETUNE_MODES`) keeps fixed.

    ``"full"`` freezes wav2vec2's convolutional feature encoder only; ``"partial"`` also the input embedding
    (wav2vec2's feature projection and positional convolution, AST's patch embedding) and the lower half of the
    transformer layers; ``"probe"`` everything but the classification head (wav2vec2's projector and classifier,
    AST's MLP head).
    """
    if mode not in FINETUNE_MODES:
        raise ValueError(f"Unknown fine-tuning mode {mode!r}; choose one of {list(FINETUNE_MODES)}.")
    backbone = getattr(model, "wav2vec2", None) or getattr(model, "audio_spectrogram_transformer", None)
    if backbone is None:
        raise ValueError(f"{type(model).__name__} is not a wav2vec2 or AST classifier.")
    if hasattr(model, "freeze_feature_encoder"):
        model.freeze_feature_encoder()
    if mode == "full":
        return model
    if mode == "probe":
        backbone.requires_grad_(False)
        return model
    layers = backbone.layers if hasattr(backbone, "layers") else backbone.encoder.layers
    frozen: list[nn.Module] = list(layers[: len(layers) // 2])
    if hasattr(backbone, "feature_projection"):
        frozen += [backbone.feature_projection, backbone.encoder.pos_conv_embed]
    else:
        frozen.append(backbone.embeddings)
    for module in frozen:
        module.requires_grad_(False)
    return model


def build_hf_model(
    name: str, num_classes: int, sampling_rate: int, *, checkpoint: str | None = None, preset: str = "small",
    max_seconds: float = 1.0, finetune: str = "full",
) -> tuple[nn.Module, Any]:
    """Build ``"wav2vec2"`` or ``"ast"``: a model and its feature extractor for ``sampling_rate``.

    Args:
        name (`str`): ``"wav2vec2"`` (``Wav2Vec2ForSequenceClassification``) or ``"ast"`` (``ASTForAudioClassification``).
        num_classes (`int`): output classes (a checkpoint's head is replaced).
        sampling_rate (`int`): the dataset's rate; from-scratch feature extractors are built for it.
        checkpoint (`str`, *optional*): local folder or Hub id to fine-tune; ``None`` trains ``preset`` from scratch.
        preset (`str`, defaults to `"small"`): from-scratch size, see :data:`HF_PRESETS` (``"tiny"`` is for tests).
        max_seconds (`float`, defaults to `1.0`): clip length the AST input is sized for.
        finetune (`str`, defaults to `"full"`): with a checkpoint, what is trained (:func:`freeze_for_finetuning`).
    """
    import transformers as tf

    if name not in HF_MODELS:
        raise ValueError(f"Unknown transformer model {name!r}; choose one of {list(HF_MODELS)}.")
    labels = {"num_labels": num_classes, "id2label": {i: str(i) for i in range(num_classes)},
              "label2id": {str(i): i for i in range(num_classes)}}
    if checkpoint is not None:
        if not is_local_checkpoint(checkpoint):
            check_hub_reachable(checkpoint)
        model_cls = tf.Wav2Vec2ForSequenceClassification if name == "wav2vec2" else tf.ASTForAudioClassification
        fe_cls = tf.Wav2Vec2FeatureExtractor if name == "wav2vec2" else tf.ASTFeatureExtractor
        extractor = fe_cls.from_pretrained(checkpoint)
        model = model_cls.from_pretrained(checkpoint, ignore_mismatched_sizes=True, **labels)
        return freeze_for_finetuning(model, finetune), extractor
    if finetune != "full":
        raise ValueError(f"finetune={finetune!r} needs a pretrained checkpoint; a from-scratch model trains fully.")
    if preset not in HF_PRESETS:
        raise ValueError(f"Unknown preset {preset!r}; choose one of {sorted(HF_PRESETS)}.")
    size = HF_PRESETS[preset]
    if name == "wav2vec2":
        config = tf.Wav2Vec2Config(
            hidden_size=size.hidden_size, num_hidden_layers=size.num_hidden_layers,
            num_attention_heads=size.num_attention_heads, intermediate_size=size.intermediate_size,
            conv_dim=(32, 32, 32, 32, 32, 32, 32) if preset == "tiny" else (128,) * 7,
            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, do_stable_layer_norm=True,
            feat_extract_norm="layer", mask_time_prob=0.0, classifier_proj_size=size.hidden_size, **labels,
        )
        extractor = tf.Wav2Vec2FeatureExtractor(
            sampling_rate=sampling_rate, do_normalize=True, return_attention_mask=True
        )
        return tf.Wav2Vec2ForSequenceClassification(config), extractor
    frames = int(np.ceil(max_seconds * 100)) + 2  # 10 ms hop
    mel_bins = 64 if sampling_rate >= 16000 else 40
    config = tf.ASTConfig(
        hidden_size=size.hidden_size, num_hidden_layers=size.num_hidden_layers,
        num_attention_heads=size.num_attention_heads, intermediate_size=size.intermediate_size,
        max_length=frames, num_mel_bins=mel_bins, frequency_stride=10, time_stride=10, **labels,
    )
    extractor = tf.ASTFeatureExtractor(sampling_rate=sampling_rate, num_mel_bins=mel_bins, max_length=frames)
    return tf.ASTForAudioClassification(config), extractor


