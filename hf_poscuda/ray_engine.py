"""Protect datasets larger than one machine with Ray Data (``pip install 'hf-poscuda[ray]'``).

The same :class:`~hf_poscuda.map_callable.PosCUDA` callable that ``Dataset.map`` uses runs as a Ray actor per worker
(``map_batches`` with a callable class, Arrow batches in and out), so the output bytes are exactly those of
``ds.map(PosCUDA(key), batched=True)`` for the same rows. ``ray.init()`` starts a local cluster by itself; pass
``address=`` to use an existing one. Nothing else in hf-poscuda imports Ray.

Sources: Parquet files or folders (local, or ``hf://datasets/<id>`` through ``huggingface_hub.HfFileSystem``, at a
``revision``), read shard by shard, and ``save_to_disk`` folders, which are opened with ``datasets`` (memory-mapped)
and handed to Ray as one Arrow table: fine up to what the driver's object store holds; beyond, convert to Parquet.
The output is Parquet shards that keep the ``datasets`` features (the ``huggingface`` schema metadata), so
``load_dataset("parquet", data_dir=...)`` gives an ``Audio`` column again.

The key is passed to the actors as a constructor argument, so it sits in Ray's object store (which may spill to
disk) on the cluster's nodes: use machines you would trust with the key file.

Labels are mapped before any audio is read, exactly as :meth:`PosCUDA.for_dataset` maps them: ``ClassLabel``
names from the features, or the sorted distinct strings of the whole split (one pass over the label column).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import PosCUDAConfig
from .key import PosCUDAKey
from .map_callable import PosCUDA
from .shards import ProtectedStream, SampleFigures, fingerprint, iter_shards, source_identity, write_parquet

logger = logging.getLogger(__name__)


def _ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ImportError("The Ray engine needs Ray Data: pip install 'hf-poscuda[ray]'.") from None
    return ray


@dataclass
class RayProtectionResult:
    """What :func:`protect_with_ray` wrote: the output folder, its Parquet files, rows, and the label mapping."""

    output: str
    files: list[str]
    rows: int
    seconds: float
    key_id: str
    label_names: list[str] | None
    config: dict[str, Any]
    split: str = "train"


def _features_of(schema: Any) -> Any:
    """The ``datasets.Features`` recorded in an Arrow schema's ``huggingface`` metadata, or ``None``."""
    from datasets import Features

    metadata = schema.metadata or {}
    raw = metadata.get(b"huggingface")
    if raw is None:
        return None
    info = json.loads(raw)
    features = info.get("info", {}).get("features")
    return Features.from_dict(features) if features else None


@dataclass
class _Source:
    """A source read by Ray: a ``save_to_disk`` table, or Parquet files (with their row counts, for resuming)."""

    features: Any
    schema: Any
    split: str = "train"
    table: Any = None
    files: list[str] | None = None
    filesystem: Any = None

    def dataset(self, skip: int = 0) -> tuple[Any, int]:
        """A Ray dataset from row ``skip`` on, give or take: whole Parquet files before it are not read; the rows of
        the file it falls in that precede it must be dropped by the caller (returned as the second value)."""
        ray = _ray()
        if self.table is not None:
            return ray.data.from_arrow(self.table.slice(skip)), 0
        assert self.files is not None
        files, drop = list(self.files), skip
        if skip:
            import pyarrow.parquet as pq

            while files:
                if self.filesystem is not None:
                    with self.filesystem.open(files[0], "rb") as f:
                        rows = pq.ParquetFile(f).metadata.num_rows
                else:
                    rows = pq.ParquetFile(files[0]).metadata.num_rows
                if rows > drop:
                    break
                files, drop = files[1:], drop - rows
        if not files:
            return ray.data.from_items([]), 0
        return ray.data.read_parquet(files, filesystem=self.filesystem), drop


