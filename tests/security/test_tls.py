"""AMQPS with real clients over real sockets: pika and aio-pika, the certificate checks a client makes,
client certificates and the EXTERNAL mechanism, TLS versions, and half-open handshakes."""

from __future__ import annotations

import asyncio
import datetime
import socket
import ssl
import time
from pathlib import Path

import aio_pika
import kombu
import pika
import pika.exceptions
import pytest
import trustme
from pamqp import commands as C

from tests.e2e.raw import PROTOCOL_HEADER, RawClient, start_ok
from tests.helpers import ThreadBroker
from tests.security.conftest import (
    HOSTS,
    Files,
    TLSBrokerFactory,
    client_context,
    pika_params,
    raw_tls,
    round_trip,
    tls_port,
    write_cert,
    write_files,
)

pytestmark = pytest.mark.timeout(60)


def refused(params: pika.ConnectionParameters) -> str:
    """Connect, expecting the client to give up; returns what it raised (pika re-raises TLS errors as is)."""
    with pytest.raises((pika.exceptions.AMQPConnectionError, ssl.SSLError, ConnectionError)) as info:
        pika.BlockingConnection(params).close()
    return repr(info.value)


def plain_still_serves(b: ThreadBroker) -> None:
    with pika.BlockingConnection(pika.URLParameters(b.url)) as conn:
        assert round_trip(conn, "plain-q", b"plain") == b"plain"


def test_pika_publishes_and_consumes_over_tls(tls: ThreadBroker, ca: trustme.CA) -> None:
    with pika.BlockingConnection(pika_params(tls_port(tls), client_context(ca))) as conn:
        assert round_trip(conn) == b"over tls"
    plain_still_serves(tls)  # the plain listener stays, as RabbitMQ's tcp_listeners beside ssl_listeners


def test_aio_pika_amqps_url(tls: ThreadBroker, ca: trustme.CA) -> None:
    async def main() -> bytes:
        url = f"amqps://guest:guest@localhost:{tls_port(tls)}/"
        conn = await aio_pika.connect(url, ssl_context=client_context(ca), timeout=5)
        async with conn:
            ch = await conn.channel()
            q = await ch.declare_queue("aio-tls", auto_delete=True)
            await ch.default_exchange.publish(aio_pika.Message(b"aio over tls"), routing_key="aio-tls")
            async with q.iterator() as it:
                async for msg in it:
                    await msg.ack()
                    return msg.body
        raise AssertionError("no message")

    assert asyncio.run(asyncio.wait_for(main(), 20)) == b"aio over tls"


@pytest.mark.parametrize("case", ["untrusted CA", "wrong host name"])
def test_client_refuses_a_certificate_it_cannot_trust(tls: ThreadBroker, ca: trustme.CA, case: str) -> None:
    ctx = client_context(trustme.CA()) if case == "untrusted CA" else client_context(ca)
    host = "wrong.example" if case == "wrong host name" else "localhost"
    why = refused(pika_params(tls_port(tls), ctx, server_hostname=host))
    assert "CERTIFICATE_VERIFY_FAILED" in why
    assert ("Hostname mismatch" if case == "wrong host name" else "unable to get local issuer") in why
    # The broker stays up and serves others, over TLS and plain TCP.
    with pika.BlockingConnection(pika_params(tls_port(tls), client_context(ca))) as conn:
        assert round_trip(conn) == b"over tls"
    plain_still_serves(tls)


def test_client_refuses_an_expired_certificate(
    tls_broker: TLSBrokerFactory, ca: trustme.CA, tmp_path: Path
) -> None:
    now = datetime.datetime.now(datetime.UTC)
    expired = ca.issue_cert(
        *HOSTS, not_before=now - datetime.timedelta(days=30), not_after=now - datetime.timedelta(days=1)
    )
    files = write_files(ca, tmp_path / "expired", expired)
    b = tls_broker(tls_cert=files.cert, tls_key=files.key)
    assert "certificate has expired" in refused(pika_params(tls_port(b), client_context(ca)))
    plain_still_serves(b)
    # A client that checks nothing still gets in: the broker itself did not fail.
    lax = ssl.create_default_context()
    lax.check_hostname, lax.verify_mode = False, ssl.CERT_NONE
    with pika.BlockingConnection(pika_params(tls_port(b), lax)) as conn:
        assert round_trip(conn) == b"over tls"


