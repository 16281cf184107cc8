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
    if config.filter_family == "barcode":
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
    def peak(x: torch.Tensor) -> torch.Tensor:  # max |x| per clip, without an |x| temporary
        if x.shape[0] == 1:  # one clip: the flat reduction (the per-row one is ~20x slower on one long row)
            low, high = torch.aminmax(x)
            return torch.maximum(high, -low).reshape(1)
        low, high = torch.aminmax(x.reshape(x.shape[0], -1), dim=-1)
        return torch.maximum(high, -low)

    limit = torch.clamp(peak(before), min=1.0)  # [B]
    if not bool((peak(after) > limit).any()):
        return None
    lim, b64 = limit.to(torch.float64)[:, None, None], before.to(torch.float64)
    d = after.to(torch.float64) - b64
    inf = torch.full_like(d, math.inf)
    room = torch.where(d > 0, (lim - b64) / d, torch.where(d < 0, (-lim - b64) / d, inf))
    scale = torch.clamp(room.amin(dim=(1, 2)), max=1.0)[:, None, None]
    logger.debug("Scaled down the perturbation of %d clip(s) to stay within their level", int((scale < 1).sum()))
    scaled = torch.clamp(b64 + scale * d, -lim, lim).to(after.dtype)
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
    B, C, T = x.shape
    frame = max(1, round(config.frame_seconds * sr))
    nf = -(-T // frame)
    if bool((lengths < T).any()):  # samples after a clip's end must not count
        x = torch.where(torch.arange(T, device=x.device)[None, None, :] < lengths[:, None, None], x, 0.0)
    full = T // frame  # frame energies without copying the batch: whole frames as a view, the last one apart
    power = torch.zeros(B, nf, dtype=torch.float64, device=x.device)
    if full:
        norms = torch.linalg.vector_norm(x[..., : full * frame].reshape(B, C, full, frame), dim=-1)
        power[:, :full] = norms.pow(2).sum(dim=1).to(torch.float64)
    if nf > full:
        power[:, full] = x[..., full * frame :].pow(2).sum(dim=(1, 2)).to(torch.float64)
    frame_ok = torch.arange(nf, device=x.device)[None, :] * frame < lengths[:, None]
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
    and the filter length), one clip at a time, so its result is bit-identical whatever batch it came in; the
    filtering's temporaries are a few times one clip (the active region is found for the whole batch at once).

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
    segments = config.placement == "segments"
    if segments and config.segment_region == "active":
        lo, hi = _active_region(audio, lengths, config, sampling_rate)
    else:
        lo, hi = torch.zeros_like(lengths), lengths
    taps = banks.to(device=audio.device, dtype=audio.dtype)
    offsets_np = offsets.detach().cpu().numpy().astype(np.float64)
    order_np = order.detach().cpu().numpy().astype(np.int64)
    groups_list = groups.tolist() if groups is not None else None
    J = offsets_np.shape[1]
    spectra_cache: dict[tuple[int, int], torch.Tensor] = {}
    fade = config.crossfade_seconds * sampling_rate
    seg_len = None if config.segment_seconds is None else config.segment_seconds * sampling_rate
    for b, (n_samples, start, stop) in enumerate(zip(lengths.tolist(), lo.tolist(), hi.tolist(), strict=True)):
        if n_samples == 0:
            continue
        x = audio[b, :, :n_samples]
        n = 1
        if segments:
            n = config.num_segments
            if seg_len is not None:
                n = max(n, math.ceil((stop - start) / seg_len))
        sequence = order_np[b, np.arange(n) % J] if segments else np.zeros(1, dtype=np.int64)
        used, which = np.unique(sequence, return_inverse=True)
        used_t = torch.from_numpy(used).to(taps.device)
        spectra = None
        if groups_list is not None:  # clips of one class and length share their filters' spectra
            cache_key = (int(groups_list[b]), fft_size(n_samples, taps.shape[-1]))
            if cache_key not in spectra_cache:
                spectra_cache[cache_key] = torch.fft.rfft(taps[b], n=cache_key[1])
            spectra = spectra_cache[cache_key][used_t]
        filtered = fft_filter(x, taps[b, used_t] if spectra is None else taps[b, :1], spectra=spectra)
        if n == 1:
            out = filtered[0]
        else:
            inner = np.arange(1, n)
            bounds = start + (stop - start) * (inner + offsets_np[b, (inner - 1) % J]) / n
            out = _crossfade(filtered, which, bounds, min(fade, float(np.diff(bounds).min())) if n > 2 else fade)
        scaled = _limit_level(x[None], out[None])  # one clip: a flat check, ``None`` in the common case
        y[b, :, :n_samples] = out if scaled is None else scaled[0]
    return y


