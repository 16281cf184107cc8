"""The PosCUDA transform in pure torch: a padded batch in, the protected batch out. Knows nothing of `datasets`.

One call processes a whole batch with tensor operations (no Python loop over clips): a loop over the
``num_patches`` patches and over the filter taps, each step vectorised over the batch. The FIR filter is computed
as a sum of shifted, scaled copies (elementwise multiply then add), so each clip's result is bit-identical
whatever batch it is in, on a given device.
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
def class_filter(key: PosCUDAKey, config: PosCUDAConfig, class_index: int) -> np.ndarray:
    """The ``kernel_size`` filter taps (float64) of one class, derived from the key."""
    k = config.kernel_size
    u = key.uniform("filter", class_index, k)
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
    x = torch.where(torch.arange(T, device=x.device)[None, None, :] < lengths[:, None, None], x, 0.0)
    power = F.pad(x, (0, nf * frame - T)).to(torch.float64).pow(2).mean(dim=1).reshape(B, nf, frame).mean(dim=-1)
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

    def class_parameters(self, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
        """Filters ``[num_classes, kernel_size]`` and position fractions ``[num_classes, num_patches]``."""
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
        filters, positions = self.class_parameters(int(labels.max()) + 1 if labels.numel() else 0)
        idx = labels.cpu().numpy()
        return apply_poscuda(
            audio,
            torch.as_tensor(lengths),
            torch.from_numpy(filters[idx]),
            torch.from_numpy(positions[idx]),
            self.config,
            sampling_rate,
            inplace=inplace,
        )
