"""``poscuda.json``: the public record of a repo's protection (key id, parameters, per-split figures, upload
progress of sharded pushes), and reading it, or any small repo file, from the Hub. No secret is in it."""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .._version import __version__
from ..protect import ProtectionSummary
from .retry import RetryPolicy, call_with_retries

PROTECTION_FILE = "poscuda.json"
_RECORD_FORMAT = "hf-poscuda-protection"


@dataclass
class ShardUpload:
    """One data file of a sharded push, as committed: its path, rows, content hash and what it took.

    Args:
        path (`str`): path in the repo.
        rows (`int`): rows in it (its source rows follow those of the shards before it).
        sha256 (`str`): SHA-256 of the file (the Hub's LFS oid), to check it is still there unchanged.
        seconds (`float`): protection and upload time.
        classes (`list[int]`): class indices seen in it.
        nbytes (`int`): its Arrow size (the card's ``dataset_info`` adds them up for the split).
    """

    path: str
    rows: int
    sha256: str
    seconds: float
    classes: list[int]
    nbytes: int = 0


@dataclass
class UploadProgress:
    """How far a sharded push of one split got (``hf-poscuda push --streaming`` / ``--engine ray``).

    A re-run with the same ``fingerprint`` (source, split, columns, label mapping, key id, parameters, encoding,
    device and hf-poscuda version: everything the protected rows depend on) skips the rows of the shards listed
    here, which are checked on the Hub first. Shard sizes may change between runs: rows are counted, not shards.

    Args:
        fingerprint (`str`): SHA-256 over what the shards' content depends on (no path or secret in clear).
        shards (`list[ShardUpload]`): committed shards, in row order.
        complete (`bool`): whether the split was pushed to the end (then its card entry is up to date).
    """

    fingerprint: str
    shards: list[ShardUpload] = field(default_factory=list)
    complete: bool = False

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.shards)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UploadProgress:
        return cls(data["fingerprint"], [ShardUpload(**s) for s in data.get("shards", [])], bool(data.get("complete")))


@dataclass
class ProtectionRecord:
    """Public record of a repo's protection, stored as ``poscuda.json`` next to the data (no secret in it).

    Args:
        key_id (`str`): public key id shared by every split.
        parameters (`dict`): the protection knobs, shared by every split.
        splits (`dict[str, dict[str, dict]]`): ``{config_name: {split: ProtectionSummary as dict}}``.
        evaluation (`dict`, *optional*): the evaluation report (only the setting matching ``parameters``).
        source (`dict`, *optional*): ``{"name", "is_hub", "attribution"}`` of the source dataset.
        uploads (`dict[str, dict[str, dict]]`): ``{config_name: {split: UploadProgress as dict}}`` of sharded pushes
            (written only when there is one, so records of ``push_to_hub`` pushes keep their bytes).
    """

    key_id: str
    parameters: dict[str, Any]
    splits: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    evaluation: dict[str, Any] | None = None
    source: dict[str, Any] | None = None
    uploads: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def to_json(self) -> str:
        payload = {"format": _RECORD_FORMAT, "version": 1, "hf_poscuda_version": __version__, **asdict(self)}
        if not self.uploads:
            del payload["uploads"]
        return json.dumps(payload, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ProtectionRecord:
        data = json.loads(text)
        if data.get("format") != _RECORD_FORMAT:
            raise ValueError(f"{PROTECTION_FILE} in this repo is not an hf-poscuda record.")
        return cls(
            data["key_id"], data["parameters"], data.get("splits", {}), data.get("evaluation"), data.get("source"),
            data.get("uploads", {}),
        )

    def summaries(self) -> dict[str, ProtectionSummary]:
        """All splits as summaries, named ``split`` (default config) or ``config/split``."""
        out = {}
        for config_name, splits in self.splits.items():
            for split, summary in splits.items():
                out[split if config_name == "default" else f"{config_name}/{split}"] = ProtectionSummary(**summary)
        return out

    def progress(self, config_name: str, split: str) -> UploadProgress | None:
        """The sharded-push progress of one split, if any."""
        data = self.uploads.get(config_name, {}).get(split)
        return UploadProgress.from_dict(data) if data is not None else None

    def set_progress(self, config_name: str, split: str, progress: UploadProgress | None) -> None:
        """Store (or, with ``None``, forget) the sharded-push progress of one split."""
        if progress is None:
            self.uploads.get(config_name, {}).pop(split, None)
            if config_name in self.uploads and not self.uploads[config_name]:
                del self.uploads[config_name]
        else:
            self.uploads.setdefault(config_name, {})[split] = progress.to_dict()


def download_text(repo_id: str, filename: str, revision: str | None, token: str | None) -> str | None:
    """The current text of a repo file, or None if the repo or file does not exist. A branch that does not exist
    yet is read as ``main``, which it will be created from.

    Downloaded into a fresh temporary cache: a stale copy in the user's cache must never stand in for the Hub's.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    with tempfile.TemporaryDirectory(prefix="hf-poscuda-") as cache:
        try:
            path = hf_hub_download(
                repo_id, filename, repo_type="dataset", revision=revision, token=token, cache_dir=cache
            )
        except RevisionNotFoundError:
            return download_text(repo_id, filename, None, token) if revision is not None else None
        except (EntryNotFoundError, RepositoryNotFoundError):
            return None
        return Path(path).read_text(encoding="utf-8")


def fetch_record(repo_id: str, revision: str | None, token: str | None, policy: RetryPolicy) -> ProtectionRecord | None:
    """The repo's ``poscuda.json``, or ``None`` when it has none (or does not exist)."""
    text = call_with_retries(
        lambda: download_text(repo_id, PROTECTION_FILE, revision, token), f"Reading {PROTECTION_FILE}", repo_id, policy
    )
    return ProtectionRecord.from_json(text) if text is not None else None


def fetch_card_metadata(repo_id: str, revision: str | None, token: str | None, policy: RetryPolicy) -> dict[str, Any]:
    """The YAML metadata of the repo's README.md (``{}`` when there is none)."""
    from huggingface_hub import DatasetCard

    text = call_with_retries(
        lambda: download_text(repo_id, "README.md", revision, token), "Reading the dataset card", repo_id, policy
    )
    return DatasetCard(text).data.to_dict() if text is not None else {}
