"""Run a page in a real headless browser and get back what its script found.

The page is served from a local HTTP server; its script POSTs a JSON result to ``/result``, and the browser is
closed as soon as the result arrives. This works the same for Chromium and Firefox (Firefox has no ``--dump-dom``,
and its ``--screenshot`` is taken at the load event, before asynchronous checks finish).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
FIREFOX = shutil.which("firefox-esr") or shutil.which("firefox")

#: Append to a page's script: ``report(obj)`` sends the result to the test.
REPORT_JS = "function report(result) { fetch('/result', {method: 'POST', body: JSON.stringify(result)}); }"


def run_page(browser: str, html: str, timeout: float = 60.0) -> tuple[Any, str]:
    """Open ``html`` in ``browser`` (a path to chromium or firefox) and return (the posted JSON, browser log)."""
    result: dict[str, Any] = {}
    arrived = threading.Event()
    body = html.encode()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200 if self.path == "/" else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body) if self.path == "/" else 0))
            self.end_headers()
            if self.path == "/":
                self.wfile.write(body)

        def do_POST(self) -> None:  # noqa: N802
            data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            result["value"] = json.loads(data)
            self.send_response(204)
            self.end_headers()
            arrived.set()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    with tempfile.TemporaryDirectory() as profile:
        if "firefox" in browser:
            command = [browser, "--headless", "--no-remote", "--profile", profile, url]
        else:
            command = [browser, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
                       "--enable-logging=stderr", "--v=0", "--autoplay-policy=no-user-gesture-required", url]
        with tempfile.TemporaryFile(mode="w+") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
            try:
                arrived.wait(timeout)
            finally:
                process.kill()
                process.wait()
                server.shutdown()
                server.server_close()
            log.seek(0)
            text = log.read()
    if "value" not in result:
        raise TimeoutError(f"{browser} posted no result within {timeout} s. Log tail:\n{text[-2000:]}")
    return result["value"], text
