"""The documentation: the README stays short and true, the site under docs/ builds offline with ``mkdocs build
--strict``, its generated parts (status, CLI reference, knob table, figures) are there, nothing the README used
to say was lost (each former section names the page it moved to), and headless Chromium opens the built site from a
local server: every image loads, no console error, a non-blank screenshot."""

from __future__ import annotations

import dataclasses
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hf_poscuda import PosCUDAConfig
from tests.conftest import load_example
from tests.docs_pages import DOCS, README, ROOT, page, pages, region

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (.ci/setup installs it)")

#: Where each section of the former 786-line README went: its heading -> (page, heading there). Two entries are not
#: headings of their own there: the opening status paragraph, and the command list that opened "CLI and pushing".
MOVED = {
    "(the opening honest status paragraph)": ("results/index.md", "Summary"),
    "Set-up and the two commands": ("getting-started.md", "Set-up and the two commands"),
    "Python": ("getting-started.md", "Python"),
    "What changes, exactly": ("how-it-works.md", "What changes, exactly"),
    "Output encoding (deliberate, and what browsers play)": (
        "how-it-works.md", "Output encoding (deliberate, and what browsers play)"),
    "Does it work? (measured on FSDD)": ("results/index.md", "Does it work? (measured on FSDD)"),
    "The adversary who reads the card: blind equalisation": (
        "results/countermeasures.md", "The adversary who reads the card: blind equalisation"),
    "16 kHz": ("results/16khz.md", "16 kHz"),
    "The sweep and the frontier": ("results/sweep.md", "The sweep and the frontier"),
    "Robustness: what an adversary can do (measured on FSDD)": (
        "results/countermeasures.md", "Robustness: what an adversary can do (measured on FSDD)"),
    "From a pretrained start: the fine-tuning threat (measured on FSDD)": (
        "results/fine-tuning.md", "From a pretrained start: the fine-tuning threat (measured on FSDD)"),
    "Design notes: why position, and what was measured on the way": (
        "results/sweep.md", "Design notes: why position, and what was measured on the way"),
    "CLI and pushing to the Hub": ("hub.md", "What `push` does"),
    "CLI and pushing to the Hub (the commands)": ("getting-started.md", "The command line"),
    "Larger than one machine: Ray Data": ("scale.md", "Ray Data"),
    "Pushing at scale: `push --streaming` and `push --engine ray`": (
        "scale.md", "Pushing at scale: `push --streaming` and `push --engine ray`"),
    "Is this copy protected with my key? `verify`, `push --dry-run` and `preview`": (
        "verify.md", "Verify, dry run and preview"),
    "Benchmark": ("benchmarks.md", "Benchmarks"),
    "Data and attribution": ("development.md", "Data and attribution"),
    "Development": ("development.md", "Development"),
}
#: Every generated table of the former README -> the page that holds it now.
TABLES = {
    "efficacy:official": "results/index.md",
    "efficacy:speaker": "results/index.md",
    "efficacy:official-blind-eq": "results/countermeasures.md",
    "efficacy:speaker-blind-eq": "results/countermeasures.md",
    "efficacy:attacks": "results/countermeasures.md",
    "efficacy:16k": "results/16khz.md",
    "finetune:pretraining": "results/fine-tuning.md",
    "finetune:threat": "results/fine-tuning.md",
    "verify:rates": "verify.md",
}
#: Generated tables added since the README moved (issue 22: speakers, GE2E, tiers; issue 19: audit evidence).
TABLES_ADDED = {
    **{f"efficacy:speakers-{split}{suffix}": "results/speakers.md" for split in ("official", "digit")
       for suffix in ("", "-blind-eq")},
    **{f"efficacy:digits-{split}-tiers{suffix}": "results/speakers.md" for split in ("official", "speaker")
       for suffix in ("", "-blind-eq")},
    **{f"efficacy:{task}-class-eq": "results/speakers.md"
       for task in ("speakers-official", "speakers-digit", "digits-official", "digits-speaker")},
    **{f"efficacy:librispeech{suffix}": "results/speakers.md" for suffix in ("", "-countermeasures")},
    "efficacy:designed-attacks": "results/countermeasures.md",
    "audit:evidence": "audit.md",
    "efficacy:goals": "results/index.md",
    "efficacy:tiers-0.3": "results/sweep.md",
}
SETUP_COMMANDS = (
    "bash .ci/setup && .venv/bin/hf-poscuda demo --output protected-fsdd-mini",
    "bash .ci/setup && .venv/bin/python -m pytest -q",
)


