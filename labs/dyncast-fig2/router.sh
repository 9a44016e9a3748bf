#!/bin/sh
# One D-Router: the edge site's mosquitto (when it has a site), then cand, which starts and
# supervises its BGP speaker (gobgpd, or ExaBGP with CAND_LAB_SPEAKER=exabgp). Logs and
# sockets go to $CAND_LAB_RUN (default /run/cand/dyncast-fig2). With CAND_LAB_DR1_DATAPLANE=p4,
# dr1's data plane is a BMv2 switch (p4.sh), started first, and its cand gets dr1-p4.toml's
# [dataplane] tables instead of dr1.toml's.
set -eu
name=$1
run=${CAND_LAB_RUN:-/run/cand/dyncast-fig2}
py=${CAND_LAB_PYTHON:-python3}
mkdir -p "$run"
if [ "${2:-}" = site ]; then
  mosquitto -c mosquitto.conf >"$run/$name-mosquitto.log" 2>&1 &
fi
speaker=${CAND_LAB_SPEAKER:-gobgp}
options='socket = "@RUN@/'$name'-gobgpd.sock"'
[ "$speaker" = exabgp ] && options='workdir = "@RUN@/'$name'-exabgp"'
sed "s#^socket = .*gobgpd.sock\"#$options#; s#@RUN@#$run#g; s#@SPEAKER@#$speaker#g" "$name.toml" >"$run/$name.toml"
if [ "${CAND_LAB_REFLECTOR:-frr}" = none ]; then
  # no reflector: the session with rr replaced by one with each other D-Router (full mesh)
  sed -i '/^\[\[bgp.neighbors\]\]/,/^$/d' "$run/$name.toml"
  for peer in dr1:fc00:1::1 dr2:fc00:2::1 dr3:fc00:3::1; do
    [ "${peer%%:*}" = "$name" ] && continue
    printf '\n[[bgp.neighbors]]\naddress = "%s"\nasn = 65000\nhold_time = 9\nkeepalive = 3\ndescription = "%s, direct (no reflector)"\n' \
      "${peer#*:}" "${peer%%:*}" >>"$run/$name.toml"
  done
fi
if [ "$name" = dr1 ] && [ "${CAND_LAB_DR1_DATAPLANE:-linux}" = p4 ]; then
  ./p4.sh switch
  sed -i '/^\[dataplane\]/,/^\[\[services\]\]/{/^\[\[services\]\]/!d}' "$run/$name.toml"
  sed "s#@RUN@#$run#g" dr1-p4.toml >>"$run/$name.toml"
fi
exec "$py" -m cand.cli run -c "$run/$name.toml" >"$run/$name.log" 2>&1
