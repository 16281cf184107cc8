"""Throughput of PosCUDA through ``Dataset.map`` against datasets' own decode/encode cost, measured in one run.

    python benchmarks/bench_map.py            # 2,000 x 1 s and 200 x 10 s clips at 16 kHz
    python benchmarks/bench_map.py --quick    # smaller, for a smoke run

Rows: (a) datasets' decode-identity map (arrays back through Audio); (b) PosCUDA on a decoding Audio column;
(c) PosCUDA on an Audio(decode=False) column (the CLI's path); (d) soundfile read + float WAV write identity
on a decode=False column (pure I/O, no protection); (e) as (c) with the `paper` preset (one 50 ms patch: almost
no compute), to show what the protection itself costs; (f) as (c) with the `v0.1` preset (the 0.1 default, a
17-tap whole-clip filter); (g) as (c) writing 24-bit FLAC instead of 32-bit float WAV (``--format flac``). Goals: b/a >= 1.0, c/a >= 3, d/c <= 1.2. All rows use the package default unless
stated.
"""

from __future__ import annotations

import argparse
import io
import platform
import tempfile
import time
from collections.abc import Callable

import numpy as np
import soundfile as sf
import torch
from datasets import Audio, Dataset, load_from_disk
from datasets.utils.logging import disable_progress_bar

from hf_poscuda import PosCUDA, PosCUDAConfig, PosCUDAKey
from hf_poscuda.audio_io import float_wav_bytes


def make_source(n: int, seconds: float, sr: int, folder: str) -> Dataset:
    rng = np.random.default_rng(0)
    items = []
    for i in range(n):
        buf = io.BytesIO()
        sf.write(buf, (rng.standard_normal(int(seconds * sr)) * 0.1).astype(np.float32), sr, format="WAV", subtype="PCM_16")
        items.append({"bytes": buf.getvalue(), "path": f"{i}.wav"})
    Dataset.from_dict({"audio": items, "label": [i % 10 for i in range(n)]}).cast_column(
        "audio", Audio()
    ).save_to_disk(folder)
    return load_from_disk(folder)


def decode_identity(batch: dict) -> dict:
    return {"audio": [{"array": a["array"], "sampling_rate": a["sampling_rate"]} for a in batch["audio"]]}


def bytes_identity(batch: dict) -> dict:
    out = []
    for item in batch["audio"]:
        data, sr = sf.read(io.BytesIO(item["bytes"]), dtype="float32", always_2d=True)
        out.append({"bytes": float_wav_bytes(data.T, sr), "path": item["path"]})
    return {"audio": out}


def timed(ds: Dataset, fn: Callable, batch_size: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        ds.map(fn, batched=True, batch_size=batch_size, load_from_cache_file=False)
        best = min(best, time.perf_counter() - start)
    return len(ds) / best


def run_case(n: int, seconds: float, sr: int, batch_size: int, repeats: int, device: str | None) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        decoding = make_source(n, seconds, sr, tmp + "/src")
        raw = decoding.cast_column("audio", Audio(decode=False))
        key = PosCUDAKey.generate()
        fn = PosCUDA(key, PosCUDAConfig(), device=device)
        a = timed(decoding, decode_identity, batch_size, repeats)
        b = timed(decoding, fn, batch_size, repeats)
        c = timed(raw, fn, batch_size, repeats)
        d = timed(raw, bytes_identity, batch_size, repeats)
        e = timed(raw, PosCUDA(key, PosCUDAConfig.from_preset("paper"), device=device), batch_size, repeats)
        f = timed(raw, PosCUDA(key, PosCUDAConfig.from_preset("v0.1"), device=device), batch_size, repeats)
        g = timed(raw, PosCUDA(key, PosCUDAConfig(), device=device, output_format="flac"), batch_size, repeats)
    case = f"{n} x {seconds:g} s @ {sr // 1000} kHz"
    return [
        f"| {case} | (a) decode-identity map | {a:,.0f} | 1.00 |",
        f"| {case} | (b) PosCUDA, decoding column | {b:,.0f} | b/a = {b / a:.2f} |",
        f"| {case} | (c) PosCUDA, decode=False column | {c:,.0f} | c/a = {c / a:.2f} |",
        f"| {case} | (d) bytes read/write identity | {d:,.0f} | d/c = {d / c:.2f} |",
        f"| {case} | (e) PosCUDA `paper` preset, decode=False column | {e:,.0f} | d/e = {d / e:.2f} |",
        f"| {case} | (f) PosCUDA `v0.1` preset, decode=False column | {f:,.0f} | f/a = {f / a:.2f} |",
        f"| {case} | (g) as (c), 24-bit FLAC output | {g:,.0f} | g/c = {g / c:.2f} |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat")
    parser.add_argument("--device", default=None, help="cpu / cuda (default: CUDA if present)")
    parser.add_argument("--batch-size", type=int, default=100)
    args = parser.parse_args()
    disable_progress_bar()
    cases = [(400, 1.0, 16000), (40, 10.0, 16000)] if args.quick else [(2000, 1.0, 16000), (200, 10.0, 16000)]
    repeats = 1 if args.quick else 3
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    print(f"# hf-poscuda map benchmark: {platform.processor() or platform.machine()}, "
          f"torch threads {torch.get_num_threads()}, device {device}, batch {args.batch_size}, best of {repeats}")
    print("| clips | path | clips/s | ratio |")
    print("|---|---|---:|---:|")
    for n, seconds, sr in cases:
        for line in run_case(n, seconds, sr, args.batch_size, repeats, device):
            print(line, flush=True)


if __name__ == "__main__":
    main()
