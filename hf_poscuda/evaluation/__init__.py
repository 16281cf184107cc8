"""Measure whether PosCUDA protection works: train on clean vs protected audio, test on clean audio."""

from .attacks import ATTACKS, Attack, get_attack
from .experiment import (
    AudioArrays,
    ModelSpec,
    evaluate_attack,
    evaluate_protection,
    measure_quality,
    run_evaluation,
    to_arrays,
)
from .models import HF_PRESETS, MODELS, build_cnn, build_hf_model
from .protocol import DataSpec, public_eval_key, run_grid, summarise, summary_markdown
from .report import (
    build_report,
    plot_accuracy_vs_pesq,
    plot_curves,
    report_markdown,
    setting_summary_markdown,
    write_report,
)
from .training import TrainingRecipe, TrainResult, accuracy

__all__ = [
    "ATTACKS",
    "DataSpec",
    "public_eval_key",
    "run_grid",
    "summarise",
    "summary_markdown",
    "Attack",
    "evaluate_attack",
    "get_attack",
    "HF_PRESETS",
    "MODELS",
    "AudioArrays",
    "ModelSpec",
    "TrainResult",
    "TrainingRecipe",
    "accuracy",
    "build_cnn",
    "build_hf_model",
    "build_report",
    "evaluate_protection",
    "measure_quality",
    "plot_accuracy_vs_pesq",
    "plot_curves",
    "report_markdown",
    "run_evaluation",
    "setting_summary_markdown",
    "to_arrays",
    "write_report",
]
