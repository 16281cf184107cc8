"""Push a protected dataset to the Hugging Face Hub with its dataset card. The key never leaves the machine.

Order of work (see ``push_protected``): check that no byte of the secret is in the data, push each split with
``Dataset.push_to_hub`` (which keeps the repo's other splits and writes ``dataset_info``/``configs`` into the
README), then load that README, merge our metadata into it, render our body and commit it together with
``poscuda.json``, a public record of the protection (key id, parameters, per-split figures) that lets a later
push of another split keep the card complete. Transient failures (HTTP 408/429/5xx, dropped connections) are
retried with exponential back-off; authentication failures raise :class:`HubAuthError` with advice.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from datasets import Dataset, DatasetDict

from . import __version__
from .card import evaluation_for, render_card
from .figures import FIGURE_FILE, evaluation_chart
from .key import PosCUDAKey
from .protect import ProtectionSummary

logger = logging.getLogger(__name__)

PROTECTION_FILE = "poscuda.json"
_RECORD_FORMAT = "hf-poscuda-protection"
_TRANSIENT_STATUS = (408, 429, 500, 502, 503, 504)
T = TypeVar("T")


class HubPushError(RuntimeError):
    """The push failed on the Hub side (after retries, for transient errors)."""


class HubAuthError(HubPushError, PermissionError):
    """The Hub rejected the credentials (401) or the token cannot write to the repo (403)."""


@dataclass(frozen=True)
class RetryPolicy:
    """How transient Hub failures are retried.

    Args:
        max_tries (`int`, defaults to `5`): attempts per step, including the first.
        initial_delay (`float`, defaults to `1.0`): seconds before the first retry; doubled each time.
        max_delay (`float`, defaults to `30.0`): cap on one wait.
    """

    max_tries: int = 5
    initial_delay: float = 1.0
    max_delay: float = 30.0

    def __post_init__(self) -> None:
        if not isinstance(self.max_tries, int) or self.max_tries < 1:
            raise ValueError(f"max_tries must be an int >= 1, got {self.max_tries!r}.")
        if not self.initial_delay >= 0 or not self.max_delay >= self.initial_delay:
            raise ValueError("Need 0 <= initial_delay <= max_delay.")


def _status(err: BaseException) -> int | None:
    response = getattr(err, "response", None)
    return getattr(response, "status_code", None)


def is_transient(err: BaseException) -> bool:
    """Whether an error is worth retrying: HTTP 408/429/5xx or a network failure (dropped connection, timeout)."""
    if _status(err) in _TRANSIENT_STATUS:
        return True
    network = _network_errors()
    seen: set[int] = set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:  # datasets/huggingface_hub sometimes wrap the network error
        seen.add(id(e))
        if isinstance(e, network):
            return True
        e = e.__cause__ or e.__context__
    return False


def _network_errors() -> tuple[type[BaseException], ...]:
    """Connection-level failures: the OS's, and the HTTP client's (huggingface_hub uses httpx, or its fork httpx2)."""
    import importlib

    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module in ("httpx2", "httpx"):
        try:
            errors.append(importlib.import_module(module).TransportError)
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


def _auth_error(err: BaseException, repo_id: str) -> HubAuthError | None:
    status = _status(err)
    if status == 401:
        return HubAuthError(
            f"The Hub rejected the credentials (401 Unauthorized) while pushing to {repo_id!r}. Log in with "
            "`hf auth login`, set the HF_TOKEN environment variable, or pass --token with a token that has write "
            "access."
        )
    if status == 403:
        return HubAuthError(
            f"Your token cannot write to {repo_id!r} (403 Forbidden). Use a token with write access to that "
            "namespace (https://huggingface.co/settings/tokens)."
        )
    return None


def call_with_retries(fn: Callable[[], T], what: str, repo_id: str, policy: RetryPolicy | None = None) -> T:
    """Call ``fn``; retry transient failures with exponential back-off; turn 401/403 into :class:`HubAuthError`."""
    policy = policy or RetryPolicy()
    delay = policy.initial_delay
    for attempt in range(1, policy.max_tries + 1):
        try:
            return fn()
        except Exception as err:
            auth = _auth_error(err, repo_id)
            if auth is not None:
                raise auth from None
            if not is_transient(err):
                raise
            if attempt == policy.max_tries:
                raise HubPushError(
                    f"{what} failed after {policy.max_tries} tries ({type(err).__name__}: {_short(err)}). The Hub "
                    "may be down or the connection unstable; run the same command again, it resumes."
                ) from err
            logger.warning("%s failed (%s); retry %d/%d in %.1f s", what, _short(err), attempt, policy.max_tries - 1,
                           delay)
            time.sleep(delay)
            delay = min(policy.max_delay, max(delay * 2, 1e-3))
    raise AssertionError("unreachable")


def _short(err: BaseException) -> str:
    return str(err).splitlines()[0][:200] if str(err) else type(err).__name__


# ----------------------------------------------------------------------------------------- the record
@dataclass
class ProtectionRecord:
    """Public record of a repo's protection, stored as ``poscuda.json`` next to the data (no secret in it).

    Args:
        key_id (`str`): public key id shared by every split.
        parameters (`dict`): the protection knobs, shared by every split.
        splits (`dict[str, dict[str, dict]]`): ``{config_name: {split: ProtectionSummary as dict}}``.
        evaluation (`dict`, *optional*): the evaluation report (only the setting matching ``parameters``).
        source (`dict`, *optional*): ``{"name", "is_hub", "attribution"}`` of the source dataset.
    """

    key_id: str
    parameters: dict[str, Any]
    splits: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    evaluation: dict[str, Any] | None = None
    source: dict[str, Any] | None = None

    def to_json(self) -> str:
        payload = {"format": _RECORD_FORMAT, "version": 1, "hf_poscuda_version": __version__, **asdict(self)}
        return json.dumps(payload, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ProtectionRecord:
        data = json.loads(text)
        if data.get("format") != _RECORD_FORMAT:
            raise ValueError(f"{PROTECTION_FILE} in this repo is not an hf-poscuda record.")
        return cls(
            data["key_id"], data["parameters"], data.get("splits", {}), data.get("evaluation"), data.get("source")
        )

    def summaries(self) -> dict[str, ProtectionSummary]:
        """All splits as summaries, named ``split`` (default config) or ``config/split``."""
        out = {}
        for config_name, splits in self.splits.items():
            for split, summary in splits.items():
                out[split if config_name == "default" else f"{config_name}/{split}"] = ProtectionSummary(**summary)
        return out


def _download_text(repo_id: str, filename: str, revision: str | None, token: str | None) -> str | None:
    """The current text of a repo file, or None if the repo or file does not exist. A branch that does not exist
    yet is read as ``main``, which it will be created from.

    Downloaded into a fresh temporary cache: a stale copy in the user's cache must never stand in for the Hub's.
    """
    import tempfile

    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    with tempfile.TemporaryDirectory(prefix="hf-poscuda-") as cache:
        try:
            path = hf_hub_download(
                repo_id, filename, repo_type="dataset", revision=revision, token=token, cache_dir=cache
            )
        except RevisionNotFoundError:
            return _download_text(repo_id, filename, None, token) if revision is not None else None
        except (EntryNotFoundError, RepositoryNotFoundError):
            return None
        return Path(path).read_text(encoding="utf-8")


def _fetch_record(repo_id: str, revision: str | None, token: str | None, policy: RetryPolicy) -> ProtectionRecord | None:
    text = call_with_retries(
        lambda: _download_text(repo_id, PROTECTION_FILE, revision, token), f"Reading {PROTECTION_FILE}", repo_id, policy
    )
    return ProtectionRecord.from_json(text) if text is not None else None


def _fetch_card_metadata(repo_id: str, revision: str | None, token: str | None, policy: RetryPolicy) -> dict[str, Any]:
    from huggingface_hub import DatasetCard

    text = call_with_retries(
        lambda: _download_text(repo_id, "README.md", revision, token), "Reading the dataset card", repo_id, policy
    )
    return DatasetCard(text).data.to_dict() if text is not None else {}


def scan_dataset_for_secret(dataset: Dataset, key: PosCUDAKey, what: str) -> None:
    """Raise :class:`~hf_poscuda.key.SecretLeakError` if any Arrow buffer of ``dataset`` holds the secret."""
    table = dataset.data.table
    for column_name, column in zip(table.column_names, table.columns, strict=True):
        for chunk in column.chunks:
            for buffer in chunk.buffers():
                if buffer is not None and buffer.size:
                    key.assert_not_in(memoryview(buffer).tobytes(), f"{what}, column {column_name!r}")


# ----------------------------------------------------------------------------------------------- push
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
        lines = [f"  {f.path}  {'~' if f.estimated else ''}{_size(f.size)}" for f in self.files]
        lines += [f"  commit: {m}" for m in self.commit_messages]
        return "\n".join(lines)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return f"{n} B"


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
    """

    repo_id: str
    revision: str
    url: str
    pushed: list[str]
    splits: dict[str, ProtectionSummary]
    card: str
    plan: PushPlan | None = None


