"""What cand's nftables table holds, and the one transaction that makes it what cand wants.

Pure: no I/O. A reconciliation used to rewrite the whole table (at 10,000 D-SIDs, 44 s of
`nft`, more than its 30 s interval). Instead it reads the table back (`parse_listing`), plays
the full rewrite it would have written onto that read-back state (`interpret`: the wanted
state), and writes only the difference (`plan`): each chain that differs is flushed and
rewritten, a missing one created, one nothing wants deleted, and the D-SID map's, the D-SID
set's and the SID map's elements added or deleted one by one.

The text form of `nft list table` is read, not `nft -j`: nftables 1.0.6 has no JSON for the
affinity rules' `update @map { ... }` statement (it prints a bare string and a warning), so a
rule's JSON is not a faithful picture of it, while every rule is one line of the text form.
The written rules are turned into the form nft prints them in (`printed`); a rule whose
printed form is not foreseen only makes its chain look different, so it is rewritten: never
wrong, only slower. Anything the parser does not know (a block of another kind, an element
list it cannot split) makes the whole read-back untrusted (`Untrusted`): the caller then
rewrites the whole table, as before.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

# the maps and sets whose elements cand writes (the affinity maps' are the packet path's)
ELEMENT_SETS = ("sids", "services", "dsids")


class Untrusted(ValueError):
    """The read-back state or a script could not be understood: rewrite the whole table."""


@dataclass
class Chain:
    header: str | None  # a base chain's "type ... hook ... priority ...; policy ...;"
    rules: list[str] = field(default_factory=list)


@dataclass
class Table:
    """The parts of cand's table a transaction writes."""

    chains: dict[str, Chain] = field(default_factory=dict)
    sets: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # name -> kind, decl
    elems: dict[str, dict[str, str]] = field(default_factory=dict)  # ELEMENT_SETS: key -> value

    def copy(self) -> Table:
        return Table(
            {n: Chain(c.header, list(c.rules)) for n, c in self.chains.items()},
            dict(self.sets),
            {n: dict(e) for n, e in self.elems.items()},
        )

    def same(self, other: Table) -> bool:
        """Equal in what the kernel would do (a set's declaration is not compared)."""
        return (
            self.chains == other.chains
            and {n: k for n, (k, _) in self.sets.items()}
            == {n: k for n, (k, _) in other.sets.items()}
            and self.elems == other.elems
        )


@dataclass(frozen=True)
class Plan:
    script: list[str]
    chains: int  # chains created, rewritten or deleted
    elements: int  # elements added or deleted


# --- the printed form of a rule ---------------------------------------------------------------

_MASKED = re.compile(r"\band (0x[0-9a-f]+) == (0x[0-9a-f]+)\b")
_MARKS = re.compile(r"\b(ct mark|meta mark) \{ (0x[0-9a-f]+(?:, 0x[0-9a-f]+)*) \}")
_TIMEOUT = re.compile(r"\btimeout (\d+)s\b")
_ADDR = re.compile(r"(?<![\w:.])([0-9A-Fa-f]*:[0-9A-Fa-f:.]*(?:/\d+)?)(?![\w:.])")


def _prefix(m: re.Match[str]) -> str:
    mask, value = int(m.group(1), 16), int(m.group(2), 16)
    ones = bin(mask).count("1")
    if mask != (0xFFFFFFFF << (32 - ones)) & 0xFFFFFFFF or value & ~mask:
        return m.group(0)
    return f"{value:#x}/{ones}"


def _marks(m: re.Match[str]) -> str:
    """An anonymous set of marks: nft prints its elements in order, and one without braces."""
    marks = sorted({int(x, 16) for x in m.group(2).split(", ")})
    if len(marks) == 1:
        return f"{m.group(1)} {marks[0]:#x}"
    return f"{m.group(1)} {{ {', '.join(f'{x:#x}' for x in marks)} }}"


