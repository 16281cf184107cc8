"""The ``hf-poscuda`` command line. Each command only parses options and calls library functions."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

app = typer.Typer(
    name="hf-poscuda",
    help="Make Hugging Face audio datasets unlearnable with PosCUDA.",
    no_args_is_help=True,
    add_completion=False,
)

F = TypeVar("F", bound=Callable[..., Any])

KeyOpt = Annotated[Path, typer.Option("--key", "-k", help="Private key file (create one with `hf-poscuda keygen`).")]
PresetOpt = Annotated[str, typer.Option("--preset", help="Protection preset: default, paper or cuda.")]
AudioColOpt = Annotated[str, typer.Option("--audio-column", help="Name of the Audio column.")]
LabelColOpt = Annotated[str, typer.Option("--label-column", help="Name of the label column.")]
BatchOpt = Annotated[int, typer.Option("--batch-size", min=1, help="Rows per map batch.")]
NumProcOpt = Annotated[int | None, typer.Option("--num-proc", min=1, help="Worker processes for map.")]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="cpu, cuda, cuda:1 ... (default: CUDA if present).")]
FormatOpt = Annotated[str, typer.Option("--format", help="Output encoding: wav (float32, lossless) or flac (24-bit).")]


def cli_errors(func: F) -> F:
    """Turn user mistakes (ValueError, FileNotFoundError) into a one-line error and exit code 1, no traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (ValueError, FileNotFoundError, ImportError) as err:
            typer.secho(f"Error: {err}", fg=typer.colors.RED, err=True)
            raise typer.Exit(code=1) from None

    return wrapper  # type: ignore[return-value]


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@app.command(epilog="Example: hf-poscuda keygen my.key")
@cli_errors
def keygen(
    path: Annotated[Path, typer.Argument(help="Where to write the new key (created 0600).")],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing key file.")] = False,
) -> None:
    """Create a new private key file and print its public key id."""
    from .key import PosCUDAKey

    key = PosCUDAKey.generate()
    key.save(path, overwrite=overwrite)
    typer.echo(f"Wrote key {key.key_id} to {path} (mode 0600). Keep it private and backed up.")


@app.command(
    epilog="Examples:\n\n  hf-poscuda protect ./my_dataset ./my_dataset_protected --key my.key --split train\n\n"
    "  hf-poscuda protect user/speech ./protected --key my.key --split train --preset paper"
)
@cli_errors
def protect(
    source: Annotated[str, typer.Argument(help="save_to_disk folder, audiofolder folder or Hub dataset id.")],
    output: Annotated[Path, typer.Argument(help="Folder to save_to_disk the protected split into.")],
    key: KeyOpt,
    split: Annotated[str, typer.Option("--split", help="Split to protect.")] = "train",
    preset: PresetOpt = "default",
    audio_column: AudioColOpt = "audio",
    label_column: LabelColOpt = "label",
    batch_size: BatchOpt = 100,
    num_proc: NumProcOpt = None,
    device: DeviceOpt = None,
    output_format: FormatOpt = "wav",
) -> None:
    """Protect one split of a dataset and save it with save_to_disk."""
    from .config import PosCUDAConfig
    from .data import load_audio_dataset
    from .key import PosCUDAKey
    from .protect import protect_dataset

    secret = PosCUDAKey.load(key)
    dataset = load_audio_dataset(source, split=split)
    protected, summary = protect_dataset(
        dataset, secret, PosCUDAConfig.from_preset(preset), audio_column=audio_column, label_column=label_column,
        batch_size=batch_size, num_proc=num_proc, device=device, output_format=output_format,  # type: ignore[arg-type]
    )
    protected.save_to_disk(str(output))
    (output / "poscuda_summary.json").write_text(json.dumps(summary.to_dict(), indent=2))
    typer.echo(summary.format())
    typer.echo(f"Saved to {output}")


