"""A small driver for headless Chromium over the DevTools protocol: start
the browser, open pages, evaluate JavaScript, wait for a condition, take
screenshots. Needs the `websockets` package and Debian's `chromium`."""

import asyncio
import base64
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request

import websockets

# Without the background-networking flags Chromium keeps trying hosts that a
# closed network refuses.
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1200,800",
]


class Browser:
    """A Chromium process with its own empty profile; use with `async with`."""

    async def __aenter__(self):
        self.profile = tempfile.mkdtemp()
        self.process = subprocess.Popen(
            ["chromium", *FLAGS, "--user-data-dir=" + self.profile, "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                # Chromium picks a free port and writes it into the profile.
                with open(os.path.join(self.profile, "DevToolsActivePort")) as f:
                    self.port = int(f.readline())
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/version").read()
                break
            except (OSError, ValueError):
                if time.monotonic() > deadline:
                    raise RuntimeError("chromium did not start within 30 s")
                await asyncio.sleep(0.1)
        self.pages = []
        return self

    async def __aexit__(self, *exc):
        for page in self.pages:
            await page.socket.close()
        self.process.kill()
        self.process.wait()
        shutil.rmtree(self.profile, ignore_errors=True)

    async def first_page(self):
        """The tab the browser opened with."""
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json"))
        return await self._attach(next(t for t in targets if t["type"] == "page"))

    async def new_page(self, url):
        """A new tab at `url`, loaded."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/json/new?{url}", method="PUT")
        page = await self._attach(json.load(urllib.request.urlopen(request)))
        await page.wait_for("document.readyState === 'complete'")
        return page

    async def _attach(self, target):
        socket = await websockets.connect(target["webSocketDebuggerUrl"], max_size=None)
        page = Page(socket)
        self.pages.append(page)
        return page


class Page:
    def __init__(self, socket):
        self.socket = socket
        self.ids = itertools.count(1)

    async def call(self, method, **params):
        id = next(self.ids)
        await self.socket.send(json.dumps({"id": id, "method": method, "params": params}))
        while True:
            message = json.loads(await self.socket.recv())
            if message.get("id") == id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    async def evaluate(self, expression):
        """The value of a JavaScript expression (promises awaited)."""
        result = await self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression, timeout=10.0, what=None):
        """Polls until `expression` is truthy; returns its value. An
        expression that throws (the page still loading: its elements are not
        there yet) counts as not yet, until the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = await self.evaluate(expression)
                error = None
            except RuntimeError as e:
                value, error = None, e
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what or expression}: {error}")
            await asyncio.sleep(0.05)

    async def screenshot(self, path):
        shot = await self.call("Page.captureScreenshot", format="png")
        with open(path, "wb") as f:
            f.write(base64.b64decode(shot["data"]))
