"""The picklable callable for ``Dataset.map``: Audio column in, protected Audio column out. Knows nothing of the Hub.

Reading and writing the clips is :mod:`hf_poscuda.audio_io`'s job, mapping labels to classes
:mod:`hf_poscuda.labels`'s; this module batches clips by sampling rate, channels and length, and runs the transform.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .audio_io import (
    OUTPUT_FORMATS,
    BlockEncoder,
    Clip,
    OutputFormat,
    check_finite,
    encode_audio,
    open_clip,
    renamed,
)
from .config import PosCUDAConfig
from .key import PosCUDAKey
from .labels import check_label_names, dataset_label_names, label_index
from .transform import PosCUDATransform

logger = logging.getLogger(__name__)

#: Default bound on one padded sub-batch: 2**24 samples (64 MB as float32), see ``PosCUDA(max_batch_samples=...)``.
MAX_BATCH_SAMPLES = 2**24
_IMPORT_PID = os.getpid()
_worker_threads_set = False


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` means CUDA when available (in the main process; forked ``num_proc`` workers use the CPU)."""
    if device is not None:
        return torch.device(device)
    if os.getpid() == _IMPORT_PID and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def _prepare_worker() -> None:
    """In a forked ``map(num_proc>1)`` worker, use one torch thread: a thread pool inherited through fork deadlocks."""
    global _worker_threads_set
    if not _worker_threads_set and os.getpid() != _IMPORT_PID:
        torch.set_num_threads(1)
        _worker_threads_set = True