def push_protected(
    protected: DatasetDict,
    summaries: Mapping[str, ProtectionSummary],
    repo_id: str,
    key: PosCUDAKey,
    *,
    license: str | None = None,
    source: str | None = None,
    source_is_hub: bool = False,
    pretty_name: str | None = None,
    attribution: str | None = None,
    evaluation_report: Mapping[str, Any] | None = None,
    tags: Sequence[str] = (),
    config_name: str = "default",
    private: bool | None = None,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    retry: RetryPolicy | None = None,
    dry_run: bool = False,
) -> PushResult:
    """Push protected splits (from :func:`~hf_poscuda.protect.protect_splits`) and their card to the Hub.

    Each split goes with ``Dataset.push_to_hub(split=...)``, so splits already in the repo stay. Then the card:
    the README that ``push_to_hub`` wrote is loaded, our metadata is merged in (its ``dataset_info`` and
    ``configs`` are kept) and our body is rendered for every protected split in the repo; README.md and
    ``poscuda.json`` are committed together. Re-pushing a split replaces it in place.

    Args:
        protected (`DatasetDict`): the protected splits to push.
        summaries (`Mapping[str, ProtectionSummary]`): their summaries (same keys).
        repo_id (`str`): ``"namespace/name"``.
        key (`PosCUDAKey`): the key they were protected with; used only to check that no byte of it is uploaded.
        license (`str`, *optional*): license id for the card; required unless the repo's card already has one.
        source, source_is_hub, pretty_name, attribution, tags: see :func:`~hf_poscuda.card.render_card`.
        evaluation_report (`Mapping`, *optional*): an ``hf-poscuda evaluate`` report with a setting that has the
            pushed parameters. Without one, a report pushed earlier to this repo is kept on the card.
        config_name (`str`, defaults to `"default"`): dataset config to push under.
        private (`bool`, *optional*): create the repo private (ignored, with a warning, if it exists already).
        token (`str`, *optional*): Hub token; default: ``HF_TOKEN`` or the saved login.
        revision (`str`, *optional*): branch to push to (created if needed); default ``main``.
        commit_message (`str`, *optional*): message of the data commits.
        retry (`RetryPolicy`, *optional*): retries of transient failures.
        dry_run (`bool`, defaults to `False`): do every check (secret scan, record and license on the Hub, card
            rendering) and return the :class:`PushPlan`, uploading nothing (the Hub is only read).

    Raises:
        ValueError: bad arguments, a repo protected with another key or other parameters, a report that does not
            match, or no license.
        HubAuthError: 401/403 from the Hub (the message says how to log in).
        HubPushError: the Hub kept failing after the retries.
        SecretLeakError: some data or text to upload contains the secret (nothing is uploaded).
    """
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.utils import validate_repo_id

    if "/" not in repo_id:
        raise ValueError(f"repo_id must be 'namespace/name', got {repo_id!r}.")
    validate_repo_id(repo_id)
    if not protected:
        raise ValueError("Nothing to push: no protected splits.")
    if set(protected) != set(summaries):
        raise ValueError(f"Splits {sorted(protected)} and summaries {sorted(summaries)} do not match.")
    key_ids = {s.key_id for s in summaries.values()}
    if key_ids != {key.key_id}:
        raise ValueError(f"The splits were protected with key id(s) {sorted(key_ids)}, not with the given key.")
    parameters = next(iter(summaries.values())).config
    # fail before uploading anything if the report did not measure these parameters
    entry = evaluation_for(evaluation_report, parameters) if evaluation_report is not None else None
    policy = retry or RetryPolicy()
    for name, split in protected.items():
        scan_dataset_for_secret(split, key, f"split {name!r}")

    record = _fetch_record(repo_id, revision, token, policy)
    if record is not None:
        if record.key_id != key.key_id:
            raise ValueError(
                f"{repo_id} holds splits protected with key id {record.key_id}; this push uses key id {key.key_id}. "
                "Push with the same key, or to a new repo."
            )
        if record.parameters != parameters:
            raise ValueError(
                f"{repo_id} holds splits protected with other parameters; mixing parameters in one repo would make "
                "its card wrong. Push with the same preset/knobs, or to a new repo."
            )
    else:
        record = ProtectionRecord(key.key_id, dict(parameters))

    license = license or _fetch_card_metadata(repo_id, revision, token, policy).get("license")
    if not license:
        raise ValueError(
            "The dataset card needs a license and the source's license is unknown: pass --license with the source "
            "dataset's license id (e.g. cc-by-4.0). Nothing was pushed."
        )
    api = HfApi(token=token)
    repo_exists = call_with_retries(
        lambda: api.repo_exists(repo_id, repo_type="dataset"), "Checking the repo", repo_id, policy
    )
    if repo_exists and private is not None:
        logger.warning("%s exists already; --private is ignored (change visibility in the repo settings).", repo_id)
    # Everything the card and the record will say is known now: fill the record and render the card once before
    # uploading anything, so that a bad card (or a secret in it) stops the push before any data leaves.
    for name in protected:
        record.splits.setdefault(config_name, {})[name] = summaries[name].to_dict()
    if evaluation_report is not None:
        record.evaluation = {**{k: v for k, v in evaluation_report.items() if k != "settings"}, "settings": [entry]}
    if source is not None:
        record.source = {"name": source, "is_hub": source_is_hub, "attribution": attribution}
    elif record.source is not None:  # a later push of another split: keep what the first push said
        source, source_is_hub = record.source["name"], record.source["is_hub"]
        attribution = attribution or record.source.get("attribution")

    def card_for(existing: dict[str, Any]) -> str:
        return render_card(
            record.summaries(), license=license, repo_id=repo_id, config_name=config_name, source=source,
            source_is_hub=source_is_hub, pretty_name=pretty_name or existing.get("pretty_name"),
            attribution=attribution, evaluation_report=record.evaluation, tags=tags, existing_metadata=existing,
            key=key, figure=FIGURE_FILE if chart is not None else None,
        )

    chart = evaluation_chart(record.evaluation["settings"][0]) if record.evaluation else None
    if chart is not None:
        key.assert_not_in(chart, FIGURE_FILE)
    card = card_for({})
    key.assert_not_in(record.to_json().encode(), PROTECTION_FILE)
    messages = {name: commit_message or f"Upload PosCUDA-protected split {name}" for name in protected}
    if dry_run:
        card = card_for(_fetch_card_metadata(repo_id, revision, token, policy)) if repo_exists else card
        plan = PushPlan(repo_exists, _planned_files(protected, config_name, card, record.to_json(), chart),
                        [*messages.values(), _CARD_COMMIT], record.to_json(), chart)
        logger.info("Dry run: nothing uploaded to %s", repo_id)
        return PushResult(repo_id, revision or "main", f"{api.endpoint}/datasets/{repo_id}", [], record.summaries(),
                          card, plan)

    for name, split in protected.items():
        message = messages[name]
        logger.info("Pushing split %s (%d rows) to %s", name, len(split), repo_id)
        call_with_retries(
            lambda split=split, name=name, message=message: split.push_to_hub(
                repo_id, config_name=config_name, split=name, private=private, token=token, revision=revision,
                commit_message=message,
            ),
            f"Pushing split {name!r}",
            repo_id,
            policy,
        )
    card = card_for(_fetch_card_metadata(repo_id, revision, token, policy))  # with push_to_hub's dataset_info
    record_text = record.to_json()
    key.assert_not_in(record_text.encode(), PROTECTION_FILE)
    operations = [
        CommitOperationAdd("README.md", card.encode("utf-8")),
        CommitOperationAdd(PROTECTION_FILE, record_text.encode("utf-8")),
    ]
    if chart is not None:
        operations.append(CommitOperationAdd(FIGURE_FILE, chart))
    call_with_retries(
        lambda: api.create_commit(
            repo_id, operations=[CommitOperationAdd(o.path_in_repo, o.path_or_fileobj) for o in operations],
            # fresh operation objects on every try: huggingface_hub refuses to reuse committed ones
            commit_message=_CARD_COMMIT, repo_type="dataset", revision=revision,
        ),
        "Pushing the dataset card",
        repo_id,
        policy,
    )
    url = f"{api.endpoint}/datasets/{repo_id}"
    logger.info("Pushed %s to %s", list(protected), url)
    return PushResult(repo_id, revision or "main", url, list(protected), record.summaries(), card)


