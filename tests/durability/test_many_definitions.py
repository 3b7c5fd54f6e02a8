"""A node with thousands of users, permissions, policies and queues (imported from a definitions file)
restarts with all of them, and the policies still apply: nothing in the store's definitions table, nor
re-applying policies at start, is linear in one and quadratic in another."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pika

from leveret.model.access import hash_password
from tests.helpers import ProcessBroker
from tests.http_client import http_request

N_USERS, N_POLICIES, N_QUEUES = 2000, 300, 1000
AUTH = ("guest", "guest")


def definitions() -> dict[str, Any]:
    h = hash_password("pw")
    users = [{"name": f"user{i}", "password_hash": h, "hashing_algorithm": "rabbit_password_hashing_sha256",
              "tags": [], "limits": {"max-connections": 5} if i % 2 else {}} for i in range(N_USERS)]  # fmt: skip
    users.append({"name": "guest", "password_hash": hash_password("guest"),
                  "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ["administrator"], "limits": {}})  # fmt: skip
    return {
        "users": users,
        "vhosts": [{"name": "/"}],
        "permissions": [{"user": u["name"], "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}
                        for u in users],  # fmt: skip
        "policies": [{"vhost": "/", "name": f"p{i}", "pattern": f"^q{i}-", "apply-to": "queues",
                      "definition": {"max-length": 2}, "priority": 0} for i in range(N_POLICIES)],  # fmt: skip
        "queues": [{"name": f"q{i % N_POLICIES}-{i}", "vhost": "/", "durable": True, "auto_delete": False,
                    "arguments": {}} for i in range(N_QUEUES)],  # fmt: skip
        "exchanges": [],
        "bindings": [],
    }


def test_thousands_of_definitions_survive_a_restart(tmp_path: Path) -> None:
    b = ProcessBroker(tmp_path).start()
    try:
        status, body, _ = http_request(f"http://127.0.0.1:{b.http_port}/api/definitions", "POST", definitions(), AUTH)
        assert status == 204, body
    finally:
        b.terminate()
    b = ProcessBroker(tmp_path).start(timeout=60)
    try:
        status, got, _ = http_request(f"http://127.0.0.1:{b.http_port}/api/definitions", "GET", None, AUTH)
        assert status == 200
        assert (len(got["users"]), len(got["permissions"]), len(got["policies"]), len(got["queues"])) == (
            N_USERS + 1, N_USERS + 1, N_POLICIES, N_QUEUES
        )
        status, q, _ = http_request(f"http://127.0.0.1:{b.http_port}/api/queues/%2F/q7-7", "GET", None, AUTH)
        assert q["policy"] == "p7"
        conn = pika.BlockingConnection(pika.ConnectionParameters(
            "127.0.0.1", b.port, "/", pika.PlainCredentials("user1999", "pw"), connection_attempts=1))  # fmt: skip
        ch = conn.channel()
        ch.confirm_delivery()
        for n in range(4):
            ch.basic_publish("", "q7-7", str(n).encode())
        assert ch.queue_declare("q7-7", passive=True).method.message_count == 2  # the policy's max-length
        conn.close()
    finally:
        b.terminate()
