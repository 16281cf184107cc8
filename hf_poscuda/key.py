"""The private PosCUDA key: 256 secret bits, a public key id, and every per-class parameter derived from them.

The secret never appears in ``repr``/``str``, logs, errors or cache file names. Everything random in the package
comes from :meth:`PosCUDAKey.uniform`, a counter-mode HMAC-SHA256 stream, so results are bit-identical on every
machine, library version, batch size and number of processes.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import stat
from pathlib import Path
from typing import Any

import numpy as np

from .designed import DesignedSignature
from .errors import KeyFileError, SecretLeakError

__all__ = ["KeyFileError", "PosCUDAKey", "SecretLeakError"]

logger = logging.getLogger(__name__)

_SECRET_BYTES = 32
_FILE_HEADER = "hf-poscuda-key v1"
_FILE_HEADER_V2 = "hf-poscuda-key v2"  # v1 plus a third line: the designed signature table (JSON)
_KEY_ID_CONTEXT = b"hf-poscuda/key-id/v1"


class PosCUDAKey:
    """A PosCUDA private key.

    Create one with :meth:`generate`, persist it with :meth:`save` (file mode ``0600``) and read it back with
    :meth:`load`. Only :attr:`key_id`, a one-way hash of the secret, is safe to publish (for example on a dataset
    card, so the owner can later show which key protected a dataset).

    A key may also carry a :class:`~hf_poscuda.designed.DesignedSignature` (:attr:`design`, added by
    ``hf-poscuda design``): each class's static barcode gains, optimised against surrogate models, which
    ``PosCUDAConfig(signature="designed")`` uses. It is as private as the secret and is saved in the same file
    (format v2). The key id depends on the secret alone; the design has its own public ``design_id``.

    Example:

    ```py
    >>> from hf_poscuda import PosCUDAKey
    >>> key = PosCUDAKey.generate()
    >>> len(key.key_id)
    16
    >>> "secret" in repr(key)
    False
    ```
    """

    __slots__ = ("_design", "_secret")

    def __init__(self, secret: bytes, design: DesignedSignature | None = None) -> None:
        if not isinstance(secret, (bytes, bytearray)) or len(secret) != _SECRET_BYTES:
            raise ValueError(
                f"A PosCUDA key secret must be exactly {_SECRET_BYTES} bytes; got "
                f"{type(secret).__name__} of length {len(secret) if hasattr(secret, '__len__') else 'n/a'}. "
                "Use PosCUDAKey.generate() or PosCUDAKey.load(path)."
            )
        if design is not None and not isinstance(design, DesignedSignature):
            raise TypeError(f"design must be a DesignedSignature, got {type(design).__name__}.")
        self._secret = bytes(secret)
        self._design = design

    @property
    def design(self) -> DesignedSignature | None:
        """The designed signature table this key carries, if any (private, like the secret)."""
        return self._design

    def with_design(self, design: DesignedSignature | None) -> PosCUDAKey:
        """The same secret with ``design`` (``None``: without one)."""
        return PosCUDAKey(self._secret, design)

    # ------------------------------------------------------------------ creation and files
    @classmethod
    def generate(cls) -> PosCUDAKey:
        """Return a new key with 256 bits from the operating system's CSPRNG (`secrets`)."""
        return cls(secrets.token_bytes(_SECRET_BYTES))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PosCUDAKey:
        """Load a key file written by :meth:`save`.

        Args:
            path (`str` or `os.PathLike`): the key file.

        Raises:
            KeyFileError (a `ValueError`): the file is missing, readable or writable by group/others, or not a key.
        """
        p = Path(path)
        if not p.is_file():
            raise KeyFileError(
                f"Key file {str(p)!r} does not exist. Create one with `hf-poscuda keygen {p}` "
                "or PosCUDAKey.generate().save(path)."
            )
        mode = stat.S_IMODE(p.stat().st_mode)
        if mode & 0o077:
            raise KeyFileError(
                f"Key file {str(p)!r} has permissions {oct(mode)}, so other users can access it; a key must be "
                f"private (0600). Fix it with `chmod 600 {p}`, and generate a new key if others may have read it."
            )
        lines = p.read_bytes().decode("ascii", errors="replace").splitlines()
        header = lines[0].strip() if lines else ""
        v2 = header == _FILE_HEADER_V2 and len(lines) == 3
        if not v2 and (header != _FILE_HEADER or len([line for line in lines if line.strip()]) != 2):
            raise KeyFileError(
                f"File {str(p)!r} is not an hf-poscuda key file (expected a first line {_FILE_HEADER!r} and one line "
                f"of {2 * _SECRET_BYTES} hex digits). Create keys with `hf-poscuda keygen`."
            )
        design = None
        if v2:
            try:
                design = DesignedSignature.from_json(lines[2])
            except (ValueError, KeyError, TypeError):
                raise KeyFileError(
                    f"Key file {str(p)!r} has a damaged designed-signature line. Restore it from a backup, or run "
                    "`hf-poscuda design` again."
                ) from None
        try:
            secret = bytes.fromhex(lines[1].strip())
        except ValueError:
            secret = b""
        if len(secret) != _SECRET_BYTES:
            raise KeyFileError(
                f"File {str(p)!r} has an hf-poscuda header but its secret is not {2 * _SECRET_BYTES} hex digits; "
                "the file is damaged. Restore it from a backup."
            )
        return cls(secret, design)

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the key to ``path``, created with mode ``0600`` (never world- or group-readable).

        Args:
            path (`str` or `os.PathLike`): where to write.
            overwrite (`bool`, defaults to `False`): replace an existing file. Off by default: losing a key
                means losing the ability to prove ownership of the protected data.
        """
        p = Path(path)
        flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
        try:
            fd = os.open(p, flags, 0o600)
        except FileExistsError:
            raise KeyFileError(
                f"Key file {str(p)!r} already exists; refusing to overwrite it. Pass overwrite=True "
                "(CLI: --force) or choose another path."
            ) from None
        try:
            os.fchmod(fd, 0o600)  # O_CREAT's mode is masked by umask and ignored for existing files
            if self._design is None:
                os.write(fd, f"{_FILE_HEADER}\n{self._secret.hex()}\n".encode("ascii"))
            else:
                os.write(fd, f"{_FILE_HEADER_V2}\n{self._secret.hex()}\n{self._design.to_json()}\n".encode("ascii"))
        finally:
            os.close(fd)
        logger.info("Saved PosCUDA key %s to %s", self.key_id, p)
        return p

    def save_replacing(self, path: str | os.PathLike[str]) -> Path:
        """Write the key to ``path`` (mode ``0600``), replacing an existing file atomically (a temporary file in the
        same folder, then a rename), so a key file is never left half-written."""
        p = Path(path)
        tmp = p.with_name(f".{p.name}.{secrets.token_hex(4)}.tmp")
        self.save(tmp)
        os.replace(tmp, p)
        return p

    def decoy_of(self, key: PosCUDAKey) -> PosCUDAKey:
        """This (public decoy) key, given a design like ``key``'s when ``key`` has one: the same gain values with
        classes and bands shuffled by this key, so a designed signature is compared with unrelated designed ones."""
        if key.design is None:
            return self
        design = key.design
        order = np.argsort(self.uniform("decoy-design/classes", 0, design.num_classes), kind="stable")
        bands = np.argsort(self.uniform("decoy-design/bands", 0, design.num_bands), kind="stable")
        return self.with_design(design.shuffled(order, bands))

    # ------------------------------------------------------------------ leak checks
    def secret_forms(self) -> tuple[bytes, ...]:
        """Every encoding of the secret worth scanning for: raw, hex (both cases), base64 and base64url
        (padded or not), and the key file's own line."""
        import base64

        forms = {self._secret, self._secret.hex().encode(), self._secret.hex().upper().encode()}
        for encoded in (base64.b64encode(self._secret), base64.urlsafe_b64encode(self._secret)):
            forms |= {encoded, encoded.rstrip(b"=")}
        return tuple(sorted(forms))

    def appears_in(self, data: bytes) -> bool:
        """Whether any form of the secret (see :meth:`secret_forms`) occurs in ``data``."""
        return any(form in data for form in self.secret_forms())

    def assert_not_in(self, data: bytes, what: str) -> None:
        """Raise :class:`SecretLeakError` if ``data`` holds the secret in any form; ``what`` names the data."""
        if self.appears_in(data):
            raise SecretLeakError(
                f"Refusing to continue: {what} contains the private key (key id {self.key_id}). Nothing was uploaded "
                "from it. Do not put the key in dataset columns, card text or file names."
            )

    # ------------------------------------------------------------------ public identity
    @property
    def key_id(self) -> str:
        """A public identifier: the first 16 hex digits of SHA-256 over a context string and the secret."""
        return hashlib.sha256(_KEY_ID_CONTEXT + self._secret).hexdigest()[:16]

    def __repr__(self) -> str:
        design = "" if self._design is None else f", design_id={self._design.design_id!r}"
        return f"PosCUDAKey(key_id={self.key_id!r}{design})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, PosCUDAKey) and hmac.compare_digest(self._secret, other._secret)
                and self._design == other._design)

    def __hash__(self) -> int:
        return hash(self.key_id)

    def __getstate__(self) -> dict[str, Any]:
        # Needed to send the callable to `datasets` worker processes; `datasets` only stores a hash of it.
        return {"_secret": self._secret} if self._design is None else {"_secret": self._secret, "_design": self._design}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._secret = state["_secret"]
        self._design = state.get("_design")

    # ------------------------------------------------------------------ derivation
    def uniform(self, purpose: str, index: int, n: int) -> np.ndarray:
        """Return ``n`` float64 values in ``[0, 1)``, a deterministic function of the secret, ``purpose`` and ``index``.

        A counter-mode HMAC-SHA256 stream: the same on every machine and every library version.

        Args:
            purpose (`str`): what the numbers are for (e.g. ``"filter"``); distinct purposes are independent.
            index (`int`): the class index.
            n (`int`): how many values.
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        label = f"{purpose}\x00{int(index)}\x00".encode()
        blocks = -(-n // 4)
        stream = b"".join(
            hmac.new(self._secret, label + counter.to_bytes(8, "big"), hashlib.sha256).digest()
            for counter in range(blocks)
        )
        words = np.frombuffer(stream, dtype=">u8")[:n].astype(np.uint64)
        return (words >> np.uint64(11)).astype(np.float64) * (2.0**-53)
