//! What became of one attempt: the `outcome` column's values.

/// What became of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Outcome {
    /// The backend answered 1xx to 3xx and the body arrived whole.
    #[default]
    Ok,
    /// The backend answered 4xx.
    Http4xx,
    /// The backend answered 5xx.
    Http5xx,
    /// No response head within the request timeout, or the body stalled past the idle timeout.
    Timeout,
    /// No TCP connection to the backend.
    ConnectError,
    /// The connection broke, or the response was not valid HTTP.
    Reset,
    /// The pool had no backend to offer.
    NoBackend,
    /// Every candidate was at its concurrency limit.
    RateLimited,
    /// The client went away (or its request body failed) before the exchange was over: the attempt
    /// says nothing of the backend (since schema version 2).
    ClientAbort,
    /// The pool was saturated and shed the request for its priority: nothing was sent (since schema
    /// version 4).
    Shed,
}

impl Outcome {
    /// Every outcome, in a fixed order.
    pub const ALL: [Outcome; 10] = [
        Self::Ok,
        Self::Http4xx,
        Self::Http5xx,
        Self::Timeout,
        Self::ConnectError,
        Self::Reset,
        Self::NoBackend,
        Self::RateLimited,
        Self::ClientAbort,
        Self::Shed,
    ];

    /// The value stored in the `outcome` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Http4xx => "http_4xx",
            Self::Http5xx => "http_5xx",
            Self::Timeout => "timeout",
            Self::ConnectError => "connect_error",
            Self::Reset => "reset",
            Self::NoBackend => "no_backend",
            Self::RateLimited => "rate_limited",
            Self::ClientAbort => "client_abort",
            Self::Shed => "shed",
        }
    }

    /// The outcome of a response with this status whose body arrived whole.
    pub fn of_status(status: u16) -> Self {
        match status {
            400..=499 => Self::Http4xx,
            500..=599 => Self::Http5xx,
            _ => Self::Ok,
        }
    }

    /// Whether this counts as a failure for the failure model (5xx and every transport failure).
    pub fn is_failure(self) -> bool {
        !matches!(self, Self::Ok | Self::Http4xx | Self::ClientAbort | Self::Shed)
    }

    /// Whether the attempt says how its backend did. A client abort does not: it is left out of
    /// latency estimates, the online correction, outlier detection and every training label, so a
    /// client cannot make a backend look fast (or failing) by hanging up.
    pub fn judges_backend(self) -> bool {
        !matches!(self, Self::ClientAbort | Self::Shed)
    }
}
