#!/bin/sh
# dr1's data plane on BMv2 (CAND_LAB_DR1_DATAPLANE=p4); does nothing with the Linux one.
# BMv2 (simple_switch_grpc, p4/cand.p4) owns dr1's data ports: eth1 (port 1, to rr) and eth2
# (port 2, to c1). dr1's kernel gives them up (no address, IPv6 off, no forwarding), so
# that it neither answers nor forwards what the switch handles. dr1's control plane (cand,
# gobgpd) keeps the kernel: dr1's address fc00:1::1 (router id, BGP session, SRv6 source)
# moves to its loopback and is reached over the control link eth3 (fc00:1c::/64) to rr,
# as a hardware switch's CPU is reached over its management port. BMv2 resolves no
# neighbours, so the MACs at both ends of its ports are fixed here and its neighbours
# hold static entries for it. Offloads are off on every interface that sends into the
# switch: BMv2 forwards frames as they come (cand_testbed.offload says why).
#   ./p4.sh rr | c1 | dr1     set-up of that node (its clab `exec`)
#   ./p4.sh switch            start BMv2 in dr1 (router.sh), once its socket is up return
set -eu
[ "${CAND_LAB_DR1_DATAPLANE:-linux}" = p4 ] || exit 0
run=${CAND_LAB_RUN:-/run/cand/dyncast-fig2}
py=${CAND_LAB_PYTHON:-python3}
SW_CORE_MAC=02:00:00:d1:00:01  # switch port 1, towards rr; its address there: fc00:1::2
SW_C1_MAC=02:00:00:d1:00:02    # switch port 2, towards c1; c1's gateway fc00:c1::1
RR_MAC=02:00:00:00:01:ff       # rr:eth1
C1_MAC=02:00:00:00:c1:02       # c1:eth1
case "${1:-}" in
  rr)
    ip link set eth1 address $RR_MAC
    ip -6 neigh replace fc00:1::2 lladdr $SW_CORE_MAC dev eth1 nud permanent
    ip -6 route replace fc00:c1::/64 via fc00:1::2 dev eth1  # c1's traffic: through the switch
    ip -6 route replace fc00:1::1/128 via fc00:1c::1 dev eth4  # dr1 itself: the control link
    "$py" -m cand_testbed.offload eth1 ;;
  c1)
    ip link set eth1 address $C1_MAC
    ip -6 neigh replace fc00:c1::1 lladdr $SW_C1_MAC dev eth1 nud permanent
    "$py" -m cand_testbed.offload eth1 ;;
  dr1)
    sysctl -qw net.ipv6.conf.all.forwarding=0
    for i in eth1 eth2; do
      ip -6 addr flush dev $i
      sysctl -qw net.ipv6.conf.$i.disable_ipv6=1
    done
    "$py" -m cand_testbed.offload eth1 eth2
    ip -6 addr add fc00:1::1/128 dev lo nodad  # not tentative for a moment: the route below names it as source
    ip -6 route replace default via fc00:1c::ff dev eth3 src fc00:1::1 ;;
  switch)
    mkdir -p "$run"
    sw=$(command -v simple_switch_grpc || echo /opt/p4/bin/simple_switch_grpc)
    rm -f "$run/dr1-p4rt.sock"
    # no program: dr1's cand pushes p4/cand.p4 on its first connection
    "$sw" --device-id 1 --no-p4 -i 1@eth1 -i 2@eth2 \
      --notifications-addr "ipc://$run/dr1-bmv2-notify.ipc" \
      --log-file "$run/dr1-bmv2" --log-flush -L warn \
      -- --grpc-server-addr "unix:$run/dr1-p4rt.sock" >"$run/dr1-bmv2.out" 2>&1 &
    echo $! >"$run/dr1-bmv2.pid"  # the lab's teardown ends the namespace's processes; by hand: kill $(cat ...)
    i=0
    until [ -S "$run/dr1-p4rt.sock" ]; do
      i=$((i + 1))
      [ $i -le 200 ] || { echo "p4.sh: no BMv2 socket after 10 s ($run/dr1-bmv2.out)" >&2; exit 1; }
      sleep 0.05
    done ;;
  *) echo "p4.sh: rr, c1, dr1 or switch" >&2; exit 2 ;;
esac
