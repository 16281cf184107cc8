"""Real browsers (headless Chromium; Firefox ESR when installed): the preview page loads and plays, and which
output formats the browsers decode (what the Hub's dataset viewer can play). `.ci/setup` installs both."""

from __future__ import annotations

import base64
import io
import re
import subprocess

import numpy as np
import pytest
import soundfile as sf

from hf_poscuda import PosCUDAConfig, PosCUDAKey
from hf_poscuda.audio_io import encode_audio
from hf_poscuda.preview import write_preview
from hf_poscuda.sources import fsdd_mini_path
from tests.browsers import CHROMIUM, FIREFOX, REPORT_JS, run_page

needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (.ci/setup installs it)")
KEY = PosCUDAKey(bytes(range(32)))


def chromium(*args: str, timeout: int = 90) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--virtual-time-budget=10000", "--enable-logging=stderr", "--v=0", *args],
                          capture_output=True, text=True, timeout=timeout, check=False)


def console_errors(stderr: str) -> list[str]:
    """Console messages of level error, and uncaught exceptions, from Chromium's log."""
    return [line for line in stderr.splitlines()
            if "CONSOLE" in line and ("Uncaught" in line or ":ERROR:" in line or "error" in line.lower())]


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    path = tmp_path_factory.mktemp("preview") / "preview.html"
    write_preview(str(fsdd_mini_path()), KEY, str(path), split="test", num_examples=4)
    return path


def test_preview_page_is_self_contained_and_keeps_the_secret(page):
    text = page.read_text()
    assert text.count("<audio") == 8 and text.count("data:image/png;base64,") == 4
    assert not re.search(r'src="(?!data:)', text)  # nothing fetched from elsewhere: it works offline
    assert not KEY.appears_in(text.encode()) and KEY.key_id in text
    assert "Keep this page private" in text and PosCUDAConfig().describe() in text.replace("&#x27;", "'")


@needs_chromium
def test_preview_loads_in_chromium_with_every_player_decoded(page, tmp_path):
    done = chromium("--dump-dom", page.as_uri())
    status = re.search(r'<p id="status"([^>]*)>([^<]*)', done.stdout)
    assert status, done.stderr[-2000:]
    attributes = dict(re.findall(r'data-(\w+)="(\d+)"', status.group(1)))
    assert attributes == {"ready": "8", "failed": "0", "total": "8"}, status.group(2)
    assert console_errors(done.stderr) == []
    shot = tmp_path / "shot.png"
    chromium(f"--screenshot={shot}", "--window-size=1200,1600", page.as_uri())
    from PIL import Image

    image = Image.open(shot)
    assert image.size == (1200, 1600)
    assert shot.stat().st_size > 20_000  # a real rendering (text, players, spectrograms), not a blank page
    colours = np.asarray(image.convert("RGB")).reshape(-1, 3)
    assert len(np.unique(colours[:: 97], axis=0)) > 50


# ----------------------------------------------------------------------------- which formats play
SR = 8000
TONE = (0.3 * np.sin(2 * np.pi * 440 * np.arange(SR) / SR)).astype(np.float32)


def _formats() -> dict[str, tuple[bytes, str]]:
    pcm16 = io.BytesIO()
    sf.write(pcm16, TONE, SR, format="WAV", subtype="PCM_16")
    return {"float32-wav": (encode_audio(TONE[None], SR, "wav"), "audio/wav"),
            "flac24": (encode_audio(TONE[None], SR, "flac"), "audio/flac"),
            "pcm16-wav": (pcm16.getvalue(), "audio/wav")}


def format_page() -> str:
    """A page that plays each format in an <audio> element (what the viewer does) and decodes it fully with Web
    Audio, comparing the samples with the tone; it reports per format the duration, samples and largest error."""
    items = "".join(
        f'<audio id="{name}" preload="auto" src="data:{mime};base64,{base64.b64encode(data).decode()}"></audio>'
        for name, (data, mime) in _formats().items()
    )
    script = REPORT_JS + """
const checks = [...document.querySelectorAll('audio')].map(audio => {
  const r = {name: audio.id};
  const meta = new Promise(ok => { if (audio.readyState >= 1) ok(); else { audio.onloadedmetadata = ok; audio.onerror = ok; } })
    .then(() => { r.duration = audio.duration || 0; r.mediaError = audio.error ? audio.error.code : null; });
  const decoded = fetch(audio.src).then(x => x.arrayBuffer())
    .then(b => new OfflineAudioContext(1, 8000, 8000).decodeAudioData(b))
    .then(buffer => { const x = buffer.getChannelData(0); let e = 0;
                      for (let n = 0; n < x.length; n++) e = Math.max(e, Math.abs(x[n] - 0.3 * Math.sin(2 * Math.PI * 440 * n / 8000)));
                      r.maxError = e; r.samples = x.length; })
    .catch(err => { r.decodeError = String(err); });
  return Promise.all([meta, decoded]).then(() => r);
});
Promise.all(checks).then(rs => report(Object.fromEntries(rs.map(r => [r.name, r]))));
"""
    return f"<!doctype html><html><body>{items}<script>{script}</script></body></html>"


BROWSERS = [pytest.param(CHROMIUM, id="chromium", marks=needs_chromium),
            pytest.param(FIREFOX, id="firefox-esr", marks=pytest.mark.skipif(
                FIREFOX is None, reason="Firefox ESR not installed (.ci/setup installs it)"))]


@pytest.mark.parametrize("browser", BROWSERS)
def test_browsers_play_and_decode_the_output_formats(browser):
    """What the Hub's viewer can play: an <audio> element loads each format, and Web Audio decodes its samples."""
    result, _ = run_page(browser, format_page())
    for name in _formats():
        assert result[name]["duration"] == pytest.approx(1.0, abs=0.01), (name, result[name])
        assert result[name].get("samples") == SR, (name, result[name])
        assert result[name]["maxError"] < 1e-4, (name, result[name])
