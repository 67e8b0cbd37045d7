"""Opens a WebSocket from a real headless Chromium N times; each sends one
message over the server's size limit and records the close event the page
sees. Prints {"<code> clean|unclean": count, ...} as JSON.

Usage: close_codes.py WS_URL N   (driven over the DevTools protocol; needs
the `websockets` package and Debian's `chromium`)."""

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import websockets

PAGE_JS = """
(async (url, n) => {
  const results = {};
  for (let i = 0; i < n; i++) {
    const seen = await new Promise((resolve) => {
      const ws = new WebSocket(url);
      ws.onmessage = (e) => {
        if (JSON.parse(e.data).type === "welcome") {
          ws.send(JSON.stringify({ type: "publish", data: "x".repeat(70 * 1024) }));
        }
      };
      ws.onclose = (e) => resolve(e.code + (e.wasClean ? " clean" : " unclean"));
    });
    results[seen] = (results[seen] || 0) + 1;
  }
  return JSON.stringify(results);
})(%s, %d)
"""


async def main(url: str, n: int) -> None:
    profile = tempfile.mkdtemp()
    chrome = subprocess.Popen(
        [
            "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--user-data-dir=" + profile,
            "--remote-debugging-port=0", "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        page = None
        for _ in range(300):
            try:
                # Chromium picks a free port and writes it into the profile.
                with open(os.path.join(profile, "DevToolsActivePort")) as f:
                    port = int(f.readline())
                pages = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json"))
                page = next(p for p in pages if p["type"] == "page")
                break
            except Exception:
                time.sleep(0.1)
        if page is None:
            sys.exit("chromium did not start")
        async with websockets.connect(page["webSocketDebuggerUrl"], max_size=None) as cdp:
            expression = PAGE_JS % (json.dumps(url), n)
            await cdp.send(json.dumps({
                "id": 1,
                "method": "Runtime.evaluate",
                "params": {"expression": expression, "awaitPromise": True},
            }))
            while True:
                message = json.loads(await cdp.recv())
                if message.get("id") == 1:
                    print(message["result"]["result"]["value"])
                    return
    finally:
        chrome.kill()
        chrome.wait()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
