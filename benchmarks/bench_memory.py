"""Peak memory and throughput of PosCUDA with long clips: one batch of mixed lengths, and single 1 h and 10 h clips.

    python benchmarks/bench_memory.py           # batches of 100 clips at 16 kHz, one of them 5 min long
    python benchmarks/bench_memory.py --quick   # a 60 s clip instead of 5 min
    python benchmarks/bench_memory.py --long    # one 1 h and one 10 h clip through ds.map, against identity maps
    python benchmarks/bench_memory.py --long --threads 1   # one torch thread per case (a shared machine)

Each case runs in a fresh process; its memory growth is its peak resident memory (reset before it starts, Linux
``clear_refs``) over what the process held just before. Ratios are against cases of the same run.

Mixed lengths: a batch of 100 one-second clips, then the same with one clip replaced by a long one, protected with
the default bound (``max_batch_samples``: clips grouped by length, a clip over the bound protected by blocks) and
without it (``max_batch_samples=None``: the whole batch padded to its longest clip, as 0.2 did).

Long clips (``--long``): a synthetic 16 kHz recording (noise under a slow envelope, 16-bit WAV), made here in a
temporary folder and deleted after, is saved as a one-row dataset and read back memory-mapped; ``ds.map`` protects
it, and an identity ``map`` reads the same clip and returns it encoded the same way. ``datasets`` holds the output
row in memory (and converts it to Arrow), so the identity map is the floor: the goal is a protecting map's growth
within the identity's + 300 MB, and time per second of audio within 1.25x that of 1,000 one-second clips. The
1 h clip is written as float WAV (230 MB); a 10 h float WAV (2.3 GB) does not fit in one Arrow ``binary`` value
(2 GiB), so the 10 h clip is written as 24-bit FLAC, both by PosCUDA and by the identity, and compared with one-second
clips written as FLAC.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SR = 16000


def _status_mb(field: str) -> float:
    """A ``/proc/self/status`` memory figure (``VmRSS``, ``VmHWM``) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def start_measuring() -> float:
    """Reset the peak resident memory (Linux: ``clear_refs`` 5) and return the resident memory now, in MB: a case's
    growth is its peak over what the process held before it, not over an earlier transient peak."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_mb("VmRSS")


def growth_since(base_mb: float) -> tuple[float, float]:
    """Peak resident memory since :func:`start_measuring`, and its growth over ``base_mb`` (MB)."""
    peak = _status_mb("VmHWM")
    return peak, peak - base_mb


# ------------------------------------------------------------------------------------------- mixed lengths
def mixed_case(long_seconds: float, bounded: bool) -> dict:
    import numpy as np
    import soundfile as sf

    from hf_poscuda import PosCUDA, PosCUDAKey
    from hf_poscuda.map_callable import MAX_BATCH_SAMPLES

    rng = np.random.default_rng(0)
    lengths = [SR] * 99 + [int(long_seconds * SR) if long_seconds else SR]
    items = []
    for n in lengths:
        buf = io.BytesIO()
        sf.write(buf, (rng.standard_normal(n) * 0.1).astype(np.float32), SR, format="WAV", subtype="PCM_16")
        items.append({"bytes": buf.getvalue(), "path": None})
    batch = {"audio": items, "label": [i % 10 for i in range(len(items))]}
    fn = PosCUDA(PosCUDAKey(bytes(range(32))), max_batch_samples=MAX_BATCH_SAMPLES if bounded else None)
    fn({"audio": items[:2], "label": [0, 1]})  # filter design and warm-up, outside the timing
    base = start_measuring()
    start = time.perf_counter()
    fn(batch)
    seconds = time.perf_counter() - start
    peak, growth = growth_since(base)
    return {"seconds": seconds, "clips_per_s": len(items) / seconds, "peak_mb": peak, "growth_mb": growth,
            "audio_s": sum(lengths) / SR}


def mixed(quick: bool) -> None:
    long = 60.0 if quick else 300.0
    cases = [("100 x 1 s", 0.0, True), (f"99 x 1 s + 1 x {long:g} s, bounded (default)", long, True),
             (f"99 x 1 s + 1 x {long:g} s, unbounded (0.2)", long, False)]
    print("| batch (16 kHz) | audio | peak RSS | memory growth in the batch | clips/s | growth / all-short | "
          "audio-s per s / all-short |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    base = None
    for name, seconds, bounded in cases:
        r = _run("--mixed-case", f"{seconds},{int(bounded)}")
        base = base or r
        speed = (r["audio_s"] / r["seconds"]) / (base["audio_s"] / base["seconds"])
        print(f"| {name} | {r['audio_s']:.0f} s | {r['peak_mb']:,.0f} MB | {r['growth_mb']:,.0f} MB | "
              f"{r['clips_per_s']:,.1f} | {r['growth_mb'] / max(base['growth_mb'], 1):.1f} | {speed:.2f} |", flush=True)


# ------------------------------------------------------------------------------------------- long clips
class Identity:
    """The floor: read each clip whole and return it encoded as PosCUDA would encode its output."""

    def __init__(self, output_format: str) -> None:
        self.output_format = output_format

    def __call__(self, batch: dict) -> dict:
        from hf_poscuda.audio_io import encode_audio, read_clip

        out = []
        for i, item in enumerate(batch["audio"]):
            data, sr, path = read_clip(item, i)
            out.append({"bytes": encode_audio(data, sr, self.output_format), "path": path})
        return {"audio": out}


def write_recording(path: Path, seconds: float, seed: int = 0) -> None:
    """A 16-bit mono WAV of ``seconds`` at 16 kHz, written a minute at a time (never whole in memory)."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(seed)
    total = int(seconds * SR)
    with sf.SoundFile(path, "w", samplerate=SR, channels=1, subtype="PCM_16", format="WAV") as f:
        for start in range(0, total, 60 * SR):
            t = np.arange(start, min(start + 60 * SR, total)) / SR
            envelope = 0.2 + np.abs(np.sin(2 * np.pi * t / 7.0))  # louder and quieter stretches
            f.write((0.05 * envelope * rng.standard_normal(len(t))).astype(np.float32))


