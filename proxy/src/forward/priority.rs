//! A request's priority where its pool sheds: its route's, unless the request asks for a lower one
//! with `x-priority`. Only a trusted hop (a gateway in front that has already classified the
//! request) may raise it: a client that could mark itself critical would never be shed.

use augur_engine::shedding::Priority;
use http::HeaderMap;

/// Request header that names a priority.
pub const X_PRIORITY: &str = "x-priority";

/// The priority of a request on a route whose priority is `route`, from a `trusted` peer or not.
pub fn of_request(route: Priority, headers: &HeaderMap, trusted: bool) -> Priority {
    let asked = headers
        .get(X_PRIORITY)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<Priority>().ok());
    match asked {
        Some(asked) if asked <= route || trusted => asked,
        _ => route,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asking(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(X_PRIORITY, value.parse().unwrap());
        headers
    }

    #[test]
    fn a_client_may_lower_its_priority_and_only_a_trusted_hop_raise_it() {
        let standard = Priority::Standard;
        assert_eq!(of_request(standard, &HeaderMap::new(), false), standard);
        assert_eq!(
            of_request(standard, &asking("sheddable"), false),
            Priority::Sheddable
        );
        assert_eq!(of_request(standard, &asking("critical"), false), standard);
        assert_eq!(
            of_request(standard, &asking("Critical"), true),
            Priority::Critical
        );
        assert_eq!(
            of_request(standard, &asking("urgent"), true),
            standard,
            "unknown: ignored"
        );
    }
}
