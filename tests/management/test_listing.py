"""RabbitMQ's list parameters on /api/queues, /api/exchanges, /api/connections, /api/channels:
pagination, name filters (plain and regex, with a time budget), sort and columns; real HTTP over
a FakeBackend."""

from __future__ import annotations

import pytest

from leveret.management import listing

from .conftest import Served


@pytest.fixture
def many(api: Served) -> Served:
    b = api.backend
    b.qs.clear()
    for i in range(7):
        b.add_queue("/", f"Job-{i}", ready=i)
    b.add_queue("other", "Job-x", ready=100)
    return api


def test_paged_reply_shape_and_counts(many: Served) -> None:
    status, body, _ = many.request("GET", "/api/queues?page=2&page_size=3")
    assert status == 200
    assert {k: v for k, v in body.items() if k != "items"} == {
        "total_count": 8, "item_count": 3, "filtered_count": 8, "page": 2, "page_size": 3, "page_count": 3,
    }  # fmt: skip
    # default order is (vhost, name), as RabbitMQ's
    assert [(q["vhost"], q["name"]) for q in body["items"]] == [("/", "Job-3"), ("/", "Job-4"), ("/", "Job-5")]
    _, body, _ = many.request("GET", "/api/queues?page=3&page_size=3")
    assert [q["name"] for q in body["items"]] == ["Job-6", "Job-x"] and body["item_count"] == 2


def test_page_size_defaults_to_100_and_is_ignored_without_page(many: Served) -> None:
    _, body, _ = many.request("GET", "/api/queues?page=1")
    assert body["page_size"] == 100 and body["page_count"] == 1
    _, body, _ = many.request("GET", "/api/queues?page_size=2")
    assert isinstance(body, list) and len(body) == 8


@pytest.mark.parametrize(
    ("query", "error", "reason"),
    [
        ("page=abc", "bad_request", "Pagination parameters are invalid"),
        ("page=1.5", "bad_request", "Pagination parameters are invalid"),
        ("page_size=x", "bad_request", "Pagination parameters are invalid"),
        ("page=0", "invalid_pagination_parameters", "Invalid pagination parameters: page number 0, page size undefined"),
        ("page=1&page_size=0", "invalid_pagination_parameters",
         "Invalid pagination parameters: page number 1, page size 0"),
        ("page=1&page_size=501", "invalid_pagination_parameters",
         "Invalid pagination parameters: page number 1, page size 501"),
        ("page=-2&page_size=5", "invalid_pagination_parameters",
         "Invalid pagination parameters: page number -2, page size 5"),
        ("page=5&page_size=3", "page_out_of_range", "Page out of range, page: 5 page size: 3, len: 8"),
    ],
)  # fmt: skip
def test_pagination_errors_are_rabbitmqs(many: Served, query: str, error: str, reason: str) -> None:
    for path in ("/api/queues", "/api/exchanges", "/api/connections", "/api/channels"):
        if error == "page_out_of_range" and path != "/api/queues":
            continue
        status, body, _ = many.request("GET", f"{path}?{query}")
        assert (status, body) == (400, {"error": error, "reason": reason}), path


def test_page_just_past_a_full_last_page_is_empty_not_an_error(many: Served) -> None:
    # lists:sublist accepts an offset of len + 1
    status, body, _ = many.request("GET", "/api/queues?page=3&page_size=4")
    assert status == 200 and body["items"] == [] and body["page_count"] == 2
    status, body, _ = many.request("GET", "/api/queues?page=1&name=nothing-matches")
    assert status == 200 and body["filtered_count"] == 0 and body["page_count"] == 0


def test_name_filter_is_caseless_substring_or_caseless_regex(many: Served) -> None:
    _, body, _ = many.request("GET", "/api/queues?page=1&name=job-")
    assert body["filtered_count"] == 8 and body["total_count"] == 8
    _, body, _ = many.request("GET", "/api/queues?page=1&name=%5Ejob-%5B0-2%5D%24&use_regex=true")
    assert [q["name"] for q in body["items"]] == ["Job-0", "Job-1", "Job-2"] and body["filtered_count"] == 3
    status, body, _ = many.request("GET", "/api/queues?page=1&name=(&use_regex=true")
    assert status == 400 and body["error"] == "bad_request" and "regular expression" in body["reason"]


