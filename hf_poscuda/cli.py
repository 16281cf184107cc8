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
    pretty_exceptions_show_locals=False,  # a traceback must never print local variables: the key is one of them
)

F = TypeVar("F", bound=Callable[..., Any])

KeyOpt = Annotated[Path, typer.Option("--key", "-k", help="Private key file (create one with `hf-poscuda keygen`).")]
PresetOpt = Annotated[
    str, typer.Option("--preset", help="Protection preset: default, designed (needs `hf-poscuda design`), barcode, v0.1, "
                      "patches, paper or cuda (docs: How it works).")
]
AudioColOpt = Annotated[str, typer.Option("--audio-column", help="Name of the Audio column.")]
LabelColOpt = Annotated[str, typer.Option("--label-column", help="Name of the label column.")]
BatchOpt = Annotated[int, typer.Option("--batch-size", min=1, help="Rows per map batch.")]
NumProcOpt = Annotated[int | None, typer.Option("--num-proc", min=1, help="Worker processes for map.")]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="cpu, cuda, cuda:1 ... (default: CUDA if present).")]
FormatOpt = Annotated[
    str, typer.Option("--format", help="Output encoding: wav (32-bit float, exact, fastest) or flac (24-bit, ~0.56x "
                      "the size; samples rounded to 24 bits). Both play in Chromium and Firefox (docs: How it works).")
]

EngineOpt = Annotated[
    str, typer.Option("--engine", help="datasets (Dataset.map on this machine) or ray (Ray Data: Parquet files, "
                      "save_to_disk folders or hf:// paths; protect writes Parquet shards, push uploads shard by "
                      "shard and resumes like --streaming).")
]
NumWorkersOpt = Annotated[int | None, typer.Option("--num-workers", min=1, help="Ray actors (--engine ray).")]
NumGpusOpt = Annotated[float, typer.Option("--num-gpus", min=0, help="GPUs per Ray actor (--engine ray).")]
AddressOpt = Annotated[str | None, typer.Option("--address", help="Ray cluster address (--engine ray).")]


