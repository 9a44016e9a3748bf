"""The supervisor around every input: one message that trips a bug is dropped, not fatal.

Inputs are decoded by code that raises only its own error (PayloadError, CodecError, ...),
and those are handled where they occur. Anything else is a bug in cand; a bug triggered by
one MQTT report or one BGP UPDATE must not take every established flow's daemon down, so it
is logged with the message's origin and traceback, counted, and the message dropped. Tests
run with CAND_STRICT=1, where the exception goes on and fails the test instead."""

from __future__ import annotations

import logging
import os
from collections.abc import MutableMapping


def strict() -> bool:
    return os.environ.get("CAND_STRICT") == "1"


def input_bug(
    log: logging.Logger, counters: MutableMapping[str, int], origin: str, error: Exception
) -> None:
    """Call from `except Exception` around the handling of one input message; re-raises in
    strict mode, else logs and counts (`input_bugs`) so the caller drops the message."""
    counters["input_bugs"] = counters.get("input_bugs", 0) + 1
    log.error("event=input_bug origin=%s error=%r", origin[:200], error, exc_info=error)
    if strict():
        raise error