def test_regex_over_budget_is_400(many: Served) -> None:
    many.backend.add_queue("/", "x" * 250)
    status, body, _ = many.request("GET", "/api/queues?name=(x%2Bx%2B)%2By&use_regex=true")
    assert status == 400 and body["error"] == "bad_request"
    assert f"{int(listing.REGEX_BUDGET * 1000)} ms" in body["reason"]


def test_sort_reverse_and_columns(many: Served) -> None:
    _, body, _ = many.request("GET", "/api/queues?page=1&page_size=2&sort=messages_ready&sort_reverse=true"
                                     "&columns=name,messages_ready")  # fmt: skip
    assert body["items"] == [{"name": "Job-x", "messages_ready": 100}, {"name": "Job-6", "messages_ready": 6}]
    _, body, _ = many.request("GET", "/api/queues?sort_reverse=true&columns=name")
    assert [q["name"] for q in body][:2] == ["Job-x", "Job-6"]
    # an empty sort keeps the backend's order (leveretctl relies on it, like rabbitmqctl's)
    many.backend.add_queue("/", "A-last")
    _, body, _ = many.request("GET", "/api/queues?sort=&columns=name")
    assert body[-1] == {"name": "A-last"}


def test_unpaged_listing_streams_every_item(api: Served) -> None:
    for i in range(3 * listing.SLICE + 7):
        api.backend.add_queue("/", f"bulk-{i:05d}")
    status, body, headers = api.request("GET", "/api/queues?columns=name")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    assert [q["name"] for q in body if q["name"].startswith("bulk-")] == [
        f"bulk-{i:05d}" for i in range(3 * listing.SLICE + 7)
    ]
    api.backend.qs.clear()
    status, body, _ = api.request("GET", "/api/queues")
    assert (status, body) == (200, [])


@pytest.mark.parametrize(
    "path",
    ["name", "vhost", "messages", "messages_ready", "messages_unacknowledged", "consumers",
     "message_stats.publish_details.rate", "message_stats.ack_details.rate", "arguments.x-max-length", "type"],
)  # fmt: skip
def test_sorts_answered_from_counters_match_the_rendered_values(many: Served, path: str) -> None:
    many.backend.load_rate = 3.0  # counters grow, so rates differ from zero
    many.backend.qs[("/", "Job-3")].unacked = [b"x"] * 4
    many.backend.qs[("/", "Job-5")].consumers = 2
    many.backend.qs[("/", "Job-2")].arguments = {"x-max-length": 9}
    _, items, _ = many.request("GET", f"/api/queues?sort={path}")
    values = [listing.sort_key(listing.dotted(q, path)) for q in items]
    assert values == sorted(values), path
    _, page, _ = many.request("GET", f"/api/queues?page=1&page_size=3&sort={path}&sort_reverse=true")
    assert [q["name"] for q in page["items"]] == [q["name"] for q in reversed(items)][:3]


def test_binding_lists_stream_a_slice_at_a_time(api: Served) -> None:
    """Bindings are not paginated (as in RabbitMQ) but can be as many as queues: they are sent in
    slices (a chunked body, no Content-Length), in the backend's order, every one of them."""
    n = 3 * listing.SLICE + 7
    for i in range(n):
        api.backend.add_queue("/", f"b-{i:05d}")  # each gets its default-exchange binding
    for path in ("/api/bindings", "/api/bindings/%2F"):
        status, body, headers = api.request("GET", path)
        assert status == 200 and "Content-Length" not in headers, headers
        assert [b["destination"] for b in body if b["destination"].startswith("b-")] == [
            f"b-{i:05d}" for i in range(n)
        ]
    status, body, headers = api.request("GET", "/api/queues/%2F/b-00003/bindings")
    assert status == 200 and [b["destination"] for b in body] == ["b-00003"]
    status, body, headers = api.request("GET", "/api/consumers")
    assert status == 200 and isinstance(body, list) and "Content-Length" not in headers
