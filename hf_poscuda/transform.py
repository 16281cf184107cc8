"""The PosCUDA transform in pure torch: a padded batch in, the protected batch out. Knows nothing of `datasets`.

Two paths, both bit-identical per clip whatever batch the clip comes in (on a given device):

- Random-tap filters on patches or whole clips (:func:`apply_poscuda`): tensor operations over the whole batch,
  a loop over the ``num_patches`` patches and the filter taps; the FIR is a sum of shifted, scaled copies
  (elementwise multiply then add).
- Barcodes and time-varying segments (:func:`apply_segments`): long filters by FFT convolution (overlap-save),
  one clip at a time with block sizes that depend only on the clip, each class's filters switched along the clip
  with cross-fades.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F

from .config import PosCUDAConfig
from .key import PosCUDAKey

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------- per-class parameters (from the key)
def class_filter(key: PosCUDAKey, config: PosCUDAConfig, class_index: int, variant: int = 0) -> np.ndarray:
    """The ``kernel_size`` random taps (float64) of one class's filter number ``variant``, derived from the key.

    For ``"uniform"`` / ``"signed"`` filters; barcodes are designed in :mod:`hf_poscuda.barcode`.
    """
    k = config.kernel_size
    purpose = "filter" if variant == 0 else f"filter/{variant}"
    u = key.uniform(purpose, class_index, k)
    taps = u * config.blur_factor if config.filter_family == "uniform" else (2.0 * u - 1.0) * config.blur_factor
    if config.identity_tap:
        taps[min(int(key.uniform("identity-tap", class_index, 1)[0] * k), k - 1)] = 1.0
    l1 = float(np.abs(taps).sum())
    if config.normalization == "sum":
        total = float(taps.sum())
        taps = taps / (total if abs(total) > 1e-3 * l1 else l1)
    elif config.normalization == "l1":
        taps = taps / l1
    elif config.normalization == "l2":
        taps = taps / float(np.sqrt((taps**2).sum()))
    return taps


def class_filter_banks(key: PosCUDAKey, config: PosCUDAConfig, num_classes: int, sampling_rate: int) -> np.ndarray:
    """Every class's filters, ``[num_classes, filters_per_class, taps]`` (float64), at ``sampling_rate``."""
    if config.is_barcode:
        from .barcode import class_patterns, design_fir

        patterns = class_patterns(key, config, num_classes)
        return np.stack([[design_fir(p, config, sampling_rate) for p in banks] for banks in patterns]).reshape(
            num_classes, config.filters_per_class, -1
        )
    return np.stack([
        [class_filter(key, config, c, m) for m in range(config.filters_per_class)] for c in range(num_classes)
    ]).reshape(num_classes, config.filters_per_class, config.kernel_size)


SCHEDULE_LENGTH = 64  # per-class boundary offsets and filter order, used cyclically for longer clips


def class_schedule(key: PosCUDAKey, config: PosCUDAConfig, class_index: int) -> tuple[np.ndarray, np.ndarray]:
    """One class's segment schedule: boundary offsets in ``[-jitter/2, jitter/2)`` (fractions of a segment) and
    the filter of each segment (``[SCHEDULE_LENGTH]`` each; successive segments get different filters)."""
    offsets = (key.uniform("boundaries", class_index, SCHEDULE_LENGTH) - 0.5) * config.boundary_jitter
    m = config.filters_per_class
    u = key.uniform("filter-order", class_index, SCHEDULE_LENGTH)
    order = np.zeros(SCHEDULE_LENGTH, dtype=np.int64)
    order[0] = min(int(u[0] * m), m - 1)
    for j in range(1, SCHEDULE_LENGTH):
        step = 1 + min(int(u[j] * (m - 1)), m - 2) if m > 1 else 0
        order[j] = (order[j - 1] + step) % m
    return offsets, order


def class_positions(key: PosCUDAKey, config: PosCUDAConfig, class_index: int) -> np.ndarray:
    """The ``num_patches`` position fractions in ``[0, 1)`` of one class, derived from the key."""
    return key.uniform("position", class_index, config.num_patches)


