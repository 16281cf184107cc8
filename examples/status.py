"""The status lines of the README and of the docs' home page, made from the committed results.

Every number in them is computed here from ``examples/results/`` (efficacy, sweep, fine-tuning threat, verify), and
``tests/test_docs.py`` checks that the ``<!-- status:summary -->`` regions are what this script makes now:

    python examples/status.py --docs README.md docs/index.md

Links point at the docs pages, relative to the file the lines go into.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docs_markers import add_docs_option, rewrite_regions  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "examples" / "results"
DOCS = ROOT / "docs"
GOAL, GOAL_WORST, GOAL_ATTACKED, GOAL_PESQ = 0.20, 0.25, 0.30, 4.0
MODELS = {"logmel_cnn": "log-mel CNN", "raw_cnn": "raw-waveform CNN", "wav2vec2-small": "wav2vec2",
          "ast-small": "AST"}


def _read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _rows(folder: Path) -> list[dict[str, Any]]:
    from hf_poscuda.evaluation.protocol import summarise

    rows = summarise(_read(folder / "runs.jsonl"), _read(folder / "quality.jsonl"))
    return [r for r in rows if r.get("task", "digits") == "digits"]


def _pct(value: float) -> str:
    return f"{100 * value:.1f} %"


def _span(values: list[float], digits: int = 1) -> str:
    low, high = f"{100 * min(values):.{digits}f}", f"{100 * max(values):.{digits}f}"
    return f"{low} %" if low == high else f"{low}–{high} %"


def _keys(counts: set[int]) -> str:
    return str(min(counts)) if min(counts) == max(counts) else f"{min(counts)}–{max(counts)}"


def facts() -> dict[str, Any]:
    """Every number the status lines quote, from the committed records."""
    from hf_poscuda.evaluation.protocol import CLEAN, NO_ATTACK

    rows = _rows(RESULTS / "efficacy")

    def get(setting: str, model: str, attack: str = NO_ATTACK, split: str = "official", rate: int = 8000) -> dict:
        found = [r for r in rows if (r["setting"], r["model"], r["attack"], r["split"], r["sampling_rate"])
                 == (setting, model, attack, split, rate)]
        if len(found) != 1:
            raise ValueError(f"expected one summary row for {setting}/{model}/{attack}/{split}/{rate}, "
                             f"got {len(found)}")
        return found[0]

    plain = {m: get("default", m) for m in MODELS}
    both_splits = [get("default", m, split=s) for m in MODELS for s in ("official", "speaker")]
    attacked = [r for r in rows if r["setting"] == "default" and r["attack"] != NO_ATTACK]
    cnns = ("logmel_cnn", "raw_cnn")
    pesq = min(r["pesq"] for r in both_splits)
    met = (all(r["mean"] <= GOAL and r["worst"] <= GOAL_WORST for r in both_splits) and pesq >= GOAL_PESQ
           and all(r["mean"] <= GOAL_ATTACKED for r in attacked))

    sweep = _rows(RESULTS / "efficacy_sweep")
    sweep_settings = {r["setting"] for r in sweep if r["setting"] != CLEAN}
    sweep_raw = [r["mean"] for r in sweep if r["setting"] != CLEAN and r["model"] == "raw_cnn"
                 and r["attack"] == NO_ATTACK]

    from hf_poscuda.evaluation.protocol import summarise

    tuned = [r for r in summarise(_read(RESULTS / "finetune" / "runs.jsonl"))
             if r["setting"] != CLEAN and ":" in r["model"]]
    probe = [r for r in tuned if "@probe:" in r["model"]]
    fine = [r for r in tuned if "@probe:" not in r["model"]]

    checks = _read(RESULTS / "verify" / "checks.jsonl")
    hits = [c for c in checks if c["case"] == "protected with the key"]
    false = [c for c in checks if c["case"] in ("clean", "protected with another key")]
    return {
        "met": met,
        "plain": plain,
        "plain_keys": _keys({r["keys"] for r in plain.values()}),
        "clean": [get(CLEAN, m)["mean"] for m in MODELS],
        "blind_eq": [get("default", m, "blind_eq") for m in cnns],
        "v01_blind_eq": [get("v0.1", m, "blind_eq") for m in cnns],
        "blind_eq_16k": [get("default", m, "blind_eq", rate=16000) for m in cnns],
        "pesq": get("default", "logmel_cnn")["pesq"],
        "pesq_v01": get("v0.1", "logmel_cnn")["pesq"],
        "sweep_settings": len(sweep_settings),
        "sweep_best_raw": min(sweep_raw),
        "fine": [r["mean"] for r in fine],
        "probe": [r["mean"] for r in probe],
        "tuned_keys": _keys({r["keys"] for r in tuned}),
        "hits": sum(c["protected"] for c in hits),
        "hit_keys": len(hits),
        "false": sum(c["protected"] for c in false),
        "false_checks": len(false),
    }


def status_lines(link_base: str = "docs") -> str:
    """The status, at most eight lines; ``link_base`` is the docs folder relative to the file they go into."""
    f = facts()
    base = "" if link_base in ("", ".") else link_base.rstrip("/") + "/"

    def link(text: str, page: str) -> str:
        return f"[{text}]({base}{page})"

    plain = ", ".join(f"{MODELS[m]} {_pct(r['mean'])}" for m, r in f["plain"].items())
    eq, eq16, v01 = (" / ".join(f"{100 * r['mean']:.1f}" for r in f[k])
                     for k in ("blind_eq", "blind_eq_16k", "v01_blind_eq"))
    verdict = ("**The goal is met.**" if f["met"] else
               "**The goal is not met: the protection is partial.** Read *protected* as *much harder to learn from*, "
               "not *unlearnable*.")
    lines = [
        f"{verdict} Measured on the Free Spoken Digit Dataset with the 0.2 default (official split; chance 10 %):",
        "",  # Markdown needs a blank line before a list
        f"- Trained from scratch on the protected copy: {plain} on clean test audio (mean of {f['plain_keys']} "
        f"public keys; clean training {_span(f['clean'], 0)}; goal ≤ {100 * GOAL:.0f} %). "
        f"{link('Efficacy', 'results/index.md')}",
        f"- Blind equalisation, the first countermeasure a reader of the card would try, lifts the CNNs to {eq} % "
        f"(goal ≤ {100 * GOAL_ATTACKED:.0f} %; it erases the 0.1 default: {v01} %). "
        f"{link('Countermeasures', 'results/countermeasures.md')}",
        f"- At 16 kHz blind equalisation recovers more: CNNs {eq16} %. {link('16 kHz', 'results/16khz.md')}",
        f"- From a pretrained start it holds less: fine-tuning reaches {_span(f['fine'])}, a linear probe "
        f"{_span(f['probe'])} ({f['tuned_keys']} keys, both splits). "
        f"{link('Fine-tuning threat', 'results/fine-tuning.md')}",
        f"- The price is audio quality: PESQ {f['pesq']:.2f} (0.1 default: {f['pesq_v01']:.2f}); none of the "
        f"{f['sweep_settings']} settings of the sweep brought the raw-waveform CNN to {100 * GOAL:.0f} % (best "
        f"{_pct(f['sweep_best_raw'])}). {link('Sweep and frontier', 'results/sweep.md')}",
        f"- `verify` finds your key: {f['hits']} / {f['hit_keys']} keys, {f['false']} false positives in "
        f"{f['false_checks']} checks of clean or other-key audio. {link('Verify', 'verify.md')}",
    ]
    if len(lines) > 8:  # the README's promise: the status in at most eight lines
        raise ValueError(f"the status must fit in 8 lines, got {len(lines)}")
    return "\n".join(lines) + "\n"


def block_for(path: Path) -> str:
    """The status for the Markdown file ``path``, its links relative to it."""
    return status_lines(Path(os.path.relpath(DOCS, path.resolve().parent)).as_posix())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_docs_option(parser)
    args = parser.parse_args()
    if args.docs:
        rewrite_regions(args.docs, "status", {"summary": block_for})
    print(status_lines())


if __name__ == "__main__":
    main()
