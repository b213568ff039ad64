//! Protocol upgrades (WebSocket and the like): once the backend agrees with a 101, bytes are copied
//! both ways between the two upgraded connections until either side closes, the tunnel sits idle
//! for the pool's `tunnel_idle`, or the proxy shuts down.

use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;

use crate::listener::{Activity, Tracked, LOOKS_PER_TIMEOUT};
use crate::pool::InFlight;

/// A client's pending upgrade.
pub struct ClientUpgrade {
    pending: OnUpgrade,
    /// Cancelled at shutdown: every tunnel closes.
    close: CancellationToken,
}

/// The client's pending upgrade, when the request asks over HTTP/1.1 for an upgrade the config
/// allows (`allowed`, from `headers::is_upgrade`); its tunnel closes when `close` is cancelled.
pub fn take_client_upgrade<B>(
    request: &mut http::Request<B>,
    allowed: bool,
    close: &CancellationToken,
) -> Option<ClientUpgrade> {
    let asks = allowed && request.version() == http::Version::HTTP_11;
    asks.then(|| ClientUpgrade {
        pending: hyper::upgrade::on(request),
        close: close.clone(),
    })
}

/// Joins the two upgraded connections; the backend counts the tunnel in flight while it is open.
pub fn spawn_tunnel(client: ClientUpgrade, upstream: OnUpgrade, in_flight: InFlight, idle: Duration) {
    let ClientUpgrade {
        pending: client,
        close,
    } = client;
    tokio::spawn(async move {
        let backend = in_flight.backend().address.clone();
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(%backend, error = %e, "upgrade failed");
                return;
            }
        };
        let activity = Activity::new();
        let mut client = Tracked::new(TokioIo::new(client), activity.clone());
        let mut upstream = Tracked::new(TokioIo::new(upstream), activity.clone());
        let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
        let mut copy = std::pin::pin!(copy);
        let mut look_at = tokio::time::Instant::now() + idle / LOOKS_PER_TIMEOUT;
        loop {
            tokio::select! {
                copied = copy.as_mut() => {
                    if let Err(e) = copied {
                        tracing::debug!(%backend, error = %e, "upgraded connection ended");
                    }
                    return;
                }
                () = tokio::time::sleep_until(look_at) => match activity.quiet_for(idle) {
                    Ok(()) => {
                        tracing::debug!(%backend, ?idle, "tunnel idle; closing it");
                        return;
                    }
                    Err(next) => look_at = next,
                },
                () = close.cancelled() => return,
            }
        }
    });
}
