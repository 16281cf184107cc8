"""Evaluation reports: JSON (schema below), a Markdown table and PNG plots.

JSON schema (``schema_version`` 1)::

    {
      "schema_version": 1,
      "created": "2026-11-26T12:00:00+00:00",
      "dataset": "free-spoken-digit-dataset",          # a label given by the caller
      "recipe": {TrainingRecipe fields},                # identical for every run, incl. "seed"
      "versions": {"hf_poscuda", "torch", "transformers", "datasets", "python"},
      "settings": [                                     # one entry per protection setting
        {
          "name": "default",
          "config": {PosCUDAConfig fields},
          "key_id": "...",                              # public id only, never the secret
          "quality": {"pesq", "stoi", "snr_db", "snr_db_overall", "segmental_snr_db", "lsd_db",
                      "<metric>_clips", "clips"},       # means over the clips each metric could score
          "models": {
            "<model label>": {
              "start": {"from": "scratch", "preset": "small"}    # or, the fine-tuning threat:
                    | {"from": "pretrained", "checkpoint": "<folder or Hub id>", "finetune": "full|partial|probe"},
              "clean":     {"test_accuracy", "train_accuracy", "steps", "curve": [{"epoch", "test_accuracy", ...}]},
              "protected": {same keys}
            }
          },
          "train_clips", "test_clips", "num_classes", "sampling_rate", "seconds", "hf_poscuda_version"
        }
      ]
    }

"Test accuracy" is always on the clean test split. Protection works for a model when ``protected.test_accuracy``
is far below ``clean.test_accuracy`` (the issue's goal: at most 20 % on FSDD for the CNNs).
"""

from __future__ import annotations

import datetime as _dt
import itertools
import json
import logging
import math
import platform
from pathlib import Path
from typing import Any

from .._version import __version__
from ..formatting import attack_cell, finetune_words, no_evidence
from ..formatting import number as _num
from ..formatting import percent as _pct
from ..report_schema import GOAL_ACCURACY, SCHEMA_VERSION, EvaluationReport, SettingResult
from .training import TrainingRecipe

logger = logging.getLogger(__name__)



def build_report(settings: list[dict[str, Any]], recipe: TrainingRecipe, dataset: str) -> dict[str, Any]:
    """Wrap setting entries (from :func:`~hf_poscuda.evaluation.evaluate_protection`) into a report."""
    import datasets
    import torch
    import transformers

    return {
        "schema_version": SCHEMA_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "dataset": dataset,
        "recipe": recipe.to_dict(),
        "versions": {
            "hf_poscuda": __version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "datasets": datasets.__version__,
            "python": platform.python_version(),
        },
        "settings": settings,
    }


def report_markdown(report: dict[str, Any]) -> str:
    """A Markdown table: one row per setting, clean-test accuracy after protected training for each model."""
    typed = EvaluationReport.from_dict(report)
    settings = typed.settings
    if not settings:
        return "_No settings evaluated._\n"
    models = list(settings[0].models)
    head = "| setting | PESQ | SNR (dB) | STOI | " + " | ".join(models) + " |"
    sep = "|---|---:|---:|---:|" + "---:|" * len(models)
    clean = "| **clean training (no protection)** | – | – | – | " + " | ".join(
        _pct(settings[0].models[m].clean.test_accuracy) for m in models
    ) + " |"
    rows = [head, sep, clean]
    for s in settings:
        q = s.quality
        cells = [_protected_cell(s, m) if m in s.models else "–" for m in models]
        rows.append(
            f"| {s.name} | {_num(q.get('pesq'))} | {_num(q.get('snr_db_overall'), 1)} | {_num(q.get('stoi'))} | "
            + " | ".join(cells) + " |"
        )
    recipe = report["recipe"]
    from .models import CNN_MODELS

    epochs = []
    if any(m in CNN_MODELS for m in models):
        epochs.append(f"CNNs {recipe['epochs']} epochs")
    if any(m not in CNN_MODELS for m in models):
        epochs.append(f"transformers {recipe['hf_epochs']} epochs")
    note = (
        f"\nClean-test accuracy of each model trained on the protected train split (first row: trained on the clean "
        f"train split). Dataset: {report['dataset']}; seed {recipe['seed']}; {', '.join(epochs)}; clips cut/padded "
        f"to {recipe['clip_seconds']} s. PESQ, STOI and SNR compare protected and original train audio.\n"
    )
    pretrained = {m: settings[0].models[m].start for m in models if settings[0].models[m].start.pretrained}
    if pretrained:
        note += "\n**Pretrained start** (the fine-tuning threat): " + "; ".join(
            f"`{m}` fine-tunes `{start.checkpoint}` ({finetune_words(start.finetune)})"
            for m, start in pretrained.items()
        ) + ". The other models are trained from scratch.\n"
    tables = [attacks_markdown(report, s.name) for s in settings if s.attacks]
    return "\n".join(rows) + "\n" + note + "".join("\n" + t for t in tables)


