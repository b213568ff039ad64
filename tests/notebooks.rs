//! The notebooks run headless against `datasets/` and `models/`, so they never rot: each checks its own
//! predictions against the metrics the trainer recorded, which fails on any drift between its Python
//! copy of the feature encoding and the engine's.

use std::path::Path;
use std::process::Command;

#[test]
fn every_notebook_runs_headless() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let available = Command::new("python3")
        .args(["-c", "import nbclient, nbformat, ipykernel, polars, matplotlib"])
        .status()
        .is_ok_and(|s| s.success());
    if !available {
        assert!(
            std::env::var_os("AUGUR_REQUIRE_NOTEBOOKS").is_none(),
            "the notebooks' packages are required: pip install -r notebooks/requirements.txt"
        );
        eprintln!("skipped: pip install -r notebooks/requirements.txt to run the notebooks");
        return;
    }
    let output = Command::new("python3")
        .arg(root.join("notebooks/run_all.py"))
        .output()
        .expect("python3 runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    for notebook in ["latency.ipynb", "demand.ipynb"] {
        assert!(
            stderr.contains(&format!("{notebook}: ok")),
            "{notebook} did not run: {stderr}"
        );
    }
}
