"""properties.sender_selected against pamqp-encoded headers: the keys CC and BCC add, BCC removed."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from pamqp import commands as C
from pamqp import header

from leveret.model.properties import may_have_cc, sender_selected


def raw(**kw: Any) -> bytes:
    return header.ContentHeader(0, 0, C.Basic.Properties(**kw)).marshal()[12:]


def decode(props: bytes) -> C.Basic.Properties:
    h = header.ContentHeader()
    h.unmarshal(b"\x00\x3c\x00\x00" + bytes(8) + props)
    return h.properties


keys = st.lists(st.text(min_size=1, max_size=10), max_size=3)


@given(
    cc=st.none() | keys,
    bcc=st.none() | keys,
    other=st.dictionaries(st.text(min_size=1, max_size=6).filter(lambda k: k not in ("CC", "BCC")),
                          st.integers(0, 9) | st.text(max_size=6), max_size=3),
    content_type=st.none() | st.text(min_size=1, max_size=8),  # pamqp leaves an empty one out
)  # fmt: skip
def test_keys_come_from_cc_and_bcc_and_bcc_goes(
    cc: list[str] | None, bcc: list[str] | None, other: dict[str, Any], content_type: str | None
) -> None:
    headers: dict[str, Any] = dict(other)
    if cc is not None:
        headers["CC"] = cc
    if bcc is not None:
        headers["BCC"] = bcc
    props = raw(headers=headers or None, content_type=content_type, delivery_mode=2)
    if not may_have_cc(props):
        assert cc is None and bcc is None, "the cheap test must never miss a CC or BCC header"
        return
    got_keys, out = sender_selected(props)
    assert sorted(got_keys) == sorted((cc or []) + (bcc or []))  # table order: pamqp sorts keys
    decoded = decode(out)
    expected = {k: v for k, v in headers.items() if k != "BCC"}
    assert (decoded.headers or {}) == expected
    assert decoded.content_type == content_type and decoded.delivery_mode == 2


def test_without_cc_or_bcc_nothing_changes() -> None:
    props = raw(headers={"x": "\x02CCA"})  # looks like a CC key to the cheap test
    assert may_have_cc(props)
    assert sender_selected(props) == ([], props)
