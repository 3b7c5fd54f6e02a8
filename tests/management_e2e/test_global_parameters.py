"""Global runtime parameters (``/api/global-parameters``) are kept in the data directory, as RabbitMQ
keeps them: a value set over HTTP, a cleared one and the node's ``internal_cluster_id`` are the same
after a restart. (Their shapes and texts are compared with RabbitMQ 3.10 in test_vs_rabbitmq.py.)"""

from __future__ import annotations

from pathlib import Path

from tests.security.test_access_api import make_api


def test_global_parameters_survive_a_restart(tmp_path: Path) -> None:
    nested = {"a": [1, 2.5, None, True, "é"], "b": {"c": -(10**30)}}
    a = make_api(storage="sqlite", data_dir=tmp_path)
    try:
        first = {p["name"]: p["value"] for p in a.get("/api/global-parameters")}
        assert first["internal_cluster_id"].startswith("leveret-cluster-id-")
        a.ok("PUT", "/api/global-parameters/kept", {"value": nested}, 201)
        a.ok("PUT", "/api/global-parameters/gone", {"value": "x"}, 201)
        a.ok("PUT", "/api/global-parameters/gone", {"value": "y"}, 204)
        a.ok("DELETE", "/api/global-parameters/gone")
    finally:
        a.broker.stop()
    a = make_api(storage="sqlite", data_dir=tmp_path)
    try:
        again = {p["name"]: p["value"] for p in a.get("/api/global-parameters")}
        assert again == {"internal_cluster_id": first["internal_cluster_id"], "kept": nested}
        assert a.request("GET", "/api/global-parameters/gone")[0] == 404
        assert a.request("DELETE", "/api/global-parameters/gone")[0] == 404
    finally:
        a.broker.stop()


def test_global_parameters_travel_in_definitions_but_the_node_identity_does_not() -> None:
    a, b = make_api(), make_api()
    try:
        a.ok("PUT", "/api/global-parameters/feature-flags", {"value": {"x": [1, 2]}}, 201)
        doc = a.get("/api/definitions")
        by_name = {g["name"]: g["value"] for g in doc["global_parameters"]}
        assert by_name["feature-flags"] == {"x": [1, 2]} and "cluster_name" in by_name
        assert "internal_cluster_id" not in by_name
        doc["global_parameters"].append({"name": "internal_cluster_id", "value": "rabbitmq-cluster-id-other"})
        b_id = {g["name"]: g["value"] for g in b.get("/api/global-parameters")}["internal_cluster_id"]
        status, _ = b.request("POST", "/api/definitions", doc)
        assert status in (201, 204)
        after = {g["name"]: g["value"] for g in b.get("/api/global-parameters")}
        assert after == {"internal_cluster_id": b_id, "feature-flags": {"x": [1, 2]}}
        # a global parameter without a value is refused, naming it, and nothing of the file is applied
        bad = {"global_parameters": [{"name": "broken"}], "vhosts": [{"name": "not-made"}]}
        status, reply = b.request("POST", "/api/definitions", bad)
        assert status == 400 and "global parameter 'broken'" in reply["reason"]
        assert "not-made" not in [v["name"] for v in b.get("/api/vhosts")]
    finally:
        a.broker.stop()
        b.broker.stop()


def test_many_and_large_global_parameters_from_a_definitions_file_survive_a_restart(tmp_path: Path) -> None:
    many = [{"name": f"p{i}", "value": {"i": i, "pad": "x" * 100}} for i in range(2_000)]
    many.append({"name": "n" * 10_000, "value": "v" * 1_000_000})  # valid, extreme: kept as is
    a = make_api(storage="sqlite", data_dir=tmp_path)
    try:
        status, _ = a.request("POST", "/api/definitions", {"global_parameters": many})
        assert status in (201, 204)
    finally:
        a.broker.stop()
    a = make_api(storage="sqlite", data_dir=tmp_path)
    try:
        got = {g["name"]: g["value"] for g in a.get("/api/global-parameters")}
        assert {g["name"]: g["value"] for g in many}.items() <= got.items() and len(got) == len(many) + 1
    finally:
        a.broker.stop()
