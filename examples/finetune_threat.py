"""The fine-tuning threat: pretrain wav2vec2 / AST on synthetic speech, then fine-tune them on protected FSDD.

Three steps, one command each (every step skips what is already done, so a stopped run can be resumed):

    python examples/finetune_threat.py corpus     # espeak-ng corpus, with and without digit words (~2 min)
    python examples/finetune_threat.py pretrain   # wav2vec2-small and AST-small checkpoints (~45 min on 2 CPUs)
    python examples/finetune_threat.py threat --fsdd ../shared/data/fsdd/recordings   # the runs (~1.5 h)
    python examples/finetune_threat.py report --docs docs   # tables from runs.jsonl, into the docs pages

Checkpoints and corpora go to ``examples/results/pretrained/`` (not committed: rebuilt by the commands above;
each checkpoint's ``pretraining.json`` is committed under ``examples/results/finetune/``). The threat runs use
the protocol of ``examples/efficacy_sweep.py`` (public evaluation keys, cached ``runs.jsonl``).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from functools import lru_cache
from pathlib import Path

from hf_poscuda import PosCUDAConfig
from hf_poscuda.evaluation import DataSpec, ModelSpec, TrainingRecipe, run_grid, summarise
from hf_poscuda.evaluation.corpus import WORDS, SpeechCorpusConfig, build_speech_corpus
from hf_poscuda.evaluation.pretrain import RECORD_NAME, pretrain_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docs_markers import add_docs_option, rewrite_regions  # noqa: E402

WORK = Path("examples/results/pretrained")
OUT = Path("examples/results/finetune")
CORPORA = {  # name -> corpus of 100 words; "digits" holds the ten FSDD words, "nodigits" does not
    "digits": SpeechCorpusConfig(words=WORDS[:90], include_digits=True, renditions=40),
    "nodigits": SpeechCorpusConfig(words=WORDS[:100], include_digits=False, renditions=40),
}
#: Pretraining recipes (supervised word classification, from scratch); wav2vec2 costs ~5x more per epoch on CPU.
PRETRAIN = {
    "ast": TrainingRecipe(hf_epochs=40, hf_learning_rate=1e-3, batch_size=32),
    "wav2vec2": TrainingRecipe(hf_epochs=20, hf_learning_rate=1e-3, batch_size=32),
}
#: Fine-tuning recipes: the usual lower peak rate for a pretrained start; a probe trains its head alone, faster.
KEYS = (0, 1, 2)
FINETUNE = {
    "full": TrainingRecipe(hf_epochs=8, hf_learning_rate=2e-4),
    "partial": TrainingRecipe(hf_epochs=8, hf_learning_rate=2e-4),
    "probe": TrainingRecipe(hf_epochs=8, hf_learning_rate=2e-3),
}


def checkpoint_dir(model: str, corpus: str) -> Path:
    return WORK / f"{model}-small-espeak-{corpus}"


def build_corpora(names: list[str]) -> None:
    for name in names:
        folder = WORK / f"corpus-{name}"
        if (folder / "dataset_dict.json").exists():
            continue
        build_speech_corpus(CORPORA[name]).save_to_disk(str(folder))


def pretrain(models: list[str], corpora: list[str]) -> None:
    from datasets import load_from_disk

    OUT.mkdir(parents=True, exist_ok=True)
    for corpus in corpora:
        build_corpora([corpus])
        data = load_from_disk(str(WORK / f"corpus-{corpus}"))
        for model in models:
            folder = checkpoint_dir(model, corpus)
            if (folder / RECORD_NAME).exists():
                continue
            if folder.exists():
                shutil.rmtree(folder)  # a run stopped before saving
            info = {"name": corpus, **CORPORA[corpus].to_dict()}
            record = pretrain_checkpoint(model, data, folder, recipe=PRETRAIN[model], corpus_info=info)
            (OUT / f"pretraining-{folder.name}.json").write_text(json.dumps(record, indent=2) + "\n")


def threat_models(models: list[str], corpus: str, modes: list[str]) -> list[ModelSpec]:
    specs = []
    for model in models:
        folder = checkpoint_dir(model, corpus)
        if not (folder / RECORD_NAME).exists():
            raise SystemExit(f"No checkpoint at {folder}: run `python examples/finetune_threat.py pretrain` first.")
        specs += [ModelSpec(model, checkpoint=str(folder), finetune=mode) for mode in modes]
    return specs


def threat(fsdd: str, models: list[str], corpora: list[str], modes: list[str], splits: list[str],
           keys: list[int]) -> None:
    from hf_poscuda.sources import load_fsdd

    @lru_cache(maxsize=1)
    def load(spec: DataSpec):
        return load_fsdd(fsdd, split=spec.split)

    for corpus in corpora:
        for mode in modes:
            run_grid(load, {"default": PosCUDAConfig()}, keys, [DataSpec(s, 8000) for s in splits],
                     threat_models(models, corpus, [mode]), ["none"], OUT, FINETUNE[mode], quality_clips=20)


def _pct(row: dict | None, worst: bool = True) -> str:
    if row is None:
        return "–"
    text = f"{100 * row['mean']:.1f}"
    return text + (f" ({100 * row['worst']:.0f}) [{100 * row['peak_mean']:.0f}]" if worst else "")


def tables() -> dict[str, str]:
    """The docs' fine-tuning tables (``docs/results/fine-tuning.md``): threat runs next to the from-scratch runs of
    the efficacy sweep."""
    from hf_poscuda.evaluation.protocol import CLEAN, _read_jsonl, display_label
    from hf_poscuda.formatting import key_range

    runs = [r | {"model": display_label(r["model"])} for r in _read_jsonl(OUT / "runs.jsonl")]
    scratch = [r for r in _read_jsonl(Path("examples/results/efficacy/runs.jsonl"))
               if r["model"] in ("ast-small", "wav2vec2-small") and r["attack"] == "none" and r["sampling_rate"] == 8000
               and r["setting"] in (CLEAN, "default") and r["key"] in (-1, *KEYS)]
    index = {(r["setting"], r["split"], r["model"]): r for r in summarise(runs + scratch)}
    keys = sorted({r["keys"] for (s, _, _), r in index.items() if s != CLEAN})
    head = ("| model | start | fine-tuning | keys | clean training, official | protected, official | clean training, "
            "speaker | protected, speaker |\n|---|---|---|---:|---:|---:|---:|---:|\n")
    lines = []
    for arch in ("ast", "wav2vec2"):
        order = [(f"{arch}-small", "from scratch", "all (8 epochs)")]
        for corpus in CORPORA:
            for mode in FINETUNE:
                label = display_label(ModelSpec(arch, checkpoint=str(checkpoint_dir(arch, corpus)), finetune=mode).label)
                order.append((label, f"pretrained, espeak-ng `{corpus}`", mode))
        for label, start, mode in order:
            cells = [index.get((setting, split, label)) for split in ("official", "speaker")
                     for setting in (CLEAN, "default")]
            if not any(cells[1::2]):
                continue
            counts = sorted({c["keys"] for c in cells[1::2] if c is not None})
            lines.append(f"| `{label}` | {start} | {mode} | {key_range(counts)} | " + " | ".join(
                _pct(c, worst=i % 2 == 1) for i, c in enumerate(cells)) + " |")
    threat = head + "\n".join(lines) + "\n"
    pre = ["| checkpoint | corpus | classes | train / held-out clips | epochs | held-out word accuracy |",
           "|---|---|---:|---:|---:|---:|"]
    for path in sorted(OUT.glob("pretraining-*.json")):
        r = json.loads(path.read_text())
        pre.append(f"| `{path.stem.removeprefix('pretraining-')}` | `{r['corpus'].get('name')}` | {r['classes']} | "
                   f"{r['train_clips']} / {r['test_clips']} | {r['recipe']['hf_epochs']} | "
                   f"{100 * r['pretraining']['test_accuracy']:.1f} % |")
    return {"threat": threat, "pretraining": "\n".join(pre) + "\n", "keys": ", ".join(map(str, keys))}


def report(docs: list[Path]) -> None:
    """Write ``summary.md`` and replace the ``<!-- finetune:NAME -->`` regions of the Markdown files or folders
    ``docs`` (none: only ``summary.md``)."""
    generated = tables()
    (OUT / "summary.md").write_text(
        "# Fine-tuning threat: clean-test accuracy in %, mean over keys (worst key) [mean best epoch]\n\n"
        + generated["threat"] + "\n## Pretrained checkpoints\n\n" + generated["pretraining"]
    )
    if docs:
        rewrite_regions(docs, "finetune", {name: generated[name] for name in ("threat", "pretraining")})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["corpus", "pretrain", "threat", "report"])
    parser.add_argument("--corpora", default="digits,nodigits")
    parser.add_argument("--models", default="ast,wav2vec2")
    parser.add_argument("--modes", default="full,partial,probe")
    parser.add_argument("--splits", default="official,speaker")
    parser.add_argument("--keys", default=",".join(map(str, KEYS)))
    parser.add_argument("--fsdd", default="../shared/data/fsdd/recordings")
    add_docs_option(parser)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    corpora, models = args.corpora.split(","), args.models.split(",")
    if args.step == "corpus":
        build_corpora(corpora)
    elif args.step == "pretrain":
        pretrain(models, corpora)
    elif args.step == "threat":
        threat(args.fsdd, models, corpora, args.modes.split(","), args.splits.split(","),
               [int(k) for k in args.keys.split(",")])
    else:
        report(args.docs)


if __name__ == "__main__":
    main()
