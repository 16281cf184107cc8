"""Class labels: map a dataset's label feature (``ClassLabel``, integers or strings) to class indices."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


def check_label_names(
    label_names: Sequence[str] | None, num_classes: int | None
) -> tuple[tuple[str, ...] | None, int | None]:
    """Check the class names and class count given to :class:`~hf_poscuda.PosCUDA` and return them settled.

    Args:
        label_names (`Sequence[str]`, *optional*): class names in index order; must be distinct strings.
        num_classes (`int`, *optional*): number of classes; must agree with ``label_names`` when both are given.

    Returns:
        `tuple`: the names as a tuple (or ``None``) and the number of classes (``len(label_names)`` when names
        are given; ``None``: unbounded integer labels).

    Raises:
        ValueError: names not distinct strings, a count that disagrees with them, or a count that is not a
            positive int.

    Example:

    ```py
    >>> from hf_poscuda.labels import check_label_names
    >>> check_label_names(["no", "yes"], None)
    (('no', 'yes'), 2)

    ```
    """
    names = tuple(label_names) if label_names is not None else None
    if names is not None:
        if not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
            raise ValueError("label_names must be distinct strings, in class-index order.")
        if num_classes is not None and num_classes != len(names):
            raise ValueError(f"num_classes={num_classes} disagrees with {len(names)} label_names.")
        num_classes = len(names)
    if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}.")
    return names, num_classes


def dataset_label_names(dataset: Any, label_column: str = "label") -> list[str] | None:
    """The class names, in index order, that ``dataset``'s label column implies.

    ``ClassLabel`` columns give their names; string columns give their sorted distinct values (a deterministic
    mapping); integer columns give no names (``None``: the labels are the class indices).

    Args:
        dataset (`datasets.Dataset` or `datasets.IterableDataset`): a split with known features.
        label_column (`str`, defaults to `"label"`): the label column.

    Raises:
        ValueError: the column is missing, of another type, holds unlabelled rows (``None``), or holds strings
            in a dataset that cannot list its values (streaming).

    Example:

    ```py
    >>> from datasets import Dataset
    >>> from hf_poscuda.labels import dataset_label_names
    >>> dataset_label_names(Dataset.from_dict({"label": ["yes", "no", "yes"]}))
    ['no', 'yes']

    ```
    """
    from datasets import ClassLabel, Value

    features = dataset.features
    if features is None or label_column not in features:
        raise ValueError(
            f"Label column {label_column!r} not found in the dataset's features "
            f"({list(features) if features is not None else 'unknown'}). Pass label_column=... with the right "
            "name, or label_names=[...] in class-index order."
        )
    feature = features[label_column]
    if isinstance(feature, ClassLabel):
        return feature.names
    if isinstance(feature, Value) and feature.dtype in ("string", "large_string"):
        if not hasattr(dataset, "unique"):
            raise ValueError(
                f"Label column {label_column!r} holds strings and this dataset cannot list its values "
                "(streaming). Pass label_names=[...] in class-index order."
            )
        values = dataset.unique(label_column)
        if any(v is None for v in values):
            raise ValueError(
                f"Label column {label_column!r} has unlabelled rows (None). Remove them "
                f"(ds.filter(lambda r: r[{label_column!r}] is not None)) before protecting."
            )
        return sorted(values)
    if not (isinstance(feature, Value) and feature.dtype.startswith(("int", "uint"))):
        raise ValueError(
            f"Label column {label_column!r} is {feature!r}; expected a ClassLabel, an integer or a string "
            "column. Cast it (e.g. ds.class_encode_column(...)) or pass label_column=... ."
        )
    return None


def label_index(
    label: Any,
    row: int,
    label_column: str = "label",
    label_names: Sequence[str] | None = None,
    num_classes: int | None = None,
) -> int:
    """Map one label to its class index, or raise a ``ValueError`` that says how to fix it.

    Args:
        label (`int`, `str` or `None`): the label as the dataset holds it (a ``ClassLabel`` index, an int, a string).
        row (`int`): its row in the batch, named in error messages.
        label_column (`str`, defaults to `"label"`): its column, named in error messages.
        label_names (`Sequence[str]`, *optional*): class names in index order; required for string labels.
        num_classes (`int`, *optional*): integer labels outside ``[0, num_classes)`` are refused; ``None``: unbounded.

    Example:

    ```py
    >>> from hf_poscuda.labels import label_index
    >>> label_index("yes", 0, label_names=("no", "yes")), label_index(7, 1, num_classes=10)
    (1, 7)

    ```
    """
    where = f"row {row} of the batch, column {label_column!r}"
    if label is None:
        raise ValueError(
            f"Unlabelled row ({where} is None). PosCUDA needs every clip's class; remove unlabelled rows "
            f"first, e.g. ds.filter(lambda r: r[{label_column!r}] is not None)."
        )
    if isinstance(label, str):
        if label_names is None:
            raise ValueError(
                f"String label {label!r} ({where}) but no label_names were given. Use "
                "PosCUDA.for_dataset(ds, key) (sorted distinct values) or pass label_names=[...] in index order."
            )
        try:
            return label_names.index(label)
        except ValueError:
            raise ValueError(
                f"Unknown label {label!r} ({where}); known classes are {list(label_names)}. "
                "Pass the full label_names list."
            ) from None
    if isinstance(label, (bool, np.bool_)) or not isinstance(label, (int, np.integer)):
        raise ValueError(
            f"Non-integer label {label!r} of type {type(label).__name__} ({where}); expected a class index "
            "(int or ClassLabel) or a string. Convert the column, e.g. ds.class_encode_column(...)."
        )
    index = int(label)
    if index < 0 or (num_classes is not None and index >= num_classes):
        bound = f"[0, {num_classes})" if num_classes is not None else ">= 0"
        raise ValueError(f"Label {index} ({where}) is outside the known classes {bound}. Fix the label.")
    return index
