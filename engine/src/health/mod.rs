//! Whether a backend may take requests: active health checks ([`check`]), outlier detection from the
//! requests themselves ([`outlier`]), and the pool's view that combines them with drains and
//! warm-ups into the candidates a policy may pick ([`pool`]).

pub mod check;
pub mod outlier;
pub mod pool;
