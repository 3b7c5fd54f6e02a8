"""TLS fixtures: a CA made in the test with trustme, certificate files, brokers with AMQPS on port 0."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pika
import pytest
import trustme

from tests.e2e.raw import RawClient
from tests.helpers import ThreadBroker

HOSTS = ("localhost", "127.0.0.1")


@dataclass
class Files:
    cert: Path
    key: Path
    ca: Path


def write_cert(cert: trustme.LeafCert, directory: Path, name: str) -> tuple[Path, Path]:
    """The chain (leaf first) and the key as PEM files, as an operator would hand them to the broker."""
    directory.mkdir(parents=True, exist_ok=True)
    chain, key = directory / f"{name}.pem", directory / f"{name}.key"
    chain.write_bytes(b"".join(p.bytes() for p in cert.cert_chain_pems))
    key.write_bytes(cert.private_key_pem.bytes())
    return chain, key


def write_files(ca: trustme.CA, directory: Path, cert: trustme.LeafCert | None = None) -> Files:
    cert_path, key_path = write_cert(cert or ca.issue_cert(*HOSTS), directory, "server")
    ca_path = directory / "ca.pem"
    ca_path.write_bytes(ca.cert_pem.bytes())
    return Files(cert_path, key_path, ca_path)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def files(ca: trustme.CA, tmp_path: Path) -> Files:
    return write_files(ca, tmp_path / "tls")


TLSBrokerFactory = Callable[..., ThreadBroker]


@pytest.fixture
def tls_broker(broker_factory: Callable[..., ThreadBroker], files: Files) -> TLSBrokerFactory:
    """make(**settings) -> a broker with AMQP and AMQPS on ephemeral ports (HTTPS off unless asked)."""

    def make(**over: Any) -> ThreadBroker:
        over.setdefault("tls_cert", files.cert)
        over.setdefault("tls_key", files.key)
        over.setdefault("amqps_port", 0)
        over.setdefault("https_port", None)
        over.setdefault("tls_handshake_timeout", 1.0)
        over.setdefault("users", {"guest": "guest", "alice": "apw"})
        return broker_factory(**over)

    return make


@pytest.fixture
def tls(tls_broker: TLSBrokerFactory) -> Iterator[ThreadBroker]:
    yield tls_broker()


def tls_port(b: ThreadBroker) -> int:
    assert b.app.server is not None
    return b.app.server.tls_port


def client_context(ca: trustme.CA | None, cert: trustme.LeafCert | None = None) -> ssl.SSLContext:
    """What a careful client uses: the system defaults (hostname check, verify) trusting ``ca``."""
    ctx = ssl.create_default_context()
    if ca is not None:
        ca.configure_trust(ctx)
    if cert is not None:
        cert.configure_cert(ctx)
    return ctx


def pika_params(
    port: int, ctx: ssl.SSLContext, server_hostname: str = "localhost", credentials: Any = None
) -> pika.ConnectionParameters:
    return pika.ConnectionParameters(
        "127.0.0.1", port, ssl_options=pika.SSLOptions(ctx, server_hostname),
        credentials=credentials or pika.PlainCredentials("guest", "guest"),
        connection_attempts=1, socket_timeout=5, blocked_connection_timeout=5,
    )  # fmt: skip


def round_trip(
    conn: pika.BlockingConnection, queue: str = "tls-q", body: bytes = b"over tls", **props: Any
) -> bytes:
    """Declare, publish (confirmed), consume and ack one message; returns its body."""
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare(queue, auto_delete=True)
    ch.basic_publish("", queue, body, pika.BasicProperties(**props), mandatory=True)
    for method, _props, got in ch.consume(queue, inactivity_timeout=5):
        assert method is not None, "no delivery within 5 s"
        ch.basic_ack(method.delivery_tag)
        ch.cancel()
        return got
    raise AssertionError("consume ended")


def raw_tls(port: int, ctx: ssl.SSLContext, server_hostname: str = "localhost") -> RawClient:
    """A RawClient whose socket is TLS: frames as the broker sends them, over AMQPS."""
    raw = RawClient(port)
    raw.sock = ctx.wrap_socket(raw.sock, server_hostname=server_hostname)
    return raw
