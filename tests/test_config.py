from __future__ import annotations

import pytest

from hf_poscuda import PRESETS, PosCUDAConfig


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"patch_seconds": 0}, "patch_seconds"),
        ({"patch_seconds": float("nan")}, "patch_seconds"),
        ({"num_patches": 0}, "num_patches"),
        ({"num_patches": 2.0}, "num_patches"),
        ({"placement": "middle"}, "placement must be one of"),
        ({"kernel_size": 8}, "odd"),
        ({"kernel_size": True}, "kernel_size"),
        ({"blur_factor": -0.1}, "blur_factor"),
        ({"filter_family": "gauss"}, "filter_family"),
        ({"normalization": "max"}, "normalization"),
        ({"edge_seconds": 0.03, "patch_seconds": 0.05, "placement": "relative"}, "at most half"),
        ({"active_threshold_db": 5}, "active_threshold_db"),
    ],
)
def test_invalid_knobs_raise_clear_errors(changes, message):
    with pytest.raises(ValueError, match=message):
        PosCUDAConfig(**changes)


def test_presets_and_overrides():
    assert PRESETS["paper"].placement == "absolute" and PRESETS["cuda"].placement == "whole"
    cfg = PosCUDAConfig.from_preset("paper", kernel_size=33)
    assert cfg.kernel_size == 33 and cfg.placement == "absolute"
    with pytest.raises(ValueError, match="Unknown preset"):
        PosCUDAConfig.from_preset("nope")
    assert PosCUDAConfig().to_dict()["kernel_size"] == PosCUDAConfig().kernel_size
    with pytest.raises(ValueError):
        PosCUDAConfig().replace(kernel_size=4)
