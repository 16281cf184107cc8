"""Protection knobs as one validated dataclass, plus named presets."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

Placement = Literal["absolute", "relative", "active", "whole", "segments"]
FilterFamily = Literal["uniform", "signed", "barcode", "designed"]
Normalization = Literal["none", "sum", "l1", "l2"]
SegmentRegion = Literal["active", "clip"]


def _check_choice(name: str, value: object, literal: Any) -> None:
    choices = get_args(literal)
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}.")


def _check_number(name: str, value: object, *, low: float, high: float = math.inf, low_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and value <= high
    if not ok:
        bound = f"{'>' if low_open else '>='} {low}" + ("" if high == math.inf else f" and <= {high}")
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}.")


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"{name} must be an int in [{low}, {high}], got {value!r}.")


@dataclass(frozen=True)
class PosCUDAConfig:
    """How PosCUDA perturbs a clip. Every field is validated on construction.

    Two things are chosen per class from the key: **filters** (``filter_family``) and **where** they act
    (``placement``).

    *Filters.* ``"uniform"`` / ``"signed"`` draw ``kernel_size`` random taps (the paper's blur, CUDA's filters).
    ``"barcode"`` is a *spectral barcode*: on ``num_bands`` bands spaced evenly on the mel scale between
    ``band_low_hz`` and ``band_high_hz``, key-chosen bands are cut by ``cut_db`` or boosted by ``boost_db``,
    realised as a linear-phase FIR of ``filter_seconds`` (designed with :func:`scipy.signal.firwin2`). A class
    has ``filters_per_class`` filters: they share the class's ``num_cuts``/``num_boosts`` bands and each adds
    its own ``vary_cuts``/``vary_boosts`` bands (disjoint between the class's filters), so the class signature
    changes between filters while part of it stays put. ``"designed"`` is the same barcode whose static part is not
    drawn but read from the key's designed signature table (``hf-poscuda design``: each class's gain per band,
    optimised against surrogate models within ``-cut_db`` .. ``+boost_db``; see :mod:`hf_poscuda.designed`); its
    varying bands, positions and order still come from the key. Classes are drawn so that their band patterns differ
    in many bands (see :mod:`hf_poscuda.barcode`).

    *Placement.* Patch placements (``"absolute"``, ``"relative"``, ``"active"``) filter ``num_patches`` short
    patches and leave every other sample unchanged (the paper's reading). ``"whole"`` filters the whole clip with
    the class's first filter: a time-invariant filter, i.e. a recording channel, which blind equalisation removes.
    ``"segments"`` is PosCUDA's *position* made robust: the clip (``segment_region="clip"``) or its active region
    (``"active"``) is cut into ``num_segments`` segments (more when ``segment_seconds`` is set and the region is
    long) at class boundaries moved by up to ``boundary_jitter / 2`` of a segment from an even split; each segment
    gets one of the class's filters in a key-derived order (successive segments differ), with raised-cosine
    cross-fades of ``crossfade_seconds`` between them. The sequence is part of the class signature, and a
    signature that changes along the clip cannot be divided out by one equaliser.

    Args:
        patch_seconds (`float`, defaults to `0.05`): length of one patch (patch placements).
        num_patches (`int`, defaults to `1`): patches per clip (patch placements). Patches are applied one after
            the other, so overlapping patches filter the overlap twice rather than adding up.
        placement (`str`, defaults to `"segments"`): ``"absolute"`` (per-class offset in
            ``[0, max_offset_seconds)``, the paper's literal reading), ``"relative"`` (patch ``j`` at a per-class
            fraction of the ``j``-th of ``num_patches`` equal parts of the clip), ``"active"`` (the same inside
            the active region), ``"whole"`` or ``"segments"`` (see above).
        kernel_size (`int`, defaults to `17`): taps of ``"uniform"``/``"signed"`` filters (odd: centred, no delay).
        blur_factor (`float`, defaults to `1.0`): taps are drawn from ``U(0, b)`` (``"uniform"``) or ``U(-b, b)``
            (``"signed"``).
        filter_family (`str`, defaults to `"barcode"`): ``"uniform"``, ``"signed"``, ``"barcode"`` or ``"designed"``
            (a barcode whose static part comes from the key's designed table; needs a key made by ``hf-poscuda
            design``).
        identity_tap (`bool`, defaults to `False`): set one key-chosen tap to 1, as CUDA does (random taps only).
        normalization (`str`, defaults to `"sum"`): scale random taps so that their ``"sum"`` (DC gain), ``"l1"``
            or ``"l2"`` norm is 1; ``"none"`` keeps them. A ``"sum"`` near zero falls back to ``"l1"``.
        edge_seconds (`float`, defaults to `0.0`): raised-cosine cross-fade at patch edges (patch placements).
        match_rms (`bool`, defaults to `False`): rescale each filtered patch to the original patch's RMS
            (patch placements and ``"whole"`` with random taps).
        max_offset_seconds (`float`, defaults to `1.0`): range of the per-class offsets for ``"absolute"``.
        active_threshold_db (`float`, defaults to `-30.0`): the active region runs from the first to the last
            frame whose RMS is within this many dB of the loudest frame.
        frame_seconds (`float`, defaults to `0.02`): frame length for the active region.
        num_bands (`int`, defaults to `16`): bands of the barcode layout.
        band_low_hz (`float`, defaults to `200.0`): lower edge of the layout.
        band_high_hz (`float`, defaults to `3600.0`): upper edge of the layout, capped at 45 % of the clip's
            sampling rate (so the same bands are used at 8 kHz and above).
        num_cuts (`int`, defaults to `4`): bands every filter of a class cuts.
        num_boosts (`int`, defaults to `2`): bands every filter of a class boosts.
        cut_db (`float`, defaults to `30.0`): depth of a cut, in dB (positive); with ``"designed"``, the deepest cut
            the design may make in a band.
        boost_db (`float`, defaults to `12.0`): height of a boost, in dB; with ``"designed"``, the highest boost.
        vary_cuts (`int`, defaults to `2`): further bands each filter of a class cuts, different per filter.
        vary_boosts (`int`, defaults to `0`): further bands each filter boosts, different per filter.
        vary_cut_db (`float`, defaults to `30.0`): depth of the varying cuts.
        vary_boost_db (`float`, defaults to `12.0`): height of the varying boosts.
        vary_from_band (`int`, defaults to `9`): the varying bands are drawn from bands with this index or higher
            (bands are numbered from low to high frequency). Upper bands hold little speech energy, so changing
            them along the clip is heard less, while models that look at log energies (or equalised audio) see it.
        filter_seconds (`float`, defaults to `0.032`): barcode FIR length (257 taps at 8 kHz, 513 at 16 kHz).
        filters_per_class (`int`, defaults to `2`): filters per class used by ``"segments"``.
        num_segments (`int`, defaults to `4`): segments per clip (``"segments"``), at least, whatever its length.
        segment_seconds (`float`, *optional*, defaults to `0.25`): segment length on an even split; a region
            longer than ``num_segments * segment_seconds`` gets ``ceil(region / segment_seconds)`` segments (so the
            signature changes about every quarter second in long recordings too; ``boundary_jitter`` moves each
            boundary). ``None`` keeps ``num_segments`` for every clip.
        segment_region (`str`, defaults to `"active"`): cut ``"active"`` region or the whole ``"clip"``; the first
            and last segments' filters extend to the clip's ends.
        boundary_jitter (`float`, defaults to `0.5`): each class moves each boundary from the even split by a
            key-derived amount in ``±boundary_jitter / 2`` of a segment; in ``[0, 0.99]``.
        crossfade_seconds (`float`, defaults to `0.03`): raised-cosine cross-fade centred on each boundary; in a
            clip whose boundaries are closer than that, every fade of the clip is shortened to the closest gap.

    Output level: if a protected sample would exceed 1.0 (or the clip's original peak, if higher), the clip's
    whole perturbation is scaled down by the smallest factor that keeps every sample within that level, so
    nothing clips.
    """

    patch_seconds: float = 0.05
    num_patches: int = 1
    placement: Placement = "segments"
    kernel_size: int = 17
    blur_factor: float = 1.0
    filter_family: FilterFamily = "barcode"
    identity_tap: bool = False
    normalization: Normalization = "sum"
    edge_seconds: float = 0.0
    match_rms: bool = False
    max_offset_seconds: float = 1.0
    active_threshold_db: float = -30.0
    frame_seconds: float = 0.02
    num_bands: int = 16
    band_low_hz: float = 200.0
    band_high_hz: float = 3600.0
    num_cuts: int = 4
    num_boosts: int = 2
    cut_db: float = 30.0
    boost_db: float = 12.0
    vary_cuts: int = 2
    vary_boosts: int = 0
    vary_cut_db: float = 30.0
    vary_boost_db: float = 12.0
    vary_from_band: int = 9
    filter_seconds: float = 0.032
    filters_per_class: int = 2
    num_segments: int = 4
    segment_seconds: float | None = 0.25
    segment_region: SegmentRegion = "active"
    boundary_jitter: float = 0.5
    crossfade_seconds: float = 0.03

    def __post_init__(self) -> None:
        _check_number("patch_seconds", self.patch_seconds, low=0.0, low_open=True)
        _check_int("num_patches", self.num_patches, 1, 256)
        _check_choice("placement", self.placement, Placement)
        if (
            not isinstance(self.kernel_size, int)
            or isinstance(self.kernel_size, bool)
            or self.kernel_size < 1
            or self.kernel_size % 2 == 0
            or self.kernel_size > 1025
        ):
            raise ValueError(
                f"kernel_size must be an odd int in [1, 1025] (odd keeps the filter centred on the patch), "
                f"got {self.kernel_size!r}."
            )
        _check_number("blur_factor", self.blur_factor, low=0.0, low_open=True)
        _check_choice("filter_family", self.filter_family, FilterFamily)
        if not isinstance(self.identity_tap, bool) or not isinstance(self.match_rms, bool):
            raise ValueError("identity_tap and match_rms must be booleans.")
        _check_choice("normalization", self.normalization, Normalization)
        _check_number("edge_seconds", self.edge_seconds, low=0.0)
        if self.placement in ("absolute", "relative", "active") and self.edge_seconds > self.patch_seconds / 2:
            raise ValueError(
                f"edge_seconds ({self.edge_seconds}) must be at most half of patch_seconds ({self.patch_seconds}): "
                "both cross-fades live inside the patch."
            )
        _check_number("max_offset_seconds", self.max_offset_seconds, low=0.0)
        _check_number("active_threshold_db", self.active_threshold_db, low=-120.0, high=0.0)
        _check_number("frame_seconds", self.frame_seconds, low=0.0, low_open=True)
        # spectral barcode
        if self.is_barcode and self.placement not in ("whole", "segments"):
            raise ValueError(
                f"filter_family='barcode' works with placement 'whole' or 'segments', not {self.placement!r} (barcode "
                "filters are long; patches of them are not implemented). Use a random-tap filter_family for patches."
            )
        if self.uses_fft_path and (self.match_rms or self.edge_seconds > 0):
            raise ValueError(
                "match_rms and edge_seconds apply to patch placements with random-tap filters; with "
                f"placement={self.placement!r} and filter_family={self.filter_family!r} they would be ignored. "
                "Leave them at False / 0 (segments cross-fade with crossfade_seconds)."
            )
        _check_int("num_bands", self.num_bands, 2, 128)
        _check_number("band_low_hz", self.band_low_hz, low=0.0)
        _check_number("band_high_hz", self.band_high_hz, low=self.band_low_hz, low_open=True)
        for name in ("num_cuts", "num_boosts", "vary_cuts", "vary_boosts"):
            _check_int(name, getattr(self, name), 0, self.num_bands)
        for name in ("cut_db", "boost_db", "vary_cut_db", "vary_boost_db"):
            _check_number(name, getattr(self, name), low=0.0, high=60.0)
        _check_number("filter_seconds", self.filter_seconds, low=0.0, low_open=True, high=0.5)
        _check_int("filters_per_class", self.filters_per_class, 1, 16)
        _check_int("vary_from_band", self.vary_from_band, 0, 1024)  # against num_bands only where bands vary
        if self.is_barcode:
            self._check_band_counts()
        # segments
        _check_int("num_segments", self.num_segments, 1, 1024)
        if self.segment_seconds is not None:
            _check_number("segment_seconds", self.segment_seconds, low=0.0, low_open=True)
        _check_choice("segment_region", self.segment_region, SegmentRegion)
        _check_number("boundary_jitter", self.boundary_jitter, low=0.0, high=0.99)
        _check_number("crossfade_seconds", self.crossfade_seconds, low=0.0)

    def _check_band_counts(self) -> None:
        static = self.num_cuts + self.num_boosts
        varying = self.vary_cuts + self.vary_boosts
        if self.filter_family == "designed":  # the static part covers every band; only the varying bands must fit
            static = 0
        elif static + self.filters_per_class * varying > self.num_bands:
            raise ValueError(
                f"The barcode needs num_cuts + num_boosts + filters_per_class * (vary_cuts + vary_boosts) = "
                f"{static} + {self.filters_per_class} * {varying} bands, but num_bands is {self.num_bands}: the "
                "varying bands of a class's filters are disjoint. Lower the counts or raise num_bands."
            )
        if varying and self.filters_per_class * varying > self.num_bands - self.vary_from_band:
            raise ValueError(
                f"filters_per_class * (vary_cuts + vary_boosts) = {self.filters_per_class * varying} varying bands do "
                f"not fit in the {self.num_bands - self.vary_from_band} bands from vary_from_band="
                f"{self.vary_from_band} up. Lower vary_from_band or the counts."
            )
        if static + varying == 0 and self.filter_family == "barcode":
            raise ValueError("A barcode with no cut or boosted band changes nothing: set num_cuts, num_boosts, "
                             "vary_cuts or vary_boosts.")

    @property
    def is_barcode(self) -> bool:
        """Whether the filters are spectral barcodes (``"barcode"``, or ``"designed"``, a barcode from a design)."""
        return self.filter_family in ("barcode", "designed")

    @property
    def uses_fft_path(self) -> bool:
        """Whether clips go through the segment/long-filter path (FFT convolution, one filter bank per class)."""
        return self.placement == "segments" or self.is_barcode

    def filter_taps(self, sampling_rate: int) -> int:
        """Taps of each class filter at ``sampling_rate`` (odd)."""
        if not self.is_barcode:
            return self.kernel_size
        return 2 * max(1, round(self.filter_seconds * sampling_rate / 2)) + 1

    def describe(self) -> str:
        """One plain sentence on what these knobs do to a clip (for cards and logs).

        Example:

        ```py
        >>> from hf_poscuda import PRESETS
        >>> PRESETS["v0.1"].describe()
        'Every clip is filtered over its whole length by a secret 17-tap random filter of its class.'
        ```
        """
        fixed = self.placement == "whole" or self.filters_per_class == 1  # one filter per class, used throughout
        if self.filter_family == "designed":
            cuts = self.vary_cuts if fixed else 0
            what = (
                f"a secret spectral barcode of its class whose gains on {self.num_bands} mel-spaced bands between "
                f"{self.band_low_hz:g} and {self.band_high_hz:g} Hz (from -{self.cut_db:g} to +{self.boost_db:g} dB) "
                "were designed against surrogate models"
                + (f", plus {cuts} bands cut by {self.vary_cut_db:g} dB" if cuts else "")
            )
        elif self.filter_family == "barcode":
            cuts, boosts = self.num_cuts, self.num_boosts
            if fixed:  # the only filter carries its varying bands too
                cuts, boosts = cuts + self.vary_cuts, boosts + self.vary_boosts
            def depth(base: float, varying: float, used: int) -> str:
                return f"{base:g} dB" if not used or varying == base else f"up to {max(base, varying):g} dB"

            what = (
                f"a secret spectral barcode of its class ({cuts} of {self.num_bands} mel-spaced bands between "
                f"{self.band_low_hz:g} and {self.band_high_hz:g} Hz cut by "
                f"{depth(self.cut_db, self.vary_cut_db, self.vary_cuts)}, {boosts} boosted by "
                f"{depth(self.boost_db, self.vary_boost_db, self.vary_boosts)})"
            )
        elif fixed or self.placement != "segments":
            what = f"a secret {self.kernel_size}-tap random filter of its class"
        else:
            what = f"{self.filters_per_class} secret {self.kernel_size}-tap random filters of its class"
        if fixed and self.placement in ("whole", "segments"):
            return f"Every clip is filtered over its whole length by {what}."
        if self.placement == "segments":
            region = "its active (non-silent) part" if self.segment_region == "active" else "the clip"
            change = (
                f"; {self.vary_cuts + self.vary_boosts} more bands change between the class's "
                f"{self.filters_per_class} filters" if self.is_barcode else ""
            )
            longer = (f" (more when it is longer than {self.num_segments * self.segment_seconds:g} s: about "
                      f"{self.segment_seconds:g} s each)" if self.segment_seconds else "")
            return (
                f"Every clip is filtered by {what}{change}: {region} is cut into {self.num_segments} "
                f"segments{longer} at secret class-specific positions, each segment gets one of the class's "
                f"filters in a secret order, cross-faded over {1000 * self.crossfade_seconds:g} ms."
            )
        return (
            f"Inside {self.num_patches} secret patch(es) of {1000 * self.patch_seconds:g} ms per clip "
            f"({self.placement} placement), the audio is filtered by {what}; the rest is unchanged."
        )

    def active_knobs(self) -> dict[str, Any]:
        """The knobs that matter for this filter family and placement (what a card lists), in field order."""
        used = {"filter_family", "placement"}
        if self.filter_family == "designed":
            used |= {"num_bands", "band_low_hz", "band_high_hz", "filter_seconds", "cut_db", "boost_db"}
        if self.filter_family == "barcode":
            used |= {"num_bands", "band_low_hz", "band_high_hz", "num_cuts", "num_boosts", "filter_seconds"}
            used |= {"cut_db"} if self.num_cuts else set()
            used |= {"boost_db"} if self.num_boosts else set()
        if self.is_barcode:
            if self.vary_cuts or self.vary_boosts:  # in every filter of a class (filter 0 alone when "whole")
                used |= {"vary_cuts", "vary_boosts", "vary_from_band", "filters_per_class"}
                used |= {"vary_cut_db"} if self.vary_cuts else set()
                used |= {"vary_boost_db"} if self.vary_boosts else set()
        else:
            used |= {"kernel_size", "blur_factor", "identity_tap", "normalization"}
        if self.placement == "segments":
            used |= {"filters_per_class", "num_segments", "segment_seconds", "segment_region", "boundary_jitter",
                     "crossfade_seconds"}
            used |= {"active_threshold_db", "frame_seconds"} if self.segment_region == "active" else set()
        elif self.placement != "whole":
            used |= {"patch_seconds", "num_patches", "edge_seconds", "match_rms"}
            used |= {"max_offset_seconds"} if self.placement == "absolute" else set()
            used |= {"active_threshold_db", "frame_seconds"} if self.placement == "active" else set()
        elif not self.is_barcode:
            used |= {"match_rms"}
        return {k: v for k, v in self.to_dict().items() if k in used}

    def to_dict(self) -> dict[str, Any]:
        """All knobs as a JSON-serialisable dict (recorded on cards and in reports)."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> PosCUDAConfig:
        """Return a copy with some knobs changed (validated again)."""
        return dataclasses.replace(self, **changes)

    @staticmethod
    def parse_knobs(assignments: Sequence[str]) -> dict[str, Any]:
        """Parse ``["knob=value", ...]`` (the CLI's ``--set``) into typed overrides for :meth:`from_preset`.

        Example:

        ```py
        >>> from hf_poscuda import PosCUDAConfig
        >>> PosCUDAConfig.parse_knobs(["num_segments=6", "segment_seconds=none", "vary_cut_db=18"])
        {'num_segments': 6, 'segment_seconds': None, 'vary_cut_db': 18.0}
        ```

        Raises:
            ValueError: not ``name=value``, an unknown knob (the message lists them) or a value of the wrong type.
        """
        fields = {f.name: str(f.type) for f in dataclasses.fields(PosCUDAConfig)}
        out: dict[str, Any] = {}
        for text in assignments:
            name, sep, raw = text.partition("=")
            name, raw = name.strip().replace("-", "_"), raw.strip()
            if not sep or not name:
                raise ValueError(f"Expected knob=value (e.g. num_segments=6), got {text!r}.")
            if name not in fields:
                raise ValueError(f"Unknown knob {name!r}; knobs are {sorted(fields)}.")
            kind = fields[name]
            try:
                if kind.endswith("| None") and raw.lower() in ("none", "null", ""):
                    value: Any = None
                elif kind.startswith("bool"):
                    if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                        raise ValueError
                    value = raw.lower() in ("true", "1", "yes")
                elif kind.startswith("int"):
                    value = int(raw)
                elif kind.startswith("float"):
                    value = float(raw)
                else:
                    value = raw
            except ValueError:
                raise ValueError(f"Knob {name} takes a {kind} value, got {raw!r}.") from None
            out[name] = value
        return out

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> PosCUDAConfig:
        """Build a config from a named preset (see :data:`PRESETS`), optionally overriding knobs."""
        if name not in PRESETS:
            raise ValueError(f"Unknown preset {name!r}; choose one of {sorted(PRESETS)}.")
        return dataclasses.replace(PRESETS[name], **overrides)


PRESETS: dict[str, PosCUDAConfig] = {
    # The paper read literally: one patch at a key-derived absolute offset, U(0, b) taps, no normalisation.
    "paper": PosCUDAConfig(
        patch_seconds=0.05, num_patches=1, placement="absolute", kernel_size=9, blur_factor=0.3,
        filter_family="uniform", normalization="none",
    ),
    # CUDA (Sadasivan et al.) applied to whole clips: U(0, b) taps with one tap set to 1, sum-normalised.
    "cuda": PosCUDAConfig(
        placement="whole", kernel_size=9, blur_factor=0.3, filter_family="uniform", identity_tap=True,
        normalization="sum",
    ),
    # The strongest patch-based (positional) setting measured on FSDD; below the PESQ 3.5 bound (3.35).
    "patches": PosCUDAConfig(
        patch_seconds=0.2, num_patches=4, placement="active", kernel_size=33, blur_factor=0.3,
        filter_family="signed", normalization="l2", match_rms=True, edge_seconds=0.02,
    ),
}
# The chosen default (see the README: the best measured trade-off against blind equalisation; PESQ ~3.7): the
# class-wise barcode (4 bands cut by 30 dB, 2 boosted by 12 dB) plus 2 more upper-band cuts that switch between
# two filters over 4 active-region segments (about 0.25 s each in long regions) with 30 ms cross-fades.
PRESETS["default"] = PosCUDAConfig()
# The class signature designed against surrogate models (hf-poscuda design writes the table into the key file):
# the static part of each class's barcode from the design, the default's time-varying part from the key.
PRESETS["designed"] = PosCUDAConfig(filter_family="designed")
# The same barcode, time-invariant: higher PESQ, but a recording channel that blind equalisation removes.
PRESETS["barcode"] = PosCUDAConfig(placement="whole", filters_per_class=1, vary_cuts=0)
# The 0.1 default: a whole-clip filter of 17 random taps U(0, 1), sum-normalised (also a removable channel).
PRESETS["v0.1"] = PosCUDAConfig(
    placement="whole", kernel_size=17, blur_factor=1.0, filter_family="uniform", normalization="sum",
    filters_per_class=1, vary_cuts=0,
)
