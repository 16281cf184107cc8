"""The GE2E adversary: the front end and encoder reproduce the Resemblyzer package's own numbers; its three
adversaries train and answer in the dataset's label space. Skipped where the wheel's weights are not installed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hf_poscuda.evaluation import ge2e

pytestmark = pytest.mark.skipif(not ge2e.available(), reason=f"GE2E weights not installed ({ge2e.INSTALL_HINT})")
REFERENCE = json.loads((Path(__file__).parent / "data" / "ge2e_reference.json").read_text())


def reference_clip() -> np.ndarray:
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from make_ge2e_reference import test_clip

    return test_clip()


def test_front_end_and_encoder_match_the_package():
    wav = reference_clip()
    mel = ge2e.mel_frames(ge2e.preprocess(wav, 16000))
    assert list(mel.shape) == REFERENCE["mel_shape"]
    np.testing.assert_allclose(mel[[0, 5, 10]], REFERENCE["mel_rows_0_5_10"], rtol=1e-4, atol=1e-6)
    assert mel.sum() == pytest.approx(REFERENCE["mel_sum"], rel=1e-5)
    embeddings = ge2e.embed_utterances(ge2e.GE2EEncoder.pretrained(), [wav, wav[:9600]], 16000)
    np.testing.assert_allclose(embeddings[0], REFERENCE["embedding"], atol=1e-5)  # 2 partials, averaged
    np.testing.assert_allclose(embeddings[1], REFERENCE["embedding_short_clip"], atol=1e-5)  # one padded partial


def test_an_8khz_clip_is_resampled_and_partials_cover_it():
    assert len(ge2e.partial_slices(16000 * 5)) > 1 and len(ge2e.partial_slices(8000)) == 1
    wav = reference_clip()
    from hf_poscuda.quality import change_rate

    at_8k = change_rate(wav, 16000, 8000).astype(np.float32)
    encoder = ge2e.GE2EEncoder.pretrained()
    b = ge2e.embed_utterances(encoder, [at_8k], 8000)
    up = ge2e.embed_utterances(encoder, [change_rate(at_8k, 8000, 16000).astype(np.float32)], 16000)
    np.testing.assert_allclose(b, up, atol=1e-6)  # an 8 kHz clip is embedded as its 16 kHz resampling
    full = ge2e.embed_utterances(encoder, [wav], 16000)
    assert float(full[0] @ b[0]) > 0.8  # losing the band above 4 kHz moves the embedding only a little


@pytest.mark.slow
@pytest.mark.parametrize("mode", ge2e.GE2E_MODES)
def test_each_adversary_learns_speakers(mode):
    from hf_poscuda.evaluation import to_arrays
    from hf_poscuda.sources import fsdd_mini_path, load_fsdd

    ds = load_fsdd(fsdd_mini_path(), task="speakers")
    train, test = to_arrays(ds["train"], 1.0), to_arrays(ds["test"], 1.0)
    result = ge2e.train_ge2e(mode, list(train.audio), train.labels, list(test.audio), test.labels, 8000,
                             epochs=60 if mode != "finetune" else 3)
    assert result.test_accuracy > 0.5  # 6 speakers, chance 17 %: a real speaker encoder tells them apart
    scores = result.predictor(list(test.audio[:5]), 8000)
    assert scores.shape == (5, 6)
