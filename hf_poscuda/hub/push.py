"""Push protected splits held in memory (``DatasetDict``) with ``Dataset.push_to_hub``, then the card.

Order of work (see :func:`push_protected`): check that no byte of the secret is in the data, push each split with
``Dataset.push_to_hub`` (which keeps the repo's other splits and writes ``dataset_info``/``configs`` into the
README), then load that README, merge our metadata into it, render our body and commit it together with
``poscuda.json``. For data larger than memory, see :mod:`hf_poscuda.hub.shards`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from datasets import DatasetDict

from ..figures import FIGURE_FILE
from ..key import PosCUDAKey
from ..leaks import scan_dataset_for_secret
from ..protect import ProtectionSummary
from .plan import (
    CARD_COMMIT,
    CardInputs,
    PushPlan,
    PushResult,
    check_repo_id,
    checked_record_text,
    fill_card_inputs,
    merge_record,
    planned_files,
    record_chart,
    repo_card,
    require_license,
)
from .record import PROTECTION_FILE, fetch_card_metadata, fetch_record
from .retry import RetryPolicy, call_with_retries

logger = logging.getLogger(__name__)


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
        source (`str`, *optional*): the source dataset (a Hub id, or a local folder's name).
        source_is_hub (`bool`, defaults to `False`): whether ``source`` is a Hub id (then it is linked).
        pretty_name (`str`, *optional*): title of the card.
        attribution (`str`, *optional*): extra attribution text required by the source's license.
        tags (`Sequence[str]`, defaults to `()`): extra tags.
        evaluation_report (`Mapping`, *optional*): an ``hf-poscuda evaluate`` report with a setting that has the
            pushed parameters. Without one, a report pushed earlier to this repo is kept on the card.
        config_name (`str`, defaults to `"default"`): dataset config to push under.
        private (`bool`, *optional*): create the repo private (ignored, with a warning, if it exists already).
        token (`str`, *optional*): Hub token; default: ``HF_TOKEN`` or the saved login.
        revision (`str`, *optional*): branch to push to (created if needed); default ``main``.
        commit_message (`str`, *optional*): message of the data commits.
        retry (`RetryPolicy`, *optional*): retries of transient failures. ``push_to_hub`` does not retry its commit
            POST, so a split's whole ``push_to_hub`` is retried (files already uploaded are not sent again: the Hub
            answers that it has them).
        dry_run (`bool`, defaults to `False`): do every check (secret scan, record and license on the Hub, card
            rendering) and return the :class:`~hf_poscuda.hub.plan.PushPlan`, uploading nothing (the Hub is only
            read).

    Raises:
        ValueError: bad arguments, a repo protected with another key or other parameters, a report that does not
            match, or no license.
        HubAuthError: 401/403 from the Hub (the message says how to log in).
        HubPushError: the Hub kept failing after the retries.
        SecretLeakError: some data or text to upload contains the secret (nothing is uploaded).
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    check_repo_id(repo_id)
    if not protected:
        raise ValueError("Nothing to push: no protected splits.")
    if set(protected) != set(summaries):
        raise ValueError(f"Splits {sorted(protected)} and summaries {sorted(summaries)} do not match.")
    key_ids = {s.key_id for s in summaries.values()}
    if key_ids != {key.key_id}:
        raise ValueError(f"The splits were protected with key id(s) {sorted(key_ids)}, not with the given key.")
    parameters = next(iter(summaries.values())).config
    inputs = CardInputs(license, source, source_is_hub, pretty_name, attribution, tags, evaluation_report)
    if evaluation_report is not None:  # fail before uploading anything if the report did not measure these
        from ..card import evaluation_for

        evaluation_for(evaluation_report, parameters)
    policy = retry or RetryPolicy()
    for name, split in protected.items():
        scan_dataset_for_secret(split, key, f"split {name!r}")

    record, abandoned = merge_record(fetch_record(repo_id, revision, token, policy), repo_id, key, parameters)
    license = require_license(license or fetch_card_metadata(repo_id, revision, token, policy).get("license"))
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
        record.set_progress(config_name, name, None)  # push_to_hub replaces a sharded push of this split
    inputs = fill_card_inputs(record, inputs)
    chart = record_chart(record, key)

    def card_for(existing: Mapping[str, Any]) -> str:
        return repo_card(record, inputs, license=license, repo_id=repo_id, config_name=config_name,
                         existing=existing, key=key, with_figure=chart is not None)

    card = card_for({})
    record_text = checked_record_text(record, key)
    messages = {name: commit_message or f"Upload PosCUDA-protected split {name}" for name in protected}
    if dry_run:
        card = card_for(fetch_card_metadata(repo_id, revision, token, policy)) if repo_exists else card
        sizes = {name: int(split.data.nbytes) for name, split in protected.items()}
        plan = PushPlan(repo_exists, planned_files(sizes, config_name, card, record_text, chart),
                        [*messages.values(), CARD_COMMIT], record_text, chart)
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
    card = card_for(fetch_card_metadata(repo_id, revision, token, policy))  # with push_to_hub's dataset_info
    files = {"README.md": card.encode("utf-8"), PROTECTION_FILE: record_text.encode("utf-8")}
    if chart is not None:
        files[FIGURE_FILE] = chart
    if abandoned:  # shards an interrupted push with another key or other parameters left
        present = set(call_with_retries(lambda: api.list_repo_files(repo_id, repo_type="dataset", revision=revision),
                                        "Listing the repo", repo_id, policy))
        abandoned = [f for f in abandoned if f in present]
    call_with_retries(
        lambda: api.create_commit(
            repo_id, operations=[*(CommitOperationAdd(path, data) for path, data in files.items()),
                                 *(CommitOperationDelete(f) for f in abandoned)],
            # fresh operation objects on every try: huggingface_hub refuses to reuse committed ones
            commit_message=CARD_COMMIT, repo_type="dataset", revision=revision,
        ),
        "Pushing the dataset card",
        repo_id,
        policy,
    )
    url = f"{api.endpoint}/datasets/{repo_id}"
    logger.info("Pushed %s to %s", list(protected), url)
    return PushResult(repo_id, revision or "main", url, list(protected), record.summaries(), card)
