"""A binding's idle time as BMv2 reports it, unwrapped: pure arithmetic, no I/O.

BMv2 1.15.5 (its PI layer) computes an entry's time left as

    wrapped = ((timeout_ms - since_hit_ms) * 10**6) mod 2**32        (in ns, 32-bit unsigned)

and reports `time_since_last_hit.elapsed_ns = idle_timeout_ns - wrapped`. Past 2**32 ns (4.29 s
left) the product wraps, so a binding read back as it is looks between 0 and 4.3 s from its
timeout whatever its real age (checked against simple_switch_grpc: a 60-s entry read each second
after its last packet reports left = 3.14, 2.14, 1.13, 0.12, 3.41 ... s).

The wrap can be undone. 10**6 = 2**6 * 15625 with 15625 odd, so

    wrapped / 2**6 = (left_ms * 15625) mod 2**26

and 15625 has an inverse modulo 2**26: left_ms mod 2**26 = (wrapped / 2**6) * INVERSE mod 2**26.
The time since the last hit, timeout_ms - left_ms, is so known exactly modulo 2**26 ms (18.6 h)
and is read as the value in [0, 18.6 h): exact for every timeout up to 18.6 h, including an
entry a little past its timeout that the switch has not swept yet (its time left is 0). With a
longer timeout, a binding idle for more than 18.6 h is read 18.6 h (or a multiple) too young.

A report whose elapsed_ns is a whole number of ms is taken as it stands (BMv2's wrapped reports
never are, while less than 18.6 h is left; unwrapped ones are right), and so is one that cannot
come from this formula (idle_timeout_ns - elapsed_ns not a multiple of 64 ns). A target that
reports right with ns precision is therefore read right except when that difference happens to
be a multiple of 64 ns (1 in 64 reads): cand's only P4 target so far is BMv2.
"""

from __future__ import annotations

from dataclasses import dataclass

MS = 10**6  # ns
WRAP = 1 << 32  # PI's 32-bit product, in ns
SHIFT = 6  # 10**6 = 2**6 * ODD
ODD = 15625
MODULUS_MS = 1 << (32 - SHIFT)  # 2**26 ms, 18.6 h: the times are exact modulo this
INVERSE = pow(ODD, -1, MODULUS_MS)


@dataclass(frozen=True, slots=True)
class Idle:
    """How long an entry has gone without a packet and how long it has left, in ns."""

    since_hit_ns: int
    left_ns: int

    @property
    def since_hit(self) -> float:
        return self.since_hit_ns / 1e9

    @property
    def left(self) -> float:
        return self.left_ns / 1e9


def bmv2_report(idle_timeout_ns: int, since_hit_ms: int) -> int:
    """The elapsed_ns BMv2 1.15.5 reports for an entry `since_hit_ms` after its last hit (the
    model of its arithmetic that `idle` undoes; also what the tests feed it)."""
    left_ms = idle_timeout_ns // MS - since_hit_ms
    return idle_timeout_ns - (left_ms * MS) % WRAP


def left_ms_mod(wrapped_ns: int) -> int:
    """left_ms modulo 2**26 from PI's wrapped product (a multiple of 2**6 ns)."""
    if wrapped_ns % (1 << SHIFT):
        raise ValueError(f"{wrapped_ns} ns is not a wrapped ms * 10**6 (not a multiple of 64)")
    return ((wrapped_ns % WRAP) >> SHIFT) * INVERSE % MODULUS_MS


def idle(idle_timeout_ns: int, elapsed_ns: int) -> Idle:
    """An entry's idle time and time left from its idle_timeout_ns and the elapsed_ns the
    switch reported (see the module's docstring for when this is exact)."""
    if idle_timeout_ns <= 0:
        return Idle(max(0, elapsed_ns), 0)
    if elapsed_ns >= 0 and elapsed_ns % MS == 0:
        since = elapsed_ns  # as it stands: not a wrapped report
    else:
        wrapped = (idle_timeout_ns - elapsed_ns) % WRAP
        if wrapped % (1 << SHIFT):
            since = max(0, elapsed_ns)  # not BMv2's form: as it stands
        else:
            timeout_ms = idle_timeout_ns // MS
            since = (timeout_ms - left_ms_mod(wrapped)) % MODULUS_MS * MS
    return Idle(since, max(0, idle_timeout_ns - since))
