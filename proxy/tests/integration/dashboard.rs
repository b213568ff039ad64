//! The live dashboard in a real browser: headless Chromium loads `/dashboard` from a proxy that has
//! served traffic, and what the page shows is what the proxy counted. Where Chromium is missing the
//! test says so and passes, unless `AUGUR_REQUIRE_CHROMIUM` is set (CI sets it, after installing
//! Debian's `chromium`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use augur_proxy::Running;
use hyper::StatusCode;

use crate::backends::spawn;
use crate::harness::*;

/// Chromium headless, with a fresh profile and nothing that reaches beyond loopback.
fn chromium(args: &[&str], profile: &Path) -> Option<Output> {
    let program = std::env::var("AUGUR_CHROMIUM").unwrap_or_else(|_| "chromium".to_owned());
    let profile = format!("--user-data-dir={}", profile.display());
    let mut command = Command::new(&program);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
        ])
        .args([
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .args([
            "--hide-scrollbars",
            "--virtual-time-budget=8000",
            "--window-size=1400,2200",
        ])
        .arg(profile)
        .args(args);
    match command.output() {
        Ok(output) => Some(output),
        Err(e) => {
            assert!(
                std::env::var_os("AUGUR_REQUIRE_CHROMIUM").is_none(),
                "Chromium is required but `{program}` cannot run: {e}"
            );
            eprintln!("{program} not installed ({e}): the dashboard is not checked in a browser");
            None
        }
    }
}

/// The value of attribute `name` in the HTML tag `tag`.
fn attribute<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    Some(&tag[start..start + tag[start..].find('"')?])
}

/// The `<tr ...>` tags of the table with class `class` in `dom`.
fn rows<'a>(dom: &'a str, class: &str) -> Vec<&'a str> {
    let Some(start) = dom.find(&format!("<table class=\"{class}\"")) else {
        return Vec::new();
    };
    let table = &dom[start..start + dom[start..].find("</table>").unwrap_or(dom.len() - start)];
    table
        .match_indices("<tr ")
        .map(|(at, _)| &table[at..at + table[at..].find('>').unwrap()])
        .collect()
}

/// Attempts per backend as the proxy's own `/metrics` counts them.
async fn counted_attempts(proxy: &Running) -> BTreeMap<String, u64> {
    let text = get(
        &client(),
        &format!("http://{}/metrics", proxy.admin.unwrap()),
        &[],
    )
    .await
    .body;
    let mut counts = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("augur_upstream_attempts_total{"))
    {
        let backend = line
            .split("backend=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap();
        let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        *counts.entry(backend.to_owned()).or_default() += value as u64;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_proxys_counts_and_an_ejected_backend() {
    let (a, b, failing) = (spawn("a").await, spawn("b").await, spawn("failing").await);
    failing.set_status(500);
    let proxy = start_proxy(&format!(
        "[[routes]]\npool = \"p\"\n[pools.p]\npolicy = {{ kind = \"round_robin\" }}\nbackends = {}\n\
         outlier = {{ consecutive_failures = 3, base_ejection = \"5m\" }}\n",
        backends_toml(&[(&a, 1), (&b, 1), (&failing, 1)])
    ))
    .await;
    let client = client();
    for _ in 0..60 {
        get(&client, &url(&proxy, "/"), &[]).await;
    }
    let counted = counted_attempts(&proxy).await;
    assert_eq!(counted.values().sum::<u64>(), 60, "{counted:?}");

    // The page itself is public (it holds no data); its data needs the token.
    let page = get(
        &client,
        &format!("http://{}/dashboard", proxy.admin.unwrap()),
        &[],
    )
    .await;
    assert_eq!(page.status, StatusCode::OK);
    let state = get(
        &client,
        &format!("http://{}/admin/dashboard/state", proxy.admin.unwrap()),
        &[],
    )
    .await;
    assert_eq!(state.status, StatusCode::UNAUTHORIZED);

    let profile = temp_path("chromium-profile");
    let address = format!("http://{}/dashboard#token={ADMIN_TOKEN}", proxy.admin.unwrap());
    let Some(dump) = chromium(&["--dump-dom", &address], &profile) else {
        proxy.shutdown().await;
        return;
    };
    let dom = String::from_utf8_lossy(&dump.stdout).into_owned();
    assert!(dump.status.success(), "{}", String::from_utf8_lossy(&dump.stderr));
    assert!(dom.contains("data-polls="), "the page never got its data:\n{dom}");

    // The request distribution: each backend's attempts, as the proxy counted them.
    let shown: BTreeMap<String, u64> = rows(&dom, "distribution")
        .into_iter()
        .map(|tag| {
            let backend = attribute(tag, "data-backend").unwrap().to_owned();
            (backend, attribute(tag, "data-attempts").unwrap().parse().unwrap())
        })
        .collect();
    assert_eq!(shown, counted, "the dashboard's attempts against /metrics");

    // The failing backend shows as ejected; the others as healthy.
    let states: BTreeMap<String, String> = rows(&dom, "backends")
        .into_iter()
        .map(|tag| {
            let backend = attribute(tag, "data-backend").unwrap().to_owned();
            (backend, attribute(tag, "data-state").unwrap().to_owned())
        })
        .collect();
    assert_eq!(states[&failing.addr.to_string()], "ejected", "{states:?}");
    assert_eq!(states[&a.addr.to_string()], "healthy", "{states:?}");
    assert_eq!(states[&b.addr.to_string()], "healthy", "{states:?}");

    let screenshot = screenshot_path();
    let shot = format!("--screenshot={}", screenshot.display());
    let taken = chromium(&[&shot, &address], &profile).expect("Chromium ran a moment ago");
    assert!(
        taken.status.success(),
        "{}",
        String::from_utf8_lossy(&taken.stderr)
    );
    let png = std::fs::read(&screenshot).expect("the screenshot is written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    eprintln!("dashboard screenshot: {}", screenshot.display());
    proxy.shutdown().await;
    let _ = std::fs::remove_dir_all(&profile);
}

/// Where the screenshot goes: the test's scratch directory under the target directory.
fn screenshot_path() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png")
}
