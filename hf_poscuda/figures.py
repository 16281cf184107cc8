"""The card's public figure: clean-test accuracy per model, trained on clean data, on the protected data, and on
the protected data under each countermeasure of the evaluation report.

It shows accuracies only. Nothing per class (no spectra, no filter responses, no original-vs-protected
comparison) goes on a public card: that would show the class filters the key keeps secret. Rendering needs
matplotlib (the ``eval`` extra); without it there is no figure and the card's tables stand alone.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping
from typing import Any

from .report_schema import GOAL_ACCURACY, SettingResult

logger = logging.getLogger(__name__)

FIGURE_FILE = "poscuda_evaluation.png"


def evaluation_chart(entry: Mapping[str, Any], goal: float = GOAL_ACCURACY) -> bytes | None:
    """PNG bytes of the chart for one report setting (see :mod:`hf_poscuda.evaluation.report`), or ``None`` when
    matplotlib is not installed. The same entry gives the same bytes (no timestamp in the file)."""
    try:
        import matplotlib
    except ImportError:
        logger.info("matplotlib is not installed (pip install 'hf-poscuda[eval]'): no evaluation chart on the card")
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    setting = SettingResult.from_dict(entry)
    models = list(setting.models)
    bars: list[tuple[str, list[float]]] = [
        ("trained on clean data", [setting.models[m].clean.test_accuracy for m in models]),
        ("trained on protected data", [setting.models[m].protected.test_accuracy for m in models]),
    ]
    for name, result in setting.attacks.items():
        runs = result.get("models", {})
        bars.append((f"protected + {name}", [runs[m]["test_accuracy"] if m in runs else np.nan for m in models]))
    width = 0.8 / len(bars)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(models) * max(1, len(bars) / 3)), 3.6))
    x = np.arange(len(models))
    for i, (label, values) in enumerate(bars):
        ax.bar(x + (i - (len(bars) - 1) / 2) * width, values, width, label=label)
    ax.axhline(goal, color="black", lw=1, ls="--", label=f"goal: at most {100 * goal:.0f} %")
    ax.set_xticks(x, models)
    ax.set_ylim(0, 1)
    ax.set_ylabel("clean-test accuracy")
    ax.legend(fontsize=7, ncols=2, loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()
