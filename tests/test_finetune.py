"""The fine-tuning threat: the espeak-ng corpus, pretrained checkpoints saved and loaded like a Hub id, and the
fine-tuning modes (full / partial / probe) freezing what they say."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from datasets import Audio

from hf_poscuda.evaluation import AudioArrays, ModelSpec, TrainingRecipe
from hf_poscuda.evaluation.corpus import DIGIT_WORDS, SpeechCorpusConfig, build_speech_corpus
from hf_poscuda.evaluation.experiment import to_arrays, train_model
from hf_poscuda.evaluation.models import build_hf_model, freeze_for_finetuning
from hf_poscuda.evaluation.pretrain import RECORD_NAME, pretrain_checkpoint
from hf_poscuda.evaluation.training import train_hf

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed (.ci/setup does)")


@pytest.fixture(scope="module")
def corpus():
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed (.ci/setup installs it)")
    return build_speech_corpus(SpeechCorpusConfig(words=("cat", "dog", "sun"), include_digits=True, renditions=4))


def test_corpus_has_every_word_in_both_splits_at_the_rate(corpus):
    names = corpus["train"].features["label"].names
    assert names == ["cat", "dog", "sun", *DIGIT_WORDS]
    for split, per_word in (("train", 3), ("test", 1)):
        labels = np.asarray(corpus[split]["label"])
        assert np.bincount(labels, minlength=len(names)).tolist() == [per_word] * len(names)
        words = corpus[split]["word"]
        assert all(names[label] == word for label, word in zip(labels, words, strict=True))
    arrays = to_arrays(corpus["train"], 1.0)
    assert arrays.sampling_rate == 8000
    peaks = np.abs(arrays.audio).max(axis=1)
    assert (peaks > 0.05).all() and (peaks <= 1.0).all()  # speech, not silence; no clipping beyond full scale
    assert len({a.tobytes() for a in arrays.audio}) == len(arrays.audio)  # every rendition differs


@needs_espeak
def test_corpus_is_reproducible_and_digits_can_be_left_out(corpus):
    config = SpeechCorpusConfig(words=("cat", "dog", "sun"), include_digits=True, renditions=4)
    again = build_speech_corpus(config, num_workers=1)

    def raw(d):
        return [a["bytes"] for a in d["test"].cast_column("audio", Audio(decode=False))["audio"]]

    assert raw(again) == raw(corpus)
    other_seed = build_speech_corpus(SpeechCorpusConfig(words=("cat", "dog", "sun"), renditions=4, seed=1))
    assert raw(other_seed) != raw(corpus)
    no_digits = SpeechCorpusConfig(words=("cat", "one", "dog"), include_digits=False, renditions=2)
    assert no_digits.vocabulary == ("cat", "dog")


@pytest.mark.parametrize(
    "kwargs, message",
    [({"words": ("cat", "cat")}, "repeat"), ({"words": ("two words",)}, "plain letters"),
     ({"renditions": 1}, "renditions"), ({"test_fraction": 1.0}, "test_fraction"),
     ({"words": (), "include_digits": False}, "empty"), ({"rates": (200, 100)}, "low <= high")],
)
def test_corpus_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SpeechCorpusConfig(**kwargs)


def test_missing_espeak_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(FileNotFoundError, match="apt-get install espeak-ng"):
        build_speech_corpus(SpeechCorpusConfig(words=("cat",), renditions=2))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, corpus):
    recipe = TrainingRecipe(hf_epochs=1, batch_size=8, clip_seconds=0.5)
    out = {}
    for name in ("wav2vec2", "ast"):
        folder = tmp_path_factory.mktemp(name)
        out[name] = (folder, pretrain_checkpoint(name, corpus, folder, preset="tiny", recipe=recipe,
                                                 corpus_info={"name": "test"}))
    return out


@pytest.mark.parametrize("name", ["wav2vec2", "ast"])
def test_pretrained_checkpoint_is_saved_like_a_hub_checkpoint(checkpoints, name):
    folder, record = checkpoints[name]
    assert (folder / "config.json").exists() and (folder / "preprocessor_config.json").exists()
    assert json.loads((folder / RECORD_NAME).read_text()) == record
    assert record["model"] == name and record["classes"] == 13 and record["corpus"] == {"name": "test"}
    assert 0.0 <= record["pretraining"]["test_accuracy"] <= 1.0
    config = json.loads((folder / "config.json").read_text())
    assert config["id2label"]["0"] == "cat"  # the words are the checkpoint's labels
    with pytest.raises(FileExistsError, match="already holds a checkpoint"):
        pretrain_checkpoint(name, {"train": None, "test": None}, folder, preset="tiny")


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", ["wav2vec2", "ast"])
@pytest.mark.parametrize("mode", ["full", "partial", "probe"])
def test_finetuning_loads_the_pretrained_weights_and_trains_only_what_the_mode_says(checkpoints, name, mode):
    folder, _ = checkpoints[name]
    model, extractor = build_hf_model(name, 4, 8000, checkpoint=str(folder), finetune=mode)
    saved, _ = build_hf_model(name, 13, 8000, checkpoint=str(folder))
    loaded = _state(model)
    backbone = [k for k in loaded if not k.startswith(("classifier", "projector"))]
    assert all(torch.equal(loaded[k], saved.state_dict()[k]) for k in backbone)  # the pretrained weights, not new
    head = model.classifier if name == "wav2vec2" else model.classifier.dense
    assert head.out_features == 4
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    heads = {n for n in trainable if n.startswith(("classifier", "projector"))}
    body = trainable - heads
    assert heads  # the new head always trains
    if mode == "probe":
        assert body == set()
    else:
        assert not any("feature_extractor" in n for n in body)  # wav2vec2's conv encoder: frozen in every mode
        layer = "encoder.layers.0." if name == "wav2vec2" else "layers.0."
        top = "encoder.layers.1." if name == "wav2vec2" else "layers.1."
        assert any(top in n for n in body)
        assert any(layer in n for n in body) == (mode == "full")

    rng = np.random.default_rng(0)
    audio = rng.normal(0, 0.1, (16, 4000)).astype(np.float32)
    labels = np.arange(16) % 4
    data = AudioArrays(audio, labels, 8000)
    torch.manual_seed(0)
    spec = ModelSpec(name, checkpoint=str(folder), finetune=mode)
    recipe = TrainingRecipe(hf_epochs=1, batch_size=8, clip_seconds=0.5, hf_learning_rate=1e-2)
    # train_model builds its own model; check its effect through a fresh build trained the same way
    result = train_model(spec, data, data, recipe, "finetune")
    assert result.steps == 2 and 0.0 <= result.test_accuracy <= 1.0
    before = _state(model)
    train_hf(model, extractor, (audio, labels), (audio, labels), 8000, recipe)
    after = _state(model)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("classifier") for k in changed)
    moved_body = {k for k in changed if not k.startswith(("classifier", "projector"))}
    if mode == "probe":
        assert moved_body == set()
    else:
        assert moved_body and moved_body <= body


def test_model_spec_parses_finetuning_modes():
    spec = ModelSpec.parse("wav2vec2@probe:some/folder")
    assert (spec.name, spec.checkpoint, spec.finetune) == ("wav2vec2", "some/folder", "probe")
    assert spec.label == "wav2vec2@probe:some/folder"
    assert ModelSpec.parse("ast:x").finetune == "full" and ModelSpec.parse("ast:x").label == "ast:x"
    with pytest.raises(ValueError, match="needs a pretrained checkpoint"):
        ModelSpec("ast", finetune="probe")
    with pytest.raises(ValueError, match="Unknown fine-tuning mode"):
        ModelSpec.parse("ast@frozen:x")
    with pytest.raises(ValueError, match="needs a pretrained checkpoint"):
        build_hf_model("ast", 2, 8000, preset="tiny", finetune="partial")
    with pytest.raises(ValueError, match="not a wav2vec2 or AST"):
        freeze_for_finetuning(torch.nn.Linear(2, 2), "probe")
