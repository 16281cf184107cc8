"""A split protected as a stream (:class:`ProtectedStream`, what the streaming and the Ray engines both produce,
with the fingerprint a resumed push relies on), and cutting such a stream into Parquet shards, in row order, that
keep the ``datasets`` features (the ``huggingface`` schema metadata), so ``load_dataset`` gives ``Audio`` back."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_SHARD_BYTES = 500 * 10**6  # Dataset.push_to_hub's default max_shard_size


def iter_shards(
    tables: Iterable[Any], schema: Any, rows_per_shard: int | None = None, max_shard_bytes: int = MAX_SHARD_BYTES
) -> Iterator[Any]:
    """Regroup an ordered stream of ``pyarrow.Table`` into shard tables of at most ``rows_per_shard`` rows, each
    closed as soon as it reaches ``max_shard_bytes`` of Arrow data. Rows keep their order; one shard is held at a
    time. Bad sizes raise here, when it is called, before any table is read.

    Args:
        tables (`Iterable[pyarrow.Table]`): protected batches, in row order.
        schema (`pyarrow.Schema`, *optional*): cast every shard to it (the datasets features in its metadata).
        rows_per_shard (`int`, *optional*): at most this many rows per shard.
        max_shard_bytes (`int`, defaults to 500 MB): close a shard once its Arrow data reaches this size.

    Example:

    ```py
    >>> import pyarrow as pa
    >>> from hf_poscuda.shards import iter_shards
    >>> batches = [pa.table({"x": list(range(i, i + 4))}) for i in range(0, 12, 4)]
    >>> [t["x"].to_pylist() for t in iter_shards(batches, None, rows_per_shard=5)]
    [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11]]

    ```
    """
    check_shard_sizes(rows_per_shard, max_shard_bytes)
    return _regroup(tables, schema, rows_per_shard, max_shard_bytes)  # the sizes are checked on the call, eagerly


def check_shard_sizes(rows_per_shard: int | None, max_shard_bytes: int) -> None:
    """Raise a ``ValueError`` unless both shard limits are at least 1."""
    if rows_per_shard is not None and rows_per_shard < 1:
        raise ValueError(f"rows_per_shard must be >= 1, got {rows_per_shard}.")
    if max_shard_bytes < 1:
        raise ValueError(f"max_shard_bytes must be >= 1, got {max_shard_bytes}.")


def _regroup(tables: Iterable[Any], schema: Any, rows_per_shard: int | None, max_shard_bytes: int) -> Iterator[Any]:
    import pyarrow as pa

    parts: list[Any] = []
    rows = size = 0
    for table in tables:
        if schema is not None:
            table = table.select(schema.names).cast(schema)
        start = 0
        while start < table.num_rows:
            room = table.num_rows - start if rows_per_shard is None else min(table.num_rows - start,
                                                                             rows_per_shard - rows)
            part = table.slice(start, room)
            parts.append(part)
            rows, size, start = rows + part.num_rows, size + part.nbytes, start + part.num_rows
            if (rows_per_shard is not None and rows >= rows_per_shard) or size >= max_shard_bytes:
                yield pa.concat_tables(parts)
                parts, rows, size = [], 0, 0
    if parts:
        yield pa.concat_tables(parts)


def write_parquet(table: Any, sink: Any, features: Any = None) -> None:
    """Write ``table`` as one Parquet file to ``sink`` (a path or a binary file), with ``datasets``' row-group size
    for its features (100 rows for audio, so that viewers and streaming readers fetch little at a time)."""
    import pyarrow.parquet as pq
    from datasets.arrow_writer import get_writer_batch_size_from_features

    row_group = get_writer_batch_size_from_features(features) if features is not None else None
    pq.write_table(table, sink, row_group_size=row_group)


def parquet_bytes(table: Any, features: Any = None) -> bytes:
    """:func:`write_parquet` into memory: the file's bytes."""
    buffer = io.BytesIO()
    write_parquet(table, buffer, features)
    return buffer.getvalue()


@dataclass
class SampleFigures:
    """Quality figures of a protected split measured on its first clips (a stream cannot be compared whole).

    Args:
        snr_db (`float`): SNR of the protected sample against the original (energy ratio over all its clips).
        snr_clips (`int`): clips in the sample.
        quality (`dict`, *optional*): :func:`~hf_poscuda.quality.measure_quality` means, when asked for.
    """

    snr_db: float
    snr_clips: int
    quality: dict[str, Any] | None = None

    @classmethod
    def measure(cls, original: Any, fn: Any, audio_column: str, batch_size: int, quality_clips: int) -> SampleFigures:
        """Protect ``original`` (a small ``datasets.Dataset`` with ``Audio(decode=False)``) with the map callable
        ``fn`` and measure SNR over all of it, and PESQ/STOI/LSD on ``quality_clips`` of it (0: not scored)."""
        from .quality import dataset_snr, measure_quality

        if len(original) == 0:
            return cls(float("nan"), 0)
        protected = original.map(fn, batched=True, batch_size=batch_size)
        snr, clips = dataset_snr(original, protected, audio_column, len(original))
        quality = measure_quality(original, protected, quality_clips, audio_column) if quality_clips else None
        return cls(snr, clips, quality)


