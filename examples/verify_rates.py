"""How well does `hf-poscuda verify`'s blind check separate "protected with this key" from the rest?

On the FSDD official test split (300 clips, 10 digits, 8 kHz), for public evaluation keys 0..K-1 (default
preset), it runs the blind check of :mod:`hf_poscuda.verify` on
  - the split protected with the key (hit rate),
  - the clean split (false positives),
  - the split protected with another key (false positives),
  - the protected split after each waveform countermeasure of ``hf_poscuda.evaluation.attacks`` (hit rate).
Writes ``examples/results/verify/checks.jsonl`` and ``summary.md``; ``--docs docs`` updates the
``<!-- verify:rates -->`` region of the docs pages (``docs/verify.md``).

    python examples/verify_rates.py --fsdd ../shared/data/fsdd/recordings --docs docs
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from hf_poscuda import PosCUDAConfig, protect_dataset
from hf_poscuda.sources import load_fsdd
from hf_poscuda.evaluation import get_attack, to_arrays
from hf_poscuda.evaluation.attacks import ATTACKS
from hf_poscuda.evaluation.protocol import public_eval_key
from hf_poscuda.verify import blind_check

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docs_markers import add_docs_option, rewrite_regions  # noqa: E402

OUT = Path("examples/results/verify")


def waveform_attacks() -> list[str]:
    """Countermeasures that change the audio itself (not a model's features or its training batches)."""
    return [n for n, a in ATTACKS.items() if all(p.batch is None and p.feature is None for p in a.parts)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fsdd", default="../shared/data/fsdd/recordings")
    parser.add_argument("--keys", type=int, default=10)
    parser.add_argument("--attack-keys", type=int, default=5)
    add_docs_option(parser)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "checks.jsonl"
    if not path.exists():
        test = load_fsdd(args.fsdd)["test"]
        clean = to_arrays(test, 1.0)
        config = PosCUDAConfig()
        records = []

        def check(case: str, key: int, audio: np.ndarray) -> None:
            result = blind_check(list(audio), clean.labels.tolist(), clean.sampling_rate, public_eval_key(key),
                                 config, 10)
            records.append({"case": case, "key": key, "protected": result.protected, "agreement": result.agreement,
                            "decoy_max": result.decoy_max, "z": result.z})
            print(case, key, result.protected, f"{result.agreement:.3f}", f"z={result.z:.1f}", flush=True)

        for k in range(args.keys):
            mine = to_arrays(protect_dataset(test, public_eval_key(k), config, snr_clips=1)[0], 1.0)
            other = to_arrays(protect_dataset(test, public_eval_key(k + 100), config, snr_clips=1)[0], 1.0)
            check("protected with the key", k, mine.audio)
            check("clean", k, clean.audio)
            check("protected with another key", k, other.audio)
            if k < args.attack_keys:
                for name in waveform_attacks():
                    attacked = get_attack(name).apply(mine.audio, mine.sampling_rate, np.random.default_rng(k))
                    check(f"protected, then {name}", k, attacked.astype(np.float32))
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    text = rates_table([json.loads(line) for line in path.read_text().splitlines()])
    (OUT / "summary.md").write_text("# Blind check of `hf-poscuda verify` on FSDD (official test split)\n\n" + text)
    if args.docs:
        rewrite_regions(args.docs, "verify", {"rates": text})
    print(text)


def rates_table(records: list[dict]) -> str:
    """The docs' table (``docs/verify.md``): per kind of audio, how many keys gave the verdict *protected*, mean agreement, z range."""
    table = ["| audio checked | keys | verdict *protected* | detected class = label (mean over keys) | z (min – max) |",
             "|---|---:|---:|---:|---:|"]
    for case in dict.fromkeys(r["case"] for r in records):
        rows = [r for r in records if r["case"] == case]
        z = [r["z"] for r in rows]
        table.append(f"| {case} | {len(rows)} | {sum(r['protected'] for r in rows)} / {len(rows)} | "
                     f"{100 * np.mean([r['agreement'] for r in rows]):.1f} % | {min(z):.1f} – {max(z):.1f} |")
    return "\n".join(table) + "\n"


if __name__ == "__main__":
    main()
