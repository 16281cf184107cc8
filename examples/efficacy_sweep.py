"""The efficacy sweep: PosCUDA settings under several public keys, both FSDD splits, two rates, four models and
the countermeasures, cached run by run (``runs.jsonl``) so it can be stopped and resumed.

    python examples/efficacy_sweep.py --fsdd ../shared/data/fsdd/recordings --settings tv-s6v4-18 \
        --keys 0,1,2,3,4 --splits official,speaker --models logmel_cnn,raw_cnn --attacks none,blind_eq

Speaker identification on a folder of real recordings (``--task librispeech``: ``root/<speaker>/<utterance>.flac``,
split ``utterance``, see :func:`hf_poscuda.sources.load_speaker_folder`) instead of FSDD:

    python examples/efficacy_sweep.py --task librispeech --speaker-folder PATH --splits utterance --settings default

``--report`` writes the summary tables (mean over keys and worst key), the frontier plots and the training
curves from what is recorded, without training anything; ``--report --docs docs`` also rewrites the result tables of the docs pages
(their ``<!-- efficacy:NAME -->`` regions) and ``cards/fsdd_measured.json``. Settings are named below; every knob is
spelled out against BASE.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

from hf_poscuda import PRESETS, PosCUDAConfig
from hf_poscuda.sources import load_fsdd, load_speaker_folder
from hf_poscuda.evaluation import ModelSpec, TrainingRecipe
from hf_poscuda.evaluation.design import DesignRecipe
from hf_poscuda.evaluation.protocol import DataSpec, run_grid

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docs_markers import add_docs_option, rewrite_regions  # noqa: E402

# The sweep's settings are spelled out against BASE, which fixes every knob the package defaults set (the
# defaults were chosen from these numbers, so they must not move the settings under the recorded results).
BASE = PosCUDAConfig(
    filter_family="barcode", placement="whole", num_bands=16, band_low_hz=200.0, band_high_hz=3600.0, num_cuts=4,
    num_boosts=2, cut_db=30.0, boost_db=12.0, vary_cuts=0, vary_boosts=0, vary_cut_db=30.0, vary_boost_db=12.0,
    vary_from_band=0, filter_seconds=0.032, filters_per_class=1, num_segments=4, segment_seconds=None,
    segment_region="active", boundary_jitter=0.5, crossfade_seconds=0.03,
)
BARCODE = BASE
TV = BARCODE.replace(placement="segments", filters_per_class=2, segment_region="active")
TVB = TV.replace(num_cuts=0, num_boosts=3, boost_db=15.0)
SETTINGS: dict[str, PosCUDAConfig] = {
    # the presets, by name (the final protocol in examples/results/efficacy measures these)
    "default": PRESETS["default"],
    "barcode": PRESETS["barcode"],
    "v0.1": PRESETS["v0.1"],
    # designed signatures (0.3): the static part of each class's barcode designed against surrogate CNNs
    "designed": PRESETS["designed"],
    "designed-static": PosCUDAConfig(filter_family="designed", placement="whole", filters_per_class=1, vary_cuts=0),
    "designed-gentle": PRESETS["designed"].replace(vary_cut_db=15.0, crossfade_seconds=0.06),
    # the targets the clean surrogates find easiest (an assignment without fixed points) instead of a key cycle
    "designed-nearest": PRESETS["designed"],
    # more room for the design: the tier-strong budget (-40 / +15 dB), or bands half as wide (32)
    "designed-strong": PRESETS["designed"].replace(cut_db=40.0, boost_db=15.0),
    "designed32": PRESETS["designed"].replace(num_bands=32, vary_from_band=18),
    "designed-strong-nearest": PRESETS["designed"].replace(cut_db=40.0, boost_db=15.0),
    # other design objectives (DESIGN_RECIPES): class-wise error-minimising, with a quality penalty, or both losses
    "designed-em": PRESETS["designed"],
    "designed-em-q01": PRESETS["designed"],
    "designed-both": PRESETS["designed"],
    # closed-form strength tiers around the default (issue 22, 3a): a stronger static barcode, a gentler varying part
    "tier-strong": PRESETS["default"].replace(num_cuts=6, num_boosts=3, cut_db=40.0, boost_db=15.0),
    "tier-gentle": PRESETS["default"].replace(vary_cut_db=15.0, crossfade_seconds=0.06),
    # baselines of the sweep: the 0.1 default (whole-clip random taps), the whole-clip barcode of DESIGN §8
    "v0.1-default": PRESETS["v0.1"],
    "barcode-c4b2": BARCODE,
    # time-varying, no static part: two disjoint cut sets alternating over 4 active-region segments
    "tv-v4-30": TV.replace(num_cuts=0, num_boosts=0, vary_cuts=4),
    # static barcode + a varying part (the static part fools models, the varying part survives equalisation)
    "tv-s6v2-30": TV.replace(vary_cuts=2),
    "tv-s6v2-18": TV.replace(vary_cuts=2, vary_cut_db=18.0),
    "tv-s6v2-18-f60": TV.replace(vary_cuts=2, vary_cut_db=18.0, crossfade_seconds=0.06),
    "tv-s6v4-18": TV.replace(vary_cuts=4, vary_cut_db=18.0),
    "tv-s6v2b1-12": TV.replace(vary_cuts=2, vary_boosts=1, vary_cut_db=12.0),
    # stronger static barcodes (boosts are what a raw-waveform model sees: cuts remove little energy)
    "barcode-c4b3-18": BARCODE.replace(num_boosts=3, boost_db=18.0),
    "barcode-c4b4-18": BARCODE.replace(num_boosts=4, boost_db=18.0),
    "barcode-c2b2-20": BARCODE.replace(num_cuts=2, boost_db=20.0),
    "barcode-c0b3-18": BARCODE.replace(num_cuts=0, num_boosts=3, boost_db=18.0),
    "barcode32-c6b4-15": BARCODE.replace(num_bands=32, num_cuts=6, num_boosts=4, boost_db=15.0),
    "barcode32-c6b2-24": BARCODE.replace(num_bands=32, num_cuts=6, num_boosts=2, boost_db=24.0),
    # the static signature where speech has its energy (a raw-waveform model sees energy, not log energy)
    "barcode-lo1500-c4b2": BARCODE.replace(band_low_hz=150.0, band_high_hz=1500.0),
    "barcode-lo2000-c4b2": BARCODE.replace(band_low_hz=150.0, band_high_hz=2000.0),
    "barcode-lo1500-c2b3-15": BARCODE.replace(band_low_hz=150.0, band_high_hz=1500.0, num_cuts=2, num_boosts=3,
                                              boost_db=15.0),
    # the varying part in the upper bands (little speech energy there: heard less, PESQ +0.3-0.6)
    "tv-v4-30-u8": TV.replace(num_cuts=0, num_boosts=0, vary_cuts=4, vary_from_band=8),
    "tv-v4-18-u8": TV.replace(num_cuts=0, num_boosts=0, vary_cuts=4, vary_cut_db=18.0, vary_from_band=8),
    "tv-v4-12-u8": TV.replace(num_cuts=0, num_boosts=0, vary_cuts=4, vary_cut_db=12.0, vary_from_band=8),
    "tv-s6v2-30-u9": TV.replace(vary_cuts=2, vary_from_band=9),
    "tv-s6v4-18-u8": TV.replace(vary_cuts=4, vary_cut_db=18.0, vary_from_band=8),
    # wide bands: each marked band holds more of the clip's energy
    "barcode8-c2b2": BARCODE.replace(num_bands=8, num_cuts=2, num_boosts=2),
    "barcode10-c3b2": BARCODE.replace(num_bands=10, num_cuts=3, num_boosts=2),
    "barcode-c8b0": BARCODE.replace(num_cuts=8, num_boosts=0),
    "barcode-c6b3-15": BARCODE.replace(num_cuts=6, num_boosts=3, boost_db=15.0),
    # static boosts only (boosts are the fast shortcut for raw-waveform models; static cuts cost PESQ once the
    # filters vary) + varying cuts in the upper bands
    "tv-b3x15-v2u9": TVB.replace(vary_cuts=2, vary_from_band=9),
    "tv-b3x15-v3u8": TVB.replace(vary_cuts=3, vary_from_band=8),
    "tv-b3x18-v2u9": TVB.replace(boost_db=18.0, vary_cuts=2, vary_from_band=9),
    "tv-b3x15-v2u9-f80": TVB.replace(vary_cuts=2, vary_from_band=9, crossfade_seconds=0.08),
    "tv-b4x15-v2u8": TVB.replace(num_boosts=4, vary_cuts=2, vary_from_band=8),
    "tv-b3x15-v2u6": TVB.replace(vary_cuts=2, vary_from_band=6),
    "tv-b3x15-v4x24u8": TVB.replace(vary_cuts=4, vary_cut_db=24.0, vary_from_band=8),
    "tv32-b3x24-v4u18": TVB.replace(num_bands=32, boost_db=24.0, vary_cuts=4, vary_from_band=18),
    # between the two: fewer / shallower static cuts, longer fades
    "tv-c2b3x15-v2u9": TV.replace(num_cuts=2, num_boosts=3, boost_db=15.0, vary_cuts=2, vary_from_band=9),
    "tv-s6x24-v2x24u9-f80": TV.replace(cut_db=24.0, vary_cuts=2, vary_cut_db=24.0, vary_from_band=9,
                                      crossfade_seconds=0.08),
}

# designed settings whose recipe differs from DesignRecipe()'s: the fields that differ
DESIGN_RECIPES: dict[str, dict[str, Any]] = {
    "designed-nearest": {"targets": "nearest"},
    "designed-strong-nearest": {"targets": "nearest"},
    "designed-em": {"objective": "minimise"},
    "designed-em-q01": {"objective": "minimise", "quality_weight": 0.01},
    "designed-both": {"objective": "both"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fsdd", help="folder of FSDD .wav recordings (every task but librispeech, and --report)")
    parser.add_argument("--speaker-folder", help="--task librispeech: root/<speaker>/<utterance>.flac")
    parser.add_argument("--output", default="examples/results/efficacy")
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--keys", default="0,1,2,3,4", help="public evaluation key indices")
    parser.add_argument("--splits", default="official", help="official,speaker (digits) or official,digit (speakers)")
    parser.add_argument("--task", default="digits", choices=["digits", "speakers", "librispeech"],
                        help="what the label is: the FSDD digit or speaker, or the speaker of --speaker-folder")
    parser.add_argument("--rates", default="8000", help="e.g. 8000,16000")
    parser.add_argument("--models", default="logmel_cnn,raw_cnn")
    parser.add_argument("--attacks", default="none")
    parser.add_argument("--clean-attacks", default="", help="countermeasures also measured on clean training")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--hf-epochs", type=int, default=8)
    parser.add_argument("--report", action="store_true", help="only write summary.md and frontier plots")
    add_docs_option(parser)  # with --report: --docs docs rewrites the marked tables of the docs pages
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--design-surrogates", default="raw_cnn,logmel_cnn", help="designed settings: surrogates")
    parser.add_argument("--design-steps", type=int, default=600)
    parser.add_argument("--design-epochs", type=int, default=15, help="designed settings: surrogate epochs")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    needs = "--speaker-folder" if args.task == "librispeech" and not args.report else "--fsdd"
    if not (args.speaker_folder if needs == "--speaker-folder" else args.fsdd):
        parser.error(f"{needs} is required here.")
    if args.report:
        write_attack_costs(Path(args.output), args.fsdd)
        write_summary(Path(args.output))
        write_curves(Path(args.output))
        if args.docs:
            update_docs(args.docs, Path(args.output))
            write_card_summary(Path(args.output))
        return

    @lru_cache(maxsize=1)
    def load(spec: DataSpec):
        if spec.task == "librispeech":  # utterance-disjoint windows of a speaker folder (its only split)
            if spec.split != "utterance":
                raise SystemExit(f"--task librispeech has one split, 'utterance', not {spec.split!r}.")
            return load_speaker_folder(args.speaker_folder, sampling_rate=spec.sampling_rate)
        rate = None if spec.sampling_rate == 8000 else spec.sampling_rate
        return load_fsdd(args.fsdd, split=spec.split, sampling_rate=rate, task=spec.task)

    data = [DataSpec(s, int(r), args.task) for r in args.rates.split(",") for s in args.splits.split(",")]
    surrogates = tuple(args.design_surrogates.split(","))
    run_grid(
        load,
        {name: SETTINGS[name] for name in args.settings.split(",") if name},
        [int(k) for k in args.keys.split(",")],
        data,
        [ModelSpec.parse(m) for m in args.models.split(",")],
        args.attacks.split(","),
        args.output,
        TrainingRecipe(epochs=args.epochs, hf_epochs=args.hf_epochs),
        clean_attacks=[a for a in args.clean_attacks.split(",") if a],
        design_recipe={name: DesignRecipe(surrogates=surrogates, steps=args.design_steps,
                                          surrogate_epochs=args.design_epochs,
                                          **DESIGN_RECIPES.get(name, {})) for name in SETTINGS},
    )


def write_summary(out: Path) -> None:
    """summary.md (every split / rate / countermeasure recorded) and frontier plots, from the recorded runs."""
    from hf_poscuda.evaluation.protocol import (
        CLEAN, _read_jsonl, goals_markdown, plot_frontier, summarise, summary_markdown,
    )

    runs, quality = _read_jsonl(out / "runs.jsonl"), _read_jsonl(out / "quality.jsonl")
    rows = summarise(runs, quality)
    parts = ["# Efficacy sweep: clean-test accuracy, mean over keys (worst key) [mean peak over epochs]\n"]
    for task, split, rate in dict.fromkeys((r["task"], r["split"], r["sampling_rate"]) for r in rows):
        here = [r for r in rows if (r["task"], r["split"], r["sampling_rate"]) == (task, split, rate)]
        models = list(dict.fromkeys(r["model"] for r in here))
        attacks = list(dict.fromkeys(r["attack"] for r in here))
        for model in models:  # one table per model: only the countermeasures measured on it
            measured = [a for a in attacks if any(r["model"] == model and r["attack"] == a and r["setting"] != CLEAN
                                                  for r in here)]
            parts.append(f"\n## {task}, {split} split, {rate} Hz, {model}\n\n")
            parts.append(summary_markdown(rows, [model], measured, split=split, sampling_rate=rate, peak=True,
                                          task=task))
        name = f"frontier_{split}_{rate}.png" if task == "digits" else f"frontier_{task}_{split}_{rate}.png"
        plot_frontier(rows, out / name, models, [a for a in attacks if a in ("none", "blind_eq")] or attacks[:1],
                      split=split, sampling_rate=rate, task=task, goal_accuracy=0.20 if task == "digits" else 0.30)
    tiers = [s for s in dict.fromkeys(r["setting"] for r in rows if r["task"] == "speakers") if s != CLEAN]
    if tiers:  # the settings measured on the speakers too, against the goals (most are on fewer keys)
        parts.append("\n## Against the 0.3 goals (settings measured on both tasks)\n\n")
        parts.append(goals_markdown(rows, tiers))
    (out / "summary.md").write_text("".join(parts))


def write_curves(out: Path, split: str = "official", sampling_rate: int = 8000) -> Path | None:
    """curves_{split}_{rate}.png: clean-test accuracy after each epoch of training on the default's protected copy
    (mean over keys, band: best to worst key), next to clean training, one panel per model; the CNNs also under
    blind equalisation. What an adversary who stops early sees. None when the default was not recorded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from hf_poscuda.evaluation.protocol import CLEAN, NO_ATTACK, _read_jsonl

    runs = [r for r in _read_jsonl(out / "runs.jsonl") if r.get("task", "digits") == "digits" and not r.get("skipped")
            and r["split"] == split and r["sampling_rate"] == sampling_rate and r.get("curve")]
    models = list(dict.fromkeys(r["model"] for r in runs if r["setting"] == "default"))
    if not models:
        return None
    fig, axes = plt.subplots(1, len(models), figsize=(4 * len(models), 3.6), squeeze=False, sharey=True)
    for ax, model in zip(axes[0], models, strict=True):
        for setting, attack, colour, label in ((CLEAN, NO_ATTACK, "tab:gray", "clean training"),
                                               ("default", NO_ATTACK, "tab:blue", "protected (default)"),
                                               ("default", "blind_eq", "tab:orange", "protected, then blind_eq")):
            curves = {r["key"]: r["curve"] for r in runs
                      if (r["setting"], r["model"], r["attack"]) == (setting, model, attack)}
            if not curves:
                continue
            length = min(len(c) for c in curves.values())
            acc = np.array([c[:length] for c in curves.values()])
            epochs = np.arange(1, length + 1)
            ax.plot(epochs, acc.mean(axis=0), color=colour, ls=":" if setting == CLEAN else "-",
                    marker="o" if length == 1 else None, label=label)
            if len(curves) > 1:
                ax.fill_between(epochs, acc.min(axis=0), acc.max(axis=0), color=colour, alpha=0.15)
        ax.axhline(0.2, color="tab:green", lw=1, ls="--", label="goal (20 %)")
        ax.axhline(0.1, color="black", lw=0.8, ls="-.", label="chance")
        ax.set_title(model)
        ax.set_xlabel("epoch")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("clean-test accuracy\n(mean over keys; band: best to worst key)")
    handles = {}
    for ax in axes[0]:
        for handle, text in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(text.split(" (")[0] if "key" in text else text, handle)
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=len(handles), fontsize=8)
    fig.suptitle(f"Training curves, FSDD {split} split, {sampling_rate // 1000} kHz")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    path = out / f"curves_{split}_{sampling_rate}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_attack_costs(out: Path, fsdd: str, clips: int = 50) -> None:
    """attack_costs.json: mean PESQ of each recorded countermeasure's output against clean FSDD train audio
    (what it costs the adversary), on ``clips`` evenly spaced clips of the official split at 8 kHz."""
    import numpy as np

    from hf_poscuda.evaluation import get_attack, to_arrays
    from hf_poscuda.evaluation.attacks import attack_quality
    from hf_poscuda.evaluation.protocol import NO_ATTACK, _read_jsonl

    path = out / "attack_costs.json"
    costs = json.loads(path.read_text()) if path.exists() else {}
    names = {r["attack"] for r in _read_jsonl(out / "runs.jsonl")} - {NO_ATTACK} - set(costs)
    if not names:
        return
    train = to_arrays(load_fsdd(fsdd)["train"], 1.0)
    idx = np.linspace(0, len(train.audio) - 1, clips).astype(int)
    for name in sorted(names):
        pesq = attack_quality(train.audio[idx], train.sampling_rate, get_attack(name))["pesq"]
        costs[name] = pesq if pesq == pesq else None  # no waveform step (feature / batch countermeasures): null
    path.write_text(json.dumps(dict(sorted(costs.items())), indent=1))


