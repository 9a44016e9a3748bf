"""The ExaBGP process cand starts: ExaBGP's own entry point, with three of its text-parsing hot
spots replaced by equivalents that do the same work on whole strings.

    python -m cand.adapters.exabgp_run /path/to/exabgp.conf

ExaBGP parses every process-API command with a tokeniser that walks it one character at a
time, decodes a generic attribute's hex two characters per `int()` call and prints it back one
byte per `format()` (for its rib index and its log line). A cand path is about 700 characters,
most of them attribute hex, so these three took half of ExaBGP's time per announced path
(profiled: 27 %, 8 % and 16 %). The replacements:

- `Tokeniser.set_api`: a command with no quote, comment or backslash (every command cand
  writes) is split by one regular expression into the same words and statements; any other
  command, and any command the character walk would refuse, goes to ExaBGP's own tokeniser, so
  errors are ExaBGP's;
- the generic `attribute [ code flags 0xHEX ]` parser: hex made only of hex digits is decoded by
  `bytes.fromhex`, anything else the way ExaBGP does it (same errors, same messages);
- `GenericAttribute.__repr__`: `bytes.hex()`, the same text.

They are applied only to the ExaBGP release they were written and tested against
(`TUNED_RELEASE`; `tests/unit/test_exabgp_run.py` checks each against the original on
generated input); with any other release ExaBGP runs untouched. `bgp.options.binary` runs a
binary of the user's choice instead, untouched too.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator
from typing import Any

TUNED_RELEASE = "5.0.15"

# ExaBGP's tokeniser: spaces separate words, `, [ ]` are words of their own, `; { }` end a
# statement (and are its last word); quotes, `#` and backslashes need the character walk
_SIMPLE = re.compile(r"[^\"'#\\]*")
_WORDS = re.compile(r"[;{}\[\],]|[^ \t\r\n;{}\[\],]+")
_HEX = re.compile(r"[0-9a-f]*")
_END = frozenset(";{}")


def statements(line: str) -> list[list[str]] | None:
    """The statements (lists of words) ExaBGP's tokeniser makes of one API command, or None
    when only the character walk can say (quotes, comments, escapes, or a command that does
    not end a statement, which ExaBGP refuses with its own message)."""
    if not _SIMPLE.fullmatch(line):
        return None
    out: list[list[str]] = []
    words: list[str] = []
    for word in _WORDS.findall(line):
        words.append(word)
        if word in _END:
            out.append(words)
            words = []
    return None if words else out


def hex_bytes(data: str) -> bytes:
    """The bytes of a generic attribute's `0x...` value (lower case, even length, as ExaBGP
    has already checked), decoded as ExaBGP's parser decodes them."""
    digits = data[2:]
    if _HEX.fullmatch(digits):
        return bytes.fromhex(digits)
    # what ExaBGP's own loop accepts or refuses (int() takes '+f', for one): its way
    return b"".join(bytes([int(data[i : i + 2], 16)]) for i in range(2, len(data), 2))


def tune() -> bool:
    """Install the replacements when the installed ExaBGP is TUNED_RELEASE; whether it was."""
    from exabgp import version  # type: ignore[import-untyped]

    if version.release != TUNED_RELEASE:
        return False
    from exabgp.bgp.message.update.attribute.generic import GenericAttribute  # type: ignore[import-untyped]
    from exabgp.configuration.core.tokeniser import Tokeniser  # type: ignore[import-untyped]
    from exabgp.configuration.static import parser  # type: ignore[import-untyped]

    original_set_api = Tokeniser.set_api

    def set_api(self: Any, line: str) -> Any:
        found = statements(line)
        if found is None:
            return original_set_api(self, line)

        def words() -> Iterator[list[str]]:
            for statement in found:
                self.line = "".join(statement)  # what ExaBGP's _tokenise leaves behind
                yield statement

        return self._set(words())

    Tokeniser.set_api = set_api
    GenericAttribute.__repr__ = lambda self: "0x" + self.data.hex()
    _replace_parser(parser.attribute, _attribute_parser(parser.GenericAttribute))
    return True


def _attribute_parser(generic: Callable[[int, int, bytes], Any]) -> Callable[[Any], Any]:
    """ExaBGP's `attribute [ 0xCODE 0xFLAGS 0xDATA ]` parser, same checks and messages, with
    the data decoded by `hex_bytes`."""

    def number(token: str, what: str) -> int:
        if not token.startswith("0x"):
            raise ValueError(f"invalid attribute, {what} is not 0x hexadecimal")
        try:
            return int(token, 16)
        except ValueError:
            raise ValueError(f"invalid attribute, {what} is not 0x hexadecimal") from None

    def attribute(tokeniser: Callable[[], str]) -> Any:
        if tokeniser() != "[":
            raise ValueError("invalid attribute, does not starts with [")
        code = number(tokeniser().lower(), "code")
        flag = number(tokeniser().lower(), "flag")
        data = tokeniser().lower()
        if not data.startswith("0x") or len(data) % 2:
            raise ValueError("invalid attribute, data is not 0x hexadecimal")
        value = hex_bytes(data)
        if tokeniser() != "]":
            raise ValueError("invalid attribute, does not ends with ]")
        return generic(code, flag, value)

    return attribute


def _replace_parser(old: object, new: object) -> None:
    """Point every configuration section that parses `attribute` with `old` at `new` (some
    hold a copy of another's table, so every loaded section is looked at)."""
    # importing the configuration loads every section
    import exabgp.configuration.configuration  # type: ignore[import-untyped]  # noqa: F401

    for name, module in list(sys.modules.items()):
        if not name.startswith("exabgp.configuration"):
            continue
        for klass in vars(module).values():
            known = getattr(klass, "known", None)
            if isinstance(known, dict) and known.get("attribute") is old:
                known["attribute"] = new


def main() -> None:
    try:
        tune()
    except Exception as e:  # a 5.0.15 that is not the one tested: run it as it is
        print(f"cand.adapters.exabgp_run: ExaBGP runs untuned ({e!r})", file=sys.stderr)
    from exabgp.application.main import main as exabgp_main  # type: ignore[import-untyped]

    sys.argv[0] = "exabgp"
    sys.exit(exabgp_main())


if __name__ == "__main__":
    main()
