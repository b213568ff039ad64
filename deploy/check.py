#!/usr/bin/env python3
"""Checks that the deployment recipes under deploy/ agree with each other and with the proxy's config,
which no schema validator can see: the ports, paths, secrets and pool names one file names and
another must match. `tests/deploy.rs` runs it; it needs PyYAML (which kubernetes-validate brings).

Prints one line per disagreement and exits 1 if there is any."""

import pathlib
import re
import sys
import tomllib

import yaml

HERE = pathlib.Path(__file__).resolve().parent
K8S = HERE / "kubernetes"
problems = []


def check(ok, message):
    if not ok:
        problems.append(message)


def documents(name):
    with open(K8S / name) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def port(address):
    return int(address.rsplit(":", 1)[1])


kustomization = documents("kustomization.yaml")[0]
for resource in kustomization["resources"]:
    check((K8S / resource).is_file(), f"kustomization.yaml: resource {resource} does not exist")
generated = {g["name"]: g["files"] for g in kustomization.get("configMapGenerator", [])}
check(generated.get("augur-config") == ["augur.toml"], "kustomization.yaml: augur-config must be generated from augur.toml")
namespace = kustomization["namespace"]

with open(K8S / "augur.toml", "rb") as f:
    config = tomllib.load(f)
listener_port = port(config["listeners"][0]["address"])
admin_port = port(config["admin"]["address"])
pools = config["pools"]

objects = {(d["kind"], d["metadata"]["name"]): d for name in kustomization["resources"] for d in documents(name)}
deployment = objects[("Deployment", "augur-proxy")]
pod = deployment["spec"]["template"]["spec"]
container = pod["containers"][0]
ports = {p["name"]: p["containerPort"] for p in container["ports"]}
check(ports.get("http") == listener_port, f"proxy.yaml: container port http is {ports.get('http')}, the listener's is {listener_port}")
check(ports.get("admin") == admin_port, f"proxy.yaml: container port admin is {ports.get('admin')}, the admin API's is {admin_port}")
check(container["args"][-2:] == ["--config", "/etc/augur/augur.toml"], "proxy.yaml: the proxy must read /etc/augur/augur.toml")
mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
volumes = {v["name"]: v for v in pod["volumes"]}
check(mounts.get("config") == "/etc/augur" and volumes["config"]["configMap"]["name"] == "augur-config",
      "proxy.yaml: augur-config must be mounted at /etc/augur")
for key in ("telemetry", "models"):
    check(config[key]["dir"].startswith(mounts.get("data", "?") + "/"), f"augur.toml: {key}.dir is not on the data volume")
check(container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}, "proxy.yaml: readiness must be /readyz on admin")
check(container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}, "proxy.yaml: liveness must be /healthz on admin")
grace = config["proxy"].get("grace_period", "30s")
check(pod["terminationGracePeriodSeconds"] > int(grace.rstrip("s")), "proxy.yaml: the pod's grace must outlast the proxy's grace_period")

# Every secret the config reads from the environment is set from the Secret, and nothing else.
wanted_env = {config["admin"]["token_env"], config["admin"]["read_token_env"], config["telemetry"]["client_hash_key_env"]}
env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
check(set(env) == wanted_env, f"proxy.yaml: env {sorted(env)} is not what augur.toml reads, {sorted(wanted_env)}")
read_token_key = env.get(config["admin"]["read_token_env"], {}).get("key")

admin_service = objects[("Service", "augur-admin")]
service_ports = {p["name"]: p for p in admin_service["spec"]["ports"]}
check(service_ports["admin"]["targetPort"] == "admin", "proxy.yaml: augur-admin must target the admin port")
admin_service_port = service_ports["admin"]["port"]

# KEDA reads a pool's hints, with the read-only token.
keda = {d["kind"]: d for d in documents("keda.yaml")}
trigger = keda["ScaledObject"]["spec"]["triggers"][0]
match = re.fullmatch(r"http://augur-admin\.(\w[\w-]*)\.svc:(\d+)/admin/hints/([\w.-]+)", trigger["metadata"]["url"])
check(match is not None, f"keda.yaml: url {trigger['metadata']['url']} is not augur-admin's /admin/hints/POOL")
if match:
    check(match[1] == namespace, f"keda.yaml: url names namespace {match[1]}, the manifests' is {namespace}")
    check(int(match[2]) == admin_service_port, f"keda.yaml: url port {match[2]} is not augur-admin's {admin_service_port}")
    check(match[3] in pools, f"keda.yaml: pool {match[3]} is not in augur.toml")
check(trigger["type"] == "metrics-api" and trigger["metadata"]["valueLocation"] == "desired_replicas",
      "keda.yaml: the trigger must read desired_replicas with metrics-api")
check(trigger["metadata"]["targetValue"] == "1" and trigger["metricType"] == "AverageValue",
      "keda.yaml: targetValue 1 with AverageValue, so the HPA asks for desired_replicas")
auth = keda["TriggerAuthentication"]
check(trigger["metadata"]["authMode"] == "bearer" and trigger["authenticationRef"]["name"] == auth["metadata"]["name"],
      "keda.yaml: the trigger must use bearer auth from its TriggerAuthentication")
check(auth["spec"]["secretTargetRef"][0] == {"parameter": "token", "name": "augur-secrets", "key": read_token_key},
      "keda.yaml: the bearer token must be the read-only token")

# The Prometheus variant sums the forecasts of a pool, one replica per capacity at the target.
variant = documents("keda-prometheus.yaml")[0]
prometheus = variant["spec"]["triggers"][0]["metadata"]
pool_in_query = re.search(r'pool="([^"]+)"', prometheus["query"])
check(pool_in_query and pool_in_query[1] in pools, "keda-prometheus.yaml: the query must name a pool of augur.toml")
if pool_in_query and pool_in_query[1] in pools:
    capacity = pools[pool_in_query[1]]["scaling"]["capacity_rps"]
    target = config["hints"].get("target_utilisation", 0.7)
    check(abs(float(prometheus["threshold"]) - capacity * target) < 1e-9,
          f"keda-prometheus.yaml: threshold {prometheus['threshold']} is not capacity_rps x target_utilisation = {capacity * target}")
check(variant["spec"]["scaleTargetRef"] == keda["ScaledObject"]["spec"]["scaleTargetRef"],
      "keda-prometheus.yaml: must scale what keda.yaml scales")

# The trainer reads the proxies' telemetry and writes where they load models from.
trainer = objects[("CronJob", "augur-trainer")]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
args = trainer["args"]
check(args[args.index("--telemetry") + 1] == config["telemetry"]["dir"], "trainer.yaml: --telemetry is not augur.toml's telemetry.dir")
check(args[args.index("--out") + 1] == config["models"]["dir"], "trainer.yaml: --out is not augur.toml's models.dir")

# The systemd units use the paths of the Debian-style layout the README gives.
units = {p.name: p.read_text() for p in (HERE / "systemd").glob("augur-*")}
check("--config /etc/augur/augur.toml" in units["augur-proxy.service"], "augur-proxy.service: must read /etc/augur/augur.toml")
check("--telemetry /var/lib/augur/telemetry --out /var/lib/augur/models" in units["augur-train.service"],
      "augur-train.service: must train on /var/lib/augur")

for problem in problems:
    print(problem)
sys.exit(1 if problems else 0)
