"""SASL PLAIN and AMQPLAIN responses, checked against the configured users; EXTERNAL for TLS clients
whose certificate was verified (the user is the certificate's name, see tls.cert_login)."""

from __future__ import annotations

import hmac
import logging

from pamqp import decode

from leveret.errors import ConnectionError_, ReplyCode
from leveret.limits import scan_table

log = logging.getLogger("leveret.auth")

MECHANISMS = "PLAIN AMQPLAIN"


def mechanisms(cert_user: str | None) -> str:
    """connection.start's list: EXTERNAL only where a verified client certificate names a user, so a
    client that picks EXTERNAL whenever offered (py-amqp's default order) never picks it in vain."""
    return MECHANISMS if cert_user is None else MECHANISMS + " EXTERNAL"


def parse_response(mechanism: str, response: bytes) -> tuple[str, str]:
    """(username, password) from a start-ok response; raises 403 on anything malformed."""
    try:
        if mechanism == "PLAIN":
            parts = response.split(b"\x00")
            if len(parts) != 3:
                raise ValueError("PLAIN response must be authzid NUL user NUL password")
            return parts[1].decode("utf-8"), parts[2].decode("utf-8")
        if mechanism == "AMQPLAIN":
            # A field table without its 4-byte length prefix; walked first (iteratively, depth-bounded)
            # because pamqp decodes nested tables recursively.
            framed = len(response).to_bytes(4, "big") + response
            scan_table(framed)
            _, table = decode.field_table(framed)
            login, password = table.get("LOGIN", ""), table.get("PASSWORD", "")
            if isinstance(login, bytes):
                login = login.decode("utf-8")
            if isinstance(password, bytes):
                password = password.decode("utf-8")
            return str(login), str(password)
    except Exception as exc:  # malformed client input
        raise ConnectionError_(ReplyCode.ACCESS_REFUSED, f"{mechanism} login refused: {exc}", 10, 11) from None
    raise ConnectionError_(ReplyCode.ACCESS_REFUSED, f"unsupported authentication mechanism '{mechanism}'", 10, 11)


def is_loopback(host: str) -> bool:
    return host.startswith("127.") or host in ("::1", "localhost") or host.startswith("::ffff:127.")


def _refused(mechanism: str) -> ConnectionError_:
    return ConnectionError_(
        ReplyCode.ACCESS_REFUSED,
        f"Login was refused using authentication mechanism {mechanism}. For details see the broker logfile.",
        10,
        11,
    )


def authenticate(
    mechanism: str,
    response: bytes,
    users: dict[str, str],
    loopback_users: tuple[str, ...],
    peer_host: str,
    cert_user: str | None = None,
) -> str:
    """Returns the user name or raises 403 ACCESS_REFUSED with RabbitMQ's text.

    ``cert_user``: the name from the connection's verified client certificate, the only identity
    EXTERNAL accepts (its response is ignored, as RabbitMQ does); it must be a configured user.
    """
    if mechanism == "EXTERNAL":
        if cert_user is None:
            log.warning("EXTERNAL login refused from %s: connection peer presented no verified TLS (x.509) certificate", peer_host)
            raise _refused(mechanism)
        if cert_user not in users:
            log.warning("EXTERNAL login refused from %s: user '%s' (from the certificate) does not exist", peer_host, cert_user)
            raise _refused(mechanism)
        user = cert_user
    else:
        user, password = parse_response(mechanism, response)
        expected = users.get(user)
        if expected is None or not hmac.compare_digest(expected.encode(), password.encode()):
            raise _refused(mechanism)
    if user in loopback_users and not is_loopback(peer_host):
        raise _refused(mechanism)
    return user
