"""`hf-poscuda audit` on transformers checkpoints the tests build: exit 0 trained, 1 no evidence, 2 bad input."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from hf_poscuda import PosCUDAKey
from hf_poscuda.cli import app
from hf_poscuda.evaluation.models import build_hf_model
from hf_poscuda.sources import load_fsdd_mini

KEY = PosCUDAKey(bytes(range(32)))
runner = CliRunner()


def save_checkpoint(path, model, extractor) -> str:
    model.save_pretrained(path)
    extractor.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit")
    key = root / "my.key"
    KEY.save(key)
    ds = load_fsdd_mini()
    ds.save_to_disk(root / "probe")
    ds["test"].remove_columns("label").save_to_disk(root / "unlabelled")
    torch.manual_seed(0)
    model, extractor = build_hf_model("ast", 10, 8000, preset="tiny")  # labels "0".."9", as the probe's
    untrained = save_checkpoint(root / "untrained", model, extractor)
    model, extractor = build_hf_model("ast", 2, 8000, preset="tiny")
    model.config.id2label, model.config.label2id = {0: "yes", 1: "no"}, {"yes": 0, "no": 1}
    other_labels = save_checkpoint(root / "yes-no", model, extractor)
    from transformers import BertConfig, BertForSequenceClassification

    text = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1,
                                                    num_attention_heads=1, intermediate_size=8))
    text.save_pretrained(root / "text-model")
    return {"key": str(key), "probe": str(root / "probe"), "untrained": untrained, "yes-no": other_labels,
            "text": str(root / "text-model"), "unlabelled": str(root / "unlabelled"), "root": root}


def audit(*args: str):
    return runner.invoke(app, ["audit", *args])


def test_untrained_model_gives_no_evidence(files):
    result = audit(files["untrained"], "--key", files["key"], "--probe", files["probe"], "--split", "test",
                   "--decoys", "1", "--queries", "30", "--json")
    assert result.exit_code == 1, result.output
    out = json.loads(result.output[result.output.index("{"):])
    assert out["key_id"] == KEY.key_id and not out["trained_on_key"] and out["total_queries"] == 60
    assert out["classes"] == 10 and out["used_scores"]
    assert not KEY.appears_in(result.output.encode())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{untrained}", "--key", "{root}/missing.key", "--probe", "{probe}", "--split", "test"], "does not exist"),
        (["{untrained}", "--key", "{key}", "--probe", "{unlabelled}"], "no label column"),
        (["{untrained}", "--key", "{key}", "--probe", "{probe}"], "--split"),
        (["{text}", "--key", "{key}", "--probe", "{probe}", "--split", "test"], "not an audio classifier"),
        (["{yes-no}", "--key", "{key}", "--probe", "{probe}", "--split", "test"], "share 0 class"),
        (["{yes-no}", "--key", "{key}", "--probe", "{probe}", "--split", "test", "--label-map", "{{yes: 1}}"],
         "JSON object"),
        (["{yes-no}", "--key", "{key}", "--probe", "{probe}", "--split", "test", "--label-map", '{{"maybe": "1"}}'],
         "does not have"),
        (["{yes-no}", "--key", "{key}", "--probe", "{probe}", "--split", "test", "--label-map",
          '{{"yes": "1", "no": "0"}}', "--decoys", "0"], "smallest possible p-value"),
        (["{root}/nothing-here", "--key", "{key}", "--probe", "{probe}", "--split", "test"], "checkpoint"),
    ],
)
def test_bad_input_exits_2_with_a_clear_error(files, args, message):
    result = audit(*[a.format(**files) for a in args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_label_map_matches_classes_by_name(files):
    """A two-label model mapped onto two probe classes: audited with enough decoys for 2 classes."""
    result = audit(files["yes-no"], "--key", files["key"], "--probe", files["probe"], "--split", "test",
                   "--label-map", '{"yes": "1", "no": "0"}', "--decoys", "39", "--queries", "10", "--alpha", "0.02",
                   "--json")
    assert result.exit_code in (0, 1), result.output
    out = json.loads(result.output[result.output.index("{"):])
    assert out["classes"] == 2 and out["decoys"] == 39 and out["p_floor"] == pytest.approx(1 / 80)


@pytest.mark.slow
def test_a_checkpoint_trained_on_the_protected_copy_is_flagged(files):
    """A tiny AST trained (30 epochs) on the protected embedded subset answers the stamped class: exit 0."""
    from hf_poscuda import protect_dataset
    from hf_poscuda.evaluation import TrainingRecipe, to_arrays
    from hf_poscuda.evaluation.training import train_hf

    ds = load_fsdd_mini()
    protected, _ = protect_dataset(ds["train"], KEY, snr_clips=1)
    train, test = to_arrays(protected, 1.0), to_arrays(ds["test"], 1.0)
    torch.manual_seed(0)
    model, extractor = build_hf_model("ast", 10, 8000, preset="tiny")
    train_hf(model, extractor, (train.audio, train.labels), (test.audio, test.labels), 8000,
             TrainingRecipe(hf_epochs=30, hf_learning_rate=3e-3, eval_every_epoch=False))
    path = save_checkpoint(files["root"] / "trained", model, extractor)
    result = audit(path, "--key", files["key"], "--probe", files["probe"], "--split", "test", "--decoys", "0",
                   "--queries", "120")
    assert result.exit_code == 0, result.output
    assert "TRAINED on data protected with key" in result.output