def _headings(text: str) -> set[str]:
    body = re.sub(r"```.*?```", "", text, flags=re.S)  # a `# comment` in a code block is not a heading
    return {m.strip() for m in re.findall(r"^#{1,6} (.+)$", body, flags=re.M)}


# ------------------------------------------------------------------------------------------------ the README
def test_readme_is_short_and_keeps_the_two_commands():
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    for command in SETUP_COMMANDS:
        assert command in text
    for heading in ("Status", "Python quick start", "CLI quick start", "Documentation"):
        assert heading in _headings(text), heading
    for command in ("protect", "push", "verify", "preview"):
        assert re.search(rf"^hf-poscuda {command} ", text, flags=re.M), command


def test_status_lines_are_generated_from_the_results():
    """README's and the home page's status: what examples/status.py makes now from examples/results/, in at most
    eight lines, with links relative to each file."""
    status = load_example("status")
    for path in (README, DOCS / "index.md"):
        block = status.block_for(path)
        assert region("status", "summary", block) in path.read_text(), path
        assert len(block.splitlines()) <= 8
    facts = status.facts()
    assert not facts["met"]  # the honest verdict, while the record says so
    assert "**The goal is not met" in README.read_text()


def test_readme_links_every_docs_page_and_each_link_resolves():
    text = README.read_text()
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    for link in links:
        if "://" not in link:
            assert (ROOT / link).exists(), link
    linked = {Path(link).as_posix() for link in links}
    for name in pages():
        if name not in ("index.md",):
            assert f"docs/{name}" in linked, f"README does not link docs/{name}"


def test_nothing_of_the_former_readme_was_lost():
    """Each former section's heading names the page it moved to, and that page has the section; each generated
    table has exactly one home, on its page, and none is left in the README."""
    docs = pages()
    for old, (name, heading) in MOVED.items():
        assert name in docs, (old, name)
        assert heading in _headings(docs[name]), f"{old!r} moved to {name} under {heading!r}, which is not there"
    readme = README.read_text()
    for marker, name in TABLES.items():
        opening, closing = f"<!-- {marker} -->\n", f"<!-- /{marker} -->"
        holders = [n for n, text in docs.items() if opening in text and closing in text]
        assert holders == [name], (marker, holders)
        assert opening not in readme
    sweep = load_example("efficacy_sweep")
    assert {f"efficacy:{name}" for name in sweep.docs_tables(ROOT / "examples/results/efficacy")} <= {
        *TABLES, *TABLES_ADDED}
    for marker, name in TABLES_ADDED.items():
        assert f"<!-- {marker} -->" in page(name), marker


def test_the_generators_write_into_the_docs_pages(tmp_path):
    """--docs rewrites a region wherever it sits, and a table whose region is nowhere is an error, not a no-op."""
    markers = load_example("docs_markers")
    page_file = tmp_path / "p.md"
    page_file.write_text("a\n<!-- efficacy:x -->\nold\n<!-- /efficacy:x -->\nb\n")
    markers.rewrite_regions([tmp_path], "efficacy", {"x": "new\n"})
    assert page_file.read_text() == "a\n<!-- efficacy:x -->\nnew\n<!-- /efficacy:x -->\nb\n"
    with pytest.raises(ValueError, match="no <!-- efficacy:NAME --> region for y"):
        markers.rewrite_regions([page_file], "efficacy", {"y": "t\n"})


def test_every_knob_and_the_default_sentence_are_on_how_it_works():
    text = page("how-it-works.md")
    assert "<!-- config-knobs: hf_poscuda.config:PosCUDAConfig -->" in text  # the generated table (hook)
    assert f"*{PosCUDAConfig().describe()}*" in " ".join(text.split())