def _protected_cell(setting: SettingResult, model: str) -> str:
    run = setting.models[model]
    cell = _pct(run.protected.test_accuracy)
    if no_evidence(run.clean.test_accuracy, setting.num_classes):
        cell += " (no evidence: clean training stayed near chance)"
    return cell


def plot_curves(setting: dict[str, Any], path: str | Path) -> Path:
    """Clean-test accuracy per epoch, clean vs protected training, one panel per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(setting["models"])
    fig, axes = plt.subplots(1, len(models), figsize=(4 * len(models), 3.2), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        for run, style in (("clean", "-"), ("protected", "--")):
            curve = [p for p in setting["models"][model][run]["curve"] if "test_accuracy" in p]
            ax.plot([p["epoch"] for p in curve], [p["test_accuracy"] for p in curve], style, label=f"trained on {run}",
                    marker="o" if len(curve) == 1 else None)  # one epoch: a line of one point would not show
        ax.set_title(model)
        ax.set_xlabel("epoch")
        ax.set_ylabel("clean-test accuracy")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0][0].legend(loc="lower right", fontsize=8)
    fig.suptitle(f"Setting: {setting['name']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_accuracy_vs_pesq(
    report: dict[str, Any], path: str | Path, goal_accuracy: float = GOAL_ACCURACY, goal_pesq: float = 3.5
) -> Path:
    """Protected-train clean-test accuracy against PESQ, one marker per setting and model; goal region shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = report["settings"]
    models = list(settings[0]["models"]) if settings else []
    fig, ax = plt.subplots(figsize=(7.5, 5))
    ax.axvspan(goal_pesq, 4.6, ymin=0, ymax=goal_accuracy, color="tab:green", alpha=0.12, label="goal")
    for marker, model in zip(itertools.cycle("osD^v<>"), models):
        xs = [s["quality"]["pesq"] for s in settings if model in s["models"]]
        ys = [s["models"][model]["protected"]["test_accuracy"] for s in settings if model in s["models"]]
        ax.scatter(xs, ys, marker=marker, label=model)
        clean = settings[0]["models"][model]["clean"]["test_accuracy"]
        ax.axhline(clean, ls=":", lw=1, color=ax.collections[-1].get_facecolor()[0])
    for s in settings:
        ys = [s["models"][m]["protected"]["test_accuracy"] for m in models if m in s["models"]]
        if ys and math.isfinite(s["quality"]["pesq"]):
            ax.annotate(s["name"], (s["quality"]["pesq"], min(ys)), fontsize=6, alpha=0.7,
                        xytext=(3, -8), textcoords="offset points")
    ax.set_xlabel("PESQ of protected vs original train audio (higher = less audible)")
    ax.set_ylabel("clean-test accuracy after protected training")
    ax.set_ylim(0, 1)
    ax.set_xlim(1.0, 4.6)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title("Unlearnability vs audio quality (dotted: clean training)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def write_report(report: dict[str, Any], folder: str | Path, curves_for: str | None = None) -> dict[str, Path]:
    """Write ``report.json``, ``report.md``, ``accuracy_vs_pesq.png`` and ``curves.png`` into ``folder``."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "markdown": out / "report.md"}
    paths["json"].write_text(json.dumps(report, indent=1, allow_nan=True))
    paths["markdown"].write_text(report_markdown(report))
    if report["settings"]:
        paths["accuracy_vs_pesq"] = plot_accuracy_vs_pesq(report, out / "accuracy_vs_pesq.png")
        chosen = next((s for s in report["settings"] if s["name"] == curves_for), report["settings"][0])
        paths["curves"] = plot_curves(chosen, out / "curves.png")
    return paths


def setting_summary_markdown(report: dict[str, Any], setting: str, goal_accuracy: float = GOAL_ACCURACY) -> str:
    """A short, plain statement of what one setting did, for a dataset card. Says so when protection failed.

    Args:
        report (`dict`): an evaluation report.
        setting (`str`): the setting's name in the report.
        goal_accuracy (`float`, defaults to `GOAL_ACCURACY`, 0.2): clean-test accuracy at or below which a model
            counts as not having learned the task from the protected data.
    """
    entry = next((s for s in report["settings"] if s["name"] == setting), None)
    if entry is None:
        raise ValueError(f"Setting {setting!r} not in the report; it has {[s['name'] for s in report['settings']]}.")
    q = entry["quality"]
    lines = [
        f"Measured on **{report['dataset']}** ({entry['train_clips']} train / {entry['test_clips']} test clips, "
        f"seed {report['recipe']['seed']}), setting `{setting}`. Audio quality of the protected train audio: "
        f"PESQ {_num(q.get('pesq'))}, SNR {_num(q.get('snr_db_overall'), 1)} dB, STOI {_num(q.get('stoi'))}.",
        "",
        "| model | trained on clean data | trained on protected data | protection held? |",
        "|---|---:|---:|---|",
    ]
    for model, run in SettingResult.from_dict(entry).models.items():
        clean, prot = run.clean.test_accuracy, run.protected.test_accuracy
        held = ("no evidence: clean training stayed near chance" if no_evidence(clean, entry.get("num_classes"))
                else "yes" if prot <= goal_accuracy else "**no**")
        lines.append(f"| {model} | {_pct(clean)} | {_pct(prot)} | {held} (goal: at most {_pct(goal_accuracy)}) |")
    lines += [
        "",
        "Accuracies are on the clean test split. A model counts as protected against only when its accuracy after "
        "training on the protected data is at most the goal; anything above means it still learned the task.",
    ]
    return "\n".join(lines) + "\n"


def attacks_markdown(report: dict[str, Any], setting: str) -> str:
    """Robustness table of one setting: clean-test accuracy after protected training under each countermeasure.

    Rows: clean training, protected training without a countermeasure, then one row per countermeasure with its
    kind, the audio quality it costs the adversary (PESQ of countermeasure output vs clean input) and, per model,
    the accuracy and its change against the no-countermeasure row (plus, when the attack result has
    ``clean_models``, the accuracy of clean training under the same countermeasure). Raises ``ValueError`` if the setting has no
    countermeasure results.
    """
    entry = next((s for s in report["settings"] if s["name"] == setting), None)
    if entry is None:
        raise ValueError(f"Setting {setting!r} not in the report; it has {[s['name'] for s in report['settings']]}.")
    attacks = entry.get("attacks")
    if not attacks:
        raise ValueError(f"Setting {setting!r} has no countermeasure results; run the evaluation with attacks.")
    models = list(entry["models"])
    rows = [
        f"Robustness of setting `{setting}` on **{report['dataset']}**: clean-test accuracy of models trained on the "
        "protected train split while an adversary applies a countermeasure. Lower is better for the protection. "
        "Preprocessing countermeasures are also applied to the test audio (they are part of the adversary's "
        "pipeline); augmentations act on training batches only.",
        "",
        "| training data | kind | PESQ cost | " + " | ".join(models) + " |",
        "|---|---|---:|" + "---:|" * len(models),
        "| clean (no protection) | – | – | "
        + " | ".join(_pct(entry["models"][m]["clean"]["test_accuracy"]) for m in models) + " |",
        "| protected, no countermeasure | – | – | "
        + " | ".join(_pct(entry["models"][m]["protected"]["test_accuracy"]) for m in models) + " |",
    ]
    for name, result in attacks.items():
        cells = [attack_cell(result, m, entry["models"][m]["protected"]["test_accuracy"]) for m in models]
        rows.append(
            f"| protected + `{name}` ({result['description']}) | {result['kind']} | {_num(result['quality'].get('pesq'))} | "
            + " | ".join(cells) + " |"
        )
    rows += [
        "",
        "PESQ cost: mean PESQ of the countermeasure's output against its clean input (4.5 = unchanged); it is what "
        "the adversary gives up in audio quality. In brackets: change in points against training on the protected "
        "data without a countermeasure. [clean: …], where measured: the same model trained on the clean data under "
        "the same countermeasure, i.e. what the countermeasure alone does to accuracy. n/a: the countermeasure does "
        "not apply to that model.",
    ]
    return "\n".join(rows) + "\n"
