//! What became of one attempt at a backend: the one classification that the attempt metrics' labels,
//! telemetry's `outcome`, outlier detection, the RTT estimate and retries all read.

use std::time::Duration;

use augur_engine::telemetry::Outcome;

use crate::config::RetryOn;

/// What became of one attempt at a backend, as far as its response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The backend answered with this status.
    Status(u16),
    /// No TCP connection.
    ConnectError,
    /// No response head in time.
    Timeout,
    /// The connection broke, or the answer was not HTTP.
    Reset,
    /// The client's request body failed on the way (too large, stalled, or the client went away):
    /// the backend is not to blame.
    ClientAbort,
}

/// Label values of [`AttemptOutcome`], indexed by [`AttemptOutcome::label_index`].
pub const ATTEMPT_LABELS: [&str; 9] = [
    "1xx",
    "2xx",
    "3xx",
    "4xx",
    "5xx",
    "connect_error",
    "timeout",
    "reset",
    "client_abort",
];

/// The index of a status's class (`1xx` to `5xx`) in [`ATTEMPT_LABELS`]; statuses outside the
/// classes count in the nearest.
pub fn status_class_index(status: u16) -> usize {
    usize::from(status / 100).clamp(1, 5) - 1
}

impl AttemptOutcome {
    /// The same outcome as telemetry (and outlier detection) classify it.
    pub fn telemetry(self) -> Outcome {
        match self {
            Self::Status(status) => Outcome::of_status(status),
            Self::ConnectError => Outcome::ConnectError,
            Self::Timeout => Outcome::Timeout,
            Self::Reset => Outcome::Reset,
            Self::ClientAbort => Outcome::ClientAbort,
        }
    }

    /// The index of this outcome's label in [`ATTEMPT_LABELS`].
    pub fn label_index(self) -> usize {
        match self {
            Self::Status(status) => status_class_index(status),
            Self::ConnectError => 5,
            Self::Timeout => 6,
            Self::Reset => 7,
            Self::ClientAbort => 8,
        }
    }

    /// Whether the backend answered, however late: the round trip says something of its load.
    pub fn measures_rtt(self) -> bool {
        matches!(self, Self::Status(_) | Self::Timeout)
    }

    /// Whether a pool that retries `on` these failures retries this outcome.
    pub fn retried_on(self, on: RetryOn) -> bool {
        match (on, self) {
            (RetryOn::ConnectFailure, Self::ConnectError)
            | (RetryOn::Reset, Self::Reset)
            | (RetryOn::Timeout, Self::Timeout) => true,
            (RetryOn::GatewayError, Self::Status(s)) => matches!(s, 502..=504),
            (RetryOn::ServerError, Self::Status(s)) => (500..600).contains(&s),
            _ => false,
        }
    }
}

/// Why an attempt got no response head from its backend.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The TCP connection to the backend could not be made (the backend never saw the request).
    #[error("could not connect to backend {backend}: {reason}")]
    Connect {
        /// Backend address.
        backend: String,
        /// The underlying error.
        reason: String,
    },
    /// The backend sent no response head in time.
    #[error("backend {backend} sent no response within {timeout:?}")]
    Timeout {
        /// Backend address.
        backend: String,
        /// The request timeout.
        timeout: Duration,
    },
    /// The connection broke or the backend spoke invalid HTTP.
    #[error("backend {backend} closed or broke the connection: {reason}")]
    Reset {
        /// Backend address.
        backend: String,
        /// The underlying error.
        reason: String,
    },
    /// The client's request body failed while it was being sent.
    #[error("the request body failed on its way to backend {backend}: {reason}")]
    ClientBody {
        /// Backend address.
        backend: String,
        /// Whether it was longer than the listener allows (else it stalled or broke).
        too_large: bool,
        /// The underlying error.
        reason: String,
    },
}

impl UpstreamError {
    /// The attempt's outcome.
    pub fn outcome(&self) -> AttemptOutcome {
        match self {
            Self::Connect { .. } => AttemptOutcome::ConnectError,
            Self::Timeout { .. } => AttemptOutcome::Timeout,
            Self::Reset { .. } => AttemptOutcome::Reset,
            Self::ClientBody { .. } => AttemptOutcome::ClientAbort,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_telemetry_and_retries_agree_on_each_outcome() {
        let outcomes = [
            AttemptOutcome::Status(200),
            AttemptOutcome::Status(404),
            AttemptOutcome::Status(503),
            AttemptOutcome::ConnectError,
            AttemptOutcome::Timeout,
            AttemptOutcome::Reset,
            AttemptOutcome::ClientAbort,
        ];
        let labels: Vec<&str> = outcomes.iter().map(|o| ATTEMPT_LABELS[o.label_index()]).collect();
        assert_eq!(
            labels,
            [
                "2xx",
                "4xx",
                "5xx",
                "connect_error",
                "timeout",
                "reset",
                "client_abort"
            ]
        );
        for outcome in outcomes {
            let telemetry = outcome.telemetry().as_str();
            match outcome {
                AttemptOutcome::Status(_) => {
                    assert!(telemetry.starts_with("ok") || telemetry.starts_with("http_"))
                }
                _ => assert_eq!(telemetry, ATTEMPT_LABELS[outcome.label_index()]),
            }
        }
        assert!(AttemptOutcome::Status(503).retried_on(RetryOn::GatewayError));
        assert!(!AttemptOutcome::Status(500).retried_on(RetryOn::GatewayError));
        assert!(AttemptOutcome::Status(500).retried_on(RetryOn::ServerError));
        assert!(AttemptOutcome::ConnectError.retried_on(RetryOn::ConnectFailure));
        assert!(!AttemptOutcome::Reset.retried_on(RetryOn::Timeout));
    }
}
