"""Exchanges, bindings, publish, queue actions and health checks of the management HTTP API, with
RabbitMQ 3.10's paths, bodies, status codes and JSON shapes (rabbit_mgmt_wm_exchange*,
rabbit_mgmt_wm_binding(s), rabbit_mgmt_wm_exchange_publish, rabbit_mgmt_wm_queue_actions,
rabbit_mgmt_wm_health_check_*, rabbit_mgmt_wm_aliveness_test).

Every operation runs as the HTTP user (``user=`` to the backend), so the model checks that user's
permissions; ``amq.default`` in a path is the default exchange ``""``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import ssl
import struct
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, unquote

from aiohttp import web
from pamqp import encode as pamqp_encode

from leveret.errors import AMQPError, ReplyCode
from leveret.management import shapes
from leveret.management.authz import current_user, not_authorised
from leveret.management.backend import Backend
from leveret.management.decode import flag, not_found, parse_bool, path_vhost, vhost_not_found, with_decode
from leveret.management.guards import bad_request
from leveret.model.snapshots import BindingSnapshot

JSON = dict[str, Any]
BACKEND: web.AppKey[Backend] = web.AppKey("objects_api_backend", Backend)

NOT_FOUND = AMQPError(ReplyCode.NOT_FOUND, "not found")
PUBLISH_NACKED = "Unable to publish message. Check queue limits."

# basic properties in flag-bit order (bit 15 first): (JSON key, wire kind)
_PROPERTIES = (
    ("content_type", "s"), ("content_encoding", "s"), ("headers", "t"), ("delivery_mode", "o"),
    ("priority", "o"), ("correlation_id", "s"), ("reply_to", "s"), ("expiration", "s"), ("message_id", "s"),
    ("timestamp", "q"), ("type", "s"), ("user_id", "s"), ("app_id", "s"), ("cluster_id", "s"),
)  # fmt: skip

_UNIT_SECONDS = {"days": 86400, "weeks": 7 * 86400, "months": 30 * 86400, "years": 365 * 86400}

# rabbit_mgmt_wm_health_check_protocol_listener:normalize_protocol
_PROTOCOLS = {
    "amqp": "amqp", "amqp091": "amqp", "amqp0-9-1": "amqp", "amqp0.9.1": "amqp", "amqp0_9_1": "amqp",
    "amqps": "amqp/ssl", "amqp/ssl": "amqp/ssl", "amqp091/ssl": "amqp/ssl",
    "http": "http", "management": "http", "https": "https", "management/ssl": "https",
    "prometheus": "http/prometheus", "http/prometheus": "http/prometheus",
}  # fmt: skip


def register(app: web.Application, backend: Backend) -> None:
    """Add the routes to ``app`` (before it starts); they act on ``backend``."""
    app[BACKEND] = backend
    r = app.router
    r.add_get("/api/aliveness-test/{vhost}", aliveness)
    r.add_put("/api/exchanges/{vhost}/{name}", put_exchange)
    r.add_delete("/api/exchanges/{vhost}/{name}", delete_exchange)
    r.add_get("/api/exchanges/{vhost}/{name}/bindings/source", exchange_bindings_source)
    r.add_get("/api/exchanges/{vhost}/{name}/bindings/destination", exchange_bindings_destination)
    r.add_post("/api/exchanges/{vhost}/{name}/publish", publish)
    for kind in ("q", "e"):
        r.add_get(f"/api/bindings/{{vhost}}/e/{{source}}/{kind}/{{dest}}", list_between)
        r.add_post(f"/api/bindings/{{vhost}}/e/{{source}}/{kind}/{{dest}}", post_binding)
        r.add_get(f"/api/bindings/{{vhost}}/e/{{source}}/{kind}/{{dest}}/{{props}}", get_binding)
        r.add_delete(f"/api/bindings/{{vhost}}/e/{{source}}/{kind}/{{dest}}/{{props}}", delete_binding)
    checks = "/api/health/checks"
    r.add_get(f"{checks}/alarms", alarms)
    r.add_get(f"{checks}/local-alarms", local_alarms)
    r.add_get(f"{checks}/certificate-expiration/{{within}}/{{unit}}", certificate_expiration)
    r.add_get(f"{checks}/port-listener/{{port}}", port_listener)
    r.add_get(f"{checks}/protocol-listener/{{protocol}}", protocol_listener)
    r.add_get(f"{checks}/virtual-hosts", virtual_hosts)
    r.add_get(f"{checks}/node-is-mirror-sync-critical", single_node)
    r.add_get(f"{checks}/node-is-quorum-critical", single_node)


# ---- helpers ------------------------------------------------------------------------
def _b(request: web.Request) -> Backend:
    return request.app[BACKEND]


def _vhost(request: web.Request) -> str:
    return path_vhost(request, _b(request).vhosts())


async def _declaring(request: web.Request, *keys: str) -> tuple[str, JSON]:
    """(vhost, body) of a declare: the body first, then 404 ``vhost_not_found`` (the declare's own
    check, RabbitMQ's order), then the caller's access to the vhost."""
    body = await with_decode(request, *keys)
    if request.match_info["vhost"] not in _b(request).vhosts():
        raise vhost_not_found()
    return _vhost(request), body


def _user(request: web.Request) -> str:
    return current_user(request).name


def _x(name: str) -> str:
    return "" if name == "amq.default" else name


def _exchange_exists(b: Backend, vhost: str, name: str) -> bool:
    return any(x.name == name for x in b.exchanges(vhost))


def _require_exchange(b: Backend, vhost: str, name: str) -> None:
    if not _exchange_exists(b, vhost, name):
        raise NOT_FOUND


def _arguments(body: JSON) -> dict[str, Any]:
    arguments = body.get("arguments") or {}
    if not isinstance(arguments, dict):
        raise bad_request("arguments must be a JSON object")
    return arguments


@contextlib.contextmanager
def _direct() -> Iterator[None]:
    """rabbit_mgmt_util:direct_request, which declares and deletes exchanges and bindings through
    rabbit_channel: a 403 or 530 becomes 401 ``Access refused.``, a 404 stays 404, any other AMQP
    error is 400 with the bare explanation (no ``CODE - `` prefix)."""
    try:
        yield
    except AMQPError as e:
        if e.code in (ReplyCode.ACCESS_REFUSED, ReplyCode.NOT_ALLOWED):
            raise not_authorised("Access refused.") from None
        if e.code == ReplyCode.NOT_FOUND:
            raise
        raise bad_request(e.detail) from None


# ---- exchanges ----------------------------------------------------------------------
async def put_exchange(request: web.Request) -> web.Response:
    b = _b(request)
    vhost, body = await _declaring(request)
    name = _x(request.match_info["name"])
    type_ = body.get("type", "direct")  # exchange.declare's default type
    if not isinstance(type_, str):
        raise bad_request("type must be a string")
    durable, auto_delete = parse_bool(body, "durable", False), parse_bool(body, "auto_delete", False)
    internal = parse_bool(body, "internal", False)
    if type_ not in b.node_info().exchange_types and not name.startswith("amq."):
        raise bad_request(f"invalid exchange type '{type_}'")  # rabbit_mgmt_wm_exchange's check
    existed = _exchange_exists(b, vhost, name)
    with _direct():
        b.declare_exchange(
            vhost, name, type_, durable, auto_delete, internal, _arguments(body), user=_user(request),
        )  # fmt: skip
    return web.Response(status=204 if existed else 201)


async def delete_exchange(request: web.Request) -> web.Response:
    b = _b(request)
    vhost, name = _vhost(request), _x(request.match_info["name"])
    _require_exchange(b, vhost, name)
    with _direct():
        b.delete_exchange(vhost, name, flag(request, "if-unused"), user=_user(request))
    return web.Response(status=204)


async def _exchange_bindings(request: web.Request, as_source: bool) -> web.Response:
    """An exchange's bindings; ``[]`` for a missing exchange or vhost, as RabbitMQ answers."""
    b = _b(request)
    if request.match_info["vhost"] not in b.vhosts():
        return web.json_response([])
    vhost, name = _vhost(request), _x(request.match_info["name"])
    if as_source:
        found = [x for x in b.bindings(vhost) if x.source == name]
    else:
        found = [x for x in b.bindings(vhost) if x.destination == name and x.destination_type == "exchange"]
    return web.json_response([shapes.binding_json(x) for x in found])


async def exchange_bindings_source(request: web.Request) -> web.Response:
    return await _exchange_bindings(request, True)


async def exchange_bindings_destination(request: web.Request) -> web.Response:
    return await _exchange_bindings(request, False)


# ---- publish ------------------------------------------------------------------------
def basic_properties(props: Any) -> bytes:
    """RabbitMQ's ``to_basic_properties`` (underscore keys; unknown keys ignored), encoded as the
    property section of a content header. Wrong types raise 400 ``["not_int", K]`` / ``["not_string", K]``."""
    if not isinstance(props, dict):
        raise bad_request("properties must be a JSON object")
    flags = 0
    out = bytearray()
    for i, (key, kind) in enumerate(_PROPERTIES):
        if key not in props:
            continue
        v = props[key]
        if kind in ("o", "q"):
            if not isinstance(v, int) or isinstance(v, bool):
                raise bad_request(["not_int", key])
            limit = 0xFF if kind == "o" else 0xFFFFFFFFFFFFFFFF
            if not 0 <= v <= limit:
                raise bad_request(["not_int", key])
            out += bytes((v,)) if kind == "o" else struct.pack(">Q", v)
        elif kind == "t":
            if not isinstance(v, dict):
                raise bad_request(["not_table", key])  # RabbitMQ: 500 (a crash)
            try:
                out += pamqp_encode.field_table(v)
            except (TypeError, ValueError) as e:
                raise bad_request(f"headers cannot be encoded: {e}") from None
        else:
            if not isinstance(v, str):
                raise bad_request(["not_string", key])
            raw = v.encode("utf-8")
            if len(raw) > 255:
                raise bad_request(f"{key} is longer than 255 bytes")
            out += bytes((len(raw),)) + raw
        flags |= 1 << (15 - i)
    return struct.pack(">H", flags) + bytes(out)


async def publish(request: web.Request) -> web.Response:
    b = _b(request)
    vhost, exchange = _vhost(request), _x(request.match_info["name"])
    body = await with_decode(request, "routing_key", "properties", "payload", "payload_encoding")
    routing_key, payload, encoding = body["routing_key"], body["payload"], body["payload_encoding"]
    if not isinstance(routing_key, str) or not isinstance(payload, str):
        raise bad_request("routing_key and payload must be strings")
    if encoding == "string":
        data = payload.encode("utf-8")
    elif encoding == "base64":
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise bad_request(["not_base64", payload]) from None
    else:
        raise bad_request(["unsupported_encoding", encoding])
    props = body["properties"] or {}
    properties = basic_properties(props)
    if not _exchange_exists(b, vhost, exchange):  # the channel's 404, as "<code> <text>"
        raise bad_request(f"404 NOT_FOUND - no exchange '{exchange}' in vhost '{vhost}'")
    try:
        routed, refused = b.publish(
            vhost, exchange, routing_key, properties, data, persistent=props.get("delivery_mode") == 2,
            user=_user(request),
        )  # fmt: skip
    except AMQPError as e:
        if e.code == ReplyCode.NOT_FOUND or (
            e.code == ReplyCode.ACCESS_REFUSED and e.detail.startswith("access to")
        ):
            raise
        raise bad_request(f"{int(e.code)} {e.text}") from None  # the channel's close, as "<code> <text>"
    if refused:
        raise bad_request(PUBLISH_NACKED)
    return web.json_response({"routed": routed})


# ---- bindings -----------------------------------------------------------------------
def _ends(request: web.Request, check: bool = True) -> tuple[str, str, str, str]:
    """(vhost, source, destination, destination_type); with ``check``, both ends must exist (404
    ``not_found`` naming the first missing one, as binding creation answers)."""
    b = _b(request)
    vhost = _vhost(request)
    source, dest = _x(request.match_info["source"]), request.match_info["dest"]
    kind = "queue" if request.rel_url.raw_parts[6] == "q" else "exchange"  # /api/bindings/{vhost}/e/{s}/q/
    if not check:
        return vhost, source, dest, kind
    if not _exchange_exists(b, vhost, source):
        raise not_found(f"no exchange '{source}' in vhost '{vhost}'")
    if kind == "queue":
        if (vhost, dest) not in b.queue_keys(vhost):
            raise not_found(f"no queue '{dest}' in vhost '{vhost}'")
    elif not _exchange_exists(b, vhost, dest):
        raise not_found(f"no exchange '{dest}' in vhost '{vhost}'")
    return vhost, source, dest, kind


def _between(request: web.Request, vhost: str, source: str, dest: str, kind: str) -> list[BindingSnapshot]:
    return [
        x for x in _b(request).bindings(vhost)
        if x.source == source and x.destination == dest and x.destination_type == kind
    ]  # fmt: skip


def _props_match(x: BindingSnapshot, props: str) -> bool:
    key = shapes.properties_key(x.routing_key, x.arguments)
    return key == props or unquote(key) == props


async def list_between(request: web.Request) -> web.Response:
    """The bindings between two objects: ``[]`` when either does not exist (RabbitMQ's)."""
    vhost, source, dest, kind = _ends(request, check=False)
    return web.json_response([shapes.binding_json(x) for x in _between(request, vhost, source, dest, kind)])


async def post_binding(request: web.Request) -> web.Response:
    body = await with_decode(request)
    if request.match_info["vhost"] not in _b(request).vhosts():
        raise vhost_not_found()
    vhost, source, dest, kind = _ends(request)
    routing_key = body.get("routing_key", "")
    if not isinstance(routing_key, str):  # RabbitMQ answers 201 and binds nothing
        raise bad_request("routing_key must be a string")
    arguments = _arguments(body)
    with _direct():
        _b(request).bind(vhost, source, dest, kind, routing_key, arguments, user=_user(request))
    # rabbit_mgmt_wm_bindings: Location relative to the request path, so "<dest>/<properties_key>"
    location = f"{quote(dest, safe='')}/{quote(shapes.properties_key(routing_key, arguments), safe='')}"
    return web.Response(status=201, headers={"Location": location})


def _one(request: web.Request) -> tuple[str, BindingSnapshot]:
    vhost, source, dest, kind = _ends(request, check=False)
    props = request.match_info["props"]
    for x in _between(request, vhost, source, dest, kind):
        if _props_match(x, props):
            return vhost, x
    raise NOT_FOUND


async def get_binding(request: web.Request) -> web.Response:
    _, x = _one(request)
    return web.json_response(shapes.binding_json(x))


async def delete_binding(request: web.Request) -> web.Response:
    vhost, x = _one(request)
    _b(request).unbind(
        vhost,
        x.source,
        x.destination,
        x.destination_type,
        x.routing_key,
        dict(x.arguments),
        user=_user(request),
    )
    return web.Response(status=204)


# ---- health checks ------------------------------------------------------------------
def _failed(reason: str, **extra: Any) -> web.Response:
    return web.json_response({"status": "failed", "reason": reason, **extra}, status=503)


def _ok(**extra: Any) -> web.Response:
    return web.json_response({"status": "ok", **extra})


def _alarms(request: web.Request, reason: str) -> web.Response:
    info = _b(request).node_info()
    if info.alarms:
        return _failed(reason, alarms=[{"resource": a, "node": info.node} for a in info.alarms])
    return _ok()


async def alarms(request: web.Request) -> web.Response:
    return _alarms(request, "There are alarms in effect in the cluster")


async def local_alarms(request: web.Request) -> web.Response:
    return _alarms(request, "There are alarms in effect on the node")


def cert_not_after(path: str) -> float:
    """The certificate's notAfter as unix seconds (the stdlib's own PEM decoder)."""
    decoded = ssl._ssl._test_decode_cert(path)  # type: ignore[attr-defined]
    return float(ssl.cert_time_to_seconds(decoded["notAfter"]))


async def certificate_expiration(request: web.Request) -> web.Response:
    within, unit = request.match_info["within"], request.match_info["unit"]
    if unit not in _UNIT_SECONDS:
        raise bad_request("Time unit not recognised. Supported units: days, weeks, months, years.")
    try:
        seconds = int(within) * _UNIT_SECONDS[unit]
    except ValueError:
        raise bad_request("Invalid expiration value.") from None
    info = _b(request).node_info()
    if not info.tls_cert:
        return _ok()
    not_after = cert_not_after(info.tls_cert)
    if not_after <= time.time() + seconds:
        expired = [
            {"node": info.node, "protocol": x["protocol"], "port": x["port"], "certfile": info.tls_cert,
             "expired": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(not_after))}
            for x in info.listeners if x["protocol"] in ("amqp/ssl", "https")
        ]  # fmt: skip
        return _failed("Certificates expiring", expired=expired)
    return _ok()


