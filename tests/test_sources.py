"""Data sources of the evaluation: a speaker folder of real recordings (``root/<speaker>/<utterance>.flac``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from hf_poscuda.sources import load_speaker_folder


def speaker_folder(root: Path, utterances: dict[str, int], seconds: float = 3.0, rate: int = 16000) -> Path:
    """Noise utterances; the second second of utterance 1 of every speaker is silent."""
    for s, (speaker, count) in enumerate(utterances.items()):
        (root / speaker).mkdir(parents=True)
        for u in range(count):
            x = np.random.default_rng(10 * s + u).normal(0, 0.1, int(seconds * rate)).astype(np.float32)
            if u == 1:
                x[rate : 2 * rate] = 0.0
            sf.write(root / speaker / f"{speaker}-{u:02d}.flac", x, rate)
    return root


def test_speaker_folder_splits_by_utterance_into_windows(tmp_path):
    root = speaker_folder(tmp_path, {"bob": 5, "ann": 4})
    ds = load_speaker_folder(root, sampling_rate=8000, test_utterances=2)
    assert ds["train"].features["label"].names == ["ann", "bob"]  # speakers in name order
    train, test = ds["train"].to_pandas(), ds["test"].to_pandas()
    assert not set(train["utterance"]) & set(test["utterance"])  # no utterance on both sides
    assert sorted(set(test["utterance"])) == ["ann-02", "ann-03", "bob-03", "bob-04"]  # the last two per speaker
    assert (train["speaker"].map({"ann": 0, "bob": 1}) == train["label"]).all()
    # 3 windows of 1 s per utterance, less the silent one of utterance 1 (which is in train for both)
    assert len(train) == (2 + 3) * 3 - 2 and len(test) == 4 * 3
    assert 1 not in set(train[train["utterance"] == "bob-01"]["window"])
    row = ds["test"][0]["audio"]
    samples = row.get_all_samples()
    assert samples.sample_rate == 8000 and samples.data.shape[-1] == 8000


def test_speaker_folder_refuses_what_it_cannot_split(tmp_path):
    with pytest.raises(ValueError, match="root/<speaker>/<utterance>.flac"):
        load_speaker_folder(tmp_path)
    root = speaker_folder(tmp_path / "c", {"ann": 4, "bob": 2})
    with pytest.raises(ValueError, match=r"\['bob'\] have at most 2 utterances"):
        load_speaker_folder(root, test_utterances=2)
