"""The typed errors hf-poscuda raises, in one place (messages say what was expected and how to fix it)."""

from __future__ import annotations


class KeyFileError(ValueError):
    """A key file is missing, readable by other users, or not a PosCUDA key file."""


class SecretLeakError(RuntimeError):
    """Something about to be written or uploaded contains the secret key (the message never contains it)."""


class HubPushError(RuntimeError):
    """The push failed on the Hub side (after retries, for transient errors)."""


class HubAuthError(HubPushError, PermissionError):
    """The Hub rejected the credentials (401) or the token cannot write to the repo (403)."""
