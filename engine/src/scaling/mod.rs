//! Autoscaling hints: each pool's demand history, forecasts of it over several horizons (the
//! trainer's demand model, or a trend-and-level fallback while there is none), and the scaling
//! decision that turns a forecast into desired replicas without flapping.
//!
//! The proxy and the backtest run this same code: the proxy with its wall clock, the backtest and the
//! tests in simulated time.

mod decision;
mod fallback;
mod forecaster;
mod history;
mod replay;
mod spike;

pub use decision::{Decision, Direction, Scaler, ScalingPolicy};
pub use fallback::TrendLevel;
pub use forecaster::{ForecastSource, Forecaster, PoolForecast};
pub use history::DemandHistory;
pub use replay::{replay, Change};
pub use spike::{Spike, SpikeRule, SpikeVerdict, SpikeWatch};
