"""What can an adversary do to a PosCUDA-protected FSDD? Train on the protected split under each countermeasure.

    python examples/fsdd_attacks.py --fsdd ../shared/data/fsdd/recordings --output examples/results/fsdd_attacks

For each protection setting (``--settings``: preset names or the hardening candidates in CANDIDATES) the official
train split is protected, then every model is trained on it once without and once with each countermeasure
(``--attacks``, names from ``hf_poscuda.evaluation.ATTACKS``), with the same seed and recipe as the clean run,
and tested on the clean official test split. Preprocessing countermeasures are part of the adversary's pipeline
and also applied to the test audio. Each (setting, countermeasure) result is saved as it finishes under
OUTPUT/settings/<setting>/ (a re-run skips finished ones), then collected into report.json and report.md.

The key is the fixed public test key ``bytes(range(32))`` unless ``--key`` is given, so anyone can reproduce the
numbers; the package's key-to-key spread (README) applies to them.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from hf_poscuda import PosCUDAConfig, PosCUDAKey
from hf_poscuda.data import load_fsdd
from hf_poscuda.evaluation import ATTACKS, ModelSpec, TrainingRecipe, TrainResult, build_report, evaluate_attack
from hf_poscuda.evaluation.experiment import measure_quality, to_arrays, train_model
from hf_poscuda.evaluation.report import attacks_markdown
from hf_poscuda.protect import protect_dataset

PUBLIC_TEST_KEY = bytes(range(32))
# Hardening candidates inside the PosCUDA family, measured against the countermeasures that hurt the default.
CANDIDATES: dict[str, PosCUDAConfig] = {
    # low-band-heavy filters: a longer uniform filter concentrates the class colouring below 2 kHz at 8 kHz
    "whole-uniform-k33-sum": PosCUDAConfig(kernel_size=33),
    # a coarser filter: fewer taps, broader spectral shapes that survive band-limiting
    "whole-uniform-k9-sum": PosCUDAConfig(kernel_size=9),
}


def setting_config(name: str) -> PosCUDAConfig:
    return CANDIDATES[name] if name in CANDIDATES else PosCUDAConfig.from_preset(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fsdd", required=True, help="folder of FSDD .wav recordings")
    parser.add_argument("--output", default="examples/results/fsdd_attacks")
    parser.add_argument("--models", default="logmel_cnn,raw_cnn")
    parser.add_argument("--settings", default="default", help="comma-separated presets or CANDIDATES names")
    parser.add_argument("--attacks", default=",".join(ATTACKS), help="comma-separated countermeasure names")
    parser.add_argument("--clean-attacks", default="", help="countermeasures to also train under on CLEAN data "
                        "(a baseline: what the countermeasure alone does to accuracy)")
    parser.add_argument("--key", default=None, help="key file (default: the public test key bytes(range(32)))")
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    out = Path(args.output)
    key = PosCUDAKey.load(args.key) if args.key else PosCUDAKey(PUBLIC_TEST_KEY)
    data = load_fsdd(args.fsdd)
    recipe = TrainingRecipe(epochs=args.epochs)
    models = [ModelSpec.parse(m) for m in args.models.split(",")]
    attacks = [ATTACKS[a] for a in args.attacks.split(",") if a]
    clean_train = to_arrays(data["train"], recipe.clip_seconds)
    test = to_arrays(data["test"], recipe.clip_seconds)
    clean_path = out / "settings" / "_clean.json"
    clean_path.parent.mkdir(parents=True, exist_ok=True)
    clean = {k: TrainResult(**v) for k, v in json.loads(clean_path.read_text()).items()} if clean_path.exists() else {}
    for spec in models:
        if spec.label not in clean:
            clean[spec.label] = train_model(spec, clean_train, test, recipe, f"{spec.label} clean")
            clean_path.write_text(json.dumps({k: v.to_dict() for k, v in clean.items()}, indent=1))

    clean_folder = out / "settings" / "_clean_attacks"
    for attack_name in [a for a in args.clean_attacks.split(",") if a]:
        path = clean_folder / f"{attack_name}.json"
        if not path.exists():
            clean_folder.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(
                evaluate_attack(ATTACKS[attack_name], models, clean_train, test, clean_train, recipe, "clean"), indent=1
            ))
    for name in [s for s in args.settings.split(",") if s]:
        config = setting_config(name)
        folder = out / "settings" / name
        folder.mkdir(parents=True, exist_ok=True)
        protected, _ = protect_dataset(data["train"], key, config, snr_clips=1)
        protected_train = to_arrays(protected, recipe.clip_seconds)
        base_path = folder / "_none.json"
        if not base_path.exists():
            base = {"config": config.to_dict(), "key_id": key.key_id,
                    "quality": measure_quality(data["train"], protected, 100), "models": {}}
            for spec in models:
                base["models"][spec.label] = train_model(spec, protected_train, test, recipe, f"{spec.label} {name}").to_dict()
            base_path.write_text(json.dumps(base, indent=1))
        for attack in attacks:
            path = folder / f"{attack.name}.json"
            if not path.exists():
                path.write_text(json.dumps(
                    evaluate_attack(attack, models, protected_train, test, clean_train, recipe, name), indent=1
                ))
        write_report(out, key, recipe, clean, len(clean_train.labels), len(test.labels), clean_train.sampling_rate)


def write_report(out: Path, key: PosCUDAKey, recipe, clean, train_clips: int, test_clips: int, sr: int) -> None:
    """Collect every finished setting under OUTPUT/settings/ (default first) into report.json and report.md."""
    entries = []
    folders = sorted((out / "settings").glob("[!_]*/_none.json"), key=lambda p: (p.parent.name != "default", p.parent.name))
    for base_path in folders:
        name = base_path.parent.name
        base = json.loads(base_path.read_text())
        results = {a: json.loads((base_path.parent / f"{a}.json").read_text()) for a in ATTACKS
                   if (base_path.parent / f"{a}.json").exists()}
        for a, result in results.items():  # the clean-data baseline under the same countermeasure, if measured
            clean_path = out / "settings" / "_clean_attacks" / f"{a}.json"
            if clean_path.exists():
                result["clean_models"] = json.loads(clean_path.read_text())["models"]
        entries.append({
            "name": name, "config": setting_config(name).to_dict(), "key_id": key.key_id, "quality": base["quality"],
            "models": {m: {"clean": clean[m].to_dict(), "protected": base["models"][m]} for m in base["models"]},
            "attacks": results, "train_clips": train_clips, "test_clips": test_clips, "sampling_rate": sr,
        })
    report = build_report(entries, recipe, "Free Spoken Digit Dataset (official split)")
    (out / "report.json").write_text(json.dumps(report, indent=1))
    (out / "report.md").write_text("\n".join(attacks_markdown(report, e["name"]) for e in entries if e["attacks"]))


if __name__ == "__main__":
    main()
