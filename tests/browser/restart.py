"""The demo page reconnects by itself: with the page open and subscribed to
`demo`, the server is killed and started again on the same port (by the
test, between the two lines this script exchanges with it); the page counts
down, reconnects without a click, renews its subscription and shows a
message published after the restart. Also: a request too large for the
node is refused by the page before it is sent, and an error names the
request it answers.

Usage: restart.py PAGE_URL SHOT_DIR
Prints {"before": client id} once subscribed, waits for a line on stdin (the
server is back), then prints what it saw as JSON."""

import asyncio
import json
import os
import sys

from cdp import Browser

CLIENT_ID = "document.getElementById('client-id').textContent"
STATUS = "document.getElementById('status').textContent"
RETRY = "document.getElementById('retry').textContent"


def fill(id, value):
    return f"document.getElementById({json.dumps(id)}).value = {json.dumps(value)}, true"


def click(id):
    return f"document.getElementById({json.dumps(id)}).click(), true"


async def main(url, shots):
    async with Browser() as browser:
        page = await browser.new_page(url)
        connected = f"{STATUS} === 'connected' && {CLIENT_ID}.startsWith('c-')"
        before = await page.wait_for(f"({connected}) && {CLIENT_ID}", what="the welcome")
        await page.evaluate(fill("topic", "demo"))
        await page.evaluate(click("subscribe"))
        await page.wait_for("document.querySelector('#topics li[data-topic=\"demo\"]') !== null", what="the subscription")

        # Over the node's --max-message-bytes (the welcome says it): refused here.
        await page.evaluate(fill("pub-topic", "demo"))
        await page.evaluate(fill("pub-data", json.dumps({"blob": "x" * 70000})))
        await page.evaluate(click("publish"))
        too_large = await page.wait_for(
            "[...document.querySelectorAll('#log li.error')].map(li => li.textContent).find(t => t.includes('at most'))",
            what="the size refusal")
        # An error names the request it answers.
        await page.evaluate(fill("topic", "bad topic!"))
        await page.evaluate(click("subscribe"))
        named = await page.wait_for(
            "[...document.querySelectorAll('#log li.error')].map(li => li.querySelector('.where').textContent)"
            ".find(t => t.includes('invalid_topic'))", what="the error")
        still = await page.evaluate(f"{STATUS} === 'connected'")

        print(json.dumps({"before": before}), flush=True)
        # The test kills the server here; the page counts down meanwhile.
        countdown = await page.wait_for(f"{RETRY}.startsWith('reconnecting in') && {RETRY}", timeout=20,
                                        what="the countdown")
        await page.screenshot(os.path.join(shots, "restart-countdown.png"))
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        after = await page.wait_for(f"({connected}) && {CLIENT_ID} !== {json.dumps(before)} && {CLIENT_ID}",
                                    timeout=45, what="the page back without a click")
        message = await page.wait_for(
            "[...document.querySelectorAll('#log li.message')].map(li => li.querySelector('.data').textContent)"
            ".find(t => t.includes('after the restart'))", timeout=20, what="a message after the restart")
        await page.screenshot(os.path.join(shots, "restart-back.png"))
        print(json.dumps({
            "before": before, "after": after, "countdown": countdown, "message": json.loads(message),
            "too_large": too_large, "named": named, "connected_after_refusal": still,
        }))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:3]))
