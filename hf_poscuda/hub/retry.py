"""Retries of transient Hub failures where ``huggingface_hub`` does not retry by itself (commit POSTs, a whole
``push_to_hub``), honouring ``Retry-After``; 401/403 become :class:`~hf_poscuda.errors.HubAuthError` with advice.

``huggingface_hub`` already retries its LFS transfers and preupload calls (``http_backoff``, which honours
``Retry-After``); this module wraps only the calls it leaves alone.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from ..errors import HubAuthError, HubPushError

logger = logging.getLogger(__name__)

_TRANSIENT_STATUS = (408, 429, 500, 502, 503, 504)
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How transient Hub failures are retried.

    Args:
        max_tries (`int`, defaults to `5`): attempts per step, including the first.
        initial_delay (`float`, defaults to `1.0`): seconds before the first retry; doubled each time.
        max_delay (`float`, defaults to `30.0`): cap on one wait (a server's ``Retry-After`` may ask for more, up to
            ``max_retry_after``).
        max_retry_after (`float`, defaults to `300.0`): the longest ``Retry-After`` that is honoured as asked.
    """

    max_tries: int = 5
    initial_delay: float = 1.0
    max_delay: float = 30.0
    max_retry_after: float = 300.0

    def __post_init__(self) -> None:
        if not isinstance(self.max_tries, int) or self.max_tries < 1:
            raise ValueError(f"max_tries must be an int >= 1, got {self.max_tries!r}.")
        if not self.initial_delay >= 0 or not self.max_delay >= self.initial_delay:
            raise ValueError("Need 0 <= initial_delay <= max_delay.")
        if not self.max_retry_after >= 0:
            raise ValueError(f"max_retry_after must be >= 0, got {self.max_retry_after!r}.")


def _status(err: BaseException) -> int | None:
    response = getattr(err, "response", None)
    return getattr(response, "status_code", None)


def retry_after(err: BaseException) -> float | None:
    """Seconds a ``Retry-After: <seconds>`` header of the error's response asks to wait (``None`` when absent or a
    date, which ``huggingface_hub`` does not parse either)."""
    headers = getattr(getattr(err, "response", None), "headers", None) or {}
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    if value is None:
        return None
    try:
        seconds = float(str(value).strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def is_transient(err: BaseException) -> bool:
    """Whether an error is worth retrying: HTTP 408/429/5xx or a network failure (dropped connection, timeout)."""
    if _status(err) in _TRANSIENT_STATUS:
        return True
    network = _network_errors()
    seen: set[int] = set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:  # datasets/huggingface_hub sometimes wrap the network error
        seen.add(id(e))
        if isinstance(e, network) or _status(e) in _TRANSIENT_STATUS:
            return True
        e = e.__cause__ or e.__context__
    return False


def _network_errors() -> tuple[type[BaseException], ...]:
    """Connection-level failures: the OS's, and the HTTP client's (huggingface_hub uses httpx, or its fork httpx2)."""
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
    """Call ``fn``; retry transient failures with exponential back-off (or the server's ``Retry-After``); turn
    401/403 into :class:`~hf_poscuda.errors.HubAuthError`.

    Raises:
        HubPushError: still failing after ``policy.max_tries`` attempts.
    """
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
            asked = retry_after(err)
            wait = min(asked, policy.max_retry_after) if asked is not None else delay
            logger.warning("%s failed (%s); retry %d/%d in %.1f s%s", what, _short(err), attempt, policy.max_tries - 1,
                           wait, " (Retry-After)" if asked is not None else "")
            time.sleep(wait)
            delay = min(policy.max_delay, max(delay * 2, 1e-3))
    raise AssertionError("unreachable")


def _short(err: BaseException) -> str:
    return str(err).splitlines()[0][:200] if str(err) else type(err).__name__
