"""The simulated network: an ISP-like topology, heterogeneous instances, skewed demand.

Everything is drawn from one seed, so a world is the same on every run and every policy is
measured against exactly the same requests (common random numbers: differences between
policies are then the policies', not the dice's).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import networkx as nx

CORE = 6
INGRESSES = 5
EGRESSES = 4
PER_EGRESS = 2
RATES = (25.0, 50.0, 50.0, 100.0, 100.0, 200.0, 200.0, 400.0)
"""Service rates (requests/s at the mean size): a 16x spread, as between a small VM and a
GPU box; total 1,125/s. One per instance, shuffled over the sites by the seed."""
ZIPF = 1.0
"""Demand share of the k-th busiest ingress is proportional to 1 / k**ZIPF."""


@dataclass(frozen=True, slots=True)
class Instance:
    name: str
    egress: str
    rate: float


@dataclass(frozen=True, slots=True)
class Request:
    id: int
    time: float
    ingress: str
    size: float


@dataclass(frozen=True, slots=True)
class World:
    graph: nx.Graph
    ingresses: tuple[str, ...]
    demand: dict[str, float]
    """Share of all requests entering at each ingress (sums to 1)."""
    egresses: tuple[str, ...]
    instances: tuple[Instance, ...]
    one_way: dict[tuple[str, str], float]
    """Shortest-path delay in seconds from each ingress to each egress."""

    @property
    def capacity(self) -> float:
        return sum(i.rate for i in self.instances)

    def rtt(self, ingress: str, egress: str) -> float:
        return 2 * self.one_way[(ingress, egress)]


def build(seed: int) -> World:
    """A ring of core routers with two random chords (2-8 ms links), and dual-homed edge
    routers (0.5-3 ms access links): clients enter at the ingresses, instances sit behind
    the egresses. 15 routers."""
    rng = random.Random(seed)
    g = nx.Graph()
    cores = [f"c{n}" for n in range(CORE)]
    for n, c in enumerate(cores):
        g.add_edge(c, cores[(n + 1) % CORE], delay=rng.uniform(2e-3, 8e-3))
    chords = [(a, b) for a in range(CORE) for b in range(a + 2, CORE) if (b - a) % CORE != CORE - 1]
    for a, b in rng.sample(chords, 2):
        g.add_edge(cores[a], cores[b], delay=rng.uniform(2e-3, 8e-3))
    ingresses = tuple(f"i{n}" for n in range(INGRESSES))
    egresses = tuple(f"e{n}" for n in range(EGRESSES))
    for edge in ingresses + egresses:
        home = rng.randrange(CORE)
        for k in (home, (home + 1) % CORE):
            g.add_edge(edge, cores[k], delay=rng.uniform(0.5e-3, 3e-3))
    one_way: dict[tuple[str, str], float] = {}
    for ing in ingresses:
        lengths = nx.single_source_dijkstra_path_length(g, ing, weight="delay")
        for e in egresses:
            one_way[(ing, e)] = float(lengths[e])
    rates = list(RATES)
    rng.shuffle(rates)
    instances = tuple(
        Instance(f"{e}.{k}", e, rates[n * PER_EGRESS + k])
        for n, e in enumerate(egresses)
        for k in range(PER_EGRESS)
    )
    ranks = list(ingresses)
    rng.shuffle(ranks)
    raw = {ing: 1.0 / (k + 1) ** ZIPF for k, ing in enumerate(ranks)}
    total = sum(raw.values())
    demand = {ing: raw[ing] / total for ing in ingresses}
    return World(g, ingresses, demand, egresses, instances, one_way)


def requests(world: World, n: int, load: float, seed: int) -> list[Request]:
    """`n` requests: Poisson arrivals at `load` x the total capacity, ingress drawn by the
    Zipf demand shares (the same as one Poisson stream per ingress), exponential sizes of
    mean 1 work unit."""
    rng = random.Random(seed)
    rate = load * world.capacity
    names = list(world.demand)
    weights = [world.demand[k] for k in names]
    out: list[Request] = []
    t = 0.0
    for i in range(n):
        t += rng.expovariate(rate)
        out.append(Request(i, t, rng.choices(names, weights)[0], rng.expovariate(1.0)))
    return out
