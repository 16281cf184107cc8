"""Does protection work? Train each model on the clean and on the protected train split; test both on clean test."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from datasets import Audio, Dataset, DatasetDict

from .._version import __version__
from ..audio_io import read_clip
from ..config import PosCUDAConfig
from ..key import PosCUDAKey
from ..protect import protect_dataset
from ..quality import measure_quality
from .attacks import Attack, attack_quality, get_attack
from .models import CNN_MODELS, FINETUNE_MODES, HF_MODELS, MODELS, PRETRAINED_MODELS, build_cnn, build_hf_model
from .training import TrainingRecipe, TrainResult, train_cnn, train_hf

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSpec:
    """A model to evaluate.

    Args:
        name (`str`): ``"logmel_cnn"``, ``"raw_cnn"``, ``"xvector"`` (an x-vector TDNN, a speaker network
            of another shape), ``"wav2vec2"``, ``"ast"`` or ``"ge2e"`` (the real pretrained
            speaker encoder; ``finetune`` is then its adversary: ``"probe"``, ``"mlp"`` or ``"finetune"``, see
            :mod:`~hf_poscuda.evaluation.ge2e`).
        checkpoint (`str`, *optional*): for wav2vec2/AST, a local folder or Hub id to fine-tune.
        preset (`str`, defaults to `"small"`): for wav2vec2/AST without checkpoint, the from-scratch size (the
            size of the README's numbers; ``"tiny"`` is for tests and learns little).
        finetune (`str`, defaults to `"full"`): with a checkpoint, what the adversary trains: ``"full"``,
            ``"partial"`` (upper layers and head) or ``"probe"`` (the head on frozen features); see
            :func:`~hf_poscuda.evaluation.models.freeze_for_finetuning`.
    """

    name: str
    checkpoint: str | None = None
    preset: str = "small"
    finetune: str = "full"

    def __post_init__(self) -> None:
        if self.name not in MODELS:
            raise ValueError(f"Unknown model {self.name!r}; choose from {list(MODELS)}.")
        if self.name in PRETRAINED_MODELS:
            from .ge2e import GE2E_MODES

            if self.finetune not in GE2E_MODES or self.checkpoint is not None:
                raise ValueError(f"ge2e takes no checkpoint (its weights come from the Resemblyzer wheel) and an "
                                 f"adversary in {list(GE2E_MODES)}, e.g. 'ge2e-probe'; got {self!r}.")
            return
        if self.name in CNN_MODELS and self.checkpoint is not None:
            raise ValueError(f"{self.name} is trained from scratch; it takes no checkpoint.")
        if self.finetune not in FINETUNE_MODES:
            raise ValueError(f"Unknown fine-tuning mode {self.finetune!r}; choose from {list(FINETUNE_MODES)}.")
        if self.finetune != "full" and self.checkpoint is None:
            raise ValueError(f"finetune={self.finetune!r} needs a pretrained checkpoint (e.g. "
                             f"'{self.name}@{self.finetune}:path/to/checkpoint').")

    @property
    def label(self) -> str:
        if self.name in CNN_MODELS:
            return self.name
        if self.name in PRETRAINED_MODELS:
            return f"{self.name}-{self.finetune}"
        if self.checkpoint:
            mode = "" if self.finetune == "full" else f"@{self.finetune}"
            return f"{self.name}{mode}:{self.checkpoint}"
        return f"{self.name}-{self.preset}"

    @property
    def start(self) -> dict[str, Any]:
        """The report's ``start`` block: ``{"from": "scratch", "preset"}`` or ``{"from": "pretrained",
        "checkpoint", "finetune"}`` (the fine-tuning threat)."""
        if self.name in PRETRAINED_MODELS:
            return {"from": "pretrained", "checkpoint": "resemblyzer/pretrained.pt", "finetune": self.finetune}
        if self.checkpoint is None:
            return {"from": "scratch", "preset": None if self.name in CNN_MODELS else self.preset}
        return {"from": "pretrained", "checkpoint": self.checkpoint, "finetune": self.finetune}

    @classmethod
    def parse(cls, text: str) -> ModelSpec:
        """``"ast"`` (the ``small`` preset), ``"wav2vec2-tiny"`` (a preset), ``"wav2vec2:path/or/hub-id"``
        (fine-tune a checkpoint) or ``"wav2vec2@probe:path/or/hub-id"`` (a fine-tuning mode, see ``finetune``).

        Example:

        ```py
        >>> from hf_poscuda.evaluation import ModelSpec
        >>> ModelSpec.parse("ast@probe:checkpoints/ast-small-espeak")
        ModelSpec(name='ast', checkpoint='checkpoints/ast-small-espeak', preset='small', finetune='probe')
        >>> ModelSpec.parse("wav2vec2-tiny").label
        'wav2vec2-tiny'

        ```
        """
        if ":" in text:
            name, checkpoint = text.split(":", 1)
            name, _, mode = name.partition("@")
            return cls(name, checkpoint=checkpoint, finetune=mode or "full")
        name, _, preset = text.partition("-")
        if name in PRETRAINED_MODELS:
            return cls(name, finetune=preset or "probe")
        if name in HF_MODELS and preset:
            return cls(name, preset=preset)
        return cls(text.replace("-", "_"))


@dataclass
class AudioArrays:
    """Fixed-length mono clips of one split, ready for training."""

    audio: np.ndarray  # [N, samples] float32
    labels: np.ndarray  # [N] int64
    sampling_rate: int


def to_arrays(dataset: Dataset, seconds: float, audio_column: str = "audio", label_column: str = "label") -> AudioArrays:
    """Decode a split to mono float32 clips zero-padded or cut to ``seconds`` (one sampling rate required)."""
    raw = dataset.cast_column(audio_column, Audio(decode=False))
    clips, rates = [], set()
    for row, item in enumerate(raw[audio_column]):
        data, sr, _ = read_clip(item, row, audio_column)
        clips.append(data.mean(axis=0))  # models are mono
        rates.add(sr)
    if len(rates) != 1:
        raise ValueError(
            f"Evaluation needs one sampling rate per dataset, found {sorted(rates)}. Cast the column first: "
            f"ds.cast_column({audio_column!r}, Audio(sampling_rate=16000))."
        )
    sr = rates.pop()
    n = int(round(seconds * sr))
    audio = np.zeros((len(clips), n), dtype=np.float32)
    for i, c in enumerate(clips):
        audio[i, : min(n, len(c))] = c[:n]
    labels = np.asarray(dataset[label_column], dtype=np.int64)
    return AudioArrays(audio, labels, sr)


def train_model(
    spec: ModelSpec, train: AudioArrays, test: AudioArrays, recipe: TrainingRecipe, desc: str,
    attack: Attack | None = None,
) -> TrainResult:
    """Build ``spec`` with the recipe's seed and train it; the same call for clean and protected data.

    ``attack`` is a training-time countermeasure (CNNs only); preprocessing ones are applied to the arrays first.
    """
    torch.manual_seed(recipe.seed)
    num_classes = int(max(train.labels.max(), test.labels.max()) + 1)
    if spec.name in PRETRAINED_MODELS:
        if attack is not None:
            raise ValueError(f"Training-time countermeasures are implemented for the CNNs only, not {spec.label}.")
        from .ge2e import train_ge2e

        run = train_ge2e(spec.finetune, list(train.audio), train.labels, list(test.audio), test.labels,
                         train.sampling_rate, seed=recipe.seed)
        curve = [{"epoch": i + 1, "test_accuracy": a} for i, a in enumerate(run.curve)]
        return TrainResult(run.test_accuracy, run.train_accuracy, len(curve), curve, model=run.predictor)
    if spec.name in CNN_MODELS:
        model = build_cnn(spec.name, num_classes, train.sampling_rate)
        return train_cnn(
            model, (train.audio, train.labels), (test.audio, test.labels), recipe, desc=desc, attack=attack,
            sampling_rate=train.sampling_rate,
        )
    if attack is not None:
        raise ValueError(f"Training-time countermeasures are implemented for the CNNs only, not {spec.label}.")
    model, extractor = build_hf_model(
        spec.name, num_classes, train.sampling_rate, checkpoint=spec.checkpoint, preset=spec.preset,
        max_seconds=recipe.clip_seconds, finetune=spec.finetune,
    )
    return train_hf(
        model, extractor, (train.audio, train.labels), (test.audio, test.labels), train.sampling_rate, recipe, desc
    )


def evaluate_protection(
    dataset: DatasetDict,
    key: PosCUDAKey,
    config: PosCUDAConfig,
    models: list[ModelSpec],
    recipe: TrainingRecipe | None = None,
    *,
    name: str = "setting",
    train_split: str = "train",
    test_split: str = "test",
    audio_column: str = "audio",
    label_column: str = "label",
    quality_clips: int = 100,
    clean_results: dict[str, TrainResult] | None = None,
    attacks: Sequence[str] = (),
) -> dict[str, Any]:
    """Protect the train split with ``config``, train every model on clean and on protected audio, test on clean.

    Args:
        dataset (`DatasetDict`): must have ``train_split`` and ``test_split``.
        key (`PosCUDAKey`): the key (only its public id goes into the result).
        config (`PosCUDAConfig`): the protection setting under test.
        models (`list[ModelSpec]`): what to train.
        recipe (`TrainingRecipe`, *optional*): identical for clean and protected runs.
        name (`str`): a label for this setting in reports.
        quality_clips (`int`, defaults to `100`): clips used for PESQ/STOI/SNR.
        clean_results (`dict`, *optional*): clean-train results by model label, reused across settings (they do
            not depend on the setting); filled in when missing.
        attacks (`Sequence[str]`, *optional*): countermeasures from :data:`~hf_poscuda.evaluation.attacks.ATTACKS`.
            For each one every model is trained again on the protected split with the countermeasure, and tested on
            clean test audio. A ``"preprocess"`` countermeasure is part of the adversary's input pipeline: it is
            applied to the train *and* the test audio. ``"augment"`` ones act on training batches (CNNs only).

    Returns:
        `dict`: one setting's entry of the report (see :mod:`hf_poscuda.evaluation.report` for the schema).
    """
    recipe = recipe or TrainingRecipe()
    for split in (train_split, test_split):
        if split not in dataset:
            raise ValueError(f"Split {split!r} not found; available: {list(dataset)}. Pass train_split/test_split.")
    attack_objects = [get_attack(a) for a in attacks]  # unknown names fail before any work
    start = time.perf_counter()
    protected, summary = protect_dataset(
        dataset[train_split], key, config, audio_column=audio_column, label_column=label_column, snr_clips=1
    )
    quality = measure_quality(dataset[train_split], protected, quality_clips, audio_column)
    clean_train = to_arrays(dataset[train_split], recipe.clip_seconds, audio_column, label_column)
    protected_train = to_arrays(protected, recipe.clip_seconds, audio_column, label_column)
    test = to_arrays(dataset[test_split], recipe.clip_seconds, audio_column, label_column)
    clean_results = clean_results if clean_results is not None else {}
    per_model: dict[str, Any] = {}
    for spec in models:
        if spec.label not in clean_results:
            clean_results[spec.label] = train_model(spec, clean_train, test, recipe, f"{spec.label} clean")
        prot = train_model(spec, protected_train, test, recipe, f"{spec.label} {name}")
        per_model[spec.label] = {"start": spec.start, "clean": clean_results[spec.label].to_dict(),
                                 "protected": prot.to_dict()}
        logger.info(
            "%s / %s: clean-train %.3f, protected-train %.3f clean-test accuracy", name, spec.label,
            clean_results[spec.label].test_accuracy, prot.test_accuracy,
        )
    attack_results = {
        attack.name: evaluate_attack(attack, models, protected_train, test, clean_train, recipe, name)
        for attack in attack_objects
    }
    entry = {
        "name": name,
        "config": config.to_dict(),
        "key_id": key.key_id,
        "quality": quality,
        "models": per_model,
        "seconds": time.perf_counter() - start,
        "hf_poscuda_version": __version__,
        "train_clips": len(clean_train.labels),
        "test_clips": len(test.labels),
        "num_classes": int(max(clean_train.labels.max(), test.labels.max()) + 1),
        "sampling_rate": clean_train.sampling_rate,
    }
    if attacks:
        entry["attacks"] = attack_results
    return entry


def evaluate_attack(
    attack: Attack, models: list[ModelSpec], protected_train: AudioArrays, test: AudioArrays,
    clean_train: AudioArrays, recipe: TrainingRecipe, setting: str, quality_clips: int = 50,
) -> dict[str, Any]:
    """Train every applicable model on the protected split under one countermeasure; test on clean audio.

    Returns ``{"kind", "description", "quality": {"pesq", "snr_db", "clips"}, "models": {label: TrainResult}}``;
    ``quality`` is what the countermeasure does to clean train audio (its cost to the adversary). Models it does
    not apply to (augmentations on transformers, SpecAugment on raw audio) are left out.
    """
    sr = protected_train.sampling_rate
    rng = np.random.default_rng(recipe.seed)
    quality: dict[str, Any] = {"pesq": math.nan, "snr_db": math.nan, "clips": 0}
    if quality_clips > 0:
        step = max(1, len(clean_train.audio) // quality_clips)
        quality = attack_quality(clean_train.audio[::step][:quality_clips], sr, attack, seed=recipe.seed)
    result: dict[str, Any] = {"kind": attack.kind, "description": attack.description, "quality": quality, "models": {}}
    train, attacked_test = protected_train, test
    for part in attack.parts:
        if part.kind == "preprocess":  # the adversary's input pipeline: train and test audio alike
            train = AudioArrays(part.apply(train.audio, sr, rng), train.labels, sr)
            attacked_test = AudioArrays(part.apply(attacked_test.audio, sr, rng), attacked_test.labels, sr)
        elif part.kind == "dataset":  # the scraped training set only, with its labels
            train = AudioArrays(part.apply_labelled(train.audio, train.labels, sr), train.labels, sr)
    in_training = attack.in_training
    for spec in models:
        if not attack.applies_to(spec.name) or (in_training and spec.name not in CNN_MODELS):
            logger.info("%s does not apply to %s; skipped", attack.name, spec.label)
            continue
        run = train_model(
            spec, train, attacked_test, recipe, f"{spec.label} {setting} + {attack.name}",
            attack=attack if in_training else None,
        )
        result["models"][spec.label] = run.to_dict()
        logger.info("%s / %s + %s: clean-test accuracy %.3f", setting, spec.label, attack.name, run.test_accuracy)
    return result


def run_evaluation(
    dataset: DatasetDict,
    key: PosCUDAKey,
    settings: dict[str, PosCUDAConfig],
    models: list[ModelSpec],
    recipe: TrainingRecipe | None = None,
    *,
    dataset_name: str = "dataset",
    output: str | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Evaluate several settings (clean training is run once and shared) and optionally write the report.

    Args:
        dataset (`DatasetDict`): with train and test splits.
        key (`PosCUDAKey`): the key.
        settings (`dict[str, PosCUDAConfig]`): named protection settings.
        models (`list[ModelSpec]`): what to train.
        recipe (`TrainingRecipe`, *optional*): training recipe.
        dataset_name (`str`): label in the report.
        output (`str`, *optional*): folder for report.json, report.md and plots.
        kwargs: passed to :func:`evaluate_protection` (splits, columns, quality_clips).

    Returns:
        `dict`: the report (schema in :mod:`hf_poscuda.evaluation.report`).
    """
    from .report import build_report, write_report

    if not settings:
        raise ValueError("Give at least one protection setting to evaluate.")
    if not models:
        raise ValueError("Give at least one model to train.")
    recipe = recipe or TrainingRecipe()
    clean: dict[str, TrainResult] = {}
    entries = [
        evaluate_protection(dataset, key, config, models, recipe, name=name, clean_results=clean, **kwargs)
        for name, config in settings.items()
    ]
    report = build_report(entries, recipe, dataset_name)
    if output is not None:
        write_report(report, output, curves_for=next(iter(settings)))
    return report
