"""Is this copy protected with my key? Three checks, from the strongest to the one that needs least.

1. **Key id**: the public key id in the copy's ``poscuda.json`` (a Hub repo) or ``poscuda_summary.json`` (a folder
   written by ``hf-poscuda protect``) against the key's. A copy found elsewhere may have lost these files.
2. **Bytes**, with the original data: protection is deterministic, so re-protecting the original rows with the
   key must give the stored bytes exactly; rows are counted identical, differing or missing.
3. **Blind**, from the audio alone: each class's filters have a known average magnitude response (the key gives
   it). For every clip, the detrended log spectrum (its average over the active frames, minus a smooth envelope,
   so the speech itself mostly cancels) is correlated with each class's detrended response, and the best match is
   the *detected class*. On audio protected with the key, the detected class agrees with the label far more often
   than chance; on clean audio, or audio protected with another key, it agrees about as often as it does for
   *decoy keys* (public keys derived from a fixed label, so the test is reproducible). The verdict compares the
   key's agreement with the decoys': protected when it exceeds every decoy and lies ``min_z`` standard deviations
   above their mean.

Nothing here prints or returns the secret; results carry the public key id only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Audio, Dataset

from .audio_io import read_clip
from .config import PosCUDAConfig
from .key import PosCUDAKey
from .map_callable import PosCUDA
from .quality import window_size

logger = logging.getLogger(__name__)

SUMMARY_FILE = "poscuda_summary.json"


@dataclass
class ByteCheck:
    """Re-protected original rows against the stored ones (row by row, in order): ``missing`` rows of the original
    are not in the copy; rows of the copy beyond the original count as ``differing``."""

    identical: int
    differing: int
    missing: int

    @property
    def protected(self) -> bool:
        return self.identical > 0 and self.differing == 0 and self.missing == 0


@dataclass
class BlindCheck:
    """The blind check of one split (see the module docstring).

    Args:
        clips (`int`): clips scored.
        classes (`int`): classes in the label mapping.
        agreement (`float`): fraction of clips whose detected class is their label, with the key.
        decoy_mean (`float`), decoy_std (`float`), decoy_max (`float`): the same fraction for the decoy keys.
        z (`float`): ``(agreement - decoy_mean) / max(decoy_std, binomial std at chance)``.
        protected (`bool`): the verdict.
    """

    clips: int
    classes: int
    agreement: float
    decoy_mean: float
    decoy_std: float
    decoy_max: float
    z: float
    protected: bool


@dataclass
class VerifyResult:
    """What :func:`verify_split` found for one split. ``protected`` is the verdict of the strongest check run."""

    split: str
    key_id: str
    recorded_key_id: str | None
    bytes: ByteCheck | None
    blind: BlindCheck | None

    @property
    def key_id_matches(self) -> bool | None:
        return None if self.recorded_key_id is None else self.recorded_key_id == self.key_id

    @property
    def protected(self) -> bool:
        if self.bytes is not None:
            return self.bytes.protected
        if self.blind is not None:
            return self.blind.protected
        return bool(self.key_id_matches)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(key_id_matches=self.key_id_matches, protected=self.protected)
        return out

    def format(self) -> str:
        lines = [f"[{self.split}] {'PROTECTED with key ' if self.protected else 'NOT protected with key '}{self.key_id}"]
        if self.recorded_key_id is not None:
            lines.append(f"  key id on record: {self.recorded_key_id} ({'matches' if self.key_id_matches else 'differs'})")
        if self.bytes is not None:
            b = self.bytes
            lines.append(f"  bytes vs re-protected original: {b.identical} identical, {b.differing} differing, "
                         f"{b.missing} missing")
        if self.blind is not None:
            c = self.blind
            lines.append(f"  blind check: detected class = label for {100 * c.agreement:.1f} % of {c.clips} clips "
                         f"(decoy keys: {100 * c.decoy_mean:.1f} % ± {100 * c.decoy_std:.1f}, max "
                         f"{100 * c.decoy_max:.1f} %; chance {100 / c.classes:.1f} %); z = {c.z:.1f}")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------ blind check
def decoy_key(index: int) -> PosCUDAKey:
    """Public decoy key ``index`` (SHA-256 of a fixed label): what an unrelated key scores."""
    return PosCUDAKey(hashlib.sha256(f"hf-poscuda/verify-decoy/{index}".encode()).digest())


def _n_fft(sampling_rate: int) -> int:
    return window_size(sampling_rate, 0.032)


def _detrend(spectrum_db: np.ndarray, width: int) -> np.ndarray:
    """Minus a moving average along the last axis (edges mirrored)."""
    from scipy.ndimage import uniform_filter1d

    return spectrum_db - uniform_filter1d(spectrum_db, width, axis=-1, mode="mirror")


def class_signatures(key: PosCUDAKey, config: PosCUDAConfig, num_classes: int, sampling_rate: int) -> np.ndarray:
    """Each class's detrended average log-magnitude response, ``[num_classes, bins]`` on the check's grid."""
    from .transform import class_filter_banks

    banks = class_filter_banks(key, config, num_classes, sampling_rate)  # [C, F, taps]
    n_fft = max(_n_fft(sampling_rate), int(2 ** math.ceil(math.log2(banks.shape[-1]))))
    power = np.abs(np.fft.rfft(banks, n=n_fft, axis=-1)) ** 2
    step = n_fft // _n_fft(sampling_rate)
    power = power[..., ::step].mean(axis=1)  # average over a class's filters, on the clip grid
    return _zscore(_detrend(10 * np.log10(power + 1e-10), _WIDTH))


_WIDTH = 15  # bins of the smooth envelope removed from spectra (about 470 Hz at 8 kHz)


def _zscore(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=-1, keepdims=True)
    return x / (np.linalg.norm(x, axis=-1, keepdims=True) + 1e-12)


def clip_signature(audio: np.ndarray, sampling_rate: int) -> np.ndarray:
    """Detrended log of the mean power spectrum over a mono clip's active frames (within 30 dB of its loudest)."""
    n_fft = _n_fft(sampling_rate)
    hop = n_fft // 2
    if len(audio) < n_fft:
        audio = np.pad(audio, (0, n_fft - len(audio)))
    frames = np.lib.stride_tricks.sliding_window_view(audio, n_fft)[::hop] * np.hanning(n_fft)
    power = np.abs(np.fft.rfft(frames, axis=-1)) ** 2
    energy = power.sum(axis=-1)
    active = energy >= energy.max() * 1e-3
    mean = power[active].mean(axis=0)
    return _zscore(_detrend(10 * np.log10(mean + 1e-10)[None], _WIDTH))[0]


