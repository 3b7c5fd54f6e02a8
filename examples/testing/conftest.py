"""The broker the example suites run on: Leveret's fixture, or a standalone broker given by URL.

By default every test gets ``leveret_url`` (the pytest plugin's: one embedded broker for the session,
a fresh vhost for each test). With ``EXAMPLE_AMQP_URL`` set (a RabbitMQ node, say) the same tests run
against that broker's default vhost instead, one after the other; each suite's fixtures empty their
queues after every test. ``measure.py`` runs both ways and times them.
"""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def amqp_url(request: pytest.FixtureRequest) -> str:
    url = os.environ.get("EXAMPLE_AMQP_URL")
    if url:
        return url
    return str(request.getfixturevalue("leveret_url"))