# ------------------------------------------------------------------------------------------------ the site
@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site as the documented command builds it (``mkdocs build --strict``), into a temporary folder."""
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's notice about its own future, not ours
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return out


def test_the_site_builds_strict_and_offline(site):
    html = {p: p.read_text() for p in site.rglob("*.html")}
    assert len(html) >= 15
    for path, text in html.items():  # nothing on a page is fetched from elsewhere
        assert "fonts.googleapis" not in text and "fonts.gstatic" not in text, path
        assert not re.search(r'<(?:script|img|link)[^>]+(?:src|href)="(?:https?:)?//', text), path
    for name in pages():  # docs/a/b.md -> site/a/b/index.html, docs/a/index.md -> site/a/index.html
        stem = name.removesuffix(".md")
        folder = stem.removesuffix("index") if stem.endswith("index") else stem + "/"
        assert (site / folder / "index.html").is_file(), name


def test_the_site_shows_the_figures_from_examples_results(site):
    for figure in ("efficacy_sweep/frontier_official_8000.png", "efficacy/frontier_official_8000.png",
                   "efficacy/frontier_speaker_8000.png", "efficacy/frontier_official_16000.png",
                   "efficacy/curves_official_8000.png"):
        built = site / "examples" / "results" / figure
        assert built.read_bytes() == (ROOT / "examples" / "results" / figure).read_bytes()
    sweep = (site / "results" / "sweep" / "index.html").read_text()
    assert 'src="../../examples/results/efficacy_sweep/frontier_official_8000.png"' in sweep


def test_the_cli_reference_is_generated_from_the_app(site):
    import typer

    from hf_poscuda.cli import app

    group = typer.main.get_command(app)
    ctx = group.context_class(group, info_name="hf-poscuda")
    text = (site / "reference" / "cli" / "index.html").read_text()
    names = group.list_commands(ctx)
    assert {"protect", "push", "verify", "preview"} <= set(names)
    for name in names:
        command = group.get_command(ctx, name)
        assert f'<h2 id="hf-poscuda-{name}"><code>hf-poscuda {name}</code>' in text, name
        for param in command.params:
            record = param.get_help_record(command.context_class(command, info_name=name, parent=ctx))
            if record is not None and param.name != "help":
                option = record[0].split(" ")[0].rstrip(",")
                assert option in text, (name, option)


def test_the_knob_table_and_the_api_are_generated(site):
    knobs = (site / "how-it-works" / "index.html").read_text()
    for field in dataclasses.fields(PosCUDAConfig):
        assert f"<td><code>{field.name}</code></td>" in knobs, field.name
    api = (site / "reference" / "api" / "index.html").read_text()
    for name in ("PosCUDA", "PosCUDAConfig", "PosCUDAKey", "protect_splits", "push_protected", "verify",
                 "protect_with_ray"):
        assert re.search(rf'id="hf_poscuda\.[\w.]*\b{name}"', api), name


# ------------------------------------------------------------------------------------------------ in a browser
HARNESS = """<!doctype html><html><head><link rel="icon" href="data:,"></head><body style="margin:0">
<iframe id="page" src="PAGE" style="width:1280px;height:2000px;border:0"></iframe>
<script>
const frame = document.getElementById('page');
frame.addEventListener('load', () => setTimeout(() => {
  const doc = frame.contentDocument;
  const images = [...doc.images].map(img => ({src: img.getAttribute('src'), complete: img.complete,
                                              width: img.naturalWidth, height: img.naturalHeight}));
  fetch('/__result__', {method: 'POST', body: JSON.stringify({title: doc.title, images: images,
                                                             text: doc.body.innerText.length,
                                                             errors: frame.contentWindow.__errors || null})});
}, 1500));
</script></body></html>"""
#: Put first in every served page's <head>: records console errors, uncaught exceptions, rejected promises and
#: resources that failed to load, in ``window.__errors`` (the harness reads it; Chromium's log does not say a
#: console message's level).
WATCH = """<script>window.__errors = [];
(function () {
  const error = console.error.bind(console);
  console.error = (...args) => {
    window.__errors.push('console.error: ' + args.map(String).join(' '));
    error(...args);
  };
  window.addEventListener('error', event => window.__errors.push(event.message ? 'uncaught: ' + event.message
    : 'failed to load: ' + (event.target && (event.target.src || event.target.href))), true);
  window.addEventListener('unhandledrejection', event => window.__errors.push('rejected: ' + event.reason));
})();</script>"""


def _serve(root: Path) -> tuple[http.server.ThreadingHTTPServer, dict[str, Any], threading.Event, list]:
    """A local static server for ``root``, which also serves the harness and takes its POSTed result."""
    result: dict[str, Any] = {}
    arrived = threading.Event()
    requests: list[tuple[str, int]] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args: Any) -> None:
            pass

        def send_response(self, code: int, message: str | None = None) -> None:
            requests.append((self.path, code))
            super().send_response(code, message)

        def send_html(self, html: str) -> None:
            body = html.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802
            if self.path.startswith("/__harness__"):
                return self.send_html(HARNESS.replace("PAGE", self.path.split("page=", 1)[1]))
            target = root / self.path.split("?", 1)[0].lstrip("/")
            target = target / "index.html" if target.is_dir() else target
            if target.suffix == ".html" and target.is_file():  # the page as built, with WATCH first in <head>
                return self.send_html(target.read_text().replace("<head>", "<head>" + WATCH, 1))
            return super().do_GET()

        def do_POST(self) -> None:  # noqa: N802
            result["value"] = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            self.send_response(204)
            self.end_headers()
            arrived.set()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, result, arrived, requests


def _chromium(url: str, profile: str, *extra: str) -> subprocess.Popen:
    """Headless Chromium on ``url`` with a fresh profile and no background traffic; its log on stdout."""
    return subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
         "--hide-scrollbars", "--enable-logging=stderr", "--v=0", *extra, url],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _console_errors(log: str) -> list[str]:
    """Console messages of level error, uncaught exceptions and failed loads, from Chromium's log."""
    return [line for line in log.splitlines()
            if "CONSOLE" in line and ("Uncaught" in line or ":ERROR:" in line or "error" in line.lower()
                                      or "Failed to load" in line)]