def _crossfade(filtered: torch.Tensor, which: np.ndarray, bounds: np.ndarray, fade: float) -> torch.Tensor:
    """Segment ``j`` (between ``bounds[j-1]`` and ``bounds[j]``) is ``filtered[which[j]]``; raised-cosine fades of
    ``fade`` samples centred on each boundary.

    ``bounds`` (``[n - 1]``, float64 sample positions, increasing) are at least ``fade`` apart, so fades never
    overlap: away from them a sample is one filter's output, inside a fade it is ``(1 - w) a + w c`` with ``w``
    rising from 0 to 1 across the fade. The per-sample weights of each filter are built with numpy (cheap, few
    calls per segment), then applied in one pass per filter.
    """
    U, C, L = filtered.shape
    if U == 1:
        return filtered[0]
    edges = np.concatenate([[0], np.clip(np.ceil(bounds), 0, L), [L]]).astype(np.int64)
    segment_of_sample = np.repeat(which, np.diff(edges))  # segments tile [0, L)
    t = rise = where = None
    moves = np.flatnonzero(which[:-1] != which[1:])  # only boundaries where the filter changes get a fade
    if fade > 0 and len(moves):  # all fades at once: the samples within fade/2 of each such boundary
        t0 = np.clip(np.ceil(bounds[moves] - fade / 2), 0, L).astype(np.int64)
        counts = np.maximum(np.clip(np.floor(bounds[moves] + fade / 2) + 1, 0, L).astype(np.int64) - t0, 0)
        where = moves[np.repeat(np.arange(len(moves)), counts)]
        t = np.arange(counts.sum()) + np.repeat(t0 - (np.cumsum(counts) - counts), counts)
        rise = (0.5 + 0.5 * np.sin(np.pi * (t - bounds[where]) / fade)).astype(np.float32)  # |t - b| <= fade / 2
    if U == 2:  # the common case: one lerp towards filter 1 by its weight
        w1 = (segment_of_sample == 1).astype(np.float32)
        if t is not None:
            w1[t] = np.where(which[where + 1] == 1, rise, 1.0 - rise)
        return torch.lerp(filtered[0], filtered[1], torch.from_numpy(w1).to(filtered.device, filtered.dtype))
    weights = (segment_of_sample[None, :] == np.arange(U)[:, None]).astype(np.float32)  # [U, L]
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
    x: torch.Tensor, taps: torch.Tensor, max_block_elements: int = 1 << 22, *, spectra: torch.Tensor | None = None
) -> torch.Tensor:
    """Centred convolution of ``x`` (``[channels, samples]``) with each filter in ``taps`` (``[U, k]``, k odd):
    ``out[u, c, i] = sum_t taps[u, t] * x[c, i + (k - 1) // 2 - t]``, zero outside the clip. With ``spectra``
    (``[U, F]``), ``taps`` only gives ``k``.

    Overlap-save with FFT blocks of :func:`fft_size` samples (a single block for short clips), processed in groups
    of about ``max_block_elements`` samples. Block size and grouping depend only on the clip's length and ``k``,
    so the result is a deterministic function of the clip alone. ``spectra`` (``rfft(taps, n=fft_size(...))``)
    may be passed to reuse it across clips of the same length and class.
    """
    R, L = x.shape
    k = taps.shape[-1]
    h = (k - 1) // 2
    n_fft = fft_size(L, k)
    hop = n_fft - k + 1
    nb = -(-L // hop)
    xr = F.pad(x, (h, nb * hop + k - 1 - h - L))
    H = torch.fft.rfft(taps, n=n_fft) if spectra is None else spectra  # [U, F]
    U = H.shape[0]
    out = torch.empty(U, R, nb * hop, dtype=x.dtype, device=x.device)
    group = max(1, max_block_elements // (n_fft * R * U))
    for g0 in range(0, nb, group):
        g1 = min(nb, g0 + group)
        blocks = xr[:, g0 * hop : (g1 - 1) * hop + n_fft].unfold(-1, n_fft, hop)  # [R, g, n_fft]
        block_spectra = torch.fft.rfft(blocks, n=n_fft)
        filtered = torch.fft.irfft(block_spectra[None] * H[:, None, None, :], n=n_fft)[..., k - 1 :]
        out[:, :, g0 * hop : g1 * hop] = filtered.reshape(U, R, -1)
    return out[..., :L]


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
