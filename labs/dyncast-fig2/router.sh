#!/bin/sh
# One D-Router: the edge site's mosquitto (when it has a site), then cand, which starts and
# supervises its BGP speaker (gobgpd, or ExaBGP with CAND_LAB_SPEAKER=exabgp). Logs and
# sockets go to $CAND_LAB_RUN (default /run/cand/dyncast-fig2).
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
exec "$py" -m cand.cli run -c "$run/$name.toml" >"$run/$name.log" 2>&1
