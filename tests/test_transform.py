from __future__ import annotations

import pytest
import torch

from hf_poscuda import PosCUDAConfig, PosCUDATransform, apply_poscuda
from hf_poscuda.transform import class_filter

SR = 8000
TAPS = PosCUDAConfig.from_preset("v0.1")  # random taps: the patch placements and the direct FIR path


def batch(seed: int = 0, b: int = 6, c: int = 1, t: int = 8000, lengths=None):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, c, t, generator=g) * 0.2
    lengths = torch.tensor(lengths if lengths is not None else [t] * b)
    x = torch.where(torch.arange(t)[None, None, :] < lengths[:, None, None], x, 0.0)
    return x, lengths


def changed_runs(row: torch.Tensor) -> list[tuple[int, int]]:
    """Contiguous runs (start, stop) of changed samples in a boolean [T] vector."""
    idx = torch.nonzero(row).flatten().tolist()
    runs = []
    for i in idx:
        if runs and runs[-1][1] == i:
            runs[-1][1] = i + 1
        else:
            runs.append([i, i + 1])
    return [tuple(r) for r in runs]


def test_shape_dtype_and_only_patch_samples_change(key):
    cfg = TAPS.replace(patch_seconds=0.05, num_patches=3, placement="relative")
    x, lengths = batch(t=8000)
    y = PosCUDATransform(key, cfg)(x, lengths, torch.arange(6) % 3, SR)
    assert y.shape == x.shape and y.dtype == x.dtype
    p = 400
    for row in (y != x)[:, 0]:
        runs = changed_runs(row)
        assert 1 <= len(runs) <= 3
        assert all(stop - start <= p for start, stop in runs)
        assert int(row.sum()) > 0.9 * 3 * p  # a random signal changes almost every patch sample


def test_relative_patches_land_in_their_segments(key):
    cfg = TAPS.replace(patch_seconds=0.02, num_patches=4, placement="relative")
    x, lengths = batch(b=1, t=8000)
    y = PosCUDATransform(key, cfg)(x, lengths, torch.tensor([0]), SR)
    runs = changed_runs((y != x)[0, 0])
    assert len(runs) == 4
    for j, (start, stop) in enumerate(runs):
        assert j * 2000 <= start and stop <= (j + 1) * 2000


def test_same_class_same_positions_other_class_differs(key):
    cfg = TAPS.replace(patch_seconds=0.02, num_patches=2, placement="relative")
    x, lengths = batch(b=3)
    y = PosCUDATransform(key, cfg)(x, lengths, torch.tensor([1, 1, 2]), SR)
    masks = (y != x)[:, 0]
    assert changed_runs(masks[0]) == changed_runs(masks[1])
    assert changed_runs(masks[0]) != changed_runs(masks[2])


def test_filter_is_a_convolution_with_the_class_filter(key):
    """Inside a patch, the output equals the class filter applied to the original (same-length convolution)."""
    cfg = TAPS.replace(placement="whole", kernel_size=5, normalization="sum")
    x, lengths = batch(b=1, t=400)
    y = PosCUDATransform(key, cfg)(x, lengths, torch.tensor([2]), SR)
    taps = torch.tensor(class_filter(key, cfg, 2), dtype=torch.float64)
    ref = torch.nn.functional.conv1d(x.double(), torch.flip(taps, [0])[None, None], padding=2)
    torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-6)


def test_result_does_not_depend_on_batch_composition(key):
    cfg = TAPS.replace(num_patches=4, placement="active", edge_seconds=0.01, match_rms=True, kernel_size=33)
    x, lengths = batch(b=5, lengths=[8000, 300, 5000, 7999, 1])
    labels = torch.tensor([0, 1, 2, 3, 4])
    t = PosCUDATransform(key, cfg)
    together = t(x, lengths, labels, SR)
    for i in range(5):
        alone = t(x[i : i + 1, :, : int(lengths[i])], lengths[i : i + 1], labels[i : i + 1], SR)
        assert torch.equal(alone, together[i : i + 1, :, : int(lengths[i])])


def test_deterministic_for_a_key_and_different_for_another(key, other_key):
    x, lengths = batch()
    labels = torch.arange(6) % 2
    a = PosCUDATransform(key, TAPS)(x, lengths, labels, SR)
    b = PosCUDATransform(key, TAPS)(x, lengths, labels, SR)
    c = PosCUDATransform(other_key, TAPS)(x, lengths, labels, SR)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_padding_and_short_clips(key):
    cfg = TAPS.replace(patch_seconds=0.1, placement="relative")  # 800 samples: longer than the 300-sample clip
    x, lengths = batch(b=2, lengths=[8000, 300])
    y = PosCUDATransform(key, cfg)(x, lengths, torch.tensor([0, 1]), SR)
    assert torch.equal(y[1, :, 300:], x[1, :, 300:])  # padding untouched
    assert (y[1, 0, :300] != x[1, 0, :300]).float().mean() > 0.9  # the whole short clip is filtered
    # a batch of clips all shorter than the patch
    y2 = PosCUDATransform(key, cfg)(x[1:, :, :300], lengths[1:], torch.tensor([1]), SR)
    assert torch.equal(y2, y[1:, :, :300])


