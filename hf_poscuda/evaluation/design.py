"""Design each class's static barcode against surrogate models (``filter_family="designed"``).

Random class signatures lose to features that are easy or already learned (a speaker's voice): a model learns both,
and on clean audio the content decides. A *designed* signature is chosen against models instead. The objective
is **targeted**: surrogate models trained on the owner's *clean* data should take a protected clip of class ``c``
for class ``s(c)`` (``s``, a secret cycle through the classes drawn from the key). A model trained on the protected
copy then ties what a clean model reads as ``s(c)`` to the label ``c``, and on clean audio it is pulled to the wrong
class, rather than merely missing a cue. (This is targeted adversarial poisoning, Fowl et al. 2021, restricted to
one static filter per class: a convolution, as PosCUDA is.) ``DesignRecipe(objective="minimise")`` designs with the
class-wise error-minimising objective instead (Huang et al. 2021), ``"both"`` sums the two; on FSDD neither did
better than the targeted one (``docs/results/sweep.md``).

What is optimised: one gain in dB per class and band of the barcode layout (``num_bands`` values per class), within
``[-cut_db, +boost_db]``, starting from the key's own random barcode; the filter is applied in the frequency domain
(zero phase) during the design and realised as the usual linear-phase FIR when protecting. The key still draws the
time-varying bands, the positions and their order. Surrogates: the evaluation's CNNs trained from scratch on the
clean clips; models used to *measure* the result (GE2E above all) are never surrogates.

Everything random (the target cycle, surrogate initialisation and batches) comes from the key.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..barcode import class_patterns, gain_curve_db
from ..config import PosCUDAConfig
from ..designed import DesignedSignature
from ..key import PosCUDAKey
from .experiment import to_arrays
from .models import CNN_MODELS, build_cnn
from .training import TrainingRecipe, _predict, train_cnn

logger = logging.getLogger(__name__)

TARGETS = ("cycle", "nearest")
OBJECTIVES = ("targeted", "minimise", "both")


@dataclass(frozen=True)
class DesignRecipe:
    """How a signature table is designed.

    Args:
        surrogates (`tuple[str, ...]`, defaults to `("raw_cnn", "logmel_cnn")`): surrogate models (the evaluation's
            CNNs), trained on the clean clips; the loss is their mean.
        steps (`int`, defaults to `600`): Adam steps on the gains (batch ``batch_size``).
        surrogate_epochs (`int`, defaults to `15`): epochs each surrogate trains on clean audio first.
        batch_size (`int`, defaults to `64`): clips per step.
        learning_rate (`float`, defaults to `1.0`): Adam step size, in dB.
        clip_seconds (`float`, defaults to `1.0`): clips are cut or zero-padded to this length.
        targets (`str`, defaults to `"cycle"`): which class each class is pushed to: ``"cycle"``, one cycle through
            the classes drawn from the key; ``"nearest"``, the assignment without fixed points that the clean
            surrogates find easiest (the highest mean log-probability of the target over each class's clips).
            Not for ``objective="minimise"``.
        objective (`str`, defaults to `"targeted"`): ``"targeted"``, surrogates trained on the clean clips should
            take a protected clip for its class's target; ``"minimise"``, class-wise error-minimising (Huang et al.,
            2021): fresh surrogates train on the protected clips while the gains make the true label as easy to read
            from the filter as possible (one surrogate step, then one gain step; ``surrogate_epochs`` is unused);
            ``"both"``, the two losses summed.
        quality_weight (`float`, defaults to `0.0`): a penalty on loud filters, added to the loss: this weight times
            the mean square of the gains in units of 10 dB (0 dB is transparent). 0 leaves only the budget
            (``cut_db``, ``boost_db``) to bound them.
    """

    surrogates: tuple[str, ...] = ("raw_cnn", "logmel_cnn")
    steps: int = 600
    surrogate_epochs: int = 15
    batch_size: int = 64
    learning_rate: float = 1.0
    clip_seconds: float = 1.0
    targets: str = "cycle"
    objective: str = "targeted"
    quality_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.targets not in TARGETS:
            raise ValueError(f"targets must be one of {TARGETS}, got {self.targets!r}.")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}.")
        if self.objective == "minimise" and self.targets != "cycle":
            raise ValueError("objective='minimise' pushes every class to its own label: leave targets at 'cycle'.")
        if not self.surrogates or any(s not in CNN_MODELS for s in self.surrogates):
            raise ValueError(f"surrogates must be a non-empty subset of {list(CNN_MODELS)}, got {self.surrogates!r}.")
        for name in ("steps", "surrogate_epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}.")
        for name in ("learning_rate", "clip_seconds"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}.")
        if not self.quality_weight >= 0:
            raise ValueError(f"quality_weight must be >= 0, got {self.quality_weight!r}.")


def target_cycle(key: PosCUDAKey, num_classes: int) -> np.ndarray:
    """The secret target of each class: one cycle through all classes in a key-drawn order (no class is its own)."""
    order = np.argsort(key.uniform("design/target", 0, num_classes), kind="stable")
    sigma = np.empty(num_classes, dtype=np.int64)
    sigma[order] = np.roll(order, -1)
    return sigma


def nearest_targets(affinity: np.ndarray) -> np.ndarray:
    """The target of each class that maximises the total ``affinity[c, target]`` with no class its own target
    (an assignment problem, :func:`scipy.optimize.linear_sum_assignment`)."""
    cost = -np.asarray(affinity, dtype=np.float64)
    if cost.ndim != 2 or cost.shape[0] != cost.shape[1] or cost.shape[0] < 2:
        raise ValueError(f"affinity must be a square matrix of at least two classes, got shape {cost.shape}.")
    from scipy.optimize import linear_sum_assignment

    cost = cost - cost.min()
    np.fill_diagonal(cost, cost.max() * cost.shape[0] + 1.0)  # never worth a fixed point
    rows, cols = linear_sum_assignment(cost)
    return cols[np.argsort(rows)].astype(np.int64)


def _band_matrix(config: PosCUDAConfig, sampling_rate: int, n_fft: int) -> torch.Tensor:
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sampling_rate)
    eye = np.eye(config.num_bands)
    return torch.tensor(np.stack([gain_curve_db(eye[b], freqs, config, sampling_rate) for b in range(config.num_bands)]),
                        dtype=torch.float32)


def design_signatures(
    dataset: Any,
    key: PosCUDAKey,
    config: PosCUDAConfig | None = None,
    recipe: DesignRecipe | None = None,
    *,
    audio_column: str = "audio",
    label_column: str = "label",
) -> DesignedSignature:
    """Design every class's static barcode gains for ``dataset`` (clean, labelled; one sampling rate).

    Args:
        dataset (`datasets.Dataset`): the owner's clean training split (the one that will be protected).
        key (`PosCUDAKey`): the key (its random barcode is the starting point; it draws the target cycle).
        config (`PosCUDAConfig`, *optional*): the layout and budget (``num_bands``, band edges, ``cut_db``,
            ``boost_db``); default ``PosCUDAConfig(filter_family="designed")``.
        recipe (`DesignRecipe`, *optional*): surrogates and optimisation.

    Returns:
        `DesignedSignature`: attach it with ``key.with_design(...)`` and save the key (format v2).
    """
    config = config or PosCUDAConfig(filter_family="designed")
    recipe = recipe or DesignRecipe()
    data = to_arrays(dataset, recipe.clip_seconds, audio_column, label_column)
    num_classes = int(data.labels.max()) + 1
    if num_classes < 2:
        raise ValueError("Designing signatures needs at least two classes.")
    sr, n = data.sampling_rate, data.audio.shape[1]
    static_config = config.replace(filter_family="barcode", placement="whole", filters_per_class=1, vary_cuts=0,
                                   vary_boosts=0)
    start = class_patterns(key, static_config, num_classes)[:, 0]
    seed = int(key.uniform("design/seed", 0, 1)[0] * 2**31)
    bands = _band_matrix(config, sr, 2 * n)

    def apply(x: torch.Tensor, y: torch.Tensor, gains: torch.Tensor) -> torch.Tensor:
        spectrum = torch.fft.rfft(x, n=2 * n) * 10.0 ** ((gains[y] @ bands) / 20.0)
        return torch.fft.irfft(spectrum, n=2 * n)[:, :n]

    audio, labels = torch.from_numpy(data.audio), torch.from_numpy(data.labels)
    gains, info = _optimise(audio, labels, num_classes, sr, start, apply, config, recipe, seed, key)
    logger.info("Designed %d classes against %s: %s", num_classes, list(recipe.surrogates), info)
    info = {"objective": recipe.objective, "targets": recipe.targets,
            "recipe": asdict(recipe) | {"surrogates": list(recipe.surrogates)},
            "sampling_rate": sr, "clips": len(audio), **info}
    return DesignedSignature(gains.detach().numpy().astype(np.float64), config.num_bands, config.band_low_hz,
                             config.band_high_hz, method=recipe.objective, info=info)


def _penalty(gains: torch.Tensor, recipe: DesignRecipe) -> torch.Tensor:
    """The quality penalty: ``quality_weight`` times the mean square of the gains in units of 10 dB."""
    return recipe.quality_weight * (gains / 10.0).square().mean()


def _optimise(audio: torch.Tensor, labels: torch.Tensor, num_classes: int, sr: int, start: np.ndarray, apply: Any,
              config: PosCUDAConfig, recipe: DesignRecipe, seed: int,
              key: PosCUDAKey) -> tuple[torch.Tensor, dict[str, Any]]:
    """The gains, by Adam from ``start``: against surrogates trained on the clean clips (targeted), against fresh
    surrogates that learn the protected clips step by step beside them (error-minimising), or both losses summed."""
    fixed: list[torch.nn.Module] = []  # trained on the clean clips first, then frozen (targeted)
    if recipe.objective in ("targeted", "both"):
        for i, name in enumerate(recipe.surrogates):
            torch.manual_seed(seed + i)
            model = build_cnn(name, num_classes, sr)
            train_cnn(model, (audio.numpy(), labels.numpy()), (audio[:1].numpy(), labels[:1].numpy()),
                      TrainingRecipe(epochs=recipe.surrogate_epochs, seed=seed + i, eval_every_epoch=False),
                      desc=f"surrogate {name}")
            fixed.append(model.eval().requires_grad_(False))
        target = torch.from_numpy(_targets(recipe, key, fixed, audio, labels, num_classes)[labels.numpy()])
    learners: list[tuple[torch.nn.Module, torch.optim.Optimizer]] = []  # learn the protected clips (minimise)
    if recipe.objective in ("minimise", "both"):
        training = TrainingRecipe()
        for i, name in enumerate(recipe.surrogates):
            torch.manual_seed(seed + len(fixed) + i)
            model = build_cnn(name, num_classes, sr)
            learners.append((model, torch.optim.AdamW(model.parameters(), lr=training.learning_rate,
                                                      weight_decay=training.weight_decay)))
    gains = torch.tensor(start, dtype=torch.float32, requires_grad=True)
    optimizer = torch.optim.Adam([gains], lr=recipe.learning_rate)
    generator = torch.Generator().manual_seed(seed)
    for _ in tqdm(range(recipe.steps), desc=f"design ({recipe.objective})", leave=False):
        idx = torch.randint(0, len(audio), (recipe.batch_size,), generator=generator)
        batch = apply(audio[idx], labels[idx], gains)
        for model, model_optimizer in learners:  # one step on the protected batch, then the gains' step
            model.train()
            model_optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(batch.detach()), labels[idx]).backward()
            model_optimizer.step()
        loss = _penalty(gains, recipe)
        if fixed:
            loss = loss + sum(torch.nn.functional.cross_entropy(m(batch), target[idx]) for m in fixed) / len(fixed)
        if learners:
            loss = loss + sum(torch.nn.functional.cross_entropy(m.eval()(batch), labels[idx])
                              for m, _ in learners) / len(learners)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            gains.clamp_(-config.cut_db, config.boost_db)
    with torch.no_grad():  # every clip with its class's designed filter, once for every surrogate's report
        protected = torch.cat([apply(audio[i : i + 256], labels[i : i + 256], gains)
                               for i in range(0, len(audio), 256)]).numpy()
    info: dict[str, Any] = {}
    for name, model in zip(recipe.surrogates[: len(fixed)], fixed, strict=True):
        info[f"{name}_takes_target"] = round(float((_predict(model, protected) == target.numpy()).mean()), 4)
    for name, (model, _) in zip(recipe.surrogates[: len(learners)], learners, strict=True):
        for what, clips in (("protected", protected), ("clean", audio.numpy())):
            info[f"{name}_{what}_accuracy"] = round(float((_predict(model, clips) == labels.numpy()).mean()), 4)
    return gains, info


def _targets(recipe: DesignRecipe, key: PosCUDAKey, surrogates: list[torch.nn.Module], audio: torch.Tensor,
             labels: torch.Tensor, num_classes: int) -> np.ndarray:
    """Each class's target: the key's cycle, or the assignment the clean surrogates find easiest."""
    if recipe.targets == "cycle":
        return target_cycle(key, num_classes)
    with torch.no_grad():  # the classes the clean surrogates already confuse most: the least change reaches them
        logp = torch.cat([sum(torch.log_softmax(m(audio[i : i + 256]), -1) for m in surrogates)
                          for i in range(0, len(audio), 256)]) / len(surrogates)
    affinity = np.stack([logp[labels == c].mean(0).numpy() if (labels == c).any()
                         else np.zeros(num_classes) for c in range(num_classes)])
    return nearest_targets(affinity)