def _source_dataset(source: str, split: str | None, revision: str | None, token: str | None) -> _Source:
    """How Ray reads ``source`` and the ``datasets.Features`` it carries (``None`` when unknown)."""
    path = Path(source)
    if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
        from datasets import DatasetDict, load_from_disk

        loaded = load_from_disk(str(path))
        if isinstance(loaded, DatasetDict):
            if split is None or split not in loaded:
                raise ValueError(f"{source!r} holds splits {list(loaded)}; pass split=... (CLI: --split).")
            loaded = loaded[split]
        return _Source(loaded.features, loaded.data.table.schema, split or "train", table=loaded.data.table)
    filesystem = None
    if source.startswith("hf://"):
        from urllib.parse import quote

        from huggingface_hub import HfFileSystem

        filesystem = HfFileSystem(token=token)
        root = source.rstrip("/")
        if revision:
            repo = root.split("/")
            repo[4] = f"{repo[4].split('@')[0]}@{quote(revision, safe='')}"
            root = "/".join(repo)
        found = [root] if root.endswith(".parquet") else sorted(filesystem.glob(f"{root}/**/*.parquet"))
        base = root.removeprefix("hf://")
    elif path.is_dir():
        found, base = sorted(str(p) for p in path.rglob("*.parquet")), str(path)
    elif path.is_file() and path.suffix == ".parquet":
        found, base = [str(path)], str(path.parent)
    else:
        raise ValueError(f"{source!r} is not a Parquet file or folder, a save_to_disk folder or an hf:// path.")
    paths = _split_files(found, base, split, source)
    import pyarrow.parquet as pq

    if filesystem is not None:
        with filesystem.open(paths[0], "rb") as f:
            schema = pq.read_schema(f)
    else:
        schema = pq.read_schema(paths[0])
    found_splits = {_split_of(f, base) for f in paths} - {None}
    name = split or (found_splits.pop() if len(found_splits) == 1 else "train")
    return _Source(_features_of(schema), schema, name, files=paths, filesystem=filesystem)


def _split_of(file: str, base: str) -> str | None:
    """The split a Parquet file belongs to, from its path below ``base``: a ``{split}-…`` file name
    (``Dataset.push_to_hub`` / ``to_parquet`` shards) or a ``{split}/`` folder; ``None`` when neither says."""
    relative = Path(file).relative_to(base) if Path(file).is_relative_to(base) else Path(Path(file).name)
    for folder in relative.parts[:-1]:
        if folder in ("train", "test", "validation", "dev", "eval"):
            return folder
    stem = relative.name.split(".")[0]
    return stem.split("-")[0] if "-" in stem else None


def _split_files(files: list[str], base: str, split: str | None, source: str) -> list[str]:
    """The files of ``split``, or every file when the source has a single split; a clear error otherwise."""
    if not files:
        raise ValueError(f"No Parquet files found under {source!r}; expected Parquet shards, a save_to_disk folder or "
                         "hf://datasets/<id>. Check the path, repo id and revision.")
    splits = {_split_of(f, base) for f in files}
    if split is not None:
        chosen = [f for f in files if _split_of(f, base) == split]
        if not chosen:
            raise ValueError(f"No Parquet files of split {split!r} under {source!r} (splits found: "
                             f"{sorted(str(s) for s in splits)}).")
        return chosen
    if len(splits - {None}) > 1:
        raise ValueError(f"{source!r} holds several splits ({sorted(s for s in splits if s)}); pass split=... "
                         "(CLI: --split NAME, repeatable), so that their rows are not merged.")
    return files


@contextmanager
def ray_cluster(address: str | None = None) -> Iterator[Any]:
    """Ray, initialised for the block: the running cluster, ``address``, or a new local one (shut down after)."""
    ray = _ray()
    started = False
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
        started = True
    elif address is not None:
        logger.warning("Ray is already initialised in this process; address=%r is ignored.", address)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()  # a cluster this call started; one the caller started stays up


