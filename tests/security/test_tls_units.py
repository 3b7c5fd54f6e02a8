"""The pure parts of TLS: the name EXTERNAL logs in as, the mechanism list, the server context."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trustme

from leveret.errors import ConnectionError_
from leveret.model.access import AccessControl
from leveret.server import auth
from leveret.server.tls import ServerTLS, TLSConfigError, TLSFiles, build_context, cert_login
from tests.security.conftest import Files

ALICE = {
    "subject": ((("organizationName", "Example"),), (("commonName", "alice"),)),
    "subjectAltName": (("email", "a@example.com"), ("DNS", "alice.clients"), ("DNS", "second")),
}


def test_cert_login_names() -> None:
    assert cert_login(ALICE) == "alice"
    assert cert_login(ALICE, "subject_alternative_name") == "alice.clients"  # the first DNS name
    two_cns = {"subject": ((("commonName", "a"),), (("commonName", "b"),))}
    assert cert_login(two_cns) == "a,b"  # as rabbit_ssl joins several CNs
    assert cert_login({"subject": ((("organizationName", "x"),),)}) is None
    assert cert_login(two_cns, "subject_alternative_name") is None
    assert cert_login(None) is None and cert_login({}) is None  # plain TCP, or a certificate nobody verified


def test_mechanisms_offer_external_only_with_a_certificate_name() -> None:
    assert auth.mechanisms(None) == "PLAIN AMQPLAIN"
    assert auth.mechanisms("alice") == "PLAIN AMQPLAIN EXTERNAL"


def test_external_needs_a_certificate_user_that_exists() -> None:
    users = AccessControl(loopback_users=("guest",))
    users.add_user("guest", "guest")
    users.add_user("alice", "apw")
    assert auth.authenticate("EXTERNAL", b"", users, "127.0.0.1", cert_user="alice") == "alice"
    assert auth.authenticate("EXTERNAL", b"guest", users, "127.0.0.1", cert_user="alice") == "alice"
    for cert_user in (None, "mallory"):
        with pytest.raises(ConnectionError_) as info:
            auth.authenticate("EXTERNAL", b"alice", users, "127.0.0.1", cert_user=cert_user)
        assert info.value.code == 403
    with pytest.raises(ConnectionError_):  # loopback_users hold for EXTERNAL too
        auth.authenticate("EXTERNAL", b"", users, "10.0.0.9", cert_user="guest")
    assert auth.authenticate("PLAIN", b"\x00guest\x00guest", users, "127.0.0.1", cert_user="alice") == "guest"


def test_server_context_defaults(files: Files) -> None:
    ctx = build_context(TLSFiles(files.cert, files.key))
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.options & ssl.OP_NO_COMPRESSION
    assert ctx.verify_mode == ssl.CERT_NONE
    # "peer" by default with a CA
    assert build_context(TLSFiles(files.cert, files.key, files.ca)).verify_mode == ssl.CERT_OPTIONAL
    assert (
        build_context(TLSFiles(files.cert, files.key, files.ca, "require")).verify_mode == ssl.CERT_REQUIRED
    )
    with pytest.raises(TLSConfigError, match="needs --tls-ca"):
        build_context(TLSFiles(files.cert, files.key, None, "peer"))


def test_key_in_the_certificate_file(files: Files, tmp_path: Path) -> None:
    both = tmp_path / "both.pem"
    both.write_bytes(files.cert.read_bytes() + files.key.read_bytes())
    build_context(TLSFiles(both))


def test_reload_keeps_the_current_context_when_the_files_are_bad(files: Files, ca: trustme.CA) -> None:
    tls = ServerTLS(TLSFiles(files.cert, files.key))
    first = tls.current
    files.key.write_bytes(ca.issue_cert("other").private_key_pem.bytes())  # a key that does not match
    assert tls.reload() is False and tls.current is first
    files.cert.write_bytes(b"".join(p.bytes() for p in ca.issue_cert("other").cert_chain_pems))
    files.key.write_bytes(b"garbage")
    assert tls.reload() is False and tls.current is first
    good = ca.issue_cert("localhost")
    files.cert.write_bytes(b"".join(p.bytes() for p in good.cert_chain_pems))
    files.key.write_bytes(good.private_key_pem.bytes())
    assert tls.reload() is True and tls.current is not first