def prepare(folder: Path, seconds: float, clips: int) -> Path:
    """A memory-mapped dataset of ``clips`` rows of ``seconds`` each, saved in ``folder``."""
    from datasets import Audio, ClassLabel, Dataset, Features

    out = folder / f"{clips}x{seconds:g}s"
    wav = folder / "clip.wav"
    features = Features({"audio": Audio(decode=False), "label": ClassLabel(num_classes=10)})

    def rows():
        for i in range(clips):
            write_recording(wav, seconds, seed=i)
            yield {"audio": {"bytes": wav.read_bytes(), "path": f"clip_{i}.wav"}, "label": i % 10}

    Dataset.from_generator(rows, features=features, cache_dir=str(folder / "cache")).save_to_disk(str(out))
    shutil.rmtree(folder / "cache", ignore_errors=True)
    wav.unlink()
    return out


def long_case(path: str, mode: str, output_format: str, audio_s: float) -> dict:
    import datasets
    import numpy as np

    from hf_poscuda import PosCUDA, PosCUDAConfig, PosCUDAKey

    datasets.disable_progress_bars()
    ds = datasets.load_from_disk(path)
    key = PosCUDAKey(bytes(range(32)))
    if mode == "identity":
        fn = Identity(output_format)
    else:  # "protect" and "streaming": the default; else a preset's name
        preset = None if mode in ("protect", "streaming") else PosCUDAConfig.from_preset(mode)
        fn = PosCUDA(key, preset, output_format=output_format)
    warm = {"bytes": _wav(np.zeros(SR, np.float32) + 0.01), "path": None}
    fn({"audio": [warm], "label": [0]})  # filter design, imports and warm-up, outside the timing
    if mode == "streaming":
        from hf_poscuda.streaming import protected_stream

        stream = protected_stream(path, key, output_format=output_format, batch_size=1)
    base = start_measuring()
    start = time.perf_counter()
    if mode == "streaming":
        rows = sum(table.num_rows for table in stream.tables(0))
    else:
        cache = str(Path(path).parent / f"out-{mode}-{output_format}.arrow")
        rows = len(ds.map(fn, batched=True, batch_size=1 if len(ds) == 1 else 100, cache_file_name=cache))
        Path(cache).unlink()
    seconds = time.perf_counter() - start
    _, growth = growth_since(base)
    return {"seconds": seconds, "rows": rows, "growth_mb": growth, "audio_s": audio_s}


