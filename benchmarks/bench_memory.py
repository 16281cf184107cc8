"""Peak memory and throughput of one PosCUDA batch with mixed clip lengths, against the all-short case.

    python benchmarks/bench_memory.py           # batches of 100 clips at 16 kHz
    python benchmarks/bench_memory.py --quick   # a 60 s clip instead of 5 min
    python benchmarks/bench_memory.py --hour    # also one 1-hour clip (bounded only: unbounded needs ~23 GB)

Each case runs in a fresh process (peak resident memory is per process): a batch of 100 one-second clips, then
the same with one clip replaced by a long one, protected with the default bound (``max_batch_samples``, clips
grouped by length) and without it (``max_batch_samples=None``: the whole batch padded to its longest clip, as
0.2 did). Ratios are against the all-short case of the same run.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import subprocess
import sys
import time


def case(long_seconds: float, bounded: bool) -> dict:
    import numpy as np
    import soundfile as sf

    from hf_poscuda import PosCUDA, PosCUDAKey
    from hf_poscuda.map_callable import MAX_BATCH_SAMPLES

    sr = 16000
    rng = np.random.default_rng(0)
    lengths = [sr] * 99 + [int(long_seconds * sr) if long_seconds else sr]
    items = []
    for n in lengths:
        buf = io.BytesIO()
        sf.write(buf, (rng.standard_normal(n) * 0.1).astype(np.float32), sr, format="WAV", subtype="PCM_16")
        items.append({"bytes": buf.getvalue(), "path": None})
    batch = {"audio": items, "label": [i % 10 for i in range(len(items))]}
    fn = PosCUDA(PosCUDAKey(bytes(range(32))), max_batch_samples=MAX_BATCH_SAMPLES if bounded else None)
    fn({"audio": items[:2], "label": [0, 1]})  # filter design and warm-up, outside the timing
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    fn(batch)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": seconds, "clips_per_s": len(items) / seconds, "peak_mb": peak / 1024,
            "growth_mb": (peak - base) / 1024, "audio_s": sum(lengths) / sr}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--hour", action="store_true")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        long_seconds, bounded = args.case.split(",")
        print(json.dumps(case(float(long_seconds), bounded == "1")))
        return
    long = 60.0 if args.quick else 300.0
    cases = [("100 x 1 s", 0.0, True), (f"99 x 1 s + 1 x {long:g} s, bounded (default)", long, True),
             (f"99 x 1 s + 1 x {long:g} s, unbounded (0.2)", long, False)]
    if args.hour:
        cases.append(("99 x 1 s + 1 x 3600 s, bounded (default)", 3600.0, True))
    print("| batch (16 kHz) | audio | peak RSS | memory growth in the batch | clips/s | growth / all-short | "
          "audio-s per s / all-short |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    base = None
    for name, seconds, bounded in cases:
        out = subprocess.run([sys.executable, __file__, "--case", f"{seconds},{int(bounded)}"], capture_output=True,
                             text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        base = base or r
        speed = (r["audio_s"] / r["seconds"]) / (base["audio_s"] / base["seconds"])
        print(f"| {name} | {r['audio_s']:.0f} s | {r['peak_mb']:,.0f} MB | {r['growth_mb']:,.0f} MB | "
              f"{r['clips_per_s']:,.1f} | {r['growth_mb'] / max(base['growth_mb'], 1):.1f} | {speed:.2f} |", flush=True)


if __name__ == "__main__":
    main()