_CARD_COMMIT = "Update the PosCUDA dataset card"
_MAX_SHARD_BYTES = 500 * 10**6  # Dataset.push_to_hub's default max_shard_size


def _planned_files(
    protected: DatasetDict, config_name: str, card: str, record: str, chart: bytes | None
) -> list[PlannedFile]:
    """The files a push writes: ``push_to_hub``'s Parquet shards per split (sizes estimated from the Arrow data;
    the audio bytes dominate and Parquet does not shrink them), README.md and the record."""
    import math

    prefix = "data" if config_name == "default" else config_name
    files = []
    for name, split in protected.items():
        size = int(split.data.nbytes)
        shards = max(1, math.ceil(size / _MAX_SHARD_BYTES))
        files += [PlannedFile(f"{prefix}/{name}-{i:05d}-of-{shards:05d}.parquet", size // shards, estimated=True)
                  for i in range(shards)]
    files += [PlannedFile("README.md", len(card.encode())), PlannedFile(PROTECTION_FILE, len(record.encode()))]
    if chart is not None:
        files.append(PlannedFile(FIGURE_FILE, len(chart)))
    return files


def check_key_outside(key_path: str | os.PathLike[str], folder: str | os.PathLike[str], action: str) -> None:
    """Refuse when the key file lies inside ``folder`` (which is about to be uploaded or written)."""
    key_file = Path(key_path).resolve()
    root = Path(folder).resolve()
    if key_file == root or root in key_file.parents:
        raise ValueError(
            f"The key file lies inside {str(folder)!r}, which is about to be {action}. Move the key out of that "
            "folder first (and keep it private)."
        )