def ray_stream(
    source: str,
    key: PosCUDAKey,
    config: PosCUDAConfig | None = None,
    *,
    split: str | None = None,
    audio_column: str = "audio",
    label_column: str = "label",
    label_names: list[str] | None = None,
    batch_size: int = 100,
    concurrency: int | None = None,
    num_gpus: float = 0,
    output_format: str = "wav",
    revision: str | None = None,
    token: str | None = None,
    sample_clips: int = 50,
    quality_clips: int = 0,
) -> ProtectedStream:
    """One split of ``source`` protected by a Ray actor pool, as an ordered stream of Arrow tables (Ray must be
    initialised, e.g. inside :func:`ray_cluster`). Arguments as for :func:`protect_with_ray`; ``sample_clips`` and
    ``quality_clips`` as for :func:`hf_poscuda.streaming.protected_stream`.

    Raises:
        ValueError: bad source or missing column (here); an unknown or unmapped label (when
            :attr:`~hf_poscuda.shards.ProtectedStream.tables` is called, before any audio is read).
    """
    from datasets import Audio, Features

    ray = _ray()
    ray.data.DataContext.get_current().execution_options.preserve_order = True  # rows in the source's order
    from ._version import __version__

    config = config or PosCUDAConfig()
    identity = source_identity(source, revision, token)
    revision = identity.get("sha", revision)  # an hf:// source is read at the commit its fingerprint names
    src = _source_dataset(source, split, revision, token)
    ds, _ = src.dataset()
    columns = ds.schema().names
    for column, role in ((audio_column, "audio"), (label_column, "label")):
        if column not in columns:
            raise ValueError(f"Column {column!r} not found; the dataset has columns {columns}. Pass "
                             f"{role}_column=... .")
    features = src.features
    if features is None:  # plain Parquet: the audio struct is an Audio column
        features = Features.from_arrow_schema(src.schema)
        features[audio_column] = Audio()
    if label_names is None and label_column in features:
        label_names = getattr(features[label_column], "names", None)
    if label_names is None:
        values = ds.unique(label_column)
        if any(isinstance(v, str) for v in values):
            if any(v is None for v in values):
                raise ValueError(f"Label column {label_column!r} has unlabelled rows (None); remove them first.")
            label_names = sorted(values)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    if concurrency is None:
        gpus = ray.cluster_resources().get("GPU", 0)
        concurrency = max(1, int(gpus / num_gpus)) if num_gpus else max(1, cpus - 1)
    elif not num_gpus and concurrency >= cpus > 1:
        raise ValueError(f"concurrency={concurrency} actors would take all {cpus} CPUs of the Ray cluster and leave "
                         f"none to read and write the data (the job would stall); use at most {cpus - 1}.")
    kwargs = {"audio_column": audio_column, "label_column": label_column, "label_names": label_names,
              "output_format": output_format}
    fn = PosCUDA(key, config, **kwargs)  # type: ignore[arg-type]

    def check_labels() -> int:
        row = 0  # every label checked before any audio is read or written, a batch at a time
        for batch in ds.select_columns([label_column]).iter_batches(batch_size=100_000, batch_format="pyarrow"):
            for label in batch.column(label_column).to_pylist():
                fn.label_index(label, row)
                row += 1
        return row

    def tables(skip: int) -> Iterator[Any]:
        rest, drop = src.dataset(skip)
        protected = rest.map_batches(
            PosCUDA, fn_constructor_args=(key, config),
            fn_constructor_kwargs={**kwargs, "device": "cuda" if num_gpus else "cpu"},
            batch_format="pyarrow", batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=concurrency),
            num_gpus=num_gpus or None,
        )
        return _dropping(protected.iter_batches(batch_size=None, batch_format="pyarrow"), drop)

    def sample() -> SampleFigures:
        from datasets import Dataset, DatasetInfo
        from datasets.table import InMemoryTable

        if not sample_clips:
            return SampleFigures(float("nan"), 0)
        table = ds.limit(sample_clips).take_batch(sample_clips, batch_format="pyarrow")
        table = table.select(features.arrow_schema.names).cast(features.arrow_schema)
        original = Dataset(InMemoryTable(table), info=DatasetInfo(features=features))
        original = original.cast_column(audio_column, Audio(decode=False))
        return SampleFigures.measure(original, fn, audio_column, batch_size, quality_clips)

    digest = fingerprint(source=identity, split=src.split, audio_column=audio_column, label_column=label_column,
                         label_names=label_names, key_id=key.key_id, parameters=config.to_dict(),
                         output_format=output_format, version=__version__, device="cuda" if num_gpus else "cpu")
    return ProtectedStream(src.split, features, digest, key.key_id, config.to_dict(), output_format, label_column,
                           list(label_names) if label_names else None, tables, sample, check_labels, ds.count())


def _dropping(tables: Iterator[Any], drop: int) -> Iterator[Any]:
    """The tables without their first ``drop`` rows."""
    for table in tables:
        if drop >= table.num_rows:
            drop -= table.num_rows
            continue
        yield table.slice(drop) if drop else table
        drop = 0