@app.command(epilog="Example: hf-poscuda demo --output ./protected-fsdd-mini")
@cli_errors
def demo(
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to save the protected dataset.")] = Path(
        "protected-fsdd-mini"
    ),
    key: Annotated[
        Path | None, typer.Option("--key", "-k", help="Key file; created (0600) if it does not exist.")
    ] = None,
    preset: PresetOpt = "default",
    device: DeviceOpt = None,
) -> None:
    """Protect the embedded FSDD subset (360 clips, CC BY-SA 4.0), save it, and print a summary."""
    from .config import PosCUDAConfig
    from .data import load_fsdd_mini
    from .key import PosCUDAKey
    from .protect import protect_dataset

    key_path = key if key is not None else output.with_name(output.name + ".key")
    if key_path.exists():
        secret = PosCUDAKey.load(key_path)
    else:
        secret = PosCUDAKey.generate()
        secret.save(key_path)
        typer.echo(f"Created key {secret.key_id} at {key_path}")
    data = load_fsdd_mini()
    from datasets import DatasetDict

    out = DatasetDict()
    for name, split in data.items():
        out[name], summary = protect_dataset(split, secret, PosCUDAConfig.from_preset(preset), device=device)
        typer.echo(f"[{name}] {summary.format()}")
    out.save_to_disk(str(output))
    typer.echo(f"Saved the protected dataset to {output} (load it with datasets.load_from_disk).")


@app.command(
    epilog="Examples:\n\n  hf-poscuda evaluate ../shared/data/fsdd/recordings --output results/fsdd\n\n"
    "  hf-poscuda evaluate ./my_dataset --key my.key --preset default --preset cuda --models logmel_cnn,ast-small\n\n"
    "  hf-poscuda evaluate ./my_dataset --models wav2vec2:./local-wav2vec2-checkpoint --hf-epochs 5"
)
@cli_errors
def evaluate(
    source: Annotated[str, typer.Argument(help="save_to_disk folder, audiofolder, FSDD recordings folder or Hub id.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for report.json, report.md and plots.")] = Path(
        "poscuda-evaluation"
    ),
    key: Annotated[
        Path | None, typer.Option("--key", "-k", help="Key file (default: a fresh key for this run, not saved).")
    ] = None,
    presets: Annotated[
        list[str] | None, typer.Option("--preset", help="Setting(s) to evaluate (repeatable): default, paper, cuda.")
    ] = None,
    models: Annotated[
        str, typer.Option("--models", help="Comma-separated: logmel_cnn, raw_cnn, wav2vec2[-tiny|-small|:ckpt], ast[...]")
    ] = "logmel_cnn,raw_cnn",
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="CNN epochs.")] = 30,
    hf_epochs: Annotated[int, typer.Option("--hf-epochs", min=1, help="wav2vec2 / AST epochs.")] = 20,
    seed: Annotated[int, typer.Option("--seed", help="Training seed.")] = 0,
    train_split: Annotated[str, typer.Option("--train-split")] = "train",
    test_split: Annotated[str, typer.Option("--test-split")] = "test",
    audio_column: AudioColOpt = "audio",
    label_column: LabelColOpt = "label",
    quality_clips: Annotated[int, typer.Option("--quality-clips", min=1, help="Clips for PESQ/STOI/SNR.")] = 100,
) -> None:
    """Train models on clean vs protected train audio and report clean-test accuracy, quality and plots."""
    from datasets import DatasetDict

    from .config import PosCUDAConfig
    from .data import load_audio_dataset
    from .evaluation import ModelSpec, TrainingRecipe, report_markdown, run_evaluation
    from .key import PosCUDAKey

    secret = PosCUDAKey.load(key) if key is not None else PosCUDAKey.generate()
    dataset = load_audio_dataset(source)
    if not isinstance(dataset, DatasetDict):
        raise ValueError(f"{source!r} has a single split; evaluation needs a train and a test split.")
    report = run_evaluation(
        dataset, secret, {name: PosCUDAConfig.from_preset(name) for name in (presets or ["default"])},
        [ModelSpec.parse(m.strip()) for m in models.split(",") if m.strip()],
        TrainingRecipe(epochs=epochs, hf_epochs=hf_epochs, seed=seed), dataset_name=source, output=str(output),
        train_split=train_split, test_split=test_split, audio_column=audio_column, label_column=label_column,
        quality_clips=quality_clips,
    )
    typer.echo(report_markdown(report))
    typer.echo(f"Key id {secret.key_id}. Wrote report.json, report.md and plots to {output}")


if __name__ == "__main__":  # pragma: no cover
    app()
