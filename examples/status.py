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
from functools import lru_cache
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


@lru_cache(maxsize=None)
def _summary(folder: Path) -> tuple[dict[str, Any], ...]:
    """A record folder's summary rows, read and summarised once per run of this script (every task)."""
    from hf_poscuda.evaluation.protocol import summarise

    return tuple(summarise(_read(folder / "runs.jsonl"), _read(folder / "quality.jsonl")))


def _rows(folder: Path, task: str = "digits") -> list[dict[str, Any]]:
    return [r for r in _summary(folder) if r.get("task", "digits") == task]


def _pct(value: float) -> str:
    return f"{100 * value:.1f} %"


def _span(values: list[float], digits: int = 1) -> str:
    low, high = f"{100 * min(values):.{digits}f}", f"{100 * max(values):.{digits}f}"
    return f"{low} %" if low == high else f"{low}–{high} %"


def _keys(counts: set[int]) -> str:
    return str(min(counts)) if min(counts) == max(counts) else f"{min(counts)}–{max(counts)}"


def _getter(rows: list[dict[str, Any]]) -> Any:
    from hf_poscuda.evaluation.protocol import NO_ATTACK

    def get(setting: str, model: str, attack: str = NO_ATTACK, split: str = "official", rate: int = 8000) -> dict:
        found = [r for r in rows if (r["setting"], r["model"], r["attack"], r["split"], r["sampling_rate"])
                 == (setting, model, attack, split, rate)]
        if len(found) != 1:
            raise ValueError(f"expected one summary row for {setting}/{model}/{attack}/{split}/{rate}, "
                             f"got {len(found)}")
        return found[0]

    return get