def test_tls_1_0_and_1_1_are_refused(tls: ThreadBroker, ca: trustme.CA) -> None:
    for version in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        ctx = client_context(ca)
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer the old protocol at all
        ctx.minimum_version = ctx.maximum_version = version
        with socket.create_connection(("127.0.0.1", tls_port(tls)), timeout=5) as sock:
            with pytest.raises(ssl.SSLError) as info:
                ctx.wrap_socket(sock, server_hostname="localhost")
        # The ClientHello went out (no NO_PROTOCOLS_AVAILABLE on this side); the broker refused it.
        assert info.value.reason in (
            "UNEXPECTED_EOF_WHILE_READING",
            "TLSV1_ALERT_PROTOCOL_VERSION",
            "UNSUPPORTED_PROTOCOL",
        )
    ctx = client_context(ca)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # the oldest version accepted
    with pika.BlockingConnection(pika_params(tls_port(tls), ctx)) as conn:
        assert round_trip(conn) == b"over tls"


# ---- client certificates and EXTERNAL ------------------------------------------------------------


def connected_users(b: ThreadBroker) -> list[str]:
    return b.call(lambda: sorted(c.user for c in b.app.broker.connections.values()))  # type: ignore[union-attr]


def test_external_logs_in_as_the_certificate_cn(
    tls_broker: TLSBrokerFactory, ca: trustme.CA, files: Files
) -> None:
    b = tls_broker(tls_ca=files.ca)  # verify defaults to "peer" with a CA
    alice = ca.issue_cert("alice.clients.example", common_name="alice")
    params = pika_params(
        tls_port(b), client_context(ca, alice), credentials=pika.credentials.ExternalCredentials()
    )
    with pika.BlockingConnection(params) as conn:
        assert connected_users(b) == ["alice"]
        # user_id must equal the authenticated user: alice's publish passes, guest's would be refused
        assert round_trip(conn, body=b"from alice", user_id="alice") == b"from alice"


def test_external_login_from_subject_alternative_name(
    tls_broker: TLSBrokerFactory, ca: trustme.CA, files: Files
) -> None:
    b = tls_broker(tls_ca=files.ca, tls_login_from="subject_alternative_name")
    cert = ca.issue_cert("alice", common_name="someone-else")
    params = pika_params(
        tls_port(b), client_context(ca, cert), credentials=pika.credentials.ExternalCredentials()
    )
    with pika.BlockingConnection(params):
        assert connected_users(b) == ["alice"]


def test_external_with_a_certificate_for_an_unknown_user_is_refused(
    tls_broker: TLSBrokerFactory, ca: trustme.CA, files: Files
) -> None:
    b = tls_broker(tls_ca=files.ca)
    mallory = ca.issue_cert("mallory.example", common_name="mallory")
    with raw_tls(tls_port(b), client_context(ca, mallory)) as raw:
        raw.send_raw(PROTOCOL_HEADER)
        assert raw.expect(C.Connection.Start).mechanisms.split() == ["PLAIN", "AMQPLAIN", "EXTERNAL"]
        raw.send(0, start_ok("EXTERNAL", b""))
        close = raw.expect(C.Connection.Close)
    assert close.reply_code == 403
    assert close.reply_text == (
        "ACCESS_REFUSED - Login was refused using authentication mechanism EXTERNAL. For details see the broker logfile."
    )
    assert connected_users(b) == []


@pytest.mark.parametrize("transport", ["tls without a client certificate", "plain tcp"])
def test_external_without_a_certificate_is_not_offered_and_refused(
    tls_broker: TLSBrokerFactory, ca: trustme.CA, files: Files, transport: str
) -> None:
    b = tls_broker(tls_ca=files.ca)
    raw = raw_tls(tls_port(b), client_context(ca)) if transport.startswith("tls") else RawClient(b.port)
    with raw:
        raw.send_raw(PROTOCOL_HEADER)
        assert raw.expect(C.Connection.Start).mechanisms == "PLAIN AMQPLAIN"
        raw.send(0, start_ok("EXTERNAL", b"alice"))  # naming a user in the response changes nothing
        close = raw.expect(C.Connection.Close)
    assert (close.reply_code, close.class_id, close.method_id) == (403, 10, 11)
    assert "authentication mechanism EXTERNAL" in close.reply_text
    assert connected_users(b) == []
    with pytest.raises(pika.exceptions.AuthenticationError):  # pika sees EXTERNAL is not offered
        pika.BlockingConnection(
            pika_params(tls_port(b), client_context(ca), credentials=pika.credentials.ExternalCredentials())
        )