def _wav(x) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, x, SR, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def long(quick: bool) -> None:
    hour, ten = (60.0, 600.0) if quick else (3600.0, 36000.0)
    import torch

    threads = THREADS or torch.get_num_threads()
    print(f"Run on {time.strftime('%Y-%m-%d')}, {platform.machine()}, Python {platform.python_version()}, "
          f"{_cores()} CPU cores, {threads} torch thread(s), no GPU; "
          f"{'--quick: 1 min and 10 min' if quick else '1 h and 10 h'} clips.\n")
    print("| case (16 kHz, ds.map) | output | audio | memory growth | over identity | audio-s per s | "
          "time per audio-s / 1 s clips |")
    print("|---|---|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        folder = Path(tmp)
        short = prepare(folder, 1.0, 1000)
        base = {fmt: _run("--long-case", f"{short},protect,{fmt},1000") for fmt in ("wav", "flac")}
        for fmt, r in base.items():
            _print_long(f"1000 x 1 s, PosCUDA (baseline, {fmt})", fmt, r, None, r)
        shutil.rmtree(short)
        for seconds, fmt, label in ((hour, "wav", _hours(hour)), (ten, "flac", _hours(ten))):
            data = prepare(folder, seconds, 1)
            identity = _run("--long-case", f"{data},identity,{fmt},{seconds}")
            _print_long(f"1 x {label}, identity map (floor)", fmt, identity, None, base[fmt])
            _print_long(f"1 x {label}, PosCUDA", fmt, _run("--long-case", f"{data},protect,{fmt},{seconds}"), identity,
                        base[fmt])
            if fmt == "wav":
                _print_long(f"1 x {label}, PosCUDA, streaming engine", fmt,
                            _run("--long-case", f"{data},streaming,{fmt},{seconds}"), identity, base[fmt])
                for preset in ("paper", "v0.1"):  # random taps: patches, or a whole-clip FIR, in memory
                    _print_long(f"1 x {label}, PosCUDA `{preset}` preset (whole clip)", fmt,
                                _run("--long-case", f"{data},{preset},{fmt},{seconds}"), identity, None)
            shutil.rmtree(data)


def _print_long(name: str, fmt: str, r: dict, identity: dict | None, base: dict | None) -> None:
    over = f"{r['growth_mb'] - identity['growth_mb']:+,.0f} MB" if identity else "-"
    ratio = f"{(r['seconds'] / r['audio_s']) / (base['seconds'] / base['audio_s']):.2f}" if base else "-"
    print(f"| {name} | {fmt} | {_hours(r['audio_s'])} | {r['growth_mb']:,.0f} MB | {over} | "
          f"{r['audio_s'] / r['seconds']:,.0f} | {ratio} |", flush=True)


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:g} h" if seconds >= 3600 else f"{seconds / 60:g} min" if seconds >= 60 and \
        seconds % 60 == 0 else f"{seconds:,.0f} s"


def _cores() -> int:
    return len(os.sched_getaffinity(0))


THREADS: int | None = None  # --threads: torch/OpenMP threads of each case


def _run(flag: str, value: str) -> dict:
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(THREADS), "MKL_NUM_THREADS": str(THREADS)} if THREADS else {}))
    out = subprocess.run([sys.executable, __file__, flag, value], capture_output=True, text=True, check=False,
                         env=env)
    if out.returncode:
        raise RuntimeError(f"{flag} {value} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--long", action="store_true")
    parser.add_argument("--threads", type=int, help="torch threads per case (default: torch's; 1 on a shared "
                        "machine, where waiting threads of small operations would dominate)")
    parser.add_argument("--mixed-case", help=argparse.SUPPRESS)
    parser.add_argument("--long-case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    global THREADS
    THREADS = args.threads
    if args.mixed_case:
        long_seconds, bounded = args.mixed_case.split(",")
        print(json.dumps(mixed_case(float(long_seconds), bounded == "1")))
    elif args.long_case:
        path, mode, fmt, seconds = args.long_case.split(",")
        print(json.dumps(long_case(path, mode, fmt, float(seconds))))
    elif args.long:
        long(args.quick)
    else:
        mixed(args.quick)


if __name__ == "__main__":
    main()