def facts() -> dict[str, Any]:
    """Every number the status lines quote, from the committed records."""
    from hf_poscuda.evaluation.protocol import CLEAN, NO_ATTACK, summarise

    rows = _rows(RESULTS / "efficacy")
    get = _getter(rows)
    speakers = _getter(_rows(RESULTS / "efficacy", "speakers"))
    sweep_speakers = _getter(_rows(RESULTS / "efficacy_sweep", "speakers"))
    plain = {m: get("default", m) for m in MODELS}
    both_splits = [get("default", m, split=s) for m in MODELS for s in ("official", "speaker")]
    attacked = [r for r in rows if r["setting"] == "default" and r["attack"] != NO_ATTACK]
    cnns = ("logmel_cnn", "raw_cnn")
    pesq = min(r["pesq"] for r in both_splits)
    met = (all(r["mean"] <= GOAL and r["worst"] <= GOAL_WORST for r in both_splits) and pesq >= GOAL_PESQ
           and all(r["mean"] <= GOAL_ATTACKED for r in attacked))

    tuned = [r for r in summarise(_read(RESULTS / "finetune" / "runs.jsonl"))
             if r["setting"] != CLEAN and ":" in r["model"]]
    probe = [r for r in tuned if "@probe:" in r["model"]]
    fine = [r for r in tuned if "@probe:" not in r["model"]]

    checks = _read(RESULTS / "verify" / "checks.jsonl")
    hits = [c for c in checks if c["case"] == "protected with the key"]
    false = [c for c in checks if c["case"] in ("clean", "protected with another key")]
    audit_runs = _read(RESULTS / "audit" / "runs.jsonl")
    audits = [r for r in audit_runs if r.get("task", "digits") == "digits"]
    runs = [r for r in audits if r["key"] >= 0 and r["fraction"] in (1.0, 0.25) and r["attack"] == "none"
            and not r.get("long_audit")]
    own = [r["audits"][0] for r in runs]
    missed: dict[tuple[str, float], list[bool]] = {}
    for r in runs:
        missed.setdefault((r["model"], r["fraction"]), []).append(r["audits"][0]["p_value"] <= 1e-6)
    from audit_rates import other_key_audits

    others = [a for r in audits for a in other_key_audits(r)]
    voices = [r["audits"][0] for r in audit_runs
              if r.get("task") in ("speakers", "librispeech") and r["key"] >= 0 and r["attack"] == "none"]
    designed = ("logmel_cnn", "raw_cnn", "xvector", "ge2e-probe")
    libri = _getter(_rows(RESULTS / "efficacy", "librispeech"))
    quiet = [r["mean"] for folder in ("efficacy", "efficacy_sweep") for r in _rows(RESULTS / folder)
             if r["setting"] != CLEAN and r["model"] == "raw_cnn" and r["attack"] == "blind_eq"
             and r["split"] == "official" and r["sampling_rate"] == 8000 and r["pesq"] >= GOAL_PESQ]
    return {
        "best_eq_at_goal_pesq": min(quiet),
        "met": met,
        "plain": plain,
        "plain_keys": _keys({r["keys"] for r in plain.values()}),
        "clean": [get(CLEAN, m)["mean"] for m in MODELS],
        "designed": {m: get("designed", m) for m in designed},
        "blind_eq": [get("default", m, "blind_eq") for m in cnns],
        "designed_blind_eq": get("designed", "raw_cnn", "blind_eq"),
        "class_eq": [get(s, "raw_cnn", "class_eq") for s in ("default", "designed")],
        "blind_eq_16k": [get("default", m, "blind_eq", rate=16000) for m in cnns],
        "speakers": {s: {m: speakers(s, m) for m in designed} for s in ("default", "designed")},
        "speakers_wide": {m: sweep_speakers("designed-strong", m) for m in ("raw_cnn", "ge2e-probe")},
        "librispeech": {s: {m: libri(s, m, split="utterance") for m in designed} for s in ("default", "designed")},
        "pesq": get("default", "logmel_cnn")["pesq"],
        "pesq_designed": get("designed", "raw_cnn")["pesq"],
        "pesq_v01": get("v0.1", "logmel_cnn")["pesq"],
        "fine": [r["mean"] for r in fine],
        "probe": [r["mean"] for r in probe],
        "tuned_keys": _keys({r["keys"] for r in tuned}),
        "hits": sum(c["protected"] for c in hits),
        "hit_keys": len(hits),
        "false": sum(c["protected"] for c in false),
        "false_checks": len(false),
        "audit_flagged": sum(a["p_value"] <= 1e-6 for a in own),
        "audit_missed": [(MODELS.get(m, m), fraction, sum(hits), len(hits)) for (m, fraction), hits in missed.items()
                         if not all(hits)],
        "audit_models": len(own),
        "audit_queries": _keys({a["queries"] for a in own}),
        "audit_false": sum(a["p_value"] <= 1e-6 for a in others),
        "audit_pairs": len(others),
        "audit_voices": sum(a["p_value"] <= a["alpha"] for a in voices),
        "audit_voice_models": len(voices),
    }


