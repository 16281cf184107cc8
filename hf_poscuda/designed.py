"""Designed signatures: each class's static barcode gains, optimised against surrogate models and kept with the key.

A :class:`DesignedSignature` is the table that ``PosCUDAConfig(signature="designed")`` reads instead of drawing each
class's static barcode from the key: one gain in dB per class and band of the barcode layout. It is made by
:func:`hf_poscuda.evaluation.design.design_signatures` (``hf-poscuda design``) from the owner's own data, and saved in
the key file (format v2, still 0600): like the secret, the table is private (it is each class's filter). The key
still chooses everything else: the time-varying bands, the segment positions and their order, so protection stays
deterministic per key file, and ``verify`` and ``audit`` keep working with that file.

Only :attr:`DesignedSignature.design_id`, a one-way hash of the table, is public (on cards and records), so the
owner can show which design protected a copy.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class DesignedSignature:
    """Static barcode gains per class, designed against surrogate models.

    Args:
        static_db (`np.ndarray` of shape `[classes, num_bands]`): each class's static gain in dB per band (negative:
            a cut), on the layout below.
        num_bands (`int`): bands of the barcode layout the gains are for (a config with another layout is refused).
        band_low_hz (`float`): the layout's lower edge.
        band_high_hz (`float`): the layout's upper edge.
        method (`str`): how it was designed (e.g. ``"targeted"``).
        info (`dict`): public facts about the design (surrogates, steps, budget), for records; never per-class data.
    """

    static_db: np.ndarray
    num_bands: int
    band_low_hz: float
    band_high_hz: float
    method: str = "targeted"
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        gains = np.asarray(self.static_db, dtype=np.float64)
        if gains.ndim != 2 or gains.shape[0] < 1 or gains.shape[1] != self.num_bands:
            raise ValueError(f"static_db must be [classes, num_bands={self.num_bands}], got shape {gains.shape}.")
        if not np.isfinite(gains).all() or np.abs(gains).max(initial=0.0) > 60.0:
            raise ValueError("static_db must hold finite gains within ±60 dB.")
        object.__setattr__(self, "static_db", np.round(gains, 3))
        json.dumps(self.info)  # must be serialisable

    @property
    def num_classes(self) -> int:
        return int(self.static_db.shape[0])

    @property
    def design_id(self) -> str:
        """A public identifier: the first 16 hex digits of SHA-256 over the table's canonical JSON."""
        return hashlib.sha256(b"hf-poscuda/design/v1" + self.to_json().encode()).hexdigest()[:16]

    def shuffled(self, order: np.ndarray, bands: np.ndarray) -> DesignedSignature:
        """The same gains with classes reordered by ``order`` and bands by ``bands``: an unrelated design with the
        same gain values, for decoy keys (see :func:`hf_poscuda.key.PosCUDAKey.decoy_of`)."""
        return DesignedSignature(self.static_db[np.ix_(order, bands)], self.num_bands, self.band_low_hz,
                                 self.band_high_hz, self.method, {"decoy_of": self.design_id})

    def matches(self, num_bands: int, band_low_hz: float, band_high_hz: float) -> bool:
        return (self.num_bands == num_bands and math.isclose(self.band_low_hz, band_low_hz)
                and math.isclose(self.band_high_hz, band_high_hz))

    def to_json(self) -> str:
        return json.dumps({"static_db": self.static_db.tolist(), "num_bands": self.num_bands,
                           "band_low_hz": self.band_low_hz, "band_high_hz": self.band_high_hz,
                           "method": self.method, "info": self.info}, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> DesignedSignature:
        data = json.loads(text)
        return cls(np.asarray(data["static_db"], dtype=np.float64), int(data["num_bands"]), float(data["band_low_hz"]),
                   float(data["band_high_hz"]), str(data.get("method", "targeted")), dict(data.get("info", {})))

    def __repr__(self) -> str:  # never the gains: they are each class's filter
        return (f"DesignedSignature(design_id={self.design_id!r}, classes={self.num_classes}, "
                f"num_bands={self.num_bands}, method={self.method!r})")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DesignedSignature) and self.to_json() == other.to_json()

    def __hash__(self) -> int:
        return hash(self.design_id)