def test_plain_login_still_works_with_a_client_certificate(
    tls_broker: TLSBrokerFactory, ca: trustme.CA, files: Files
) -> None:
    b = tls_broker(tls_ca=files.ca, tls_verify="require")
    cert = ca.issue_cert("alice.example", common_name="alice")
    params = pika_params(
        tls_port(b), client_context(ca, cert), credentials=pika.PlainCredentials("guest", "guest")
    )
    with pika.BlockingConnection(params) as conn:
        assert connected_users(b) == ["guest"]  # the password login, not the certificate's name
        assert round_trip(conn) == b"over tls"


def test_require_refuses_a_handshake_without_a_client_certificate(
    tls_broker: TLSBrokerFactory, ca: trustme.CA, files: Files
) -> None:
    b = tls_broker(tls_ca=files.ca, tls_verify="require")
    refused(pika_params(tls_port(b), client_context(ca)))
    # With TLS 1.3 the client's side of the handshake completes; it learns of the refusal on its first read.
    with pytest.raises((ssl.SSLError, ConnectionError)) as info:
        with raw_tls(tls_port(b), client_context(ca)) as raw:
            raw.send_raw(PROTOCOL_HEADER)
            assert raw.sock.recv(100) == b"", "the broker answered a client without a certificate"
            raise ConnectionResetError("closed without a word")
    assert "CERTIFICATE_REQUIRED" in repr(info.value) or "closed without" in repr(info.value)
    assert connected_users(b) == []
    plain_still_serves(b)


def test_peer_mode_refuses_a_client_certificate_from_another_ca(
    tls_broker: TLSBrokerFactory, ca: trustme.CA, files: Files
) -> None:
    b = tls_broker(tls_ca=files.ca, tls_verify="peer")
    stranger = trustme.CA().issue_cert("alice.example", common_name="alice")
    refused(
        pika_params(
            tls_port(b), client_context(ca, stranger), credentials=pika.credentials.ExternalCredentials()
        )
    )
    assert connected_users(b) == []


# ---- half-open handshakes ------------------------------------------------------------------------

# The first bytes of a TLS 1.2 ClientHello record: a record header announcing 512 bytes, then stop.
PARTIAL_CLIENT_HELLO = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 16


def test_half_open_handshakes_are_dropped_and_do_not_block_others(tls: ThreadBroker, ca: trustme.CA) -> None:
    """tls_handshake_timeout is 1 s here (5 s by default, RabbitMQ's ssl_handshake_timeout)."""
    silent = socket.create_connection(("127.0.0.1", tls_port(tls)), timeout=10)
    partial = socket.create_connection(("127.0.0.1", tls_port(tls)), timeout=10)
    partial.sendall(PARTIAL_CLIENT_HELLO)
    started = time.monotonic()
    # Another client is not held up by them.
    with pika.BlockingConnection(pika_params(tls_port(tls), client_context(ca))) as conn:
        assert round_trip(conn) == b"over tls"
        for sock in (silent, partial):
            with sock:
                try:
                    assert sock.recv(100) == b""
                except ConnectionResetError:
                    pass
            waited = time.monotonic() - started
            assert waited < 5, f"half-open handshake still open after {waited:.1f} s"
        assert connected_users(tls) == ["guest"]  # the well-behaved client is untouched


# ---- kombu / py-amqp (Celery) --------------------------------------------------------------------


def test_kombu_over_tls_with_and_without_a_client_certificate(
    tls_broker: TLSBrokerFactory, ca: trustme.CA, files: Files, tmp_path: Path
) -> None:
    """kombu logs in with PLAIN (its default login_method) whether or not it presents a certificate;
    login_method="EXTERNAL" logs in as the certificate's user."""
    b = tls_broker(tls_ca=files.ca)
    alice_cert, alice_key = write_cert(ca.issue_cert("alice.example", common_name="alice"), tmp_path, "alice")
    base = {"ca_certs": str(files.ca), "cert_reqs": ssl.CERT_REQUIRED, "server_hostname": "localhost"}
    with_cert = {**base, "certfile": str(alice_cert), "keyfile": str(alice_key)}
    url = f"amqp://guest:guest@127.0.0.1:{tls_port(b)}//"
    for sslopts, login, user in (
        (base, {}, "guest"),
        (with_cert, {}, "guest"),
        (with_cert, {"login_method": "EXTERNAL"}, "alice"),
    ):
        with kombu.Connection(url, ssl=sslopts, connect_timeout=5, **login) as conn:
            q = conn.SimpleQueue("kombu-tls")
            q.put({"task": "add"})
            assert connected_users(b) == [user]
            m = q.get(block=True, timeout=5)
            m.ack()
            assert m.payload == {"task": "add"}
            q.close()
