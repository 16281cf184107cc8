from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from hf_poscuda import PosCUDAConfig
from hf_poscuda.card import card_metadata, render_card, size_category, template_text
from hf_poscuda.key import SecretLeakError
from hf_poscuda.protect import ProtectionSummary, protect_dataset
from tests.conftest import make_dataset

GOLDEN = Path(__file__).parent / "golden" / "dataset_card.md"


def test_card_renders_measured_numbers_and_no_secret(key):
    _, summary = protect_dataset(make_dataset(6), key, quality_clips=6)
    card = render_card({"train": summary}, source="user/speech", source_is_hub=True, license="cc-by-4.0", key=key)
    header = yaml.safe_load(card.split("---")[1])
    assert header["license"] == "cc-by-4.0" and "poscuda" in header["tags"]
    assert header["source_datasets"] == ["user/speech"]
    q = summary.quality
    assert f"`{key.key_id}`" in card
    assert f"| `train` | 6 | 4 | {summary.snr_db:.1f} | {q['segmental_snr_db']:.1f} | {q['lsd_db']:.2f} |" in card
    assert bytes(range(32)).hex() not in card
    assert "Not measured for this dataset" in card  # no evaluation given: the card must not claim success


def test_card_refuses_to_carry_the_secret(key):
    _, summary = protect_dataset(make_dataset(4), key)
    with pytest.raises(SecretLeakError) as info:
        render_card({"train": summary}, license="mit", pretty_name=key._secret.hex(), key=key)
    assert key._secret.hex() not in str(info.value)


def test_card_needs_one_key_and_one_setting(key, other_key):
    _, a = protect_dataset(make_dataset(4), key)
    _, b = protect_dataset(make_dataset(4), other_key)
    with pytest.raises(ValueError, match="one key"):
        render_card({"train": a, "test": b}, license="mit")
    _, c = protect_dataset(make_dataset(4), key, PosCUDAConfig.from_preset("cuda"))
    with pytest.raises(ValueError, match="same parameters"):
        render_card({"train": a, "test": c}, license="mit")


def test_card_metadata_keeps_what_push_to_hub_wrote(key):
    summary = _summary("a" * 16, clips=1500)
    existing = {"dataset_info": {"splits": [{"name": "train"}]}, "configs": [{"config_name": "default"}],
                "tags": ["speech"], "license": "old"}
    data = card_metadata({"train": summary}, license="cc-by-4.0", pretty_name="X", existing=existing).to_dict()
    assert data["dataset_info"] == existing["dataset_info"] and data["configs"] == existing["configs"]
    assert data["tags"][0] == "speech" and "unlearnable" in data["tags"] and data["license"] == "cc-by-4.0"
    assert data["size_categories"] == ["1K<n<10K"]
    assert [size_category(n) for n in (0, 999, 1000, 10**5, 2 * 10**9, 5 * 10**10, 5 * 10**11, 2 * 10**12)] == [
        "n<1K", "n<1K", "1K<n<10K", "100K<n<1M", "1B<n<10B", "10B<n<100B", "100B<n<1T", "n>1T"
    ]
    with pytest.raises(ValueError, match="license"):
        card_metadata({"train": summary}, license="", pretty_name="X")


def _summary(key_id: str, clips: int = 2700, **quality: float) -> ProtectionSummary:
    return ProtectionSummary(
        clips=clips, classes=10, seconds=1.0, clips_per_second=float(clips), snr_db=0.91, snr_clips=500,
        key_id=key_id, label_names=[str(i) for i in range(10)], config=PosCUDAConfig().to_dict(),
        quality={"segmental_snr_db": 2.04, "lsd_db": 3.456, "pesq": 4.27, "stoi": 0.981, "clips": 50, **quality},
    )


