#!/usr/bin/env python3
"""Prints the median pick time of each policy as a Markdown table, from criterion's saved estimates.

Run after `cargo bench -p augur-engine --bench policies` (criterion writes target/criterion/pick/...).
"""
import json
import os
import sys

POLICIES = ["round_robin", "weighted_round_robin", "least_conn", "random", "ring_hash", "maglev",
            "sticky_cookie", "p2c_ewma", "predictive", "predictive_churn"]
SIZES = [4, 16, 64]


def main() -> int:
    base = os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "criterion", "pick")
    print("| policy | " + " | ".join(f"{n} backends" for n in SIZES) + " |")
    print("|---" * (len(SIZES) + 1) + "|")
    for policy in POLICIES:
        cells = []
        for n in SIZES:
            path = os.path.join(base, policy, str(n), "new", "estimates.json")
            try:
                with open(path) as f:
                    median = json.load(f)["median"]["point_estimate"]
            except FileNotFoundError:
                print(f"missing {path}: run the benchmark first", file=sys.stderr)
                return 1
            cells.append(f"{median:.1f} ns")
        print(f"| `{policy}` | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
