"""Training recipes: a plain torch loop for the CNN baselines, ``transformers.Trainer`` for wav2vec2 and AST.

Clean and protected runs of one model use the same seed, recipe and number of steps; only the training audio
differs. Accuracy is computed through ``evaluate`` with the metric module shipped in this package (no Hub).
"""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .attacks import Attack, cmvn, mixup, spec_augment

logger = logging.getLogger(__name__)

ACCURACY_METRIC_PATH = Path(__file__).parent / "metrics" / "accuracy"


@lru_cache(maxsize=1)
def accuracy_metric() -> Any:
    """The `evaluate` accuracy metric, loaded from the local module (works offline)."""
    import evaluate

    return evaluate.load(str(ACCURACY_METRIC_PATH))


def accuracy(predictions: np.ndarray, references: np.ndarray) -> float:
    if len(references) == 0:
        return math.nan
    return float(accuracy_metric().compute(predictions=list(map(int, predictions)), references=list(map(int, references)))["accuracy"])


@dataclass
class TrainingRecipe:
    """How every model is trained (identical for the clean and the protected run).

    Args:
        epochs (`int`, defaults to `30`): passes over the training set (CNNs).
        batch_size (`int`, defaults to `64`): examples per step.
        learning_rate (`float`, defaults to `3e-3`): peak AdamW learning rate (CNNs, one-cycle schedule).
        weight_decay (`float`, defaults to `1e-2`): AdamW weight decay.
        hf_epochs (`int`, defaults to `20`): passes over the training set for wav2vec2 / AST.
        hf_learning_rate (`float`, defaults to `5e-4`): peak learning rate for wav2vec2 / AST (linear decay, warm-up).
        seed (`int`, defaults to `0`): initialisation and shuffling seed.
        clip_seconds (`float`, defaults to `1.0`): clips are zero-padded or cut to this length.
        eval_every_epoch (`bool`, defaults to `True`): record a test-accuracy curve.
    """

    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 3e-3
    weight_decay: float = 1e-2
    hf_epochs: int = 20
    hf_learning_rate: float = 5e-4
    seed: int = 0
    clip_seconds: float = 1.0
    eval_every_epoch: bool = True

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "hf_epochs"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)!r}.")
        for name in ("learning_rate", "hf_learning_rate", "clip_seconds"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    """One training run: final accuracies and per-epoch curves.

    ``peak_test_accuracy`` is the best clean-test accuracy over the recorded epochs, picked on the test split
    itself: an upper bound on what an adversary who keeps a little clean validation data and stops early would
    get. It is ``nan`` when no curve was recorded. ``model`` (and ``extractor``, for transformers models) is the
    trained model itself, for what comes after training (e.g. an audit); it is not part of :meth:`to_dict`.
    """

    test_accuracy: float
    train_accuracy: float
    steps: int
    curve: list[dict[str, float]] = field(default_factory=list)
    peak_test_accuracy: float = math.nan
    model: Any = field(default=None, repr=False, compare=False)
    extractor: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        points = [p["test_accuracy"] for p in self.curve if "test_accuracy" in p]
        if points and not math.isfinite(self.peak_test_accuracy):
            self.peak_test_accuracy = float(max(max(points), self.test_accuracy))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(replace(self, model=None, extractor=None))  # never deep-copies the model
        del out["model"], out["extractor"]
        return out


def _predict(model: nn.Module, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            out.append(model(torch.from_numpy(x[i : i + batch_size])).argmax(-1).numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def train_cnn(
    model: nn.Module,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    recipe: TrainingRecipe,
    desc: str = "training",
    *,
    attack: Attack | None = None,
    sampling_rate: int | None = None,
) -> TrainResult:
    """Train a CNN on ``train`` (audio ``[N, samples]``, labels ``[N]``) and measure accuracy on ``test``.

    Args:
        attack (`Attack`, *optional*): a training-time countermeasure (``kind="augment"``) applied afresh to every
            batch: a waveform function, ``mixup`` (soft targets) or ``specaugment`` (log-mel CNN only).
            Preprocessing countermeasures are applied to ``train`` by the caller.
        sampling_rate (`int`, *optional*): needed by waveform countermeasures.
    """
    x, y = train
    g = torch.Generator().manual_seed(recipe.seed)
    augment = _batch_augmenter(model, attack, sampling_rate, int(max(y.max(), test[1].max()) + 1), recipe.seed)
    steps_per_epoch = math.ceil(len(x) / recipe.batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.learning_rate, weight_decay=recipe.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=recipe.learning_rate, total_steps=recipe.epochs * steps_per_epoch
    )
    loss_fn = nn.CrossEntropyLoss()
    curve = []
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    bar = tqdm(range(recipe.epochs), desc=desc, leave=False)
    for epoch in bar:
        model.train()
        order = torch.randperm(len(x), generator=g)
        total, correct, loss_sum = 0, 0, 0.0
        for i in range(0, len(x), recipe.batch_size):
            idx = order[i : i + recipe.batch_size]
            xb, target = augment(xt[idx], yt[idx])
            logits = model(xb)
            loss = loss_fn(logits, target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            loss_sum += loss.item() * len(idx)
            correct += int((logits.argmax(-1) == yt[idx]).sum())
            total += len(idx)
        point = {"epoch": epoch + 1, "train_loss": loss_sum / total, "train_accuracy_running": correct / total}
        if recipe.eval_every_epoch or epoch == recipe.epochs - 1:
            point["test_accuracy"] = float((_predict(model, test[0]) == test[1]).mean())
            bar.set_postfix(test_acc=f"{point['test_accuracy']:.3f}")
        curve.append(point)
    if hasattr(model, "spec_transform"):
        model.spec_transform = None  # a training-time augmentation; a feature step (CMVN) stays for testing
    return TrainResult(
        test_accuracy=accuracy(_predict(model, test[0]), test[1]),
        train_accuracy=accuracy(_predict(model, x), y),
        steps=recipe.epochs * steps_per_epoch,
        curve=curve,
        model=model,
    )


def _batch_augmenter(
    model: nn.Module, attack: Attack | None, sampling_rate: int | None, num_classes: int, seed: int
) -> Any:
    """``(audio, labels) -> (audio, target)`` for one training batch; the identity without a countermeasure.

    Sets up the countermeasure's model-side parts too: SpecAugment on the log-mel input during training, and a
    feature step (CMVN) for training *and* testing. Preprocessing parts are applied to the data by the caller.
    """
    if attack is None:
        return lambda xb, yb: (xb, yb)
    rng = np.random.default_rng(seed + 7919)
    steps: list[Any] = []
    for part in attack.parts:
        if part.kind in ("preprocess", "dataset"):
            if not attack.steps:
                raise ValueError(
                    f"{part.name!r} is a preprocessing countermeasure; apply it to the data, not in training."
                )
            continue
        if part.feature is not None or part.batch == "specaugment":
            if not hasattr(model, "spec_transform"):
                raise ValueError(f"{part.name} needs a spectrogram model (log-mel CNN), not {type(model).__name__}.")
            if part.feature == "cmvn":
                model.feature_transform = cmvn
            else:
                generator = torch.Generator().manual_seed(seed + 7919)
                model.spec_transform = lambda spec, g=generator: spec_augment(spec, g)
        elif part.batch == "mixup":

            def mix(xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                target = yb if yb.ndim == 2 else torch.from_numpy(np.eye(num_classes, dtype=np.float32)[yb.numpy()])
                audio, mixed = mixup(xb.numpy(), target.numpy(), rng)
                return torch.from_numpy(audio), torch.from_numpy(mixed.astype(np.float32))

            steps.append(mix)
        else:
            if sampling_rate is None:
                raise ValueError(f"{part.name!r} needs the sampling rate.")
            steps.append(
                lambda xb, yb, p=part: (torch.from_numpy(p.apply(xb.numpy(), sampling_rate, rng)), yb)
            )

    def augment(xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for step in steps:
            xb, yb = step(xb, yb)
        return xb, yb

    return augment


class _FeatureDataset(torch.utils.data.Dataset):
    def __init__(self, features: dict[str, np.ndarray], labels: np.ndarray) -> None:
        self.features, self.labels = features, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = {k: torch.as_tensor(v[i]) for k, v in self.features.items()}
        item["labels"] = torch.as_tensor(int(self.labels[i]))
        return item


def extract_features(extractor: Any, audio: np.ndarray, sampling_rate: int) -> dict[str, np.ndarray]:
    """Run a transformers feature extractor on fixed-length clips, resampling if it expects another rate."""
    target = int(getattr(extractor, "sampling_rate", sampling_rate))
    if target != sampling_rate:
        from ..quality import change_rate

        audio = change_rate(audio, sampling_rate, target).astype(np.float32)
    out = extractor(list(audio), sampling_rate=target, return_tensors="np")
    return {k: np.asarray(v) for k, v in out.items() if k in ("input_values", "attention_mask")}


def train_hf(
    model: nn.Module,
    extractor: Any,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    sampling_rate: int,
    recipe: TrainingRecipe,
    desc: str = "training",
) -> TrainResult:
    """Fine-tune (or train from scratch) a transformers audio classifier with ``Trainer``."""
    from transformers import PrinterCallback, ProgressCallback, Trainer, TrainerCallback, TrainingArguments

    train_ds = _FeatureDataset(extract_features(extractor, train[0], sampling_rate), train[1])
    test_ds = _FeatureDataset(extract_features(extractor, test[0], sampling_rate), test[1])

    def compute_metrics(prediction: Any) -> dict[str, float]:
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        return {"accuracy": accuracy(np.argmax(logits, axis=-1), prediction.label_ids)}

    class _Describe(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            logger.info("%s: %d steps", desc, state.max_steps)

    class _Progress(ProgressCallback):  # progress bars, but metrics go to the logger, not to stdout
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            logger.info("%s: %s", desc, logs)

    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp,
            num_train_epochs=recipe.hf_epochs,
            per_device_train_batch_size=min(recipe.batch_size, 32),
            per_device_eval_batch_size=64,
            learning_rate=recipe.hf_learning_rate,
            weight_decay=recipe.weight_decay,
            warmup_steps=0.1,
            lr_scheduler_type="linear",
            eval_strategy="epoch" if recipe.eval_every_epoch else "no",
            save_strategy="no",
            logging_strategy="epoch",
            report_to=[],
            seed=recipe.seed,
            data_seed=recipe.seed,
            use_cpu=not torch.cuda.is_available(),
            dataloader_num_workers=0,
            disable_tqdm=False,
        )
        trainer = Trainer(
            model=model, args=args, train_dataset=train_ds, eval_dataset=test_ds,
            processing_class=extractor, compute_metrics=compute_metrics, callbacks=[_Describe()],
        )
        for default in (PrinterCallback, ProgressCallback):
            trainer.remove_callback(default)
        trainer.add_callback(_Progress())
        trainer.train()
        curve = [
            {"epoch": float(h["epoch"]), "test_accuracy": float(h["eval_accuracy"])}
            for h in trainer.state.log_history if "eval_accuracy" in h
        ]
        losses = {float(h["epoch"]): float(h["loss"]) for h in trainer.state.log_history if "loss" in h}
        for point in curve:
            if point["epoch"] in losses:
                point["train_loss"] = losses[point["epoch"]]
        test_acc = trainer.evaluate(test_ds)["eval_accuracy"]
        train_acc = trainer.evaluate(train_ds, metric_key_prefix="train")["train_accuracy"]
        return TrainResult(float(test_acc), float(train_acc), int(trainer.state.global_step), curve, model=model,
                           extractor=extractor)
