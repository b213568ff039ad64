#!/usr/bin/env bash
# The data plane beside nginx, one core each (issue 14): the peers comparison, then one client
# connection (the latency each proxy adds), 1,000 connections, 64 KB and 1 MB bodies each way,
# h2c clients, and the memory 10,000 idle keep-alive connections hold; and at 64 connections, the
# yardstick of the stack itself: hyper's server and pooled client forwarding with nothing else
# (proxy/examples/bare_hyper_proxy.rs, built here unless BARE_BIN names it). Proxies on CPU 1; the
# backend (nginx, 1 worker) and the load generators on CPU 0. Rounds interleave the proxies.
#   bench/data-plane.sh AUGUR_BIN [SECONDS_PER_RUN] [ROUNDS]
# Needs nginx, haproxy, wrk, h2load (Debian nginx-light, haproxy, wrk, nghttp2-client), taskset.
# Prints what it measures as it goes, then a JSON summary (medians and ratios) as its last line.
set -u
bin=$(realpath "$1"); d=${2:-5}; rounds=${3:-3}
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
require nginx haproxy wrk h2load taskset python3
start_workdir
bare=${BARE_BIN:-$here/../target/release/examples/bare_hyper_proxy}
[ -n "${BARE_BIN:-}" ] || (cd "$here/.." && cargo build -q --release -p augur-proxy --example bare_hyper_proxy) ||
  { echo "cannot build the bare hyper proxy"; exit 2; }
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

echo "--- the peers script (${d}s runs, $rounds rounds, 64 connections, then 1)"
peers="$here/../../shared/bench/peers/run.sh"
for conns in ${PEERS_CONNECTIONS-64 1}; do
  "$peers" "$bin" "$d" "$rounds" "$conns" | tee /dev/stderr | tail -1 >"$w/peers-$conns.json"
done

