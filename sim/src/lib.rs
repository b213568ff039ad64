//! augur's simulator: backend behaviours (CPU services, GPU inference nodes with continuous
//! batching), scheduled faults, and traffic (synthetic or replayed from a real trace), run as a
//! discrete-event simulation that drives the engine's policies in simulated time ([`des`]), or as real
//! HTTP servers on loopback ([`http`]).
#![forbid(unsafe_code)]

pub mod behaviour;
pub mod des;
pub mod faults;
pub mod gpu;
pub mod http;
pub mod prompt;
pub mod report;
pub mod scenario;
pub mod trace;
pub mod traffic;

pub use des::{simulate, simulate_with_models, RowSink};
pub use report::{PolicyReport, Report};
pub use scenario::{scenario, Scenario, SCENARIOS};
