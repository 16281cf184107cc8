"""Dataset card for a protected dataset: YAML metadata (``DatasetCardData``) and a body from the ``cards/`` template.

Only public facts go on a card: the parameters, the public key id, measured numbers. The secret never does
(:func:`render_card` checks its own output when given the key).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from huggingface_hub import DatasetCard, DatasetCardData

from ._version import __version__
from .config import PosCUDAConfig
from .formatting import attack_cell, display_checkpoint, display_label, finetune_words, key_range, no_evidence
from .formatting import number as _num
from .formatting import percent as _pct
from .key import PosCUDAKey
from .protect import ProtectionSummary
from .report_schema import GOAL_ACCURACY, EvaluationReport

logger = logging.getLogger(__name__)

TEMPLATE_NAME = "dataset_card.md"
BASE_TAGS = ("audio", "poscuda", "unlearnable", "unlearnable-examples", "privacy")
TASK_CATEGORIES = ("audio-classification",)


MEASURED_NAME = "fsdd_measured.json"
ENCODINGS = {
    "wav": "32-bit float WAV (lossless: the stored audio is exactly what the transform computed)",
    "flac": "24-bit FLAC (the transform's output stored with 24 bits: each sample within 1.2e-7 of full scale, "
            "one 24-bit step, of what it computed)",
}


def template_text(name: str = TEMPLATE_NAME) -> str:
    """Read a card template: from the installed wheel (``hf_poscuda/cards``), else from the source tree's ``cards/``."""
    packaged = resources.files("hf_poscuda") / "cards" / name
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    source_tree = Path(__file__).resolve().parent.parent / "cards" / name
    if source_tree.is_file():
        return source_tree.read_text(encoding="utf-8")
    raise FileNotFoundError(f"Card template {name!r} not found in the package or next to it; reinstall hf-poscuda.")


_BLOCK_TAG = re.compile(r"\{%[^%]*%\}")
_BLOCK_TAG_NEWLINE = re.compile(r"(\{%[^%]*%\})\n")


def plain_whitespace(template: str) -> str:
    r"""The card template written for Jinja's default whitespace handling, which ``DatasetCard.from_template`` uses:
    the newline after each block tag is dropped (what ``trim_blocks`` does, so the template file can keep one tag
    per line) and one newline is added at the end (Jinja drops the last one).

    Example:

    ```py
    >>> from hf_poscuda.card import plain_whitespace
    >>> plain_whitespace("{% if x %}\nyes\n{% endif %}\n")
    '{% if x %}yes\n{% endif %}\n'

    ```
    """
    if template.count("{%") != len(_BLOCK_TAG.findall(template)):
        raise ValueError("The card template has a block tag this conversion cannot read (a '%' inside a tag).")
    return _BLOCK_TAG_NEWLINE.sub(r"\1", template) + "\n"


def size_category(rows: int) -> str:
    """The Hub's ``size_categories`` bucket for a number of rows."""
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                         (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"),
                         (10**10, "1B<n<10B"), (10**11, "10B<n<100B"), (10**12, "100B<n<1T")):
        if rows < limit:
            return label
    return "n>1T"


def card_metadata(
    splits: Mapping[str, ProtectionSummary],
    *,
    license: str,
    pretty_name: str,
    source: str | None = None,
    tags: Sequence[str] = (),
    existing: Mapping[str, Any] | None = None,
) -> DatasetCardData:
    """YAML metadata for the card, merged into ``existing`` (e.g. the ``dataset_info``/``configs`` that
    ``push_to_hub`` wrote): our keys are set, tags and task categories are united, everything else is kept.

    Args:
        splits (`Mapping[str, ProtectionSummary]`): all protected splits in the repo (for ``size_categories``).
        license (`str`): a Hub license id (``"cc-by-4.0"``, ``"mit"``, ``"other"``...).
        pretty_name (`str`): the title.
        source (`str`, *optional*): the source dataset's Hub id (``source_datasets``).
        tags (`Sequence[str]`): extra tags.
        existing (`Mapping`, *optional*): metadata already on the card.
    """
    if not isinstance(license, str) or not license.strip():
        raise ValueError("A license id is required for the card (e.g. 'cc-by-4.0'); pass --license.")
    merged: dict[str, Any] = dict(existing or {})
    merged["license"] = license
    merged["pretty_name"] = pretty_name
    merged["task_categories"] = _union(merged.get("task_categories"), TASK_CATEGORIES)
    merged["tags"] = _union(merged.get("tags"), (*BASE_TAGS, *tags))
    merged["size_categories"] = [size_category(sum(s.clips for s in splits.values()))]
    if source:
        merged["source_datasets"] = _union(merged.get("source_datasets"), (source,))
    return DatasetCardData(**merged)


