//! Sticky sessions: a cookie names the endpoint that served the client first.

use crate::endpoint::Endpoint;

/// The index of the endpoint the cookie names, if it is still a candidate.
pub(super) fn find(endpoints: &[Endpoint], sticky: Option<u64>) -> Option<usize> {
    let id = sticky?;
    endpoints.iter().position(|e| e.id == id)
}
