from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest
import yaml

from hf_poscuda.card import render_card, template_text
from hf_poscuda.protect import protect_dataset
from tests.conftest import make_dataset


def test_card_renders_measured_numbers_and_no_secret(key):
    _, summary = protect_dataset(make_dataset(6), key)
    card = render_card({"train": summary}, source="user/speech", license="cc-by-4.0")
    header = yaml.safe_load(card.split("---")[1])
    assert header["license"] == "cc-by-4.0" and "poscuda" in header["tags"]
    assert f"`{key.key_id}`" in card and f"6 clips, SNR {summary.snr_db:.1f} dB" in card
    assert bytes(range(32)).hex() not in card
    assert "Not measured for this dataset" in card  # no evaluation given: the card must not claim success


def test_card_needs_one_key(key, other_key):
    _, a = protect_dataset(make_dataset(4), key)
    _, b = protect_dataset(make_dataset(4), other_key)
    with pytest.raises(ValueError, match="one key"):
        render_card({"train": a, "test": b})


def test_wheel_ships_cards_data_and_py_typed(tmp_path):
    pytest.importorskip("hatchling")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path)],
        check=True,
    )
    (wheel,) = tmp_path.glob("hf_poscuda-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "hf_poscuda/cards/dataset_card.md" in names and "hf_poscuda/py.typed" in names
    assert "hf_poscuda/data/fsdd_mini/train/3_theo_5.wav" in names
    assert "hf_poscuda/data/fsdd_mini/ATTRIBUTION.md" in names
    assert zipfile.ZipFile(wheel).read("hf_poscuda/cards/dataset_card.md").decode() == template_text()
