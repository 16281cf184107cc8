"""Number and table-cell formatting shared by dataset cards (core) and evaluation reports (``evaluation/``).

It lives in the core so that rendering a card never imports the evaluation package (models, training).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any


def percent(value: float | None) -> str:
    """A fraction as a percentage with one decimal, ``"–"`` for a missing or non-finite value.

    Example:
        ```py
        >>> from hf_poscuda.formatting import percent
        >>> percent(0.2034), percent(None), percent(float("nan"))
        ('20.3 %', '–', '–')
        ```
    """
    return "–" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{100 * value:.1f} %"


def number(value: float | None, digits: int = 2) -> str:
    """``value`` with ``digits`` decimals, ``"–"`` for a missing or non-finite value."""
    return "–" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.{digits}f}"


def key_range(counts: Iterable[int]) -> str:
    """How many keys the cells of one table row average: ``"5"``, or ``"2–5"`` where they differ."""
    counts = sorted(set(counts))
    return "–" if not counts else str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"


NO_EVIDENCE_FACTOR = 2.0


def no_evidence(clean_accuracy: float, num_classes: int | None) -> bool:
    """Whether a model is too weak to say anything about protection: trained on *clean* data it stayed below
    ``NO_EVIDENCE_FACTOR`` times chance (``1 / num_classes``), so a low accuracy after protected training shows
    nothing. ``False`` when the number of classes is unknown.

    Example:
        ```py
        >>> from hf_poscuda.formatting import no_evidence
        >>> no_evidence(0.19, 10), no_evidence(0.95, 10), no_evidence(0.19, None)
        (True, False, False)
        ```
    """
    return bool(num_classes) and clean_accuracy < NO_EVIDENCE_FACTOR / num_classes


def attack_cell(result: Mapping[str, Any], model: str, protected_accuracy: float) -> str:
    """One model's cell of a countermeasure row: ``"48.0 % (-13.7)"``, the change in points against protected
    training without the countermeasure, plus ``" [clean: 100.0 %]"`` when the clean-data baseline was measured;
    ``"n/a"`` when the countermeasure does not apply to the model."""
    run = result["models"].get(model)
    if run is None:
        return "n/a"
    delta = 100 * (run["test_accuracy"] - protected_accuracy)
    cell = f"{percent(run['test_accuracy'])} ({delta:+.1f})"
    baseline = (result.get("clean_models") or {}).get(model)
    if baseline is not None:
        cell += f" [clean: {percent(baseline['test_accuracy'])}]"
    return cell


FINETUNE_WORDS = {
    "full": "every layer trained",
    "partial": "lower half frozen, upper layers and head trained",
    "probe": "a linear probe: frozen features, the head alone trained",
}


def finetune_words(mode: str | None) -> str:
    """What a fine-tuning mode of the evaluation (``full`` / ``partial`` / ``probe``) trains, in words."""
    return FINETUNE_WORDS.get(mode or "full", str(mode))


def display_label(label: str) -> str:
    """A model label for public tables: a checkpoint path of three or more parts (a local folder; a Hub id has two,
    ``org/name``) is shortened to its last folder, so no local path reaches a card.

    Example:

    ```py
    >>> from hf_poscuda.formatting import display_label
    >>> display_label("ast@probe:/home/alice/ckpt/ast-x"), display_label("ast:org/name"), display_label("raw_cnn")
    ('ast@probe:ast-x', 'ast:org/name', 'raw_cnn')

    ```
    """
    name, sep, checkpoint = label.partition(":")
    return f"{name}:{display_checkpoint(checkpoint)}" if sep else label


def display_checkpoint(checkpoint: str) -> str:
    """A checkpoint for public text: a Hub id (``org/name``) as is, a local folder (three or more path parts) by its
    last folder."""
    from pathlib import PurePosixPath

    parts = PurePosixPath(checkpoint).parts
    return parts[-1] if len(parts) >= 3 else checkpoint