def test_golden_card():
    """Pins the whole rendered card (fixed inputs). Regenerate with HF_POSCUDA_UPDATE_GOLDEN=1 after a deliberate
    template change, and read the diff."""
    run = lambda acc: {"test_accuracy": acc}  # noqa: E731
    report = {
        "dataset": "Free Spoken Digit Dataset (official split)", "recipe": {"seed": 0},
        "settings": [{
            "name": "default", "config": PosCUDAConfig().to_dict(), "key_id": "0123456789abcdef",
            "train_clips": 2700, "test_clips": 300, "quality": {"pesq": 4.27, "snr_db_overall": 0.9},
            "models": {"logmel_cnn": {"clean": run(1.0), "protected": run(0.387)},
                       "raw_cnn": {"clean": run(0.947), "protected": run(0.193)}},
            "attacks": {"lowpass": {"kind": "preprocess", "description": "low-pass at 2 kHz", "quality": {"pesq": 3.1},
                                    "models": {"logmel_cnn": run(0.9), "raw_cnn": run(0.5)},
                                    "clean_models": {"logmel_cnn": run(0.99)}},
                        "specaugment": {"kind": "augment", "description": "SpecAugment", "quality": {"pesq": None},
                                        "models": {"logmel_cnn": run(0.3)}}},
        }],
    }
    card = render_card(
        {"train": _summary("0123456789abcdef"), "test": _summary("0123456789abcdef", clips=300, pesq=float("nan"))},
        license="cc-by-sa-4.0", repo_id="alice/fsdd-protected", source="alice/fsdd", source_is_hub=True,
        attribution="Audio from FSDD (CC BY-SA 4.0).", evaluation_report=report,
    )
    card = card.replace(f"hf-poscuda {__import__('hf_poscuda').__version__}", "hf-poscuda VERSION")
    if os.environ.get("HF_POSCUDA_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(card, encoding="utf-8")
    assert card == GOLDEN.read_text(encoding="utf-8")


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


@pytest.mark.parametrize(
    "preset, sentence, shown, hidden",
    [
        ("default", "secret spectral barcode of its class", "| `vary_cuts` | `2` |", "kernel_size"),
        ("v0.1", "secret 17-tap random filter of its class", "| `kernel_size` | `17` |", "num_bands"),
    ],
)
def test_card_says_what_the_parameters_do_and_lists_the_knobs_in_use(preset, sentence, shown, hidden):
    summary = _summary("0123456789abcdef")
    summary.config = PosCUDAConfig.from_preset(preset).to_dict()
    card = render_card({"train": summary}, license="mit")
    assert PosCUDAConfig.from_preset(preset).describe() in card and sentence in card
    assert shown in card and f"`{hidden}`" not in card


def test_docs_quote_the_default_sentence():
    from tests.docs_pages import page

    text = " ".join(page("how-it-works.md").split())
    assert f"*{PosCUDAConfig().describe()}*" in text


def test_the_core_does_not_import_the_evaluation_package():
    """Data flows one way: protecting, carding and pushing never load evaluation/ (models, training) or
    transformers; a fresh interpreter shows what an import really pulls in."""
    code = ("import sys, hf_poscuda, hf_poscuda.audio_io, hf_poscuda.labels, hf_poscuda.map_callable, "
            "hf_poscuda.sources, hf_poscuda.card, hf_poscuda.hub, hf_poscuda.hub.shards, hf_poscuda.protect, "
            "hf_poscuda.streaming, hf_poscuda.shards, hf_poscuda.leaks, hf_poscuda.errors, hf_poscuda.cli; "
            "bad = sorted(m for m in sys.modules if m.startswith(('hf_poscuda.evaluation', 'transformers', 'ray'))); "
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("num_classes, weak", [(10, True), (100, False), (None, False)])
def test_a_model_that_learns_nothing_even_from_clean_data_is_no_evidence(num_classes, weak):
    """A clean-trained model below twice chance (tiny AST: 19 % on 10 classes) says nothing about protection: the
    card and the report mark it instead of counting its low protected accuracy as protection held."""
    from hf_poscuda.evaluation.report import report_markdown

    run = lambda acc: {"test_accuracy": acc, "curve": []}  # noqa: E731
    entry = {"name": "default", "config": PosCUDAConfig().to_dict(), "key_id": "0123456789abcdef",
             "train_clips": 12, "test_clips": 5, "quality": {"pesq": 4.0},
             "models": {"logmel_cnn": {"clean": run(0.95), "protected": run(0.15)},
                        "ast-tiny": {"clean": run(0.19), "protected": run(0.127)}}}
    if num_classes is not None:
        entry["num_classes"] = num_classes
    report = {"schema_version": 1, "dataset": "tiny", "recipe": {"seed": 0, "epochs": 1, "hf_epochs": 1,
                                                                 "clip_seconds": 1.0}, "settings": [entry]}
    card = render_card({"train": _summary("0123456789abcdef")}, license="mit", evaluation_report=report)
    row = next(line for line in card.splitlines() if line.startswith("| ast-tiny |"))
    assert ("no evidence" in row) == weak and (row.endswith("| yes |")) == (not weak)
    assert "Every model above stayed at or below the goal." in card  # the CNN held; ast-tiny does not count
    assert ("Rows marked *no evidence*" in card) == weak
    assert ("no evidence: clean training stayed near chance" in report_markdown(report)) == weak


@pytest.mark.parametrize("protected, held", [(0.8, False), (0.12, True)])
def test_a_pretrained_start_is_marked_on_the_card_and_the_report(protected, held):
    """The fine-tuning threat: a model fine-tuned from a checkpoint is labelled as such, and when it learns the
    task from the protected copy the card says so in bold."""
    from hf_poscuda.evaluation.report import report_markdown

    run = lambda acc: {"test_accuracy": acc, "curve": []}  # noqa: E731
    start = {"from": "pretrained", "checkpoint": "ckpt/ast-small-espeak", "finetune": "probe"}
    entry = {"name": "default", "config": PosCUDAConfig().to_dict(), "key_id": "0123456789abcdef",
             "train_clips": 12, "test_clips": 5, "quality": {"pesq": 4.0}, "num_classes": 10,
             "models": {"logmel_cnn": {"start": {"from": "scratch", "preset": None}, "clean": run(0.95),
                                       "protected": run(0.15)},
                        "ast@probe:ckpt/ast-small-espeak": {"start": start, "clean": run(0.9),
                                                            "protected": run(protected)}}}
    report = {"schema_version": 1, "dataset": "tiny", "recipe": {"seed": 0, "epochs": 1, "hf_epochs": 1,
                                                                 "clip_seconds": 1.0}, "settings": [entry]}
    card = render_card({"train": _summary("0123456789abcdef")}, license="mit", evaluation_report=report)
    row = next(line for line in card.splitlines() if line.startswith("| ast@probe:ckpt/ast-small-espeak"))
    assert "pretrained start: fine-tunes `ckpt/ast-small-espeak`, a linear probe" in row
    assert row.endswith("| yes |") == held
    assert ("**From a pretrained start the protection did not hold.**" in card) == (not held)
    assert ("Every model above stayed at or below the goal." in card) == held
    cnn_row = next(line for line in card.splitlines() if line.startswith("| logmel_cnn |"))
    assert "pretrained" not in cnn_row
    text = report_markdown(report)
    assert "**Pretrained start**" in text and "`ast@probe:ckpt/ast-small-espeak` fine-tunes" in text


def test_what_the_readme_and_docs_import_is_exported():
    """Every ``from hf_poscuda... import ...`` line of the README and the docs pages works, and top-level names are
    in __all__."""
    import importlib
    import re

    import hf_poscuda
    from tests.docs_pages import README, pages

    found = [hit for text in [README.read_text(), *pages().values()]
             for hit in re.findall(r"^from (hf_poscuda[\w.]*) import (.+)$", text, flags=re.M)]
    assert len(found) >= 4
    for module, names in found:
        for name in (n.strip() for n in names.split("#")[0].split(",")):
            assert hasattr(importlib.import_module(module), name), (module, name)
            assert module != "hf_poscuda" or name in hf_poscuda.__all__, name


def test_card_states_how_the_audio_is_stored():
    import dataclasses

    wav = _summary("0123456789abcdef")
    flac = dataclasses.replace(wav, output_format="flac")
    assert "32-bit float WAV (lossless" in render_card({"train": wav}, license="mit")
    assert "24-bit FLAC" in render_card({"train": flac}, license="mit")
    with pytest.raises(ValueError, match="one output format"):
        render_card({"train": wav, "test": flac}, license="mit")


def test_the_typed_report_says_what_is_missing_and_judges_models_like_the_card():
    from hf_poscuda.report_schema import GOAL_ACCURACY, EvaluationReport

    good = {"dataset": "fsdd", "recipe": {"seed": 0}, "settings": [{"name": "default", "config": {"a": 1}, "models": {
        "held": {"clean": {"test_accuracy": 0.9}, "protected": {"test_accuracy": GOAL_ACCURACY}},
        "peaked": {"clean": {"test_accuracy": 0.9}, "protected": {"test_accuracy": 0.1, "peak_test_accuracy": 0.3}},
        "failed": {"clean": {"test_accuracy": 0.9}, "protected": {"test_accuracy": 0.21},
                   "start": {"from": "pretrained", "checkpoint": "ckpt", "finetune": "probe"}}}}]}
    setting = EvaluationReport.from_dict(good).setting_for({"a": 1})
    assert [m.held() for m in setting.models.values()] == [True, False, False]
    assert setting.models["failed"].start.pretrained and setting.models["failed"].start.finetune == "probe"
    with pytest.raises(ValueError, match="no setting with the parameters"):
        EvaluationReport.from_dict(good).setting_for({"a": 2})
    broken = json.loads(json.dumps(good))
    del broken["settings"][0]["models"]["held"]["protected"]["test_accuracy"]
    with pytest.raises(ValueError, match=r"models\[held\]\.protected\.test_accuracy"):
        EvaluationReport.from_dict(broken)
    with pytest.raises(ValueError, match="schema version 2"):
        EvaluationReport.from_dict({**good, "schema_version": 2})
    with pytest.raises(ValueError, match="not an hf-poscuda report"):
        EvaluationReport.from_dict({"models": {}})