def docs_tables(out: Path) -> dict[str, str]:
    """The docs' result tables (``docs/results/``), generated from the recorded runs (tests/test_fsdd_results.py
    checks that the pages hold them)."""
    from hf_poscuda.evaluation.protocol import (
        CLEAN, NO_ATTACK, _read_jsonl, attacks_summary_markdown, goals_markdown, summarise, summary_markdown,
    )

    rows = summarise(_read_jsonl(out / "runs.jsonl"), _read_jsonl(out / "quality.jsonl"))
    cnns = ("logmel_cnn", "raw_cnn")
    models = (*cnns, "wav2vec2-small", "ast-small")
    presets = [CLEAN, "default", "designed", "barcode", "v0.1"]
    tables = {
        f"{split}": summary_markdown(rows, models, (NO_ATTACK,), split=split, settings=presets, peak=True)
        for split in ("official", "speaker")
    }
    tables.update({
        f"{split}-blind-eq": summary_markdown(rows, cnns, (NO_ATTACK, "blind_eq"), split=split, settings=presets,
                                              peak=True)
        for split in ("official", "speaker")
    })
    tables["16k"] = summary_markdown(rows, cnns, (NO_ATTACK, "blind_eq"), split="official", sampling_rate=16000,
                                     settings=[CLEAN, "default", "v0.1"], peak=True)
    costs_path = out / "attack_costs.json"
    costs = json.loads(costs_path.read_text()) if costs_path.exists() else {}
    attacks = [a for a in dict.fromkeys(r["attack"] for r in rows if r["setting"] == "default") if a != NO_ATTACK]
    tables["attacks"] = attacks_summary_markdown(rows, "default", cnns, attacks, costs=costs)
    designed = [a for a in attacks if any(r["setting"] == "designed" and r["attack"] == a and r["task"] == "digits"
                                          and r["model"] == "raw_cnn" for r in rows)]
    tables["designed-attacks"] = attacks_summary_markdown(rows, "designed", ("raw_cnn", "ge2e-probe"), designed,
                                                          costs=costs)
    # the privacy task and the real pretrained adversary (issue 22): speakers on both of their splits, digits too
    ge2e = ("ge2e-probe", "ge2e-mlp", "ge2e-finetune")
    tiers = [CLEAN, "default", "designed"]
    scratch = (*cnns, "xvector")  # the x-vector TDNN: a speaker network of another shape, never a surrogate
    for split in ("official", "digit"):
        tables[f"speakers-{split}"] = summary_markdown(rows, (*scratch, *ge2e), (NO_ATTACK,), split=split,
                                                        settings=tiers, peak=True, task="speakers")
        tables[f"speakers-{split}-blind-eq"] = summary_markdown(rows, (*cnns, "ge2e-probe"), ("blind_eq",),
                                                                 split=split, settings=tiers, peak=True,
                                                                 task="speakers")
    # the adversary who reads the card: each class's average spectrum moved to the common one (both splits)
    for task, split in (("speakers", "official"), ("speakers", "digit"), ("digits", "official"),
                        ("digits", "speaker")):
        tables[f"{task}-{split}-class-eq"] = summary_markdown(rows, ("raw_cnn", "ge2e-probe"), ("class_eq",),
                                                              split=split, settings=tiers, peak=True, task=task)
    # speakers of real read speech (LibriSpeech test-other, 10 speakers, utterance-disjoint windows)
    tables["librispeech"] = summary_markdown(rows, (*scratch, "ge2e-probe", "ge2e-mlp"), (NO_ATTACK,),
                                             split="utterance", settings=tiers, peak=True, task="librispeech")
    tables["librispeech-countermeasures"] = summary_markdown(rows, ("raw_cnn", "ge2e-probe"), ("blind_eq", "class_eq"),
                                                             split="utterance", settings=tiers, peak=True,
                                                             task="librispeech")
    tables["tiers-0.3"] = tiers_markdown(out.parent / "efficacy_sweep")  # the 0.3 settings of the sweep
    # the scorecard against issue 22's goals (5 keys, both tasks and splits, GE2E held out)
    tables["goals"] = goals_markdown(rows, ["default", "designed"])
    for split in ("official", "speaker"):
        tables[f"digits-{split}-tiers"] = summary_markdown(rows, (*scratch, *ge2e), (NO_ATTACK,),
                                                           split=split, settings=tiers, peak=True)
        tables[f"digits-{split}-tiers-blind-eq"] = summary_markdown(rows, (*cnns, "ge2e-probe"), ("blind_eq",),
                                                                    split=split, settings=tiers, peak=True)
    return tables


