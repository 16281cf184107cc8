"""`hf-poscuda verify`: key id on record, byte comparison with the original, and the blind check from audio alone."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import soundfile as sf
from datasets import Audio, load_dataset
from typer.testing import CliRunner

from hf_poscuda import PosCUDAConfig, PosCUDAKey, protect_dataset
from hf_poscuda.cli import app
from hf_poscuda.sources import fsdd_mini_path, load_audio_dataset, load_fsdd_mini
from hf_poscuda.verify import blind_check, decoy_key, verify, verify_split

runner = CliRunner()
KEY = PosCUDAKey(bytes(range(32)))


@pytest.fixture(scope="module")
def fsdd_test():
    return load_fsdd_mini()["test"]  # 120 clips, 10 digits, 8 kHz


@pytest.fixture(scope="module")
def protected(fsdd_test):
    return protect_dataset(fsdd_test, KEY)[0]


def test_blind_check_finds_its_key_and_not_clean_audio_or_another_key(fsdd_test, protected):
    mine = verify_split(protected, KEY).blind
    assert mine.protected and mine.agreement >= 0.9 and mine.z >= 6 and mine.agreement > mine.decoy_max
    clean = verify_split(fsdd_test, KEY).blind
    assert not clean.protected and clean.agreement < 0.3
    other = verify_split(protected, PosCUDAKey(bytes(range(1, 33)))).blind
    assert not other.protected and other.agreement < 0.35
    assert verify_split(fsdd_test, KEY).protected is False


def test_blind_check_decoys_are_public_and_fixed():
    assert decoy_key(3) == decoy_key(3) and decoy_key(3) != decoy_key(4)
    with pytest.raises(ValueError, match="as many labels as clips"):
        blind_check([np.zeros(800)], [0, 1], 8000, KEY, PosCUDAConfig(), 10)


def test_byte_check_counts_identical_differing_and_missing_rows(fsdd_test, protected):
    result = verify_split(protected, KEY, original=fsdd_test)
    assert (result.bytes.identical, result.bytes.differing, result.bytes.missing) == (120, 0, 0) and result.protected
    raw = protected.cast_column("audio", Audio(decode=False))

    def halve_row_5(item, row):
        if row == 5:
            data, sr = sf.read(io.BytesIO(item["audio"]["bytes"]), dtype="float32")
            buf = io.BytesIO()
            sf.write(buf, data * 0.5, sr, format="WAV", subtype="FLOAT")
            item["audio"] = {"bytes": buf.getvalue(), "path": item["audio"]["path"]}
        return item

    tampered = raw.map(halve_row_5, with_indices=True).cast_column("audio", Audio())
    changed = verify_split(tampered, KEY, original=fsdd_test)
    assert (changed.bytes.identical, changed.bytes.differing, changed.bytes.missing) == (119, 1, 0)
    assert not changed.protected
    short = verify_split(protected.select(range(100)), KEY, original=fsdd_test)
    assert (short.bytes.identical, short.bytes.missing) == (100, 20) and not short.protected
    longer = verify_split(protected, KEY, original=fsdd_test.select(range(110)))
    assert (longer.bytes.identical, longer.bytes.differing, longer.bytes.missing) == (110, 10, 0)
    assert not longer.protected


def test_the_embedded_subset_loads_with_digit_labels():
    """Its audiofolder metadata.csv sits next to train/ and test/ folders, which audiofolder would take for labels."""
    loaded = load_audio_dataset(str(fsdd_mini_path()))
    assert loaded["test"].features["label"].names == [str(d) for d in range(10)]
    assert (len(loaded["train"]), len(loaded["test"])) == (240, 120)


@pytest.fixture
def key_file(tmp_path):
    """A fixed key (the blind check's margins were measured on public keys; a random key would make the test draw
    a new one each run)."""
    path = tmp_path / "keys" / "my.key"
    path.parent.mkdir()
    KEY.save(path)
    return path


def test_cli_exit_codes_and_no_secret(tmp_path, key_file):
    copy = tmp_path / "copy"
    done = runner.invoke(app, ["protect", str(fsdd_mini_path()), str(copy), "--key", str(key_file), "--split", "test"])
    assert done.exit_code == 0, done.output
    key = PosCUDAKey.load(key_file)

    mine = runner.invoke(app, ["verify", str(copy), "--key", str(key_file)])
    assert mine.exit_code == 0, mine.output
    assert f"PROTECTED with key {key.key_id}" in mine.output and "key id on record" in mine.output
    assert "(matches)" in mine.output

    clean = runner.invoke(app, ["verify", str(fsdd_mini_path()), "--key", str(key_file), "--split", "test"])
    assert clean.exit_code == 1 and "NOT protected" in clean.output

    other = tmp_path / "other.key"
    PosCUDAKey(bytes(range(1, 33))).save(other)
    wrong = runner.invoke(app, ["verify", str(copy), "--key", str(other), "--json"])
    assert wrong.exit_code == 1
    [record] = json.loads(wrong.output)
    assert record["key_id_matches"] is False and record["protected"] is False

    exact = runner.invoke(app, ["verify", str(copy), "--key", str(key_file), "--original", str(fsdd_mini_path())])
    assert exact.exit_code == 0 and "120 identical, 0 differing, 0 missing" in exact.output

    for args in (["verify", str(tmp_path / "missing"), "--key", str(key_file)],
                 ["verify", str(copy), "--key", str(key_file), "--split", "nope"],
                 ["verify", str(copy), "--key", str(tmp_path / "no.key")]):
        bad = runner.invoke(app, args)
        assert bad.exit_code == 2, bad.output
    for result in (mine, clean, wrong, exact):
        assert not key.appears_in(result.output.encode())


def test_verify_reads_parquet_files(tmp_path, protected):
    protected.to_parquet(str(tmp_path / "train.parquet"))
    assert load_dataset("parquet", data_files=str(tmp_path / "train.parquet"))["train"].features["audio"] == Audio()
    [result] = verify(str(tmp_path / "train.parquet"), KEY)
    assert result.protected and result.recorded_key_id is None
    with pytest.raises(ValueError, match="not found"):
        verify(str(tmp_path / "train.parquet"), KEY, splits=["test"])


def test_docs_verify_rates_are_the_recorded_checks():
    """docs/verify.md's table is what examples/verify_rates.py makes from the recorded checks."""
    from pathlib import Path

    from tests.conftest import load_example
    from tests.docs_pages import page, region

    root = Path(__file__).resolve().parents[1]
    module = load_example("verify_rates")
    records = [json.loads(line) for line in (root / "examples/results/verify/checks.jsonl").read_text().splitlines()]
    assert region("verify", "rates", module.rates_table(records)) in page("verify.md")
    hits = [r for r in records if r["case"] == "protected with the key"]
    misses = [r for r in records if r["case"] in ("clean", "protected with another key")]
    assert len(hits) >= 10 and all(r["protected"] for r in hits) and not any(r["protected"] for r in misses)