def _duration(m: re.Match[str]) -> str:
    left = int(m.group(1))
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if left >= size:
            parts.append(f"{left // size}{unit}")
            left %= size
    return f"timeout {''.join(parts) or '0s'}"


def _address(m: re.Match[str]) -> str:
    text = m.group(1)
    try:
        net = ipaddress.IPv6Network(text, strict=False)
    except ValueError:
        return text
    if "/" not in text or net.prefixlen == 128:
        return str(ipaddress.IPv6Address(text.split("/")[0]))
    return str(net)


def printed(rule: str) -> str:
    """A rule as cand writes it, in the form `nft list` prints it back."""
    rule = _MASKED.sub(_prefix, rule)
    rule = _MARKS.sub(_marks, rule)
    rule = _TIMEOUT.sub(_duration, rule)
    rule = rule.replace("ip6 nexthdr 43 ", "ip6 nexthdr ipv6-route ")
    return _ADDR.sub(_address, " ".join(rule.split()))


def _key(text: str) -> str:
    try:
        return str(ipaddress.IPv6Address(text))
    except ValueError:
        raise Untrusted(f"element key {text!r}") from None


def _value(text: str) -> str:
    text = " ".join(text.split())
    if re.fullmatch(r"0x[0-9a-fA-F]+|\d+", text):
        return f"{int(text, 0):#x}"
    return text


def _elements(body: str) -> dict[str, str]:
    """`a : v, b : w` (a map) or `a, b` (a set) into key -> value ("" in a set)."""
    out: dict[str, str] = {}
    for item in body.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition(" : ")
        if " " in key.strip():
            raise Untrusted(f"element {item!r}")  # a timeout, a range: not one cand writes
        out[_key(key.strip())] = _value(value) if sep else ""
    return out


# --- reading `nft list table` -----------------------------------------------------------------


def parse_listing(text: str, table: str) -> Table:
    """`nft list table ip6 TABLE` (text form) into a Table; Untrusted if any of it is unknown."""
    out = Table()
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    if not lines or lines[0] != f"table ip6 {table} {{" or lines[-1] != "}":
        raise Untrusted("not one ip6 table")
    i, end = 1, len(lines) - 1
    while i < end:
        m = re.fullmatch(r"(chain|map|set) (\S+) \{", lines[i])
        if m is None:
            raise Untrusted(f"line {lines[i]!r}")
        kind, name = m.groups()
        i += 1
        body: list[str] = []
        while i < end and lines[i] != "}":
            body.append(lines[i])
            i += 1
        if i >= end:
            raise Untrusted(f"{kind} {name} is not closed")
        i += 1
        if kind == "chain":
            header = body[0] if body and body[0].startswith("type ") else None
            out.chains[name] = Chain(header, body[1:] if header else body)
        else:
            out.sets[name] = (kind, None)
            if name in ELEMENT_SETS:
                out.elems[name] = _parse_elements(body)
    return out


def _parse_elements(body: Sequence[str]) -> dict[str, str]:
    text = " ".join(body)
    start = text.find("elements = {")
    if start < 0:
        return {}
    rest = text[start + len("elements = {") :]
    if not rest.endswith("}") or "{" in rest:
        raise Untrusted("element list")
    return _elements(rest[:-1])


# --- the effect of a script -------------------------------------------------------------------

_BLOCK = re.compile(r"(\S+)(?: \{ (.*) \})?")