# The backend: "ok" on /, 64 KB and 1 MB files, and uploads read whole and answered "ok".
mkdir -p "$w/www"
head -c 65536 /dev/urandom >"$w/www/64k"
head -c 1048576 /dev/urandom >"$w/www/1m"
chmod 755 "$w" "$w/www"; chmod 644 "$w"/www/*   # nginx's workers run as another user
cat >"$w/backend.conf" <<CONF
worker_processes 1; daemon off; pid $w/backend.pid; error_log $w/backend.err error;
events { worker_connections 16384; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:9501; root $w/www; client_max_body_size 2m; client_body_buffer_size 2m;
    location = / { return 200 "ok\n"; }
    location = /up { return 200 "ok\n"; } } }
CONF
cat >"$w/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $w/nginx.pid; error_log $w/nginx.err error;
events { worker_connections 19000; }
http { access_log off; keepalive_requests 1000000; client_max_body_size 2m;
  upstream be { server 127.0.0.1:9501; keepalive 64; }
  server { listen 127.0.0.1:9511; listen 127.0.0.1:9512 http2;
    location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_request_buffering off; } } }
CONF
cat >"$w/augur.toml" <<CONF
[proxy]
grace_period = "1s"
[[listeners]]
address = "127.0.0.1:9521"
limits = { max_connections = 30000 }
[[routes]]
pool = "be"
[pools.be]
policy = { kind = "p2c_ewma" }
backends = [{ address = "127.0.0.1:9501" }]
CONF
taskset -c 0 nginx -p "$w" -c "$w/backend.conf" & pids+=($!)
taskset -c 1 nginx -p "$w" -c "$w/nginx.conf" & pids+=($!)
taskset -c 1 "$bin" proxy --config "$w/augur.toml" >"$w/augur.log" 2>&1 & augur_pid=$!; pids+=($augur_pid)
taskset -c 1 "$bare" 127.0.0.1:9531 127.0.0.1:9501 >"$w/bare.log" 2>&1 & bare_pid=$!; pids+=($bare_pid)
sleep 2
all_running
nginx_worker=$(pgrep -f "nginx: worker process" -P "$(cat "$w/nginx.pid")")
rss_kb() { awk '/^VmRSS/{print $2}' "/proc/$1/status"; }

# wrk_run URL CONNECTIONS [LUA]: "RPS p50_ms errors", errors being non-2xx answers, failed
# connects and writes, and timeouts. Reads that find the connection closed are not errors: nginx
# closes a connection after an upload it streamed (proxy_request_buffering off) once answered.
wrk_run() {
  local script=()
  [ -n "${3:-}" ] && script=(-s "$3")
  taskset -c 0 wrk -t1 -c"$2" -d"${d}s" --latency "${script[@]}" "$1" 2>&1 |
    awk 'function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
         /Requests\/sec/{r=$2} /^ +50%/{p=ms($2)} /Non-2xx/{e+=$NF} /Socket errors/{gsub(",",""); e+=$4+$8+$10}
         END{printf "%s %s %s", r, p, e+0}'
}
for size in 65536 1048576; do
  printf 'wrk.method = "POST"\nwrk.body = string.rep("x", %d)\nwrk.headers["Content-Type"] = "application/octet-stream"\n' \
    "$size" >"$w/post-$size.lua"
done

echo "--- cases: name proxy RPS p50_ms errors [rss_kb]"
for r in $(seq "$rounds"); do
  echo "$r c1 direct $(wrk_run http://127.0.0.1:9501/ 1) 0" | tee -a "$w/results"
  for proxy in nginx bare augur; do
    case $proxy in nginx) port=9511 pid=$nginx_worker;; bare) port=9531 pid=$bare_pid;; augur) port=9521 pid=$augur_pid;; esac
    echo "$r c64 $proxy $(wrk_run "http://127.0.0.1:$port/" 64) $(rss_kb "$pid")" | tee -a "$w/results"
  done
  for proxy in nginx augur; do
    if [ $proxy = nginx ]; then port=9511; pid=$nginx_worker; else port=9521; pid=$augur_pid; fi
    base=http://127.0.0.1:$port
    for case in "c1 $base/ 1" "c1000 $base/ 1000" "get64k $base/64k 64" "get1m $base/1m 64" \
                "post64k $base/up 64 $w/post-65536.lua" "post1m $base/up 64 $w/post-1048576.lua"; do
      set -- $case
      res=$(wrk_run "$2" "$3" "${4:-}")
      echo "$r $1 $proxy $res $(rss_kb "$pid")" | tee -a "$w/results"
    done
    # h2c with prior knowledge: 64 streams over 8 connections.
    h2url=$base/; [ $proxy = nginx ] && h2url=http://127.0.0.1:9512/
    h2=$(taskset -c 0 h2load -c8 -m8 -D "$d" "$h2url" 2>&1 |
      awk '/^finished in/{r=$4} /^requests:/{e+=$10+$12+$14} /^status codes:/{e+=$5+$7+$9} END{printf "%s 0 %s", r, e+0}')
    echo "$r h2c $proxy $h2 $(rss_kb "$pid")" | tee -a "$w/results"
  done
done

echo "--- 10,000 idle keep-alive connections to fresh proxies: RSS before and after, KB"
# Fresh processes: a proxy that served the cases above reuses the memory it freed then, which
# would hide what the idle connections take.
sed 's/9511/9513/; s/listen 127.0.0.1:9512 http2;//; s#pid [^;]*;#pid '"$w"'/nginx-idle.pid;#' "$w/nginx.conf" >"$w/nginx-idle.conf"
sed 's/9521/9523/' "$w/augur.toml" >"$w/augur-idle.toml"
taskset -c 1 nginx -p "$w" -c "$w/nginx-idle.conf" & pids+=($!)
taskset -c 1 "$bin" proxy --config "$w/augur-idle.toml" >"$w/augur-idle.log" 2>&1 & augur_pid=$!; pids+=($augur_pid)
sleep 2
all_running
nginx_worker=$(pgrep -f "nginx: worker process" -P "$(cat "$w/nginx-idle.pid")")
idle() {
  python3 - "$1" 10000 <<'PY' &
import socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
conns = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
    conns.append(s)
for s in conns:
    got = b""
    while not got.endswith(b"ok\n"):
        chunk = s.recv(4096)
        if not chunk:
            sys.exit(f"a connection closed before its answer: {got!r}")
        got += chunk
print("open", flush=True)
time.sleep(30)
PY
}
for proxy in nginx augur; do
  if [ $proxy = nginx ]; then port=9513; pid=$nginx_worker; else port=9523; pid=$augur_pid; fi
  before=$(rss_kb "$pid")
  idle "$port" >"$w/idle-$proxy.out" 2>&1; client=$!
  for _ in $(seq 120); do grep -q open "$w/idle-$proxy.out" && break; sleep 0.5; done
  grep -q open "$w/idle-$proxy.out" || { echo "idle connections to $proxy failed: $(cat "$w/idle-$proxy.out")"; exit 1; }
  sleep 1
  after=$(rss_kb "$pid")
  kill "$client" 2>/dev/null; wait "$client" 2>/dev/null
  echo "idle $proxy $before $after" | tee -a "$w/idle"
  sleep 2
done
for log in nginx backend; do
  [ -s "$w/$log.err" ] && { echo "--- $log's errors (last 3 of $(wc -l <"$w/$log.err"))"; tail -3 "$w/$log.err"; }
done

python3 - "$w" <<'PY'
import os, sys, json, statistics as st
w = sys.argv[1]
peers = {c: json.load(open(f"{w}/peers-{c}.json")) for c in ("64", "1") if os.path.exists(f"{w}/peers-{c}.json")}
res = {}
for line in open(f"{w}/results"):
    r, case, proxy, rps, p50, err, rss = line.split()
    res.setdefault((case, proxy), []).append((float(rps), float(p50), int(err), int(rss)))
med = lambda case, proxy, k: st.median(x[k] for x in res[(case, proxy)])
sizes = {"get64k": 65536, "get1m": 1 << 20, "post64k": 65536, "post1m": 1 << 20}
cases = {}
for case in ("c1", "c1000", "get64k", "get1m", "post64k", "post1m", "h2c"):
    row = {}
    for proxy in ("nginx", "augur"):
        row[proxy] = {"rps": med(case, proxy, 0), "errors": sum(x[2] for x in res[(case, proxy)]),
                      "rss_kb_max": max(x[3] for x in res[(case, proxy)])}
        if case in sizes:
            row[proxy]["mb_per_s"] = round(row[proxy]["rps"] * sizes[case] / 1e6, 1)
    row["augur_vs_nginx"] = round(row["augur"]["rps"] / row["nginx"]["rps"], 3)
    cases[case] = row
direct_p50 = med("c1", "direct", 1)
idle = {}
for line in open(f"{w}/idle"):
    _, proxy, before, after = line.split()
    idle[proxy] = round((int(after) - int(before)) / 10000, 2)
summary = {}
if "64" in peers:
    summary["peers_64"] = {k: peers["64"][k] for k in ("augur_vs_nginx_rps", "augur_vs_haproxy_rps", "augur_vs_haproxy_p99", "pred_tel_vs_augur_rps")}
added = {"p50": {p: round((med("c1", p, 1) - direct_p50) * 1000, 1) for p in ("nginx", "augur")}}
if "1" in peers:
    one = peers["1"]["median"]
    added["mean_from_peers_rps"] = {p: round((1 / one[p]["rps"] - 1 / one["direct"]["rps"]) * 1e6, 1) for p in ("nginx", "haproxy", "augur")}
summary["one_connection_added_us"] = added
summary["cases"] = cases
stack = {p: med("c64", p, 0) for p in ("nginx", "bare", "augur")}
summary["c64_yardstick"] = {"rps": stack, "bare_hyper_vs_nginx": round(stack["bare"] / stack["nginx"], 3),
                            "augur_vs_bare_hyper": round(stack["augur"] / stack["bare"], 3)}
summary["idle_kb_per_connection"] = idle
print(json.dumps(summary))
PY
