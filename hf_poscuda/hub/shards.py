"""Push a split larger than memory or disk: protected Parquet shards are uploaded as they are made, committed a
few at a time, and a re-run resumes after the last committed shard.

Each shard is scanned for the secret, pre-uploaded (``HfApi.preupload_lfs_files``) and freed, so one shard is in
memory at a time and nothing is kept on disk. Every ``commit_every`` shards one commit adds them together with
``poscuda.json``, whose upload progress lists each committed shard (path, rows, SHA-256) under the stream's
fingerprint. A re-run with the same fingerprint checks those shards on the Hub, skips their rows without reading
or protecting them again where the engine can, and goes on; the last commit deletes the split's older data
files and adds the card. Between the first and the last commit, the split's files on the Hub are a mix of the
new shards and the files the repo had before (as with a multi-commit ``push_to_hub``).
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Sequence
from typing import Any

from tqdm.auto import tqdm

from ..figures import FIGURE_FILE
from ..key import PosCUDAKey
from ..leaks import scan_table_for_secret
from ..protect import ProtectionSummary
from ..shards import MAX_SHARD_BYTES, ProtectedStream, check_shard_sizes, iter_shards, parquet_bytes
from .plan import (
    CARD_COMMIT,
    CardInputs,
    PushResult,
    check_repo_id,
    checked_record_text,
    data_prefix,
    fill_card_inputs,
    merge_record,
    record_chart,
    repo_card,
    require_license,
    with_data_files,
)
from .record import PROTECTION_FILE, ShardUpload, UploadProgress, fetch_card_metadata, fetch_record
from .retry import RetryPolicy, call_with_retries

logger = logging.getLogger(__name__)


def push_stream(
    stream: ProtectedStream,
    repo_id: str,
    key: PosCUDAKey,
    *,
    card: CardInputs | None = None,
    config_name: str = "default",
    private: bool | None = None,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    rows_per_shard: int | None = None,
    max_shard_bytes: int = MAX_SHARD_BYTES,
    commit_every: int = 20,
    retry: RetryPolicy | None = None,
) -> PushResult:
    """Push one protected split, shard by shard, and the card; resumable (see the module docstring).

    Args:
        stream (`ProtectedStream`): the split, from :func:`hf_poscuda.streaming.protected_stream` or
            :func:`hf_poscuda.ray_engine.ray_stream`.
        repo_id (`str`): ``"namespace/name"``.
        key (`PosCUDAKey`): the key the stream protects with; used to check that no byte of it is uploaded.
        card (`CardInputs`, *optional*): license, source, title, attribution, tags and evaluation report.
        config_name (`str`, defaults to `"default"`): dataset config to push under.
        private (`bool`, *optional*): create the repo private (ignored, with a warning, if it exists already).
        token (`str`, *optional*), revision (`str`, *optional*): Hub token and branch (created if needed).
        commit_message (`str`, *optional*): message of the data commits.
        rows_per_shard (`int`, *optional*), max_shard_bytes (`int`, defaults to 500 MB): shard size limits.
        commit_every (`int`, defaults to `20`): shards per commit (the card commit takes the rest).
        retry (`RetryPolicy`, *optional*): retries of commits and reads (``huggingface_hub`` retries the uploads).

    Raises:
        ValueError: bad arguments or input (before anything is uploaded), a repo protected with another key or
            other parameters, a report that does not match, or no license.
        HubAuthError, HubPushError, SecretLeakError: as for :func:`~hf_poscuda.hub.push.push_protected`.
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    check_repo_id(repo_id)
    if commit_every < 1:
        raise ValueError(f"commit_every must be >= 1, got {commit_every}.")
    check_shard_sizes(rows_per_shard, max_shard_bytes)
    if stream.key_id != key.key_id:
        raise ValueError(f"The stream protects with key id {stream.key_id}, not with the given key.")
    card = card or CardInputs()
    policy = retry or RetryPolicy()
    name = stream.split
    record, abandoned = merge_record(fetch_record(repo_id, revision, token, policy), repo_id, key, stream.config)
    license = require_license(card.license or fetch_card_metadata(repo_id, revision, token, policy).get("license"))
    inputs = fill_card_inputs(record, card)
    chart = record_chart(record, key)
    api = HfApi(token=token)

    progress = record.progress(config_name, name)
    if progress is not None and progress.fingerprint != stream.fingerprint:
        logger.info("The repo's upload of split %s came from other data or settings; starting it over.", name)
        progress = None
    if progress is None:
        progress = UploadProgress(stream.fingerprint)
    else:
        progress = _still_there(api, repo_id, revision, progress, policy)
    skipped = len(progress.shards)
    stream.check()  # every label, and rows to push: before the repo is created or anything uploaded
    figures = stream.sample()
    tables = iter(()) if progress.complete else stream.tables(progress.rows)
    if progress.complete:
        logger.info("Split %s is on the Hub already (%d shards); only the card is updated.", name, skipped)

    def summary() -> ProtectionSummary:
        seconds = sum(s.seconds for s in progress.shards)
        clips = progress.rows
        classes = {c for s in progress.shards for c in s.classes}
        return ProtectionSummary(
            clips=clips, classes=len(classes), seconds=seconds,
            clips_per_second=clips / seconds if seconds > 0 else math.inf, snr_db=figures.snr_db,
            snr_clips=figures.snr_clips, key_id=key.key_id, label_names=stream.label_names, config=stream.config,
            quality=figures.quality, output_format=stream.output_format,
        )

    def card_for(existing: dict[str, Any]) -> str:
        return repo_card(record, inputs, license=license, repo_id=repo_id, config_name=config_name,
                         existing=with_data_files(existing, config_name, name, stream.features, progress.rows,
                                                  sum(s.nbytes for s in progress.shards)), key=key,
                         with_figure=chart is not None)

    previous = record.splits.get(config_name, {}).get(name)
    record.splits.setdefault(config_name, {})[name] = summary().to_dict()
    card_for({})  # a bad card (or a secret in it) stops the push before any data leaves
    if previous is None:
        del record.splits[config_name][name]
        if not record.splits[config_name]:
            del record.splits[config_name]
    else:
        record.splits[config_name][name] = previous

    if private is not None and call_with_retries(lambda: api.repo_exists(repo_id, repo_type="dataset"),
                                                 "Checking the repo", repo_id, policy):
        logger.warning("%s exists already; --private is ignored (change visibility in the repo settings).", repo_id)
    call_with_retries(lambda: api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True),
                      "Creating the repo", repo_id, policy)
    if revision is not None:
        call_with_retries(lambda: api.create_branch(repo_id, branch=revision, repo_type="dataset", exist_ok=True),
                          f"Creating branch {revision!r}", repo_id, policy)
    prefix = data_prefix(config_name)
    message = commit_message or f"Upload PosCUDA-protected split {name}"
    pending: list[Any] = []
    if abandoned:  # an interrupted push with another key or other parameters: its shards go with the first commit,
        # together with the record that forgets them, so that no later interruption can orphan them
        present = set(call_with_retries(lambda: api.list_repo_files(repo_id, repo_type="dataset", revision=revision),
                                        "Listing the repo", repo_id, policy))
        pending += [CommitOperationDelete(f) for f in abandoned if f in present]

    def commit(operations: list[Any], text: str) -> None:
        added = {o.path_in_repo for o in operations if isinstance(o, CommitOperationAdd)}
        operations = [o for o in operations if not (isinstance(o, CommitOperationDelete) and o.path_in_repo in added)]
        call_with_retries(
            lambda: api.create_commit(repo_id, operations=operations, commit_message=text, repo_type="dataset",
                                      revision=revision),
            text, repo_id, policy,
        )

    total = stream.num_rows
    bar = tqdm(total=total, initial=progress.rows, unit="clips", desc=f"PosCUDA pushing {name}", disable=None)
    started = time.perf_counter()
    uploaded = 0
    for table in iter_shards(tables, stream.features.arrow_schema, rows_per_shard, max_shard_bytes):
        index = len(progress.shards)
        where = f"shard {index} of split {name!r}"
        scan_table_for_secret(table, key, where)
        data = parquet_bytes(table, stream.features)
        key.assert_not_in(data, where)
        path = f"{prefix}/{name}-{index:05d}.parquet"
        operation = CommitOperationAdd(path, data)
        digest = hashlib.sha256(data).hexdigest()
        del data
        # huggingface_hub retries the transfer itself; one try here turns a 401/403 into advice
        call_with_retries(lambda: api.preupload_lfs_files(repo_id, [operation], repo_type="dataset",
                                                          revision=revision),
                          f"Uploading {path}", repo_id, RetryPolicy(max_tries=1))
        now = time.perf_counter()
        progress.shards.append(ShardUpload(path, table.num_rows, digest, now - started,
                                           stream.class_indices(table), int(table.nbytes)))
        started, uploaded = now, uploaded + 1
        bar.update(table.num_rows)
        pending.append(operation)
        if sum(isinstance(o, CommitOperationAdd) for o in pending) >= commit_every:
            record.set_progress(config_name, name, progress)
            commit([*pending, CommitOperationAdd(PROTECTION_FILE, checked_record_text(record, key).encode())],
                   f"{message} (shards up to {index:05d})")
            pending = []
    bar.close()
    if not progress.shards:
        raise ValueError(f"Split {name!r} has no rows: there is nothing to push. Check the split name and filters.")

    progress.complete = True
    record.set_progress(config_name, name, progress)
    record.splits.setdefault(config_name, {})[name] = summary().to_dict()
    ours = {s.path for s in progress.shards}
    existing_files = call_with_retries(lambda: api.list_repo_files(repo_id, repo_type="dataset", revision=revision),
                                       "Listing the repo", repo_id, policy)
    deleting = {o.path_in_repo for o in pending if isinstance(o, CommitOperationDelete)}
    stale = [f for f in existing_files if f.startswith(f"{prefix}/{name}-") and f not in ours and f not in deleting]
    text = card_for(fetch_card_metadata(repo_id, revision, token, policy))
    operations = [*pending, *(CommitOperationDelete(f) for f in stale),
                  CommitOperationAdd("README.md", text.encode("utf-8")),
                  CommitOperationAdd(PROTECTION_FILE, checked_record_text(record, key).encode("utf-8"))]
    if chart is not None:
        operations.append(CommitOperationAdd(FIGURE_FILE, chart))
    uploads = any(isinstance(o, CommitOperationAdd) for o in pending)
    commit(operations, f"{message}; {CARD_COMMIT[0].lower()}{CARD_COMMIT[1:]}" if uploads else CARD_COMMIT)
    url = f"{api.endpoint}/datasets/{repo_id}"
    logger.info("Pushed split %s to %s: %d shards uploaded, %d already there", name, url, uploaded, skipped)
    return PushResult(repo_id, revision or "main", url, [name], record.summaries(), text,
                      shards_uploaded=uploaded, shards_skipped=skipped, files=sorted(ours))


