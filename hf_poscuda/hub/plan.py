"""Planning a push, with no network: argument checks, the record a push leaves, the card it publishes, the
files it writes. :mod:`hf_poscuda.hub.push` and :mod:`hf_poscuda.hub.shards` do the uploading."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..card import evaluation_for, render_card
from ..figures import FIGURE_FILE, evaluation_chart
from ..key import PosCUDAKey
from ..shards import MAX_SHARD_BYTES
from .record import PROTECTION_FILE, ProtectionRecord

CARD_COMMIT = "Update the PosCUDA dataset card"


def check_repo_id(repo_id: str) -> None:
    """Raise ``ValueError`` unless ``repo_id`` is a valid ``"namespace/name"``."""
    from huggingface_hub.utils import validate_repo_id

    if not isinstance(repo_id, str) or "/" not in repo_id:
        raise ValueError(f"repo_id must be 'namespace/name', got {repo_id!r}.")
    validate_repo_id(repo_id)


@dataclass
class CardInputs:
    """What the card says besides the per-split figures (see :func:`~hf_poscuda.card.render_card`).

    Args:
        license (`str`, *optional*): license id; required unless the repo's card already has one.
        source (`str`, *optional*): the source dataset (a Hub id, or a local folder's name).
        source_is_hub (`bool`, defaults to `False`): whether ``source`` is a Hub id (then it is linked).
        pretty_name (`str`, *optional*): title.
        attribution (`str`, *optional*): extra attribution text required by the source's license.
        tags (`Sequence[str]`, defaults to `()`): extra tags.
        evaluation_report (`Mapping`, *optional*): an ``hf-poscuda evaluate`` report with a setting that has the
            pushed parameters.
    """

    license: str | None = None
    source: str | None = None
    source_is_hub: bool = False
    pretty_name: str | None = None
    attribution: str | None = None
    tags: Sequence[str] = ()
    evaluation_report: Mapping[str, Any] | None = None


def merge_record(
    record: ProtectionRecord | None, repo_id: str, key: PosCUDAKey, parameters: Mapping[str, Any]
) -> tuple[ProtectionRecord, list[str]]:
    """The repo's record to extend, or a new one, and the data files of abandoned uploads to delete.

    A repo whose record has finished splits keeps its key and parameters: another key or other parameters are
    refused. A record with only unfinished sharded uploads (a first push that was interrupted) is replaced by a
    push with another key or other parameters; the files those uploads committed are returned, so that the push
    deletes them and no data protected otherwise stays behind.

    Raises:
        ValueError: the repo holds finished splits protected with another key id or other parameters.
    """
    if record is None:
        return ProtectionRecord(key.key_id, dict(parameters)), []
    if record.key_id == key.key_id and record.parameters == dict(parameters):
        return record, []
    if not record.splits:
        abandoned = [shard["path"] for splits in record.uploads.values() for progress in splits.values()
                     for shard in progress.get("shards", [])]
        return ProtectionRecord(key.key_id, dict(parameters), source=record.source), abandoned
    if record.key_id != key.key_id:
        raise ValueError(
            f"{repo_id} holds splits protected with key id {record.key_id}; this push uses key id {key.key_id}. "
            "Push with the same key, or to a new repo."
        )
    raise ValueError(
        f"{repo_id} holds splits protected with other parameters; mixing parameters in one repo would make "
        "its card wrong. Push with the same preset/knobs, or to a new repo."
    )


def require_license(license: str | None) -> str:
    """The license, or a clear error saying how to give one."""
    if not license:
        raise ValueError(
            "The dataset card needs a license and the source's license is unknown: pass --license with the source "
            "dataset's license id (e.g. cc-by-4.0). Nothing was pushed."
        )
    return license


def fill_card_inputs(record: ProtectionRecord, inputs: CardInputs) -> CardInputs:
    """Put the source and the evaluation into the record, or take them from it (a later push of another split
    keeps what the first push said). The report must have measured the record's parameters."""
    from dataclasses import replace

    if inputs.evaluation_report is not None:
        entry = evaluation_for(inputs.evaluation_report, record.parameters)
        record.evaluation = {**{k: v for k, v in inputs.evaluation_report.items() if k != "settings"},
                             "settings": [entry]}
    if inputs.source is not None:
        record.source = {"name": inputs.source, "is_hub": inputs.source_is_hub, "attribution": inputs.attribution}
        return inputs
    if record.source is not None:
        return replace(inputs, source=record.source["name"], source_is_hub=record.source["is_hub"],
                       attribution=inputs.attribution or record.source.get("attribution"))
    return inputs


def record_chart(record: ProtectionRecord, key: PosCUDAKey) -> bytes | None:
    """The evaluation chart of the record's report (PNG), checked to hold no trace of the secret."""
    if not record.evaluation:
        return None
    chart = evaluation_chart(record.evaluation["settings"][0])
    key.assert_not_in(chart, FIGURE_FILE)
    return chart


def repo_card(
    record: ProtectionRecord, inputs: CardInputs, *, license: str, repo_id: str, config_name: str,
    existing: Mapping[str, Any], key: PosCUDAKey, with_figure: bool,
) -> str:
    """The README.md a push publishes: every protected split of the record, the existing YAML kept."""
    return render_card(
        record.summaries(), license=license, repo_id=repo_id, config_name=config_name, source=inputs.source,
        source_is_hub=inputs.source_is_hub, pretty_name=inputs.pretty_name or existing.get("pretty_name"),
        attribution=inputs.attribution, evaluation_report=record.evaluation, tags=inputs.tags,
        existing_metadata=existing, key=key, figure=FIGURE_FILE if with_figure else None,
    )


def checked_record_text(record: ProtectionRecord, key: PosCUDAKey) -> str:
    """``poscuda.json``'s text, checked to hold no trace of the secret."""
    text = record.to_json()
    key.assert_not_in(text.encode(), PROTECTION_FILE)
    return text


def data_prefix(config_name: str) -> str:
    """The folder ``push_to_hub`` (and a sharded push) puts a config's data files in."""
    return "data" if config_name == "default" else config_name


def with_data_files(
    existing: Mapping[str, Any], config_name: str, split: str, features: Any, num_examples: int | None = None,
    num_bytes: int | None = None,
) -> dict[str, Any]:
    """Card YAML for a sharded push: the config's ``data_files`` entry for ``split`` (``{prefix}/{split}-*``, the
    pattern ``push_to_hub`` writes) and its ``dataset_info`` (features; the split's rows and Arrow bytes, which
    ``load_dataset`` checks against the split names it finds), with everything else kept.

    Example:

    ```py
    >>> from hf_poscuda.hub.plan import with_data_files
    >>> with_data_files({}, "default", "train", None)["configs"]
    [{'config_name': 'default', 'data_files': [{'split': 'train', 'path': 'data/train-*'}]}]

    ```
    """
    merged = dict(existing)
    configs = [dict(c) for c in merged.get("configs") or []]
    entry = next((c for c in configs if c.get("config_name") == config_name), None)
    if entry is None:
        entry = {"config_name": config_name, "data_files": []}
        configs.append(entry)
    files = entry.get("data_files") or []
    if isinstance(files, str) or (isinstance(files, list) and files and not isinstance(files[0], dict)):
        files = [{"split": "train", "path": files}]  # datasets reads a bare pattern (or list) as the train split
    files = [f for f in files if isinstance(f, dict) and f.get("split") != split]
    entry["data_files"] = [*files, {"split": split, "path": f"{data_prefix(config_name)}/{split}-*"}]
    merged["configs"] = configs
    if features is not None:  # push_to_hub's dataset_info: this config's features, without stale split sizes
        info = merged.get("dataset_info")
        infos = [dict(i) for i in (info if isinstance(info, list) else [info] if isinstance(info, dict) else [])]
        ours = next((i for i in infos if i.get("config_name", "default") == config_name), None)
        if ours is None:
            ours = {"config_name": config_name} if config_name != "default" or infos else {}
            infos.append(ours)
        ours["features"] = features._to_yaml_list()
        splits = [s for s in ours.get("splits") or [] if s.get("name") != split]
        if num_examples is not None:
            splits.append({"name": split, "num_bytes": int(num_bytes or 0), "num_examples": int(num_examples)})
        ours["splits"] = splits
        for stale in ("download_size", "dataset_size", *(() if splits else ("splits",))):
            ours.pop(stale, None)
        merged["dataset_info"] = infos if len(infos) > 1 else infos[0]
    return merged


@dataclass
class PlannedFile:
    """A file a push writes: its path in the repo and its size in bytes (estimated for data shards)."""

    path: str
    size: int
    estimated: bool = False


@dataclass
class PushPlan:
    """What a push uploads (see ``push_protected(..., dry_run=True)``).

    Args:
        repo_exists (`bool`): whether the repo exists already (else the push creates it).
        files (`list[PlannedFile]`): data shards (``Dataset.push_to_hub``'s layout; sizes estimated from the Arrow
            data) and the files of the card commit (README.md, poscuda.json and, with a report, the chart).
        commit_messages (`list[str]`): one commit per split, then the card commit.
        record (`str`): the ``poscuda.json`` text.
        chart (`bytes`, *optional*): the evaluation chart (PNG), uploaded with the card when a report is given.
    """

    repo_exists: bool
    files: list[PlannedFile]
    commit_messages: list[str]
    record: str
    chart: bytes | None = None

    def format(self) -> str:
        lines = [f"  {f.path}  {'~' if f.estimated else ''}{format_size(f.size)}" for f in self.files]
        lines += [f"  commit: {m}" for m in self.commit_messages]
        return "\n".join(lines)


def format_size(n: float) -> str:
    """Bytes in B/KB/MB/GB (powers of 1000, as the Hub shows them)."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def planned_files(
    sizes: Mapping[str, int], config_name: str, card: str, record: str, chart: bytes | None
) -> list[PlannedFile]:
    """The files a push writes: ``push_to_hub``'s Parquet shards per split (``sizes``: each split's Arrow bytes;
    the audio bytes dominate and Parquet does not shrink them), README.md and the record."""
    prefix = data_prefix(config_name)
    files = []
    for name, size in sizes.items():
        shards = max(1, math.ceil(size / MAX_SHARD_BYTES))
        files += [PlannedFile(f"{prefix}/{name}-{i:05d}-of-{shards:05d}.parquet", size // shards, estimated=True)
                  for i in range(shards)]
    files += [PlannedFile("README.md", len(card.encode())), PlannedFile(PROTECTION_FILE, len(record.encode()))]
    if chart is not None:
        files.append(PlannedFile(FIGURE_FILE, len(chart)))
    return files


@dataclass
class PushResult:
    """What a push did (or, with ``dry_run``, would do).

    Args:
        repo_id (`str`), revision (`str`): where.
        url (`str`): the dataset page.
        pushed (`list[str]`): splits pushed by this call (empty for a dry run).
        splits (`dict[str, ProtectionSummary]`): every protected split in the repo after the push (as on the card).
        card (`str`): the card text that was pushed (a dry run: the card as rendered before the data commits, so
            without the ``dataset_info`` that ``push_to_hub`` adds to the YAML).
        plan (`PushPlan`, *optional*): what a dry run would upload.
        shards_uploaded (`int`): data files this call uploaded (sharded pushes).
        shards_skipped (`int`): data files a resumed sharded push found on the Hub already and did not redo.
    """

    repo_id: str
    revision: str
    url: str
    pushed: list[str]
    splits: dict[str, Any]
    card: str
    plan: PushPlan | None = None
    shards_uploaded: int = 0
    shards_skipped: int = 0
    files: list[str] = field(default_factory=list)
