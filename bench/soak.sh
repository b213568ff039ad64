#!/usr/bin/env bash
# Soak: augur with telemetry on, held at a fraction of its measured maximum rate for a long run.
# Passes when the resident memory grew less than 5% from the end of warm-up to the end, no request
# failed, and the telemetry rows written equal the requests augur answered (its own count).
#   bench/soak.sh AUGUR_BIN [MINUTES] [LOAD_FRACTION] [CONNECTIONS]
# Defaults: 30 minutes at 0.7 of the maximum, measured with 64 connections. The backend is nginx (one
# worker) and the loader wrk, pinned to CPU 0; augur to CPU 1. Needs nginx, wrk, taskset and pyarrow.
# wrk is a closed loop: each connection waits 1 ms between requests, and the number of connections
# that offers the target rate is found by a few short calibration runs.
# Prints a line per minute (rate, RSS) and a JSON summary as its last line.
set -u
bin=$(realpath "$1"); minutes=${2:-30}; fraction=${3:-0.7}; conns=${4:-64}
. "$(dirname "$0")/lib.sh"
require nginx wrk taskset python3
start_workdir

nginx_backend 9101
proxy_config() { # $1: port, $2: extra sections
  cat <<EOF
[proxy]
grace_period = "30s"
[[listeners]]
address = "127.0.0.1:$1"
[admin]
address = "127.0.0.1:$(($1 + 100))"
[[routes]]
pool = "web"
[pools.web]
backends = [{ address = "127.0.0.1:9101" }]
$2
EOF
}
proxy_config 9102 "" >"$w/plain.toml"
proxy_config 9103 "[telemetry]
dir = \"$w/tel\"" >"$w/telemetry.toml"

taskset -c 0 nginx -p "$w" -c "$w/backend.conf" & pids+=($!)
taskset -c 1 "$bin" proxy --config "$w/plain.toml" >"$w/plain.log" 2>&1 & plain=$!; pids+=($plain)
sleep 2

# wrk: "N requests in Ts", "Requests/sec: R", and failures (socket errors, non-2xx).
run_wrk() { # $1: port, $2: seconds, $3: connections, $4: optional Lua script
  local script=(); [ -n "${4:-}" ] && script=(-s "$4")
  taskset -c 0 wrk -t1 -c"$3" -d"${2}s" "${script[@]}" "http://127.0.0.1:$1/" 2>&1 |
    awk '/requests in/{n=$1} /Requests\/sec/{r=$2} /Socket errors/{gsub(",",""); e+=$4+$6+$8+$10} /Non-2xx/{e+=$NF}
         END{printf "%d %s %d", n, r, e+0}'
}
read -r _ max _ <<<"$(run_wrk 9102 15 "$conns")"
target=$(python3 -c "print(round($max * $fraction))")
# Each connection waits 1 ms between requests. Start from the connections that the delay plus the
# latency at the maximum would need, then scale by how far each 10 s run is from the target (the
# rate is close to proportional to connections below saturation); soak with the closest measured.
delay_ms=1
cat >"$w/pace.lua" <<EOF
function delay() return $delay_ms end
EOF
paced=$(python3 -c "print(max(1, round($target * ($delay_ms / 1000 + $conns / $max))))")
best=""; best_off=""
for _ in 1 2 3 4; do
  read -r _ rate _ <<<"$(run_wrk 9102 10 "$paced" "$w/pace.lua")"
  echo "calibration: $paced connections give $rate req/s"
  off=$(python3 -c "print(abs($rate - $target) / $target)")
  if [ -z "$best" ] || python3 -c "import sys; sys.exit(not $off < $best_off)"; then best=$paced; best_off=$off; fi
  python3 -c "import sys; sys.exit(not $off <= 0.03)" && break
  paced=$(python3 -c "print(max(1, round($paced * $target / $rate)))")
done
paced=$best
kill -TERM "$plain"; wait "$plain" 2>/dev/null
echo "maximum $max req/s; soaking at about $target req/s ($fraction) with $paced connections for $minutes min"

taskset -c 1 "$bin" proxy --config "$w/telemetry.toml" >"$w/telemetry.log" 2>&1 & tel=$!; pids+=($tel)
sleep 2
rss() { awk '/VmRSS/{print $2}' "/proc/$tel/status"; }
served=0; failed=0; warm_rss=""; rates=()
for minute in $(seq "$minutes"); do
  read -r n rate errors <<<"$(run_wrk 9103 60 "$paced" "$w/pace.lua")"
  served=$((served + n)); failed=$((failed + errors)); rates+=("$rate")
  now_rss=$(rss)
  # The first two minutes fill pools, caches and the telemetry buffers: growth counts from there.
  [ "$minute" -eq 2 ] && warm_rss=$now_rss
  echo "minute $minute: $rate req/s, $errors failed, RSS ${now_rss} KiB"
done
end_rss=$(rss)
# Requests the proxy answered, by its own count: wrk does not count the requests it cuts off when
# each minute ends, though the proxy served them (and wrote their rows).
answered=$(augur_served 9203)
kill -TERM "$tel"; wait "$tel" 2>/dev/null
rows=$(python3 -c "import pyarrow.dataset as ds; print(ds.dataset('$w/tel', format='parquet', partitioning='hive').count_rows())")
python3 - "$max" "$target" "$served" "$failed" "$answered" "$rows" "${warm_rss:-$end_rss}" "$end_rss" "${rates[*]}" <<'PY'
import json, sys, statistics
max_rps, target, served, failed, answered, rows, warm, end = (float(a) for a in sys.argv[1:9])
rates = [float(r) for r in sys.argv[9].split()]
growth = (end - warm) / warm
out = {"max_rps": max_rps, "target_rps": target, "median_rps": statistics.median(rates),
       "requests_completed_by_wrk": int(served), "requests_failed": int(failed),
       "requests_answered_by_augur": int(answered), "telemetry_rows": int(rows),
       "rss_warm_kib": int(warm), "rss_end_kib": int(end), "rss_growth": round(growth, 4),
       "pass": failed == 0 and rows == answered and growth < 0.05}
print(json.dumps(out))
PY