def blind_check(
    clips: Sequence[np.ndarray], labels: Sequence[int], sampling_rate: int, key: PosCUDAKey, config: PosCUDAConfig,
    num_classes: int, *, decoys: int = 19, min_z: float = 6.0,
) -> BlindCheck:
    """Detected class vs label for ``clips`` (mono float arrays at ``sampling_rate``) with ``key`` and with
    ``decoys`` decoy keys; see the module docstring for the verdict."""
    if len(clips) != len(labels) or not clips:
        raise ValueError(f"Need as many labels as clips (and at least one), got {len(clips)} clips, {len(labels)} labels.")
    if num_classes < 2:
        raise ValueError("The blind check needs at least two classes (it compares classes' signatures).")
    features = np.stack([clip_signature(c, sampling_rate) for c in clips])
    y = np.asarray(labels)

    def agreement(k: PosCUDAKey) -> float:
        scores = features @ class_signatures(k, config, num_classes, sampling_rate).T
        return float((scores.argmax(axis=1) == y).mean())

    mine = agreement(key)
    others = np.array([agreement(decoy_key(i).decoy_of(key)) for i in range(decoys)])
    chance = 1.0 / num_classes
    spread = max(float(others.std()), math.sqrt(chance * (1 - chance) / len(clips)))
    z = (mine - float(others.mean())) / spread
    return BlindCheck(len(clips), num_classes, mine, float(others.mean()), float(others.std()), float(others.max()),
                      float(z), bool(mine > others.max() and z >= min_z))


