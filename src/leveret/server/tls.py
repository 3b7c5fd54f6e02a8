"""TLS for the AMQPS and HTTPS listeners: the server SSLContext, its reload, client-certificate logins.

One *listening* context is handed to every TLS listener. Its SNI callback, which OpenSSL runs on every
ClientHello (with or without a server name), moves the handshake onto the *current* context. A reload
builds a whole new context from the files and swaps it in only once it loaded, so a bad file on SIGHUP
leaves the old certificate serving; connections already open keep the certificate they were made with.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("leveret.tls")

VERIFY_MODES = {"none": ssl.CERT_NONE, "peer": ssl.CERT_OPTIONAL, "require": ssl.CERT_REQUIRED}
LOGIN_FROM = ("common_name", "subject_alternative_name")


class TLSConfigError(ValueError):
    """The TLS settings or files cannot make a server context (message names the file and the reason)."""


@dataclass(frozen=True, slots=True)
class TLSFiles:
    cert: Path
    key: Path | None = None  # None: the key is in the certificate file
    ca: Path | None = None
    verify: str | None = None  # None: "peer" with a CA, else "none"

    @property
    def verify_mode(self) -> str:
        return self.verify or ("peer" if self.ca is not None else "none")


def build_context(files: TLSFiles) -> ssl.SSLContext:
    """A server context: TLS 1.2 or later, the ssl module's default (forward-secret AEAD) ciphers, no
    compression; client certificates checked against ``files.ca`` as ``verify`` says.

    Raises TLSConfigError for an unreadable or mismatched file, or ``peer``/``require`` without a CA.
    """
    mode = files.verify_mode
    if mode not in VERIFY_MODES:
        raise TLSConfigError(f"tls verify must be one of {', '.join(VERIFY_MODES)}, not {mode!r}")
    if mode != "none" and files.ca is None:
        raise TLSConfigError(f"--tls-verify {mode} needs --tls-ca (the CA that signs client certificates)")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE  # CRIME; our cipher order wins
    try:
        ctx.load_cert_chain(files.cert, files.key)
    except (OSError, ssl.SSLError) as exc:
        key = f" with key {files.key}" if files.key is not None else ""
        raise TLSConfigError(f"cannot load certificate {files.cert}{key}: {_reason(exc)}") from None
    if files.ca is not None:
        try:
            ctx.load_verify_locations(cafile=files.ca)
        except (OSError, ssl.SSLError) as exc:
            raise TLSConfigError(f"cannot load CA certificates {files.ca}: {_reason(exc)}") from None
    ctx.verify_mode = VERIFY_MODES[mode]
    return ctx


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        # OpenSSL's text ("PEM lib", "key values mismatch") says little; name the usual causes.
        return f"{exc.reason or exc.args[-1]} (not PEM, or the key does not belong to the certificate?)"
    return getattr(exc, "strerror", None) or str(exc)


class ServerTLS:
    """The context TLS listeners are made with, and the current certificate behind it."""

    def __init__(self, files: TLSFiles) -> None:
        self.files = files
        self.current = build_context(files)  # raises TLSConfigError: the broker does not start
        self.listening = build_context(files)
        self.listening.sni_callback = self._pick

    def _pick(self, ssl_object: Any, server_name: str | None, _ctx: ssl.SSLContext) -> None:
        ssl_object.context = self.current  # this handshake, and only it, uses the newest certificate
        return None

    def reload(self) -> bool:
        """Re-read the files; True if the new context is in use, False (old one kept, error logged) if not."""
        try:
            ctx = build_context(self.files)
        except TLSConfigError as exc:
            log.error("TLS certificates not reloaded, the previous ones stay in use: %s", exc)
            return False
        self.current = ctx
        log.info("TLS certificates reloaded from %s; new connections use them", self.files.cert)
        return True


def peer_certificate(transport: Any) -> dict[str, Any] | None:
    """The client certificate a TLS transport verified against the CA, or None (plain TCP, none sent,
    or verification off: then ``getpeercert()`` is empty)."""
    if transport.get_extra_info("ssl_object") is None:
        return None
    cert = transport.get_extra_info("peercert")
    return cert or None


def cert_login(cert: dict[str, Any] | None, login_from: str = "common_name") -> str | None:
    """The user name a verified certificate logs in as with EXTERNAL (rabbitmq_auth_mechanism_ssl):
    the subject's CN (several CNs joined with ","), or the first DNS subject alternative name."""
    if not cert:
        return None
    if login_from == "subject_alternative_name":
        names = [value for kind, value in cert.get("subjectAltName", ()) if kind == "DNS"]
        return names[0] if names else None
    cns = [value for rdn in cert.get("subject", ()) for key, value in rdn if key == "commonName"]
    return ",".join(cns) if cns else None
