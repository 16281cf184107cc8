"""The picklable callable for ``Dataset.map``: Audio column in, protected Audio column out. Knows nothing of the Hub.

Reading: raw file bytes are read with `soundfile` (from ``Audio(decode=False)`` dicts, or from the source bytes
that a decoding column's ``AudioDecoder`` keeps), which is about 3x faster than decoding through torchcodec;
anything soundfile cannot read falls back to torchcodec.

Writing: each protected clip is written as a 32-bit float WAV by default (``output_format="wav"``), so the
stored audio is bit-for-bit what the transform computed: no clipping at ±1 and no 16-bit quantisation that
would erase small perturbations. ``output_format="flac"`` stores 24-bit FLAC instead (about 2x smaller;
quantisation step 1.2e-7, far below any useful perturbation).
"""

from __future__ import annotations

import io
import logging
import os
import posixpath
import struct
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import soundfile as sf
import torch

from .config import PosCUDAConfig
from .key import PosCUDAKey
from .transform import PosCUDATransform

logger = logging.getLogger(__name__)

OutputFormat = Literal["wav", "flac"]
#: Default bound on one padded sub-batch: 2**24 samples (64 MB as float32), see ``PosCUDA(max_batch_samples=...)``.
MAX_BATCH_SAMPLES = 2**24
_FORMATS: dict[str, tuple[str, str, str]] = {"wav": ("WAV", "FLOAT", ".wav"), "flac": ("FLAC", "PCM_24", ".flac")}
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
        max_batch_samples (`int`, *optional*, defaults to :data:`MAX_BATCH_SAMPLES`): memory bound. Clips are
            padded to a common length to be filtered together; a batch is split, by length, into sub-batches of at
            most this many padded samples (a clip longer than that goes alone), so memory follows the audio in a
            batch, not batch size x its longest clip. Output bytes do not depend on it. ``None``: one padded tensor
            per sampling rate.

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
        if output_format not in _FORMATS:
            raise ValueError(f"output_format must be one of {list(_FORMATS)}, got {output_format!r}.")
        names = tuple(label_names) if label_names is not None else None
        if names is not None:
            if not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
                raise ValueError("label_names must be distinct strings, in class-index order.")
            if num_classes is not None and num_classes != len(names):
                raise ValueError(f"num_classes={num_classes} disagrees with {len(names)} label_names.")
            num_classes = len(names)
        if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}.")
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
        from datasets import Audio, ClassLabel, Value

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
        feature = features[label_column]
        if "label_names" not in kwargs:
            if isinstance(feature, ClassLabel):
                kwargs["label_names"] = feature.names
            elif isinstance(feature, Value) and feature.dtype in ("string", "large_string"):
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
                kwargs["label_names"] = sorted(values)
            elif not (isinstance(feature, Value) and feature.dtype.startswith(("int", "uint"))):
                raise ValueError(
                    f"Label column {label_column!r} is {feature!r}; expected a ClassLabel, an integer or a string "
                    "column. Cast it (e.g. ds.class_encode_column(...)) or pass label_column=... ."
                )
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
        """Map one label to its class index, or raise a ``ValueError`` that says how to fix it."""
        where = f"row {row} of the batch, column {self.label_column!r}"
        if label is None:
            raise ValueError(
                f"Unlabelled row ({where} is None). PosCUDA needs every clip's class; remove unlabelled rows "
                f"first, e.g. ds.filter(lambda r: r[{self.label_column!r}] is not None)."
            )
        if isinstance(label, str):
            if self.label_names is None:
                raise ValueError(
                    f"String label {label!r} ({where}) but no label_names were given. Use "
                    "PosCUDA.for_dataset(ds, key) (sorted distinct values) or pass label_names=[...] in index order."
                )
            try:
                return self.label_names.index(label)
            except ValueError:
                raise ValueError(
                    f"Unknown label {label!r} ({where}); known classes are {list(self.label_names)}. "
                    "Pass the full label_names list."
                ) from None
        if isinstance(label, (bool, np.bool_)) or not isinstance(label, (int, np.integer)):
            raise ValueError(
                f"Non-integer label {label!r} of type {type(label).__name__} ({where}); expected a class index "
                "(int or ClassLabel) or a string. Convert the column, e.g. ds.class_encode_column(...)."
            )
        index = int(label)
        if index < 0 or (self.num_classes is not None and index >= self.num_classes):
            bound = f"[0, {self.num_classes})" if self.num_classes is not None else ">= 0"
            raise ValueError(f"Label {index} ({where}) is outside the known classes {bound}. Fix the label.")
        return index

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
        ext = _FORMATS[self.output_format][2]
        return {
            self.audio_column: [
                {"bytes": data, "path": _renamed(clip.path, ext)} for clip, data in zip(clips, encoded, strict=True)
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

    def _protect(self, clips: list[_Clip], labels: list[int]) -> list[bytes]:
        """Protect and encode: clips sharing a sampling rate and channel count go through one padded tensor."""
        device = resolve_device(self.device)
        result: list[bytes] = [b""] * len(clips)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, clip in enumerate(clips):
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
            _check_finite(padded, [clips[i] for i in rows], self.audio_column)
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


def length_groups(lengths: Sequence[int], channels: int, max_samples: int) -> list[list[int]]:
    """Split clip indices into groups, shortest clips first, whose padded size (clips x longest x channels) stays
    within ``max_samples``; a clip longer than that forms a group of its own.

    Example:

    ```py
    >>> from hf_poscuda.hf import length_groups
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


def _check_finite(padded: np.ndarray, clips: list[_Clip], column: str) -> None:
    """One reduction per batch; only on failure look for the offending clip to name it."""
    if np.isfinite(padded.sum()):  # NaN/inf propagate through a sum
        return
    for j, clip in enumerate(clips):
        if not np.isfinite(padded[j]).all():
            raise ValueError(
                f"Audio with NaN or infinite samples (row {clip.row} of the batch, column {column!r}, "
                f"path={clip.path!r}). Fix or drop that clip; PosCUDA refuses to write it."
            )


def encode_audio(data: np.ndarray, sampling_rate: int, output_format: OutputFormat = "wav") -> bytes:
    """Encode float32 ``[channels, samples]`` as file bytes, deterministically (same input, same bytes).

    ``"wav"`` is written here rather than by libsndfile, whose float WAVs carry a ``PEAK`` chunk with a
    timestamp: identical audio would get different bytes each second, defeating caching and comparison.
    """
    if output_format == "wav":
        return float_wav_bytes(data, sampling_rate)
    if data.size and float(np.abs(data).max()) > 1.0:
        raise ValueError(
            f"A protected clip peaks at {float(np.abs(data).max()):.3f}, above full scale (its source does too: "
            f"protection never raises a clip's peak above max(1, its original peak)); {output_format} would clip it. "
            "Use output_format='wav' (32-bit float) for this dataset."
        )
    fmt, subtype, _ = _FORMATS[output_format]
    buffer = io.BytesIO()
    sf.write(buffer, data.T, sampling_rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def float_wav_bytes(data: np.ndarray, sampling_rate: int) -> bytes:
    """A minimal RIFF/WAVE file of IEEE float32 samples (``WAVE_FORMAT_IEEE_FLOAT``, with the ``fact`` chunk)."""
    channels, frames = data.shape
    payload = memoryview(np.ascontiguousarray(data.T, dtype="<f4")).cast("B")  # no copy for mono
    block = 4 * channels
    fmt = struct.pack("<HHIIHHH", 3, channels, sampling_rate, sampling_rate * block, block, 32, 0)
    header = (
        b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 12 + 8 + len(payload)) + b"WAVE"
        + b"fmt " + struct.pack("<I", len(fmt)) + fmt
        + b"fact" + struct.pack("<II", 4, frames)
        + b"data" + struct.pack("<I", len(payload))
    )
    return b"".join((header, payload))


def _renamed(path: str | None, ext: str) -> str | None:
    """Same name with the output format's extension (datasets infers the format from it)."""
    if not path:
        return None
    stem, old = posixpath.splitext(path)
    return path if old == ext else (stem if old else path) + ext


class _Clip:
    """One audio item, opened: its format is known, its samples are read on demand into a caller's buffer."""

    __slots__ = ("row", "path", "sampling_rate", "frames", "channels", "_reader", "_array")

    def __init__(self, row: int, path: str | None, reader: sf.SoundFile | None, array: np.ndarray | None, sr: int):
        self.row, self.path, self.sampling_rate = row, path, int(sr)
        self._reader, self._array = reader, array
        if reader is not None:
            self.frames, self.channels = int(reader.frames), int(reader.channels)
        else:
            assert array is not None
            self.channels, self.frames = array.shape

    def read_into(self, out: np.ndarray) -> None:
        """Write the samples into ``out[:, :frames]`` (``out`` is ``[channels, >= frames]`` float32)."""
        if self._array is not None:
            out[:, : self.frames] = self._array
            return
        assert self._reader is not None
        with self._reader:
            if self.channels == 1:
                self._reader.read(self.frames, dtype="float32", out=out[0, : self.frames])
            else:
                out[:, : self.frames] = self._reader.read(self.frames, dtype="float32", always_2d=True).T


def open_clip(item: Any, row: int, column: str = "audio") -> _Clip:
    """Open one audio item without decoding it yet.

    Accepts ``{"bytes", "path"}`` dicts (``Audio(decode=False)``), ``AudioDecoder`` objects (decoding ``Audio``;
    their source bytes are read directly) and ``{"array", "sampling_rate"}`` dicts.

    Raises:
        ValueError: the item is not audio or has no data.
    """
    where = f"row {row} of the batch, column {column!r}"
    if item is None:
        raise ValueError(f"Missing audio ({where} is None). Remove rows without audio before protecting.")
    if hasattr(item, "get_all_samples"):  # torchcodec AudioDecoder (datasets >= 4)
        encoded = getattr(item, "_hf_encoded", None) or {}
        return _open_encoded(encoded.get("bytes"), encoded.get("path"), row, fallback=item)
    if isinstance(item, dict) and "array" in item:
        data = np.asarray(item["array"], dtype=np.float32)
        sr = item.get("sampling_rate")
        if not isinstance(sr, (int, np.integer)) or sr <= 0:
            raise ValueError(f"Audio array without a valid sampling_rate ({where}): got {sr!r}.")
        data = data[None, :] if data.ndim == 1 else data
        if data.ndim != 2:
            raise ValueError(f"Audio array must be [samples] or [channels, samples] ({where}); got {data.shape}.")
        return _Clip(row, item.get("path"), None, data, sr)
    if isinstance(item, dict) and ("bytes" in item or "path" in item):
        if item.get("bytes") is None and not item.get("path"):
            raise ValueError(f"Audio item has neither bytes nor path ({where}).")
        return _open_encoded(item.get("bytes"), item.get("path"), row, fallback=None)
    raise ValueError(
        f"Column {column!r} does not hold audio ({where} is a {type(item).__name__}). Expected an Audio "
        f"feature: cast it with ds.cast_column({column!r}, datasets.Audio()) or pass audio_column=... ."
    )


def read_clip(item: Any, row: int, column: str = "audio") -> tuple[np.ndarray, int, str | None]:
    """Read one audio item as float32 ``[channels, samples]``, its sampling rate and its path (see :func:`open_clip`).

    Raises:
        ValueError: the item is not audio, or holds NaN/inf samples.
    """
    clip = open_clip(item, row, column)
    data = np.zeros((clip.channels, clip.frames), dtype=np.float32)
    clip.read_into(data)
    _check_finite(data[None], [clip], column)
    return data, clip.sampling_rate, clip.path


def _open_encoded(data: bytes | None, path: str | None, row: int, fallback: Any) -> _Clip:
    source: Any = io.BytesIO(data) if data is not None else path
    try:
        reader = sf.SoundFile(source)
        return _Clip(row, path, reader, None, reader.samplerate)
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:  # format soundfile cannot read: use torchcodec
        logger.debug("soundfile could not read %r (%s); decoding with torchcodec", path, err)
    if fallback is None:
        from torchcodec.decoders import AudioDecoder

        fallback = AudioDecoder(data if data is not None else path)
    decoded = fallback.get_all_samples()
    return _Clip(row, path, None, decoded.data.cpu().numpy().astype(np.float32), decoded.sample_rate)
