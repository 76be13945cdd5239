"""Open every page of the built book in headless Chromium and fail on what a reader would trip over.

    python tools/browser_check.py [--html _build/html] [--out _build/screenshots] [--width 1280] [PAGE ...]

The built book (``_build/html``) is served on 127.0.0.1 (a port the system picks) and each page is opened
in Debian's ``chromium`` (``--headless``), driven over the DevTools protocol with tornado's websocket
client (tornado comes with Jupyter; nothing to download). A page fails on

* a missing image (an ``<img>`` that did not load, or any same-origin request answered 4xx/5xx);
* a request that leaves 127.0.0.1 (a CDN: the book must read offline);
* a broken internal link (the file, or the ``#anchor`` in it, does not exist);
* an unrendered role or directive (``{glue:text}`...```, ``{cite}`...```, a literal ```` ```{ ```` or
  ``:::{`` fence) or ``??`` (an unresolved reference) in the page's text, outside code;
* an error output, a Sphinx/docutils error message, or math that MathJax did not typeset;
* an output block longer than ``MAX_OUTPUT_LINES`` lines;
* prose (paragraphs, lists, headings, admonitions, tables and equations outside cell outputs) wider than
  the text column;
* a figure whose smallest font shows below ``medvlp_lib.book.MIN_FONT_PX`` at its displayed size (the PNG
  carries its font size and dpi, written by ``medvlp_lib.book.figure_png``; the page says how wide it shows).

A full-page screenshot (``--width`` px wide, at most ``MAX_SHOT_HEIGHT`` px tall) of each page is written to
``--out``, with ``report.json`` listing every page's problems. Exit status 1 if any page failed.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import functools
import http.server
import json
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path
from urllib.parse import unquote, urlsplit

MAX_OUTPUT_LINES = 60
MAX_SHOT_HEIGHT = 40000
MIN_FONT_PX = 9.0  # medvlp_lib.book.MIN_FONT_PX (repeated so the check runs without the library installed)
SKIP_DIRS = {"_static", "_sources", "_images", "_panels_static", "_sphinx_design_static"}
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                  "--disable-default-apps", "--mute-audio", "--font-render-hinting=none"]

# runs in the page; returns what Python cannot see from the files: rendered text, sizes, load states
PROBE = r"""
(() => {
  const article = document.querySelector('article.bd-article') || document.querySelector('main')
                  || document.body;
  const inCode = el => el.closest(
    'pre, code, .highlight, .cell_input, .cell_output, .output, mjx-container, script, style');
  const problems = [];
  // text outside code: walk text nodes
  const walker = document.createTreeWalker(article, NodeFilter.SHOW_TEXT);
  const prose = [];
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    if (!n.parentElement || inCode(n.parentElement)) continue;
    prose.push(n.textContent);
  }
  const text = prose.join(' ');
  const roles = text.match(/\{[a-z][\w.-]*(?::[\w.-]+)*\}`[^`]*`?/g) || [];
  for (const r of roles.slice(0, 5)) problems.push(['unrendered role', r.slice(0, 80)]);
  const all = article.innerText;
  for (const f of ['```{', ':::{']) {
    const i = all.indexOf(f);
    if (i >= 0) problems.push(['unrendered directive', all.slice(i, i + 60)]);
  }
  const q = text.indexOf('??');
  if (q >= 0) problems.push(['unresolved reference (??)', text.slice(Math.max(0, q - 40), q + 20)]);
  const errors = '.output.traceback, .output.error, .system-message, .problematic, div.error';
  for (const el of article.querySelectorAll(errors))
    problems.push(['error output', el.innerText.slice(0, 160)]);
  // math: every math element typeset by MathJax
  const maths = article.querySelectorAll('span.math, div.math');
  const untyped = [...maths].filter(m => !m.querySelector('mjx-container'));
  if (untyped.length) problems.push(['math not typeset',
    `${untyped.length} of ${maths.length}: ` + untyped[0].textContent.slice(0, 60)]);
  // outputs
  for (const pre of article.querySelectorAll('.cell_output pre')) {
    const lines = pre.textContent.replace(/\n$/, '').split('\n').length;
    if (lines > %(max_lines)d)
      problems.push(['output block too long', `${lines} lines: ` + pre.textContent.slice(0, 60)]);
  }
  // prose wider than the column (the article's content box)
  const right = article.getBoundingClientRect().right - parseFloat(getComputedStyle(article).paddingRight) + 1;
  const proseSel = 'p, li, dt, dd, h1, h2, h3, h4, h5, h6, blockquote, .admonition, table, '
                   + 'mjx-container[display="true"]';
  for (const el of article.querySelectorAll(proseSel)) {
    if (el.closest('.cell_output, .cell_input, pre, .highlight, nav, .bd-toc')) continue;
    if (el.tagName === 'MJX-CONTAINER' ? false : el.closest('mjx-container')) continue;
    const r = el.getBoundingClientRect();
    const wide = r.right > right
                 || el.scrollWidth > el.clientWidth + 2 && getComputedStyle(el).overflowX === 'visible';
    const px = Math.round(Math.max(r.width, el.scrollWidth));
    if (wide && r.width > 0) problems.push(['prose wider than the column',
      `<${el.tagName.toLowerCase()}> ${px} px past the column: ` + el.innerText.slice(0, 60)]);
  }
  // images and links for Python to check
  const images = [...document.querySelectorAll('img')].map(img => ({
    src: img.currentSrc || img.src, ok: img.complete && img.naturalWidth > 0,
    shown: img.getBoundingClientRect().width, natural: img.naturalWidth,
    output: !!img.closest('.cell_output')}));
  const links = [...document.querySelectorAll('a[href]')].map(a => a.href);
  const pad = parseFloat(getComputedStyle(article).paddingLeft) + parseFloat(getComputedStyle(article).paddingRight);
  return JSON.stringify({problems, images, links, column: article.clientWidth - pad,
                         height: Math.ceil(document.documentElement.scrollHeight)});
})()
"""

# resolves once MathJax has typeset the page (or at once where it is not loaded)
MATHJAX_DONE = ("(window.MathJax && MathJax.startup && MathJax.startup.promise) ? "
                "MathJax.startup.promise.then(() => true) : Promise.resolve(false)")


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def serve(directory: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(_Quiet, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def png_text(path: Path) -> dict[str, str]:
    """The tEXt chunks of a PNG file."""
    out = {}
    try:
        data = path.read_bytes()
    except OSError:
        return out
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return out
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"tEXt" and b"\0" in body:
            key, value = body.split(b"\0", 1)
            out[key.decode("latin-1")] = value.decode("latin-1")
        elif kind == b"zTXt" and b"\0" in body:
            key, rest = body.split(b"\0", 1)
            out[key.decode("latin-1")] = zlib.decompress(rest[1:]).decode("latin-1")
        elif kind == b"IEND":
            break
        pos += 12 + length
    return out


class Browser:
    """Headless Chromium and one page, spoken to over the DevTools protocol."""

    def __init__(self, chromium: str, width: int, height: int = 900):
        self.profile = tempfile.mkdtemp(prefix="medvlp-chromium-")
        self.proc = subprocess.Popen(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", "--remote-debugging-port=0",
             f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.width, self.height = width, height
        self.events: list[dict] = []
        self._id = 0

    async def connect(self, timeout: float = 30):
        from tornado.httpclient import AsyncHTTPClient
        from tornado.websocket import websocket_connect
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while not port_file.exists() or not port_file.read_text().strip():
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with status {self.proc.returncode} before it listened")
            if time.monotonic() > deadline:
                raise RuntimeError("chromium did not open its DevTools port within {timeout} s")
            await asyncio.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        targets = json.loads((await AsyncHTTPClient().fetch(f"http://127.0.0.1:{port}/json/list")).body)
        page = next(t for t in targets if t.get("type") == "page")
        self.ws = await websocket_connect(page["webSocketDebuggerUrl"], max_message_size=512 * 1024 * 1024)
        await self.send("Page.enable")
        await self.send("Network.enable")
        await self.send("Runtime.enable")
        await self.send("Emulation.setDeviceMetricsOverride",
                        {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False})

    async def _read(self, timeout: float) -> dict:
        msg = await asyncio.wait_for(self.ws.read_message(), timeout)
        if msg is None:
            raise RuntimeError("chromium closed the DevTools connection")
        return json.loads(msg)

    async def send(self, method: str, params: dict | None = None, timeout: float = 60) -> dict:
        self._id += 1
        ident = self._id
        await self.ws.write_message(json.dumps({"id": ident, "method": method, "params": params or {}}))
        while True:
            data = await self._read(timeout)
            if data.get("id") == ident:
                if "error" in data:
                    raise RuntimeError(f"{method}: {data['error']}")
                return data.get("result", {})
            if "method" in data:
                self.events.append(data)

    async def wait_for(self, event: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for i, e in enumerate(self.events):
                if e["method"] == event:
                    return self.events.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {event} within {timeout} s")
            data = await self._read(left)
            if "method" in data:
                self.events.append(data)

    async def evaluate(self, expression: str, timeout: float = 60):
        result = await self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                      "awaitPromise": True}, timeout=timeout)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails'].get('text')} "
                               f"{result['exceptionDetails'].get('exception', {}).get('description', '')[:300]}")
        return result["result"].get("value")

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)


def pages_of(html: Path) -> list[Path]:
    return sorted(p for p in html.rglob("*.html") if not (set(p.relative_to(html).parts[:-1]) & SKIP_DIRS))


def _anchors(path: Path, cache: dict) -> set[str]:
    if path not in cache:
        text = path.read_text(errors="replace") if path.exists() else ""
        cache[path] = set(re.findall(r"""\b(?:id|name)=["']([^"']+)["']""", text))
    return cache[path]


def check_page(browser: Browser, base: str, html: Path, page: Path, shots: Path | None, anchors: dict) -> dict:
    loop = asyncio.get_event_loop()
    return loop.run_until_complete(_check_page(browser, base, html, page, shots, anchors))


async def _check_page(browser, base, html, page, shots, anchors) -> dict:
    rel = page.relative_to(html).as_posix()
    url = f"{base}/{rel}"
    browser.events.clear()
    await browser.send("Page.navigate", {"url": url})
    await browser.wait_for("Page.loadEventFired", timeout=120)
    typeset = await browser.evaluate(MATHJAX_DONE, timeout=120)
    await asyncio.sleep(0.2)
    info = json.loads(await browser.evaluate(PROBE % {"max_lines": MAX_OUTPUT_LINES}))
    problems = [list(p) for p in info["problems"]]
    if not typeset and any(p[0] == "math not typeset" for p in problems):
        problems.append(["MathJax not loaded", "the page has math but MathJax never started"])
    # network: failures and requests that leave this machine
    origin = urlsplit(base).netloc
    for e in browser.events:
        if e["method"] == "Network.requestWillBeSent":
            u = e["params"]["request"]["url"]
            if urlsplit(u).scheme in ("http", "https") and urlsplit(u).netloc != origin:
                problems.append(["request leaves the machine", u[:160]])
        elif e["method"] == "Network.responseReceived":
            r = e["params"]["response"]
            if (r.get("status", 200) >= 400 and urlsplit(r["url"]).netloc == origin
                    and urlsplit(r["url"]).path != "/favicon.ico"):  # asked for by the browser, not the page
                problems.append(["missing resource", f"{r['status']} {unquote(urlsplit(r['url']).path)}"])
    # images
    for img in info["images"]:
        src = urlsplit(img["src"])
        if not img["ok"]:
            problems.append(["missing image", unquote(src.path) or img["src"][:80]])
            continue
        if src.netloc != origin or not img["output"] or not img["natural"]:
            continue
        meta = png_text(html / unquote(src.path).lstrip("/"))
        if "medvlp-min-font-pt" in meta and "medvlp-dpi" in meta:
            px = float(meta["medvlp-min-font-pt"]) * float(meta["medvlp-dpi"]) / 72 * img["shown"] / img["natural"]
            if px < MIN_FONT_PX - 0.05:
                problems.append(["figure text too small", f"{px:.1f} px (< {MIN_FONT_PX:g}) in "
                                 f"{Path(src.path).name}, shown {img['shown']:.0f} of {img['natural']} px"])
    # internal links
    seen = set()
    for href in info["links"]:
        u = urlsplit(href)
        if u.netloc != origin or (u.path, u.fragment) in seen:
            continue
        seen.add((u.path, u.fragment))
        target = html / unquote(u.path).lstrip("/")
        if target.is_dir():
            target = target / "index.html"
        if not target.exists():
            problems.append(["broken link", f"{unquote(u.path)} does not exist"])
        elif u.fragment and target.suffix == ".html" and unquote(u.fragment) not in _anchors(target, anchors):
            problems.append(["broken link", f"{unquote(u.path)}#{u.fragment}: no such anchor"])
    shot = None
    if shots is not None:
        # a window as tall as the page (captureBeyondViewport shifts this theme's layout sideways)
        height = min(max(info["height"], browser.height), MAX_SHOT_HEIGHT)
        await browser.send("Emulation.setDeviceMetricsOverride",
                           {"width": browser.width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        await asyncio.sleep(0.3)
        data = await browser.send("Page.captureScreenshot", {"format": "png"}, timeout=180)
        await browser.send("Emulation.setDeviceMetricsOverride", {"width": browser.width, "height": browser.height,
                                                                   "deviceScaleFactor": 1, "mobile": False})
        shot = shots / (rel.replace("/", "__").removesuffix(".html") + ".png")
        shot.write_bytes(base64.b64decode(data["data"]))
    return {"page": rel, "problems": problems, "column_px": info["column"], "height_px": info["height"],
            "screenshot": str(shot) if shot else None}


def run(html: Path, out: Path | None, width: int = 1280, pages: list[str] | None = None,
        chromium: str | None = None) -> list[dict]:
    """Check the pages (all of ``html`` by default); returns one report per page."""
    html = Path(html).resolve()
    if not (html / "index.html").exists() and not pages:
        raise FileNotFoundError(f"{html}/index.html does not exist: build the book first (`make book`)")
    chromium = chromium or find_chromium()
    if chromium is None:
        raise FileNotFoundError("no chromium found: install Debian's package (`apt-get install -y chromium`)")
    todo = [html / p for p in pages] if pages else pages_of(html)
    if out is not None:
        out = Path(out)
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
    server, base = serve(html)
    browser = Browser(chromium, width)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    reports, anchors = [], {}
    try:
        loop.run_until_complete(browser.connect())
        for page in todo:
            t0 = time.perf_counter()
            redirect = re.search(r"""<meta[^>]+http-equiv=["']refresh["'][^>]+url=([^"'>]+)""",
                                 page.read_text(errors="replace"), re.I)
            try:
                if redirect:  # a redirect page (e.g. index.html -> book/intro.html): its target must exist
                    target = (page.parent / redirect.group(1).strip()).resolve()
                    rep = {"page": page.relative_to(html).as_posix(), "problems": [] if target.exists() else
                           [["broken redirect", f"{redirect.group(1)} does not exist"]]}
                else:
                    rep = check_page(browser, base, html, page, out, anchors)
            except Exception as exc:  # one page failing to load fails that page, not the run
                rep = {"page": page.relative_to(html).as_posix(), "problems": [["page did not load", repr(exc)]]}
            rep["seconds"] = round(time.perf_counter() - t0, 2)
            reports.append(rep)
            flag = "FAIL" if rep["problems"] else "ok  "
            print(f"[browser] {flag} {rep['page']} ({rep['seconds']:.1f}s)", flush=True)
            for kind, detail in rep["problems"]:
                print(f"           {kind}: {detail}", flush=True)
    finally:
        browser.close()
        server.shutdown()
        loop.close()
    if out is not None:
        (out / "report.json").write_text(json.dumps(reports, indent=1))
    return reports


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pages", nargs="*", help="pages relative to --html (default: every page)")
    parser.add_argument("--html", default="_build/html")
    parser.add_argument("--out", default="_build/screenshots")
    parser.add_argument("--width", type=int, default=1280)
    args = parser.parse_args(argv)
    reports = run(Path(args.html), Path(args.out), args.width, args.pages or None)
    failed = [r for r in reports if r["problems"]]
    print(f"[browser] {len(reports) - len(failed)} of {len(reports)} pages passed; screenshots in {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
