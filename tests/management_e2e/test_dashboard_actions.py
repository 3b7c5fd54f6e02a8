"""The dashboard's queue actions in real headless Chromium (driven over DevTools) against a live
broker: publish a message, get messages (requeued by default), purge and delete, each behind
RabbitMQ's controls, purge and delete only after the confirmation dialog says OK. The page runs
under the broker's Content-Security-Policy without a refusal.

Skipped only when Chromium is missing (Debian's ``chromium``; see .ci/install-browser.sh)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pika
import pytest

from tests.management.test_dashboard_browser import CHROMIUM
from tests.security.devtools import DevTools, devtools_page

from .conftest import Live

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed (run .ci/install-browser.sh)"
)

# Resolves with fn()'s value once it is truthy, re-checked on every DOM change.
UNTIL = """(fn) => new Promise((resolve) => {
    const check = () => { let v = null; try { v = fn(); } catch (e) { v = null; }
                          if (v) { observer.disconnect(); resolve(v); } };
    const observer = new MutationObserver(check);
    observer.observe(document.body, {childList: true, subtree: true, characterData: true, attributes: true});
    check();
})"""


async def until(page: DevTools, expression: str) -> object:
    try:
        async with asyncio.timeout(10):
            return await page.js(f"({UNTIL})(() => {expression})")
    except TimeoutError:
        state = await page.js(
            'JSON.stringify({result: document.getElementById("qp-result").textContent,'
            ' dialog: document.getElementById("confirm").open, status: document.getElementById("status").textContent})'
        )
        raise AssertionError(f"not met: {expression}; page: {state}; console: {page.console()}") from None


async def click(page: DevTools, testid: str) -> None:
    await page.js(f'document.querySelector("[data-testid={testid}]").click()')


def test_publish_get_purge_delete_from_the_dashboard(live: Live, tmp_path: Path) -> None:
    with live.connect() as conn:
        ch = conn.channel()
        ch.queue_declare("work", durable=True)
        for i in range(3):
            ch.basic_publish("", "work", b"task %d" % i, pika.BasicProperties(delivery_mode=2))

    async def go() -> None:
        assert CHROMIUM is not None
        async with devtools_page(CHROMIUM, tmp_path / "profile") as page, asyncio.timeout(60):
            await page.load("Page.navigate", url=live.http + "/?interval=250")
            assert (await page.status("live")).startswith("live")
            await until(page, 'document.querySelector("tr[data-name=work] [data-testid=q-manage]")')
            await page.js('document.querySelector("tr[data-name=work] [data-testid=q-manage]").click()')
            assert await page.js('document.getElementById("queue-panel").hidden') is False
            assert await page.js('document.getElementById("qp-name").textContent') == "work"

            # publish: persistent, with a header
            await page.js("""document.getElementById("qp-payload").value = "from the dashboard";
                             document.getElementById("qp-delivery").value = "2";
                             document.getElementById("qp-headers").value = '{"source": "ui"}';""")
            await click(page, "qp-publish-btn")
            got = await until(page, 'document.getElementById("qp-result").textContent')
            assert got == "Message published."
            assert live.queue("work")["messages_ready"] == 4

            # get: the default ack mode requeues them
            assert await page.js('document.getElementById("qp-ackmode").value') == "ack_requeue_true"
            await page.js('document.getElementById("qp-count").value = "4"')
            await click(page, "qp-get-btn")
            await until(page, 'document.querySelectorAll("[data-testid=qp-message]").length === 4')
            payloads = await page.js(
                'JSON.stringify([...document.querySelectorAll("[data-testid=qp-payload-out]")].map(e => e.textContent))'
            )
            assert json.loads(payloads) == ["task 0", "task 1", "task 2", "from the dashboard"]
            shown = await page.js('document.querySelectorAll("[data-testid=qp-message]")[3].textContent')
            assert '"delivery_mode":2' in shown and '"source":"ui"' in shown
            assert live.queue("work")["messages_ready"] == 4

            # purge: asks first; Cancel leaves the messages
            await click(page, "qp-purge")
            assert await page.js('document.getElementById("confirm").open') is True
            text = await page.js('document.getElementById("confirm-text").textContent')
            assert text == "Purge all ready messages of queue 'work'?"
            await click(page, "confirm-cancel")
            assert await page.js('document.getElementById("confirm").open') is False
            assert live.queue("work")["messages_ready"] == 4
            await click(page, "qp-purge")
            await click(page, "confirm-ok")
            assert await until(page, 'document.getElementById("qp-result").textContent') == "Queue purged."
            assert live.queue("work")["messages_ready"] == 0

            # delete: asks first, then the queue is gone and the panel closes
            await click(page, "qp-delete")
            assert "Delete queue 'work'?" in await page.js(
                'document.getElementById("confirm-text").textContent'
            )
            await click(page, "confirm-cancel")
            assert live.request("GET", "/api/queues/%2F/work")[0] == 200
            await click(page, "qp-delete")
            await click(page, "confirm-ok")
            done = 'document.getElementById("queue-panel").hidden || document.getElementById("qp-result").textContent'
            await until(page, done)
            assert await page.js('document.getElementById("qp-result").textContent') == ""
            assert live.request("GET", "/api/queues/%2F/work")[0] == 404
            await until(page, '!document.querySelector("tr[data-name=work]")')

            refused = [m for m in page.console() if "Content Security Policy" in m or "Refused" in m]
            assert not refused, page.console()

    asyncio.run(go())
