"""leveretctl's policy commands against a live broker: rabbitmqctl 3.10's banners, columns and exit
codes; what they set is what pika clients get; ``list_queues name policy`` shows it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from leveret.cli.ctl import cli
from tests.security.test_access_api import Api, make_api


@pytest.fixture
def api() -> Iterator[Api]:
    a = make_api()
    yield a
    a.broker.stop()


def ctl(api: Api, *args: str) -> tuple[int, list[str], str]:
    result = CliRunner().invoke(cli, ["--url", api.http, *args], catch_exceptions=False)
    return result.exit_code, result.stdout.splitlines(), result.stderr


def test_set_list_clear_policy(api: Api) -> None:
    code, out, _ = ctl(
        api, "set_policy", "--priority", "2", "--apply-to", "queues", "cap", "^cap", '{"max-length":2}'
    )
    assert code == 0
    assert out == [
        'Setting policy "cap" for pattern "^cap" to "{"max-length":2}" with priority "2" for vhost "/" ...'
    ]
    with api.connect("guest", "guest") as conn:
        ch = conn.channel()
        ch.queue_declare("cap")
        ch.queue_declare("other")
        for i in range(4):
            ch.basic_publish("", "cap", str(i).encode())
        assert ch.queue_declare("cap", passive=True).method.message_count == 2
    code, out, _ = ctl(api, "list_policies")
    assert (code, out) == (
        0,
        ['Listing policies for vhost "/" ...', "vhost\tname\tpattern\tapply-to\tdefinition\tpriority",
         '/\tcap\t^cap\tqueues\t{"max-length":2}\t2'],
    )  # fmt: skip
    code, out, _ = ctl(api, "-q", "list_queues", "name", "policy")
    assert (code, sorted(out)) == (0, sorted(["name\tpolicy", "cap\tcap", "other\t"]))
    assert ctl(api, "clear_policy", "cap")[:2] == (0, ['Clearing policy "cap" on vhost "/" ...'])
    assert ctl(api, "-q", "list_policies")[1] == ["vhost\tname\tpattern\tapply-to\tdefinition\tpriority"]
    code, _, err = ctl(api, "clear_policy", "cap")
    assert code == 65 and "Parameter does not exist" in err


def test_operator_policy_commands(api: Api) -> None:
    code, out, _ = ctl(api, "set_operator_policy", "ops", "^q", '{"max-length":1}')
    assert code == 0
    assert out == ['Setting operator policy override "ops" for pattern "^q" to "{"max-length":1}" with priority "0" '
                   'for vhost "/" ...']  # fmt: skip
    code, out, _ = ctl(api, "list_operator_policies")
    assert out[0] == 'Listing operator policy overrides for vhost "/" ...'
    assert out[2] == '/\tops\t^q\tall\t{"max-length":1}\t0'
    code, _, err = ctl(api, "set_operator_policy", "ops", "^q", '{"overflow":"drop-head"}')
    assert code == 69 and 'Validation failed\n\n[{<<"overflow">>,<<"drop-head">>}] are not recognised' in err
    assert ctl(api, "clear_operator_policy", "ops")[0] == 0
    assert ctl(api, "-q", "list_operator_policies")[1] == [
        "vhost\tname\tpattern\tapply-to\tdefinition\tpriority"
    ]


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (("p", ".*", '{"max-length":"abc"}'), '<<"abc">> is not a valid maximum length'),
        (("p", ".*", '{"foo-bar":1}'), '[{<<"foo-bar">>,1}] are not recognised policy settings'),
        (("p", ".*", "{}"), "no policy provided"),
        (("--apply-to", "queuesx", "p", ".*", '{"max-length":1}'),
         "apply-to 'queuesx' unrecognised; should be 'queues', 'exchanges' or 'all'"),
        (("p", "(abc", '{"max-length":1}'), 'pattern should be regular expression but is invalid: {"missing )",4}'),
    ],
)  # fmt: skip
def test_validation_failures_exit_69(api: Api, args: tuple[str, ...], text: str) -> None:
    code, _, err = ctl(api, "set_policy", *args)
    assert code == 69
    assert err == f"Error: Validation failed\n\n{text}\n"


def test_broken_json_and_missing_vhost(api: Api) -> None:
    code, _, err = ctl(api, "set_policy", "p", ".*", "{max-length")
    assert (code, err) == (69, "Error: JSON decoding error. Reason: badarg\n")
    code, _, err = ctl(api, "-p", "nohost", "set_policy", "p", ".*", '{"max-length":1}')
    assert code == 65 and "nohost" in err


def test_leveretctl_process(api: Api) -> None:
    """The installed entry point, as a subprocess (PYTHONPATH picks this checkout)."""
    cmd = [
        sys.executable,
        "-m",
        "leveret.cli.ctl",
        "--url",
        api.http,
        "set_policy",
        "p",
        ".*",
        '{"max-length":-1}',
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=dict(os.environ))
    assert done.returncode == 69, done
    assert "Validation failed\n\n-1 is not a valid maximum length" in done.stderr
