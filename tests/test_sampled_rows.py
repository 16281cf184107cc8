"""`verify` on a Hub copy reads only the rows it samples (issue 20): bytes served by the local test Hub are counted."""

from __future__ import annotations

import pytest
from datasets import Audio, ClassLabel, concatenate_datasets

from hf_poscuda import PosCUDAKey, protect_dataset
from hf_poscuda.sources import load_fsdd_mini
from hf_poscuda.verify import sample_rows, verify

KEY = PosCUDAKey(bytes(range(32)))


@pytest.fixture(scope="module")
def protected_copy():
    protected, _ = protect_dataset(load_fsdd_mini()["test"], KEY)  # 120 clips, sorted by digit
    return concatenate_datasets([protected] * 9)  # 1,080 rows: 11 row groups of 100 on the Hub


def _parquet_bytes(hub, repo: str) -> int:
    return sum(len(data) for path, data in hub.files(repo).items() if path.endswith(".parquet"))


def test_verify_streams_only_the_rows_it_samples(hub, protected_copy):
    protected_copy.push_to_hub("alice/big-copy")
    size = _parquet_bytes(hub, "alice/big-copy")
    hub.sent.clear()
    (result,) = verify("alice/big-copy", KEY, max_clips=100)
    served = sum(n for _, _, n in hub.sent)
    assert result.protected and result.blind is not None and result.blind.clips == 100
    assert served < 0.2 * size, (served, size)  # one row group of eleven, plus footers and API answers
    hub.sent.clear()
    (other,) = verify("alice/big-copy", PosCUDAKey(bytes(range(1, 33))), max_clips=100)
    assert not other.protected and sum(n for _, _, n in hub.sent) < 0.2 * size


def test_sample_rows_takes_runs_from_spread_row_groups_and_keeps_features(hub, protected_copy, tmp_path):
    from huggingface_hub import HfApi

    protected_copy.to_parquet(str(tmp_path / "train.parquet"), batch_size=100)  # 100-row groups, as ours
    HfApi().create_repo("alice/grouped", repo_type="dataset")
    HfApi().upload_file(path_or_fileobj=str(tmp_path / "train.parquet"), path_in_repo="data/train-00000.parquet",
                        repo_id="alice/grouped", repo_type="dataset")
    hub.sent.clear()
    rows = sample_rows("alice/grouped", "train", 250, columns=["label", "audio"])
    assert rows.column_names == ["label", "audio"] and len(rows) == 250
    assert isinstance(rows.features["label"], ClassLabel) and isinstance(rows.features["audio"], Audio)
    assert len(set(rows["label"])) >= 6  # 25 rows from each of 10 row groups of 11, across the split
    assert sum(n for _, _, n in hub.sent) < 0.4 * (tmp_path / "train.parquet").stat().st_size
    protected_copy.save_to_disk(str(tmp_path / "copy"))
    local = sample_rows(str(tmp_path / "copy"), "train", 5)
    assert len(local) == 5 and local.column_names == protected_copy.column_names
    with pytest.raises(ValueError, match="not found"):
        sample_rows("alice/grouped", "train", 5, columns=["speech"])


def test_audit_reads_only_the_probe_rows_it_queries(hub):
    """`hf-poscuda audit --probe user/dataset` samples the probe on the Hub instead of downloading it."""
    import numpy as np

    from hf_poscuda.audit import audit_model, load_probe

    concatenate_datasets([load_fsdd_mini()["test"]] * 9).push_to_hub("alice/probe")  # 1,080 clean rows
    size = _parquet_bytes(hub, "alice/probe")
    hub.sent.clear()
    probe = load_probe("alice/probe", "train", max_rows=60)
    result = audit_model(lambda clips, sr: np.zeros(len(clips), dtype=int), probe, KEY, num_decoys=0,
                         max_queries=60, progress=False)
    assert len(probe) == 60 and result.queries == 60 and not result.trained_on_key
    assert sum(n for _, _, n in hub.sent) < 0.2 * size
    with pytest.raises(ValueError, match="--split"):
        load_probe("alice/probe", None, max_rows=60)
