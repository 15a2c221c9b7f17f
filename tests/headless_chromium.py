"""Render a page in Debian's headless Chromium over the DevTools protocol, for the report tests.

``--dump-dom`` alone only proves Chromium parsed the HTML; over the DevTools protocol the test also
gets the laid-out geometry of each chart, the accessibility tree, every console message and
exception, every network request the page made (a self-contained page makes none besides its own
file), and a full-page PNG. The browser is started with a free debugging port on loopback and a
throw-away profile directory.
"""

from __future__ import annotations

import asyncio
import base64
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1280,900",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
]
START_TIMEOUT = 30.0
LOAD_TIMEOUT = 30.0

# Run in the page after load: what a reader would see of each chart.
CHARTS_JS = """(() => {
  const out = {};
  for (const fig of document.querySelectorAll('figure.chart')) {
    const box = fig.getBoundingClientRect();
    const svg = fig.querySelector('svg');
    const marks = [...fig.querySelectorAll('svg .mark')];
    out[fig.id] = {
      no_data: fig.classList.contains('no-data'),
      caption: fig.querySelector('figcaption')?.textContent ?? null,
      svg_title: svg?.querySelector(':scope > title')?.textContent ?? null,
      marks: marks.length,
      visible_marks: marks.filter(m => { const b = m.getBoundingClientRect(); return b.width > 0 && b.height > 0; }).length,
      mark_tips: marks.map(m => m.querySelector('title')?.textContent ?? ''),
      texts: [...fig.querySelectorAll('svg text')].map(t => t.textContent),
      box: {x: box.x + window.scrollX, y: box.y + window.scrollY, width: box.width, height: box.height},
      reason: fig.querySelector('.no-data-reason')?.textContent ?? null,
    };
  }
  const headlines = {};
  for (const tile of document.querySelectorAll('dl.headlines > div')) {
    headlines[tile.dataset.name] = tile.querySelector('dd').textContent;
  }
  return {charts: out, headlines, title: document.title,
          snapshot: document.getElementById('snapshot-id')?.textContent,
          as_of: document.getElementById('as-of')?.textContent,
          tables: [...document.querySelectorAll('table.data')].map(t => t.id),
          ledes: Object.fromEntries([...document.querySelectorAll('section.panel')].map(
            s => [s.id, s.querySelector(':scope > p.lede')?.textContent ?? ''])),
          };
})()"""


@dataclass
class Rendered:
    """What Chromium made of a page."""

    page: dict[str, Any]
    png: bytes
    console: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    image_names: list[str] = field(default_factory=list)


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        raise RuntimeError("chromium is not installed: run `make browser-tools` (Debian package chromium)")
    return path


class Browser:
    """One headless Chromium for a test module; ``render`` opens each page in a fresh tab."""

    def __init__(self, profile_dir: Path):
        self.process = subprocess.Popen(
            [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.port = self._await_port()

    def _await_port(self) -> int:
        deadline = time.monotonic() + START_TIMEOUT
        seen: list[str] = []
        assert self.process.stderr is not None
        while time.monotonic() < deadline:
            line = self.process.stderr.readline()
            if not line and self.process.poll() is not None:
                break
            seen.append(line)
            found = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            if found:
                return int(found.group(1))
        self.close()
        raise RuntimeError("chromium did not open its DevTools port; stderr:\n" + "".join(seen[-20:]))

    def close(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)

    def render(self, url: str) -> Rendered:
        return asyncio.run(asyncio.wait_for(self._render(url), LOAD_TIMEOUT))

    async def _render(self, url: str) -> Rendered:
        base = f"http://127.0.0.1:{self.port}"
        async with aiohttp.ClientSession() as http:
            async with http.put(f"{base}/json/new?about:blank") as response:
                target = await response.json()
            try:
                async with http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                    return await _Session(ws).render(url)
            finally:
                async with http.get(f"{base}/json/close/{target['id']}") as response:
                    await response.read()


class _Session:
    """Commands and events of one tab's DevTools connection."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse):
        self.ws = ws
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        await self.ws.send_json({"id": self.next_id, "method": method, "params": params})
        while True:
            message = await self.ws.receive_json()
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]
            self.events.append(message)

    async def until(self, event: str) -> None:
        if any(e.get("method") == event for e in self.events):
            return
        while True:
            message = await self.ws.receive_json()
            self.events.append(message)
            if message.get("method") == event:
                return

    async def render(self, url: str) -> Rendered:
        for domain in ("Page", "Runtime", "Log", "Network"):
            await self.call(f"{domain}.enable")
        await self.call("Page.navigate", url=url)
        await self.until("Page.loadEventFired")
        result = await self.call("Runtime.evaluate", expression=CHARTS_JS, returnByValue=True)
        page = result["result"]["value"]
        size = (await self.call("Page.getLayoutMetrics"))["cssContentSize"]
        shot = await self.call(
            "Page.captureScreenshot",
            format="png",
            captureBeyondViewport=True,
            clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
        )
        tree = await self.call("Accessibility.getFullAXTree")
        images = [
            node.get("name", {}).get("value", "")
            for node in tree["nodes"]
            if node.get("role", {}).get("value") == "image"
        ]
        return Rendered(page, base64.b64decode(shot["data"]), self._console(), self._requests(), images)

    def _console(self) -> list[str]:
        lines = []
        for event in self.events:
            params = event.get("params", {})
            if event.get("method") == "Runtime.consoleAPICalled" and params["type"] in (
                "error",
                "warning",
                "assert",
            ):
                lines.append(" ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
            elif event.get("method") == "Runtime.exceptionThrown":
                lines.append(params["exceptionDetails"].get("text", "exception"))
            elif event.get("method") == "Log.entryAdded" and params["entry"]["level"] in ("error", "warning"):
                lines.append(params["entry"]["text"])
        return lines

    def _requests(self) -> list[str]:
        return [
            e["params"]["request"]["url"]
            for e in self.events
            if e.get("method") == "Network.requestWillBeSent"
        ]
