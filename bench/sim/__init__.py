"""A discrete-event simulator of steering quality, driving cand's own decision engine.

`core` holds the event queue and the FIFO server (pure, unit-tested); `world` the topology,
instances and workload; `steer` the runs: cand's engines fed with late load reports, and an
oracle with perfect, instant knowledge as the yardstick; `netcost` a network whose delays
change, and cand's own probe book measuring them for the ingress engines' cost smoothing.
"""
