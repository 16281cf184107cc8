"""The evaluation report, typed: what ``hf-poscuda evaluate`` writes (``report.json``, built by
:mod:`hf_poscuda.evaluation.report`) and what the card, its chart and the push read. Core module: it imports
nothing from ``evaluation/``; both sides read reports through :meth:`EvaluationReport.from_dict`, which checks the
structure and says what is missing, instead of walking nested dicts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Clean-test accuracy at or below which a model trained on protected data counts as protected against (the
#: product's goal on FSDD; chance is 10 %). The card, its chart and the evaluation reports all use this one value.
GOAL_ACCURACY = 0.2
SCHEMA_VERSION = 1


def _accuracy(data: Mapping[str, Any], key: str, where: str) -> float:
    value = data.get(key) if isinstance(data, Mapping) else None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ValueError(f"The evaluation report has no number at {where}.{key}; pass the report.json that "
                         "`hf-poscuda evaluate` wrote.")
    return float(value)


@dataclass(frozen=True)
class RunResult:
    """One training run: clean-test accuracy at the end (``test_accuracy``) and at its best epoch."""

    test_accuracy: float
    peak_test_accuracy: float | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str) -> RunResult:
        peak = data.get("peak_test_accuracy") if isinstance(data, Mapping) else None
        return cls(_accuracy(data, "test_accuracy", where), float(peak) if isinstance(peak, (int, float)) else None)


@dataclass(frozen=True)
class ModelStart:
    """Where a model's training started: ``"scratch"`` or ``"pretrained"`` (then the checkpoint and the
    fine-tuning mode: ``full``, ``partial`` or ``probe``)."""

    origin: str = "scratch"
    checkpoint: str | None = None
    finetune: str | None = None

    @property
    def pretrained(self) -> bool:
        return self.origin == "pretrained"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> ModelStart:
        data = data or {}
        checkpoint = data.get("checkpoint")
        return cls(str(data.get("from", "scratch")), str(checkpoint) if checkpoint is not None else None,
                   data.get("finetune"))


@dataclass(frozen=True)
class ModelResult:
    """A model trained once on clean and once on protected train audio, both tested on clean test audio."""

    label: str
    clean: RunResult
    protected: RunResult
    start: ModelStart = field(default_factory=ModelStart)

    def held(self, goal: float = GOAL_ACCURACY) -> bool:
        """Whether protected training stayed at or below ``goal``, at the end and at its best epoch."""
        peak = self.protected.peak_test_accuracy
        return self.protected.test_accuracy <= goal and (peak is None or not math.isfinite(peak) or peak <= goal)


@dataclass(frozen=True)
class SettingResult:
    """One protection setting of a report: its parameters, key id, audio quality, models and countermeasures.

    ``raw`` keeps the entry as written (it is what ``poscuda.json`` records), the other fields are its typed view.
    """

    name: str
    config: dict[str, Any]
    key_id: str | None
    quality: dict[str, Any]
    models: dict[str, ModelResult]
    attacks: dict[str, dict[str, Any]]
    num_classes: int | None
    train_clips: int | None
    test_clips: int | None
    raw: dict[str, Any]

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any]) -> SettingResult:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("models"), Mapping):
            raise ValueError("A setting of the evaluation report has no 'models'; pass the report.json that "
                             "`hf-poscuda evaluate` wrote.")
        name = str(entry.get("name", "?"))
        models = {
            label: ModelResult(
                label, RunResult.from_dict(run.get("clean", {}), f"settings[{name}].models[{label}].clean"),
                RunResult.from_dict(run.get("protected", {}), f"settings[{name}].models[{label}].protected"),
                ModelStart.from_dict(run.get("start")),
            )
            for label, run in entry["models"].items()
        }
        return cls(name, dict(entry.get("config", {})), entry.get("key_id"), dict(entry.get("quality") or {}), models,
                   dict(entry.get("attacks") or {}), entry.get("num_classes"), entry.get("train_clips"),
                   entry.get("test_clips"), dict(entry))


@dataclass(frozen=True)
class EvaluationReport:
    """An ``hf-poscuda evaluate`` report (schema version 1; see :mod:`hf_poscuda.evaluation.report`).

    Example:

    ```py
    >>> from hf_poscuda.report_schema import EvaluationReport
    >>> report = EvaluationReport.from_dict({"dataset": "fsdd", "recipe": {"seed": 0}, "settings": [
    ...     {"name": "default", "config": {"k": 1}, "models": {"raw_cnn": {
    ...         "clean": {"test_accuracy": 0.9}, "protected": {"test_accuracy": 0.15}}}}]})
    >>> setting = report.setting_for({"k": 1})
    >>> setting.models["raw_cnn"].held(), setting.models["raw_cnn"].start.pretrained
    (True, False)

    ```
    """

    dataset: str
    recipe: dict[str, Any]
    settings: list[SettingResult]
    raw: dict[str, Any]

    @classmethod
    def from_dict(cls, report: Mapping[str, Any]) -> EvaluationReport:
        """Check and type a report read from JSON.

        Raises:
            ValueError: not an hf-poscuda report, or a setting or run without its numbers.
        """
        if not isinstance(report, Mapping) or "settings" not in report:
            raise ValueError("The evaluation report is not an hf-poscuda report (no 'settings'); pass report.json.")
        version = report.get("schema_version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise ValueError(f"The evaluation report has schema version {version}; this hf-poscuda reads version "
                             f"{SCHEMA_VERSION}. Re-run `hf-poscuda evaluate` with this version.")
        return cls(str(report.get("dataset", "?")), dict(report.get("recipe") or {}),
                   [SettingResult.from_dict(s) for s in report["settings"]], dict(report))

    def setting_for(self, config: Mapping[str, Any]) -> SettingResult:
        """The setting whose protection parameters equal ``config``.

        Raises:
            ValueError: the report did not measure these parameters (a card would otherwise show numbers for
                something else).
        """
        for setting in self.settings:
            if setting.config == dict(config):
                return setting
        raise ValueError(
            f"The evaluation report has no setting with the parameters being pushed (it has "
            f"{[s.name for s in self.settings]}). Run `hf-poscuda evaluate` with the same preset/knobs, or push "
            "without --eval-report."
        )
