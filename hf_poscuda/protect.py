"""Protect a whole split: validate, run ``map`` on the fast ``decode=False`` path, summarise."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from typing import Any

from datasets import Audio, Dataset, DatasetDict

from .audio_io import OutputFormat
from .config import PosCUDAConfig
from .key import PosCUDAKey
from .map_callable import PosCUDA
from .quality import dataset_snr, measure_quality

logger = logging.getLogger(__name__)


@dataclass
class ProtectionSummary:
    """What one protection run did (no secret in here: only the public key id).

    Args:
        clips (`int`): rows protected.
        classes (`int`): distinct labels seen.
        seconds (`float`): wall time of the map.
        clips_per_second (`float`): throughput.
        snr_db (`float`): SNR of all protected audio against the original (energy ratio over all clips compared).
        snr_clips (`int`): how many clips the SNR was measured on.
        key_id (`str`): public key id.
        label_names (`list[str]`, *optional*): the class-name order used.
        config (`dict`): the protection knobs.
        quality (`dict`, *optional*): audio-quality means from :func:`~hf_poscuda.quality.measure_quality` on up to
            ``quality_clips`` clips (PESQ/STOI only when the ``eval`` extra is installed).
        output_format (`str`, defaults to `"wav"`): how the protected clips are stored (``"wav"``: 32-bit float,
            ``"flac"``: 24-bit).
    """

    clips: int
    classes: int
    seconds: float
    clips_per_second: float
    snr_db: float
    snr_clips: int
    key_id: str
    label_names: list[str] | None
    config: dict[str, Any]
    quality: dict[str, Any] | None = None
    output_format: str = "wav"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format(self) -> str:
        return (
            f"clips: {self.clips} | classes: {self.classes} | time: {self.seconds:.2f} s | "
            f"{self.clips_per_second:.0f} clips/s | SNR: {self.snr_db:.1f} dB (over {self.snr_clips} clips) | "
            f"key id: {self.key_id}"
        )


def protect_dataset(
    dataset: Dataset,
    key: PosCUDAKey,
    config: PosCUDAConfig | None = None,
    *,
    audio_column: str = "audio",
    label_column: str = "label",
    batch_size: int = 100,
    num_proc: int | None = None,
    device: str | None = None,
    output_format: OutputFormat = "wav",
    snr_clips: int = 500,
    quality_clips: int = 0,
) -> tuple[Dataset, ProtectionSummary]:
    """Protect every row of ``dataset`` and return it with a :class:`ProtectionSummary`.

    The audio column is read as raw bytes (``Audio(decode=False)``, the fast path) and cast back to the
    original ``Audio`` feature afterwards. Labels are checked on the label column before any audio is read.

    Args:
        dataset (`datasets.Dataset`): the split; must not be empty.
        key (`PosCUDAKey`): the private key.
        config (`PosCUDAConfig`, *optional*): protection knobs; defaults to ``PosCUDAConfig()``.
        audio_column (`str`, defaults to `"audio"`), label_column (`str`, defaults to `"label"`): column names.
        batch_size (`int`, defaults to `100`): rows per map batch.
        num_proc (`int`, *optional*): worker processes for ``map``.
        device (`str`, *optional*): compute device; ``None`` = CUDA when available.
        output_format (`str`, defaults to `"wav"`): ``"wav"`` (float32) or ``"flac"`` (24-bit).
        snr_clips (`int`, defaults to `500`): how many clips (evenly spaced) the summary's SNR is measured on.
        quality_clips (`int`, defaults to `0`): how many clips (evenly spaced) to score with
            :func:`~hf_poscuda.quality.measure_quality` for the summary's ``quality`` (0: skip).

    Raises:
        ValueError: empty split, missing/wrong columns, bad labels or audio (message says how to fix it).
    """
    if len(dataset) == 0:
        raise ValueError("The split is empty: there is nothing to protect. Check the split name and any filters.")
    fn = PosCUDA.for_dataset(
        dataset, key, config, audio_column=audio_column, label_column=label_column, device=device,
        output_format=output_format,
    )
    labels = dataset[label_column]
    indices = [fn.label_index(label, row) for row, label in enumerate(labels)]  # fail before any audio is read
    original_feature = dataset.features[audio_column]
    raw = dataset.cast_column(audio_column, Audio(decode=False))
    start = time.perf_counter()
    protected = raw.map(fn, batched=True, batch_size=batch_size, num_proc=num_proc, desc="PosCUDA protecting")
    seconds = time.perf_counter() - start
    snr, measured = dataset_snr(raw, protected, audio_column, snr_clips)
    quality = measure_quality(raw, protected, quality_clips, audio_column) if quality_clips > 0 else None
    protected = protected.cast_column(audio_column, original_feature)
    summary = ProtectionSummary(
        clips=len(protected),
        classes=len(set(indices)),
        seconds=seconds,
        clips_per_second=len(protected) / seconds if seconds > 0 else math.inf,
        snr_db=snr,
        snr_clips=measured,
        key_id=key.key_id,
        label_names=list(fn.label_names) if fn.label_names is not None else None,
        config=fn.config.to_dict(),
        quality=quality,
        output_format=output_format,
    )
    logger.info("Protected %s", summary.format())
    return protected, summary


def protect_splits(
    dataset: Dataset | DatasetDict,
    key: PosCUDAKey,
    config: PosCUDAConfig | None = None,
    splits: list[str] | None = None,
    **kwargs: Any,
) -> tuple[DatasetDict, dict[str, ProtectionSummary]]:
    """Protect several splits with one key and config; see :func:`protect_dataset` for ``kwargs``.

    Args:
        dataset (`Dataset` or `DatasetDict`): a single split is treated as ``{"train": dataset}``.
        splits (`list[str]`, *optional*): which splits; default all, in the dataset's order.

    Raises:
        ValueError: an unknown split name (the message lists the available ones) or a duplicate.
    """
    if isinstance(dataset, Dataset):
        dataset = DatasetDict({"train": dataset})
    names = list(dataset) if not splits else list(splits)
    missing = [s for s in names if s not in dataset]
    if missing:
        raise ValueError(f"Split(s) {missing} not found; available splits: {list(dataset)}.")
    if len(set(names)) != len(names):
        raise ValueError(f"Each split can be protected once; got {names}.")
    out, summaries = DatasetDict(), {}
    for name in names:
        out[name], summaries[name] = protect_dataset(dataset[name], key, config, **kwargs)
        logger.info("[%s] %s", name, summaries[name].format())
    return out, summaries
