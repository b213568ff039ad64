//! Integration tests of the proxy through real sockets on 127.0.0.1 with real backend servers.
//! One test binary (modules below) keeps link time down.

mod backends;
mod cache;
mod compression;
mod dashboard;
mod discovery;
mod edge;
mod fallback;
mod gate;
mod harness;
mod jwt;
mod limiter;

mod gpu;
mod headers;
mod health;
mod hints;
mod lifecycle;
mod models;
mod observability;
mod policies;
mod retries;
mod streaming;
mod telemetry;
mod timeouts;
mod tls;
mod traces;
mod upstreams;
mod usage;
