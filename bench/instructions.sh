#!/usr/bin/env bash
# Instructions per proxied request, counted by callgrind: a figure that does not move with the
# machine's load, for comparing builds of augur side by side (the peers benchmark's RPS ratios are
# noisier than the few percent a data-plane change moves them).
#   bench/instructions.sh [SECONDS] [CONNECTIONS] AUGUR_BIN...
# Defaults: 20 s of wrk load with 16 connections per binary, telemetry off, one nginx backend.
# Counts only the load: callgrind's counters are zeroed after a warm-up and dumped when wrk ends;
# the requests come from augur's own `augur_requests_total`. Needs valgrind, nginx and wrk.
# Prints a line per binary, then a JSON summary.
# GATED=1: the route asks for a client key and has limits at the key, tenant and route (none of them
# reached), and wrk sends the key: what the door costs a request. GATED=open: wrk sends the same key
# to the route left open, the side to compare GATED=1 with (the same request, no door).
# GATED=always: as GATED=1, with the RateLimit headers on every response.
set -u
seconds=${1:-20}; conns=${2:-16}; shift 2
. "$(dirname "$0")/lib.sh"
require valgrind callgrind_control nginx wrk python3
start_workdir

nginx_backend 9301
gate=""; route_gate=""; header=()
if [ "${GATED:-}" = open ]; then
  bench_keys "$w/keys/keys.toml"
  header=(-H "Authorization: Bearer $key")
elif [ -n "${GATED:-}" ]; then
  bench_keys "$w/keys/keys.toml"
  gate="[auth]
keys_file = \"$w/keys/keys.toml\""
  route_gate='auth = "key"
limits = { requests_per_second = 1000000 }'
  [ "$GATED" = always ] && route_gate="$route_gate
rate_limit_headers = \"always\""
  header=(-H "Authorization: Bearer $key")
fi
cat >"$w/augur.toml" <<CONF
$gate
[[listeners]]
address = "127.0.0.1:9302"
[admin]
address = "127.0.0.1:9303"
[[routes]]
pool = "be"
$route_gate
[pools.be]
policy = { kind = "p2c_ewma" }
backends = [{ address = "127.0.0.1:9301" }]
CONF
nginx -p "$w" -c "$w/backend.conf" & pids+=($!)

results=()
for bin in "$@"; do
  bin=$(realpath "$bin")
  valgrind --tool=callgrind --callgrind-out-file="$w/cg.%p" "$bin" proxy --config "$w/augur.toml" \
    >"$w/augur.log" 2>&1 & pid=$!; pids+=($pid)
  for _ in $(seq 120); do augur_served 9303 >/dev/null 2>&1 && break; sleep 1; done
  wrk -t1 -c"$conns" -d5s "${header[@]}" http://127.0.0.1:9302/ >/dev/null   # warm-up: pools, caches, lazy statics
  before=$(augur_served 9303)
  callgrind_control -z "$pid" >/dev/null 2>&1
  wrk -t1 -c"$conns" -d"${seconds}s" "${header[@]}" http://127.0.0.1:9302/ >/dev/null
  callgrind_control -d "$pid" >/dev/null 2>&1
  after=$(augur_served 9303)
  kill -TERM "$pid"; wait "$pid" 2>/dev/null
  # The dump after zeroing holds only the load; its totals line is the instruction count.
  ir=$(awk '/^(summary|totals):/{print $2; exit}' "$w/cg.$pid.1")
  n=$((after - before))
  per=$(python3 -c "print(round($ir / max($n, 1)))")
  echo "$bin: $n requests, $ir instructions, $per per request"
  results+=("$bin $n $ir $per")
  # CALLGRIND_KEEP=DIR keeps each binary's profile of the load, for callgrind_annotate.
  [ -n "${CALLGRIND_KEEP:-}" ] && cp "$w/cg.$pid.1" "$CALLGRIND_KEEP/$(basename "$bin").callgrind"
  rm -f "$w"/cg.*
done
python3 - "${results[@]}" <<'PY'
import json, sys
rows = [r.split() for r in sys.argv[1:]]
out = {"instructions_per_request": {b: int(p) for b, _, _, p in rows}}
if len(rows) > 1:
    base = int(rows[0][3])
    out["ratio_to_first"] = {b: round(int(p) / base, 4) for b, _, _, p in rows}
print(json.dumps(out))
PY
