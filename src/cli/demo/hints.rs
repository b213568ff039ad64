//! The demo's hints phase, with the loop closed: the real proxy forecasts a pool's demand every second
//! while a crowd builds, signed hints go to a receiver on loopback (the one `augur hints listen`
//! runs), and the receiver acts as the autoscaler. It starts the replicas a hint asks for after their
//! warm-up and publishes them in the pool's discovery file, which the proxy watches. The same crowd
//! runs twice, with the replicas fixed and with the hints acting, and the phase shows p99 through
//! the crowd in both, and when the first hint came against when the crowd outgrew the replicas.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use augur_proxy::hints::receiver::{serve, Received, ReceiverConfig};
use augur_sim::behaviour::{BackendBehaviour, CpuBehaviour, ServiceTime};
use augur_sim::http::{Cluster, ServedBackend};
use augur_sim::report::Tally;
use augur_sim::scenario::SimBackend;
use augur_sim::Scenario;
use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;

use super::{load, PhaseResult};

const SECRET: &str = "augur-demo";
/// Requests per second one replica serves: what the pool's scaling config plans with, and what the
/// simulated replicas really do (one worker, about 40 ms a request).
const CAPACITY_RPS: f64 = 25.0;
const REPLICA_MEDIAN: Duration = Duration::from_millis(38);
const INITIAL_REPLICAS: usize = 4;
const WARM_UP: Duration = Duration::from_secs(2);
const BASE_RPS: f64 = 20.0;

/// The load: `BASE_RPS` for `calm`, then a crowd building by `slope` requests per second every
/// second for `ramp`, then holding there until `length`.
struct Crowd {
    calm: f64,
    slope: f64,
    ramp: f64,
    length: f64,
}

impl Crowd {
    fn new(short: bool) -> Self {
        if short {
            Self {
                calm: 4.0,
                slope: 12.0,
                ramp: 10.0,
                length: 16.0,
            }
        } else {
            Self {
                calm: 8.0,
                slope: 10.0,
                ramp: 12.0,
                length: 26.0,
            }
        }
    }

    fn rate(&self, t: f64) -> f64 {
        BASE_RPS + self.slope * (t - self.calm).clamp(0.0, self.ramp)
    }

    /// Send times: evenly spaced at the rate of the moment.
    fn offsets(&self) -> Vec<Duration> {
        let mut offsets = Vec::new();
        let mut t = 0.0;
        while t < self.length {
            offsets.push(Duration::from_secs_f64(t));
            t += 1.0 / self.rate(t);
        }
        offsets
    }

    /// When the demand first needs more than `replicas` at full load.
    fn outgrows(&self, replicas: usize) -> f64 {
        self.calm + (replicas as f64 * CAPACITY_RPS - BASE_RPS) / self.slope
    }
}

/// What the phase showed, for the printout and the report.
pub struct HintsOutcome {
    /// One line per hint, replica and verdict.
    pub lines: Vec<String>,
    /// The crowd with the replicas fixed, then with the hints acting.
    pub runs: [PhaseResult; 2],
}

/// The simulated replicas of the pool, and the discovery file that lists the ones in service.
struct Replicas {
    file: PathBuf,
    seed: u64,
    /// Every replica started, oldest first; the first `in_service` are in the file.
    started: Vec<ServedBackend>,
    in_service: usize,
    _clusters: Vec<Cluster>,
}

impl Replicas {
    async fn start(file: PathBuf, seed: u64) -> Result<Self, String> {
        let mut replicas = Self {
            file,
            seed,
            started: Vec::new(),
            in_service: 0,
            _clusters: Vec::new(),
        };
        replicas.scale_to(INITIAL_REPLICAS).await?;
        Ok(replicas)
    }

    /// Starts replicas (or takes them out of the file, where they drain) until `n` are in service,
    /// and publishes the file the way a tool should: written beside it, then renamed over it.
    async fn scale_to(&mut self, n: usize) -> Result<(), String> {
        if n > self.started.len() {
            let first = self.started.len();
            let cluster = augur_sim::http::serve(
                &replica_scenario(first, n - first),
                [127, 0, 0, 1].into(),
                self.seed,
            )
            .await
            .map_err(|e| format!("starting replicas: {e}"))?;
            self.started.extend(cluster.backends.iter().cloned());
            self._clusters.push(cluster);
        }
        self.in_service = n;
        let entries: Vec<String> = self.started[..n]
            .iter()
            .map(|b| {
                format!(
                    "{{\"address\": \"{}\", \"labels\": {{\"replica\": \"{}\"}}}}",
                    b.addr, b.name
                )
            })
            .collect();
        let staging = self.file.with_extension("json.tmp");
        std::fs::write(&staging, format!("{{\"backends\": [{}]}}\n", entries.join(", ")))
            .and_then(|()| std::fs::rename(&staging, &self.file))
            .map_err(|e| format!("cannot publish {}: {e}", self.file.display()))
    }
}

