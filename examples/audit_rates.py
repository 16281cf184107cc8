"""Evidence for `hf-poscuda audit`: train models on FSDD protected with public keys (all of the training set, or a
share of it mixed with clean audio of other speakers, under countermeasures), audit each with its own key and with
other keys, and record detection rates, p-values and the queries needed; models trained on clean data give the
false-positive rows.

    python examples/audit_rates.py run --fsdd ../shared/data/fsdd/recordings --keys 0,1,2,3,4 \
        --models logmel_cnn,raw_cnn --fractions 1,0.25 --attacks none
    python examples/audit_rates.py run --fsdd ../shared/data/fsdd/recordings --models raw_cnn --fractions 0.25 \
        --long-audit 3000                          # the same models again, each audited once with 3,000 queries
    python examples/audit_rates.py run --fsdd ../shared/data/fsdd/recordings --task speakers --decoys 19 \
        --models raw_cnn,ge2e-probe --clean    # speakers (6 classes: alpha 1e-4, 19 decoys)
    python examples/audit_rates.py run --task librispeech --speaker-folder PATH \
        --models raw_cnn,ge2e-probe --clean    # LibriSpeech speakers (10 classes; probe: its 220 test windows)
    python examples/audit_rates.py report --docs docs  # summary.md and the docs' audit table, from the record

Every trained model is one line of ``runs.jsonl`` (resumable: a re-run skips what is there), holding every audit
made of it. Probe: the clean FSDD official test split (300 clips; the owner's held-back clean data). Each audit
uses ``--queries`` queries per key and ``--decoys`` public decoy keys; ``queries_needed`` is the fewest queries
(of the own key alone, in steps of 10) after which p <= 1e-6.

Mixes: the protected share is the first ``fraction`` of the training rows ordered by speaker (a rotation of the
six speakers that moves with the key), the rest is the same rows' clean audio, so the protected and clean parts
come from different speakers except for the one speaker at the boundary.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docs_markers import add_docs_option, rewrite_regions  # noqa: E402

from hf_poscuda.audit import AuditResult, audit_model, queries_needed
from hf_poscuda.evaluation import AudioArrays, ModelSpec, TrainingRecipe, get_attack, public_eval_key, to_arrays
from hf_poscuda.evaluation.auditing import model_predictor
from hf_poscuda.evaluation.experiment import train_model
from hf_poscuda.evaluation.protocol import _append, _drop_unfinished_line, _read_jsonl
from hf_poscuda.evaluation.training import train_cnn
from hf_poscuda.sources import load_fsdd, load_speaker_folder

logger = logging.getLogger("audit_rates")
OUT = Path("examples/results/audit")
ALPHA = 1e-6
TASK_NAMES = {"speakers": " (speakers)", "librispeech": " (LibriSpeech speakers)"}  # how the table names a task
SPEAKER_ALPHA = 1e-4  # 6 classes: even 19 decoys cannot go below 1 / (20 * 6!) = 6.9e-5
FINETUNE = TrainingRecipe(epochs=2, learning_rate=1e-3)  # the adversary's clean fine-tuning after the fact
CLEAN_AUDIT_KEYS = range(10)  # a clean model is audited with public keys 0-9 (false-positive pairs)


def run_id(model: str, key: int, fraction: float, attack: str, task: str = "digits", long_audit: int = 0) -> str:
    return (f"{'' if task == 'digits' else task + '|'}{model}|{key}|{fraction:g}|{attack}"
            f"{f'|q{long_audit}' if long_audit else ''}")


def other_key_audits(run: dict[str, Any]) -> list[dict[str, Any]]:
    """A recorded run's audits with keys it was not trained with (the false-positive pairs): every audit of a clean
    model (keys 0-9), the second and third of a protected one (as ``audits_of`` writes them)."""
    return run["audits"] if run["key"] < 0 else run["audits"][1:3]


def mixed(clean: AudioArrays, protected: AudioArrays, speakers: list[str], fraction: float, key: int) -> AudioArrays:
    """The training set of a mix: the first ``fraction`` of rows ordered by speaker (rotated by key) protected."""
    if fraction >= 1.0:
        return protected
    names = sorted(set(speakers))
    rotation = names[key % len(names):] + names[: key % len(names)]
    order = sorted(range(len(speakers)), key=lambda i: (rotation.index(speakers[i]), i))
    chosen = np.zeros(len(speakers), dtype=bool)
    chosen[order[: int(round(fraction * len(speakers)))]] = True
    audio = np.where(chosen[:, None], protected.audio, clean.audio)
    return AudioArrays(audio.astype(np.float32), clean.labels, clean.sampling_rate)


def summary(result: AuditResult) -> dict[str, Any]:
    return result.to_dict() | {
        "queries_needed": queries_needed(result, ALPHA) if result.trained_on_key or result.p_value <= 1e-3 else None,
    }


def audits_of(trained: Any, key: int, attack: str, probe: Any, test: AudioArrays, args: argparse.Namespace,
              cache: dict, clean_tune: AudioArrays) -> list[dict[str, Any]]:
    """Every audit of one trained model: its own key (plus the adversary's inference-time blind EQ and a little clean
    fine-tuning), two other keys; a clean model: keys 0-9."""
    sr = test.sampling_rate
    preprocess = get_attack(attack) if attack != "none" else None
    pipeline = None if preprocess is None or all(p.kind != "preprocess" for p in preprocess.parts) else preprocess

    def audit(audited: int, predictor: Any, label: str, queries: int | None = None) -> dict[str, Any]:
        result = audit_model(predictor, probe, public_eval_key(audited), num_decoys=args.decoys,
                             max_queries=queries or args.queries, alpha=SPEAKER_ALPHA if args.task == "speakers" else ALPHA,
                             stamp_cache=cache, progress=False)
        logger.info("  audit key %d (%s): rate %.2f, decoys %.2f, p %.3g", audited, label, result.key_rate,
                    result.decoy_mean, result.p_value)
        return {"audited_key": audited, "query_pipeline": label, **summary(result)}

    predict = model_predictor(trained, sr, preprocess=pipeline)
    if args.long_audit:  # one own-key audit with more queries (each probe clip stamped several times)
        return [audit(key, predict, f"model, {args.long_audit} queries", queries=args.long_audit)]
    if key < 0:
        return [audit(k, predict, "model") for k in CLEAN_AUDIT_KEYS]
    out = [audit(key, predict, "model")]
    out += [audit(k, predict, "model") for k in ((key + 1) % 5, (key + 2) % 5)]
    if args.extra and attack == "none":
        out.append(audit(key, model_predictor(trained, sr, preprocess=get_attack("blind_eq")), "blind_eq at inference"))
        if trained.extractor is None:  # CNNs: a little clean fine-tuning afterwards, then audited again
            tuned = train_cnn(trained.model, (clean_tune.audio, clean_tune.labels), (test.audio, test.labels),
                              FINETUNE, desc="clean fine-tuning")
            entry = audit(key, model_predictor(tuned, sr), "after clean fine-tuning")
            entry["finetuned_test_accuracy"] = tuned.test_accuracy
            out.append(entry)
    return out


def run(args: argparse.Namespace) -> None:
    import torch

    from hf_poscuda import protect_dataset

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    runs_path = out / "runs.jsonl"
    _drop_unfinished_line(runs_path)
    done = {run_id(r["model"], r["key"], r["fraction"], r["attack"], r.get("task", "digits"), r.get("long_audit", 0))
            for r in _read_jsonl(runs_path)}
    # LibriSpeech: utterance-disjoint 1 s windows of a speaker folder (10 classes, so alpha as for the digits)
    data = (load_speaker_folder(args.speaker_folder) if args.task == "librispeech"
            else load_fsdd(args.fsdd, task=args.task))
    recipe = TrainingRecipe(epochs=args.epochs, hf_epochs=args.hf_epochs)
    clean = to_arrays(data["train"], recipe.clip_seconds)
    test = to_arrays(data["test"], recipe.clip_seconds)
    speakers = list(data["train"]["speaker"])
    tuners = ["george", "jackson"] if args.task != "librispeech" else sorted(set(speakers))[:2]
    tune_rows = np.isin(speakers, tuners)  # the adversary's own clean data for fine-tuning
    clean_tune = AudioArrays(clean.audio[tune_rows], clean.labels[tune_rows], clean.sampling_rate)
    cache: dict = {}
    models = [ModelSpec.parse(m) for m in args.models.split(",")]
    keys = [int(k) for k in args.keys.split(",")]
    jobs = [(m, -1, 1.0, "none") for m in models] if args.clean else []
    jobs += [(m, k, float(f), a) for a in args.attacks.split(",") for f in args.fractions.split(",") for m in models
             for k in keys]
    protected_cache: dict[int, AudioArrays] = {}
    for spec, key, fraction, attack in jobs:
        if run_id(spec.label, key, fraction, attack, args.task, args.long_audit) in done:
            continue
        start = time.perf_counter()
        train = clean
        if key >= 0:
            if key not in protected_cache:
                protected_cache.clear()
                protected, _ = protect_dataset(data["train"], public_eval_key(key), snr_clips=1)
                protected_cache[key] = to_arrays(protected, recipe.clip_seconds)
            train = mixed(clean, protected_cache[key], speakers, fraction, key)
        attack_obj = get_attack(attack) if attack != "none" else None
        train_in, test_in = train, test
        rng = np.random.default_rng(recipe.seed)
        for part in attack_obj.parts if attack_obj else ():
            if part.kind == "preprocess":
                train_in = AudioArrays(part.apply(train_in.audio, train.sampling_rate, rng), train.labels,
                                       train.sampling_rate)
                test_in = AudioArrays(part.apply(test_in.audio, test.sampling_rate, rng), test.labels,
                                      test.sampling_rate)
            elif part.kind == "dataset":
                train_in = AudioArrays(part.apply_labelled(train_in.audio, train.labels, train.sampling_rate),
                                       train.labels, train.sampling_rate)
        in_training = attack_obj is not None and attack_obj.in_training
        desc = f"{spec.label} key {key} fraction {fraction:g} {attack}"
        logger.info("training %s", desc)
        trained = train_model(spec, train_in, test_in, recipe, desc, attack=attack_obj if in_training else None)
        logger.info("%s: clean-test accuracy %.3f", desc, trained.test_accuracy)
        audits = audits_of(trained, key, attack, data["test"], test, args, cache, clean_tune)
        _append(runs_path, {
            "model": spec.label, "key": key, "fraction": fraction, "attack": attack,
            **({} if args.task == "digits" else {"task": args.task}),
            **({"long_audit": args.long_audit} if args.long_audit else {}),
            "key_id": public_eval_key(key).key_id if key >= 0 else None, "epochs": recipe.epochs,
            "test_accuracy": trained.test_accuracy, "train_accuracy": trained.train_accuracy,
            "queries": args.long_audit or args.queries, "decoys": args.decoys, "seconds": round(time.perf_counter() - start, 1),
            "audits": audits,
        })


def shown(needed: list[int | None], task: str) -> str:
    """The queries-needed cell: the key alone cannot reach 1e-6 with 6 classes (its floor is 1 / 6! = 1.4e-3)."""
    if task == "speakers":
        return "– (6 classes)"
    return "never" if None in needed else str(max(needed))


def report(out: Path = OUT, *, write: bool = True) -> str:
    """summary.md: detection per (model, training data, countermeasure, query pipeline), then false positives.
    α is 1e-6 for digits (10 classes) and 1e-4 for speakers (6 classes: 1 / (20 * 6!) = 6.9e-5 is the floor)."""
    runs = _read_jsonl(out / "runs.jsonl")
    lines = ["| model | training data | countermeasure | keys | clean-test accuracy | flagged (p <= α) | "
             "rate: key / decoys | p (worst key) | queries needed, key alone (worst key) |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    groups: dict[tuple, list[tuple[dict[str, Any], dict[str, Any]]]] = {}
    for r in runs:  # own-key audits: the first, and those after the adversary's extra steps
        if r["key"] >= 0:
            for a in [r["audits"][0], *r["audits"][3:]]:
                groups.setdefault((r.get("task", "digits"), r["model"], r["fraction"], r["attack"], a["query_pipeline"]),
                              []).append((r, a))
    models = ["logmel_cnn", "raw_cnn", "ast-small", "wav2vec2-small"]

    def order(group_key: tuple) -> tuple:  # digits first; per model: all of the data, then less; countermeasures last
        task, model, fraction, attack, pipeline = group_key
        return (task != "digits", models.index(model) if model in models else len(models), model, -fraction,
                attack != "none", attack, pipeline != "model", pipeline)

    for (task, model, fraction, attack, pipeline), group in sorted(groups.items(), key=lambda g: order(g[0])):
        audits = [a for _, a in group]
        needed = [a["queries_needed"] for a in audits]
        data = "protected copy" if fraction >= 1 else f"{100 * fraction:g} % protected + clean"
        counter = attack if pipeline == "model" else f"{attack}; {pipeline.removeprefix('model, ')}"
        accuracy = np.mean([a.get("finetuned_test_accuracy", r["test_accuracy"]) for r, a in group])
        lines.append(
            f"| {model}{TASK_NAMES.get(task, '')} | {data} | {counter} | {len(group)} | {100 * accuracy:.1f} % | "
            f"{sum(a['p_value'] <= a.get('alpha', ALPHA) for a in audits)} / {len(group)} | "
            f"{100 * np.mean([a['key_rate'] for a in audits]):.1f} / {100 * np.mean([a['decoy_mean'] for a in audits]):.1f} % | "
            f"{max(a['p_value'] for a in audits):.2g} | {shown(needed, task)} |"
        )
    fp = [(r, a) for r in runs for a in other_key_audits(r)]
    if fp:
        lines += ["", f"False positives: {sum(a['p_value'] <= a.get('alpha', ALPHA) for _, a in fp)} of {len(fp)} "
                  f"(model, key) pairs flagged at p <= α ({sum(r['key'] < 0 for r, _ in fp)} pairs of models trained on clean data, "
                  f"{sum(r['key'] >= 0 for r, _ in fp)} of models trained with another key); smallest p among them "
                  f"{min(a['p_value'] for _, a in fp):.3g}; their rate {100 * np.mean([a['key_rate'] for _, a in fp]):.1f} % "
                  f"(decoys {100 * np.mean([a['decoy_mean'] for _, a in fp]):.1f} %)."]
    text = "\n".join(lines) + "\n"
    if write:
        (out / "summary.md").write_text("# Audit evidence (examples/audit_rates.py)\n\n" + text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--fsdd", help="FSDD recordings (the digits and speakers tasks)")
    r.add_argument("--task", default="digits", choices=["digits", "speakers", "librispeech"],
                   help="what the label is: the FSDD digit or speaker, or the speaker of --speaker-folder")
    r.add_argument("--speaker-folder", help="--task librispeech: root/<speaker>/<utterance>.flac")
    r.add_argument("--keys", default="0,1,2,3,4")
    r.add_argument("--models", default="logmel_cnn,raw_cnn")
    r.add_argument("--fractions", default="1")
    r.add_argument("--attacks", default="none")
    r.add_argument("--clean", action="store_true", help="also train and audit each model on clean data")
    r.add_argument("--extra", action="store_true", help="inference-time blind EQ and clean fine-tuning audits")
    r.add_argument("--queries", type=int, default=300)
    r.add_argument("--decoys", type=int, default=9)
    r.add_argument("--long-audit", type=int, default=0, metavar="QUERIES",
                   help="instead of the usual audits, audit each model once, with its own key and this many queries "
                        "(each probe clip stamped several times): how many a weakly marked model needs")
    r.add_argument("--epochs", type=int, default=30)
    r.add_argument("--hf-epochs", type=int, default=8)
    r.add_argument("--threads", type=int, default=None)
    r.add_argument("--output", default=str(OUT))
    rep = sub.add_parser("report")
    rep.add_argument("--output", default=str(OUT))
    add_docs_option(rep)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.command == "run":
        needs = "--speaker-folder" if args.task == "librispeech" else "--fsdd"
        if not (args.speaker_folder if args.task == "librispeech" else args.fsdd):
            parser.error(f"{needs} is required for --task {args.task}.")
        run(args)
    text = report(Path(args.output))
    if getattr(args, "docs", None):
        rewrite_regions(args.docs, "audit", {"evidence": text})
    print(text)


if __name__ == "__main__":
    main()
