"""The multi-key protocol: every protection setting measured under several keys, splits, rates, models and
countermeasures, one cached run at a time, summarised as the mean over keys with the worst key beside it.

A protection's strength moves with the key (some keys draw weaker class filters), so one key and one seed is
an anecdote. :func:`run_grid` trains every combination it is asked for and appends one JSON line per finished
run to ``runs.jsonl`` (a re-run skips what is there, so a long sweep can be stopped and resumed), and one line
per protected split to ``quality.jsonl``. :func:`summarise` turns the runs into rows of mean / worst key.

The keys are *public evaluation keys* (:func:`public_eval_key`): fixed, published, derived by hashing a label,
so anyone can reproduce every number; they are as random as a generated key and protect nothing.

Each line of ``runs.jsonl``::

    {"setting": "tv-barcode", "key": 0, "key_id": "…", "split": "official", "sampling_rate": 8000,
     "model": "raw_cnn", "attack": "none", "test_accuracy": 0.12, "peak_test_accuracy": 0.2,
     "train_accuracy": 1.0, "seconds": 14.2, "epochs": 30}

``setting == "clean"`` (``key`` -1) is training on the unprotected split.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from filelock import FileLock

from ..config import PosCUDAConfig
from ..formatting import display_label, key_range
from ..key import PosCUDAKey
from ..report_schema import GOAL_ACCURACY
from .attacks import get_attack
from .design import DesignRecipe
from .experiment import AudioArrays, ModelSpec, evaluate_attack, to_arrays, train_model
from .models import CNN_MODELS, HF_MODELS
from .training import TrainingRecipe

if TYPE_CHECKING:
    from datasets import DatasetDict

logger = logging.getLogger(__name__)

NO_ATTACK = "none"
CLEAN = "clean"


def public_eval_key(index: int) -> PosCUDAKey:
    """Published evaluation key number ``index``: key 0 is the public test key ``bytes(range(32))`` used by the
    slow test; key ``i > 0`` is SHA-256 of ``"hf-poscuda/public-eval-key/{i}"``. Never protect real data with
    these: anyone can recompute them.
    """
    if index == 0:
        return PosCUDAKey(bytes(range(32)))
    return PosCUDAKey(hashlib.sha256(f"hf-poscuda/public-eval-key/{index}".encode()).digest())


@dataclass(frozen=True)
class DataSpec:
    """Which version of a dataset a run used: the split scheme, the sampling rate and the task (what the label is:
    ``"digits"``, or ``"speakers"`` for the privacy task, on FSDD; ``"librispeech"``: the speakers of a folder of
    real recordings, split ``"utterance"``)."""

    split: str
    sampling_rate: int
    task: str = "digits"

    @classmethod
    def of(cls, record: dict[str, Any]) -> DataSpec:
        """The data spec of a ``runs.jsonl``/``quality.jsonl`` record (records without ``task`` are digits)."""
        return cls(record["split"], record["sampling_rate"], record.get("task", "digits"))


def _run_id(setting: str, key: int, data: DataSpec, model: str, attack: str) -> str:
    task = "" if data.task == "digits" else f"{data.task}|"
    return f"{task}{setting}|{key}|{data.split}|{data.sampling_rate}|{model}|{attack}"


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines[:-1]]
    if lines:
        try:
            records.append(json.loads(lines[-1]))
        except json.JSONDecodeError:  # a run interrupted while writing its line: it is run again
            logger.warning("Ignoring the unfinished last line of %s.", path)
    return records


def _drop_unfinished_line(path: Path) -> None:
    """Cut a record that an interrupted run left without its newline, so the next append starts a fresh line."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        logger.warning("Dropping the unfinished last line of %s; that run is done again.", path)
        path.write_bytes(data[: data.rfind(b"\n") + 1])


def _epochs(spec: ModelSpec, recipe: TrainingRecipe) -> int | None:
    """Epochs a run of ``spec`` trains for (the GE2E adversaries have their own schedules: ``None``)."""
    if spec.name in CNN_MODELS:
        return recipe.epochs
    return recipe.hf_epochs if spec.name in HF_MODELS else None


