//! The demo's hints phase: the real proxy forecasts a pool's demand every second while a crowd builds,
//! and signed hints go to a receiver on loopback (the one `augur hints listen` runs). It shows when
//! the first hint arrived against when the crowd outgrew the replicas.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use augur_proxy::hints::receiver::{serve, Received, ReceiverConfig};
use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;

use super::load;

const SECRET: &str = "augur-demo";
/// Requests per second one replica serves, as the pool's scaling config says.
const CAPACITY_RPS: f64 = 25.0;
const WARM_UP: &str = "2s";
const BASE_RPS: f64 = 20.0;

/// The load: `BASE_RPS` for `calm`, then a crowd building by `slope` requests per second every second.
struct Crowd {
    calm: f64,
    slope: f64,
    length: f64,
}

impl Crowd {
    fn rate(&self, t: f64) -> f64 {
        BASE_RPS + self.slope * (t - self.calm).max(0.0)
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

/// What the phase showed, for the report.
pub struct HintsOutcome {
    /// One line per hint and the verdict.
    pub lines: Vec<String>,
}

pub async fn run(short: bool, seed: u64) -> Result<HintsOutcome, String> {
    let crowd = if short {
        Crowd {
            calm: 5.0,
            slope: 12.0,
            length: 13.0,
        }
    } else {
        Crowd {
            calm: 8.0,
            slope: 8.0,
            length: 22.0,
        }
    };
    let scenario = augur_sim::scenario::scenario("steady").expect("steady exists");
    let cluster = augur_sim::http::serve(&scenario, [127, 0, 0, 1].into(), seed)
        .await
        .map_err(|e| e.to_string())?;
    let replicas = cluster.backends.len();
    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("cannot listen for hints: {e}"))?;
    let receiver_address = receiver.local_addr().map_err(|e| e.to_string())?;
    let received: Arc<Mutex<Vec<(Instant, Received)>>> = Arc::default();
    let stop = CancellationToken::new();
    let log = received.clone();
    let config = ReceiverConfig {
        secret: SECRET.as_bytes().to_vec(),
        max_age: Duration::from_secs(300),
    };
    let receiving = tokio::spawn(serve(
        receiver,
        config,
        move |r| {
            log.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((Instant::now(), r))
        },
        stop.clone(),
    ));
    let config = format!(
        "[proxy]\nid = \"demo-hints\"\n[[listeners]]\naddress = \"127.0.0.1:0\"\n[[routes]]\npool = \"demo\"\n\
         [pools.demo]\nbackends = {}\nscaling = {{ capacity_rps = {CAPACITY_RPS}, max_replicas = 20 }}\n\
         [hints]\nbucket = \"1s\"\nwarm_up = \"{WARM_UP}\"\nhorizons = [\"1s\", \"2s\", \"3s\", \"5s\"]\n\
         [[hints.sinks]]\nurl = \"http://{receiver_address}/hints\"\nsecret = \"{SECRET}\"\n",
        cluster.backends_toml()
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
    bar.set_message("hints");
    let started = Instant::now();
    load::drive(&format!("http://{}/work", proxy.listeners[0]), &offsets, || {
        bar.inc(1)
    })
    .await;
    bar.finish();
    proxy.shutdown().await;
    stop.cancel();
    let _ = receiving.await;
    drop(cluster);
    let outgrows = crowd.outgrows(replicas);
    let mut lines = Vec::new();
    let mut first_up = None;
    for (at, r) in received.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        let at_s = at.duration_since(started).as_secs_f64();
        match r {
            Received::Hint(event) => {
                let hint = &event.data;
                if hint.direction == "up" && first_up.is_none() {
                    first_up = Some(at_s);
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
    let capacity = replicas as f64 * CAPACITY_RPS;
    lines.push(match first_up {
        Some(at) if at < outgrows => format!(
            "the crowd outgrew {replicas} replicas ({capacity:.0} req/s) at {outgrows:.1} s: the first hint came {:.1} s ahead (warm-up {WARM_UP})",
            outgrows - at
        ),
        Some(at) => format!(
            "the crowd outgrew {replicas} replicas ({capacity:.0} req/s) at {outgrows:.1} s: the first hint came {:.1} s late",
            at - outgrows
        ),
        None => format!(
            "the crowd outgrew {replicas} replicas ({capacity:.0} req/s) at {outgrows:.1} s, and no scale-up hint came"
        ),
    });
    Ok(HintsOutcome { lines })
}

/// The phase in one sentence, printed before it runs.
pub fn describe(short: bool) -> String {
    let (calm, slope) = if short { (5, 12) } else { (8, 8) };
    format!(
        "Autoscaling hints: four backends planned at {CAPACITY_RPS:.0} req/s each; {BASE_RPS:.0} req/s for {calm} s, then a crowd building by {slope} req/s every second. The proxy forecasts each 1 s bucket (with the trend-and-level fallback: a demand model needs more history than this phase has; the part after it trains one in simulated time) and POSTs signed CloudEvents to a receiver on loopback."
    )
}