# ------------------------------------------------------------------------------------------- one split
def _encoded_bytes(dataset: Dataset, audio_column: str, start: int, stop: int) -> list[bytes | None]:
    """The stored file bytes of rows ``start:stop`` (read from ``path`` when a row keeps only its path)."""
    raw = dataset.select(range(start, min(stop, len(dataset)))).cast_column(audio_column, Audio(decode=False))
    out: list[bytes | None] = []
    for item in raw[audio_column]:
        data = item.get("bytes") if isinstance(item, dict) else None
        path = item.get("path") if isinstance(item, dict) else None
        if data is None and path and Path(path).is_file():
            data = Path(path).read_bytes()
        out.append(data)
    return out


def _byte_check(stored: Dataset, again: Dataset, audio_column: str, chunk: int = 1000) -> ByteCheck:
    """Compare two splits' audio bytes row by row, ``chunk`` rows at a time (memory stays bounded)."""
    same = differing = 0
    common = min(len(stored), len(again))
    for start in range(0, common, chunk):
        stop = min(start + chunk, common)
        pairs = zip(_encoded_bytes(stored, audio_column, start, stop), _encoded_bytes(again, audio_column, start, stop),
                    strict=True)
        for a, b in pairs:
            same, differing = (same + 1, differing) if a is not None and a == b else (same, differing + 1)
    # rows of the copy beyond the original count as differing; rows of the original not in the copy as missing
    return ByteCheck(same, differing + max(0, len(stored) - len(again)), max(0, len(again) - len(stored)))


def verify_split(
    dataset: Dataset,
    key: PosCUDAKey,
    config: PosCUDAConfig | None = None,
    *,
    split: str = "train",
    original: Dataset | None = None,
    recorded_key_id: str | None = None,
    label_names: Sequence[str] | None = None,
    audio_column: str = "audio",
    label_column: str = "label",
    max_clips: int = 500,
    decoys: int = 19,
) -> VerifyResult:
    """Check whether one split is protected with ``key``.

    Args:
        dataset (`Dataset`): the copy to check (an ``Audio`` column and the labels).
        key (`PosCUDAKey`): your key.
        config (`PosCUDAConfig`, *optional*): the parameters it would have been protected with (the record's, when
            the copy has one; default ``PosCUDAConfig()``).
        split (`str`): the split's name, for the report.
        original (`Dataset`, *optional*): the original rows: enables the byte check (instead of the blind one).
        recorded_key_id (`str`, *optional*): the key id the copy's record states.
        label_names (`Sequence[str]`, *optional*): class names in index order, as recorded at protection.
        max_clips (`int`, defaults to `500`): clips scored by the blind check (evenly spaced).
        decoys (`int`, defaults to `19`): decoy keys of the blind check.

    Example:

    ```py
    >>> from hf_poscuda import PosCUDAKey, protect_dataset
    >>> from hf_poscuda.sources import load_fsdd_mini
    >>> from hf_poscuda.verify import verify_split
    >>> key = PosCUDAKey(bytes(range(32)))
    >>> test = load_fsdd_mini()["test"]
    >>> protected, _ = protect_dataset(test, key)
    >>> verify_split(protected, key).protected, verify_split(test, key).protected
    (True, False)

    ```
    """
    config = config or PosCUDAConfig()
    kwargs: dict[str, Any] = {"audio_column": audio_column, "label_column": label_column}
    if label_names is not None:
        kwargs["label_names"] = list(label_names)
    mapper = PosCUDA.for_dataset(dataset, key, config, **kwargs)  # checks columns, gives the label mapping
    result = VerifyResult(split, key.key_id, recorded_key_id, None, None)
    if original is not None:
        from .protect import protect_dataset

        first = next((b for b in _encoded_bytes(dataset, audio_column, 0, 10) if b is not None), b"")
        fmt = "flac" if first[:4] == b"fLaC" else "wav"
        again, _ = protect_dataset(original, key, config, audio_column=audio_column, label_column=label_column,
                                   output_format=fmt, snr_clips=1)
        result.bytes = _byte_check(dataset, again, audio_column)
        return result
    rows = _spread(len(dataset), max_clips)
    subset = dataset.select(rows).cast_column(audio_column, Audio(decode=False))
    clips, labels, rates = [], [], set()
    for row, (item, label) in enumerate(zip(subset[audio_column], subset[label_column], strict=True)):
        data, sr, _ = read_clip(item, int(rows[row]), audio_column)
        clips.append(data.mean(axis=0))
        rates.add(sr)
        labels.append(mapper.label_index(label, int(rows[row])))
    if len(rates) > 1:
        raise ValueError(f"The blind check needs one sampling rate per split, found {sorted(rates)}.")
    if not clips:
        raise ValueError(f"Split {split!r} has no rows to check.")
    num_classes = mapper.num_classes or int(max(labels) + 1)
    result.blind = blind_check(clips, labels, rates.pop(), key, config, max(num_classes, 2), decoys=decoys)
    return result


