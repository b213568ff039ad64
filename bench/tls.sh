#!/usr/bin/env bash
# TLS termination beside nginx, one core each: the same ECDSA P-256 certificate, TLS 1.3, keep-alive
# clients, the same plain nginx backend. Also each proxy without TLS, so the cost of TLS shows per
# proxy. Proxies on CPU 1; the backend and wrk on CPU 0. Rounds interleave the proxies.
#   bench/tls.sh AUGUR_BIN [SECONDS_PER_RUN] [ROUNDS] [CONNECTIONS]
# Needs nginx (with ssl, as Debian's nginx-light has), wrk, openssl, taskset.
# Prints one line per round, then a JSON summary (medians and ratios) as its last line.
set -u
bin=$(realpath "$1"); d=${2:-8}; rounds=${3:-3}; conns=${4:-64}
. "$(dirname "$0")/lib.sh"
require nginx wrk openssl taskset python3
start_workdir

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=bench.test -addext subjectAltName=DNS:bench.test,IP:127.0.0.1 \
  -keyout "$w/key.pem" -out "$w/cert.pem" 2>/dev/null
nginx_backend 9401
cat >"$w/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $w/nginx.pid; error_log stderr error;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream be { server 127.0.0.1:9401; keepalive 64; }
  server { listen 127.0.0.1:9411; listen 127.0.0.1:9412 ssl;
    ssl_certificate $w/cert.pem; ssl_certificate_key $w/key.pem; ssl_protocols TLSv1.2 TLSv1.3;
    location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
CONF
cat >"$w/augur.toml" <<CONF
[proxy]
grace_period = "1s"
[[listeners]]
address = "127.0.0.1:9421"
[[listeners]]
address = "127.0.0.1:9422"
tls = { certificates = [{ cert = "$w/cert.pem", key = "$w/key.pem" }] }
[[routes]]
pool = "be"
[pools.be]
policy = { kind = "p2c_ewma" }
backends = [{ address = "127.0.0.1:9401" }]
CONF
taskset -c 0 nginx -p "$w" -c "$w/backend.conf" & pids+=($!)
taskset -c 1 nginx -p "$w" -c "$w/nginx.conf" & pids+=($!)
taskset -c 1 "$bin" proxy --config "$w/augur.toml" >"$w/augur.log" 2>&1 & pids+=($!)
sleep 2
load() { taskset -c 0 wrk -t1 -c"$conns" -d"${d}s" --latency "$1" 2>&1 |
  awk '/Requests\/sec/{r=$2} /^ +99%/{p=$2; if (p ~ /us$/) p=p/1000; else if (p ~ /ms$/) p=p+0; else if (p ~ /s$/) p=p*1000}
       /Non-2xx/{e+=$NF} /Socket errors/{gsub(",",""); e+=$4+$6+$8+$10} END{printf "%s %s %s", r, p, e+0}'; }
names=(nginx nginx_tls augur augur_tls)
urls=(http://127.0.0.1:9411/ https://127.0.0.1:9412/ http://127.0.0.1:9421/ https://127.0.0.1:9422/)
echo "round | RPS p99_ms errors for: ${names[*]}"
for r in $(seq "$rounds"); do
  line="$r"; for i in "${!urls[@]}"; do res=$(load "${urls[$i]}"); echo "$r ${names[$i]} $res" >>"$w/results"; line="$line | $res"; done; echo "$line"
done
python3 - "$w/results" <<'PY'
import sys, json, statistics as st
res = {}
for line in open(sys.argv[1]):
    r, name, rps, p99, err = line.split()
    res.setdefault(name, []).append((float(rps), float(p99), int(err)))
med = {n: {"rps": st.median(x[0] for x in v), "p99_ms": st.median(x[1] for x in v), "errors": sum(x[2] for x in v)} for n, v in res.items()}
def ratio(a, b, k): return round(med[a][k] / med[b][k], 3)
print(json.dumps({"median": med,
  "augur_tls_vs_nginx_tls_rps": ratio("augur_tls", "nginx_tls", "rps"),
  "augur_vs_nginx_rps": ratio("augur", "nginx", "rps"),
  "tls_cost_nginx": round(1 - ratio("nginx_tls", "nginx", "rps"), 3),
  "tls_cost_augur": round(1 - ratio("augur_tls", "augur", "rps"), 3),
  "augur_tls_vs_nginx_tls_p99": ratio("augur_tls", "nginx_tls", "p99_ms")}))
PY
