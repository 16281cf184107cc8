"""Guards that keep the secret key out of what is written or uploaded: Arrow data scans and key-location checks."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .key import PosCUDAKey


def scan_table_for_secret(table: Any, key: PosCUDAKey, what: str) -> None:
    """Raise :class:`~hf_poscuda.errors.SecretLeakError` if any buffer of a ``pyarrow.Table`` holds the secret.

    Args:
        table (`pyarrow.Table`): the data about to be written or uploaded.
        key (`PosCUDAKey`): the key whose secret must not appear.
        what (`str`): names the data in the error message (never the secret).
    """
    for column_name, column in zip(table.column_names, table.columns, strict=True):
        for chunk in column.chunks:
            for buffer in chunk.buffers():
                if buffer is not None and buffer.size:
                    key.assert_not_in(memoryview(buffer).tobytes(), f"{what}, column {column_name!r}")


def scan_dataset_for_secret(dataset: Any, key: PosCUDAKey, what: str) -> None:
    """:func:`scan_table_for_secret` on a ``datasets.Dataset``'s Arrow table."""
    scan_table_for_secret(dataset.data.table, key, what)


def check_key_outside(key_path: str | os.PathLike[str], folder: str | os.PathLike[str], action: str) -> None:
    """Refuse when the key file lies inside ``folder`` (which is about to be uploaded or written).

    Example:

    ```py
    >>> import pathlib, tempfile
    >>> from hf_poscuda.leaks import check_key_outside
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> check_key_outside(root / "my.key", root / "out", "written")  # a sibling folder: fine
    >>> check_key_outside(root / "out" / "my.key", root / "out", "written")
    Traceback (most recent call last):
    ...
    ValueError: The key file lies inside ...

    ```
    """
    key_file = Path(key_path).resolve()
    root = Path(folder).resolve()
    if key_file == root or root in key_file.parents:
        raise ValueError(
            f"The key file lies inside {str(folder)!r}, which is about to be {action}. Move the key out of that "
            "folder first (and keep it private)."
        )
