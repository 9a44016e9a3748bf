#!/bin/sh
# One service instance: a real HTTP server that reports its load to its site's broker.
set -eu
run=${CAND_LAB_RUN:-/run/cand/dyncast-fig2}
py=${CAND_LAB_PYTHON:-python3}
mkdir -p "$run"
exec "$py" -m cand_testbed.instance --name "$1" --service "$2" --binding "$3" \
  --broker "mqtt://[$4]:1883" --control "$run/$1.ctl" --keepalive "${CAND_LAB_KEEPALIVE:-10}" \
  >"$run/$1.log" 2>&1
