#!/usr/bin/env bash
# The trainer's models against their baselines, scenario by scenario: each scenario's telemetry
# (random routing, every attempt kept) is generated and trained on alone, and the validation metrics
# of the latency and failure models are printed beside their baselines'.
# Usage: bench/train_scenarios.sh [work dir (default /tmp/augur-train-scenarios)]
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-/tmp/augur-train-scenarios}"
cargo build --release --quiet
augur="${CARGO_TARGET_DIR:-target}/release/augur"
rm -rf "$work"
printf "%-14s %10s %10s %14s %10s %14s %14s\n" scenario "model MAE" "EWMA MAE" "Peak-EWMA MAE" "Brier" "base rate" "failure share"
for scenario in steady heterogeneous degrading flaky gpu-mixed spike; do
  "$augur" sim generate --out "$work/$scenario/telemetry" --scenarios "$scenario" --sample 1 >/dev/null 2>&1
  "$augur" train --telemetry "$work/$scenario/telemetry" --out "$work/$scenario/models" --json > "$work/$scenario/summary.json" || true
  python3 - "$scenario" "$work/$scenario/summary.json" <<'PY'
import json, sys
scenario, path = sys.argv[1], sys.argv[2]
models = {m["kind"]: m for m in json.load(open(path))["models"]}
def metric(kind, where, name):
    e = models[kind].get("evaluation")
    if not e:
        return "skipped"
    values = e["model"] if where == "model" else e["baselines"][where]
    return f"{values[name]:.4g}"
print(f"{scenario:<14} {metric('latency', 'model', 'mae_ms'):>10} {metric('latency', 'ewma', 'mae_ms'):>10} "
      f"{metric('latency', 'peak_ewma', 'mae_ms'):>14} {metric('failure', 'model', 'brier'):>10} {metric('failure', 'base_rate', 'brier'):>14} {metric('failure', 'model', 'validation_failure_rate'):>14}")
PY
done
