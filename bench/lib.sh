# Sourced by the bench scripts: tool checks, a work folder that goes away on exit with the
# processes started in it, the nginx backend they all proxy to, and augur's own request count.

# require TOOL...: stops the script, naming the first tool missing.
require() {
  for t in "$@"; do command -v "$t" >/dev/null || { echo "missing $t"; exit 2; }; done
}

# Sets $w (a new work folder) and $pids (append what you start); both are cleaned up on exit.
start_workdir() {
  w=$(mktemp -d); pids=()
  trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$w"' EXIT
}

# all_running: stops the script when a process it started has exited (a port already taken, say,
# which would leave the load measuring whatever else listens there).
all_running() {
  for p in "${pids[@]}"; do
    kill -0 "$p" 2>/dev/null || { echo "process $p exited at start; logs under $w:"; tail -n 3 "$w"/*.log; exit 1; }
  done
}

# nginx_backend PORT: writes $w/backend.conf, one nginx worker answering 200 "ok" on PORT.
nginx_backend() {
  cat >"$w/backend.conf" <<CONF
worker_processes 1; daemon off; pid $w/backend.pid; error_log stderr error;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$1; location / { return 200 "ok\n"; } } }
CONF
}

# bench_keys FILE: writes a keys file of one key (tenant `bench`) whose limits, at the key and the
# tenant, are never reached; sets $key to the key itself. Give FILE a folder of its own: the proxy
# watches the keys file's folder, and the logs and profiles a benchmark writes beside it would wake
# the watcher, as a real /etc/augur would not.
bench_keys() {
  key=augur-bench-key-0123456789
  local digest
  mkdir -p "$(dirname "$1")"
  digest=$(printf %s "$key" | sha256sum | cut -d' ' -f1)
  cat >"$1" <<KEYS
[tenants.bench]
limits = { requests_per_second = 1000000, concurrent = 100000 }
[[keys]]
id = "bench"
tenant = "bench"
sha256 = "$digest"
limits = { requests_per_minute = 1000000000, tokens_per_minute = 1000000000 }
KEYS
}

# augur_served ADMIN_PORT: the requests augur has answered, by its own augur_requests_total.
augur_served() {
  python3 -c "
import urllib.request
text = urllib.request.urlopen('http://127.0.0.1:$1/metrics', timeout=30).read().decode()
print(int(sum(float(l.split()[-1]) for l in text.splitlines() if l.startswith('augur_requests_total{'))))"
}