# ---------------------------------------------------------------------- the pure batched function
def apply_poscuda(
    audio: torch.Tensor,
    lengths: torch.Tensor,
    filters: torch.Tensor,
    positions: torch.Tensor,
    config: PosCUDAConfig,
    sampling_rate: int,
    *,
    inplace: bool = False,
) -> torch.Tensor:
    """Protect a padded batch.

    Args:
        audio (`torch.Tensor` of shape `[batch, channels, time]`): float audio, zero-padded after each clip's end
            (samples after a clip's length are never read into a filter and never changed).
        lengths (`torch.Tensor` of shape `[batch]`): valid samples of each clip.
        filters (`torch.Tensor` of shape `[batch, kernel_size]`): each clip's class filter.
        positions (`torch.Tensor` of shape `[batch, num_patches]`): each clip's class position fractions in `[0, 1)`.
        config (`PosCUDAConfig`): the knobs.
        sampling_rate (`int`): samples per second, to turn seconds into samples.
        inplace (`bool`, defaults to `False`): write into ``audio`` instead of a copy (saves one pass over the
            batch when the caller owns the buffer).

    Returns:
        `torch.Tensor`: same shape, dtype and device as ``audio``; only patch samples differ.
    """
    if audio.ndim != 3:
        raise ValueError(f"audio must be [batch, channels, time], got shape {tuple(audio.shape)}.")
    if not audio.is_floating_point():
        raise ValueError(f"audio must be a floating-point tensor, got {audio.dtype}.")
    B, C, T = audio.shape
    if B == 0 or T == 0:
        return audio.clone()
    device, dtype = audio.device, audio.dtype
    lengths = lengths.to(device=device, dtype=torch.long)
    if lengths.shape != (B,) or bool(((lengths < 0) | (lengths > T)).any()):
        raise ValueError(f"lengths must be [batch] integers in [0, {T}], got {lengths.tolist()}.")
    k = config.kernel_size
    if filters.shape != (B, k):
        raise ValueError(f"filters must be [batch, {k}], got {tuple(filters.shape)}.")

    if config.placement == "whole":
        return _filter_whole(audio, lengths, filters, config, inplace)
    p = max(1, round(config.patch_seconds * sampling_rate))
    starts = _patch_starts(audio, lengths, positions.to(device=device, dtype=torch.float64), config, sampling_rate, p)
    edge = round(config.edge_seconds * sampling_rate)
    eff = torch.clamp(torch.minimum(lengths[:, None] - starts, torch.full_like(starts, p)), min=0)  # [B, n]

    # At most one copy of the batch; every later step reads and writes patch-sized slices only.
    y = audio if p <= T else F.pad(audio, (0, p - T))  # room for a patch longer than every clip
    if not inplace and p <= T:
        y = y.clone()
    taps = torch.flip(filters.to(device=device, dtype=dtype), dims=[1])[:, None, :]  # [B, 1, k]
    offsets = torch.arange(p, device=device)
    context_offsets = torch.arange(p + k - 1, device=device) - (k - 1) // 2
    patch_indices = (starts[:, :, None] + offsets[None, None, :]).reshape(B, 1, -1).expand(B, C, -1)
    before = y.gather(-1, patch_indices)  # originals, for the level check below
    for j in range(starts.shape[1]):
        start = starts[:, j : j + 1]
        idx = patch_indices[..., j * p : (j + 1) * p]  # [B, C, p]
        original = y.gather(-1, idx)
        cidx = start + context_offsets[None, :]  # the patch plus (k-1)/2 samples each side, zero outside the clip
        context = y.gather(-1, cidx.clamp(0, y.shape[-1] - 1)[:, None, :].expand(B, C, -1))
        context = context * ((cidx >= 0) & (cidx < lengths[:, None]))[:, None, :].to(dtype)
        filtered = _fir(context, taps, p)
        inside = offsets[None, :] < eff[:, j : j + 1]  # [B, p]
        if config.match_rms:
            filtered = _match_rms(filtered, original, inside)
        if edge > 0:  # cross-fade: weight is 0 outside the patch and ramps up/down at its edges
            weight = _edge_window(eff[:, j], p, edge, offsets).to(dtype)
            filtered = original + weight[:, None, :] * (filtered - original)
        patched = torch.where(inside[:, None, :], filtered, original)
        y.scatter_(-1, idx, patched)

    after = y.gather(-1, patch_indices)
    scaled = _limit_level(before, after)
    if scaled is not None:
        y.scatter_(-1, patch_indices, scaled)
    return y if p <= T else y[..., :T].contiguous()


