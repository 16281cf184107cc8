"""Protect a split read with ``streaming=True``: an ordered stream of protected Arrow tables, for a sharded push
(:func:`hf_poscuda.hub.push_stream`) whose memory and disk do not grow with the dataset.

Before any audio is read, one pass over the label column alone checks every label (and lists string labels, whose
sorted values give the class order, as :meth:`PosCUDA.for_dataset` does). Protection is the same callable as
``ds.map(PosCUDA(key), batched=True)``, so the bytes are the same.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .config import PosCUDAConfig
from .key import PosCUDAKey
from .map_callable import PosCUDA
from .shards import ProtectedStream, SampleFigures, fingerprint, source_identity

logger = logging.getLogger(__name__)


def _open(source: str, split: str | None, config_name: str | None, revision: str | None, token: str | None,
          columns: list[str] | None = None) -> tuple[Any, str]:
    """The split as an ``IterableDataset`` and its name; local sources are read memory-mapped, Hub ones streamed."""
    from datasets import Dataset, get_dataset_split_names, load_dataset

    if Path(source).exists():
        from .sources import load_audio_dataset

        loaded = load_audio_dataset(source, config=config_name)
        if isinstance(loaded, Dataset):
            name = split or "train"
        else:
            if split is None and len(loaded) > 1:
                raise ValueError(f"{source!r} holds splits {list(loaded)}; pass split=... (CLI: --split).")
            name = split or next(iter(loaded))
            if name not in loaded:
                raise ValueError(f"Split {name!r} not found in {source!r}; available splits: {list(loaded)}.")
            loaded = loaded[name]
        if columns is not None:
            loaded = loaded.select_columns(columns)
        return loaded.to_iterable_dataset(), name
    if split is None:
        names = get_dataset_split_names(source, config_name, revision=revision, token=token)
        if len(names) > 1:
            raise ValueError(f"{source!r} holds splits {names}; pass split=... (CLI: --split).")
        split = names[0]
    kwargs: dict[str, Any] = {"split": split, "streaming": True, "revision": revision, "token": token}
    if columns is not None:
        try:  # Parquet sources read only these columns
            return load_dataset(source, config_name, columns=columns, **kwargs), split
        except (TypeError, ValueError):
            return load_dataset(source, config_name, **kwargs).select_columns(columns), split
    return load_dataset(source, config_name, **kwargs), split


def protected_stream(
    source: str,
    key: PosCUDAKey,
    config: PosCUDAConfig | None = None,
    *,
    split: str | None = None,
    config_name: str | None = None,
    revision: str | None = None,
    token: str | None = None,
    audio_column: str = "audio",
    label_column: str = "label",
    label_names: list[str] | None = None,
    batch_size: int = 100,
    device: str | None = None,
    output_format: str = "wav",
    sample_clips: int = 50,
    quality_clips: int = 0,
) -> ProtectedStream:
    """One split of ``source``, protected as it is streamed.

    Args:
        source (`str`): a Hub dataset id (streamed), or a local ``save_to_disk`` / audiofolder / FSDD folder (read
            memory-mapped).
        key (`PosCUDAKey`), config (`PosCUDAConfig`, *optional*): as for :class:`~hf_poscuda.PosCUDA`.
        split (`str`, *optional*): required when the source has several splits.
        config_name (`str`, *optional*), revision (`str`, *optional*), token (`str`, *optional*): of a Hub source.
        audio_column (`str`), label_column (`str`), label_names (`list[str]`, *optional*): as for ``PosCUDA``;
            default names: ``ClassLabel`` names, or the sorted distinct strings of the label column.
        batch_size (`int`, defaults to `100`): rows per protected batch.
        device (`str`, *optional*): compute device.
        output_format (`str`, defaults to `"wav"`): ``"wav"`` or ``"flac"``.
        sample_clips (`int`, defaults to `50`): first clips the SNR is measured on.
        quality_clips (`int`, defaults to `0`): of those, clips scored with PESQ/STOI/LSD.

    Raises:
        ValueError: missing columns, no audio feature, several splits and no ``split`` (when the stream is opened);
            a bad label or an empty split (:meth:`ProtectedStream.check`, before any audio is read).
    """
    from datasets import Audio, ClassLabel

    from ._version import __version__
    from .map_callable import resolve_device

    config = config or PosCUDAConfig()
    identity = source_identity(source, revision, token)
    revision = identity.get("sha", revision)  # a Hub source is read at the commit its fingerprint names
    dataset, name = _open(source, split, config_name, revision, token)
    features = dataset.features
    if features is None:
        raise ValueError(f"{source!r} does not declare its features when streamed; cannot protect it as a stream. "
                         "Push it without --streaming, or give the source a dataset_info with features.")
    for column, role in ((audio_column, "audio"), (label_column, "label")):
        if column not in features:
            raise ValueError(f"Column {column!r} not found; the dataset has columns {list(features)}. Pass "
                             f"{role}_column=... .")
    if not isinstance(features[audio_column], Audio):
        raise ValueError(f"Column {audio_column!r} is {features[audio_column]!r}, not an Audio feature.")
    if label_names is None and isinstance(features[label_column], ClassLabel):
        label_names = list(features[label_column].names)
    strings = features[label_column].dtype in ("string", "large_string")
    if strings and label_names is None:
        values = set(_labels(source, name, config_name, revision, token, label_column))
        if None in values:
            raise ValueError(f"Label column {label_column!r} has unlabelled rows (None); remove them first.")
        label_names = sorted(values)
    fn = PosCUDA(key, config, audio_column=audio_column, label_column=label_column, label_names=label_names,
                 device=device, output_format=output_format)  # type: ignore[arg-type]
    raw = dataset.cast_column(audio_column, Audio(decode=False))
    num_rows = None
    info = getattr(dataset, "info", None)
    if info is not None and info.splits and name in info.splits:
        num_rows = info.splits[name].num_examples or None
    sample_clips = max(sample_clips, quality_clips)

    def check_labels() -> int:
        rows = 0
        for rows, label in enumerate(_labels(source, name, config_name, revision, token, label_column), start=1):
            fn.label_index(label, rows - 1)  # every label checked before any audio is read
        return rows

    def tables(skip: int) -> Iterator[Any]:
        rest = raw.skip(skip) if skip else raw
        return rest.map(fn, batched=True, batch_size=batch_size).with_format("arrow").iter(batch_size=batch_size)

    def sample() -> SampleFigures:
        from datasets import Dataset

        original = Dataset.from_list(list(itertools.islice(iter(raw), sample_clips)), features=raw.features)
        return SampleFigures.measure(original, fn, audio_column, batch_size, quality_clips)

    digest = fingerprint(source=identity, split=name, config_name=config_name, audio_column=audio_column,
                         label_column=label_column, label_names=label_names, key_id=key.key_id,
                         parameters=config.to_dict(), output_format=output_format, version=__version__,
                         device=resolve_device(device).type)
    return ProtectedStream(name, features, digest, key.key_id, config.to_dict(), output_format, label_column,
                           list(label_names) if label_names is not None else None, tables, sample, check_labels,
                           num_rows)


def split_names(source: str, config_name: str | None = None, revision: str | None = None,
                token: str | None = None) -> list[str]:
    """The splits of a local source or a Hub dataset, in order, without reading any audio."""
    from datasets import Dataset, get_dataset_split_names

    if Path(source).exists():
        from .sources import load_audio_dataset

        loaded = load_audio_dataset(source, config=config_name)
        return ["train"] if isinstance(loaded, Dataset) else list(loaded)
    return list(get_dataset_split_names(source, config_name, revision=revision, token=token))


def _labels(source: str, split: str, config_name: str | None, revision: str | None, token: str | None,
            label_column: str) -> Iterator[Any]:
    labels, _ = _open(source, split, config_name, revision, token, columns=[label_column])
    for batch in labels.iter(batch_size=10_000):
        yield from batch[label_column]
