"""A local listening page: original and protected clips side by side, with spectrograms and quality figures.

The page is one self-contained HTML file (audio and images embedded as ``data:`` URIs), for the data owner's own
machine. It must not be published: comparing original and protected clips of each class shows that class's
filters, which is exactly what the key keeps secret. The page says so at the top.

A small script on the page checks that every player decoded its audio and writes the result into the element
``#status`` (``data-ready`` / ``data-failed`` attributes): the owner sees at once if their browser cannot play a
format, and the tests read the same element from headless Chromium.
"""

from __future__ import annotations

import base64
import html
import io
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from datasets import Audio, Dataset

from ._version import __version__
from .audio_io import read_clip
from .config import PosCUDAConfig
from .formatting import number

logger = logging.getLogger(__name__)

_MIME = {b"RIFF": "audio/wav", b"fLaC": "audio/flac", b"OggS": "audio/ogg", b"ID3": "audio/mpeg"}

_SCRIPT = """
const players = [...document.querySelectorAll('audio')];
const status = document.getElementById('status');
const failed = [];
let ready = 0;
function report() {
  status.dataset.ready = ready; status.dataset.failed = failed.length; status.dataset.total = players.length;
  status.textContent = failed.length ? `${failed.length} of ${players.length} players could not decode: ${failed.join(', ')}`
                                     : `${ready} of ${players.length} players ready`;
  status.className = failed.length ? 'bad' : (ready === players.length ? 'good' : '');
}
players.forEach(p => {
  const done = () => { if (p.duration > 0) { ready += 1; } else { failed.push(p.id); } report(); };
  if (p.readyState >= 1) { done(); } else {
    p.addEventListener('loadedmetadata', done, {once: true});
    p.addEventListener('error', () => { failed.push(p.id); report(); }, {once: true});
  }
});
window.addEventListener('error', e => { failed.push('script: ' + e.message); report(); });
report();
"""

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
.warn { background: #fff3cd; border: 1px solid #e0c060; padding: .8em 1em; border-radius: 6px; }
table { border-collapse: collapse; margin: 1em 0; } td, th { padding: .3em .8em; border-bottom: 1px solid #ddd; }
.pair { border: 1px solid #ddd; border-radius: 8px; padding: 1em; margin: 1em 0; }
.pair audio { width: 100%; } .players { display: grid; grid-template-columns: 1fr 1fr; gap: 1em; }
.pair img { width: 100%; } #status.good { color: #176617; } #status.bad { color: #b00020; font-weight: bold; }
"""


def _mime(data: bytes) -> str:
    for magic, mime in _MIME.items():
        if data.startswith(magic):
            return mime
    return "application/octet-stream"


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _spectrograms_png(original: np.ndarray, protected: np.ndarray, sampling_rate: int, title: str) -> bytes:
    """Two log spectrograms (original | protected) on one colour scale, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.signal import spectrogram

    from .quality import window_size

    n = window_size(sampling_rate, 0.032)
    specs = []
    for x in (original, protected):
        f, t, s = spectrogram(x, sampling_rate, window="hann", nperseg=n, noverlap=3 * n // 4)
        specs.append((f, t, 10 * np.log10(s + 1e-12)))
    top = max(s.max() for _, _, s in specs)
    fig, axes = plt.subplots(1, 2, figsize=(10, 2.8), sharey=True)
    for ax, (f, t, s), name in zip(axes, specs, ("original", "protected"), strict=True):
        ax.pcolormesh(t, f, s, vmin=top - 80, vmax=top, shading="auto", cmap="magma")
        ax.set_title(f"{name} — {title}", fontsize=9)
        ax.set_xlabel("s")
    axes[0].set_ylabel("Hz")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


def _pick_rows(labels: Sequence[Any], n: int) -> list[int]:
    """Up to ``n`` rows, the first of each label in turn (so the pairs cover as many classes as possible)."""
    firsts: dict[Any, list[int]] = {}
    for row, label in enumerate(labels):
        firsts.setdefault(label, []).append(row)
    picked: list[int] = []
    depth = 0
    while len(picked) < n and any(depth < len(rows) for rows in firsts.values()):
        picked += [rows[depth] for rows in firsts.values() if depth < len(rows)][: n - len(picked)]
        depth += 1
    return sorted(picked)


def render_preview(
    original: Dataset,
    protected: Dataset,
    *,
    key_id: str,
    config: PosCUDAConfig,
    num_examples: int = 6,
    audio_column: str = "audio",
    label_column: str = "label",
    title: str = "PosCUDA listening preview",
) -> str:
    """The HTML page for ``num_examples`` pairs of ``original`` and ``protected`` rows (the same rows, in order).

    Example:

    ```py
    >>> from hf_poscuda import PosCUDAConfig, PosCUDAKey, protect_dataset
    >>> from hf_poscuda.sources import load_fsdd_mini
    >>> from hf_poscuda.preview import render_preview
    >>> key, test = PosCUDAKey(bytes(range(32))), load_fsdd_mini()["test"]
    >>> page = render_preview(test, protect_dataset(test, key)[0], key_id=key.key_id, config=PosCUDAConfig(),
    ...                       num_examples=2)
    >>> page.count("<audio"), "Keep this page private" in page
    (4, True)

    ```
    """
    from .quality import measure_quality

    if len(original) != len(protected):
        raise ValueError(f"original has {len(original)} rows, protected {len(protected)}: pass the same rows.")
    if num_examples < 1:
        raise ValueError(f"num_examples must be >= 1, got {num_examples!r}.")
    labels = original[label_column] if label_column in original.column_names else [None] * len(original)
    rows = _pick_rows(labels, min(num_examples, len(original)))
    names = getattr(original.features.get(label_column), "names", None)
    raw_o = original.select(rows).cast_column(audio_column, Audio(decode=False))[audio_column]
    raw_p = protected.select(rows).cast_column(audio_column, Audio(decode=False))[audio_column]
    quality = measure_quality(original.select(rows), protected.select(rows), len(rows), audio_column)
    pairs = []
    for i, (row, item_o, item_p) in enumerate(zip(rows, raw_o, raw_p, strict=True)):
        x, sr, _ = read_clip(item_o, row, audio_column)
        y, _, _ = read_clip(item_p, row, audio_column)
        label = labels[row]
        label_text = names[label] if names is not None and isinstance(label, int) else str(label)
        png = _spectrograms_png(x.mean(axis=0), y.mean(axis=0), sr, f"row {row}, label {label_text}")
        players = "".join(
            f'<div><b>{name}</b><br><audio id="{name}-{i}" controls preload="auto" '
            f'src="{_data_uri(data, _mime(data))}"></audio></div>'
            for name, data in (("original", _bytes(item_o, original, row, audio_column)),
                               ("protected", _bytes(item_p, protected, row, audio_column)))
        )
        pairs.append(f'<div class="pair"><h3>Row {row} — label {html.escape(label_text)} ({x.shape[-1] / sr:.2f} s, '
                     f'{sr} Hz)</h3><div class="players">{players}</div>'
                     f'<img alt="spectrograms of row {row}" src="{_data_uri(png, "image/png")}"></div>')
    knobs = "".join(f"<tr><td><code>{html.escape(k)}</code></td><td>{html.escape(str(v))}</td></tr>"
                    for k, v in config.active_knobs().items())
    figures = "".join(
        f"<tr><td>{name}</td><td>{number(quality.get(k), d)}</td></tr>"
        for name, k, d in (("PESQ (1–4.5)", "pesq", 2), ("STOI (0–1)", "stoi", 2), ("SNR (dB)", "snr_db_overall", 1),
                           ("segmental SNR (dB)", "segmental_snr_db", 1), ("log-spectral distance (dB)", "lsd_db", 2))
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{_STYLE}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p class="warn"><b>Keep this page private.</b> It compares original and protected clips of each class, which shows
the class filters that your key keeps secret. Do not upload it or put it on a dataset card.</p>
<p id="status">checking the players…</p>
<h2>Parameters</h2>
<p>{html.escape(config.describe())} Key id <code>{html.escape(key_id)}</code>; hf-poscuda {__version__}.</p>
<table>{knobs}</table>
<h2>Quality of these {len(rows)} protected clips against the originals</h2>
<table>{figures}</table>
<h2>Examples</h2>
{''.join(pairs)}
<script>{_SCRIPT}</script>
</body></html>
"""


def _bytes(item: Any, dataset: Dataset, row: int, column: str) -> bytes:
    """The clip's stored bytes (what a listener gets), or a float WAV of its samples when it has only a path/array."""
    if isinstance(item, dict) and item.get("bytes"):
        return bytes(item["bytes"])
    from .audio_io import float_wav_bytes

    data, sr, _ = read_clip(item, row, column)
    return float_wav_bytes(data, sr)


def write_preview(
    source: str,
    key: Any,
    output: str,
    *,
    split: str | None = None,
    config: PosCUDAConfig | None = None,
    num_examples: int = 6,
    audio_column: str = "audio",
    label_column: str = "label",
    output_format: str = "wav",
) -> str:
    """Protect ``num_examples`` rows of ``source`` (one split; the first when ``split`` is not given) in memory and
    write the preview page to ``output``. Returns the path written."""
    from pathlib import Path

    from datasets import DatasetDict

    from .protect import protect_dataset
    from .sources import load_audio_dataset, source_name

    loaded = load_audio_dataset(source)
    if isinstance(loaded, DatasetDict):
        split = split or next(iter(loaded))
        if split not in loaded:
            raise ValueError(f"Split {split!r} not found in {source!r}; it has {list(loaded)}.")
        loaded = loaded[split]
    config = config or PosCUDAConfig()
    labels = loaded[label_column] if label_column in loaded.column_names else None
    if labels is None:
        raise ValueError(f"Column {label_column!r} not found; the dataset has {loaded.column_names}. Pass "
                         "--label-column.")
    feature = loaded.features[label_column]
    if getattr(feature, "dtype", None) in ("string", "large_string"):
        # the whole split's sorted names, as `protect` maps them (a subset alone could map them differently)
        loaded = loaded.class_encode_column(label_column)
    rows = _pick_rows(labels, min(num_examples, len(loaded)))
    original = loaded.select(rows)
    protected, _ = protect_dataset(original, key, config, audio_column=audio_column, label_column=label_column,
                                   output_format=output_format, snr_clips=1)  # type: ignore[arg-type]
    page = render_preview(original, protected, key_id=key.key_id, config=config, num_examples=len(rows),
                          audio_column=audio_column, label_column=label_column,
                          title=f"PosCUDA listening preview — {source_name(source)}"
                                + (f" [{split}]" if split else ""))
    key.assert_not_in(page.encode(), "the preview page")
    Path(output).write_text(page, encoding="utf-8")
    logger.info("Wrote the preview of %d rows to %s", len(rows), output)
    return str(output)
