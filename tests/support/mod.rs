//! Shared by the end-to-end tests: a real `augur proxy` process, and the test backends.
#![allow(dead_code)] // Each test binary uses part of it.

// The proxy's integration tests' backends: real HTTP servers on 127.0.0.1.
#[path = "../../proxy/tests/integration/backends.rs"]
pub mod backends;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Bound on any one wait in these tests.
pub const LIMIT: Duration = Duration::from_secs(10);

/// A file under the temp dir, unique to this test process.
pub fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("augur-e2e-{}-{name}", std::process::id()))
}

/// A running `augur proxy` process; killed if the test ends early.
pub struct ProxyProcess {
    pub child: Child,
    logs: mpsc::Receiver<serde_json::Value>,
    pub address: SocketAddr,
    /// Log lines up to and including the first "listening".
    pub startup_logs: Vec<serde_json::Value>,
}

impl ProxyProcess {
    /// Starts `augur proxy` on `config` with JSON logs and waits until it listens.
    pub fn start(config: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_augur"))
            .args(["--log-format", "json", "proxy", "--config"])
            .arg(config)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, logs) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(json) = serde_json::from_str::<serde_json::Value>(&line) {
                    let _ = tx.send(json);
                }
            }
        });
        let mut startup_logs = Vec::new();
        let address = loop {
            let line = logs.recv_timeout(LIMIT).expect("augur logs `listening` at start");
            let listening = line["message"] == "listening";
            startup_logs.push(line);
            if listening {
                break startup_logs.last().unwrap()["address"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap();
            }
        };
        Self {
            child,
            logs,
            address,
            startup_logs,
        }
    }

    /// Waits for the next log line whose message is `message`.
    pub fn wait_for_log(&self, message: &str) -> serde_json::Value {
        loop {
            let line = self
                .logs
                .recv_timeout(LIMIT)
                .unwrap_or_else(|_| panic!("no `{message}` log line"));
            if line["message"] == message {
                return line;
            }
        }
    }

    /// Sends signal `name` (`HUP`, `TERM`, ...) to the process.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn stop(mut self) {
        self.signal("TERM");
        let status = self.child.wait().unwrap();
        assert!(status.success(), "augur exits cleanly: {status}");
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
