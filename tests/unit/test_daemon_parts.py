from cand.engine import Advertise, ProgramService, RemoveService, Withdraw
from cand.engine.service_table import ServiceEntry, ServiceSpec
from cand.lane import coalesce
from tests.helpers import SVC, SVC2, key, route


def test_coalesce_keeps_last_per_subject_in_order() -> None:
    e1 = ProgramService(ServiceEntry(ServiceSpec(SVC), ()))
    e2 = ProgramService(ServiceEntry(ServiceSpec(SVC2), ()))
    e3 = RemoveService(SVC)
    a = Advertise(route(1))
    w = Withdraw(key(1))
    a2 = Advertise(route(2))
    assert coalesce([e1, a, e2, a2, e3, w]) == [e2, a2, e3, w]
    assert coalesce([w, a]) == [a]
