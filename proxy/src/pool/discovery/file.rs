//! A file of backends that any tool can write: read at start, then on every file event in its
//! directory and every `interval` (events are missed on some file systems).
//!
//! JSON (a `.json` file) or TOML (any other): `{"backends": [{"address": "10.0.0.5:8080",
//! "weight": 2, "labels": {"zone": "a"}}]}`, `[[backends]]` tables in TOML, or in JSON a bare list.
//! Each entry takes the fields of a backend in the config. Write the file elsewhere and rename it
//! into place: a half-written file fails to parse, and the last good set stays until the next.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use super::Source;
use crate::config::{BackendSpec, FileSource};

/// Largest file read; a list of a hundred thousand backends fits.
const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// After an event, writes that come in bursts (truncate, then write) get this long to finish.
const SETTLE: Duration = Duration::from_millis(20);

pub(super) struct File {
    path: PathBuf,
    events: mpsc::Receiver<()>,
    _watcher: Option<notify::RecommendedWatcher>,
    poll: Interval,
    /// The next look is due at once (at start).
    due: bool,
}

impl File {
    pub(super) fn new(config: FileSource) -> Self {
        let (tx, events) = mpsc::channel(1);
        let dir = match config.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let watcher = crate::files::watch_dir(&dir, tx, "a discovery file");
        let mut poll = tokio::time::interval_at(Instant::now() + config.interval, config.interval);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self {
            path: config.path,
            events,
            _watcher: watcher,
            poll,
            due: true,
        }
    }
}

impl Source for File {
    async fn next(&mut self) -> Result<Vec<BackendSpec>, String> {
        if !self.due {
            tokio::select! {
                _ = self.poll.tick() => {}
                Some(()) = self.events.recv() => tokio::time::sleep(SETTLE).await,
            }
        }
        self.due = false;
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || read(&path))
            .await
            .map_err(|e| format!("reading {}: {e}", self.path.display()))?
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Document {
    Table(Table),
    List(Vec<BackendSpec>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Table {
    backends: Vec<BackendSpec>,
}

/// Reads and checks the file; an error names the file, and the line and column where the parser
/// gives them.
fn read(path: &Path) -> Result<Vec<BackendSpec>, String> {
    let at = path.display();
    let text = crate::files::read_bounded_text(path, MAX_FILE_BYTES).map_err(|e| format!("{at}: {e}"))?;
    let backends = if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json")) {
        // Parsed twice on a bad file, so the error is the one of the form it meant to be.
        match serde_json::from_str::<Document>(&text) {
            Ok(Document::Table(t)) => t.backends,
            Ok(Document::List(list)) => list,
            Err(_) if text.trim_start().starts_with('[') => {
                serde_json::from_str::<Vec<BackendSpec>>(&text)
                    .map_err(|e| format!("{at}:{}:{}: {e}", e.line(), e.column()))?
            }
            Err(_) => {
                serde_json::from_str::<Table>(&text)
                    .map_err(|e| format!("{at}:{}:{}: {e}", e.line(), e.column()))?
                    .backends
            }
        }
    } else {
        toml::from_str::<Table>(&text)
            .map_err(|e| format!("{at}: {}", e.to_string().trim_end()))?
            .backends
    };
    let mut seen = std::collections::HashSet::new();
    for (i, backend) in backends.iter().enumerate() {
        backend
            .check()
            .map_err(|reason| format!("{at}: backends[{i}]: {reason}"))?;
        if !seen.insert(&backend.address) {
            return Err(format!("{at}: backends[{i}]: {} appears twice", backend.address));
        }
    }
    Ok(backends)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file in a directory of its own, removed with it.
    struct Written(PathBuf);

    impl Drop for Written {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(self.0.parent().unwrap());
        }
    }

    fn write(name: &str, text: &str) -> Written {
        let dir = std::env::temp_dir().join(format!("augur-discovery-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), text).unwrap();
        Written(dir.join(name))
    }

    #[test]
    fn json_table_json_list_and_toml_read_alike() {
        let json = write(
            "b.json",
            r#"{"backends": [{"address": "10.0.0.5:8080", "weight": 2, "labels": {"zone": "a"}}]}"#,
        );
        let list = write(
            "l.json",
            r#"[{"address": "10.0.0.5:8080", "weight": 2, "labels": {"zone": "a"}}]"#,
        );
        let toml = write(
            "b.toml",
            "[[backends]]\naddress = \"10.0.0.5:8080\"\nweight = 2\nlabels = { zone = \"a\" }\n",
        );
        let got = read(&json.0).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].address.as_str(), "10.0.0.5:8080");
        assert_eq!(got[0].weight.get(), 2);
        assert_eq!(got[0].labels["zone"], "a");
        assert_eq!(read(&list.0).unwrap(), got);
        assert_eq!(read(&toml.0).unwrap(), got);
    }

    #[test]
    fn errors_name_the_file_and_where() {
        let bad = write(
            "bad.json",
            "{\"backends\": [{\"address\": \"10.0.0.5:8080\",\n \"wieght\": 2}]}",
        );
        let e = read(&bad.0).unwrap_err();
        assert!(e.contains("bad.json:2:") && e.contains("wieght"), "{e}");
        let no_port = write("np.toml", "[[backends]]\naddress = \"10.0.0.5\"\n");
        let e = read(&no_port.0).unwrap_err();
        assert!(
            e.contains("np.toml") && e.contains("line 2") && e.contains("no port"),
            "{e}"
        );
        let twice = write("t.json", r#"[{"address": "a:1"}, {"address": "a:1"}]"#);
        let e = read(&twice.0).unwrap_err();
        assert!(e.contains("backends[1]: a:1 appears twice"), "{e}");
        let cost = write("c.json", r#"[{"address": "a:1", "cost": -1}]"#);
        assert!(read(&cost.0).unwrap_err().contains("cost"));
        let e = read(Path::new("/nonexistent/augur.json")).unwrap_err();
        assert!(e.starts_with("/nonexistent/augur.json: "), "{e}");
    }
}