# ------------------------------------------------------------------------------------------- a source
def read_record(source: str) -> dict[str, Any] | None:
    """The copy's public protection record: ``{"key_id", "config", "splits": {split: {"label_names"}}}`` from a
    folder's ``poscuda_summary.json`` or a Hub repo's ``poscuda.json``; ``None`` when it has none."""
    path = Path(source)
    if path.is_dir():
        summary = path / SUMMARY_FILE
        if not summary.is_file():
            return None
        splits = json.loads(summary.read_text())
        first = next(iter(splits.values()), {})
        return {"key_id": first.get("key_id"), "config": first.get("config"),
                "splits": {name: {"label_names": s.get("label_names"), "key_id": s.get("key_id")}
                           for name, s in splits.items()}}
    if path.exists() or source.startswith((".", "/", "~")):
        return None
    from .hub.record import PROTECTION_FILE, ProtectionRecord, download_text

    text = download_text(source, PROTECTION_FILE, None, None)
    if text is None:
        return None
    record = ProtectionRecord.from_json(text)
    splits = {name: {"label_names": s.label_names, "key_id": s.key_id} for name, s in record.summaries().items()}
    return {"key_id": record.key_id, "config": record.parameters, "splits": splits}


def verify(
    source: str,
    key: PosCUDAKey,
    *,
    original: str | None = None,
    splits: Sequence[str] | None = None,
    config: PosCUDAConfig | None = None,
    audio_column: str = "audio",
    label_column: str = "label",
    max_clips: int = 500,
) -> list[VerifyResult]:
    """Check a copy (a Hub repo, a ``save_to_disk`` folder, an audiofolder or Parquet files) split by split.

    ``config`` defaults to the parameters on the copy's record, else ``PosCUDAConfig()``. With ``original`` (the
    same kinds of source), rows are compared byte for byte; without, the blind check runs.

    Raises:
        ValueError: a split or column that does not exist, or labels that do not map to classes.
    """
    from datasets import DatasetDict

    from .sources import load_audio_dataset

    record = read_record(source)
    if config is None:
        config = PosCUDAConfig(**record["config"]) if record and record.get("config") else PosCUDAConfig()
    if is_hub_source(source) and original is None:  # the blind check reads only the rows it samples
        from .streaming import split_names

        available = split_names(source)
        copy: dict[str, Any] = {}
        for name in list(splits) if splits else available:
            if name in available:
                copy[name] = sample_rows(source, name, max_clips, columns=[audio_column, label_column])
    else:
        loaded = _load(source, load_audio_dataset)
        copy = loaded if isinstance(loaded, DatasetDict) else DatasetDict({"train": loaded})
        available = list(copy)
    names = list(splits) if splits else available
    missing = [s for s in names if s not in copy]
    if missing:
        raise ValueError(f"Split(s) {missing} not found in {source!r}; it has {available}. Pass --split NAME.")
    originals = None
    if original is not None:
        loaded = _load(original, load_audio_dataset)
        originals = loaded if isinstance(loaded, DatasetDict) else DatasetDict({names[0]: loaded})
        absent = [s for s in names if s not in originals]
        if absent:
            raise ValueError(f"The original {original!r} has no split(s) {absent}; it has {list(originals)}.")
    results = []
    for name in names:
        meta = (record or {}).get("splits", {}).get(name, {})
        label_names = meta.get("label_names")
        if label_names is None and is_hub_source(source) and _string_labels(copy[name], label_column):
            from .streaming import _labels  # the class order of string labels needs every row's label (only)

            label_names = sorted(set(_labels(source, name, None, None, None, label_column)))
        results.append(verify_split(
            copy[name], key, config, split=name, original=originals[name] if originals is not None else None,
            recorded_key_id=meta.get("key_id") or (record or {}).get("key_id"), label_names=label_names,
            audio_column=audio_column, label_column=label_column, max_clips=max_clips,
        ))
        logger.info("%s", results[-1].format())
    return results


