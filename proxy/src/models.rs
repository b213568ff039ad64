//! The model set in force: loaded from `models/manifest.json`, validated in full before it replaces
//! the previous set (which keeps serving when a new one is refused), and checked for changes by a
//! background task, on file events and every `check_interval` for file systems without them.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use augur_engine::model::{sha256_hex, ModelSet, MANIFEST_FILE};
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::metrics::{counter, gauge};

/// What one check of the models directory found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum CheckOutcome {
    /// The manifest is the one already loaded (or already refused).
    Unchanged,
    /// A new set is active.
    Loaded {
        /// Its version.
        version: String,
    },
    /// A new manifest or model was refused; the previous set keeps serving.
    Refused {
        /// Why, naming the file and field.
        reason: String,
    },
}

/// A refused candidate, for `GET /admin/models`.
#[derive(Debug, Clone, Serialize)]
pub struct Refusal {
    /// When, seconds since the Unix epoch.
    pub at_unix_s: u64,
    /// Why.
    pub reason: String,
}

/// A model set loaded or refused, for the dashboard's timeline.
#[derive(Debug, Clone, Serialize)]
pub struct ModelEvent {
    /// When, seconds since the Unix epoch.
    pub at_unix_s: u64,
    /// The set's version, when it loaded.
    pub version: Option<String>,
    /// Why it was refused, when it was.
    pub refused: Option<String>,
}

/// Model events kept for the dashboard.
const HISTORY: usize = 20;

/// The active model set and what became of the last candidate.
pub struct ModelStore {
    dir: Option<PathBuf>,
    active: ArcSwapOption<ModelSet>,
    /// sha256 of the manifest last loaded or refused, so an unchanged file is not re-validated. Held
    /// for the whole of a check: the watcher and a forced check may be called at once, and a
    /// manifest must be judged, and counted, once.
    seen: Mutex<Option<String>>,
    last_refusal: Mutex<Option<Refusal>>,
    /// The newest loads and refusals, oldest first.
    history: Mutex<std::collections::VecDeque<ModelEvent>>,
    generation: watch::Sender<u64>,
    metrics: ModelMetrics,
}

impl ModelStore {
    /// A store reading `dir` (none: no models, predictive pools fall back).
    pub fn new(dir: Option<PathBuf>, registry: &prometheus::Registry) -> Arc<Self> {
        Arc::new(Self {
            dir,
            active: ArcSwapOption::empty(),
            seen: Mutex::new(None),
            last_refusal: Mutex::new(None),
            history: Mutex::new(std::collections::VecDeque::with_capacity(HISTORY)),
            generation: watch::channel(0).0,
            metrics: ModelMetrics::register(registry),
        })
    }

    /// The set in force, if any. Readers never wait.
    pub fn active(&self) -> Option<Arc<ModelSet>> {
        self.active.load_full()
    }

    /// Changes whenever a new set becomes active.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// The models directory.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The last refused candidate, if any.
    pub fn last_refusal(&self) -> Option<Refusal> {
        lock(&self.last_refusal).clone()
    }

    /// The newest sets loaded and candidates refused, oldest first.
    pub fn history(&self) -> Vec<ModelEvent> {
        lock(&self.history).iter().cloned().collect()
    }

    fn remember(&self, version: Option<String>, refused: Option<String>) {
        let mut history = lock(&self.history);
        // An unreadable manifest is refused at every check; once is enough to show.
        if refused.is_some() && history.back().is_some_and(|last| last.refused == refused) {
            return;
        }
        if history.len() == HISTORY {
            history.pop_front();
        }
        history.push_back(ModelEvent {
            at_unix_s: crate::clock::unix_now().as_secs(),
            version,
            refused,
        });
    }