@dataclass
class ProtectedStream:
    """One split, protected as an ordered stream of Arrow tables (by streaming ``datasets`` or by Ray), with what a
    sharded push needs to describe it and to resume it.

    Args:
        split (`str`): the split name.
        features (`datasets.Features`): the protected table's features (the original ``Audio`` feature).
        fingerprint (`str`): SHA-256 over everything the protected rows depend on: the source's identity (Hub
            commit, or local files' names and sizes), split, columns, label mapping, key id, parameters and
            encoding. Equal fingerprints mean equal rows, so a resumed push may skip rows already uploaded.
        key_id (`str`): public key id.
        config (`dict`): the protection knobs.
        output_format (`str`): ``"wav"`` or ``"flac"``.
        label_column (`str`), label_names (`list[str]`, *optional*): how labels map to class indices.
        tables (`Callable[[int], Iterator[pyarrow.Table]]`): given a number of rows to skip, an iterator over the
            protected tables of the remaining rows, in order.
        sample (`Callable[[], SampleFigures]`): protects the first clips and measures them.
        check_labels (`Callable[[], int]`): reads the label column alone, checks every label (a ``ValueError`` that
            says how to fix it) and returns the number of rows; see :meth:`check`.
        num_rows (`int`, *optional*): rows in the split, when the source says (for progress bars).
    """

    split: str
    features: Any
    fingerprint: str
    key_id: str
    config: dict[str, Any]
    output_format: str
    label_column: str
    label_names: list[str] | None
    tables: Callable[[int], Iterator[Any]]
    sample: Callable[[], SampleFigures]
    check_labels: Callable[[], int]
    num_rows: int | None = None
    _checked: int | None = field(default=None, init=False, repr=False)

    def check(self) -> int:
        """Check the input before anything is written or uploaded: every label, and that the split has rows.
        Runs once (one pass over the label column); returns the number of rows.

        Raises:
            ValueError: a bad label or an empty split.
        """
        if self._checked is None:
            rows = self.check_labels()
            if rows == 0:
                raise ValueError(f"Split {self.split!r} has no rows: there is nothing to protect. Check the split "
                                 "name and any filters.")
            self._checked = rows
        return self._checked

    def class_indices(self, table: Any) -> list[int]:
        """The distinct class indices in a protected table's label column."""
        values = {v for v in table.column(self.label_column).unique().to_pylist() if v is not None}
        if self.label_names is not None:
            position = {name: i for i, name in enumerate(self.label_names)}
            return sorted(position.get(v, v) if isinstance(v, str) else int(v) for v in values)  # type: ignore[misc]
        return sorted(int(v) for v in values)


def fingerprint(**parts: Any) -> str:
    """SHA-256 hex of a JSON description (sorted keys): a stream's content fingerprint."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def source_identity(source: str, revision: str | None = None, token: str | None = None) -> dict[str, Any]:
    """What a source's rows are pinned by: a local path's files (relative names, sizes and modification times), or
    a Hub dataset's resolved commit (``revision``, or one given in an ``hf://...@rev`` path). Only this
    description's hash is ever published."""
    path = Path(source)
    if path.exists():
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        return {"files": [(str(f.relative_to(path)) if f != path else f.name, f.stat().st_size, f.stat().st_mtime_ns)
                          for f in files]}
    repo_id, subpath, in_path = hub_repo_of(source)
    from huggingface_hub import HfApi

    sha = HfApi(token=token).dataset_info(repo_id, revision=revision or in_path).sha
    return {"hub": repo_id, "path": subpath, "sha": sha}


def hub_repo_of(source: str) -> tuple[str, str, str | None]:
    """``(repo_id, path inside it, revision)`` of ``namespace/name`` or
    ``hf://datasets/namespace/name[@rev]/path`` (``revision`` is ``None`` when the path names none).

    Example:

    ```py
    >>> from hf_poscuda.shards import hub_repo_of
    >>> hub_repo_of("hf://datasets/alice/speech@refs%2Fconvert%2Fparquet/default/train")
    ('alice/speech', 'default/train', 'refs/convert/parquet')

    ```
    """
    from urllib.parse import unquote

    rest = source.removeprefix("hf://").removeprefix("datasets/")
    parts = rest.split("/")
    if len(parts) < 2:
        raise ValueError(f"{source!r} is neither a local path nor a Hub dataset ('namespace/name' or hf://datasets/...).")
    name, _, revision = parts[1].partition("@")
    return f"{parts[0]}/{name}", "/".join(parts[2:]), unquote(revision) if revision else None
