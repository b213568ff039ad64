#!/usr/bin/env bash
# Two augur builds side by side, for a change to the request path: each on CPU 1 behind one nginx
# backend on CPU 0, loaded in turn by wrk (HTTP/1.1, 64 connections) and h2load (h2c, 64 streams
# over 8 connections). Rounds interleave the builds, so machine drift hits both alike; run it again
# with the builds swapped to rule out their order.
#   bench/ab.sh AUGUR_BIN_A AUGUR_BIN_B [SECONDS_PER_RUN] [ROUNDS]
# Needs nginx, wrk, h2load (Debian nginx-light, wrk, nghttp2-client), taskset.
# Prints one line per round and build, then a JSON summary (medians and B / A) as its last line.
set -u
a=$(realpath "$1"); b=$(realpath "$2"); d=${3:-5}; rounds=${4:-4}
. "$(dirname "$0")/lib.sh"
require nginx wrk h2load taskset python3
start_workdir

nginx_backend 9601
for port in 9611 9612; do
  cat >"$w/augur-$port.toml" <<CONF
[proxy]
grace_period = "1s"
[[listeners]]
address = "127.0.0.1:$port"
[[routes]]
pool = "be"
[pools.be]
policy = { kind = "p2c_ewma" }
backends = [{ address = "127.0.0.1:9601" }]
CONF
done
taskset -c 0 nginx -p "$w" -c "$w/backend.conf" & pids+=($!)
taskset -c 1 "$a" proxy --config "$w/augur-9611.toml" >"$w/a.log" 2>&1 & pids+=($!)
taskset -c 1 "$b" proxy --config "$w/augur-9612.toml" >"$w/b.log" 2>&1 & pids+=($!)
sleep 2
all_running

echo "round build h1_rps h2c_rps"
for r in $(seq "$rounds"); do
  for build in a b; do
    port=9611; [ $build = b ] && port=9612
    h1=$(taskset -c 0 wrk -t1 -c64 -d"${d}s" "http://127.0.0.1:$port/" | awk '/Requests\/sec/{print $2}')
    h2=$(taskset -c 0 h2load -c8 -m8 -D "$d" "http://127.0.0.1:$port/" 2>&1 | awk '/^finished in/{print $4}')
    echo "$r $build ${h1:-0} ${h2:-0}" | tee -a "$w/results"
  done
done
python3 - "$w/results" <<'PY'
import sys, json, statistics as st
runs = {}
for line in open(sys.argv[1]):
    _, build, h1, h2 = line.split()
    runs.setdefault(build, []).append((float(h1), float(h2)))
med = {b: {"h1_rps": st.median(x[0] for x in v), "h2c_rps": st.median(x[1] for x in v)} for b, v in runs.items()}
print(json.dumps({"median": med,
                  "b_vs_a_h1": round(med["b"]["h1_rps"] / med["a"]["h1_rps"], 3),
                  "b_vs_a_h2c": round(med["b"]["h2c_rps"] / med["a"]["h2c_rps"], 3)}))
PY