class PosCUDA:
    """Protect an audio dataset with PosCUDA: pass an instance to ``Dataset.map(..., batched=True)``.

    Every row is kept, in order; only the audio column changes (the default filters every sample with class
    filters that switch at secret positions along the clip; patch settings change only their patches: see
    :class:`PosCUDAConfig`).
    The audio column stays an ``Audio`` feature; each clip keeps its sampling rate and channels (stereo stays
    stereo). The instance is picklable and hashes stably, so ``datasets`` reuses its cache for an identical
    repeated ``map`` and recomputes for a different key or knob. The secret never appears in its ``repr`` or in
    cache file names.

    Args:
        key (`PosCUDAKey`): the private key.
        config (`PosCUDAConfig`, *optional*): protection knobs; defaults to ``PosCUDAConfig()``.
        audio_column (`str`, defaults to `"audio"`): the ``Audio`` column (decoding or ``decode=False``).
        label_column (`str`, defaults to `"label"`): class labels: ``ClassLabel`` / int indices, or strings.
        label_names (`Sequence[str]`, *optional*): class names in index order. Required for string labels (or use
            :meth:`for_dataset`, which reads them from the dataset). Also bounds integer labels.
        num_classes (`int`, *optional*): number of classes; integer labels outside ``[0, num_classes)`` are refused.
            Defaults to ``len(label_names)`` when names are given, else unbounded.
        device (`str` or `torch.device`, *optional*): where to compute; ``None`` = CUDA when available.
        output_format (`str`, defaults to `"wav"`): ``"wav"`` (32-bit float, lossless) or ``"flac"`` (24-bit).
        max_batch_samples (`int`, *optional*, defaults to `MAX_BATCH_SAMPLES` = `2**24`): memory bound. Clips are
            padded to a common length to be filtered together; a batch is split, by length, into sub-batches of at
            most this many padded samples, so memory follows the audio in a batch, not batch size x its longest
            clip. A clip longer than that (samples x channels) is read, protected and encoded by blocks, in memory
            bounded by a block whatever its length (segment and barcode configs; a random-tap config processes it
            alone, whole). Output bytes do not depend on it. ``None``: one padded tensor per sampling rate.

    Example:

    ```py
    >>> import numpy as np
    >>> from datasets import Audio, Dataset
    >>> from hf_poscuda import PosCUDA, PosCUDAKey
    >>> ds = Dataset.from_dict({"audio": [{"array": np.sin(np.arange(8000) / 5.0) * 0.5, "sampling_rate": 8000}],
    ...                         "label": [3]}).cast_column("audio", Audio())
    >>> protected = ds.map(PosCUDA(PosCUDAKey.generate()), batched=True)
    >>> protected.features["audio"].sampling_rate is None and protected[0]["label"] == 3
    True
    ```
    """

    def __init__(
        self,
        key: PosCUDAKey,
        config: PosCUDAConfig | None = None,
        *,
        audio_column: str = "audio",
        label_column: str = "label",
        label_names: Sequence[str] | None = None,
        num_classes: int | None = None,
        device: str | torch.device | None = None,
        output_format: OutputFormat = "wav",
        max_batch_samples: int | None = MAX_BATCH_SAMPLES,
    ) -> None:
        if not isinstance(key, PosCUDAKey):
            raise TypeError(f"key must be a PosCUDAKey (PosCUDAKey.generate() or .load(path)), got {type(key).__name__}.")
        if config is not None and not isinstance(config, PosCUDAConfig):
            raise TypeError(f"config must be a PosCUDAConfig, got {type(config).__name__}.")
        if output_format not in OUTPUT_FORMATS:
            raise ValueError(f"output_format must be one of {list(OUTPUT_FORMATS)}, got {output_format!r}.")
        names, num_classes = check_label_names(label_names, num_classes)
        if max_batch_samples is not None and (not isinstance(max_batch_samples, int) or max_batch_samples < 1):
            raise ValueError(f"max_batch_samples must be a positive int, got {max_batch_samples!r}.")
        self.key = key
        self.config = config if config is not None else PosCUDAConfig()
        self.audio_column = audio_column
        self.label_column = label_column
        self.label_names = names
        self.num_classes = num_classes
        self.device = str(device) if device is not None else None
        self.output_format = output_format
        self.max_batch_samples = max_batch_samples
        self._transform: PosCUDATransform | None = None
        self._scratch: np.ndarray | None = None

    # ------------------------------------------------------------------ construction from a dataset
    @classmethod
    def for_dataset(
        cls, dataset: Any, key: PosCUDAKey, config: PosCUDAConfig | None = None, **kwargs: Any
    ) -> PosCUDA:
        """Build a callable whose label mapping comes from ``dataset`` and is recorded in :attr:`label_names`.

        ``ClassLabel`` columns give their names; string columns give their sorted distinct values (a
        deterministic mapping); integer columns give no names. Also checks the columns exist and the audio
        column is an ``Audio`` feature, before any row is processed.

        Args:
            dataset (`datasets.Dataset` or `datasets.IterableDataset`): the split to protect.
            key (`PosCUDAKey`): the private key.
            config (`PosCUDAConfig`, *optional*): protection knobs.
            kwargs: other arguments of :class:`PosCUDA` (``audio_column``, ``label_column``, ``device``, ...).
        """
        from datasets import Audio

        audio_column = kwargs.get("audio_column", "audio")
        label_column = kwargs.get("label_column", "label")
        features = dataset.features
        if features is None:
            raise ValueError(
                "The dataset has no known features (an IterableDataset after map?). Pass label_names=... to "
                "PosCUDA directly, or cast the columns first."
            )
        for column in (audio_column, label_column):
            if column not in features:
                raise ValueError(
                    f"Column {column!r} not found; the dataset has columns {list(features)}. "
                    f"Pass {'audio' if column == audio_column else 'label'}_column=... with the right name."
                )
        if not isinstance(features[audio_column], Audio):
            raise ValueError(
                f"Column {audio_column!r} is {features[audio_column]!r}, not an Audio feature. Cast it with "
                f"ds.cast_column({audio_column!r}, datasets.Audio()) or pass audio_column=... ."
            )
        if "label_names" not in kwargs:
            names = dataset_label_names(dataset, label_column)
            if names is not None:  # integer labels: the labels are the class indices
                kwargs["label_names"] = names
        return cls(key, config, **kwargs)

    # ------------------------------------------------------------------ datasets integration
    def __repr__(self) -> str:
        return (
            f"PosCUDA(key_id={self.key.key_id!r}, config={self.config!r}, audio_column={self.audio_column!r}, "
            f"label_column={self.label_column!r}, num_classes={self.num_classes!r}, device={self.device!r}, "
            f"output_format={self.output_format!r})"
        )

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_transform"] = None  # derived caches are rebuilt; keeps the datasets fingerprint stable
        state["_scratch"] = None
        return state

    @property
    def transform(self) -> PosCUDATransform:
        """The underlying pure-torch transform."""
        if self._transform is None:
            self._transform = PosCUDATransform(self.key, self.config)
        return self._transform

    def label_index(self, label: Any, row: int) -> int:
        """Map one label to its class index, or raise a ``ValueError`` that says how to fix it.

        Uses this callable's :attr:`label_column`, :attr:`label_names` and :attr:`num_classes`; see
        :func:`hf_poscuda.labels.label_index`.
        """
        return label_index(label, row, self.label_column, self.label_names, self.num_classes)

    def __call__(self, batch: Any) -> Any:
        """Protect one batch: a ``datasets`` batch (dict of lists; returns the new audio column), or a
        ``pyarrow.Table`` / ``RecordBatch`` as Ray Data and other engines hand it over (returns the table with its
        audio column replaced, see :meth:`protect_arrow`)."""
        if type(batch).__module__.startswith("pyarrow"):
            return self.protect_arrow(batch)
        return self._protect_columns(batch)

    def _protect_columns(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        # not through self(...): engines may wrap __call__ (Ray runs it on one thread, and a nested call waits)
        _prepare_worker()
        if not all(isinstance(v, list) for v in batch.values()):
            raise ValueError(
                "PosCUDA must be used with map(..., batched=True) on a dataset without a torch/numpy format; "
                "got a single row or non-list columns."
            )
        for column, role in ((self.audio_column, "audio"), (self.label_column, "label")):
            if column not in batch:
                raise ValueError(
                    f"Column {column!r} not found; available columns are {list(batch)}. "
                    f"Pass {role}_column=... to PosCUDA."
                )
        items, labels = batch[self.audio_column], batch[self.label_column]
        indices = [self.label_index(label, i) for i, label in enumerate(labels)]
        clips = [open_clip(item, i, self.audio_column) for i, item in enumerate(items)]
        encoded = self._protect(clips, indices)
        ext = OUTPUT_FORMATS[self.output_format][2]
        return {
            self.audio_column: [
                {"bytes": data, "path": renamed(clip.path, ext)} for clip, data in zip(clips, encoded, strict=True)
            ]
        }

    def protect_arrow(self, table: Any) -> Any:
        """Protect an Arrow batch (``pyarrow.Table`` or ``RecordBatch`` in the ``datasets`` storage layout: the
        audio column a ``struct<bytes, path>``) and return a ``pyarrow.Table`` with the same schema, rows and
        other columns, and exactly the audio bytes that ``ds.map(self, batched=True)`` gives for those rows.

        Example:

        ```py
        >>> import numpy as np
        >>> from datasets import Audio, Dataset
        >>> from hf_poscuda import PosCUDA, PosCUDAKey
        >>> ds = Dataset.from_dict({"audio": [{"array": np.sin(np.arange(8000) / 5.0) * 0.5, "sampling_rate": 8000}],
        ...                         "label": [3]}).cast_column("audio", Audio())
        >>> fn = PosCUDA(PosCUDAKey(bytes(range(32))))
        >>> table = fn.protect_arrow(ds.data.table)
        >>> table.column("audio")[0]["bytes"].as_py() == ds.map(fn, batched=True).data.table.column("audio")[0]["bytes"].as_py()
        True

        ```
        """
        import pyarrow as pa

        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        missing = [c for c in (self.audio_column, self.label_column) if c not in table.column_names]
        if missing:
            raise ValueError(f"Column {missing[0]!r} not found; available columns are {table.column_names}. Pass "
                             f"{'audio' if missing[0] == self.audio_column else 'label'}_column=... to PosCUDA.")
        batch = {c: table.column(c).to_pylist() for c in (self.audio_column, self.label_column)}
        audio = self._protect_columns(batch)[self.audio_column]
        index = table.schema.get_field_index(self.audio_column)
        field = table.schema.field(index)
        return table.set_column(index, field, pa.array(audio, type=field.type))

    def _buffer(self, shape: tuple[int, int, int]) -> np.ndarray:
        """A reusable float32 batch buffer: a fresh multi-MB array per batch costs page faults on every call.

        Safe because each group's results are encoded before the buffer is used again.
        """
        size = shape[0] * shape[1] * shape[2]
        if self._scratch is None or self._scratch.size < size:
            self._scratch = np.empty(max(size, 1), dtype=np.float32)
        return self._scratch[:size].reshape(shape)

    def _protect(self, clips: list[Clip], labels: list[int]) -> list[bytes | bytearray]:
        """Protect and encode: clips sharing a sampling rate and channel count go through one padded tensor; a clip
        longer than ``max_batch_samples`` (segment and barcode configs) is read, protected and encoded by blocks."""
        device = resolve_device(self.device)
        if self.output_format == "wav":
            for clip in clips:
                _check_row_size(clip, self.audio_column)
        result: list[bytes | bytearray] = [b""] * len(clips)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, clip in enumerate(clips):
            if self._in_blocks(clip):
                result[i] = self._protect_in_blocks(clip, labels[i], device)
            else:
                groups.setdefault((clip.sampling_rate, clip.channels), []).append(i)
        batches = [
            (sr, channels, [rows[j] for j in part])
            for (sr, channels), rows in groups.items()
            for part in length_groups([clips[i].frames for i in rows], channels, self.max_batch_samples or 2**62)
        ]
        for sr, channels, rows in batches:
            lengths = [clips[i].frames for i in rows]
            padded = self._buffer((len(rows), channels, max(lengths)))
            for j, i in enumerate(rows):
                clips[i].read_into(padded[j])
                padded[j, :, lengths[j] :] = 0.0
            check_finite(padded, [clips[i] for i in rows], self.audio_column)
            audio = torch.from_numpy(padded)
            on_cpu = device.type == "cpu"
            y = self.transform(
                audio if on_cpu else audio.to(device),
                torch.tensor(lengths),
                torch.tensor([labels[i] for i in rows]),
                sr,
                inplace=True,
            )
            y_np = y.numpy() if on_cpu else y.cpu().numpy()
            for j, i in enumerate(rows):  # encode now: the next group reuses the buffer
                result[i] = encode_audio(y_np[j, :, : lengths[j]], sr, self.output_format)
        return result

    def _in_blocks(self, clip: Clip) -> bool:
        """Whether ``clip`` is protected by blocks: longer than ``max_batch_samples``, with a config that can."""
        return (self.max_batch_samples is not None and self.config.uses_fft_path
                and clip.frames * clip.channels > self.max_batch_samples)

    def _protect_in_blocks(self, clip: Clip, label: int, device: torch.device) -> bytes | bytearray:
        """Read, protect and encode one long clip block by block (:meth:`PosCUDATransform.protect_in_blocks`): the
        bytes the padded path gives, holding the encoded output and a few blocks, not the clip's samples."""
        encoder = BlockEncoder(self.output_format, clip.channels, clip.frames, clip.sampling_rate)

        def read(start: int, stop: int) -> torch.Tensor:
            block = clip.read(start, stop)
            check_finite(block[None], [clip], self.audio_column)
            return torch.from_numpy(block).to(device)

        def write(start: int, block: torch.Tensor) -> None:
            encoder.write(start, block.cpu().numpy())

        try:
            self.transform.protect_in_blocks(read, write, clip.frames, label, clip.sampling_rate)
        finally:
            clip.close()
        logger.debug("Protected row %d (%d samples) by blocks", clip.row, clip.frames)
        return encoder.getvalue()


#: The largest value one row of a ``datasets`` Audio column holds (its ``bytes`` are an Arrow ``binary``).
MAX_ROW_BYTES = 2**31 - 2


def _check_row_size(clip: Clip, column: str) -> None:
    """Refuse, before any work, a clip whose float WAV would not fit in one Arrow ``binary`` value."""
    size = 4 * clip.channels * clip.frames + 58  # float32 samples and the header of audio_io.float_wav_bytes
    if size > MAX_ROW_BYTES:
        hours = MAX_ROW_BYTES / (4 * clip.channels * clip.sampling_rate * 3600)
        raise ValueError(
            f"Row {clip.row} of the batch (column {column!r}, path={clip.path!r}) would be a {size / 1e9:.2f} GB "
            f"float WAV, and one value of a datasets Audio column holds at most 2 GiB ({hours:.1f} h of this clip's "
            "rate and channels). Use output_format='flac' (24-bit, about half the size or less), or cut the "
            "recording into shorter clips."
        )


def length_groups(lengths: Sequence[int], channels: int, max_samples: int) -> list[list[int]]:
    """Split clip indices into groups, shortest clips first, whose padded size (clips x longest x channels) stays
    within ``max_samples``; a clip longer than that forms a group of its own.

    Example:

    ```py
    >>> from hf_poscuda.map_callable import length_groups
    >>> length_groups([8000, 480000, 8000, 7000], channels=1, max_samples=100_000)
    [[3, 0, 2], [1]]

    ```
    """
    order = sorted(range(len(lengths)), key=lambda j: (lengths[j], j))
    groups: list[list[int]] = []
    current: list[int] = []
    for j in order:
        if current and (len(current) + 1) * max(lengths[j], 1) * channels > max_samples:
            groups.append(current)
            current = []
        current.append(j)
    if current:
        groups.append(current)
    return groups
