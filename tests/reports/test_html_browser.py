"""The HTML report opened in headless Chromium: it renders, tables and plots are there, and the page
fetches nothing (every request Chromium makes goes through a logging proxy of ours)."""

from __future__ import annotations

import http.server
import shutil
import subprocess
import threading
import urllib.parse
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeslm.cli import main

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def serve(page: bytes):
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            seen.append(self.path)
            if self.path.endswith("/report.html"):
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.end_headers()
                self.wfile.write(page)
            else:
                self.send_response(404)
                self.end_headers()

        def do_CONNECT(self):  # noqa: N802 - https through the proxy
            seen.append("CONNECT " + self.path)
            self.send_response(403)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, seen


def _host(request: str) -> str:
    """Host of a proxied request: 'CONNECT host:443' or 'http://host/path'; '' for our own paths."""
    if request.startswith("CONNECT "):
        return request.split()[1].rsplit(":", 1)[0]
    if request.startswith("http"):
        return urllib.parse.urlsplit(request).hostname or ""
    return ""


def chromium(url: str, proxy_port: int, profile_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    assert Path(CHROMIUM).exists(), "chromium is missing: apt-get install chromium (make test does this)"
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                           "--no-first-run", "--disable-background-networking", "--disable-component-update",
                           "--disable-sync", "--disable-default-apps", "--disable-domain-reliability",
                           "--disable-client-side-phishing-detection", "--no-pings", "--disable-breakpad",
                           "--disable-features=NetworkTimeServiceQuerying,OptimizationHints,MediaRouter,"
                           "AutofillServerCommunication,Translate,CertificateTransparencyComponentUpdater",
                           f"--user-data-dir={profile_dir}",
                           f"--proxy-server=http://127.0.0.1:{proxy_port}", "--proxy-bypass-list=<-loopback>",
                           *extra, url], capture_output=True, text=True, timeout=120)


def test_html_report_renders_offline_in_chromium(profiled, tmp_path):
    html_file = tmp_path / "report.html"
    r = CliRunner().invoke(main, ["report", str(profiled["build"]), "--format", "html", "--out", str(html_file)])
    assert r.exit_code == 0, r.output
    page = html_file.read_bytes()
    import re

    assert b"<script" not in page and b"<link" not in page and b"@import" not in page
    assert not re.search(rb"""(src|href)\s*=\s*["']?(https?:)?//|url\(\s*["']?(https?:)?//""", page)
    server, seen = serve(page)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/report.html"
        dom = chromium(url, server.server_address[1], tmp_path / "chrome1", "--dump-dom")
        assert dom.returncode == 0, dom.stderr[-2000:]
        shot = chromium(url, server.server_address[1], tmp_path / "chrome2", "--window-size=1200,1600",
                        f"--screenshot={tmp_path / 'report.png'}")
        assert shot.returncode == 0, shot.stderr[-2000:]
    finally:
        server.shutdown()
    text = dom.stdout
    assert "edgeslm profiling report" in text and text.count("<table") >= 2
    assert 'data-plot="latency"' in text and 'data-plot="tradeoff"' in text and text.count("<svg") >= 2
    assert "tinydeploy" in text and "parity on device" in text
    assert (tmp_path / "report.png").stat().st_size > 20_000
    # Chromium's own housekeeping (time sync, account checks) goes to Google hosts whatever the page;
    # anything else, or any other path on our server, would be the report fetching something.
    browser_own = ("google.com", "googleapis.com", "gstatic.com")
    fetched = [p for p in seen if not p.endswith(("/report.html", "/favicon.ico"))
               and not _host(p).endswith(browser_own)]
    assert fetched == [], f"the report fetched {fetched}"
