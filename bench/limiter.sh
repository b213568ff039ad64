#!/usr/bin/env bash
# What the door costs (the route open, then behind a key with in-process limits) and what the
# shared (Redis) limiter adds, with the proxy saturated and at 70% of its saturated throughput: the
# same route (for the gated sides, a client key; limits at key, tenant and route, none reached)
# through one augur pinned to core 0. The gated route sends its RateLimit headers on refusals only
# (the default); a side with `rate_limit_headers = "always"` shows what telling every response costs.
#   bench/limiter.sh AUGUR_BIN [SECONDS]
# Each side: saturated runs (wrk -c64, ROUNDS rounds side by side) give its median peak; then a
# paced run offers 70% of the in-process peak to the two limiters (64 connections, each pausing between requests, wrk's `delay`), and
# reports the rate achieved, the latency (p50, p99) and the proxy's CPU per request (its utime +
# stime over the requests it answered). wrk, nginx and redis-server share core 1.
# Needs wrk, nginx, redis-server, taskset, python3.
set -u
bin=$1; seconds=${2:-10}
. "$(dirname "$0")/lib.sh"
require wrk nginx redis-server taskset python3
start_workdir

nginx_backend 9401
taskset -c 1 nginx -c "$w/backend.conf" & pids+=($!)
taskset -c 1 redis-server --port 9479 --bind 127.0.0.1 --save "" --appendonly no >/dev/null & pids+=($!)
bench_keys "$w/keys/keys.toml"

write_config() { # write_config NAME LIMITER_SECTION
  cat >"$w/$1.toml" <<CONF
[auth]
keys_file = "$w/keys/keys.toml"
$2
[[listeners]]
address = "127.0.0.1:9400"
[admin]
address = "127.0.0.1:9402"
[[routes]]
pool = "p"
auth = "key"
limits = { requests_per_second = 1000000 }
[pools.p]
backends = [{ address = "127.0.0.1:9401" }]
CONF
}
write_config local ""
# The same gated route with its RateLimit headers on every response, not on refusals only.
sed -e 's/^auth = "key"/&\nrate_limit_headers = "always"/' "$w/local.toml" >"$w/always.toml"
# The same route open (no key, no limits): what the door itself costs.
sed -e '/^\[auth\]/,/^keys_file/d' -e '/^auth = "key"/d' -e '/^limits = /d' "$w/local.toml" >"$w/open.toml"
write_config redis "[limiter]
redis_url = \"redis://127.0.0.1:9479\"
on_error = \"closed\""

cat >"$w/paced.lua" <<'LUA'
local pause = tonumber(os.getenv("PAUSE_MS"))
function delay() return pause end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %.1f %.1f %.1f\n", summary.requests, summary.duration / 1e6,
    latency:percentile(50), latency:percentile(99)))
end
LUA
cat >"$w/peak.lua" <<'LUA'
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %.1f %.1f %.1f\n", summary.requests, summary.duration / 1e6,
    latency:percentile(50), latency:percentile(99)))
end
LUA

cpu_seconds() { # cpu_seconds PID: utime + stime
  python3 -c "import os; f=open('/proc/$1/stat').read().rsplit(')',1)[1].split(); print((int(f[11])+int(f[12]))/os.sysconf('SC_CLK_TCK'))"
}

# run NAME SCRIPT [PAUSE_MS]: prints "rps p50_us p99_us cpu_us_per_request"
run() {
  taskset -c 0 "$bin" proxy --config "$w/$1.toml" >/dev/null 2>&1 & local pid=$!
  for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:9402/readyz" && break; sleep 0.1; done
  # Warm up (and, with Redis, connect).
  taskset -c 1 wrk -t1 -c8 -d2s -H "Authorization: Bearer $key" http://127.0.0.1:9400/ >/dev/null
  local before served_before
  before=$(cpu_seconds $pid); served_before=$(augur_served 9402)
  local out
  out=$(PAUSE_MS=${3:-0} taskset -c 1 wrk -t1 -c64 -d${seconds}s -s "$w/$2.lua" -H "Authorization: Bearer $key" http://127.0.0.1:9400/ | grep RESULT)
  local after served_after
  after=$(cpu_seconds $pid); served_after=$(augur_served 9402)
  kill $pid; wait $pid 2>/dev/null
  python3 - "$out" "$before" "$after" "$served_before" "$served_after" <<'PY'
import sys
_, requests, duration, p50, p99 = sys.argv[1].split()
cpu = float(sys.argv[3]) - float(sys.argv[2]); served = int(sys.argv[5]) - int(sys.argv[4])
print(f"{int(requests)/float(duration):.0f} {float(p50):.0f} {float(p99):.0f} {cpu/served*1e6:.1f}")
PY
}

echo "side   phase      rps  p50_us  p99_us  cpu_us/req"
# Peaks: ROUNDS rounds (default 3) of open, local and Redis side by side; the medians are compared.
opens=(); locals=(); alwayses=(); redises=()
for _ in $(seq "${ROUNDS:-3}"); do
  read -r rps p50 p99 cpu < <(run open peak); echo "open   peak   $rps $p50 $p99 $cpu"; opens+=("$rps")
  read -r rps p50 p99 cpu < <(run local peak); echo "local  peak   $rps $p50 $p99 $cpu"; locals+=("$rps")
  read -r rps p50 p99 cpu < <(run always peak); echo "always peak   $rps $p50 $p99 $cpu"; alwayses+=("$rps")
  read -r rps p50 p99 cpu < <(run redis peak); echo "redis  peak   $rps $p50 $p99 $cpu"; redises+=("$rps")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
peak_open=$(median "${opens[@]}"); peak_local=$(median "${locals[@]}"); peak_redis=$(median "${redises[@]}")
peak_always=$(median "${alwayses[@]}")
# 64 connections offering 70% of the in-process peak: each pauses 64/rate less its own latency.
pause=$(python3 -c "print(max(0, round(64 / (0.7 * $peak_local) * 1000 - 1)))")
read -r rps p50 p99 cpu_local < <(run local paced "$pause"); echo "local  70%    $rps $p50 $p99 $cpu_local"
read -r rps p50 p99 cpu_redis < <(run redis paced "$pause"); echo "redis  70%    $rps $p50 $p99 $cpu_redis"
# Besides the ratio of medians, the median of each round's own ratio: the sides of one round ran
# minutes apart at most, so a machine whose speed drifts between rounds moves both alike.
paired=$(python3 -c "
import statistics, sys
o, l = [float(x) for x in '${opens[*]}'.split()], [float(x) for x in '${locals[*]}'.split()]
print('%.3f' % statistics.median(b / a for a, b in zip(o, l)))")
python3 -c "print('{\"peak_ratio_local_over_open\": %.3f, \"paired_ratio_local_over_open\": %s, \"peak_ratio_always_headers_over_open\": %.3f, \"peak_ratio_redis_over_local\": %.3f, \"cpu_per_request_added_us_at_70pct\": %.1f}' % ($peak_local / $peak_open, $paired, $peak_always / $peak_open, $peak_redis / $peak_local, $cpu_redis - $cpu_local))"
