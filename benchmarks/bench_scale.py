"""Scale-out: clips/s and peak memory of ``Dataset.map`` (the default engine), ``--engine ray`` and the sharded
streaming push, on 1x and 10x the same data, all measured in one run on this machine.

    python benchmarks/bench_scale.py            # 1x = 200 one-second clips at 16 kHz, 10x = 2,000
    python benchmarks/bench_scale.py --quick    # 1x = 40 clips

Each case runs in a fresh process; a sampler thread adds up the resident memory of that process and all its
children (for Ray: the driver and the local cluster it starts, workers included) every 50 ms and keeps the peak.
The streaming push reads its source from a local Hub-compatible server (``tests/hub_server.py``, in this parent
process, not counted) with ``streaming=True``, from Parquet files of 4 MB (sharded as Hub datasets are, there at
500 MB: ``datasets`` reads one source file at a time, so memory follows the file size, not the number of
files), and uploads shards of 50 rows; the in-memory push
(``push_to_hub``) is its baseline. Ratios are against the 1x ``Dataset.map`` row of the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "hf_bench_token"


def _make(n: int, seed: int = 0):
    import io

    import numpy as np
    import soundfile as sf
    from datasets import Audio, ClassLabel, Dataset, Features

    rng = np.random.default_rng(seed)
    audio = []
    for _ in range(n):
        buf = io.BytesIO()
        sf.write(buf, (rng.standard_normal(16000) * 0.1).astype(np.float32), 16000, format="WAV", subtype="PCM_16")
        audio.append({"bytes": buf.getvalue(), "path": None})
    features = Features({"audio": Audio(), "label": ClassLabel(names=[str(i) for i in range(10)])})
    return Dataset.from_dict({"audio": audio, "label": [i % 10 for i in range(n)]}, features=features)


class _Peak:
    """Peak summed RSS of this process and its children, sampled every 50 ms."""

    def __init__(self) -> None:
        import psutil

        self.process = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            total = 0
            for p in [self.process, *self.process.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    continue
            self.peak = max(self.peak, total)
            time.sleep(0.05)

    def __enter__(self) -> _Peak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def case(kind: str, source: str, work: str) -> dict:
    import datasets

    from hf_poscuda import PosCUDAKey

    datasets.disable_caching()  # every case protects; none reuses another's cached map

    key = PosCUDAKey(bytes(range(32)))
    with _Peak() as peak:
        start = time.perf_counter()
        if kind == "map":
            from datasets import load_from_disk

            from hf_poscuda import protect_dataset

            protected, summary = protect_dataset(load_from_disk(source)["train"], key)
            protected.save_to_disk(work)
            rows = summary.clips
        elif kind == "ray":
            from hf_poscuda.ray_engine import protect_with_ray

            rows = protect_with_ray(source, work, key, split="train", batch_size=50).rows
        elif kind == "push":
            from hf_poscuda import protect_splits, push_protected
            from hf_poscuda.sources import load_audio_dataset

            protected, summaries = protect_splits(load_audio_dataset(source), key, splits=["train"])
            push_protected(protected, summaries, f"bench/{Path(work).name}", key, license="mit")
            rows = summaries["train"].clips
        else:
            from hf_poscuda.hub import CardInputs, push_stream
            from hf_poscuda.streaming import protected_stream

            stream = protected_stream(source, key, split="train")
            result = push_stream(stream, f"bench/{Path(work).name}", key, card=CardInputs(license="mit"),
                                 rows_per_shard=50)
            rows = result.splits["train"].clips
        seconds = time.perf_counter() - start
    return {"rows": rows, "seconds": seconds, "peak_mb": peak.peak / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--case", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(case(*args.case)))
        return
    sys.path.insert(0, str(ROOT))
    from tests.hub_server import HubServer

    server = HubServer(tokens={TOKEN: "bench"}).start()
    env = {**os.environ, "HF_ENDPOINT": server.url, "HF_TOKEN": TOKEN, "HF_HUB_DISABLE_XET": "1",
           "RAY_USAGE_STATS_ENABLED": "0", "TQDM_DISABLE": "1"}
    os.environ.update({k: env[k] for k in ("HF_ENDPOINT", "HF_TOKEN", "HF_HUB_DISABLE_XET")})
    base_n = 40 if args.quick else 200
    tmp = Path(tempfile.mkdtemp(prefix="hf-poscuda-bench-scale-"))
    os.environ["HF_HOME"] = env["HF_HOME"] = str(tmp / "hf_home")
    rows = []
    from datasets import DatasetDict

    for scale in (1, 10):
        data = DatasetDict({"train": _make(base_n * scale)})
        saved = tmp / f"saved-{scale}x"
        data.save_to_disk(str(saved))
        data.push_to_hub(f"bench/source-{scale}x", max_shard_size="4MB")  # sharded, as Hub datasets are
        for kind, label, source in (("map", "Dataset.map (default engine)", str(saved)),
                                    ("ray", "--engine ray (Ray Data, 1 actor)", str(saved)),
                                    ("push", "push (in memory, push_to_hub)", str(saved)),
                                    ("stream", "push --streaming (Hub source)", f"bench/source-{scale}x")):
            work = tmp / f"{kind}-{scale}x"
            out = subprocess.run([sys.executable, __file__, "--case", kind, source, str(work)], capture_output=True,
                                 text=True, env=env)
            if out.returncode != 0:
                raise SystemExit(f"{kind} {scale}x failed:\n{out.stderr[-3000:]}")
            r = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append((label, scale, r))
            print(f"# {label} {scale}x: {r}", file=sys.stderr, flush=True)
    server.stop()
    base = next(r for label, scale, r in rows if scale == 1 and label.startswith("Dataset.map"))
    base_speed = base["rows"] / base["seconds"]
    print("| engine | clips | clips/s | peak RSS (tree) | clips/s / map 1x | peak / same engine 1x |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, scale, r in rows:
        first = next(x for lab, s, x in rows if lab == label and s == 1)
        speed = r["rows"] / r["seconds"]
        print(f"| {label}, {scale}x | {r['rows']:,} | {speed:,.1f} | {r['peak_mb']:,.0f} MB | "
              f"{speed / base_speed:.2f} | {r['peak_mb'] / first['peak_mb']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