def _open(root: Path, path: str) -> tuple[dict[str, Any], list, str]:
    """Open ``path`` of the site in ``root`` through the harness: (what it reported, the requests, Chromium's log)."""
    server, result, arrived, requests = _serve(root)
    try:
        with tempfile.TemporaryDirectory() as profile:
            process = _chromium(f"http://127.0.0.1:{server.server_address[1]}/__harness__?page={path}", profile)
            try:
                arrived.wait(60)
            finally:
                process.kill()
                log = process.communicate()[0]
    finally:
        server.shutdown()
        server.server_close()
    return result.get("value", {}), requests, log


@needs_chromium
@pytest.mark.parametrize("path, min_images", [("/", 0), ("/results/", 3), ("/results/sweep/", 1)])
def test_the_built_site_opens_in_chromium(site, tmp_path, path, min_images):
    """The page loads from a local server with every image decoded, no console error and no failed request, and
    its screenshot is a real rendering."""
    result, requests, log = _open(site, path)
    assert result, f"the page reported nothing within 60 s. Log tail:\n{log[-2000:]}"
    assert "hf-poscuda" in result["title"] and result["text"] > 200
    assert len(result["images"]) >= min_images, result
    for image in result["images"]:
        assert image["complete"] and image["width"] > 0 and image["height"] > 0, image
    assert result["errors"] == [], result["errors"]
    assert _console_errors(log) == []
    assert [r for r in requests if r[1] >= 400] == []

    shot = tmp_path / "shot.png"
    server = _serve(site)[0]
    try:
        with tempfile.TemporaryDirectory() as profile:
            process = _chromium(f"http://127.0.0.1:{server.server_address[1]}{path}", profile,
                                f"--screenshot={shot}", "--window-size=1280,1600", "--virtual-time-budget=5000")
            log = process.communicate(timeout=90)[0]
    finally:
        server.shutdown()
        server.server_close()
    assert shot.is_file(), log[-2000:]
    from PIL import Image

    image = Image.open(shot)
    assert image.size == (1280, 1600)
    colours = np.asarray(image.convert("RGB")).reshape(-1, 3)
    assert len(np.unique(colours[::97], axis=0)) > 50  # text, navigation, tables, figures: not a blank page
    assert colours.std() > 20

@needs_chromium
def test_the_browser_check_catches_a_broken_page(tmp_path):
    """The checks above are not vacuous: a page with a missing image and script errors fails every one of them."""
    (tmp_path / "index.html").write_text(
        '<!doctype html><html><head><title>broken</title></head><body><img src="missing.png">'
        '<script>console.error("boom"); undefinedFunction();</script></body></html>')
    result, requests, log = _open(tmp_path, "/")
    assert [i["width"] for i in result["images"]] == [0]
    assert any("boom" in e for e in result["errors"]) and any("undefinedFunction" in e for e in result["errors"])
    assert any("missing.png" in e for e in result["errors"])
    assert ("/missing.png", 404) in requests
    assert any("undefinedFunction" in line for line in _console_errors(log))
