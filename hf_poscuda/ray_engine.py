"""Protect datasets larger than one machine with Ray Data (``pip install 'hf-poscuda[ray]'``).

The same :class:`~hf_poscuda.hf.PosCUDA` callable that ``Dataset.map`` uses runs as a Ray actor per worker
(``map_batches`` with a callable class, Arrow batches in and out), so the output bytes are exactly those of
``ds.map(PosCUDA(key), batched=True)`` for the same rows. ``ray.init()`` starts a local cluster by itself; pass
``address=`` to use an existing one. Nothing else in hf-poscuda imports Ray.

Sources: Parquet files or folders (local, or ``hf://datasets/<id>`` through ``huggingface_hub.HfFileSystem``, at a
``revision``), read shard by shard, and ``save_to_disk`` folders, which are opened with ``datasets`` (memory-mapped)
and handed to Ray as one Arrow table: fine up to what the driver's object store holds; beyond, convert to Parquet. The output is Parquet shards that keep the ``datasets`` features (the
``huggingface`` schema metadata), so ``load_dataset("parquet", data_dir=...)`` gives an ``Audio`` column again.

Labels are mapped before any audio is read, exactly as :meth:`PosCUDA.for_dataset` maps them: ``ClassLabel``
names from the features, or the sorted distinct strings of the whole split (one pass over the label column).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import PosCUDAConfig
from .hf import PosCUDA
from .key import PosCUDAKey

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


def _source_dataset(source: str, split: str | None, revision: str | None, token: str | None) -> tuple[Any, Any]:
    """A Ray dataset for ``source`` and the ``datasets.Features`` it carries (``None`` when unknown)."""
    ray = _ray()
    path = Path(source)
    if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
        from datasets import DatasetDict, load_from_disk

        loaded = load_from_disk(str(path))
        if isinstance(loaded, DatasetDict):
            if split is None or split not in loaded:
                raise ValueError(f"{source!r} holds splits {list(loaded)}; pass split=... (CLI: --split).")
            loaded = loaded[split]
        return ray.data.from_arrow(loaded.data.table), loaded.features
    filesystem = None
    if source.startswith("hf://"):
        from huggingface_hub import HfFileSystem

        filesystem = HfFileSystem(token=token)
        pattern = source.rstrip("/")
        if revision:
            repo = pattern.split("/")
            repo[4] = f"{repo[4]}@{revision}" if "@" not in repo[4] else repo[4]
            pattern = "/".join(repo)
        files = sorted(filesystem.glob(f"{pattern}/**/*.parquet") if not pattern.endswith(".parquet") else [pattern])
        if split is not None:
            files = [f for f in files if Path(f).name.startswith(f"{split}-") or f"/{split}/" in f]
        if not files:
            raise ValueError(f"No Parquet files found under {source!r}" + (f" for split {split!r}" if split else "")
                             + ". Check the repo id, revision and split.")
        paths: Any = files
    elif path.is_dir():
        files = sorted(str(p) for p in path.rglob("*.parquet"))
        if split is not None:
            files = [f for f in files if Path(f).name.startswith(f"{split}-") or f"/{split}/" in f] or files
        if not files:
            raise ValueError(f"No Parquet files in {source!r}; expected a folder of Parquet shards or a "
                             "save_to_disk folder.")
        paths = files
    elif path.is_file() and path.suffix == ".parquet":
        paths = [str(path)]
    else:
        raise ValueError(f"{source!r} is not a Parquet file or folder, a save_to_disk folder or an hf:// path.")
    import pyarrow.parquet as pq

    first = paths[0]
    schema = pq.read_schema(filesystem.open(first, "rb") if filesystem is not None else first)
    return ray.data.read_parquet(paths, filesystem=filesystem), _features_of(schema)


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
) -> RayProtectionResult:
    """Protect ``source`` with Ray Data and write Parquet shards to ``output`` (an empty or new folder).

    Args:
        source (`str`): Parquet file/folder, ``save_to_disk`` folder, or ``hf://datasets/<id>[/<config path>]``.
        output (`str`): folder for the Parquet shards, named ``{split}-00000-of-000NN.parquet`` (default split name
            ``train``), so ``load_dataset("parquet", data_dir=output)`` reads every split protected into it.
        key (`PosCUDAKey`), config (`PosCUDAConfig`, *optional*): as for :class:`~hf_poscuda.hf.PosCUDA`.
        split (`str`, *optional*): which split (file names ``{split}-*.parquet`` or a ``{split}/`` folder; the split
            of a ``save_to_disk`` DatasetDict).
        label_names (`list[str]`, *optional*): class names in index order; default: ``ClassLabel`` names from the
            source's features, or the sorted distinct label strings.
        batch_size (`int`, defaults to `100`): rows per Arrow batch.
        concurrency (`int`, *optional*): number of actors (default: one per GPU share, else the cluster's CPUs
            less one, which reading and writing need).
        num_gpus (`float`, defaults to `0`): GPUs per actor (the transform runs on CUDA when given one).
        revision, token: for ``hf://`` sources.
        address (`str`, *optional*): a Ray cluster to connect to; default: the running one or a new local one.

    Raises:
        ValueError: bad source, missing column, unknown or unmapped label (before any row is written).
    """
    ray = _ray()
    out = Path(output)
    name = split or "train"
    if any(out.glob(f"{name}-*.parquet")):
        raise ValueError(f"{output!r} already holds {name}-*.parquet shards; choose a new folder or remove them.")
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().execution_options.preserve_order = True  # rows in the source's order
    config = config or PosCUDAConfig()
    ds, features = _source_dataset(source, split, revision, token)
    columns = ds.schema().names
    for column, role in ((audio_column, "audio"), (label_column, "label")):
        if column not in columns:
            raise ValueError(f"Column {column!r} not found; the dataset has columns {columns}. Pass "
                             f"{role}_column=... .")
    if label_names is None and features is not None and label_column in features:
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
    fn = PosCUDA(key, config, audio_column=audio_column, label_column=label_column, label_names=label_names,
                 output_format=output_format)  # type: ignore[arg-type]
    row = 0  # every label checked before any audio is read or written, a batch at a time
    for batch in ds.select_columns([label_column]).iter_batches(batch_size=100_000, batch_format="pyarrow"):
        for label in batch.column(label_column).to_pylist():
            fn.label_index(label, row)
            row += 1
    start = time.perf_counter()
    protected = ds.map_batches(
        PosCUDA, fn_constructor_args=(key, config),
        fn_constructor_kwargs={"audio_column": audio_column, "label_column": label_column,
                               "label_names": label_names, "output_format": output_format,
                               "device": "cuda" if num_gpus else "cpu"},
        batch_format="pyarrow", batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=concurrency),
        num_gpus=num_gpus or None,
    )
    staging = out / f".ray-{name}"
    staging.mkdir(parents=True, exist_ok=True)
    # Ray drops the schema's metadata on the way: write with the source's schema, so that the files carry the
    # datasets features (Audio, ClassLabel) in their "huggingface" metadata again
    schema = features.arrow_schema if features is not None else None
    protected.write_parquet(str(staging), **({"schema": schema} if schema is not None else {}))
    written = sorted(staging.glob("*.parquet"))  # Ray names files by task; datasets infers splits from names
    files = []
    for i, path in enumerate(written):
        target = out / f"{name}-{i:05d}-of-{len(written):05d}.parquet"
        path.rename(target)
        files.append(str(target))
    staging.rmdir()
    rows = sum(_parquet_rows(f) for f in files)
    seconds = time.perf_counter() - start
    logger.info("Protected %d rows with Ray into %d Parquet files in %.1f s", rows, len(files), seconds)
    return RayProtectionResult(str(out), files, rows, seconds, key.key_id, list(label_names) if label_names else None,
                               config.to_dict())


def _parquet_rows(path: str) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows
