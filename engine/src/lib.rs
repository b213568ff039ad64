//! augur's pure logic: routing policies, load estimates, health, outlier and retry decisions, feature
//! encoding, and the model formats and their evaluation.
//!
//! Nothing here does I/O or reads a clock. Every function that depends on time takes `now` (a
//! [`std::time::Duration`] since an origin the caller chooses and keeps), and every random choice draws
//! from an rng it is given. The proxy and the simulator run this very code, so what the simulator shows
//! is what the proxy does.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod dispatch;
pub mod endpoint;
pub mod ewma;
pub mod features;
pub mod hash;
pub mod health;
pub mod load;
pub mod model;
pub mod policy;
pub mod prefix;
pub mod retry_budget;
pub mod scaling;
pub mod scraped;
pub mod shedding;
pub mod telemetry;

pub use dispatch::{DispatchState, RequestSize};
pub use endpoint::{Endpoint, SlowStart};
pub use ewma::PeakEwma;
pub use load::BackendLoad;
pub use policy::{PickRequest, PolicySpec, Selector};