def interpret(state: Table, script: Iterable[str], table: str) -> Table:
    """The state after `script` (in the forms cand's transactions use) applied to `state`."""
    out = state.copy()
    t = f"ip6 {table} "
    for line in script:
        verb, _, rest = line.partition(" ")
        what, _, rest = rest.partition(" ")
        if line == f"add table {t.strip()}":
            continue
        if not rest.startswith(t):
            raise Untrusted(f"script line {line!r}")
        rest = rest[len(t) :]
        cmd = f"{verb} {what}"
        name, _, arg = rest.partition(" ")
        if cmd in ("add map", "add set"):
            out.sets.setdefault(name, (what, _braced(arg)))
            if name in ELEMENT_SETS:
                out.elems.setdefault(name, {})
        elif cmd == "add chain":
            header = _braced(arg) if arg else None
            have = out.chains.setdefault(name, Chain(header))
            if header is not None and have.header != header:
                raise Untrusted(f"chain {name}: {have.header!r} is not {header!r}")
        elif cmd == "flush chain":
            _chain(out, name).rules = []
        elif cmd in ("flush map", "flush set"):
            if name not in out.sets:
                raise Untrusted(f"no {what} {name}")
            if name in ELEMENT_SETS:
                out.elems[name] = {}
        elif cmd == "add rule":
            _chain(out, name).rules.append(printed(arg))
        elif cmd in ("add element", "delete element"):
            if name not in out.elems:
                raise Untrusted(f"elements of {name}")
            items = _elements(_braced(arg))
            if verb == "add":
                out.elems[name].update(items)
            else:
                for key in items:
                    if out.elems[name].pop(key, None) is None:
                        raise Untrusted(f"no element {key} in {name}")
        elif cmd == "delete chain":
            if out.chains.pop(name, None) is None:
                raise Untrusted(f"no chain {name}")
        elif cmd in ("delete map", "delete set"):
            if out.sets.pop(name, None) is None:
                raise Untrusted(f"no {what} {name}")
            out.elems.pop(name, None)
        else:
            raise Untrusted(f"script line {line!r}")
    return out


def _braced(arg: str) -> str:
    arg = arg.strip()
    if not (arg.startswith("{") and arg.endswith("}")):
        raise Untrusted(f"{arg!r}")
    return arg[1:-1].strip()


def _chain(state: Table, name: str) -> Chain:
    if name not in state.chains:
        raise Untrusted(f"no chain {name}")
    return state.chains[name]


# --- the difference ---------------------------------------------------------------------------


def plan(have: Table, want: Table, table: str) -> Plan:
    """One transaction that turns `have` into `want` and writes nothing that is already so.

    Order: sets and chains are created before the elements that name them, and elements are
    deleted before the chains they jump to (a chain a map jumps to cannot be deleted)."""
    t = f"ip6 {table}"
    script: list[str] = []
    chains = elements = 0
    for name, (kind, decl) in want.sets.items():
        if name not in have.sets:
            if decl is None:
                raise Untrusted(f"{kind} {name}: no declaration to create it with")
            script.append(f"add {kind} {t} {name} {{ {decl} }}")
    for name, c in want.chains.items():
        old = have.chains.get(name)
        if old == c:
            continue
        if old is None:
            script.append(f"add chain {t} {name}" + (f" {{ {c.header} }}" if c.header else ""))
        elif old.header != c.header:
            raise Untrusted(f"chain {name}: its hook differs")  # not changed in place
        else:
            script.append(f"flush chain {t} {name}")
        script += [f"add rule {t} {name} {r}" for r in c.rules]
        chains += 1
    adds: list[str] = []
    for name in ELEMENT_SETS:
        if name not in want.elems:
            continue
        old_e, new_e = have.elems.get(name, {}), want.elems[name]
        gone = sorted(k for k, v in old_e.items() if new_e.get(k) != v)
        new = sorted(k for k, v in new_e.items() if old_e.get(k) != v)
        if gone:
            script.append(f"delete element {t} {name} {{ {', '.join(gone)} }}")
        if new:
            items = ", ".join(f"{k} : {new_e[k]}" if new_e[k] else k for k in new)
            adds.append(f"add element {t} {name} {{ {items} }}")
        elements += len(gone) + len(new)
    script += adds
    for name in sorted(set(have.chains) - set(want.chains)):
        script += [f"flush chain {t} {name}", f"delete chain {t} {name}"]
        chains += 1
    for name in sorted(set(have.sets) - set(want.sets)):
        script.append(f"delete {have.sets[name][0]} {t} {name}")
    if script:
        script.insert(0, f"add table {t}")
    return Plan(script, chains, elements)
