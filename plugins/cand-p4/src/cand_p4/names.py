"""Every name the P4 data plane uses from p4/cand.p4, in one place.

The control plane writes entries by these names; `tests/p4/test_p4info.py` checks each against
the P4Info that p4c generates, so a rename in the program fails a test instead of a write.
Names are the fully qualified P4Info names (control instance + object).
"""

from __future__ import annotations

from dataclasses import dataclass

CONTROL = "CandIngress"


def _q(name: str) -> str:
    return f"{CONTROL}.{name}"


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    keys: tuple[str, ...]
    actions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Action:
    name: str
    params: tuple[str, ...]


# --- actions ------------------------------------------------------------------------------
END_DX6 = Action(_q("end_dx6"), ("dbid",))
END_DX6_NAT = Action(_q("end_dx6_nat"), ("dbid",))
NAT_SOURCE = Action(_q("nat_source"), ("dsid",))
STEER = Action(_q("steer"), ("service_id", "three_tuple", "default_route"))
TO_SID = Action(_q("to_sid"), ("sid",))
TO_LOCAL = Action(_q("to_local"), ("dbid", "nat"))
SET_ENCAP = Action(_q("set_encap"), ("source", "hop_limit", "reduced"))
ROUTE = Action(_q("route"), ("nexthop_id",))
NEIGHBOUR = Action(_q("neighbour"), ("port", "dst_mac", "src_mac"))
DROP = Action(_q("drop"), ())
NO_ACTION = Action("NoAction", ())

# --- tables -------------------------------------------------------------------------------
LOCAL_SID = Table(_q("local_sid"), ("sid",), (END_DX6.name, END_DX6_NAT.name))
NAT_OUT = Table(_q("nat_out"), ("dbid",), (NAT_SOURCE.name,))
SERVICE = Table(_q("service"), ("dsid",), (STEER.name,))
BINDING = Table(
    _q("binding"), ("src", "dst", "proto", "sport", "dport"), (TO_SID.name, TO_LOCAL.name)
)
NEW_FLOW = Table(_q("new_flow"), ("service_id",), (TO_SID.name, TO_LOCAL.name))
ENCAP = Table(_q("encap"), (), (SET_ENCAP.name,))
ROUTER = Table(_q("router"), ("dst",), (ROUTE.name, DROP.name))
NEXTHOP = Table(_q("nexthop"), ("id",), (NEIGHBOUR.name, DROP.name))

TABLES = (LOCAL_SID, NAT_OUT, SERVICE, BINDING, NEW_FLOW, ENCAP, ROUTER, NEXTHOP)
ACTIONS = (END_DX6, END_DX6_NAT, NAT_SOURCE, STEER, TO_SID, TO_LOCAL, SET_ENCAP, ROUTE, NEIGHBOUR)

# --- other objects --------------------------------------------------------------------------
INSTANCES = _q("instances")
"""The action selector (action profile) behind `new_flow`: one group per service."""
BINDING_COUNTER = _q("binding_counter")
"""The direct counter of `binding`: packets and bytes per flow, for `cand bindings`."""
NEW_FLOW_DIGEST = "new_flow_t"
NEW_FLOW_FIELDS = ("src", "dst", "proto", "sport", "dport", "service_id", "target", "kind")

# values of new_flow_t.kind
TARGET_SID, TARGET_LOCAL, TARGET_LOCAL_NAT = 1, 2, 3