def _filter_whole(
    audio: torch.Tensor, lengths: torch.Tensor, filters: torch.Tensor, config: PosCUDAConfig, inplace: bool
) -> torch.Tensor:
    """``placement="whole"``: filter every clip over its full length (no index gathers, no extra copy)."""
    B, C, T = audio.shape
    k = config.kernel_size
    taps = torch.flip(filters.to(device=audio.device, dtype=audio.dtype), dims=[1])[:, None, :]
    valid = (torch.arange(T, device=audio.device)[None, :] < lengths[:, None])[:, None, :]  # [B, 1, T]
    context = F.pad(audio, ((k - 1) // 2, k // 2))
    context[..., (k - 1) // 2 : (k - 1) // 2 + T].masked_fill_(~valid, 0.0)  # zeros after each clip's end
    filtered = _fir(context, taps, T)
    if config.match_rms:
        filtered = _match_rms(filtered, audio, valid[:, 0])
    torch.where(valid, filtered, audio, out=filtered)
    scaled = _limit_level(audio, filtered)
    if scaled is not None:
        filtered = scaled
    return audio.copy_(filtered) if inplace else filtered


def _fir(context: torch.Tensor, taps: torch.Tensor, n: int, chunk: int = 2048) -> torch.Tensor:
    """``out[..., i] = sum_t taps[..., t] * context[..., i + t]`` for ``i < n``, tap by tap.

    Each step is an exactly rounded multiply into a buffer, then an exactly rounded add, in a fixed order, so
    a clip's result does not depend on which batch (or padding) it came with. Time is processed in chunks that
    stay in cache, with preallocated buffers.
    """
    k = taps.shape[-1]
    out = torch.empty(context.shape[:-1] + (n,), dtype=context.dtype, device=context.device)
    tmp = torch.empty(context.shape[:-1] + (min(chunk, n),), dtype=context.dtype, device=context.device)
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        acc, buf = out[..., s : s + m], tmp[..., :m]
        torch.mul(context[..., s : s + m], taps[..., 0:1], out=acc)
        for t in range(1, k):
            torch.mul(context[..., s + t : s + t + m], taps[..., t : t + 1], out=buf)
            acc.add_(buf)
    return out


def _limit_level(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor | None:
    """Never clip: if a sample of ``after`` passes 1.0 (or the clip's original peak in ``before``, if higher),
    scale that clip's perturbation down by the smallest factor that keeps every sample within the level.

    Returns the corrected ``after``, or ``None`` when nothing needed scaling (the common case: one cheap check).
    """
    limit = torch.clamp(_peak(before), min=1.0)  # [B]
    if not bool((_peak(after) > limit).any()):
        return None
    scale = torch.clamp(_min_room(before, after, limit), max=1.0)
    logger.debug("Scaled down the perturbation of %d clip(s) to stay within their level", int((scale < 1).sum()))
    return _scaled_back(before, after, limit, scale)


def _peak(x: torch.Tensor) -> torch.Tensor:
    """Max ``|x|`` of each clip of ``[B, ...]``, without an ``|x|`` temporary."""
    if x.shape[0] == 1:  # one clip: the flat reduction (the per-row one is ~20x slower on one long row)
        low, high = torch.aminmax(x)
        return torch.maximum(high, -low).reshape(1)
    low, high = torch.aminmax(x.reshape(x.shape[0], -1), dim=-1)
    return torch.maximum(high, -low)


def _min_room(before: torch.Tensor, after: torch.Tensor, limit: torch.Tensor) -> torch.Tensor:
    """Per clip, the smallest factor of the perturbation ``after - before`` that brings a sample to ``±limit``
    (float64, ``inf`` where nothing changes). A sample within the limit never gives less than 1: where some
    sample passes the limit, the minimum is set by such samples alone."""
    lim, b64 = limit.to(torch.float64)[:, None, None], before.to(torch.float64)
    d = after.to(torch.float64) - b64
    inf = torch.full_like(d, math.inf)
    room = torch.where(d > 0, (lim - b64) / d, torch.where(d < 0, (-lim - b64) / d, inf))
    return room.amin(dim=(1, 2))


def _scaled_back(before: torch.Tensor, after: torch.Tensor, limit: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``before + scale * (after - before)`` within ``±limit``, for the clips whose ``scale`` is below 1."""
    lim, b64 = limit.to(torch.float64)[:, None, None], before.to(torch.float64)
    scale = scale[:, None, None]
    scaled = torch.clamp(b64 + scale * (after.to(torch.float64) - b64), -lim, lim).to(after.dtype)
    return torch.where(scale < 1.0, scaled, after)


def _patch_starts(
    x: torch.Tensor, lengths: torch.Tensor, positions: torch.Tensor, config: PosCUDAConfig, sr: int, p: int
) -> torch.Tensor:
    """First sample of each patch, ``[B, num_patches]``, always within ``[0, max(length - p, 0)]``."""
    B, n = positions.shape
    L = lengths[:, None]
    if config.placement == "absolute":
        starts = torch.floor(positions * (config.max_offset_seconds * sr)).to(torch.long)
    else:
        if config.placement == "active":
            lo, hi = _active_region(x, lengths, config, sr)
        else:
            lo, hi = torch.zeros_like(lengths), lengths
        j = torch.arange(n, device=x.device)[None, :]
        region = (hi - lo)[:, None]
        seg_lo = lo[:, None] + (j * region) // n
        seg_hi = lo[:, None] + ((j + 1) * region) // n
        room = torch.clamp(seg_hi - seg_lo - p, min=0)
        starts = seg_lo + torch.floor(positions * (room + 1).to(torch.float64)).to(torch.long)
    return torch.clamp(torch.minimum(starts, torch.clamp(L - p, min=0)), min=0)


def _active_region(
    x: torch.Tensor, lengths: torch.Tensor, config: PosCUDAConfig, sr: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Start and end sample of each clip's active region (from first to last loud-enough frame)."""
    frame = max(1, round(config.frame_seconds * sr))
    return _region_from_power(_frame_power(x, lengths, frame), lengths, frame, config)


def _frame_power(x: torch.Tensor, lengths: torch.Tensor, frame: int) -> torch.Tensor:
    """Energy of each ``frame``-sample frame of each clip, summed over channels, ``[B, ceil(T / frame)]`` float64.

    Each frame's energy is computed alone (a last, partial frame as if zero-padded to a whole frame), so a clip's
    values do not depend on the batch it comes in or on how it is cut into frame-aligned pieces.
    """
    B, C, T = x.shape
    nf = -(-T // frame)
    if bool((lengths < T).any()):  # samples after a clip's end must not count
        x = torch.where(torch.arange(T, device=x.device)[None, None, :] < lengths[:, None, None], x, 0.0)
    full = T // frame  # frame energies without copying the batch: whole frames as a view, the last one apart
    power = torch.zeros(B, nf, dtype=torch.float64, device=x.device)
    if full:
        norms = torch.linalg.vector_norm(x[..., : full * frame].reshape(B, C, full, frame), dim=-1)
        power[:, :full] = norms.pow(2).sum(dim=1).to(torch.float64)
    if nf > full:
        last = F.pad(x[..., full * frame :], (0, nf * frame - T))
        power[:, full] = torch.linalg.vector_norm(last, dim=-1).pow(2).sum(dim=1).to(torch.float64)
    return power


def _region_from_power(
    power: torch.Tensor, lengths: torch.Tensor, frame: int, config: PosCUDAConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """The active region of each clip from its frame energies (see :func:`_active_region`)."""
    nf = power.shape[-1]
    frame_ok = torch.arange(nf, device=power.device)[None, :] * frame < lengths[:, None]
    power = torch.where(frame_ok, power, torch.zeros_like(power))
    threshold = power.amax(dim=-1, keepdim=True) * 10.0 ** (config.active_threshold_db / 10.0)
    active = (power >= threshold) & (power > 0) & frame_ok
    any_active = active.any(dim=-1)
    first = active.to(torch.int8).argmax(dim=-1)
    last = nf - 1 - torch.flip(active, dims=[-1]).to(torch.int8).argmax(dim=-1)
    lo = torch.where(any_active, first * frame, torch.zeros_like(lengths))
    hi = torch.where(any_active, torch.minimum((last + 1) * frame, lengths), lengths)
    return lo, hi


def _edge_window(eff: torch.Tensor, p: int, edge: int, offsets: torch.Tensor) -> torch.Tensor:
    """Raised-cosine ramps of ``edge`` samples at both ends of each patch (shorter for short patches)."""
    inside = offsets[None, :] < eff[:, None]
    if edge <= 0:
        return inside.to(torch.float64)
    e = torch.clamp(torch.minimum(torch.full_like(eff, edge), eff // 2), min=1).to(torch.float64)[:, None]
    i = offsets[None, :].to(torch.float64)
    dist = torch.minimum(i + 0.5, eff[:, None].to(torch.float64) - i - 0.5)
    ramp = 0.5 - 0.5 * torch.cos(math.pi * torch.clamp(dist / e, 0.0, 1.0))
    return torch.where(inside, ramp, torch.zeros_like(ramp))


def _match_rms(filtered: torch.Tensor, original: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    m = inside[:, None, :].to(torch.float64)
    e_orig = (original.to(torch.float64).pow(2) * m).sum(-1, keepdim=True)
    e_filt = (filtered.to(torch.float64).pow(2) * m).sum(-1, keepdim=True)
    gain = torch.where(e_filt > 0, torch.sqrt(e_orig / torch.clamp(e_filt, min=1e-300)), torch.ones_like(e_filt))
    return (filtered.to(torch.float64) * gain).to(filtered.dtype)


# ---------------------------------------------------------------------- time-varying (segment) filtering
#: Samples (x channels x filters) of the FFT blocks filtered at once: the unit of work and of memory of the
#: segment path. Read when called, and part of the computation: both paths must use the same value.
FFT_BLOCK_ELEMENTS = 1 << 22


def apply_segments(
    audio: torch.Tensor,
    lengths: torch.Tensor,
    banks: torch.Tensor,
    offsets: torch.Tensor,
    order: torch.Tensor,
    config: PosCUDAConfig,
    sampling_rate: int,
    *,
    inplace: bool = False,
    groups: torch.Tensor | None = None,
) -> torch.Tensor:
    """Protect a padded batch with each clip's class filters switched along the clip (``placement="segments"``),
    or with one long filter over the whole clip (``placement="whole"`` with a barcode).

    Each clip is filtered by FFT convolution (overlap-save in blocks whose size depends only on the clip's length
    and the filter length), one clip at a time, so its result is bit-identical whatever batch it came in. The
    blocks are filtered and cross-faded in groups of about :data:`FFT_BLOCK_ELEMENTS` samples, so the temporaries
    are one copy of the clip (none without ``inplace``) plus one group, whatever the clip's length (the active
    region is found for the whole batch at once). :func:`apply_segments_in_blocks` gives the same samples for a
    clip that is read and written by blocks instead of held in memory.

    Args:
        audio (`torch.Tensor` of shape `[batch, channels, time]`): float audio, zero-padded after each clip's end
            (padding is never read and never changed).
        lengths (`torch.Tensor` of shape `[batch]`): valid samples of each clip.
        banks (`torch.Tensor` of shape `[batch, filters_per_class, taps]`): each clip's class filters (odd taps).
        offsets (`torch.Tensor` of shape `[batch, J]`): each clip's class boundary offsets (see
            :func:`class_schedule`).
        order (`torch.Tensor` of shape `[batch, J]`): each clip's class filter order.
        config (`PosCUDAConfig`): the knobs.
        sampling_rate (`int`): samples per second.
        inplace (`bool`, defaults to `False`): write into ``audio``.
        groups (`torch.Tensor` of shape `[batch]`, *optional*): clips with equal values have equal ``banks`` rows
            (e.g. class indices); their filter spectra are then computed once per clip length.

    Returns:
        `torch.Tensor`: same shape, dtype and device as ``audio``.
    """
    if audio.ndim != 3:
        raise ValueError(f"audio must be [batch, channels, time], got shape {tuple(audio.shape)}.")
    if not audio.is_floating_point():
        raise ValueError(f"audio must be a floating-point tensor, got {audio.dtype}.")
    B, C, T = audio.shape
    lengths = lengths.to(device=audio.device, dtype=torch.long)
    if lengths.shape != (B,) or bool(((lengths < 0) | (lengths > T)).any()):
        raise ValueError(f"lengths must be [batch] integers in [0, {T}], got {lengths.tolist()}.")
    if banks.ndim != 3 or banks.shape[:2] != (B, config.filters_per_class) or banks.shape[-1] % 2 == 0:
        raise ValueError(
            f"banks must be [batch, {config.filters_per_class}, odd taps], got {tuple(banks.shape)}."
        )
    if offsets.shape != order.shape or offsets.ndim != 2 or offsets.shape[0] != B:
        raise ValueError(
            f"offsets and order must both be [batch, J], got {tuple(offsets.shape)} and {tuple(order.shape)}."
        )
    y = audio if inplace else audio.clone()
    if B == 0 or T == 0:
        return y
    if _uses_active_region(config):
        lo, hi = _active_region(audio, lengths, config, sampling_rate)
    else:
        lo, hi = torch.zeros_like(lengths), lengths
    taps = banks.to(device=audio.device, dtype=audio.dtype)
    k = taps.shape[-1]
    offsets_np = offsets.detach().cpu().numpy().astype(np.float64)
    order_np = order.detach().cpu().numpy().astype(np.int64)
    groups_list = groups.tolist() if groups is not None else None
    spectra_cache: dict[tuple[int, int], torch.Tensor] = {}
    for b, (n_samples, start, stop) in enumerate(zip(lengths.tolist(), lo.tolist(), hi.tolist(), strict=True)):
        if n_samples == 0:
            continue
        x = audio[b, :, :n_samples]
        schedule = _Schedule.of(n_samples, start, stop, offsets_np[b], order_np[b], config, sampling_rate)
        used_t = torch.from_numpy(schedule.used).to(taps.device)
        if groups_list is not None:  # clips of one class and length share their filters' spectra
            cache_key = (int(groups_list[b]), fft_size(n_samples, k))
            if cache_key not in spectra_cache:
                spectra_cache[cache_key] = torch.fft.rfft(taps[b], n=cache_key[1])
            spectra = spectra_cache[cache_key][used_t]
        else:
            spectra = torch.fft.rfft(taps[b, used_t], n=fft_size(n_samples, k))
        out = torch.empty_like(x) if inplace else y[b, :, :n_samples]  # x is read until the last block

        def write(start: int, block: torch.Tensor, out: torch.Tensor = out) -> None:
            out[:, start : start + block.shape[-1]] = block

        source = _Source.of(x)
        blocks = partial(_protected_blocks, source, spectra, k, schedule, FFT_BLOCK_ELEMENTS)
        _write_within_level(blocks, torch.clamp(_peak(x[None]), min=1.0), write)
        if inplace:
            y[b, :, :n_samples] = out
    return y


def apply_segments_in_blocks(
    read: Callable[[int, int], torch.Tensor],
    write: Callable[[int, torch.Tensor], None],
    length: int,
    bank: torch.Tensor,
    offsets: np.ndarray,
    order: np.ndarray,
    config: PosCUDAConfig,
    sampling_rate: int,
) -> None:
    """Protect one clip that is read and written by blocks, in memory bounded by a block whatever its length:
    the samples :func:`apply_segments` gives that clip (with ``groups``), bit for bit.

    Three passes over the clip: (1) frame energies and peak level, in frame-aligned blocks: the active region,
    segment boundaries and level limit; (2) filtering and cross-fading in groups of FFT blocks (the filter's
    context carried from one group to the next), each group written as it is done; (3) only when a sample of the
    result passed the clip's level (rare: loud clips), pass 2 again with the perturbation scaled down by the
    clip's one factor, which pass 2 found.

    Args:
        read (`Callable[[int, int], torch.Tensor]`): ``read(start, stop)`` gives samples ``[start, stop)`` as a
            float ``[channels, stop - start]`` tensor on the compute device. Each pass reads the clip from its
            start, in consecutive ranges.
        write (`Callable[[int, torch.Tensor], None]`): ``write(start, block)`` stores protected samples
            ``[start, start + block.shape[-1])``. Each pass writes the clip in order from its start; pass 3, when
            it runs, writes every sample again.
        length (`int`): samples in the clip.
        bank (`torch.Tensor` of shape `[filters_per_class, taps]`): the clip's class filters (odd taps).
        offsets (`np.ndarray` of shape `[J]`), order (`np.ndarray` of shape `[J]`): its class schedule (see
            :func:`class_schedule`).
        config (`PosCUDAConfig`): the knobs (a segment or barcode config).
        sampling_rate (`int`): samples per second.
    """
    if length <= 0:
        return
    if bank.ndim != 2 or bank.shape[0] != config.filters_per_class or bank.shape[-1] % 2 == 0:
        raise ValueError(f"bank must be [{config.filters_per_class}, odd taps], got {tuple(bank.shape)}.")
    frame = max(1, round(config.frame_seconds * sampling_rate))
    chunk = max(1, FFT_BLOCK_ELEMENTS // 2 // frame) * frame
    powers, peak, first = [], None, None
    for a in range(0, length, chunk):  # pass 1
        x = read(a, min(a + chunk, length))
        first = x if first is None else first
        block_peak = _peak(x[None])
        peak = block_peak if peak is None else torch.maximum(peak, block_peak)
        if _uses_active_region(config):
            powers.append(_frame_power(x[None], torch.tensor([x.shape[-1]], device=x.device), frame))
    assert first is not None and peak is not None
    lo, hi = 0, length
    if powers:
        region = _region_from_power(torch.cat(powers, dim=-1), torch.tensor([length], device=first.device), frame,
                                    config)
        lo, hi = int(region[0]), int(region[1])
    schedule = _Schedule.of(length, lo, hi, np.asarray(offsets, dtype=np.float64),
                            np.asarray(order, dtype=np.int64), config, sampling_rate)
    taps = bank.to(device=first.device, dtype=first.dtype)
    k = taps.shape[-1]
    spectra = torch.fft.rfft(taps, n=fft_size(length, k))[torch.from_numpy(schedule.used).to(first.device)]
    source = _Source(read, length, first.shape[0], first.dtype, first.device)
    blocks = partial(_protected_blocks, source, spectra, k, schedule, FFT_BLOCK_ELEMENTS)
    _write_within_level(blocks, torch.clamp(peak, min=1.0), write)  # passes 2 and 3


def _uses_active_region(config: PosCUDAConfig) -> bool:
    return config.placement == "segments" and config.segment_region == "active"


@dataclass(frozen=True)
class _Schedule:
    """Where one clip's filters switch: segment ``j`` (between ``bounds[j-1]`` and ``bounds[j]``) gets filter
    ``used[which[j]]`` of its class; ``fade``-sample cross-fades are centred on the boundaries."""

    used: np.ndarray  # [U] the class filters the clip uses
    which: np.ndarray  # [n] each segment's filter, as an index into ``used``
    bounds: np.ndarray  # [n - 1] float64 sample positions, increasing, at least ``fade`` apart
    edges: np.ndarray  # [n - 1] each segment's first sample (after the first): segments tile the clip
    fade: float

    @classmethod
    def of(cls, length: int, start: int, stop: int, offsets: np.ndarray, order: np.ndarray, config: PosCUDAConfig,
           sampling_rate: int) -> _Schedule:
        """The schedule of a clip of ``length`` samples whose region (active region or clip) is ``[start, stop)``,
        from its class offsets and order (``[J]`` each, used cyclically)."""
        fade = config.crossfade_seconds * sampling_rate
        n = 1
        if config.placement == "segments":
            n = config.num_segments
            if config.segment_seconds is not None:
                n = max(n, math.ceil((stop - start) / (config.segment_seconds * sampling_rate)))
        J = len(offsets)
        sequence = order[np.arange(n) % J] if config.placement == "segments" else np.zeros(1, dtype=np.int64)
        used, which = np.unique(sequence, return_inverse=True)
        inner = np.arange(1, n)
        bounds = start + (stop - start) * (inner + offsets[(inner - 1) % J]) / n
        edges = np.clip(np.ceil(bounds), 0, length).astype(np.int64)
        which = which.reshape(-1).astype(np.int16)  # small: a long clip's blocks repeat it per sample
        return cls(used, which, bounds, edges, min(fade, float(np.diff(bounds).min())) if n > 2 else fade)


class _Source:
    """A clip read through ``read(start, stop)`` (see :func:`apply_segments_in_blocks`), zeros outside it."""

    def __init__(self, read: Callable[[int, int], torch.Tensor], length: int, channels: int, dtype: torch.dtype,
                 device: torch.device) -> None:
        self.read, self.length, self.channels, self.dtype, self.device = read, length, channels, dtype, device

    @classmethod
    def of(cls, x: torch.Tensor) -> _Source:
        """A clip held in memory, ``[channels, samples]``."""
        return cls(lambda a, b: x[:, a:b], x.shape[-1], x.shape[0], x.dtype, x.device)

    def padded(self, start: int, stop: int) -> torch.Tensor:
        """Samples ``[start, stop)``, zero before 0 and from ``length`` on."""
        lo, hi = max(start, 0), min(stop, self.length)
        if hi <= lo:
            return torch.zeros(self.channels, stop - start, dtype=self.dtype, device=self.device)
        parts = [self.read(lo, hi)]
        if lo > start:
            parts.insert(0, torch.zeros(self.channels, lo - start, dtype=self.dtype, device=self.device))
        if stop > hi:
            parts.append(torch.zeros(self.channels, stop - hi, dtype=self.dtype, device=self.device))
        return torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]


def _overlap_save(
    source: _Source, spectra: torch.Tensor, k: int, max_block_elements: int
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """Overlap-save convolution of a clip with the ``[U, F]`` filter ``spectra`` (of ``k``-tap filters), in groups
    of FFT blocks: yields ``(start, original, filtered)`` for consecutive sample ranges ``[start, start + m)``
    (``original`` ``[channels, m]``, ``filtered`` ``[U, channels, m]``) covering the clip.

    FFT block size, group size and each group's samples depend only on the clip's length, ``k``, ``U`` and the
    channels, however the clip is read; the input is read once, in order, the ``k - 1`` samples of context
    carried from one group to the next.
    """
    L, R, U = source.length, source.channels, spectra.shape[0]
    h = (k - 1) // 2
    n_fft = fft_size(L, k)
    hop = n_fft - k + 1
    nb = -(-L // hop)
    group = max(1, max_block_elements // (n_fft * R * U))
    carry = source.padded(-h, h)  # each group's input: samples [g0 * hop - h, g1 * hop + h)
    for g0 in range(0, nb, group):
        g1 = min(nb, g0 + group)
        segment = torch.cat([carry, source.padded(g0 * hop + h, g1 * hop + h)], dim=-1)
        block_spectra = torch.fft.rfft(segment.unfold(-1, n_fft, hop), n=n_fft)  # [R, g, F]
        filtered = torch.fft.irfft(block_spectra[None] * spectra[:, None, None, :], n=n_fft)[..., k - 1 :]
        m = min(g1 * hop, L) - g0 * hop
        yield g0 * hop, segment[:, h : h + m], filtered.reshape(U, R, -1)[..., :m]
        carry = segment[:, segment.shape[-1] - 2 * h :]


def _protected_blocks(
    source: _Source, spectra: torch.Tensor, k: int, schedule: _Schedule, max_block_elements: int
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """``(start, original, protected)`` for consecutive ranges of the clip: filtered, then cross-faded."""
    for start, original, filtered in _overlap_save(source, spectra, k, max_block_elements):
        yield start, original, _crossfade(filtered, schedule, start)


def _write_within_level(
    blocks: Callable[[], Iterator[tuple[int, torch.Tensor, torch.Tensor]]],
    limit: torch.Tensor,
    write: Callable[[int, torch.Tensor], None],
) -> None:
    """Write every block of one clip; if a sample passed ``limit`` (``[1]``, the clip's level), scale the clip's
    whole perturbation down by one factor and write every block again: what :func:`_limit_level` does to the
    whole clip. Blocks within the limit cannot lower that factor (see :func:`_min_room`), so it comes from the
    blocks that passed it, found in the first pass."""
    room = None
    for start, before, after in blocks():
        write(start, after)
        if bool(_peak(after[None]) > limit):
            block_room = _min_room(before[None], after[None], limit)
            room = block_room if room is None else torch.minimum(room, block_room)
    if room is None:
        return
    scale = torch.clamp(room, max=1.0)
    if not bool(scale < 1.0):
        return
    logger.debug("Scaled down the perturbation of a clip to stay within its level")
    for start, before, after in blocks():
        write(start, _scaled_back(before[None], after[None], limit, scale)[0])


def _crossfade(filtered: torch.Tensor, schedule: _Schedule, start: int) -> torch.Tensor:
    """Samples ``[start, start + m)`` of a clip whose segment ``j`` is ``filtered[which[j]]``
    (``filtered`` is ``[U, channels, m]``), with raised-cosine fades of ``fade`` samples centred on each boundary
    where the filter changes.

    Fades never overlap (boundaries are at least ``fade`` apart): away from them a sample is one filter's output,
    inside a fade it is ``(1 - w) a + w c`` with ``w`` rising from 0 to 1 across the fade. The per-sample weights
    of the range are built with numpy (each sample's weight depends only on its position in the clip, so any
    range gives the whole clip's values), then applied in one pass per filter.
    """
    U, m = filtered.shape[0], filtered.shape[-1]
    if U == 1:
        return filtered[0]
    which, bounds, edges, fade = schedule.which, schedule.bounds, schedule.edges, schedule.fade
    stop = start + m
    j0, j1 = np.searchsorted(edges, [start, stop - 1], side="right")  # the segments of the first and last sample
    local_edges = np.concatenate([[start], edges[j0:j1], [stop]]) - start
    segment_of_sample = np.repeat(which[j0 : j1 + 1], np.diff(local_edges))
    t = rise = where = None
    near = np.arange(*np.searchsorted(bounds, [start - fade / 2 - 1, stop + fade / 2 + 1]))
    moves = near[which[near] != which[near + 1]]  # only boundaries where the filter changes get a fade
    if fade > 0 and len(moves):  # all fades at once: the samples of the range within fade/2 of each boundary
        t0 = np.clip(np.ceil(bounds[moves] - fade / 2), start, stop).astype(np.int64)
        t1 = np.clip(np.floor(bounds[moves] + fade / 2) + 1, start, stop).astype(np.int64)
        counts = np.maximum(t1 - t0, 0)
        where = moves[np.repeat(np.arange(len(moves)), counts)]
        t = np.arange(counts.sum()) + np.repeat(t0 - (np.cumsum(counts) - counts), counts)  # positions in the clip
        rise = (0.5 + 0.5 * np.sin(np.pi * (t - bounds[where]) / fade)).astype(np.float32)  # |t - b| <= fade / 2
        t = t - start
    if U == 2:  # the common case: one lerp towards filter 1 by its weight
        w1 = (segment_of_sample == 1).astype(np.float32)
        if t is not None:
            w1[t] = np.where(which[where + 1] == 1, rise, 1.0 - rise)
        return torch.lerp(filtered[0], filtered[1], torch.from_numpy(w1).to(filtered.device, filtered.dtype))
    weights = (segment_of_sample[None, :] == np.arange(U)[:, None]).astype(np.float32)  # [U, m]
    if t is not None:
        weights[:, t] = 0.0
        weights[which[where], t] = 1.0 - rise
        weights[which[where + 1], t] = rise
    w_t = torch.from_numpy(weights).to(device=filtered.device, dtype=filtered.dtype)
    return (filtered * w_t[:, None, :]).sum(dim=0)


def fft_size(length: int, taps: int) -> int:
    """FFT block size of :func:`fft_filter` for a clip of ``length`` samples and a ``taps``-tap filter: the next
    power of two that holds the whole filtered clip, capped at the next power of two >= max(4096, 8 * taps)."""
    return min(1 << (length + taps - 2).bit_length(), max(4096, 1 << (8 * taps - 1).bit_length()))


def fft_filter(
    x: torch.Tensor, taps: torch.Tensor, max_block_elements: int | None = None, *, spectra: torch.Tensor | None = None
) -> torch.Tensor:
    """Centred convolution of ``x`` (``[channels, samples]``) with each filter in ``taps`` (``[U, k]``, k odd):
    ``out[u, c, i] = sum_t taps[u, t] * x[c, i + (k - 1) // 2 - t]``, zero outside the clip. With ``spectra``
    (``[U, F]``), ``taps`` only gives ``k``.

    Overlap-save with FFT blocks of :func:`fft_size` samples (a single block for short clips), processed in groups
    of about ``max_block_elements`` samples (default :data:`FFT_BLOCK_ELEMENTS`). Block size and grouping depend
    only on the clip's length and ``k``, so the result is a deterministic function of the clip alone. ``spectra``
    (``rfft(taps, n=fft_size(...))``) may be passed to reuse it across clips of the same length and class.
    """
    R, L = x.shape
    k = taps.shape[-1]
    H = torch.fft.rfft(taps, n=fft_size(L, k)) if spectra is None else spectra  # [U, F]
    out = torch.empty(H.shape[0], R, L, dtype=x.dtype, device=x.device)
    for start, _, filtered in _overlap_save(_Source.of(x), H, k, max_block_elements or FFT_BLOCK_ELEMENTS):
        out[..., start : start + filtered.shape[-1]] = filtered
    return out


# ---------------------------------------------------------------------- key + config, with cached tables
class PosCUDATransform:
    """The transform bound to a key and a config: labels in, each clip's class parameters looked up.

    Args:
        key (`PosCUDAKey`): the private key.
        config (`PosCUDAConfig`, *optional*): the knobs; defaults to ``PosCUDAConfig()``.

    Example:

    ```py
    >>> import torch
    >>> from hf_poscuda import PosCUDAKey
    >>> from hf_poscuda.transform import PosCUDATransform
    >>> t = PosCUDATransform(PosCUDAKey.generate())
    >>> x = torch.randn(2, 1, 8000) * 0.1
    >>> y = t(x, torch.tensor([8000, 6000]), torch.tensor([0, 3]), sampling_rate=8000)
    >>> y.shape == x.shape and y.dtype == x.dtype
    True
    ```
    """

    def __init__(self, key: PosCUDAKey, config: PosCUDAConfig | None = None) -> None:
        if not isinstance(key, PosCUDAKey):
            raise TypeError(f"key must be a PosCUDAKey, got {type(key).__name__}.")
        self.key = key
        self.config = config if config is not None else PosCUDAConfig()
        self._filters = np.zeros((0, self.config.kernel_size))
        self._positions = np.zeros((0, self.config.num_patches))
        self._banks: dict[int, np.ndarray] = {}  # by sampling rate: [classes, filters_per_class, taps]
        self._offsets = np.zeros((0, SCHEDULE_LENGTH))
        self._order = np.zeros((0, SCHEDULE_LENGTH), dtype=np.int64)

    def class_parameters(self, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
        """Patch placements: filters ``[num_classes, kernel_size]``, position fractions ``[num_classes, num_patches]``."""
        have = self._filters.shape[0]
        if num_classes > have:
            new = range(have, num_classes)
            self._filters = np.concatenate(
                [self._filters, np.stack([class_filter(self.key, self.config, c) for c in new])]
            )
            self._positions = np.concatenate(
                [self._positions, np.stack([class_positions(self.key, self.config, c) for c in new])]
            )
        return self._filters[:num_classes], self._positions[:num_classes]

    def class_banks(self, num_classes: int, sampling_rate: int) -> np.ndarray:
        """Segment and barcode filters: ``[num_classes, filters_per_class, taps]`` at ``sampling_rate``."""
        banks = self._banks.get(sampling_rate)
        if banks is None or banks.shape[0] < num_classes:
            # class c's filters depend on classes < c only, so a larger table keeps existing rows; it is rebuilt
            # at least twice as large, so labels that arrive in increasing order cost a few builds, not one each
            grow = num_classes if banks is None else max(num_classes, 2 * banks.shape[0])
            if self.config.filter_family == "designed" and self.key.design is not None:
                grow = max(num_classes, min(grow, self.key.design.num_classes))  # a design covers its classes only
            banks = class_filter_banks(self.key, self.config, grow, sampling_rate)
            self._banks[sampling_rate] = banks
        return banks[:num_classes]

    def class_schedules(self, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
        """Boundary offsets and filter order of every class, ``[num_classes, SCHEDULE_LENGTH]`` each."""
        have = self._offsets.shape[0]
        if num_classes > have:
            rows = [class_schedule(self.key, self.config, c) for c in range(have, num_classes)]
            self._offsets = np.concatenate([self._offsets, np.stack([r[0] for r in rows])])
            self._order = np.concatenate([self._order, np.stack([r[1] for r in rows])])
        return self._offsets[:num_classes], self._order[:num_classes]

    def protect_in_blocks(
        self,
        read: Callable[[int, int], torch.Tensor],
        write: Callable[[int, torch.Tensor], None],
        length: int,
        label: int,
        sampling_rate: int,
    ) -> None:
        """Protect one clip of class ``label`` read and written by blocks, in memory bounded by a block: the
        samples that calling the transform on the whole clip gives (segment and barcode configs only; see
        :func:`apply_segments_in_blocks` for ``read`` and ``write``)."""
        if not self.config.uses_fft_path:
            raise ValueError(
                f"Protecting by blocks needs a segment or barcode config (placement={self.config.placement!r}, "
                f"filter_family={self.config.filter_family!r} filters patches or whole clips in memory)."
            )
        if label < 0:
            raise ValueError(f"class indices must be >= 0, got {label}.")
        banks = self.class_banks(label + 1, sampling_rate)
        offsets, order = self.class_schedules(label + 1)
        apply_segments_in_blocks(read, write, length, torch.from_numpy(banks[label]), offsets[label], order[label],
                                 self.config, sampling_rate)

    def __call__(
        self,
        audio: torch.Tensor,
        lengths: torch.Tensor,
        labels: torch.Tensor,
        sampling_rate: int,
        *,
        inplace: bool = False,
    ) -> torch.Tensor:
        """Protect a padded batch ``[batch, channels, time]`` whose clips have class indices ``labels``."""
        labels = torch.as_tensor(labels, dtype=torch.long)
        if labels.numel() and int(labels.min()) < 0:
            raise ValueError(f"class indices must be >= 0, got {labels.tolist()}.")
        num_classes = int(labels.max()) + 1 if labels.numel() else 0
        idx = labels.cpu().numpy()
        if self.config.uses_fft_path:
            banks = (
                self.class_banks(num_classes, sampling_rate)
                if num_classes
                else np.zeros((0, self.config.filters_per_class, 1))
            )
            offsets, order = self.class_schedules(num_classes)
            return apply_segments(
                audio,
                torch.as_tensor(lengths),
                torch.from_numpy(banks[idx]),
                torch.from_numpy(offsets[idx]),
                torch.from_numpy(order[idx]),
                self.config,
                sampling_rate,
                inplace=inplace,
                groups=labels,
            )
        filters, positions = self.class_parameters(num_classes)
        return apply_poscuda(
            audio,
            torch.as_tensor(lengths),
            torch.from_numpy(filters[idx]),
            torch.from_numpy(positions[idx]),
            self.config,
            sampling_rate,
            inplace=inplace,
        )
