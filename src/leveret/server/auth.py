"""SASL PLAIN and AMQPLAIN responses, checked against the broker's users (model.access); EXTERNAL for TLS clients
whose certificate was verified (the user is the certificate's name, see tls.cert_login)."""

from __future__ import annotations

import logging

from pamqp import decode

from leveret.errors import ConnectionError_, ReplyCode
from leveret.limits import scan_table
from leveret.model.access import AccessControl, LoginRefused

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
        log.warning("login refused: malformed %s response (%s)", mechanism, type(exc).__name__)
        raise ConnectionError_(ReplyCode.ACCESS_REFUSED, f"{mechanism} login refused: {exc}", 10, 11) from None
    raise ConnectionError_(ReplyCode.ACCESS_REFUSED, f"unsupported authentication mechanism '{mechanism}'", 10, 11)


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
    access: AccessControl,
    peer_host: str,
    cert_user: str | None = None,
    connection: str = "",
) -> str:
    """Returns the user name or raises 403 ACCESS_REFUSED with RabbitMQ's text; the reason (never
    the password) goes to the log, as RabbitMQ's "PLAIN login refused: user 'x' - invalid credentials".

    ``cert_user``: the name from the connection's verified client certificate, the only identity
    EXTERNAL accepts (its response is ignored, as RabbitMQ does); it must be an existing user.
    ``connection``: the connection's name, for the log line's fields.
    """
    user = cert_user or ""
    try:
        if mechanism == "EXTERNAL":
            if cert_user is None:
                raise LoginRefused("connection peer presented no verified TLS (x.509) certificate")
            if cert_user not in access.users:
                raise LoginRefused(f"user '{cert_user}' (from the certificate) does not exist")
            access.check_loopback(cert_user, peer_host)
            return cert_user
        user, password = parse_response(mechanism, response)
        access.authenticate(user, password, peer_host)
        return user
    except LoginRefused as exc:
        log.warning(
            "login refused from %s: %s login refused: %s", peer_host, mechanism, exc.reason,
            extra={"connection": connection, "user": user, "peer": peer_host, "reason": exc.reason},
        )  # fmt: skip
        raise _refused(mechanism) from None
