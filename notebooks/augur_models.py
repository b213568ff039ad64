"""Reads augur's model files and evaluates them in Python, for the notebooks.

The feature encoding mirrors `engine/src/features.rs` and `engine/src/model/demand/spec.rs`; each notebook
checks its predictions against the metrics the trainer recorded in the model file, so a drift between
this copy and the engine fails the notebook run in CI.
"""

import hashlib
import json
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parent.parent
DATASET = ROOT / "datasets" / "sim-telemetry"
MODELS = ROOT / "models"

FEATURE_NAMES = [
    "ln1p_ewma_ms", "ewma_missing", "ln1p_backend_in_flight", "backend_in_flight",
    "ln1p_pool_in_flight", "ln1p_ktokens_in_flight", "ln1p_queue_depth", "ln1p_running_requests",
    "kv_cache_usage", "gpu_utilization", "gpu_memory_fraction", "scraped_missing",
    "ln1p_body_kib", "ln1p_prompt_tokens", "ln1p_max_tokens",
]
SCRAPED = ["queue_depth", "running_requests", "kv_cache_usage", "gpu_utilization", "gpu_memory_fraction"]


def load_telemetry(path=DATASET) -> pl.DataFrame:
    """Every row of a telemetry tree (date=/hour=/*.parquet)."""
    return pl.read_parquet(str(path / "**" / "*.parquet"), hive_partitioning=False)


def load_models(path=MODELS) -> dict:
    """The active model of each kind, as the manifest names it, checked against its sha256."""
    manifest = json.loads((path / "manifest.json").read_text())
    models = {}
    for kind, entry in manifest["models"].items():
        data = (path / entry["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], f"{entry['file']}: sha256 mismatch"
        models[kind] = json.loads(data)
    return models


def encode(df: pl.DataFrame) -> np.ndarray:
    """The engine's dispatch features of each row, in FEATURE_NAMES order."""
    ln1p = lambda e: e.clip(lower_bound=0).log1p()
    frac = lambda c: pl.col(c).fill_null(0.0).clip(0.0, 1.0)
    any_scraped = pl.any_horizontal([pl.col(c).is_not_null() for c in SCRAPED])
    columns = [
        ln1p(pl.col("backend_ewma_us") / 1000.0).fill_null(0.0),
        pl.col("backend_ewma_us").is_null().cast(pl.Float64),
        ln1p(pl.col("backend_in_flight").fill_null(0).cast(pl.Float64)),
        pl.col("backend_in_flight").fill_null(0).cast(pl.Float64),
        ln1p(pl.col("pool_in_flight").cast(pl.Float64)),
        ln1p(pl.col("backend_tokens_in_flight").fill_null(0).cast(pl.Float64) / 1000.0),
        ln1p(pl.col("queue_depth")).fill_null(0.0),
        ln1p(pl.col("running_requests")).fill_null(0.0),
        frac("kv_cache_usage"),
        frac("gpu_utilization"),
        frac("gpu_memory_fraction"),
        (~any_scraped).cast(pl.Float64),
        ln1p(pl.col("body_bytes").cast(pl.Float64) / 1024.0).fill_null(0.0),
        ln1p(pl.col("prompt_tokens").cast(pl.Float64)).fill_null(0.0),
        ln1p(pl.col("max_tokens").cast(pl.Float64)).fill_null(0.0),
    ]
    return df.select([c.alias(n) for c, n in zip(columns, FEATURE_NAMES)]).to_numpy()


def predict_latency_ms(model: dict, x: np.ndarray, backends, level: float) -> np.ndarray:
    """Latency at quantile `level` for rows `x` on `backends` (one name per row)."""
    params = model["params"]
    assert params["feature_names"] == FEATURE_NAMES, "the model was trained on other features"
    linear = params["log_ms"]
    log_ms = x @ np.array(linear["weights"]) + linear["intercept"]
    residuals = params["residuals"]
    k = residuals["levels"].index(level)
    offset = np.array([residuals["backends"].get(b, residuals["global"])[k] for b in backends])
    return np.exp(log_ms + offset)


def demand_features(history: np.ndarray, now_unix_s: float, horizon: int, spec: dict):
    """The engine's demand features of `history` (oldest first) for a forecast `horizon` buckets
    ahead, and the scale they were divided by."""
    n = len(history)
    scale = history[n - spec["scale_window"]:].mean() + 1.0
    features = [history[n - 1 - lag] / scale for lag in range(spec["lags"])]
    features += [history[n - w:].mean() / scale for w in spec["mean_windows"]]
    features.append(history[n - spec["scale_window"]:].std() / scale)
    for on, period in ((spec["time_of_day"], 86_400.0), (spec["day_of_week"], 7 * 86_400.0)):
        if on:
            phase = 2 * np.pi * ((now_unix_s % period) / period)
            features += [np.sin(phase), np.cos(phase)]
    window = spec["scale_window"]
    for period in spec.get("seasonal_periods", []):
        back = -(-max(horizon, 1) // period) * period
        target = max(n - 1 + horizon - back, 0)
        seasonal = history[max(target - 1, 0):min(target + 2, n)].mean()
        then = max(n - back, 0)
        level_then = history[max(then - window, 0):max(then, 1)].mean() + 1.0
        features += [seasonal / scale, seasonal / level_then]
    return np.array(features), scale


def forecast(model: dict, history: np.ndarray, now_unix_s: float):
    """(horizon_s, mean, upper) for each horizon of the demand model's shared forecasters. Only the
    ridge is mirrored here: a horizon whose method is another is refused, not guessed at."""
    params = model["params"]
    out = []
    for h in params["horizons"]:
        method = h.get("method", {"kind": "ridge"})["kind"]
        if method != "ridge":
            raise NotImplementedError(f"horizon {h['horizon_buckets']} forecasts by {method}; the notebooks mirror the ridge only")
        x, scale = demand_features(history, now_unix_s, h["horizon_buckets"], params["spec"])
        linear = h["log1p_ratio"]
        ratio = max(np.expm1(x @ np.array(linear["weights"]) + linear["intercept"]), 0.0)
        out.append((h["horizon_buckets"] * params["bucket_s"], ratio * scale, (ratio + max(h["upper_residual"], 0.0)) * scale))
    return out