async def port_listener(request: web.Request) -> web.Response:
    try:
        port = int(request.match_info["port"])
    except ValueError:
        raise bad_request("Invalid port") from None
    ports = [int(x["port"]) for x in _b(request).node_info().listeners]
    if port in ports:
        return _ok(port=port)
    return _failed("No active listener", missing=port, ports=ports)


async def protocol_listener(request: web.Request) -> web.Response:
    asked = request.match_info["protocol"]
    protocol = _PROTOCOLS.get(asked.lower(), asked)
    protocols = sorted({str(x["protocol"]) for x in _b(request).node_info().listeners})
    if protocol in protocols:
        return _ok(protocol=protocol)
    return _failed("No active listener", missing=protocol, protocols=protocols)


async def virtual_hosts(request: web.Request) -> web.Response:
    return _ok()  # every vhost of a running Leveret node is up


async def single_node(request: web.Request) -> web.Response:
    return _ok(reason="single node cluster")


# ---- aliveness ----------------------------------------------------------------------
ALIVENESS_QUEUE = "aliveness-test"


async def aliveness(request: web.Request) -> web.Response:
    """rabbit_mgmt_wm_aliveness_test (3.10): as the caller, declare ``aliveness-test`` (non-durable,
    left behind), publish ``test_message`` to it through the default exchange, get it with no ack."""
    b = _b(request)
    vhost, user = _vhost(request), _user(request)
    b.declare_queue(vhost, ALIVENESS_QUEUE, False, False, {}, user=user)
    b.publish(vhost, "", ALIVENESS_QUEUE, b"\x00\x00", b"test_message", user=user)
    got = b.get_messages(vhost, ALIVENESS_QUEUE, 1, False, user=user)
    if not got:
        return _failed("aliveness-test queue is empty")
    return _ok()
