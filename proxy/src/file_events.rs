//! File events as wake-ups: a watcher on a directory that nudges a channel whenever something in it
//! changes. Events are a shortcut, never a necessity: every user also looks on an interval, since
//! some file systems (network mounts, some container volumes) deliver none.

use std::path::Path;

use tokio::sync::mpsc;

/// Watches `dir` (not its subdirectories) and sends `()` on `tx` at each event; a full channel
/// already holds a pending wake-up. `None`, with a warning naming `what`, when the platform or the
/// directory offers no events.
pub fn watch_dir(dir: &Path, tx: mpsc::Sender<()>, what: &str) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            let _ = tx.try_send(());
        }
    })
    .map_err(|e| tracing::warn!(error = %e, "no file events for {what}; checking periodically"))
    .ok()?;
    match watcher.watch(dir, notify::RecursiveMode::NonRecursive) {
        Ok(()) => Some(watcher),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch {what}; checking periodically");
            None
        }
    }
}