/// `count` replicas named from `cpu-{first}` on.
fn replica_scenario(first: usize, count: usize) -> Scenario {
    let service = ServiceTime::LogNormal {
        median: REPLICA_MEDIAN,
        sigma: 0.3,
    };
    let backends = (first..first + count)
        .map(|i| SimBackend {
            name: format!("cpu-{i}"),
            behaviour: BackendBehaviour::Cpu(CpuBehaviour { workers: 1, service }),
            weight: 1,
        })
        .collect();
    Scenario::serving("demo-replicas", "replicas of one CPU service", backends)
}

/// One run of the crowd: what the client saw, the hints received and the replicas' changes.
struct CrowdRun {
    result: PhaseResult,
    hints: Vec<(f64, Received)>,
    /// (seconds from the start, replicas in service, the hint that asked for them).
    scaled: Vec<(f64, usize, u64)>,
}

async fn crowd_run(crowd: &Crowd, acting: bool, out: &Path, seed: u64) -> Result<CrowdRun, String> {
    let label = if acting { "hints acting" } else { "replicas fixed" };
    let file = out.join(if acting {
        "hints-acting-backends.json"
    } else {
        "hints-fixed-backends.json"
    });
    let replicas = Arc::new(tokio::sync::Mutex::new(
        Replicas::start(file.clone(), seed).await?,
    ));
    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("cannot listen for hints: {e}"))?;
    let receiver_address = receiver.local_addr().map_err(|e| e.to_string())?;
    let started = Instant::now();
    let hints: Arc<Mutex<Vec<(f64, Received)>>> = Arc::default();
    let scaled: Arc<Mutex<Vec<(f64, usize, u64)>>> = Arc::default();
    let stop = CancellationToken::new();
    let (log, scale_log, autoscaler) = (hints.clone(), scaled.clone(), replicas.clone());
    let receiving = tokio::spawn(serve(
        receiver,
        ReceiverConfig {
            secret: SECRET.as_bytes().to_vec(),
            max_age: Duration::from_secs(300),
        },
        move |received| {
            let at = started.elapsed().as_secs_f64();
            if let (true, Received::Hint(event)) = (acting, &received) {
                // The autoscaler: new replicas serve after their warm-up; fewer are taken out at once.
                let (want, sequence) = (event.data.desired_replicas as usize, event.data.sequence);
                let (replicas, scale_log) = (autoscaler.clone(), scale_log.clone());
                let delay = if event.data.direction == "up" {
                    WARM_UP
                } else {
                    Duration::ZERO
                };
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let mut replicas = replicas.lock().await;
                    if replicas.scale_to(want).await.is_ok() {
                        let at = started.elapsed().as_secs_f64();
                        scale_log
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push((at, want, sequence));
                    }
                });
            }
            log.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((at, received));
        },
        stop.clone(),
    ));
    let config = format!(
        "[proxy]\nid = \"demo-hints\"\n[[listeners]]\naddress = \"127.0.0.1:0\"\n[[routes]]\npool = \"demo\"\n\
         [pools.demo]\nslow_start = \"1s\"\ndiscovery = [{{ file = \"{}\", interval = \"1s\" }}]\n\
         timeouts = {{ request = \"10s\" }}\n\
         scaling = {{ capacity_rps = {CAPACITY_RPS}, min_replicas = {INITIAL_REPLICAS}, max_replicas = 20 }}\n\
         [hints]\nbucket = \"1s\"\nwarm_up = \"{}s\"\nhorizons = [\"1s\", \"2s\", \"3s\", \"5s\"]\n\
         [[hints.sinks]]\nurl = \"http://{receiver_address}/hints\"\nsecret = \"{SECRET}\"\n",
        file.display(),
        WARM_UP.as_secs()
    );
    let config = augur_proxy::Config::parse(&config, Path::new("<demo>")).map_err(|e| e.to_string())?;
    let proxy = augur_proxy::start(config, None)
        .await
        .map_err(|e| e.to_string())?;
    let offsets = crowd.offsets();
    let bar = ProgressBar::new(offsets.len() as u64).with_style(
        ProgressStyle::with_template("{msg:>22} [{bar:40}] {pos}/{len} requests")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_message(label);
    let outcomes = load::drive(&format!("http://{}/work", proxy.listeners[0]), &offsets, || {
        bar.inc(1)
    })
    .await;
    bar.finish();
    proxy.shutdown().await;
    stop.cancel();
    let _ = receiving.await;
    let _ = std::fs::remove_file(&file);
    let in_service = replicas.lock().await.in_service;
    let mut tally = Tally::new(0, outcomes.len());
    for o in outcomes.iter().filter(|o| o.sent.as_secs_f64() >= crowd.calm) {
        tally.record(o.latency.as_micros() as u64, !o.ok, None);
    }
    let name = if acting {
        format!("hints acting (to {in_service})")
    } else {
        format!("{INITIAL_REPLICAS} fixed replicas")
    };
    let report = tally.finish(&name, &[], None);
    Ok(CrowdRun {
        result: PhaseResult { report, outcomes },
        hints: take(&hints),
        scaled: take(&scaled),
    })
}

