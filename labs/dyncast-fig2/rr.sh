#!/bin/sh
# The infrastructure router's BGP, chosen by CAND_LAB_REFLECTOR: frr (default, FRR's bgpd,
# frr.sh), gobgp (a plain gobgpd as the route reflector, rr-gobgpd.toml: the same sessions,
# route-reflector clients with ADD-PATH both ways), or none (no BGP on rr at all: the
# D-Routers peer with each other, a full iBGP mesh, see router.sh; rr only forwards).
set -eu
run=${CAND_LAB_RUN:-/run/cand/dyncast-fig2}
mkdir -p "$run"
case "${CAND_LAB_REFLECTOR:-frr}" in
  frr) exec ./frr.sh ;;
  gobgp)
    exec gobgpd -f rr-gobgpd.toml -t toml --api-hosts "unix://$run/rr-gobgpd.sock" \
      --pprof-disable -l info >>"$run/rr.log" 2>&1 ;;
  none) exit 0 ;;
  *) echo "rr.sh: CAND_LAB_REFLECTOR: frr, gobgp or none" >&2; exit 2 ;;
esac
