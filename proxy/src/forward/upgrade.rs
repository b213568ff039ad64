//! Protocol upgrades (WebSocket and the like): once the backend agrees with a 101, bytes are copied
//! both ways between the two upgraded connections until either side closes.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::headers;
use crate::pool::InFlight;

/// The client's pending upgrade, when the request asks for one over HTTP/1.1.
pub fn take_client_upgrade<B>(request: &mut http::Request<B>) -> Option<OnUpgrade> {
    (request.version() == http::Version::HTTP_11 && headers::is_upgrade(request))
        .then(|| hyper::upgrade::on(request))
}

/// Joins the two upgraded connections; the backend counts the tunnel in flight while it is open.
pub fn spawn_tunnel(client: OnUpgrade, upstream: OnUpgrade, in_flight: InFlight) {
    tokio::spawn(async move {
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(backend = %in_flight.backend().address, error = %e, "upgrade failed");
                return;
            }
        };
        let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            tracing::debug!(backend = %in_flight.backend().address, error = %e, "upgraded connection ended");
        }
    });
}