def cli_errors(func: F) -> F:
    """Turn user mistakes (ValueError, FileNotFoundError) into a one-line error and exit code 1, no traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from .hub import HubPushError
        from .key import SecretLeakError

        try:
            return func(*args, **kwargs)
        except (ValueError, FileNotFoundError, ImportError, PermissionError, HubPushError, SecretLeakError) as err:
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
    force: Annotated[bool, typer.Option("--force", "--overwrite", help="Replace an existing key file.")] = False,
) -> None:
    """Create a new private key file and print its public key id."""
    from .key import PosCUDAKey

    key = PosCUDAKey.generate()
    key.save(path, overwrite=force)
    typer.echo(f"Wrote key {key.key_id} to {path} (mode 0600). Keep it private and backed up.")


@app.command(
    epilog="Example: hf-poscuda design ./my_dataset --key my.key --split train, then protect or push with "
    "--preset designed"
)
@cli_errors
def design(
    source: Annotated[str, typer.Argument(help="Your clean labelled data: save_to_disk folder, audiofolder or Hub id.")],
    key: KeyOpt,
    split: Annotated[str | None, typer.Option("--split", help="The split to design on (the one you will protect).")]
    = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the key with its design here (default: replace the "
                                  "key file in place, keeping 0600).")
    ] = None,
    preset: Annotated[str, typer.Option("--preset", help="The layout and budget to design for.")] = "designed",
    knobs: KnobsOpt = None,
    surrogates: Annotated[str, typer.Option("--surrogates", help="Comma-separated surrogate models: raw_cnn, "
                                            "logmel_cnn, xvector.")] = "raw_cnn,logmel_cnn",
    steps: Annotated[int, typer.Option("--steps", min=1, help="Optimisation steps.")] = 600,
    audio_column: AudioColOpt = "audio",
    label_column: LabelColOpt = "label",
) -> None:
    """Design each class's static barcode against surrogate models trained on your clean data, and store the table
    in the key file (format v2, 0600). Protect with --preset designed afterwards."""
    from .evaluation.design import DesignRecipe, design_signatures
    from .key import PosCUDAKey
    from .sources import load_audio_dataset

    secret = PosCUDAKey.load(key)
    data = load_audio_dataset(source, split)
    if not hasattr(data, "features"):
        raise ValueError(f"{source!r} has splits {list(data)}; choose one with --split NAME.")
    config = _config(preset, knobs)
    if config.filter_family != "designed":
        raise ValueError(f"--preset {preset} does not use a designed signature; use --preset designed.")
    table = design_signatures(data, secret, config, DesignRecipe(surrogates=tuple(surrogates.split(",")), steps=steps),
                              audio_column=audio_column, label_column=label_column)
    path = secret.with_design(table).save_replacing(output or key)
    typer.echo(f"Designed {table.num_classes} classes (design id {table.design_id}) for key {secret.key_id}; wrote "
               f"{path} (mode 0600). Protect with --preset designed.")


def _config(preset: str, knobs: list[str] | None) -> Any:
    from .config import PosCUDAConfig

    return PosCUDAConfig.from_preset(preset, **PosCUDAConfig.parse_knobs(knobs or []))


def _protect_source(
    source: str, key: Path, splits: list[str] | None, config_name: str | None, config: Any, **options: Any
) -> tuple[Any, Any, dict[str, Any]]:
    """Load ``source``, protect ``splits`` with :func:`~hf_poscuda.protect.protect_splits` (``options``: its keyword
    arguments) and print each summary."""
    from .key import PosCUDAKey
    from .protect import protect_splits
    from .sources import load_audio_dataset

    secret = PosCUDAKey.load(key)
    dataset = load_audio_dataset(source, config=config_name)
    protected, summaries = protect_splits(dataset, secret, config, splits, **options)
    for name, summary in summaries.items():
        typer.echo(f"[{name}] {summary.format()}")
    return secret, protected, summaries


SplitOpt = Annotated[
    list[str] | None, typer.Option("--split", help="Split to protect (repeatable; default: all splits).")
]
ConfigNameOpt = Annotated[str | None, typer.Option("--config", help="Config of a Hub source dataset.")]
KnobsOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override one protection knob on top of the preset, e.g. --set num_segments=6 "
                 "(repeatable; knobs: see PosCUDAConfig)."),
]
LicenseOpt = Annotated[
    str | None, typer.Option("--license", help="License id for the card (default: the source card's license).")
]
EvalReportOpt = Annotated[
    Path | None, typer.Option("--eval-report", help="report.json from `hf-poscuda evaluate`, put on the card.")
]
QualityClipsOpt = Annotated[int, typer.Option("--quality-clips", min=0, help="Clips per split scored for the card.")]


@app.command(
    epilog="Examples:\n\n  hf-poscuda protect ./my_dataset ./my_dataset_protected --key my.key --split train\n\n"
    "  hf-poscuda protect user/speech ./protected --key my.key --preset paper\n\n"
    "  hf-poscuda protect hf://datasets/user/speech ./protected-parquet --key my.key --engine ray --split train "
    "--num-workers 8"
)
@cli_errors
def protect(
    source: Annotated[str, typer.Argument(help="save_to_disk folder, audiofolder folder or Hub dataset id.")],
    output: Annotated[Path, typer.Argument(help="Folder for the protected splits (save_to_disk, or Parquet shards).")],
    key: KeyOpt,
    split: SplitOpt = None,
    config_name: ConfigNameOpt = None,
    preset: PresetOpt = "default",
    knobs: KnobsOpt = None,
    audio_column: AudioColOpt = "audio",
    label_column: LabelColOpt = "label",
    batch_size: BatchOpt = 100,
    num_proc: NumProcOpt = None,
    device: DeviceOpt = None,
    output_format: FormatOpt = "wav",
    quality_clips: QualityClipsOpt = 0,
    engine: EngineOpt = "datasets",
    num_workers: NumWorkersOpt = None,
    num_gpus: NumGpusOpt = 0,
    address: AddressOpt = None,
) -> None:
    """Protect the chosen splits of a dataset and save them (plus poscuda_summary.json): with save_to_disk, or as
    Parquet shards with --engine ray."""
    from .leaks import check_key_outside

    check_key_outside(key, output, "written")
    config = _config(preset, knobs)
    if engine not in ("datasets", "ray"):
        raise ValueError(f"--engine must be 'datasets' or 'ray', got {engine!r}.")
    if engine == "ray":
        from .key import PosCUDAKey
        from .ray_engine import protect_with_ray

        secret = PosCUDAKey.load(key)
        summary_file = output / "poscuda_summary.json"  # splits protected into this folder earlier keep their entry
        record = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
        for name in split or [None]:
            result = protect_with_ray(
                source, str(output), secret, config, split=name, audio_column=audio_column,
                label_column=label_column, batch_size=batch_size, concurrency=num_workers, num_gpus=num_gpus,
                output_format=output_format, address=address,
            )
            record[result.split] = {"clips": result.rows, "seconds": result.seconds, "key_id": result.key_id,
                                       "label_names": result.label_names, "config": result.config,
                                       "output_format": output_format, "engine": "ray", "files": len(result.files)}
            typer.echo(f"[{result.split}] clips: {result.rows} | files: {len(result.files)} | time: "
                       f"{result.seconds:.1f} s | key id: {result.key_id}")
        summary_file.write_text(json.dumps(record, indent=2))
        typer.echo(f"Saved Parquet shards to {output}")
        return
    _check_engine(engine, False, num_workers, num_gpus, address, None, num_proc, False)
    _, protected, summaries = _protect_source(
        source, key, split, config_name, config, audio_column=audio_column, label_column=label_column,
        batch_size=batch_size, num_proc=num_proc, device=device, output_format=output_format,
        quality_clips=quality_clips,
    )
    protected.save_to_disk(str(output))
    (output / "poscuda_summary.json").write_text(
        json.dumps({name: s.to_dict() for name, s in summaries.items()}, indent=2)
    )
    typer.echo(f"Saved to {output}")


@app.command(
    epilog="Examples:\n\n  hf-poscuda push ./my_dataset me/my-dataset-protected --key my.key\n\n"
    "  hf-poscuda push user/speech me/speech-protected --key my.key --split train --private "
    "--eval-report results/report.json"
)
@cli_errors
def push(
    source: Annotated[str, typer.Argument(help="save_to_disk folder, audiofolder folder or Hub dataset id.")],
    repo_id: Annotated[str, typer.Argument(help="Hub dataset repo to push to, 'namespace/name'.")],
    key: KeyOpt,
    split: SplitOpt = None,
    config_name: ConfigNameOpt = None,
    hub_config_name: Annotated[
        str, typer.Option("--config-name", help="Config name to push the protected data under.")
    ] = "default",
    audio_column: AudioColOpt = "audio",
    label_column: LabelColOpt = "label",
    private: Annotated[bool | None, typer.Option("--private/--public", help="Visibility of a new repo.")] = None,
    token: Annotated[str | None, typer.Option("--token", help="Hub token (default: HF_TOKEN or `hf auth login`).")] = None,
    revision: Annotated[str | None, typer.Option("--revision", help="Branch to push to (default: main).")] = None,
    commit_message: Annotated[str | None, typer.Option("--commit-message", help="Message of the data commits.")] = None,
    license: LicenseOpt = None,
    pretty_name: Annotated[str | None, typer.Option("--pretty-name", help="Title of the card.")] = None,
    attribution: Annotated[str | None, typer.Option("--attribution", help="Attribution text for the card.")] = None,
    eval_report: EvalReportOpt = None,
    preset: PresetOpt = "default",
    knobs: KnobsOpt = None,
    batch_size: BatchOpt = 100,
    num_proc: NumProcOpt = None,
    device: DeviceOpt = None,
    quality_clips: QualityClipsOpt = 50,
    output_format: FormatOpt = "wav",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Do everything but upload: print the plan, write the card locally.")
    ] = False,
    dry_run_dir: Annotated[
        Path, typer.Option("--dry-run-dir", help="Where --dry-run writes README.md and poscuda.json.")
    ] = Path("poscuda-dry-run"),
    streaming: Annotated[
        bool, typer.Option("--streaming", help="Read the source as a stream and upload shard by shard: memory and "
                           "disk stay flat, and a re-run resumes after the last committed shard.")
    ] = False,
    engine: EngineOpt = "datasets",
    num_workers: NumWorkersOpt = None,
    num_gpus: NumGpusOpt = 0,
    address: AddressOpt = None,
    rows_per_shard: Annotated[
        int | None, typer.Option("--rows-per-shard", min=1, help="At most this many rows per uploaded shard "
                                 "(--streaming / --engine ray; default: shards of about 500 MB).")
    ] = None,
) -> None:
    """Protect a dataset and push it to the Hub with an auto-generated dataset card. The key stays here."""
    from .hub import push_protected
    from .leaks import check_key_outside

    if Path(source).is_dir():
        check_key_outside(key, source, "read and uploaded")
    card_inputs = _card_inputs(source, license, pretty_name, attribution, eval_report)
    config = _config(preset, knobs)
    _check_engine(engine, streaming, num_workers, num_gpus, address, rows_per_shard, num_proc, dry_run)
    if streaming or engine == "ray":
        from .key import PosCUDAKey

        if engine == "ray" and (config_name is not None or device is not None):
            raise ValueError("--config and --device are not used by --engine ray: point SOURCE at the config's "
                             "files (hf://datasets/user/name/CONFIG) and give GPUs with --num-gpus.")
        secret = PosCUDAKey.load(key)
        push_options = {"card": card_inputs, "config_name": hub_config_name, "private": private, "token": token,
                        "revision": revision, "commit_message": commit_message, "rows_per_shard": rows_per_shard}
        stream_options = {"audio_column": audio_column, "label_column": label_column, "batch_size": batch_size,
                          "output_format": output_format, "quality_clips": quality_clips, "token": token}
        if engine == "ray":
            from .ray_engine import push_with_ray

            results = push_with_ray(source, repo_id, secret, config, splits=split or [None], address=address,
                                    stream_options={**stream_options, "concurrency": num_workers,
                                                    "num_gpus": num_gpus}, **push_options)
        else:
            from .hub import push_streams
            from .streaming import protected_stream, split_names

            streams = [protected_stream(source, secret, config, split=name, config_name=config_name, device=device,
                                        **stream_options)
                       for name in split or split_names(source, config_name, token=token)]
            results = push_streams(streams, repo_id, secret, **push_options)
        for result in results:
            name = result.pushed[0]
            summary = result.splits[name if hub_config_name == "default" else f"{hub_config_name}/{name}"]
            typer.echo(f"[{name}] {summary.format()}\n[{name}] shards uploaded: "
                       f"{result.shards_uploaded}, already on the Hub: {result.shards_skipped}")
        typer.echo(f"Pushed {', '.join(r.pushed[0] for r in results)} to {results[-1].url} "
                   f"(key id {secret.key_id}).")
        return
    secret, protected, summaries = _protect_source(
        source, key, split, config_name, config, audio_column=audio_column, label_column=label_column,
        batch_size=batch_size, num_proc=num_proc, device=device, output_format=output_format,
        quality_clips=quality_clips,
    )
    result = push_protected(
        protected, summaries, repo_id, secret, **vars(card_inputs), config_name=hub_config_name, private=private,
        token=token, revision=revision, commit_message=commit_message, dry_run=dry_run,
    )
    if result.plan is not None:
        from .hub import PROTECTION_FILE

        check_key_outside(key, dry_run_dir, "written")
        dry_run_dir.mkdir(parents=True, exist_ok=True)
        (dry_run_dir / "README.md").write_text(result.card, encoding="utf-8")
        (dry_run_dir / PROTECTION_FILE).write_text(result.plan.record, encoding="utf-8")
        if result.plan.chart is not None:
            from .figures import FIGURE_FILE

            (dry_run_dir / FIGURE_FILE).write_bytes(result.plan.chart)
        action = "update" if result.plan.repo_exists else "create"
        typer.echo(f"Dry run: nothing was uploaded. A push would {action} {result.repo_id} "
                   f"(revision {result.revision}) with splits {', '.join(summaries)}:\n{result.plan.format()}\n"
                   f"Card and record written to {dry_run_dir}/ (key id {secret.key_id}).")
        return
    typer.echo(f"Pushed {', '.join(result.pushed)} to {result.url} (key id {secret.key_id}).")


@app.command(
    epilog="Example: hf-poscuda card ./my_dataset --key my.key --license cc-by-4.0 --eval-report report.json "
    "-o README.md"
)
@cli_errors
def card(
    source: Annotated[str, typer.Argument(help="save_to_disk folder, audiofolder folder or Hub dataset id.")],
    key: KeyOpt,
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the card.")] = Path("README.md"),
    split: SplitOpt = None,
    config_name: ConfigNameOpt = None,
    repo_id: Annotated[str | None, typer.Option("--repo-id", help="Repo id shown in the loading snippet.")] = None,
    hub_config_name: Annotated[
        str, typer.Option("--config-name", help="Config name the data would be pushed under.")
    ] = "default",
    license: LicenseOpt = None,
    pretty_name: Annotated[str | None, typer.Option("--pretty-name", help="Title of the card.")] = None,
    attribution: Annotated[str | None, typer.Option("--attribution", help="Attribution text for the card.")] = None,
    eval_report: EvalReportOpt = None,
    audio_column: AudioColOpt = "audio",
    label_column: LabelColOpt = "label",
    preset: PresetOpt = "default",
    knobs: KnobsOpt = None,
    device: DeviceOpt = None,
    quality_clips: QualityClipsOpt = 50,
    output_format: FormatOpt = "wav",
) -> None:
    """Protect in memory (nothing is saved or uploaded) and write the dataset card that `push` would publish
    for a new repo. For an existing repo (its YAML, its other splits), `push --dry-run` renders the exact card."""
    from .card import render_card
    from .hub.plan import require_license

    card_inputs = _card_inputs(source, license, pretty_name, attribution, eval_report)
    require_license(card_inputs.license)
    config = _config(preset, knobs)
    secret, _, summaries = _protect_source(
        source, key, split, config_name, config, audio_column=audio_column, label_column=label_column,
        device=device, output_format=output_format, quality_clips=quality_clips,
    )
    from .card import evaluation_for
    from .figures import FIGURE_FILE, evaluation_chart

    report = card_inputs.evaluation_report
    chart = evaluation_chart(evaluation_for(report, config.to_dict())) if report is not None else None
    text = render_card(
        summaries, **vars(card_inputs), repo_id=repo_id, config_name=hub_config_name, key=secret,
        figure=FIGURE_FILE if chart is not None else None,
    )
    output.write_text(text, encoding="utf-8")
    if chart is not None:
        (output.parent / FIGURE_FILE).write_bytes(chart)
    typer.echo(f"Wrote the dataset card to {output}" + (f" and its chart to {output.parent / FIGURE_FILE}"
                                                         if chart is not None else ""))


@app.command(
    epilog="Examples:\n\n  hf-poscuda verify me/speech-protected --key my.key\n\n"
    "  hf-poscuda verify ./found_copy --key my.key --original ./my_dataset --split train"
)
def verify(
    source: Annotated[str, typer.Argument(help="The copy: Hub repo id, save_to_disk folder, audiofolder or Parquet.")],
    key: KeyOpt,
    original: Annotated[
        str | None, typer.Option("--original", help="The original data: compare re-protected rows byte for byte.")
    ] = None,
    split: SplitOpt = None,
    preset: Annotated[
        str | None, typer.Option("--preset", help="Parameters to check for (default: the copy's record, else default; "
                                 "--set applies on top of --preset, default 'default').")
    ] = None,
    knobs: KnobsOpt = None,
    audio_column: AudioColOpt = "audio",
    label_column: LabelColOpt = "label",
    max_clips: Annotated[int, typer.Option("--max-clips", min=1, help="Clips scored by the blind check.")] = 500,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Check whether a copy is protected with your key. Exit code 0: protected, 1: not protected, 2: could not
    check (bad input, unreachable source)."""
    from .key import PosCUDAKey
    from .verify import verify as verify_copy

    try:
        secret = PosCUDAKey.load(key)
        config = _config(preset or "default", knobs) if preset is not None or knobs else None
        results = verify_copy(source, secret, original=original, splits=split, config=config,
                              audio_column=audio_column, label_column=label_column, max_clips=max_clips)
    except Exception as err:  # could not check (bad input, unreachable Hub...): exit 2, never "not protected"
        message = str(err) if isinstance(err, (ValueError, OSError)) else f"{type(err).__name__}: {err}"
        typer.secho(f"Error: {message}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from None
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        for result in results:
            typer.echo(result.format())
    raise typer.Exit(code=0 if all(r.protected for r in results) else 1)


@app.command(
    epilog="Examples:\n\n  hf-poscuda audit ./suspect-model --key my.key --probe ./my_dataset --split test\n\n"
    "  hf-poscuda audit user/keyword-model --key my.key --probe ./my_dataset --split test --label-map '{\"yes\": \"1\"}'"
)
def audit(
    model: Annotated[str, typer.Argument(help="A transformers audio-classification checkpoint: folder or Hub id.")],
    key: KeyOpt,
    probe: Annotated[str, typer.Option("--probe", help="Clean labelled audio in your protected dataset's label space "
                                       "(e.g. your held-back test split): folder or Hub id.")],
    split: Annotated[str | None, typer.Option("--split", help="The probe's split (needed when it has several).")] = None,
    label_map: Annotated[
        str | None, typer.Option("--label-map", help='JSON: model label -> probe class name, e.g. \'{"yes": "1"}\' '
                                 "(default: match names).")
    ] = None,
    preset: PresetOpt = "default",
    knobs: KnobsOpt = None,
    audio_column: AudioColOpt = "audio",
    label_column: LabelColOpt = "label",
    decoys: Annotated[int, typer.Option("--decoys", min=0, help="Public decoy keys queried too (each costs --queries "
                                        "more queries; they lower the smallest possible p-value).")] = 19,
    queries: Annotated[int, typer.Option("--queries", min=1, help="Queries per key.")] = 300,
    alpha: Annotated[float, typer.Option("--alpha", min=0.0, max=1.0, help="Verdict threshold on the p-value.")] = 1e-4,
    seed: Annotated[int, typer.Option("--seed", help="The audit's design randomness (clips and stamps).")] = 0,
    top1: Annotated[bool, typer.Option("--top1", help="Use the model's top-1 answers only, not its scores.")] = False,
    device: DeviceOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Ask a model whether it was trained on data protected with your key, from its answers alone. Exit code 0:
    trained on it (p <= alpha), 1: no evidence, 2: could not audit (bad input)."""
    from .audit import audit_checkpoint, parse_label_map
    from .key import PosCUDAKey

    try:
        secret = PosCUDAKey.load(key)
        result = audit_checkpoint(
            model, probe, secret, split=split, label_map=parse_label_map(label_map), config=_config(preset, knobs),
            audio_column=audio_column, label_column=label_column, device=device, scores=not top1,
            num_decoys=decoys, max_queries=queries, alpha=alpha, seed=seed,
        )
    except Exception as err:  # could not audit: exit 2, never "no evidence"
        message = str(err) if isinstance(err, (ValueError, OSError, ImportError)) else f"{type(err).__name__}: {err}"
        typer.secho(f"Error: {message}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from None
    typer.echo(json.dumps(result.to_dict(), indent=2) if as_json else result.format())
    raise typer.Exit(code=0 if result.trained_on_key else 1)


@app.command(epilog="Example: hf-poscuda preview ./my_dataset --key my.key --split train -o preview.html")
@cli_errors
def preview(
    source: Annotated[str, typer.Argument(help="save_to_disk folder, audiofolder folder or Hub dataset id.")],
    key: KeyOpt,
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the HTML page.")] = Path(
        "poscuda-preview.html"
    ),
    split: Annotated[str | None, typer.Option("--split", help="Split to sample (default: the first).")] = None,
    num_examples: Annotated[int, typer.Option("--num-examples", "-n", min=1, help="Example pairs.")] = 6,
    preset: PresetOpt = "default",
    knobs: KnobsOpt = None,
    audio_column: AudioColOpt = "audio",
    label_column: LabelColOpt = "label",
    output_format: FormatOpt = "wav",
) -> None:
    """Write a local HTML page to listen to original and protected clips side by side. Keep it private."""
    from .key import PosCUDAKey
    from .preview import write_preview

    written = write_preview(
        source, PosCUDAKey.load(key), str(output), split=split, config=_config(preset, knobs),
        num_examples=num_examples, audio_column=audio_column, label_column=label_column, output_format=output_format,
    )
    typer.echo(f"Wrote {written}. Open it in a browser; keep it private (it shows the class filters).")


def _check_engine(
    engine: str, streaming: bool, num_workers: int | None, num_gpus: float, address: str | None,
    rows_per_shard: int | None, num_proc: int | None, dry_run: bool,
) -> None:
    """Refuse option combinations that would be silently ignored."""
    if engine not in ("datasets", "ray"):
        raise ValueError(f"--engine must be 'datasets' or 'ray', got {engine!r}.")
    if engine != "ray" and (num_workers is not None or num_gpus or address is not None):
        raise ValueError("--num-workers, --num-gpus and --address are options of --engine ray.")
    if not (streaming or engine == "ray"):
        if rows_per_shard is not None:
            raise ValueError("--rows-per-shard is an option of --streaming and --engine ray.")
        return
    if streaming and engine == "ray":
        raise ValueError("Choose --streaming (one machine) or --engine ray, not both: both upload shard by shard.")
    if dry_run:
        raise ValueError("--dry-run is not available with --streaming or --engine ray (a stream is only known by "
                         "protecting it); run --dry-run without them to check the card and the repo.")
    if num_proc is not None:
        raise ValueError("--num-proc is an option of the default engine; with --engine ray use --num-workers.")


def _card_inputs(
    source: str, license: str | None, pretty_name: str | None, attribution: str | None, eval_report: Path | None
) -> Any:
    """What the card says besides the figures: the options given, else the source's license and attribution."""
    from .hub import CardInputs
    from .sources import source_info

    info = source_info(source)
    return CardInputs(license or info.license, info.name, info.is_hub, pretty_name, attribution or info.attribution,
                      (), _read_report(eval_report))


def _read_report(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    if not path.is_file():
        raise FileNotFoundError(f"Evaluation report {str(path)!r} not found (hf-poscuda evaluate writes report.json).")
    from .report_schema import EvaluationReport

    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{str(path)!r} is not valid JSON ({err.msg}); pass the report.json of hf-poscuda evaluate.")
    EvaluationReport.from_dict(report)  # its structure is checked before anything is protected or uploaded
    return report


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
    knobs: KnobsOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Protect the embedded FSDD subset (360 clips, CC BY-SA 4.0), save it, and print a summary."""
    from .key import PosCUDAKey
    from .protect import protect_dataset
    from .sources import load_fsdd_mini

    config = _config(preset, knobs)
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
        out[name], summary = protect_dataset(split, secret, config, device=device)
        typer.echo(f"[{name}] {summary.format()}")
    out.save_to_disk(str(output))
    typer.echo(f"Saved the protected dataset to {output} (load it with datasets.load_from_disk).")


@app.command(
    epilog="Examples:\n\n  hf-poscuda evaluate ../shared/data/fsdd/recordings --output results/fsdd\n\n"
    "  hf-poscuda evaluate ./my_dataset --key my.key --preset default --preset cuda --models logmel_cnn,ast-small\n\n"
    "  hf-poscuda evaluate ./my_dataset --models wav2vec2:./local-wav2vec2-checkpoint --hf-epochs 5\n\n"
    "  hf-poscuda evaluate ./my_dataset --models ast@probe:./ast-checkpoint,ast@partial:./ast-checkpoint\n\n"
    "  hf-poscuda evaluate ./my_dataset --key my.key --attack mp3 --attack time_shift --attack noise-20db"
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
        list[str] | None,
        typer.Option("--preset", help="Setting(s) to evaluate (repeatable): default, barcode, v0.1, patches, paper, "
                     "cuda."),
    ] = None,
    knobs: KnobsOpt = None,
    models: Annotated[
        str, typer.Option("--models", help="Comma-separated: logmel_cnn, raw_cnn, xvector, wav2vec2[-tiny|-small], "
                                           "ast[...] (from scratch; alone they mean the small size), or NAME[@MODE]:CKPT to "
                                           "fine-tune a checkpoint (folder or Hub id), MODE full (default), partial "
                                           "or probe (a linear probe on frozen features)")
    ] = "logmel_cnn,raw_cnn",
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="CNN epochs.")] = 30,
    hf_epochs: Annotated[int, typer.Option("--hf-epochs", min=1, help="wav2vec2 / AST epochs.")] = 20,
    seed: Annotated[int, typer.Option("--seed", help="Training seed.")] = 0,
    train_split: Annotated[str, typer.Option("--train-split")] = "train",
    test_split: Annotated[str, typer.Option("--test-split")] = "test",
    audio_column: AudioColOpt = "audio",
    label_column: LabelColOpt = "label",
    quality_clips: Annotated[int, typer.Option("--quality-clips", min=1, help="Clips for PESQ/STOI/SNR.")] = 100,
    attacks: Annotated[
        list[str] | None,
        typer.Option("--attack", help="Countermeasure to train under (repeatable; 'all' for every single one; "
                     "'a+b' combines): time_shift, random_crop, resample, lowpass, bandlimit, mp3, opus, noise-30db, "
                     "noise-20db, noise-10db, preemphasis, sharpen, mixup, specaugment, blind_eq, sliding_eq, cmvn, class_eq, "
                     "random_eq, random_eq_tv."),
    ] = None,
) -> None:
    """Train models on clean vs protected train audio and report clean-test accuracy, quality and plots."""
    from datasets import DatasetDict

    from .evaluation import ATTACKS, ModelSpec, TrainingRecipe, report_markdown, run_evaluation
    from .key import PosCUDAKey
    from .sources import load_audio_dataset, source_name

    secret = PosCUDAKey.load(key) if key is not None else PosCUDAKey.generate()
    dataset = load_audio_dataset(source)
    if not isinstance(dataset, DatasetDict):
        raise ValueError(f"{source!r} has a single split; evaluation needs a train and a test split.")
    report = run_evaluation(
        dataset, secret, {name: _config(name, knobs) for name in (presets or ["default"])},
        [ModelSpec.parse(m.strip()) for m in models.split(",") if m.strip()],
        TrainingRecipe(epochs=epochs, hf_epochs=hf_epochs, seed=seed), dataset_name=source_name(source),
        output=str(output), train_split=train_split, test_split=test_split, audio_column=audio_column,
        label_column=label_column, quality_clips=quality_clips,
        attacks=list(ATTACKS) if attacks and "all" in attacks else list(attacks or []),
    )
    typer.echo(report_markdown(report))
    typer.echo(f"Key id {secret.key_id}. Wrote report.json, report.md and plots to {output}")


if __name__ == "__main__":  # pragma: no cover
    app()
