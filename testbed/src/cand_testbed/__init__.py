"""What cand's tests, benchmarks and demo run, kept out of the daemon's package.

Real routers in namespaces (cand + gobgpd, FRR, mosquitto), the Figure-2 lab, instances and
their agents, load generators, a raw BGP peer for hostile input. Nothing in `cand` imports it:
the daemon ships without it, and a change here cannot change what the daemon does.
"""
