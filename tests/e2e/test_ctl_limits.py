"""leveretctl's user and vhost limit commands against a live broker, with the banners, output and exit
codes rabbitmqctl 3.10.8 gave for the same commands (probed); what they set is enforced for pika."""

from __future__ import annotations

from collections.abc import Iterator

import pika.exceptions
import pytest
from click.testing import CliRunner

from leveret.cli.ctl import cli
from tests.security.test_access_api import Api, make_api


@pytest.fixture
def api() -> Iterator[Api]:
    a = make_api()
    a.ok("PUT", "/api/users/u", {"password": "pw", "tags": ""}, 201)
    a.ok("PUT", "/api/vhosts/v", None, 201)
    a.ok("PUT", "/api/permissions/v/u", {"configure": ".*", "write": ".*", "read": ".*"}, 201)
    yield a
    a.broker.stop()


def ctl(api: Api, *args: str) -> tuple[int, list[str], str]:
    result = CliRunner().invoke(cli, ["--url", api.http, *args], catch_exceptions=False)
    return result.exit_code, result.stdout.splitlines(), result.stderr


def test_user_limits(api: Api) -> None:
    spec = '{"max-connections": 1, "max-channels": 2}'
    assert ctl(api, "set_user_limits", "u", spec)[:2] == (
        0, [f'Setting user limits to "{spec}" for user "u" ...']
    )
    assert ctl(api, "list_user_limits", "--user", "u")[:2] == (
        0, ['Listing limits for user "u" ...', '{"max-channels":2,"max-connections":1}']
    )
    assert ctl(api, "-q", "list_user_limits", "--user", "u")[:2] == (0, ['{"max-channels":2,"max-connections":1}'])
    assert ctl(api, "list_user_limits")[:2] == (0, ['Listing limits for user "guest" ...', "{}"])
    c1 = api.connect("u", "pw", "v")
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError, match=r"user connection limit \(1\)"):
        api.connect("u", "pw", "v")
    c1.close()
    assert ctl(api, "clear_user_limits", "u", "max-channels")[:2] == (
        0, ['Clearing "max-channels" limit for user "u" ...']
    )
    assert ctl(api, "-q", "list_user_limits", "--user", "u")[1] == ['{"max-connections":1}']
    assert ctl(api, "clear_user_limits", "u", "all")[:2] == (0, ['Clearing all limits for user "u" ...'])
    assert ctl(api, "-q", "list_user_limits", "--user", "u")[1] == ["{}"]
    code, _, err = ctl(api, "list_user_limits", "--user", "nobody")
    assert code == 69 and '{:no_such_user, "nobody"}' in err
    code, _, err = ctl(api, "clear_user_limits", "nobody", "all")
    assert code == 69 and '{:no_such_user, "nobody"}' in err
    for spec, text in [("notjson", "JSON decoding error. Reason: badarg"),
                       ('{"foo": 1}', 'Unrecognised terms [{<<"foo">>,1}] in user-limits'),
                       ('{"max-connections": "x"}', 'max-connections should be a number, actually was <<"x">>')]:  # fmt: skip
        code, _, err = ctl(api, "set_user_limits", "u", spec)
        assert code == 69 and text in err, (spec, err)
    code, _, err = ctl(api, "set_user_limits", "nobody", '{"max-connections": 1}')
    assert code == 69 and '{:no_such_user, "nobody"}' in err


def test_vhost_limits(api: Api) -> None:
    assert ctl(api, "set_vhost_limits", "-p", "v", '{"max-queues": 2}')[:2] == (
        0, ['Setting vhost limits to "{"max-queues": 2}" for vhost "v" ...']
    )
    assert ctl(api, "list_vhost_limits", "-p", "v")[:2] == (
        0, ['Listing limits for vhost "v" ...', '{"max-queues":2}']
    )
    assert ctl(api, "list_vhost_limits", "--global")[:2] == (
        0, ["Listing limits for all vhosts ...", "vhost\tlimits", 'v\t{"max-queues":2}']
    )
    assert ctl(api, "list_vhost_limits")[:2] == (0, ['Listing limits for vhost "/" ...', ""])
    conn = api.connect("u", "pw", "v")
    ch = conn.channel()
    ch.queue_declare("a")
    ch.queue_declare("b")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker, match=r"queue limit in vhost 'v' \(2\) is reached"):
        ch.queue_declare("c")
    conn.close()
    code, _, err = ctl(api, "set_vhost_limits", "-p", "v", '{"foo": 1}')
    assert code == 69 and 'Validation failed\n\nUnrecognised terms [{<<"foo">>,1}] in limits' in err
    code, _, err = ctl(api, "set_vhost_limits", "-p", "nope", '{"max-queues": 1}')
    assert code == 65 and "Virtual host 'nope' does not exist" in err
    code, _, err = ctl(api, "list_vhost_limits", "-p", "nope")
    assert code == 65 and "Virtual host 'nope' does not exist" in err
    assert ctl(api, "clear_vhost_limits", "-p", "v")[:2] == (0, ['Clearing vhost "v" limits ...'])
    assert ctl(api, "-q", "list_vhost_limits", "-p", "v")[1] == [""]
