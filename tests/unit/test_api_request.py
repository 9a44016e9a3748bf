"""The local API's request parser: whatever a local client sends is a command or BadRequest."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cand.api import COMMANDS, MAX_REQUEST, BadRequest, decode_request

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)


@given(st.binary(max_size=MAX_REQUEST + 64))
def test_any_bytes_are_a_command_or_bad_request(line: bytes) -> None:
    try:
        assert decode_request(line) in COMMANDS
    except BadRequest as e:
        assert str(e)


@given(json_values)
def test_any_json_is_a_command_or_bad_request(value: object) -> None:
    line = json.dumps(value).encode()
    try:
        cmd = decode_request(line)
    except BadRequest:
        return
    assert value == {"cmd": cmd}


@pytest.mark.parametrize("cmd", COMMANDS)
def test_each_command_decodes(cmd: str) -> None:
    assert decode_request(json.dumps({"cmd": cmd}).encode() + b"\n") == cmd


@pytest.mark.parametrize(
    ("line", "why"),
    [
        (b"[" * 3000, "not JSON"),  # deeper than the JSON decoder's recursion limit
        (b'{"cmd": "status"' + b" " * MAX_REQUEST + b"}", "too long"),
        (b"\xff\xfe{}", "not JSON"),
        (b'"status"', "expected one line"),
        (b'{"cmd": "status", "all": true}', "expected one line"),
        (b'{"cmd": 1}', "unknown command int"),
        (b'{"cmd": "reboot"}', "unknown command 'reboot'"),
        (b"", "not JSON"),
    ],
)
def test_bad_requests_say_why(line: bytes, why: str) -> None:
    with pytest.raises(BadRequest, match=why):
        decode_request(line)
