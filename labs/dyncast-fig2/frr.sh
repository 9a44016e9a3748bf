#!/bin/sh
# The infrastructure router's BGP: FRR's bgpd as a plain IPv6 route reflector (no zebra:
# the underlay routes are the kernel's, set by the lab's exec commands).
set -eu
run=${CAND_LAB_RUN:-/run/cand/dyncast-fig2}
mkdir -p "$run/rr-vty"
exec /usr/lib/frr/bgpd -f rr-bgpd.conf -i "$run/rr-bgpd.pid" -Z -S -n \
  --vty_socket "$run/rr-vty" -P 0 >>"$run/rr.log" 2>&1