def protect_with_ray(
    source: str,
    output: str,
    key: PosCUDAKey,
    config: PosCUDAConfig | None = None,
    *,
    split: str | None = None,
    audio_column: str = "audio",
    label_column: str = "label",
    label_names: list[str] | None = None,
    batch_size: int = 100,
    concurrency: int | None = None,
    num_gpus: float = 0,
    output_format: str = "wav",
    revision: str | None = None,
    token: str | None = None,
    address: str | None = None,
    rows_per_shard: int | None = None,
) -> RayProtectionResult:
    """Protect ``source`` with Ray Data and write Parquet shards to ``output`` (an empty or new folder).

    Args:
        source (`str`): Parquet file/folder, ``save_to_disk`` folder, or ``hf://datasets/<id>[/<config path>]``.
        output (`str`): folder for the Parquet shards, named ``{split}-00000-of-000NN.parquet`` (default split name
            ``train``), so ``load_dataset("parquet", data_dir=output)`` reads every split protected into it.
        key (`PosCUDAKey`): the private key, as for :class:`~hf_poscuda.PosCUDA`.
        config (`PosCUDAConfig`, *optional*): the parameters (default: the default preset).
        split (`str`, *optional*): which split (file names ``{split}-*.parquet`` or a ``{split}/`` folder; the split
            of a ``save_to_disk`` DatasetDict).
        label_names (`list[str]`, *optional*): class names in index order; default: ``ClassLabel`` names from the
            source's features, or the sorted distinct label strings.
        batch_size (`int`, defaults to `100`): rows per Arrow batch.
        concurrency (`int`, *optional*): number of actors (default: one per GPU share, else the cluster's CPUs
            less one, which reading and writing need).
        num_gpus (`float`, defaults to `0`): GPUs per actor (the transform runs on CUDA when given one).
        revision (`str`, *optional*): the commit, branch or tag of an ``hf://`` source.
        token (`str`, *optional*): a Hub token for an ``hf://`` source.
        address (`str`, *optional*): a Ray cluster to connect to; default: the running one or a new local one.
        rows_per_shard (`int`, *optional*): at most this many rows per output Parquet file (default: shards of about
            500 MB, like ``push_to_hub``).

    Raises:
        ValueError: bad source, missing column, unknown or unmapped label (before any row is written).
    """
    out = Path(output)
    with ray_cluster(address):
        stream = ray_stream(source, key, config, split=split, audio_column=audio_column, label_column=label_column,
                            label_names=label_names, batch_size=batch_size, concurrency=concurrency,
                            num_gpus=num_gpus, output_format=output_format, revision=revision, token=token)
        name = stream.split
        if any(out.glob(f"{name}-*.parquet")):
            raise ValueError(f"{output!r} already holds {name}-*.parquet shards; choose a new folder or remove them.")
        stream.check()  # every label, before any shard is written
        tables = stream.tables(0)
        start = time.perf_counter()
        # The driver writes the shards from Ray's ordered stream: Ray's own write_parquet names files by task, and
        # its file order did not always follow the row order in tests. Rows stay in the source's order this way.
        files, rows = _write_shards(tables, out, name, stream.features, rows_per_shard)
        seconds = time.perf_counter() - start
    logger.info("Protected %d rows with Ray into %d Parquet files in %.1f s", rows, len(files), seconds)
    return RayProtectionResult(str(out), files, rows, seconds, key.key_id, stream.label_names, stream.config, name)


def push_with_ray(
    source: str,
    repo_id: str,
    key: PosCUDAKey,
    config: PosCUDAConfig | None = None,
    *,
    splits: Sequence[str | None] = (None,),
    address: str | None = None,
    stream_options: dict[str, Any] | None = None,
    **push_options: Any,
) -> list[Any]:
    """Protect splits with Ray and push them shard by shard (:func:`hf_poscuda.hub.push_streams`): every split's
    labels are checked before the first upload; resumable; nothing is kept on local disk.

    Args:
        source (`str`): as for :func:`protect_with_ray`.
        repo_id (`str`): the Hub dataset repo.
        key (`PosCUDAKey`): the private key.
        config (`PosCUDAConfig`, *optional*): the parameters (default: the default preset).
        splits (`Sequence[str | None]`, defaults to `(None,)`): the splits (``None``: the source's only split).
        stream_options (`dict`, *optional*): other arguments of :func:`ray_stream` (``batch_size``,
            ``concurrency``, ``num_gpus``, ``output_format``, ``quality_clips``, ``token``...).
        address (`str`, *optional*): a Ray cluster to connect to, as for :func:`protect_with_ray`.
        push_options: arguments of :func:`hf_poscuda.hub.push_stream` (``card``, ``token``, ``rows_per_shard``...).

    Returns:
        `list[hf_poscuda.hub.PushResult]`: one per split.
    """
    from .hub import push_streams

    with ray_cluster(address):
        streams = [ray_stream(source, key, config, split=split, **(stream_options or {})) for split in splits]
        return push_streams(streams, repo_id, key, **push_options)


def _write_shards(
    tables: Any, out: Path, name: str, features: Any, rows_per_shard: int | None
) -> tuple[list[str], int]:
    """Write an ordered stream of Arrow tables as ``{name}-00000-of-000NN.parquet`` shards, cut by
    :func:`~hf_poscuda.shards.iter_shards` (at most ``rows_per_shard`` rows; default about 500 MB, ``push_to_hub``'s
    shard size) and written by :func:`~hf_poscuda.shards.write_parquet` with the datasets ``features`` in their
    schema metadata, as a sharded push writes them. Shards go to a staging folder first and are renamed at the end.
    Returns the shard paths and the rows written."""
    import shutil

    staging = out / f".ray-{name}"
    shutil.rmtree(staging, ignore_errors=True)  # what an interrupted run left behind
    staging.mkdir(parents=True)
    written: list[Path] = []
    total = 0
    try:
        for shard in iter_shards(tables, features.arrow_schema, rows_per_shard):
            written.append(staging / f"{len(written):05d}.parquet")
            write_parquet(shard, str(written[-1]), features)
            total += shard.num_rows
        files = []
        for i, path in enumerate(written):
            target = out / f"{name}-{i:05d}-of-{len(written):05d}.parquet"
            path.rename(target)
            files.append(str(target))
        return files, total
    finally:
        shutil.rmtree(staging, ignore_errors=True)
