"""Failed logins, over AMQP and HTTP: each is logged with the user, the peer and the reason (never
the password), and a peer address that keeps failing is answered ever more slowly (exponential delay,
:class:`leveret.model.access.LoginThrottle`) while other addresses are not slowed at all.

All of 127.0.0.0/8 is loopback on Linux, so the attacker's connections are bound to 127.0.0.2 and the
legitimate user's to 127.0.0.1 (asyncio.open_connection / aiohttp's TCPConnector ``local_addr``);
the broker listens on 127.0.0.1 and keys the throttle by peer address.

The throttle's defaults (documented on LoginThrottle): 5 free failures per address, then the n-th
further attempt waits 0.1 s * 2**(n-1), at most 10 s; a success or 5 minutes without failures
forgets the address.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from pamqp import commands as C
from pamqp import frame as pframe

from tests.helpers import ThreadBroker

ATTACKER, LEGIT = "127.0.0.2", "127.0.0.1"
SECRET = "Sup3r-s3cret-pw"  # alice's password: must never reach the log
GUESS = "gu3ss-n0t-this"  # a wrong password: must never reach the log either


@pytest.fixture
def b(broker_factory: Callable[..., ThreadBroker]) -> ThreadBroker:
    return broker_factory(users={"alice": SECRET}, http_port=0)


# ---- a raw AMQP login from a chosen source address --------------------------------------------


async def _frame(reader: asyncio.StreamReader) -> Any:
    head = await reader.readexactly(7)
    size = struct.unpack(">I", head[3:7])[0]
    rest = await reader.readexactly(size + 1)
    return pframe.unmarshal(head + rest)[2]


async def amqp_login(port: int, user: str, password: str, source: str) -> tuple[float, str]:
    """Header, start, start-ok; returns (seconds from start-ok to the broker's answer, "ok" for
    connection.tune or the close's text)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        writer.write(b"AMQP\x00\x00\x09\x01")
        assert isinstance(await _frame(reader), C.Connection.Start)
        ok = C.Connection.StartOk(
            client_properties={"capabilities": {"authentication_failure_close": True}},
            mechanism="PLAIN", response=f"\x00{user}\x00{password}",
        )  # fmt: skip
        t0 = time.monotonic()
        writer.write(pframe.marshal(ok, 0))
        answer = await asyncio.wait_for(_frame(reader), 30)
        elapsed = time.monotonic() - t0
        if isinstance(answer, C.Connection.Tune):
            return elapsed, "ok"
        assert isinstance(answer, C.Connection.Close), answer
        return elapsed, f"{answer.reply_code} {answer.reply_text}"
    finally:
        writer.close()


REFUSED = "403 ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details see the broker logfile."


async def http_login(port: int, user: str, password: str, source: str) -> tuple[float, int]:
    """GET /api/whoami with basic auth from ``source``: (seconds, status)."""
    conn = aiohttp.TCPConnector(local_addr=(source, 0), force_close=True)
    async with aiohttp.ClientSession(connector=conn) as s:
        t0 = time.monotonic()
        async with s.get(f"http://127.0.0.1:{port}/api/whoami", auth=aiohttp.BasicAuth(user, password)) as r:
            await r.read()
            return time.monotonic() - t0, r.status


def http_port(b: ThreadBroker) -> int:
    assert b.app.http_port is not None
    return b.app.http_port


# ---- AMQP ---------------------------------------------------------------------------------------


def test_amqp_brute_force_slows_down_exponentially_without_slowing_other_addresses(b: ThreadBroker) -> None:
    async def main() -> None:
        times = []
        for _ in range(9):
            elapsed, outcome = await amqp_login(b.port, "alice", GUESS, ATTACKER)
            assert outcome == REFUSED
            times.append(elapsed)
        # 5 free failures, then 0.1, 0.2, 0.4, 0.8 s: each wait doubles.
        assert max(times[:5]) < 0.3, times
        for i, expected in zip(range(5, 9), (0.1, 0.2, 0.4, 0.8), strict=True):
            assert expected * 0.9 <= times[i] < expected + 0.5, (i, times)
        # The 10th attempt waits 1.6 s; meanwhile logins from another address are not slowed,
        # right or wrong, and the right password does not get the attacker through faster.
        tenth = asyncio.create_task(amqp_login(b.port, "alice", GUESS, ATTACKER))
        await asyncio.sleep(0.05)
        legit, outcome = await amqp_login(b.port, "alice", SECRET, LEGIT)
        assert (outcome, legit < 0.5) == ("ok", True), legit
        wrong, outcome = await amqp_login(b.port, "alice", GUESS, LEGIT)
        assert (outcome, wrong < 0.5) == (REFUSED, True), wrong
        elapsed, outcome = await tenth
        assert outcome == REFUSED and elapsed >= 1.5, elapsed
        elapsed, outcome = await amqp_login(b.port, "alice", SECRET, ATTACKER)
        assert outcome == "ok" and elapsed >= 3.0, elapsed

    asyncio.run(main())


def test_a_success_forgets_the_address(b: ThreadBroker) -> None:
    async def main() -> None:
        for _ in range(7):  # 5 free, then 0.1 and 0.2 s
            assert (await amqp_login(b.port, "alice", GUESS, ATTACKER))[1] == REFUSED
        elapsed, outcome = await amqp_login(b.port, "alice", SECRET, ATTACKER)
        assert outcome == "ok" and elapsed >= 0.35, elapsed  # held 0.4 s like any attempt
        # Forgotten: five failures are free again (without the reset: 0.8, 1.6, 3.2, ... s).
        for _ in range(5):
            elapsed, outcome = await amqp_login(b.port, "alice", GUESS, ATTACKER)
            assert outcome == REFUSED and elapsed < 0.3, elapsed

    asyncio.run(main())


def test_failed_amqp_logins_are_logged_with_user_peer_and_reason_never_the_password(
    b: ThreadBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    async def main() -> None:
        assert (await amqp_login(b.port, "alice", GUESS, ATTACKER))[1] == REFUSED
        assert (await amqp_login(b.port, "mallory", SECRET, ATTACKER))[1] == REFUSED
        assert (await amqp_login(b.port, "alice", SECRET, LEGIT))[1] == "ok"

    asyncio.run(main())
    refused = [r.getMessage() for r in caplog.records if "login refused" in r.getMessage()]
    assert refused == [
        "login refused from 127.0.0.2: PLAIN login refused: user 'alice' - invalid credentials",
        "login refused from 127.0.0.2: PLAIN login refused: user 'mallory' - invalid credentials",
    ]
    text = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert SECRET not in text and GUESS not in text


# ---- HTTP ---------------------------------------------------------------------------------------


def test_http_brute_force_slows_down_exponentially_without_slowing_other_addresses(b: ThreadBroker) -> None:
    port = http_port(b)

    async def main() -> None:
        times = []
        for _ in range(9):
            elapsed, status = await http_login(port, "alice", GUESS, ATTACKER)
            assert status == 401
            times.append(elapsed)
        assert max(times[:5]) < 0.3, times
        for i, expected in zip(range(5, 9), (0.1, 0.2, 0.4, 0.8), strict=True):
            assert expected * 0.9 <= times[i] < expected + 0.5, (i, times)
        tenth = asyncio.create_task(http_login(port, "alice", GUESS, ATTACKER))
        await asyncio.sleep(0.05)
        legit, status = await http_login(port, "alice", SECRET, LEGIT)
        assert (status, legit < 0.5) == (200, True), legit
        elapsed, status = await tenth
        assert status == 401 and elapsed >= 1.5, elapsed
        # One throttle for both listeners: the address is slow over AMQP too now.
        elapsed, outcome = await amqp_login(b.port, "alice", GUESS, ATTACKER)
        assert outcome == REFUSED and elapsed >= 3.0, elapsed

    asyncio.run(main())


def test_failed_http_logins_are_logged_with_user_peer_and_reason_never_the_password(
    b: ThreadBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    port = http_port(b)

    async def main() -> None:
        assert (await http_login(port, "alice", GUESS, ATTACKER))[1] == 401
        assert (await http_login(port, "mallory", SECRET, ATTACKER))[1] == 401
        assert (await http_login(port, "alice", SECRET, LEGIT))[1] == 200

    asyncio.run(main())
    refused = [r.getMessage() for r in caplog.records if "login refused" in r.getMessage()]
    assert refused == [
        "HTTP login refused from 127.0.0.2: user 'alice' - invalid credentials (GET /api/whoami)",
        "HTTP login refused from 127.0.0.2: user 'mallory' - invalid credentials (GET /api/whoami)",
    ]
    text = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert SECRET not in text and GUESS not in text


# ---- attempts in parallel -------------------------------------------------------------------------


def test_parallel_amqp_attempts_are_answered_one_after_another(b: ThreadBroker) -> None:
    """Five guesses sent at once wait 0.1, 0.2, 0.4, 0.8, 1.6 s one after another (3.1 s in all), as
    if sent in sequence: opening many connections at once does not multiply the guess rate."""

    async def main() -> None:
        for _ in range(5):  # the free failures
            assert (await amqp_login(b.port, "alice", GUESS, ATTACKER))[1] == REFUSED
        burst = [asyncio.create_task(amqp_login(b.port, "alice", GUESS, ATTACKER)) for _ in range(5)]
        await asyncio.sleep(0.05)
        legit, outcome = await amqp_login(b.port, "alice", SECRET, LEGIT)
        assert (outcome, legit < 0.5) == ("ok", True), legit
        got = sorted(await asyncio.gather(*burst))
        assert all(outcome == REFUSED for _, outcome in got)
        times = [t for t, _ in got]
        for t, expected in zip(times, (0.1, 0.3, 0.7, 1.5, 3.1), strict=True):
            assert expected * 0.9 <= t < expected + 0.5, times

    asyncio.run(main())


def test_parallel_http_attempts_are_answered_one_after_another(b: ThreadBroker) -> None:
    port = http_port(b)

    async def main() -> None:
        for _ in range(5):
            assert (await http_login(port, "alice", GUESS, ATTACKER))[1] == 401
        burst = [asyncio.create_task(http_login(port, "alice", GUESS, ATTACKER)) for _ in range(4)]
        got = sorted(await asyncio.gather(*burst))
        assert all(status == 401 for _, status in got)
        times = [t for t, _ in got]
        for t, expected in zip(times, (0.1, 0.3, 0.7, 1.5), strict=True):
            assert expected * 0.9 <= t < expected + 0.5, times
        # and counted once each: the next one waits 1.6 s
        elapsed, status = await http_login(port, "alice", GUESS, ATTACKER)
        assert status == 401 and 1.5 <= elapsed < 2.1, elapsed

    asyncio.run(main())