/// What a log shared with the receiver's callback holds.
fn take<T>(log: &Mutex<Vec<T>>) -> Vec<T> {
    std::mem::take(&mut *log.lock().unwrap_or_else(PoisonError::into_inner))
}

pub async fn run(short: bool, seed: u64, out: &Path) -> Result<HintsOutcome, String> {
    let crowd = Crowd::new(short);
    let fixed = crowd_run(&crowd, false, out, seed).await?;
    let acting = crowd_run(&crowd, true, out, seed).await?;
    let mut lines = Vec::new();
    let mut first_up = None;
    for (at_s, r) in &acting.hints {
        match r {
            Received::Hint(event) => {
                let hint = &event.data;
                if hint.direction == "up" && first_up.is_none() {
                    first_up = Some(*at_s);
                }
                lines.push(format!(
                    "hint #{} received at {at_s:.1} s, signature verified: {} {} -> {} replicas; {}",
                    hint.sequence,
                    hint.direction,
                    hint.previous_desired_replicas,
                    hint.desired_replicas,
                    hint.reason
                ));
            }
            Received::Duplicate(id) => lines.push(format!("duplicate {id} at {at_s:.1} s, ignored")),
            Received::Rejected(why) => lines.push(format!("rejected at {at_s:.1} s: {why}")),
        }
    }
    for (at_s, replicas, sequence) in &acting.scaled {
        lines.push(format!(
            "autoscaler: {replicas} replicas in service at {at_s:.1} s (hint #{sequence}, after the {} s warm-up), published in the pool's discovery file",
            WARM_UP.as_secs()
        ));
    }
    let outgrows = crowd.outgrows(INITIAL_REPLICAS);
    let capacity = INITIAL_REPLICAS as f64 * CAPACITY_RPS;
    lines.push(match first_up {
        Some(at) if at < outgrows => format!(
            "the crowd outgrew {INITIAL_REPLICAS} replicas ({capacity:.0} req/s) at {outgrows:.1} s: the first hint came {:.1} s ahead (warm-up {} s)",
            outgrows - at,
            WARM_UP.as_secs()
        ),
        Some(at) => format!(
            "the crowd outgrew {INITIAL_REPLICAS} replicas ({capacity:.0} req/s) at {outgrows:.1} s: the first hint came {:.1} s late",
            at - outgrows
        ),
        None => format!(
            "the crowd outgrew {INITIAL_REPLICAS} replicas ({capacity:.0} req/s) at {outgrows:.1} s, and no scale-up hint came"
        ),
    });
    let (f, a) = (&fixed.result.report, &acting.result.report);
    lines.push(format!(
        "p99 through the crowd (requests sent from {:.0} s on): {:.0} ms with {INITIAL_REPLICAS} fixed replicas ({:.1}% failed), {:.0} ms with the hints acting ({:.1}% failed)",
        crowd.calm,
        f.p99_ms,
        f.error_rate * 100.0,
        a.p99_ms,
        a.error_rate * 100.0
    ));
    Ok(HintsOutcome {
        lines,
        runs: [fixed.result, acting.result],
    })
}

/// The phase in one sentence, printed before it runs.
pub fn describe(short: bool) -> String {
    let crowd = Crowd::new(short);
    format!(
        "Autoscaling hints, loop closed: {INITIAL_REPLICAS} replicas of {CAPACITY_RPS:.0} req/s listed in a discovery file the proxy watches; {BASE_RPS:.0} req/s for {:.0} s, then a crowd building by {:.0} req/s every second to {:.0} req/s. The proxy forecasts each 1 s bucket (with the trend-and-level fallback: a demand model needs more history than this phase has; the part after it trains one in simulated time) and POSTs signed CloudEvents to a receiver on loopback, which acts as the autoscaler: it starts the replicas a hint asks for after a {} s warm-up and publishes them in the file. The crowd runs twice: replicas fixed, then hints acting.",
        crowd.calm,
        crowd.slope,
        crowd.rate(crowd.length),
        WARM_UP.as_secs()
    )
}
