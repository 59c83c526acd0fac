"""Open the built book in headless Chromium, offline, and check what a reader sees.

The static checks of :func:`l2o.book.html_problems` read the HTML as written; this module
reads it as rendered: Chromium loads every page from ``file://`` with the network
blocked, waits for MathJax to finish, and reports per page

- math elements that MathJax did not typeset, and TeX errors it raised;
- TeX left in the text outside math (``\\(``, ``\\frac``, ``$...$``), which is what an
  offline reader sees when MathJax is missing;
- paragraphs that start with ``|`` (a Markdown table that was not rendered);
- display equations wider than their column, or running into their number, at the
  viewport width (default 1280 px);
- images without a real alternative text (empty, or a file name);
- every request that tried to leave the machine.

Chromium is driven through its DevTools protocol over one websocket
(``websocket-client``, a pinned dependency of Jupyter); nothing is installed here. Where
no Chromium binary is found, :func:`find_chromium` returns None and callers skip.

    python -m l2o.browser _build/html --screens _build/screens     # check, save screenshots
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import itertools
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

logger = logging.getLogger(__name__)

__all__ = ["CHROMIUM_NAMES", "PageReport", "find_chromium", "Browser", "check_pages", "main"]

#: Binaries tried in order (Debian's package is ``chromium``); ``$L2O_CHROMIUM`` first.
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

#: Flags of an offline, headless, throw-away browser. Host resolution fails for every
#: name and any proxied request goes to a closed port, so a page that needs the network
#: (a CDN) shows what an offline reader would see.
_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
          "--no-default-browser-check", "--disable-extensions", "--hide-scrollbars",
          "--mute-audio", "--disable-background-networking", "--disable-sync",
          "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9",
          "--proxy-bypass-list=<-loopback>", "--remote-debugging-port=0")

# Runs in the page once MathJax is done (or absent); returns everything as JSON.
_INSPECT_JS = r"""
(() => {
  const main = document.querySelector('main') || document.body;
  const math = Array.from(main.querySelectorAll('.math'));
  const untypeset = math.filter(m => !m.querySelector('mjx-container'))
                        .map(m => m.textContent.trim().slice(0, 80));
  const errors = Array.from(main.querySelectorAll('mjx-merror, [data-mjx-error]'))
                      .map(e => (e.getAttribute('data-mjx-error') || e.textContent).slice(0, 80));
  const skip = new Set(['SCRIPT', 'STYLE', 'PRE', 'CODE', 'TEXTAREA', 'MJX-CONTAINER',
                        'MJX-ASSISTIVE-MML', 'SVG']);
  const tex = /\\\(|\\\[|\\[A-Za-z]{2,}|\$(?=[^$]{0,200}[\\^_{}])[^$\s][^$]{0,200}\$|\$[A-Za-z]\$/;
  const raw = [];
  const walker = document.createTreeWalker(main, NodeFilter.SHOW_TEXT, {
    acceptNode(node) {
      for (let e = node.parentElement; e && e !== main; e = e.parentElement) {
        if (skip.has(e.tagName.toUpperCase()) || e.classList.contains('highlight')
            || e.classList.contains('math')) return NodeFilter.FILTER_REJECT;
      }
      return tex.test(node.nodeValue) ? NodeFilter.FILTER_ACCEPT : NodeFilter.FILTER_REJECT;
    }});
  while (walker.nextNode() && raw.length < 20) raw.push(walker.currentNode.nodeValue.trim().slice(0, 100));
  const pipes = Array.from(main.querySelectorAll('p'))
                     .filter(p => p.textContent.trim().startsWith('|'))
                     .map(p => p.textContent.trim().slice(0, 80));
  const wide = [];
  for (const d of main.querySelectorAll('div.math')) {
    const box = d.getBoundingClientRect();
    const c = d.querySelector('mjx-container');
    if (!c) continue;
    const svg = c.querySelector('svg') || c;
    const r = svg.getBoundingClientRect();
    const no = d.querySelector('.eqno');
    const label = no ? no.textContent.replace(/\s+/g, ' ').trim().replace(/#$/, '') : '';
    let limit = box.right;
    if (no) { const n = no.getBoundingClientRect(); if (n.width > 0 && n.top < r.bottom && n.bottom > r.top) limit = Math.min(limit, n.left); }
    if (r.right > limit + 1 || r.left < box.left - 1)
      wide.push({label: label, width: Math.round(r.width), room: Math.round(limit - box.left)});
  }
  const images = Array.from(main.querySelectorAll('img')).map(i => i.getAttribute('alt') || '');
  const badAlt = images.filter(a => !a.trim() || /\.(png|jpe?g|svg|gif)$/i.test(a.trim())
                                    || /^_images\//.test(a.trim()));
  const tables = main.querySelectorAll('table').length;
  return JSON.stringify({
    n_math: math.length, n_typeset: main.querySelectorAll('mjx-container').length,
    untypeset, errors, raw_tex: raw, pipe_paragraphs: pipes, wide_equations: wide,
    n_images: images.length, bad_alt: badAlt, n_tables: tables,
    mathjax: !!(window.MathJax && window.MathJax.startup),
    doc_width: document.documentElement.scrollWidth});
})()
"""


@dataclass
class PageReport:
    """What one page looked like in the browser (see the module docstring)."""

    page: str
    n_math: int = 0
    n_typeset: int = 0
    untypeset: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    raw_tex: list = field(default_factory=list)
    pipe_paragraphs: list = field(default_factory=list)
    wide_equations: list = field(default_factory=list)
    n_images: int = 0
    bad_alt: list = field(default_factory=list)
    n_tables: int = 0
    mathjax: bool = False
    doc_width: int = 0
    network: list = field(default_factory=list)
    width: int = 1280
    screenshot: str | None = None

    def problems(self) -> list[str]:
        """One line per defect a reader would see (empty: the page is fine)."""
        out = []
        if self.n_math and not self.mathjax:
            out.append(f"{self.page}: MathJax did not load ({self.n_math} math elements "
                       "shown as raw TeX)")
        if self.untypeset:
            out.append(f"{self.page}: {len(self.untypeset)} math elements not typeset, "
                       f"e.g. {self.untypeset[0]!r}")
        if self.errors:
            out.append(f"{self.page}: TeX errors {self.errors[:3]}")
        if self.raw_tex:
            out.append(f"{self.page}: raw TeX outside math, e.g. {self.raw_tex[0]!r}")
        if self.pipe_paragraphs:
            out.append(f"{self.page}: a paragraph starts with '|' (unrendered table): "
                       f"{self.pipe_paragraphs[0]!r}")
        for eq in self.wide_equations:
            out.append(f"{self.page}: equation {eq['label'] or '(unnumbered)'} is "
                       f"{eq['width']} px wide in {eq['room']} px")
        if self.bad_alt:
            out.append(f"{self.page}: {len(self.bad_alt)} images without a real alt text")
        if self.doc_width > self.width + 1:
            out.append(f"{self.page}: the page is {self.doc_width} px wide in a "
                       f"{self.width} px window (something overflows)")
        if self.network:
            out.append(f"{self.page}: tried to use the network: {self.network[:3]}")
        return out


def find_chromium() -> str | None:
    """The Chromium binary: ``$L2O_CHROMIUM``, else the first of :data:`CHROMIUM_NAMES`
    on the ``PATH``; None if there is none."""
    env = os.environ.get("L2O_CHROMIUM")
    if env:
        return env if Path(env).exists() or shutil.which(env) else None
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    """One headless Chromium and one tab, driven over the DevTools protocol.

    Use as a context manager; :meth:`open` loads a page and waits for MathJax.
    """

    def __init__(self, binary: str, width: int = 1280, height: int = 900,
                 timeout: float = 60.0):
        self.binary, self.width, self.height, self.timeout = binary, width, height, timeout
        self._ids = itertools.count(1)
        self._events: list[dict] = []

    def __enter__(self) -> "Browser":
        import websocket  # websocket-client, pinned with Jupyter

        self._profile = tempfile.mkdtemp(prefix="l2o-chromium-")
        cmd = [self.binary, *_FLAGS, f"--user-data-dir={self._profile}",
               f"--window-size={self.width},{self.height}", "about:blank"]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      text=True)
        url = self._devtools_url()
        self._ws = websocket.create_connection(url, timeout=self.timeout,
                                               suppress_origin=True)
        target = self._call("Target.createTarget", url="about:blank")["targetId"]
        self._session = self._call("Target.attachToTarget", targetId=target,
                                   flatten=True)["sessionId"]
        for domain in ("Page", "Network", "Runtime"):
            self._call(f"{domain}.enable", session=True)
        self._call("Emulation.setDeviceMetricsOverride", session=True, width=self.width,
                   height=self.height, deviceScaleFactor=1, mobile=False)
        return self

    def __exit__(self, *exc) -> None:
        with contextlib.suppress(Exception):
            self._ws.close()
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
        shutil.rmtree(self._profile, ignore_errors=True)

    def _devtools_url(self) -> str:
        deadline = time.monotonic() + self.timeout
        lines = []
        while time.monotonic() < deadline:
            line = self._proc.stderr.readline()
            if not line:
                if self._proc.poll() is not None:
                    break
                continue
            lines.append(line)
            m = re.search(r"DevTools listening on (ws://\S+)", line)
            if m:
                return m.group(1)
        raise RuntimeError("Chromium did not start: " + "".join(lines[-10:]))

    def _call(self, method: str, session: bool = False, **params) -> dict:
        msg_id = next(self._ids)
        msg = {"id": msg_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self._session
        self._ws.send(json.dumps(msg))
        while True:
            reply = json.loads(self._ws.recv())
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self._events.append(reply)

    def _wait_event(self, method: str, timeout: float) -> None:
        """Read events until ``method`` arrives (events are kept in ``_events``)."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for ev in self._events[seen:]:
                if ev.get("method") == method:
                    return
            seen = len(self._events)
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {method} within {timeout} s")
            self._ws.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                self._events.append(json.loads(self._ws.recv()))
            finally:
                self._ws.settimeout(self.timeout)

    def evaluate(self, expression: str, await_promise: bool = False) -> Any:
        """The value of a JavaScript expression in the page."""
        res = self._call("Runtime.evaluate", session=True, expression=expression,
                         awaitPromise=await_promise, returnByValue=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"page script failed: {res['exceptionDetails']}")
        return res.get("result", {}).get("value")

    def open(self, url: str, mathjax_timeout: float = 10.0) -> list[str]:
        """Load ``url``, wait for it and for MathJax; return the network requests made."""
        self._events.clear()
        self._call("Page.navigate", session=True, url=url)
        self._wait_event("Page.loadEventFired", self.timeout)
        # MathJax loads deferred: wait until it exists, then until it has typeset.
        deadline = time.monotonic() + mathjax_timeout
        while time.monotonic() < deadline:
            state = self.evaluate("window.MathJax && window.MathJax.startup ? 'ready' : "
                                  "(document.querySelector('.math') ? 'waiting' : 'none')")
            if state != "waiting":
                break
            time.sleep(0.1)
        if state == "ready":
            self.evaluate("MathJax.startup.promise.then(() => true)", await_promise=True)
        requests = [ev["params"]["request"]["url"] for ev in self._events
                    if ev.get("method") == "Network.requestWillBeSent"]
        return [u for u in requests if u.startswith(("http:", "https:", "ws:", "wss:"))]

    def inspect(self) -> dict:
        """The checks of the module docstring, on the open page."""
        return json.loads(self.evaluate(_INSPECT_JS))

    def screenshot(self, path: Path, max_height: int = 16000) -> Path:
        """Save the whole page (up to ``max_height`` px) as a PNG.

        The viewport is stretched to the page's height for the capture (capturing
        beyond a short viewport can shift the layout), then restored.
        """
        metrics = self._call("Page.getLayoutMetrics", session=True)
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        height = max(self.height, min(int(size["height"]), max_height))
        self._call("Emulation.setDeviceMetricsOverride", session=True, width=self.width,
                   height=height, deviceScaleFactor=1, mobile=False)
        try:
            time.sleep(0.3)  # let the layout settle at the new height
            data = self._call("Page.captureScreenshot", session=True, format="png")["data"]
        finally:
            self._call("Emulation.setDeviceMetricsOverride", session=True, width=self.width,
                       height=self.height, deviceScaleFactor=1, mobile=False)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path


def _pages(html_dir: Path, docnames: Sequence[str] | None) -> Iterator[tuple[str, Path]]:
    if docnames is None:
        from l2o import book

        docnames = book.toc_docnames()
    for name in docnames:
        yield name, Path(html_dir) / f"{name}.html"


def check_pages(html_dir: Path, docnames: Sequence[str] | None = None,
                screens: Path | None = None, width: int = 1280,
                binary: str | None = None) -> list[PageReport]:
    """Open every page of the book (default: the toc's) and inspect it.

    Args:
        html_dir: the built book (``_build/html``).
        docnames: pages, as toc names (``book/03_gps``); default every toc entry.
        screens: if given, save a full-page PNG of each page there.
        width: viewport width in CSS pixels.
        binary: the Chromium binary (default :func:`find_chromium`).

    Raises:
        RuntimeError: no Chromium, or a page is missing.
    """
    binary = binary or find_chromium()
    if binary is None:
        raise RuntimeError("no Chromium found (install Debian's `chromium` or set "
                           "$L2O_CHROMIUM)")
    reports = []
    with Browser(binary, width=width) as browser:
        for name, page in _pages(Path(html_dir), docnames):
            if not page.exists():
                raise RuntimeError(f"{page} is missing")
            network = browser.open(page.resolve().as_uri())
            report = PageReport(page=name, network=network, width=width,
                                **browser.inspect())
            if screens is not None:
                shot = Path(screens) / f"{name.replace('/', '_')}-{width}.png"
                report.screenshot = str(browser.screenshot(shot))
            reports.append(report)
            logger.info("%s: %d math typeset of %d, %d tables, %d images%s", name,
                        report.n_typeset, report.n_math, report.n_tables, report.n_images,
                        "" if not report.problems() else f", {len(report.problems())} problems")
    return reports


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m l2o.browser", description=__doc__.split(
        "\n")[0])
    ap.add_argument("html", type=Path, nargs="?", default=Path("_build/html"),
                    help="the built book (default: _build/html)")
    ap.add_argument("--screens", type=Path, default=None,
                    help="save a full-page screenshot of every page in this folder")
    ap.add_argument("--width", type=int, nargs="+", default=[1280],
                    help="viewport widths in CSS pixels (default 1280)")
    ap.add_argument("--page", nargs="*", default=None,
                    help="toc names of the pages to open (default: all)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if find_chromium() is None:
        logger.error("no Chromium found: install Debian's `chromium` or set $L2O_CHROMIUM")
        return 2
    problems = []
    for width in args.width:
        for report in check_pages(args.html, args.page, args.screens, width):
            problems += [f"[{width} px] {p}" for p in report.problems()]
            if report.screenshot:
                print(report.screenshot)
    for line in problems:
        logger.error("%s", line)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