def _union(existing: Any, ours: Sequence[str]) -> list[str]:
    items = [existing] if isinstance(existing, str) else list(existing or [])
    return items + [t for t in ours if t not in items]


def evaluation_for(report: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """The entry of an evaluation report whose protection parameters equal ``config`` (as written in the report).

    Raises:
        ValueError: not a report, or the report did not measure these parameters (the card would otherwise show
            numbers for something else).
    """
    return dict(EvaluationReport.from_dict(report).setting_for(config).raw)


def render_card(
    splits: Mapping[str, ProtectionSummary],
    *,
    license: str,
    repo_id: str | None = None,
    config_name: str = "default",
    source: str | None = None,
    source_is_hub: bool = False,
    pretty_name: str | None = None,
    attribution: str | None = None,
    evaluation_report: Mapping[str, Any] | None = None,
    tags: Sequence[str] = (),
    existing_metadata: Mapping[str, Any] | None = None,
    key: PosCUDAKey | None = None,
    figure: str | None = None,
) -> str:
    """Render the README.md of a protected dataset. Contains only the public key id, never the secret.

    Args:
        splits (`Mapping[str, ProtectionSummary]`): every protected split in the repo (all from one key and one
            set of parameters).
        license (`str`): license id for the YAML header (carry the source's license).
        repo_id (`str`, *optional*): where it is pushed (for the loading snippet).
        config_name (`str`, defaults to `"default"`): the dataset config it is pushed under.
        source (`str`, *optional*): the source dataset (a Hub id, or a local folder's name).
        source_is_hub (`bool`): whether ``source`` is a Hub id (then it is linked and listed in
            ``source_datasets``).
        pretty_name (`str`, *optional*): title.
        attribution (`str`, *optional*): extra attribution text required by the source's license.
        evaluation_report (`Mapping`, *optional*): a report from ``hf-poscuda evaluate`` (``report.json``) with a
            setting whose parameters equal the pushed ones; its numbers (and countermeasure results, if any) go
            on the card. Without it the card says plainly that nothing was measured for this dataset.
        tags (`Sequence[str]`): extra tags.
        existing_metadata (`Mapping`, *optional*): YAML already on the Hub card (kept: ``dataset_info``,
            ``configs``...).
        key (`PosCUDAKey`, *optional*): when given, the rendered text is checked to hold no trace of the secret.
        figure (`str`, *optional*): path, relative to the card, of the evaluation chart
            (:func:`hf_poscuda.figures.evaluation_chart`) uploaded with it; shown under the evaluation table.

    Raises:
        ValueError: no splits, splits from different keys or parameters, or a report that does not match.
    """
    if not splits:
        raise ValueError("render_card needs at least one protected split summary.")
    key_ids = {s.key_id for s in splits.values()}
    if len(key_ids) != 1:
        raise ValueError(f"All splits must be protected with one key; got key ids {sorted(key_ids)}.")
    if len({s.output_format for s in splits.values()}) != 1:
        raise ValueError("All splits of a repo must be stored in one output format (wav or flac).")
    configs = {tuple(sorted(s.config.items())) for s in splits.values()}
    if len(configs) != 1:
        raise ValueError("All splits of a repo must be protected with the same parameters.")
    first = next(iter(splits.values()))
    key_id = key_ids.pop()
    title = pretty_name or (f"{source} (PosCUDA-protected)" if source else "PosCUDA-protected audio")
    data = card_metadata(
        splits, license=license, pretty_name=title, source=source if source_is_hub else None, tags=tags,
        existing=existing_metadata,
    )
    evaluation = _evaluation_context(evaluation_report, first.config, key_id) if evaluation_report else None
    card = DatasetCard.from_template(
        data,
        template_str=plain_whitespace(template_text()),
        pretty_name=title,
        repo_id=repo_id,
        config_name=config_name,
        source=source,
        source_url=f"https://huggingface.co/datasets/{source}" if source and source_is_hub else None,
        license=license,
        attribution=attribution,
        version=__version__,
        key_id=key_id,
        splits=[_split_row(n, s) for n, s in splits.items()],
        encoding=ENCODINGS.get(first.output_format, first.output_format),
        config=_card_knobs(first.config),
        method=_method(first.config),
        evaluation=evaluation,
        figure=figure if evaluation else None,
        fsdd=None if evaluation else fsdd_context(first.config),
        goal=f"{100 * GOAL_ACCURACY:.0f} %",
    )
    text = str(card)
    if key is not None:
        key.assert_not_in(text.encode(), "the dataset card")
    return text


def _as_config(config: Mapping[str, Any]) -> PosCUDAConfig | None:
    """The record's parameters as a config, or ``None`` when they are not a valid one (an older or foreign
    record): the card then lists every recorded knob and a generic method sentence."""
    try:
        return PosCUDAConfig(**config)
    except (TypeError, ValueError):
        return None


def _card_knobs(config: Mapping[str, Any]) -> dict[str, Any]:
    """The knobs in use (``poscuda.json`` keeps all of them); every knob if the record is not a valid config."""
    parsed = _as_config(config)
    return parsed.active_knobs() if parsed is not None else dict(config)


def fsdd_context(config: Mapping[str, Any]) -> dict[str, Any] | None:
    """What a card without an evaluation report quotes: hf-poscuda's FSDD measurements of the preset whose
    parameters equal ``config`` (``cards/fsdd_measured.json``, generated from the recorded runs), or ``None``."""
    import json

    measured = json.loads(template_text(MEASURED_NAME))
    found = [(n, p) for n, p in measured["presets"].items() if p["config"] is not None and p["config"] == dict(config)]
    if not found:
        return None
    name, preset = found[0]
    digits = [r for r in preset["runs"] if r.get("task", "digits") == "digits"]
    if not any(r["attack"] == "none" and r["sampling_rate"] == 8000 for r in digits):
        return None
    clean = {(r["split"], r["model"]): r for r in measured["presets"].get("clean", {}).get("runs", [])
             if r["attack"] == "none" and r["sampling_rate"] == 8000 and r.get("task", "digits") == "digits"}
    runs = {(r["split"], r["model"], r["attack"]): r for r in digits if r["sampling_rate"] == 8000}

    def cell(r: Mapping[str, Any] | None) -> str:
        return "–" if r is None else f"{100 * r['mean']:.1f} % ({100 * r['worst']:.0f} %)"

    def within_goal(r: Mapping[str, Any] | None) -> bool:
        # the goal the presets were measured against: mean over keys within it, worst key 5 points above
        return r is not None and r["mean"] <= GOAL_ACCURACY and r["worst"] <= GOAL_ACCURACY + 0.05

    models, pretrained, held, pretrained_held = [], [], True, True
    for model in dict.fromkeys(m for (_, m, a) in runs if a == "none"):
        c = clean.get(("official", model))
        row = {"name": model, "clean": _pct(c["mean"]) if c else "–",
               "official": cell(runs.get(("official", model, "none"))),
               "speaker": cell(runs.get(("speaker", model, "none"))),
               "blind_eq": cell(runs.get(("official", model, "blind_eq")))}
        if ":" in model:  # "name[@mode]:checkpoint": fine-tuned from a pretrained checkpoint
            arch, _, checkpoint = model.partition(":")
            mode = arch.partition("@")[2] or "full"
            c_speaker = clean.get(("speaker", model))
            row |= {"checkpoint": checkpoint, "finetune": finetune_words(mode),
                    "clean_speaker": _pct(c_speaker["mean"]) if c_speaker else "–"}
            pretrained.append(row)
            pretrained_held = pretrained_held and all(
                within_goal(runs.get((split, model, "none"))) for split in ("official", "speaker")
                if (split, model, "none") in runs)
            continue
        held = held and all(within_goal(runs.get((split, model, "none"))) for split in ("official", "speaker"))
        models.append(row)
    attack_models = [m for m in ("logmel_cnn", "raw_cnn") if ("official", m, "none") in runs]
    attacks = []
    for attack in dict.fromkeys(a for (split, _, a) in runs if split == "official" and a != "none"):
        cells = [runs.get(("official", m, attack)) for m in attack_models]
        if not any(cells):
            continue
        attacks.append({"name": attack, "key_count": key_range(r["keys"] for r in cells if r),
                        "cells": [cell(r) if r else "n/a" for r in cells]})
    table_keys = {r["keys"] for (split, m, a), r in runs.items()  # the runs the model table shows
                  if ":" not in m and (a == "none" or (a == "blind_eq" and split == "official"))}
    key_count = key_range(table_keys)
    baseline = ", ".join(f"{cell(runs.get(('official', m, 'none')))} ({m})" for m in attack_models)
    pretrained_keys = {r["keys"] for (_, m, a), r in runs.items() if a == "none" and ":" in m}
    speakers, speakers_held, speakers_keys = _speaker_rows(measured, preset, cell)
    return {"preset": name, "pesq": _num(preset.get("pesq"), 2), "key_count": key_count,
            "speakers": speakers, "speakers_held": speakers_held, "speakers_key_count": key_range(speakers_keys),
            "speakers_goal": f"from scratch at most {_pct(SPEAKER_GOAL)}, GE2E at most {_pct(SPEAKER_GOAL_GE2E)}",
            "models": models, "all_held": held, "pretrained": pretrained, "pretrained_held": pretrained_held,
            "pretrained_key_count": key_range(pretrained_keys), "attacks": attacks, "attack_models": attack_models,
            "baseline": baseline}


SPEAKER_GOAL, SPEAKER_GOAL_GE2E = 0.30, 0.35  # issue 22: speakers, from-scratch models / the GE2E adversaries


def _speaker_rows(measured: Mapping[str, Any], preset: Mapping[str, Any],
                  cell: Any) -> tuple[list[dict[str, str]], bool, set[int]]:
    """The speaker task's rows of a measured preset (8 kHz, no countermeasure): FSDD's speakers on both splits and
    LibriSpeech's (task ``"librispeech"``); whether every model met the speaker goal everywhere, and the key counts
    shown."""
    def runs_of(entry: Mapping[str, Any]) -> dict[tuple[str, str], Mapping[str, Any]]:
        return {(r["split"], r["model"]): r for r in entry.get("runs", [])
                if r.get("task") in ("speakers", "librispeech") and r["attack"] == "none" and r["sampling_rate"] == 8000}

    runs, clean = runs_of(preset), runs_of(measured["presets"].get("clean", {}))
    rows, held, keys = [], True, set()
    for model in dict.fromkeys(m for (_, m) in runs):
        goal = SPEAKER_GOAL_GE2E if model.startswith("ge2e") else SPEAKER_GOAL
        c, c_libri = clean.get(("official", model)), clean.get(("utterance", model))
        rows.append({"name": model, "clean": _pct(c["mean"]) if c else "–",
                     "official": cell(runs.get(("official", model))), "digit": cell(runs.get(("digit", model))),
                     "clean_librispeech": _pct(c_libri["mean"]) if c_libri else "–",
                     "librispeech": cell(runs.get(("utterance", model)))})
        for split in ("official", "digit", "utterance"):
            r = runs.get((split, model))
            if r is not None:
                keys.add(r["keys"])
                held = held and r["mean"] <= goal
    return rows, held, keys


def _method(config: Mapping[str, Any]) -> str:
    parsed = _as_config(config)
    return parsed.describe() if parsed is not None else "Every clip was filtered by secret filters of its class."


def _split_row(name: str, s: ProtectionSummary) -> dict[str, Any]:
    q = s.quality or {}
    return {
        "name": name,
        "clips": s.clips,
        "classes": s.classes,
        "snr_db": _num(s.snr_db, 1),
        "snr_clips": s.snr_clips,
        "segmental_snr_db": _num(q.get("segmental_snr_db"), 1),
        "lsd_db": _num(q.get("lsd_db"), 2),
        "pesq": _num(q.get("pesq"), 2),
        "stoi": _num(q.get("stoi"), 2),
        "quality_clips": q.get("clips", 0),
    }


def _evaluation_context(report: Mapping[str, Any], config: Mapping[str, Any], key_id: str) -> dict[str, Any]:
    typed = EvaluationReport.from_dict(report)
    setting = typed.setting_for(config)
    models = []
    for label, run in setting.models.items():
        clean, prot = run.clean.test_accuracy, run.protected.test_accuracy
        weak = no_evidence(clean, setting.num_classes)  # near chance even on clean data: proves nothing
        start = run.start
        checkpoint = display_checkpoint(str(start.checkpoint))  # a local path: its last folder only
        models.append({"name": display_label(label), "clean": _pct(clean), "protected": _pct(prot),
                       "peak": _pct(run.protected.peak_test_accuracy), "held": run.held() and not weak,
                       "no_evidence": weak, "pretrained": start.pretrained,
                       "start": (f"pretrained start: fine-tunes `{checkpoint}`, "
                                 f"{finetune_words(start.finetune)}") if start.pretrained else "from scratch"})
    attacks = []
    for name, result in setting.attacks.items():
        cells = [attack_cell(result, label, run.protected.test_accuracy) for label, run in setting.models.items()]
        attacks.append({"name": name, "kind": result["kind"], "description": result["description"],
                        "pesq": _num(result.get("quality", {}).get("pesq"), 2), "cells": cells})
    q = setting.quality
    return {
        "dataset": typed.dataset,
        "setting": setting.raw.get("name"),
        "train_clips": setting.train_clips,
        "test_clips": setting.test_clips,
        "seed": typed.recipe.get("seed"),
        "same_key": setting.key_id == key_id,
        "pesq": _num(q.get("pesq"), 2),
        "snr_db": _num(q.get("snr_db_overall"), 1),
        "models": models,
        "all_held": any(not m["no_evidence"] for m in models) and all(m["held"] or m["no_evidence"] for m in models),
        "any_failed": any(not m["held"] and not m["no_evidence"] for m in models),
        "any_no_evidence": any(m["no_evidence"] for m in models),
        "any_pretrained": any(m["pretrained"] for m in models),
        "pretrained_failed": any(m["pretrained"] and not m["held"] and not m["no_evidence"] for m in models),
        "attacks": attacks,
        "model_names": [m["name"] for m in models],
    }