def is_hub_source(source: str) -> bool:
    """A Hub dataset id (not an existing path, nor one that looks local), as :func:`read_record` tells them."""
    return not Path(source).exists() and not source.startswith((".", "/", "~"))


def _string_labels(dataset: Dataset, label_column: str) -> bool:
    feature = (dataset.features or {}).get(label_column)
    return getattr(feature, "dtype", None) in ("string", "large_string")


def _spread(total: int, n: int) -> np.ndarray:
    """``min(n, total)`` row indices evenly spread over ``range(total)``, first and last included."""
    return np.unique(np.linspace(0, total - 1, min(n, total)).astype(int)) if total > 0 and n > 0 else \
        np.zeros(0, dtype=int)


def sample_rows(
    source: str,
    split: str,
    n: int,
    *,
    columns: Sequence[str] | None = None,
    config_name: str | None = None,
    revision: str | None = None,
    token: str | None = None,
) -> Dataset:
    """At most ``n`` rows of one split, spread over it, without reading the rest: a Hub dataset is not downloaded.

    - A local source (``save_to_disk``, audiofolder or FSDD folder, Parquet files): ``n`` evenly spaced rows, read
      memory-mapped.
    - A Hub dataset stored as Parquet (what ``push_to_hub`` and ``hf-poscuda push`` write): the footers of the
      split's files, then ``columns`` of runs of rows: the first rows of :data:`SAMPLE_RUNS` (or more) evenly
      spaced row groups, read page by page, about ``n`` rows in all, thinned evenly to ``n``. The download is
      about ``n`` rows (and a page per run), whatever the size of the split.
    - Another Hub dataset (audio files, scripts): its first ``n`` rows, streamed.

    Args:
        source (`str`): a Hub dataset id or a local source.
        split (`str`): the split.
        n (`int`): rows wanted (fewer when the split has fewer).
        columns (`Sequence[str]`, *optional*): read only these columns (default: all).
        config_name (`str`, *optional*), revision (`str`, *optional*), token (`str`, *optional*): of a Hub dataset.

    Returns:
        `Dataset`: the rows, in the split's order, with its features; audio columns are not decoded on reading.

    Raises:
        ValueError: the split or a column does not exist.

    Example:

    ```py
    >>> from hf_poscuda.sources import fsdd_mini_path
    >>> from hf_poscuda.verify import sample_rows
    >>> rows = sample_rows(str(fsdd_mini_path()), "test", 12, columns=["audio", "label"])
    >>> len(rows), rows.column_names, rows.features["label"].names[:3]
    (12, ['audio', 'label'], ['0', '1', '2'])

    ```
    """
    if not is_hub_source(source):
        from .sources import load_audio_dataset

        loaded = _load(source, load_audio_dataset)
        if not isinstance(loaded, Dataset):
            if split not in loaded:
                raise ValueError(f"Split {split!r} not found in {source!r}; available splits: {list(loaded)}.")
            loaded = loaded[split]
        _check_columns(loaded.column_names, columns, source)
        subset = loaded.select(_spread(len(loaded), n))
        return subset.select_columns(list(columns)) if columns is not None else subset
    from datasets import load_dataset_builder

    builder = load_dataset_builder(source, config_name, revision=revision, token=token)
    files = (builder.config.data_files or {}).get(split)
    if builder.name != "parquet" or not files:
        return _first_rows(source, split, n, columns, config_name, revision, token)
    return _parquet_rows(list(files), builder.info.features, n, columns, token, source)