def status_lines(link_base: str = "docs") -> str:
    """The status, at most eight lines; ``link_base`` is the docs folder relative to the file they go into."""
    f = facts()
    base = "" if link_base in ("", ".") else link_base.rstrip("/") + "/"

    def link(text: str, page: str) -> str:
        return f"[{text}]({base}{page})"

    def cells(rows: dict[str, dict[str, Any]], names: dict[str, str]) -> str:
        return ", ".join(f"{names[m]} {_pct(r['mean'])}" for m, r in rows.items())

    short = {"logmel_cnn": "log-mel CNN", "raw_cnn": "raw CNN", "xvector": "x-vector", "ge2e-probe": "GE2E probe"}
    plain = ", ".join(f"{MODELS[m]} {_pct(r['mean'])}" for m, r in f["plain"].items())
    eq, eq16 = (" / ".join(f"{100 * r['mean']:.1f}" for r in f[k]) for k in ("blind_eq", "blind_eq_16k"))
    designed_keys = _keys({r["keys"] for r in f["designed"].values()})
    speaker_keys = _keys({r["keys"] for s in f["speakers"].values() for r in s.values()})
    verdict = ("**The goal is met.**" if f["met"] else
               "**The goal is not met: the protection is partial.** Read *protected* as *much harder to learn from*, "
               "not *unlearnable*.")
    missed = "".join(
        f" (not flagged: the {model} trained on a {100 * fraction:g} % share, {hit} / {total} keys)"
        for model, fraction, hit, total in f["audit_missed"])
    lines = [
        f"{verdict} Measured on the Free Spoken Digit Dataset (official split, public keys; chance 10 % for digits):",
        "",  # Markdown needs a blank line before a list
        f"- Digits, trained from scratch on a copy protected with the default: {plain} on clean test audio (mean of "
        f"{f['plain_keys']} keys; clean training {_span(f['clean'], 0)}; goal ≤ {100 * GOAL:.0f} %). The opt-in "
        f"`designed` preset: {cells(f['designed'], short)} ({designed_keys} keys). {link('Efficacy', 'results/index.md')}",
        f"- Speaker identity (6 speakers, chance 16.7 %; goal ≤ 30 %, GE2E ≤ 35 %): default "
        f"{cells(f['speakers']['default'], short)}; designed {cells(f['speakers']['designed'], short)} "
        f"({speaker_keys} keys; GE2E is a real pretrained speaker encoder); designed with a wider budget "
        f"(`--set cut_db=40 --set boost_db=15`): {cells(f['speakers_wide'], short)} "
        f"({_keys({r['keys'] for r in f['speakers_wide'].values()})} keys). Real read speech (10 LibriSpeech "
        f"speakers, chance 10 %): default {cells(f['librispeech']['default'], short)}; designed "
        f"{cells(f['librispeech']['designed'], short)} "
        f"({_keys({r['keys'] for s in f['librispeech'].values() for r in s.values()})} keys). "
        f"{link('Speakers', 'results/speakers.md')}",
        f"- Blind equalisation lifts the default's CNNs to {eq} % (16 kHz: {eq16} %) and the designed preset's raw "
        f"CNN to {_pct(f['designed_blind_eq']['mean'])}; an adversary who reads the card and equalises each class "
        f"(`class_eq`) lifts the raw CNN to {' / '.join(_pct(r['mean']) for r in f['class_eq'])} (default / "
        f"designed; goal ≤ {100 * GOAL_ATTACKED:.0f} %). "
        f"{link('Countermeasures', 'results/countermeasures.md')}",
        f"- From a pretrained start it holds less: fine-tuning reaches {_span(f['fine'])}, a linear probe "
        f"{_span(f['probe'])} ({f['tuned_keys']} keys, both splits). {link('Fine-tuning threat', 'results/fine-tuning.md')}",
        f"- The price is audio quality: PESQ {f['pesq']:.2f} (default), {f['pesq_designed']:.2f} (designed), "
        f"{f['pesq_v01']:.2f} (0.1); of the settings at PESQ ≥ {GOAL_PESQ:.1f}, blind equalisation leaves the raw "
        f"CNN at {_pct(f['best_eq_at_goal_pesq'])} at best, which is why the default stays below {GOAL_PESQ:.1f}. "
        f"{link('The choice of presets', 'results/index.md#the-choice-for-03')}, "
        f"{link('sweep and frontier', 'results/sweep.md')}",
        f"- `audit` flagged {f['audit_flagged']} / {f['audit_models']} models trained on a protected copy (all or a "
        f"quarter of their data; {f['audit_queries']} queries) at p ≤ 1e-6{missed}, and {f['audit_false']} of "
        f"{f['audit_pairs']} clean or other-key pairs; with the speaker as the label (FSDD, LibriSpeech), "
        f"{f['audit_voices']} / {f['audit_voice_models']} (models that still identify the speakers); "
        f"`verify` found {f['hits']} / {f['hit_keys']} keys, {f['false']} false positives in {f['false_checks']} "
        f"checks. {link('Audit', 'audit.md')}, {link('Verify', 'verify.md')}",
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
