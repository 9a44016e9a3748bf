"""cand data plane plugin for a P4 switch running p4/cand.p4, over P4Runtime (finsy)."""
