"""Designed signatures: the key file v2 keeps the table (0600, never in repr), protection reads it, configs and
keys that do not fit are refused, and the designer moves surrogate answers to each class's secret target."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
from typer.testing import CliRunner

from hf_poscuda import PRESETS, PosCUDAConfig, PosCUDAKey, protect_dataset
from hf_poscuda.cli import app
from hf_poscuda.designed import DesignedSignature
from hf_poscuda.errors import KeyFileError
from hf_poscuda.evaluation.design import DesignRecipe, design_signatures, nearest_targets, target_cycle
from hf_poscuda.sources import fsdd_mini_path, load_fsdd
from hf_poscuda.verify import verify_split

KEY = PosCUDAKey(bytes(range(32)))
DESIGNED = PosCUDAConfig(filter_family="designed")


def table(classes: int = 6, fill: float = -12.0) -> DesignedSignature:
    gains = np.zeros((classes, 16))
    for c in range(classes):
        gains[c, c % 16] = fill
        gains[c, (3 * c + 5) % 16] = 10.0
    return DesignedSignature(gains, 16, 200.0, 3600.0, info={"test": True})


@pytest.fixture(scope="module")
def speakers():
    return load_fsdd(fsdd_mini_path(), task="speakers")


def test_key_file_v2_round_trip_keeps_the_design_private(tmp_path):
    key = KEY.with_design(table())
    path = key.save(tmp_path / "k.key")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert path.read_text().splitlines()[0] == "hf-poscuda-key v2"
    loaded = PosCUDAKey.load(path)
    assert loaded == key and loaded != KEY and loaded.key_id == KEY.key_id  # the id depends on the secret only
    assert loaded.design.design_id == key.design.design_id
    np.testing.assert_array_equal(loaded.design.static_db, key.design.static_db)
    assert "static_db" not in repr(loaded) and "-12" not in repr(loaded.design)
    KEY.save_replacing(path)  # back to v1, atomically, still private
    assert PosCUDAKey.load(path).design is None and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    damaged = tmp_path / "bad.key"
    damaged.write_text(f"hf-poscuda-key v2\n{'ab' * 32}\n{{not json\n")
    damaged.chmod(0o600)
    with pytest.raises(KeyFileError, match="designed-signature line"):
        PosCUDAKey.load(damaged)


def test_protection_reads_the_design_and_refuses_what_does_not_fit(speakers):
    labels = speakers["train"]["label"]
    rows = speakers["train"].select([labels.index(c) for c in range(6)] * 2)  # every speaker, twice
    designed, _ = protect_dataset(rows, KEY.with_design(table()), DESIGNED, snr_clips=1)
    other, _ = protect_dataset(rows, KEY.with_design(table(fill=-20.0)), DESIGNED, snr_clips=1)
    plain, _ = protect_dataset(rows, KEY, snr_clips=1)
    audio = lambda d: [a["bytes"] for a in d.cast_column("audio", __import__("datasets").Audio(decode=False))["audio"]]
    assert audio(designed) != audio(other) and audio(designed) != audio(plain)
    with pytest.raises(ValueError, match="hf-poscuda design"):
        protect_dataset(rows, KEY, DESIGNED, snr_clips=1)
    with pytest.raises(ValueError, match="covers 3 classes"):
        protect_dataset(rows, KEY.with_design(table(classes=3)), DESIGNED, snr_clips=1)
    with pytest.raises(ValueError, match="bands"):
        protect_dataset(rows, KEY.with_design(table()), DESIGNED.replace(num_bands=12, vary_from_band=6), snr_clips=1)
    with pytest.raises(ValueError, match="budget"):
        protect_dataset(rows, KEY.with_design(table()), DESIGNED.replace(boost_db=6.0), snr_clips=1)
    assert PRESETS["designed"] == DESIGNED and "designed against surrogate models" in DESIGNED.describe()


def test_verify_finds_a_designed_copy(speakers):
    key = KEY.with_design(table())
    protected, _ = protect_dataset(speakers["test"], key, DESIGNED, snr_clips=1)
    assert verify_split(protected, key, DESIGNED).protected
    assert not verify_split(speakers["test"], key, DESIGNED).protected


def test_target_cycle_is_one_cycle_without_fixed_points():
    for classes in (2, 6, 10):
        sigma = target_cycle(KEY, classes)
        assert sorted(sigma) == list(range(classes)) and all(sigma != np.arange(classes))
        seen, c = set(), 0
        for _ in range(classes):
            seen.add(c)
            c = sigma[c]
        assert len(seen) == classes  # a single cycle through every class


def test_nearest_targets_take_the_best_assignment_without_fixed_points():
    affinity = np.array([[9.0, 1.0, 5.0], [4.0, 9.0, 0.0], [0.0, 3.0, 9.0]])  # the diagonal would win everywhere
    assert nearest_targets(affinity).tolist() == [2, 0, 1]  # 5 + 4 + 3, the best total of the derangements
    assert nearest_targets(np.array([[0.0, -7.0], [-3.0, 0.0]])).tolist() == [1, 0]
    with pytest.raises(ValueError, match="square"):
        nearest_targets(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="targets must be one of"):
        DesignRecipe(targets="random")


def test_nearest_targets_design_runs_and_says_so(speakers):
    recipe = DesignRecipe(surrogates=("raw_cnn",), steps=5, surrogate_epochs=1, targets="nearest")
    design = design_signatures(speakers["train"], KEY, DESIGNED, recipe)
    assert design.info["targets"] == "nearest" and design.info["recipe"]["targets"] == "nearest"


def test_error_minimising_design_makes_the_filter_what_a_surrogate_learns(speakers):
    recipe = DesignRecipe(surrogates=("raw_cnn",), steps=120, batch_size=32, objective="minimise")
    design = design_signatures(speakers["train"], KEY, DESIGNED, recipe)
    assert design.method == "minimise" and design.info["recipe"]["objective"] == "minimise"
    assert design.static_db.min() >= -30 and design.static_db.max() <= 12
    # the surrogate trained beside the gains reads the protected clips well and the clean ones much worse
    assert design.info["raw_cnn_protected_accuracy"] >= design.info["raw_cnn_clean_accuracy"] + 0.2
    both = design_signatures(speakers["train"], KEY, DESIGNED, DesignRecipe(surrogates=("raw_cnn",), steps=5,
                                                                         surrogate_epochs=1, objective="both"))
    assert both.method == "both" and {"raw_cnn_takes_target", "raw_cnn_protected_accuracy"} <= set(both.info)
    with pytest.raises(ValueError, match="objective must be one of"):
        DesignRecipe(objective="maximise")
    with pytest.raises(ValueError, match="leave targets at 'cycle'"):
        DesignRecipe(objective="minimise", targets="nearest")


def test_the_quality_weight_keeps_the_filters_quieter(speakers):
    loud, quiet = (design_signatures(speakers["train"], KEY, DESIGNED,
                                     DesignRecipe(surrogates=("raw_cnn",), steps=60, surrogate_epochs=1,
                                                  quality_weight=weight)) for weight in (0.0, 0.3))
    assert np.abs(quiet.static_db).mean() < 0.5 * np.abs(loud.static_db).mean()
    assert quiet.info["recipe"]["quality_weight"] == 0.3
    with pytest.raises(ValueError, match="quality_weight must be >= 0"):
        DesignRecipe(quality_weight=-1.0)


def test_the_designer_moves_surrogate_answers_to_the_targets(speakers):
    recipe = DesignRecipe(surrogates=("raw_cnn",), steps=80, surrogate_epochs=4)
    first = design_signatures(speakers["train"], KEY, DESIGNED, recipe)
    assert first.static_db.shape == (6, 16) and first.static_db.min() >= -30 and first.static_db.max() <= 12
    assert first.info["raw_cnn_takes_target"] > 1 / 6  # more than chance: the design pulls towards the targets
    assert design_signatures(speakers["train"], KEY, DESIGNED, recipe) == first  # deterministic per key


def test_design_cli_writes_the_table_into_the_key(tmp_path, speakers):
    speakers.save_to_disk(tmp_path / "data")
    path = tmp_path / "my.key"
    KEY.save(path)
    result = CliRunner().invoke(app, ["design", str(tmp_path / "data"), "--key", str(path), "--split", "train",
                                      "--surrogates", "raw_cnn", "--steps", "5"])
    assert result.exit_code == 0, result.output
    loaded = PosCUDAKey.load(path)
    assert loaded.design is not None and loaded.design.design_id in result.output
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and not KEY.appears_in(result.output.encode())
    result = CliRunner().invoke(app, ["design", str(tmp_path / "data"), "--key", str(path), "--preset", "default",
                                      "--split", "train"])
    assert result.exit_code == 1 and "--preset designed" in result.output
