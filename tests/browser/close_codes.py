"""Opens a WebSocket from a real headless Chromium N times; each sends one
message over the server's size limit and records the close event the page
sees. Prints {"<code> clean|unclean": count, ...} as JSON.

Usage: close_codes.py WS_URL N"""

import asyncio
import json
import sys

from cdp import Browser

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
    async with Browser() as browser:
        page = await browser.first_page()
        print(await page.evaluate(PAGE_JS % (json.dumps(url), n)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
