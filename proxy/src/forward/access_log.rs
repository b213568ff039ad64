//! The access log: one line per request, written when its response body ends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderValue;
use http::Request;

/// What the access log says of one request.
pub struct AccessLog {
    enabled: bool,
    method: http::Method,
    /// The request's URI, whose path the line shows (a reference count, not a copy: every request
    /// makes a line, most never written).
    uri: http::Uri,
    client: SocketAddr,
    request_id: HeaderValue,
    /// Route name.
    pub route: Option<Arc<str>>,
    /// Address of the backend of the last attempt (`cache` for a stored response).
    pub backend: Option<Arc<str>>,
    /// Attempts made.
    pub attempts: u32,
    /// Status sent to the client.
    pub status: u16,
    /// The proxy's own error code, when it answered itself.
    pub error: Option<&'static str>,
    /// The tenant of the key the request came with (never the key itself).
    pub tenant: Option<Arc<str>>,
    /// That key's id.
    pub key: Option<Arc<str>>,
    /// Prompt and completion tokens the response used, when it was metered.
    pub tokens: Option<(u32, u32)>,
}

impl AccessLog {
    /// A line for `request`; logged at info when `enabled`, else at debug.
    pub fn new<B>(request: &Request<B>, client: SocketAddr, request_id: HeaderValue, enabled: bool) -> Self {
        Self {
            enabled,
            method: request.method().clone(),
            uri: request.uri().clone(),
            client,
            request_id,
            route: None,
            backend: None,
            attempts: 0,
            status: 0,
            error: None,
            tenant: None,
            key: None,
            tokens: None,
        }
    }
}

impl AccessLog {
    /// Writes the line, `elapsed` after the request arrived.
    pub fn write(&self, elapsed: Duration) {
        macro_rules! access {
            ($level:expr) => {
                tracing::event!(target: "augur::access", $level,
                    method = %self.method, path = self.uri.path(), status = self.status,
                    route = self.route.as_deref().unwrap_or_default(),
                    backend = self.backend.as_deref().unwrap_or_default(), attempts = self.attempts,
                    error = self.error,
                    tenant = self.tenant.as_deref(), key = self.key.as_deref(),
                    input_tokens = self.tokens.map(|t| t.0), output_tokens = self.tokens.map(|t| t.1),
                    duration_ms = elapsed.as_secs_f64() * 1e3,
                    request_id = self.request_id.to_str().unwrap_or_default(), client = %self.client.ip())
            };
        }
        if self.enabled {
            access!(tracing::Level::INFO);
        } else {
            access!(tracing::Level::DEBUG);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A writer into a shared buffer, for a subscriber to write lines into.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_line_names_the_request_its_route_backend_and_tenant() {
        let request = Request::post("http://api.example.com/v1/chat?x=1")
            .body(())
            .unwrap();
        let client: SocketAddr = "192.0.2.7:50000".parse().unwrap();
        let mut log = AccessLog::new(&request, client, HeaderValue::from_static("req-1"), true);
        log.route = Some(Arc::from("chat"));
        log.backend = Some(Arc::from("10.0.0.5:8000"));
        (log.status, log.attempts) = (200, 2);
        log.tenant = Some(Arc::from("team-a"));
        log.key = Some(Arc::from("team-a-ci"));
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || log.write(Duration::from_millis(3)));
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        let fields = &line["fields"];
        assert_eq!(line["level"], "INFO");
        for (field, value) in [
            ("method", "POST"),
            ("path", "/v1/chat"),
            ("route", "chat"),
            ("backend", "10.0.0.5:8000"),
            ("tenant", "team-a"),
            ("key", "team-a-ci"),
            ("request_id", "req-1"),
            ("client", "192.0.2.7"),
        ] {
            assert_eq!(fields[field], value, "{field}: {text}");
        }
        assert_eq!(
            (fields["status"].as_u64(), fields["attempts"].as_u64()),
            (Some(200), Some(2))
        );
    }
}