def push_streams(streams: Sequence[ProtectedStream], repo_id: str, key: PosCUDAKey, **options: Any) -> list[PushResult]:
    """Push several splits with :func:`push_stream`, after checking every split's labels first, so that a bad label
    in the last split stops the push before the first one is uploaded.

    Args:
        streams (`Sequence[ProtectedStream]`): one per split (distinct split names).
        repo_id (`str`), key (`PosCUDAKey`), options: as for :func:`push_stream`.
    """
    names = [s.split for s in streams]
    if len(set(names)) != len(names):
        raise ValueError(f"Each split can be pushed once; got {names}.")
    for stream in streams:
        stream.check()
    return [push_stream(stream, repo_id, key, **options) for stream in streams]


def _still_there(
    api: Any, repo_id: str, revision: str | None, progress: UploadProgress, policy: RetryPolicy
) -> UploadProgress:
    """The recorded shards that are on the Hub unchanged (same SHA-256), up to the first that is not. A branch that
    does not exist yet (its record was read from ``main``) has none."""
    from huggingface_hub.errors import RevisionNotFoundError

    paths = [s.path for s in progress.shards]
    try:
        infos = call_with_retries(
            lambda: api.get_paths_info(repo_id, paths, repo_type="dataset", revision=revision), "Checking shards",
            repo_id, policy,
        ) if paths else []
    except RevisionNotFoundError:
        return UploadProgress(progress.fingerprint)
    found = {i.path: getattr(getattr(i, "lfs", None), "sha256", None) for i in infos}
    kept = []
    for shard in progress.shards:
        if found.get(shard.path) != shard.sha256:
            logger.warning("Shard %s is not on the Hub as recorded; the push resumes from there.", shard.path)
            break
        kept.append(shard)
    complete = progress.complete and len(kept) == len(progress.shards)
    return UploadProgress(progress.fingerprint, kept, complete)
