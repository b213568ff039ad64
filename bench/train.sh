#!/usr/bin/env bash
# Training on about 10 million telemetry rows: wall time and peak memory of `augur train`.
# Usage: bench/train.sh [rows-in-millions (default 10)] [work dir (default /tmp/augur-train-bench)]
# Generates the rows with the simulator (random routing over five scenarios, every attempt kept, one
# seed per ~1.9 million rows), then trains once and prints `/usr/bin/time -v`'s figures.
set -euo pipefail
cd "$(dirname "$0")/.."
millions="${1:-10}"
work="${2:-/tmp/augur-train-bench}"
cargo build --release --quiet
augur=target/release/augur
if [ -n "${CARGO_TARGET_DIR:-}" ]; then augur="$CARGO_TARGET_DIR/release/augur"; fi

rm -rf "$work"
mkdir -p "$work"
seed=1
rows=0
while [ "$rows" -lt $((millions * 1000000)) ]; do
  out=$("$augur" sim generate --out "$work/telemetry" --scenarios heterogeneous,degrading,flaky,gpu-mixed,bursty --sample 1 --seed "$seed" 2>/dev/null)
  rows=$((rows + $(echo "$out" | awk '{print $2}')))
  seed=$((seed + 1))
done
echo "generated $rows rows ($(du -sh "$work/telemetry" | cut -f1)) in $((seed - 1)) runs"

/usr/bin/time -v "$augur" train --telemetry "$work/telemetry" --out "$work/models" 2> "$work/time.txt"
grep -E "Elapsed \(wall clock\)|Maximum resident set size|Percent of CPU" "$work/time.txt"