def test_absolute_offsets_are_clamped_inside_the_clip(key):
    cfg = PosCUDAConfig.from_preset("paper", max_offset_seconds=10.0)
    x, lengths = batch(b=4, t=4000)
    y = PosCUDATransform(key, cfg)(x, lengths, torch.arange(4), SR)
    for row in (y != x)[:, 0]:
        (start, stop), = changed_runs(row)
        assert stop - start <= 400 and stop <= 4000


def test_active_placement_stays_inside_the_active_region(key):
    t = torch.arange(8000)
    x = torch.zeros(4, 1, 8000)
    x[:, 0, 3000:5000] = 0.5 * torch.sin(t[3000:5000] * 0.3)  # speech only in the middle
    cfg = TAPS.replace(patch_seconds=0.02, num_patches=3, placement="active")
    y = PosCUDATransform(key, cfg)(x, torch.tensor([8000] * 4), torch.arange(4), SR)
    changed = torch.nonzero((y != x)[:, 0])[:, 1]
    assert changed.numel() > 0 and int(changed.min()) >= 2960 and int(changed.max()) < 5040
    relative = PosCUDATransform(key, cfg.replace(placement="relative"))(x, torch.tensor([8000] * 4), torch.arange(4), SR)
    assert int((relative != x).sum()) < int((y != x).sum())  # relative patches mostly hit silence


def test_never_clips(key):
    cfg = TAPS.replace(placement="whole", filter_family="signed", blur_factor=1.0, kernel_size=33)
    x = torch.sign(torch.randn(3, 2, 4000)) * 0.99  # near full scale: the filter's gain would exceed 1
    y = PosCUDATransform(key, cfg)(x, torch.tensor([4000] * 3), torch.arange(3), SR)
    assert float(y.abs().max()) <= 1.0
    assert not torch.equal(y, x)
    loud = x * 3.0  # float audio above 1.0: the clip's own peak is the limit
    y = PosCUDATransform(key, cfg)(loud, torch.tensor([4000] * 3), torch.arange(3), SR)
    assert float(y.abs().amax()) <= float(loud.abs().amax())


def test_edges_fade_smoothly(key):
    x = 0.3 * torch.sin(torch.arange(8000) * 0.05)[None, None, :]
    hard = PosCUDATransform(
        key, TAPS.replace(patch_seconds=0.05, placement="relative", filter_family="signed", kernel_size=33)
    )
    soft = PosCUDATransform(
        key,
        TAPS.replace(
            patch_seconds=0.05, placement="relative", filter_family="signed", kernel_size=33, edge_seconds=0.01
        ),
    )
    args = (torch.tensor([8000]), torch.tensor([0]), SR)
    jump = lambda y: float((y[0, 0, 1:] - y[0, 0, :-1]).abs().max())  # noqa: E731
    assert jump(soft(x, *args)) < jump(hard(x, *args))


def test_match_rms_preserves_patch_energy(key):
    cfg = TAPS.replace(placement="whole", blur_factor=0.3, kernel_size=9, match_rms=True)
    x, lengths = batch(b=3)
    y = PosCUDATransform(key, cfg)(x, lengths, torch.arange(3), SR)
    torch.testing.assert_close(y.pow(2).sum(-1), x.pow(2).sum(-1), rtol=1e-4, atol=1e-6)


def test_stereo_channels_share_positions(key):
    x, lengths = batch(b=2, c=2)
    y = PosCUDATransform(key, TAPS.replace(num_patches=2, placement="relative"))(x, lengths, torch.tensor([0, 1]), SR)
    mask = y != x
    assert torch.equal(mask[:, 0], mask[:, 1])


@pytest.mark.parametrize("bad", ["lengths", "filters", "shape", "labels"])
def test_bad_tensor_arguments(key, bad):
    x, lengths = batch(b=2)
    cfg = TAPS
    filters = torch.ones(2, cfg.kernel_size)
    positions = torch.zeros(2, 1)
    with pytest.raises(ValueError):
        if bad == "lengths":
            apply_poscuda(x, torch.tensor([9000, 10]), filters, positions, cfg, SR)
        elif bad == "filters":
            apply_poscuda(x, lengths, torch.ones(2, 3), positions, cfg, SR)
        elif bad == "shape":
            apply_poscuda(x[0], lengths, filters, positions, cfg, SR)
        else:
            PosCUDATransform(key)(x, lengths, torch.tensor([-1, 0]), SR)


def test_empty_batch(key):
    x = torch.zeros(0, 1, 100)
    assert PosCUDATransform(key)(x, torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), SR).shape == x.shape


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_and_keeps_device_dtype(key):
    cfg = TAPS.replace(num_patches=4, placement="active", edge_seconds=0.01, kernel_size=33, match_rms=True)
    x, lengths = batch(b=8, lengths=[8000, 300, 5000, 7999, 1, 8000, 4000, 100])
    labels = torch.arange(8) % 5
    cpu = PosCUDATransform(key, cfg)(x, lengths, labels, SR)
    gpu = PosCUDATransform(key, cfg)(x.cuda(), lengths.cuda(), labels.cuda(), SR)
    assert gpu.device.type == "cuda" and gpu.dtype == x.dtype and gpu.shape == x.shape
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-5, atol=1e-6)
