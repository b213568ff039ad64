//! Why a training run stopped, and the exit code each reason maps to; why one model could not be
//! fitted.

use std::path::PathBuf;

/// Exit code of a run that promoted every model it trained (or had no new data).
pub const EXIT_PROMOTED: u8 = 0;
/// Exit code of a failure other than bad input: I/O, another run holding the lock.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code of bad input: no telemetry, a corrupt file, another schema, too few rows.
pub const EXIT_BAD_INPUT: u8 = 2;
/// Exit code of a run in which some model did not beat its baseline and was not promoted.
pub const EXIT_NOT_PROMOTED: u8 = 3;

/// A training run that could not finish.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The input is unusable; the message names the file or column and what was expected.
    #[error("{0}")]
    BadInput(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Another run holds the models directory's lock.
    #[error("another training run holds {0}; not starting a second one")]
    Locked(PathBuf),
}

impl TrainError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::BadInput(_) => EXIT_BAD_INPUT,
            Self::Io { .. } | Self::Locked(_) => EXIT_FAILURE,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
}

/// Why a model could not be fitted or backtested. A training run goes on without that model kind
/// (the previous model of the kind stays active); a backtest stops.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FitError {
    /// Fewer rows, failures, windows or forecast origins than the fit needs; the message says how
    /// many there were and how many it needs.
    #[error("{0}")]
    TooLittleData(String),
    /// A setting rules the fit out (a horizon that is not a whole number of buckets, no horizons).
    #[error("{0}")]
    BadSettings(String),
    /// The solver failed on data it was given.
    #[error("{what}: the {method} fit failed: {reason}")]
    Solver {
        /// Which fit.
        what: String,
        /// `ridge` or `logistic`.
        method: &'static str,
        /// What the solver said.
        reason: String,
    },
}