def _data_fields(spec: DataSpec) -> dict[str, Any]:
    """A record's data fields: split and rate, and the task when it is not the digits (older records have none)."""
    task = {} if spec.task == "digits" else {"task": spec.task}
    return {"split": spec.split, "sampling_rate": spec.sampling_rate, **task}


def _append(path: Path, record: dict[str, Any]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def run_grid(
    load: Callable[[DataSpec], DatasetDict],
    settings: dict[str, PosCUDAConfig],
    keys: Sequence[int],
    data: Sequence[DataSpec],
    models: Sequence[ModelSpec],
    attacks: Sequence[str],
    output: str | Path,
    recipe: TrainingRecipe | None = None,
    *,
    quality_clips: int = 100,
    clean_attacks: Sequence[str] = (),
    design_recipe: DesignRecipe | Mapping[str, DesignRecipe] | None = None,
) -> list[dict[str, Any]]:
    """Train and record every (setting, key, data, model, countermeasure) run not yet in ``output/runs.jsonl``.

    Args:
        load (`Callable[[DataSpec], DatasetDict]`): loads the train/test splits for a data spec.
        settings (`dict[str, PosCUDAConfig]`): named protection settings.
        keys (`Sequence[int]`): public evaluation key indices (see :func:`public_eval_key`).
        data (`Sequence[DataSpec]`): splits and rates.
        models (`Sequence[ModelSpec]`): what to train.
        attacks (`Sequence[str]`): countermeasure names (``"none"`` for none; ``"a+b"`` combines).
        output (`str` or `Path`): folder for ``runs.jsonl`` and ``quality.jsonl``.
        recipe (`TrainingRecipe`, *optional*): identical for every run.
        quality_clips (`int`, defaults to `100`): clips scored for PESQ etc. per protected split.
        clean_attacks (`Sequence[str]`): countermeasures also measured on clean training (what the
            countermeasure alone costs the adversary); ``"none"`` is always measured.
        design_recipe (`DesignRecipe` or `Mapping[str, DesignRecipe]`, *optional*): for ``filter_family="designed"``
            settings, how each key's table is designed on the clean train split (as its owner would), for all of
            them or per setting name (a setting not in the mapping gets ``DesignRecipe()``); designs are kept in
            ``output/designs.jsonl`` (public: the evaluation keys are public) and reused.

    Returns:
        `list[dict]`: all runs in ``runs.jsonl`` after this call.
    """
    from ..protect import protect_dataset
    from ..quality import measure_quality

    if CLEAN in settings:
        raise ValueError(f"{CLEAN!r} names the unprotected baseline, which every grid measures: give the setting "
                         "another name.")
    recipe = recipe or TrainingRecipe()
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    runs_path, quality_path = out / "runs.jsonl", out / "quality.jsonl"
    for path in (runs_path, quality_path):
        _drop_unfinished_line(path)
    recorded = _read_jsonl(runs_path)
    for r in recorded:  # a name stands for one parameter set: never mix runs of two under one name
        if r["setting"] in settings and r["config"] != settings[r["setting"]].to_dict():
            raise ValueError(
                f"{runs_path} already holds runs of setting {r['setting']!r} with other parameters. Give the new "
                "parameters another name, or record them in another output folder."
            )
    done = {_run_id(r["setting"], r["key"], DataSpec.of(r), r["model"], r["attack"]) for r in recorded}
    measured = {(q["setting"], q["key"], DataSpec.of(q)) for q in _read_jsonl(quality_path)}
    for name in (*attacks, *clean_attacks):
        if name != NO_ATTACK:
            get_attack(name)  # unknown names fail before any training
    for spec in data:
        dataset = None
        test = clean_train = None
        jobs: list[tuple[str, int, str, str]] = [
            (CLEAN, -1, m.label, a) for m in models for a in dict.fromkeys((NO_ATTACK, *clean_attacks))
        ]
        jobs += [(s, k, m.label, a) for s in settings for k in keys for m in models for a in attacks]
        todo = [j for j in jobs if _run_id(j[0], j[1], spec, j[2], j[3]) not in done]
        if not todo:
            continue
        by_label = {m.label: m for m in models}
        protected_cache: dict[tuple[str, int], AudioArrays] = {}
        for setting, key_index, label, attack in todo:
            if dataset is None:
                dataset = load(spec)
                clean_train = to_arrays(dataset["train"], recipe.clip_seconds)
                test = to_arrays(dataset["test"], recipe.clip_seconds)
            assert clean_train is not None and test is not None
            train = clean_train
            key_id = None
            if setting != CLEAN:
                key = public_eval_key(key_index)
                key_id = key.key_id
                if settings[setting].filter_family == "designed":
                    key = designed_key(key, key_index, spec, dataset["train"], settings[setting],
                                       _recipe_for(design_recipe, setting), out / "designs.jsonl")
                if (setting, key_index) not in protected_cache:
                    protected_cache.clear()  # one protected split in memory at a time
                    protected, _ = protect_dataset(dataset["train"], key, settings[setting], snr_clips=1)
                    if (setting, key_index, spec) not in measured:
                        quality = measure_quality(dataset["train"], protected, quality_clips)
                        _append(quality_path, {"setting": setting, "key": key_index, "key_id": key_id,
                                               **_data_fields(spec), "config": settings[setting].to_dict(),
                                               **quality})
                        measured.add((setting, key_index, spec))
                    protected_cache[(setting, key_index)] = to_arrays(protected, recipe.clip_seconds)
                train = protected_cache[(setting, key_index)]
            start = time.perf_counter()
            desc = f"{label} {setting} k{key_index} {spec.split}@{spec.sampling_rate} {attack}"
            if attack == NO_ATTACK:
                result = train_model(by_label[label], train, test, recipe, desc).to_dict()
            else:
                found = evaluate_attack(get_attack(attack), [by_label[label]], train, test, clean_train, recipe,
                                        setting, quality_clips=0)["models"]
                if label not in found:
                    logger.info("%s does not apply to %s; recorded as skipped", attack, label)
                result = found.get(label)
            record = {
                "setting": setting, "key": key_index, "key_id": key_id, **_data_fields(spec),
                "model": label, "attack": attack,
                "config": settings[setting].to_dict() if setting != CLEAN else None,
                "epochs": _epochs(by_label[label], recipe), "seconds": round(time.perf_counter() - start, 1),
            }
            if setting != CLEAN and key.design is not None:
                record["design_id"] = key.design.design_id
            if result is None:
                record["skipped"] = True
            else:
                record.update({k: result[k] for k in ("test_accuracy", "peak_test_accuracy", "train_accuracy")})
                record["curve"] = [round(p["test_accuracy"], 4) for p in result["curve"] if "test_accuracy" in p]
            _append(runs_path, record)
            done.add(_run_id(setting, key_index, spec, label, attack))
            logger.info("%s: %s", desc, record.get("test_accuracy", "skipped"))
    return _read_jsonl(runs_path)


def _recipe_for(design_recipe: DesignRecipe | Mapping[str, DesignRecipe] | None, setting: str) -> DesignRecipe:
    if isinstance(design_recipe, Mapping):
        return design_recipe.get(setting, DesignRecipe())
    return design_recipe or DesignRecipe()


def designed_key(key: PosCUDAKey, key_index: int, spec: DataSpec, train: Any, config: PosCUDAConfig,
                 recipe: DesignRecipe, path: Path) -> PosCUDAKey:
    """``key`` with its design for this data (the train split, as its owner would design it): read from ``path``
    (``designs.jsonl``) when a design for the same key, data, layout, budget and recipe is there, else made and
    appended."""
    from dataclasses import asdict

    from ..designed import DesignedSignature
    from .design import design_signatures

    budget = {k: config.to_dict()[k] for k in ("num_bands", "band_low_hz", "band_high_hz", "cut_db", "boost_db")}
    recipe_dict = asdict(recipe) | {"surrogates": list(recipe.surrogates)}
    # a record written before a recipe field existed was made with that field's default
    defaults = asdict(DesignRecipe()) | {"surrogates": list(DesignRecipe().surrogates)}

    def stored() -> DesignedSignature | None:
        for record in _read_jsonl(path):
            if (record["key"] == key_index and DataSpec.of(record) == spec and record["budget"] == budget
                    and defaults | record["recipe"] == recipe_dict):
                return DesignedSignature.from_json(record["design"])
        return None

    design = stored()
    if design is not None:
        return key.with_design(design)
    design = design_signatures(train, key, config, recipe)  # minutes: made outside the lock
    with FileLock(f"{path}.lock"):  # another worker may have stored this design meanwhile: the first one stays
        first = stored()
        if first is not None:
            logger.info("Design for key %d was stored by another worker meanwhile; using that one.", key_index)
            return key.with_design(first)
        _append(path, {"key": key_index, "key_id": key.key_id, **_data_fields(spec), "budget": budget,
                       "recipe": recipe_dict, "design_id": design.design_id, "design": design.to_json()})
    return key.with_design(design)


def summarise(runs: Iterable[dict[str, Any]], quality: Iterable[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """Group runs by (setting, split, rate, model, countermeasure): mean and worst (highest) clean-test accuracy
    over keys, mean peak accuracy, the number of keys, and the setting's mean PESQ on that data.

    Returns rows sorted as they first appear in ``runs``.
    """
    groups: dict[tuple, list[dict[str, Any]]] = {}
    seen: set[str] = set()
    for r in runs:
        run_id = _run_id(r["setting"], r["key"], DataSpec.of(r), r["model"], r["attack"])
        if r.get("skipped") or run_id in seen:  # a run recorded twice (two workers) counts once
            continue
        seen.add(run_id)
        groups.setdefault((r["setting"], DataSpec.of(r), r["model"], r["attack"]), []).append(r)
    pesq: dict[tuple, list[float]] = {}
    for q in quality:
        if q.get("pesq") is not None and math.isfinite(q["pesq"]):
            pesq.setdefault((q["setting"], DataSpec.of(q)), []).append(q["pesq"])
    rows = []
    for (setting, spec, model, attack), group in groups.items():
        split, rate = spec.split, spec.sampling_rate
        acc = np.array([r["test_accuracy"] for r in group])
        peak = np.array([r.get("peak_test_accuracy", math.nan) for r in group], dtype=float)
        p = pesq.get((setting, spec), [])
        rows.append({
            "setting": setting, "split": split, "sampling_rate": rate, "task": spec.task, "model": model,
            "attack": attack,
            "keys": len(group), "mean": float(acc.mean()), "worst": float(acc.max()), "best": float(acc.min()),
            "peak_mean": float(np.nanmean(peak)) if np.isfinite(peak).any() else math.nan,
            "peak_worst": float(np.nanmax(peak)) if np.isfinite(peak).any() else math.nan,
            "pesq": float(np.mean(p)) if p else math.nan, "pesq_worst": float(np.min(p)) if p else math.nan,
        })
    return rows


def _cell(row: dict[str, Any] | None, peak: bool = False) -> str:
    if row is None:
        return "–"
    text = f"{100 * row['mean']:.1f} ({100 * row['worst']:.0f})"
    if peak and math.isfinite(row["peak_mean"]):
        text += f" [{100 * row['peak_mean']:.0f}]"
    return text


def summary_markdown(
    rows: Sequence[dict[str, Any]],
    models: Sequence[str],
    attacks: Sequence[str] = (NO_ATTACK,),
    *,
    split: str = "official",
    sampling_rate: int = 8000,
    settings: Sequence[str] | None = None,
    peak: bool = False,
    task: str = "digits",
) -> str:
    """A Markdown table of :func:`summarise` rows: one row per setting, a column per (model, countermeasure)
    holding ``mean (worst key)`` clean-test accuracy in %, and ``[peak mean]`` when ``peak`` is set; PESQ is
    the mean over keys of the setting on this data.
    """
    index = {(r["setting"], r["model"], r["attack"]): r for r in rows
             if r["split"] == split and r["sampling_rate"] == sampling_rate and r.get("task", "digits") == task}
    names = list(settings) if settings is not None else list(dict.fromkeys(k[0] for k in index))
    columns = [(m, a) for m in models for a in attacks]
    head = "| setting | PESQ | keys | " + " | ".join(f"{m}{'' if a == NO_ATTACK else ' + ' + a}" for m, a in columns)
    lines = [head + " |", "|---|---:|---:|" + "---:|" * len(columns)]
    for name in names:
        cells = [index.get((name, m, a)) for m, a in columns]
        found = [c for c in cells if c is not None]
        if not found:
            continue
        pesq = found[0]["pesq"]
        counts = sorted({c["keys"] for c in found})
        keys = key_range(counts)
        pesq_text = "–" if not math.isfinite(pesq) else f"{pesq:.2f}"
        lines.append(f"| {name} | {pesq_text} | {keys} | " + " | ".join(_cell(c, peak) for c in cells) + " |")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Goal:
    """One line of a scorecard: the runs of a task and split whose clean-test accuracy must stay under a bound.

    Args:
        label (`str`): what the goal says, as shown.
        task (`str`): ``"digits"`` or ``"speakers"``.
        split (`str`): the split the goal is measured on.
        models (`tuple[str, ...]`): the adversaries the goal names; a missing one is reported as not measured.
        mean_at_most (`float`): bound on the mean over keys of every matching row.
        worst_at_most (`float`, *optional*): bound on the worst key of every matching row.
        countermeasures (`bool`, defaults to `False`): match every recorded countermeasure (and any model) instead
            of training on the protected copy as it is.
    """

    label: str
    task: str
    split: str
    models: tuple[str, ...]
    mean_at_most: float
    worst_at_most: float | None = None
    countermeasures: bool = False


_SCRATCH_MODELS = ("logmel_cnn", "raw_cnn", "xvector")
_DIGIT_MODELS = (*_SCRATCH_MODELS, "wav2vec2-small", "ast-small", "ge2e-probe", "ge2e-mlp", "ge2e-finetune")
GOALS: tuple[Goal, ...] = (  # issue 22's goals for 0.3
    *(Goal(f"digits, {split} split: every model ≤ 20 % (worst key ≤ 25 %)", "digits", split, _DIGIT_MODELS,
           0.20, 0.25) for split in ("official", "speaker")),
    *(g for split in ("official", "digit") for g in (
        Goal(f"speakers, {split} split: from-scratch models ≤ 30 %", "speakers", split, _SCRATCH_MODELS, 0.30),
        Goal(f"speakers, {split} split: GE2E linear probe ≤ 35 %", "speakers", split, ("ge2e-probe",), 0.35))),
    *(Goal(f"{task}, {split} split: every countermeasure ≤ 30 %", task, split, (), 0.30, countermeasures=True)
      for task, split in (("digits", "official"), ("digits", "speaker"), ("speakers", "official"),
                          ("speakers", "digit"))),
    # the speaker goals on real read speech too (LibriSpeech test-other: 10 speakers, chance 10 %)
    Goal("LibriSpeech speakers: from-scratch models ≤ 30 %", "librispeech", "utterance", _SCRATCH_MODELS, 0.30),
    Goal("LibriSpeech speakers: GE2E linear probe ≤ 35 %", "librispeech", "utterance", ("ge2e-probe",), 0.35),
    Goal("LibriSpeech speakers: every countermeasure ≤ 30 %", "librispeech", "utterance", (), 0.30,
         countermeasures=True),
)
GOAL_KEYS = 5  # a goal is met only over at least this many keys
PESQ_GOALS = {"default": 4.0}  # any other setting is a stronger tier, which may go down to STRONG_PESQ
STRONG_PESQ = 3.5


def _goal_cell(rows: Sequence[dict[str, Any]], setting: str, goal: Goal) -> str:
    mine = [r for r in rows if r["setting"] == setting and r["task"] == goal.task and r["split"] == goal.split
            and r["sampling_rate"] == 8000 and (r["attack"] != NO_ATTACK if goal.countermeasures
                                                else r["attack"] == NO_ATTACK and r["model"] in goal.models)]
    missing = [] if goal.countermeasures else [m for m in goal.models if m not in {r["model"] for r in mine}]
    if not mine:
        return "not measured"
    met = all(r["mean"] <= goal.mean_at_most + 1e-9 and (goal.worst_at_most is None
                                                          or r["worst"] <= goal.worst_at_most + 1e-9) for r in mine)
    top = max(mine, key=lambda r: (r["mean"], r["worst"]))
    name = top["model"] if top["attack"] == NO_ATTACK else f"{top['model']} + {top['attack']}"
    keys = min(r["keys"] for r in mine) if met else top["keys"]  # a miss is told by its own row
    verdict = "missed" if not met else ("met" if keys >= GOAL_KEYS and not missing else "met so far")
    notes = [] if keys >= GOAL_KEYS else [f"{keys} key{'s' * (keys != 1)}"]
    if missing:
        notes.append("not measured: " + ", ".join(missing))
    return f"**{verdict}**: {name} {_cell(top)}" + (f" ({'; '.join(notes)})" if notes else "")


def goals_markdown(rows: Sequence[dict[str, Any]], settings: Sequence[str], goals: Sequence[Goal] = GOALS) -> str:
    """A scorecard of :func:`summarise` rows against ``goals``: one line per goal, a column per setting, each cell
    the verdict (*met* over at least :data:`GOAL_KEYS` keys and every named model, *met so far* with fewer, or
    *missed*) with the highest row behind it, ``mean (worst key)`` in %; then the setting's PESQ on the digits'
    official split against its floor (4.0 for ``default``, 3.5 for a stronger tier).
    """
    lines = ["| goal | " + " | ".join(settings) + " |", "|---|" + "---|" * len(settings)]
    for goal in goals:
        lines.append(f"| {goal.label} | " + " | ".join(_goal_cell(rows, s, goal) for s in settings) + " |")
    cells = []
    for setting in settings:
        pesq = [r["pesq"] for r in rows if r["setting"] == setting and r["task"] == "digits"
                and r["split"] == "official" and r["sampling_rate"] == 8000 and math.isfinite(r["pesq"])]
        floor = PESQ_GOALS.get(setting, STRONG_PESQ)
        cells.append("not measured" if not pesq else
                     f"**{'met' if pesq[0] >= floor else 'missed'}**: {pesq[0]:.2f} (floor {floor:.1f})")
    label = "PESQ, digits official split: `default` ≥ 4.0, a stronger tier ≥ 3.5"
    lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_frontier(
    rows: Sequence[dict[str, Any]], path: str | Path, models: Sequence[str], attacks: Sequence[str],
    *, split: str = "official", sampling_rate: int = 8000, goal_accuracy: float = GOAL_ACCURACY,
    goal_pesq: float = 4.0, task: str = "digits",
) -> Path:
    """Accuracy (mean over keys; bars to the worst key) against PESQ, one panel per countermeasure, a marker per
    model; the goal region shaded. The frontier a default is chosen from."""
    import itertools

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r.get("task", "digits") == task]
    data = [r for r in rows if r["split"] == split and r["sampling_rate"] == sampling_rate and r["setting"] != CLEAN]
    fig, axes = plt.subplots(1, len(attacks), figsize=(6 * len(attacks), 4.6), squeeze=False, sharey=True)
    for ax, attack in zip(axes[0], attacks, strict=True):
        ax.axvspan(goal_pesq, 4.6, ymin=0, ymax=goal_accuracy, color="tab:green", alpha=0.12, label="goal")
        for index, (marker, model) in enumerate(zip(itertools.cycle("osD^v<>"), models)):
            colour = f"C{index % 10}"  # one colour per model in every panel, whichever models a panel has
            pts = [r for r in data if r["model"] == model and r["attack"] == attack and math.isfinite(r["pesq"])]
            if not pts:
                continue
            xs = np.array([r["pesq"] for r in pts])
            ys = np.array([r["mean"] for r in pts])
            worst = np.array([r["worst"] for r in pts])
            ax.errorbar(xs, ys, yerr=[np.zeros_like(ys), worst - ys], fmt=marker, capsize=2, label=model, alpha=0.8,
                        color=colour)
            clean = [r for r in rows if r["setting"] == CLEAN and r["model"] == model and r["attack"] == attack
                     and r["split"] == split and r["sampling_rate"] == sampling_rate]
            if clean:
                ax.axhline(clean[0]["mean"], ls=":", lw=1, color=colour)
        ax.set_title("no countermeasure" if attack == NO_ATTACK else f"adversary applies {attack}")
        ax.set_xlabel("PESQ of protected vs original audio")
        ax.set_xlim(2.5, 4.6)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("clean-test accuracy after protected training\n(mean over keys; bar: worst key)")
    axes[0][0].legend(fontsize=8, loc="upper left")
    corpus = "LibriSpeech speakers" if task == "librispeech" else f"FSDD {task}"
    fig.suptitle(f"Unlearnability vs audio quality, {corpus}, {split} split, {sampling_rate // 1000} kHz "
                 "(dotted: clean)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def attacks_summary_markdown(
    rows: Sequence[dict[str, Any]],
    setting: str,
    models: Sequence[str],
    attacks: Sequence[str],
    *,
    split: str = "official",
    sampling_rate: int = 8000,
    costs: dict[str, float] | None = None,
    task: str = "digits",
) -> str:
    """Countermeasure table of one setting: per countermeasure, its kind and PESQ cost (what it does to clean
    audio), and per model ``mean (worst key)`` clean-test accuracy after protected training, ``[peak mean]``,
    and ``{clean: x}``, training on *clean* data under the same countermeasure (what it costs the adversary).
    """
    index = {(r["setting"], r["model"], r["attack"]): r for r in rows
             if r["split"] == split and r["sampling_rate"] == sampling_rate and r.get("task", "digits") == task}
    head = "| countermeasure | kind | PESQ cost | keys | " + " | ".join(models) + " |"
    lines = [head, "|---|---|---:|---:|" + "---:|" * len(models)]
    for attack in (NO_ATTACK, *[a for a in attacks if a != NO_ATTACK]):
        cells, counts = [], set()
        for model in models:
            row = index.get((setting, model, attack))
            if row is None:
                cells.append("n/a")
                continue
            counts.add(row["keys"])
            clean = index.get((CLEAN, model, attack))
            cells.append(_cell(row, peak=True) + (f" {{clean: {100 * clean['mean']:.0f}}}" if clean else ""))
        if attack == NO_ATTACK:
            name, kind, cost = "none", "–", "–"
        else:
            parts = get_attack(attack)
            name, kind = f"`{attack}`", parts.kind
            value = (costs or {}).get(attack)
            cost = f"{value:.2f}" if value is not None and math.isfinite(value) else "–"
        lines.append(f"| {name} | {kind} | {cost} | {key_range(counts)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def preset_summary(runs: Iterable[dict[str, Any]], quality: Iterable[dict[str, Any]] = ()) -> dict[str, Any]:
    """Per preset (and ``"clean"``): its parameters, its PESQ on the official split at 8 kHz, and the mean /
    worst key of every recorded (split, rate, model, countermeasure). Written to ``cards/fsdd_measured.json``,
    which a dataset card without an evaluation report quotes (:func:`hf_poscuda.card.fsdd_context`). Model
    labels go through :func:`display_label`."""
    from ..config import PRESETS

    def current(record: dict[str, Any]) -> bool:  # a preset's runs count only if they measured its parameters
        name = record["setting"]
        return name == CLEAN or name not in PRESETS or record["config"] == PRESETS[name].to_dict()

    runs = [r | {"model": display_label(r["model"])} for r in runs if current(r)]
    rows = summarise(runs, [q for q in quality if current(q)])
    out: dict[str, Any] = {"dataset": "Free Spoken Digit Dataset", "source": "hf-poscuda README", "presets": {}}
    for name in [CLEAN, *PRESETS]:
        mine = [r for r in rows if r["setting"] == name]
        if not mine:
            continue
        entry: dict[str, Any] = {"config": PRESETS[name].to_dict() if name != CLEAN else None, "runs": []}
        for r in mine:
            task = {} if r["task"] == "digits" else {"task": r["task"]}
            entry["runs"].append({k: r[k] for k in ("split", "sampling_rate", "model", "attack", "keys")} | task
                                 | {k: round(r[k], 6) for k in ("mean", "worst", "peak_mean")})  # the card rounds again
            if (name != CLEAN and not task and r["split"] == "official" and r["sampling_rate"] == 8000
                    and math.isfinite(r["pesq"])):
                entry["pesq"] = round(r["pesq"], 2)
        out["presets"][name] = entry
    return out
