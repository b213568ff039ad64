//! The deployment recipes under `deploy/`, checked with the tools of the platforms they are for, as
//! far as that goes without a cluster or a container engine: the Kubernetes manifests against the
//! API's schemas (kubernetes-validate), the systemd units (systemd-analyze verify), the container
//! recipe (hadolint), the Prometheus config and rules (promtool, the rules' unit tests included), the
//! config the manifests carry (the real `augur check-config`), and what the files must agree on among
//! themselves (`deploy/check.py`).
//!
//! Each tool comes from `.ci/run`. Where one is missing its test says so and passes, unless
//! `AUGUR_REQUIRE_DEPLOY_TOOLS` is set (CI sets it).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `program` with `args`, or `None` (the test then passes, saying so) when it is not installed.
fn run(program: &str, args: &[&str], why: &str) -> Option<Output> {
    match Command::new(program).args(args).current_dir(root()).output() {
        Ok(output) => Some(output),
        Err(e) => {
            missing(&format!("{program} ({e})"), why);
            None
        }
    }
}

/// Says that `what` is missing, so `why` is not checked; fails where CI requires the tools.
fn missing(what: &str, why: &str) {
    assert!(
        std::env::var_os("AUGUR_REQUIRE_DEPLOY_TOOLS").is_none(),
        "{what} is required for {why}"
    );
    eprintln!("{what} missing: {why} not checked");
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn the_config_the_kubernetes_manifests_carry_is_valid() {
    let output = Command::new(env!("CARGO_BIN_EXE_augur"))
        .args(["check-config", "deploy/kubernetes/augur.toml"])
        .current_dir(root())
        // The Secret's values, as the Deployment sets them.
        .env("AUGUR_ADMIN_TOKEN", "an-admin-token-of-32-characters!")
        .env("AUGUR_READ_TOKEN", "a-read-only-token-of-32-chars!!")
        .env("AUGUR_CLIENT_HASH_KEY", "a-client-hash-key")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
}

#[test]
fn the_kubernetes_manifests_validate_against_the_api_schemas() {
    // KEDA's kinds are custom resources the schemas do not hold; deploy/check.py reads those.
    let manifests = [
        "namespace.yaml",
        "rbac.yaml",
        "data-volume.yaml",
        "proxy.yaml",
        "trainer.yaml",
    ]
    .map(|m| format!("deploy/kubernetes/{m}"));
    let mut args = vec!["--strict"];
    args.extend(manifests.iter().map(String::as_str));
    let Some(output) = run("kubernetes-validate", &args, "the Kubernetes manifests") else {
        return;
    };
    let report = text(&output);
    assert!(output.status.success(), "{report}");
    assert_eq!(
        report.matches("passed for resource").count(),
        11,
        "every object was validated: {report}"
    );
}

#[test]
fn the_deploy_files_agree_with_each_other_and_the_config() {
    let Some(output) = run("python3", &["-c", "import yaml"], "the deploy files' agreement") else {
        return;
    };
    if !output.status.success() {
        missing(
            "PyYAML (pip install kubernetes-validate)",
            "the deploy files' agreement",
        );
        return;
    }
    let output = Command::new("python3")
        .arg("deploy/check.py")
        .current_dir(root())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
}

#[test]
fn the_systemd_units_verify() {
    let why = "the systemd units";
    if run("systemd-analyze", &["--version"], why).is_none() {
        return;
    }
    let host_units = Path::new("/usr/lib/systemd/system");
    if !host_units.is_dir() {
        missing("/usr/lib/systemd/system", why);
        return;
    }
    // `verify` looks for the binaries the units run and the units they depend on: give it a root
    // that has them, beside the host's own units.
    let system = temp_dir("systemd-root");
    let place = |inside: &str, from: &Path| {
        let to = system.join(inside);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, &to).unwrap();
    };
    place("usr/local/bin/augur", Path::new(env!("CARGO_BIN_EXE_augur")));
    place("bin/kill", Path::new("/bin/kill"));
    for unit in std::fs::read_dir(host_units).unwrap().flatten() {
        if unit.file_type().is_ok_and(|t| t.is_file()) {
            place(
                &format!("usr/lib/systemd/system/{}", unit.file_name().to_string_lossy()),
                &unit.path(),
            );
        }
    }
    let names = ["augur-proxy.service", "augur-train.service", "augur-train.timer"];
    for name in names {
        place(
            &format!("etc/systemd/system/{name}"),
            &root().join("deploy/systemd").join(name),
        );
    }
    let root_arg = format!("--root={}", system.display());
    let paths: Vec<String> = names.iter().map(|n| format!("/etc/systemd/system/{n}")).collect();
    let mut args = vec![root_arg.as_str(), "verify"];
    args.extend(paths.iter().map(String::as_str));
    let output = run("systemd-analyze", &args, why).expect("it ran above");
    let _ = std::fs::remove_dir_all(&system);
    // Unknown keys and bad values are warnings on stderr with exit 0: any output is a finding.
    let report = text(&output);
    assert!(output.status.success() && report.trim().is_empty(), "{report}");
}

#[test]
fn the_container_recipe_lints_clean() {
    let Some(output) = run(
        "hadolint",
        &["deploy/container/Containerfile"],
        "the container recipe",
    ) else {
        return;
    };
    assert!(output.status.success(), "{}", text(&output));
}

#[test]
fn the_prometheus_config_and_rules_check_and_each_alert_fires_on_its_series() {
    for args in [
        ["check", "config", "deploy/prometheus/prometheus.yml"],
        ["check", "rules", "deploy/prometheus/rules.yml"],
        ["test", "rules", "deploy/prometheus/rules_test.yml"],
    ] {
        let Some(output) = run("promtool", &args, "the Prometheus config and rules") else {
            return;
        };
        assert!(
            output.status.success(),
            "promtool {}: {}",
            args.join(" "),
            text(&output)
        );
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("augur-deploy-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