    /// Reads the manifest and, when it changed (or `force`), validates every model it names and
    /// swaps the set in. Blocking file I/O: call from a blocking task, never the request path.
    pub fn check(&self, force: bool) -> CheckOutcome {
        let Some(dir) = &self.dir else {
            return CheckOutcome::Unchanged;
        };
        let mut seen = lock(&self.seen);
        let manifest_path = dir.join(MANIFEST_FILE);
        let manifest = match read_bounded(&manifest_path) {
            Ok(bytes) => bytes,
            // No models yet is not an error: the trainer has not run.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && self.active().is_none() => {
                return CheckOutcome::Unchanged;
            }
            Err(e) => {
                self.metrics.count_reload(false);
                return self.refuse(format!("{}: {e}", manifest_path.display()));
            }
        };
        let digest = sha256_hex(&manifest);
        // A forced check of the manifest the watcher already judged does not count it again.
        let new_candidate = seen.as_deref() != Some(digest.as_str());
        if !force && !new_candidate {
            return CheckOutcome::Unchanged;
        }
        let loaded = ModelSet::load(&manifest, |file| read_bounded(&dir.join(file)));
        if new_candidate {
            self.metrics.count_reload(loaded.is_ok());
        }
        *seen = Some(digest);
        match loaded {
            Ok(set) => {
                let version = set.version.clone();
                self.metrics.record(Some(&set));
                self.active.store(Some(Arc::new(set)));
                self.generation.send_modify(|g| *g += 1);
                tracing::info!(version, dir = %dir.display(), "model set loaded");
                self.remember(Some(version.clone()), None);
                CheckOutcome::Loaded { version }
            }
            Err(e) => self.refuse(format!("{}: {e}", dir.display())),
        }
    }

    /// Records a refusal, for `GET /admin/models`.
    fn refuse(&self, reason: String) -> CheckOutcome {
        tracing::warn!(%reason, "model set refused; the previous set keeps serving");
        self.remember(None, Some(reason.clone()));
        let at_unix_s = crate::clock::unix_now().as_secs();
        *lock(&self.last_refusal) = Some(Refusal {
            at_unix_s,
            reason: reason.clone(),
        });
        CheckOutcome::Refused { reason }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Checks the store at once, then on every file event in its directory and every `interval`, until
/// `stop` is cancelled.
pub fn spawn_watcher(store: Arc<ModelStore>, interval: Duration, stop: CancellationToken) {
    let Some(dir) = store.dir().map(Path::to_path_buf) else {
        return;
    };
    crate::files::follow(&dir, "the models directory", interval, stop, move || {
        store.check(false);
    });
}

/// Largest manifest or model file read. Linear models of a few dozen features are kilobytes; a file
/// this size is not one the trainer wrote, and reading it whole would cost the proxy its memory.
pub const MAX_MODEL_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Reads `path` whole, refusing it when it is larger than [`MAX_MODEL_FILE_BYTES`].
fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    crate::files::read_bounded(path, MAX_MODEL_FILE_BYTES)
}

/// The model store's metrics: which set is active, and how the candidates were judged.
struct ModelMetrics {
    info: prometheus::IntGaugeVec,
    reloads: prometheus::IntCounterVec,
}

impl ModelMetrics {
    fn register(registry: &prometheus::Registry) -> Self {
        Self {
            info: gauge(
                registry,
                "augur_model_info",
                "1 for each model in the active set, by kind and version",
                &["kind", "version"],
            ),
            reloads: counter(
                registry,
                "augur_model_reload_total",
                "Model sets judged, by result (loaded, refused); each distinct manifest counts once",
                &["result"],
            ),
        }
    }

    /// Publishes the active model set (`None`: no models).
    fn record(&self, set: Option<&ModelSet>) {
        self.info.reset();
        for (kind, file) in set.map(|s| s.files.iter()).into_iter().flatten() {
            self.info
                .with_label_values(&[kind.as_str(), file.version.as_str()])
                .set(1);
        }
    }

    /// Counts one model set judged.
    fn count_reload(&self, loaded: bool) {
        self.reloads
            .with_label_values(&[if loaded { "loaded" } else { "refused" }])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_larger_than_a_model_is_refused_unread() {
        let path = std::env::temp_dir().join(format!("augur-model-size-{}", std::process::id()));
        let file = std::fs::File::create(&path).unwrap();
        // Sparse: the test claims the size without writing it.
        file.set_len(MAX_MODEL_FILE_BYTES + 1).unwrap();
        let error = read_bounded(&path).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
        assert!(error.to_string().contains("larger than"), "{error}");
        file.set_len(100).unwrap();
        assert_eq!(read_bounded(&path).unwrap().len(), 100);
        std::fs::remove_file(&path).unwrap();
    }
}