# the 0.3 settings of the sweep, in the order of the docs' table, and what each is
TIERS_03 = {
    "tier-strong": "default with 6 cuts of 40 dB, 3 boosts of 15 dB",
    "tier-gentle": "default with 15 dB varying cuts, 60 ms fades",
    "designed": "the preset: designed within −30 .. +12 dB on 16 bands, targets a key-drawn cycle",
    "designed-gentle": "designed with 15 dB varying cuts, 60 ms fades",
    "designed-static": "designed, time-invariant (no varying part)",
    "designed-strong": "designed within −40 .. +15 dB",
    "designed32": "designed on 32 bands",
    "designed-nearest": "designed, each class pushed to the class the surrogates find nearest",
    "designed-strong-nearest": "both: −40 .. +15 dB and the nearest targets",
    "designed-em": "designed error-minimising: surrogates learn the protected clips beside the gains",
    "designed-em-q01": "error-minimising with a quality penalty (weight 0.01)",
    "designed-both": "the targeted and error-minimising losses summed",
    "tv-v4-30": "varying part only: two disjoint 4-cut sets alternating",
}


def tiers_markdown(sweep: Path) -> str:
    """The 0.3 settings of the sweep folder ``sweep`` (official split, 8 kHz): PESQ / STOI on the speakers'
    train audio, keys, and for speakers then digits the raw CNN and the GE2E probe without and with blind
    equalisation, as ``mean (worst key)`` in %."""
    import numpy as np

    from hf_poscuda.evaluation.protocol import NO_ATTACK, _read_jsonl, summarise
    from hf_poscuda.formatting import key_range

    quality = _read_jsonl(sweep / "quality.jsonl")
    rows = summarise(_read_jsonl(sweep / "runs.jsonl"), quality)
    index = {(r["setting"], r["task"], r["model"], r["attack"]): r for r in rows
             if r["split"] == "official" and r["sampling_rate"] == 8000}
    columns = [(task, attack) for task in ("speakers", "digits") for attack in (NO_ATTACK, "blind_eq")]
    lines = ["| setting | what | PESQ / STOI (speakers) | PESQ (digits) | keys | speakers: raw CNN / GE2E "
             "| after blind EQ | digits: raw CNN / GE2E | after blind EQ |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, what in TIERS_03.items():
        found = [index[k] for k in index if k[0] == name]
        if not found:
            continue
        pesq = {r["task"]: r["pesq"] for r in found}  # summarise gives each row its setting's PESQ on that data
        stoi = [r["stoi"] for r in quality if r["setting"] == name and r.get("task") == "speakers"
                and r["split"] == "official" and r["sampling_rate"] == 8000]
        pair = []
        for task, attack in columns:
            cells = [index.get((name, task, model, attack)) for model in ("raw_cnn", "ge2e-probe")]
            pair.append(" / ".join("–" if c is None else f"{100 * c['mean']:.1f} ({100 * c['worst']:.0f})"
                                   for c in cells))
        quality_text = "–" if not stoi else f"{pesq['speakers']:.2f} / {np.mean(stoi):.2f}"
        digits_text = f"{pesq['digits']:.2f}" if np.isfinite(pesq.get("digits", np.nan)) else "–"
        lines.append(f"| `{name}` | {what} | {quality_text} | {digits_text} | {key_range(r['keys'] for r in found)} | "
                     + " | ".join(pair) + " |")
    return "\n".join(lines) + "\n"


def write_card_summary(out: Path, path: Path = Path("cards/fsdd_measured.json")) -> None:
    """cards/fsdd_measured.json: what a card without an evaluation report quotes for a measured preset."""
    from hf_poscuda.evaluation.protocol import _read_jsonl, preset_summary

    # the fine-tuning threat's runs (examples/finetune_threat.py) go on the card too; PESQ comes from this sweep
    finetune = _read_jsonl(Path("examples/results/finetune/runs.jsonl"))
    summary = preset_summary(_read_jsonl(out / "runs.jsonl") + finetune, _read_jsonl(out / "quality.jsonl"))
    path.write_text(json.dumps(summary, indent=1) + "\n")


def update_docs(targets: list[Path], out: Path) -> None:
    """Replace every ``<!-- efficacy:NAME -->...<!-- /efficacy:NAME -->`` region in the Markdown files or folders
    ``targets`` with the generated table (a table with no region anywhere is an error)."""
    rewrite_regions(targets, "efficacy", docs_tables(out))


if __name__ == "__main__":
    main()
