"""The demo page in a real headless Chromium: two pages, one publishes and
the other shows the message; an admin broadcast (through wshubctl) appears
on both; a kick with code 4003 shows the code and reason, and the page does not
reconnect by itself after an operator's own code; reconnecting
renews the page's subscriptions and, the topic keeping history, shows what
was published while the page was away ("recovered 1 missed message").
Saves screenshots into SHOT_DIR and prints what it saw as JSON.

Usage: demo.py PAGE_URL WSHUBCTL ADMIN_ADDR SHOT_DIR"""

import asyncio
import json
import os
import subprocess
import sys

from cdp import Browser

CLIENT_ID = "document.getElementById('client-id').textContent"
STATUS = "document.getElementById('status').textContent"


def message_from(sender, text):
    """JS: the text of the first logged message from `sender` containing `text`."""
    return f"""[...document.querySelectorAll('#log li.message')]
        .filter(li => li.dataset.from === {json.dumps(sender)})
        .map(li => li.querySelector('.data').textContent)
        .find(t => t.includes({json.dumps(text)}))"""


def click(id):
    return f"document.getElementById({json.dumps(id)}).click(), true"


def fill(id, value):
    return f"document.getElementById({json.dumps(id)}).value = {json.dumps(value)}, true"


async def main(url, wshubctl, admin, shots):
    def ctl(*args):
        out = subprocess.run([wshubctl, "--addr", admin, *args], capture_output=True, text=True, timeout=10)
        if out.returncode != 0:
            raise AssertionError(f"wshubctl {' '.join(args)} failed: {out.stderr}")
        return out.stdout

    async with Browser() as browser:
        a = await browser.new_page(url)
        b = await browser.new_page(url)
        connected = f"{STATUS} === 'connected' && {CLIENT_ID}.startsWith('c-')"
        id_a = await a.wait_for(f"({connected}) && {CLIENT_ID}", what="page A's welcome")
        id_b = await b.wait_for(f"({connected}) && {CLIENT_ID}", what="page B's welcome")
        assert id_a != id_b, "two pages, two clients"

        # B subscribes to "demo"; A publishes to it; B shows it with A as the sender.
        await b.evaluate(fill("topic", "demo"))
        await b.evaluate(click("subscribe"))
        await b.wait_for("document.querySelector('#topics li[data-topic=\"demo\"]') !== null", what="B's subscription")
        await a.evaluate(fill("pub-topic", "demo"))
        await a.evaluate(fill("pub-data", '{"text": "hello from A"}'))
        await a.evaluate(click("publish"))
        seen_by_b = await b.wait_for(message_from(id_a, "hello from A"), what="A's message on B")

        # An operator's broadcast reaches both pages, from "admin".
        ctl("broadcast", '{"note":"from the operator"}')
        on_a = await a.wait_for(message_from("admin", "from the operator"), what="the broadcast on A")
        on_b = await b.wait_for(message_from("admin", "from the operator"), what="the broadcast on B")

        # The operator moves B away: the page says so, in words and code.
        ctl("kick", "--client", id_b, "--code", "4003", "--reason", "banned")
        kicked = await b.wait_for(
            f"{STATUS}.startsWith('kicked') && {STATUS}", what="the kick on B"
        )
        reconnect_shown = await b.evaluate("!document.getElementById('reconnect').hidden")
        # An operator's own code: the page does not reconnect by itself.
        retry = await b.wait_for("document.getElementById('retry').textContent", what="B's retry line")
        await a.screenshot(os.path.join(shots, "a.png"))
        await b.screenshot(os.path.join(shots, "b-kicked.png"))

        # Published while B is away.
        await a.evaluate(fill("pub-data", '{"text": "while you were away"}'))
        await a.evaluate(click("publish"))
        await a.wait_for("[...document.querySelectorAll('#log li.sent')]"
                         ".some(li => li.querySelector('.data').textContent.includes('while you were away'))",
                         what="A's publish acked")

        await b.evaluate(click("reconnect"))
        id_b2 = await b.wait_for(f"({connected}) && {CLIENT_ID} !== {json.dumps(id_b)} && {CLIENT_ID}",
                                 what="B reconnected")
        missed = await b.wait_for(message_from(id_a, "while you were away"), what="the missed message on B")
        recovered = await b.wait_for(
            "[...document.querySelectorAll('#log li.system')].map(li => li.dataset.recovered).find(r => r)",
            what="B's recovery line")
        # The page renewed its subscription: A's next message reaches B again.
        await a.evaluate(fill("pub-data", '{"text": "welcome back"}'))
        await a.evaluate(click("publish"))
        again = await b.wait_for(message_from(id_a, "welcome back"), what="A's message after B reconnected")
        await b.screenshot(os.path.join(shots, "b-reconnected.png"))
        print(json.dumps({
            "a": id_a, "b": id_b, "b_again": id_b2,
            "seen_by_b": json.loads(seen_by_b),
            "broadcast": [json.loads(on_a), json.loads(on_b)],
            "kicked": kicked, "reconnect_shown": reconnect_shown, "retry": retry, "after_reconnect": json.loads(again),
            "missed": json.loads(missed), "recovered": recovered,
        }))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
