//! The files the proxy follows (models, keys, discovery lists): bounded reads, and file events as
//! wake-ups. Events are a shortcut, never a necessity: every follower also looks on an interval,
//! since some file systems (network mounts, some container volumes) deliver none.

use std::path::Path;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

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

/// Runs `check` at once, then on every file event in `dir` and every `interval`, until `stop`.
/// Checks run on the blocking pool (they read files) and never overlap.
pub fn follow(
    dir: &Path,
    what: &'static str,
    interval: Duration,
    stop: CancellationToken,
    check: impl Fn() + Clone + Send + Sync + 'static,
) {
    let (events_tx, mut events) = mpsc::channel::<()>(1);
    let watcher = watch_dir(dir, events_tx, what);
    tokio::spawn(async move {
        let _watcher = watcher;
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
                // Writes come in bursts (truncate, then write): give them a moment to finish.
                Some(()) = events.recv() => tokio::time::sleep(Duration::from_millis(20)).await,
            }
            let _ = tokio::task::spawn_blocking(check.clone()).await;
        }
    });
}

/// Reads `path` whole, refusing it when it is larger than `limit` bytes (a file that size is not
/// one a tool wrote for the proxy, and reading it whole would cost the proxy its memory).
pub fn read_bounded(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(limit + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {limit} bytes"),
        ));
    }
    Ok(bytes)
}

/// As [`read_bounded`], as UTF-8 text.
pub fn read_bounded_text(path: &Path, limit: u64) -> std::io::Result<String> {
    String::from_utf8(read_bounded(path, limit)?)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
}