def _check_columns(available: Sequence[str], columns: Sequence[str] | None, source: str) -> None:
    missing = [c for c in columns or () if c not in available]
    if missing:
        raise ValueError(f"Column(s) {missing} not found in {source!r}; it has {list(available)}.")


#: Row groups a Hub sample is taken from, at least (fewer when the split has fewer): its rows come in runs.
SAMPLE_RUNS = 10


def _parquet_rows(files: list[str], features: Any, n: int, columns: Sequence[str] | None, token: str | None,
                  source: str) -> Dataset:
    """About ``n`` rows in runs from evenly spaced row groups of Parquet files on the Hub (see :func:`sample_rows`):
    each run is the first rows of a row group, whose pages are read as the run needs them."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import DatasetInfo, Features
    from datasets.table import InMemoryTable
    from huggingface_hub import HfFileSystem

    fs = HfFileSystem(token=token)
    # footers only; each column chunk is then read through a small buffer, page by page, not whole
    opened = [pq.ParquetFile(fs.open(f, "rb", cache_type="none"), buffer_size=1 << 16, pre_buffer=False)
              for f in files]
    groups = [(pf, g) for pf in opened for g in range(pf.metadata.num_row_groups)]
    total = sum(pf.metadata.num_rows for pf in opened)
    schema = opened[0].schema_arrow if opened else pa.schema([])
    _check_columns(schema.names, columns, source)
    runs = min(len(groups), max(SAMPLE_RUNS, math.ceil(n * len(groups) / total))) if total and n > 0 else 0
    batches = []
    for pf, g in (groups[i] for i in _spread(len(groups), runs)):
        batch = next(pf.iter_batches(batch_size=-(-n // runs), row_groups=[g], columns=columns), None)
        if batch is not None:
            batches.append(batch)
    table = pa.Table.from_batches(batches) if batches else schema.empty_table()
    if columns is not None:
        table = table.select(list(columns))
    table = table.take(_spread(table.num_rows, n))
    logger.info("Sampled %d of %d rows in runs from %d of %d row groups", table.num_rows, total, len(batches),
                len(groups))
    if features is not None:
        features = Features({c: features[c] for c in table.column_names})
        table = table.cast(features.arrow_schema)
    return Dataset(InMemoryTable(table), info=DatasetInfo(features=features))


def _first_rows(source: str, split: str, n: int, columns: Sequence[str] | None, config_name: str | None,
                revision: str | None, token: str | None) -> Dataset:
    """The first ``n`` rows of a Hub dataset that is not stored as Parquet, streamed, undecoded."""
    import itertools

    from datasets import load_dataset

    stream = load_dataset(source, config_name, split=split, streaming=True, revision=revision, token=token)
    if stream.features is not None:
        _check_columns(list(stream.features), columns, source)
    if columns is not None:
        stream = stream.select_columns(list(columns))
    stream = stream.decode(False)
    return Dataset.from_list(list(itertools.islice(iter(stream), n)), features=stream.features)


def _load(source: str, load_audio_dataset: Any) -> Any:
    if source.endswith(".parquet") or (Path(source).is_dir() and any(Path(source).glob("**/*.parquet"))
                                       and not (Path(source) / "dataset_dict.json").exists()):
        from datasets import load_dataset

        if source.endswith(".parquet"):
            return load_dataset("parquet", data_files=source)
        return load_dataset("parquet", data_dir=source)  # splits from the file names ({split}-00000-of-...)
    return load_audio_dataset(source)
