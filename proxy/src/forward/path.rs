//! The request path as routes match it and backends receive it: dot segments resolved, repeated
//! slashes merged, percent-encoded dots decoded. Otherwise `/public/../admin` would match a route for
//! `/public/` and reach a backend that resolves it to `/admin`.

use std::borrow::Cow;

pub use crate::error::PathError;

/// The normal form of `path` (which starts with `/`); borrowed when it already is normal.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    if path.contains('\\') || contains_encoded_separator(path) {
        return Err(PathError::AmbiguousSeparator);
    }
    if is_normal(path) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_dots(path);
    let mut segments: Vec<&str> = Vec::new();
    let mut pieces = decoded.split('/').skip(1).peekable();
    let mut trailing_slash = false;
    while let Some(segment) = pieces.next() {
        let last = pieces.peek().is_none();
        match segment {
            // An empty segment is a repeated slash, or the final one.
            "" => trailing_slash = last,
            "." => trailing_slash = last,
            ".." => {
                segments.pop().ok_or(PathError::AboveRoot)?;
                trailing_slash = last;
            }
            _ => {
                segments.push(segment);
                trailing_slash = false;
            }
        }
    }
    let mut normal = String::with_capacity(decoded.len());
    for segment in &segments {
        normal.push('/');
        normal.push_str(segment);
    }
    if trailing_slash || segments.is_empty() {
        normal.push('/');
    }
    Ok(Cow::Owned(normal))
}

/// Whether nothing in `path` needs normalising (the common case, checked without allocating).
fn is_normal(path: &str) -> bool {
    !path.contains("//") && !path.split('/').any(|s| s == "." || s == "..") && !has_encoded_dot(path)
}

fn has_encoded_dot(path: &str) -> bool {
    path.as_bytes()
        .windows(3)
        .any(|w| w[0] == b'%' && w[1] == b'2' && (w[2] == b'e' || w[2] == b'E'))
}

fn contains_encoded_separator(path: &str) -> bool {
    path.as_bytes().windows(3).any(|w| {
        w[0] == b'%'
            && ((w[1] == b'2' && (w[2] == b'f' || w[2] == b'F'))
                || (w[1] == b'5' && (w[2] == b'c' || w[2] == b'C')))
    })
}

/// `path` with `%2e`/`%2E` decoded to `.` (other escapes are left for the backend).
fn decode_dots(path: &str) -> Cow<'_, str> {
    if !has_encoded_dot(path) {
        return Cow::Borrowed(path);
    }
    Cow::Owned(path.replace("%2e", ".").replace("%2E", "."))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn dot_segments_repeated_slashes_and_encoded_dots_are_resolved() {
        let cases = [
            ("/", "/"),
            ("/v1/chat", "/v1/chat"),
            ("/public/../admin", "/admin"),
            ("/public/%2e%2e/admin", "/admin"),
            ("/public/%2E./admin", "/admin"),
            ("//v1///chat", "/v1/chat"),
            ("/v1/./chat/", "/v1/chat/"),
            ("/v1/chat/..", "/v1/"),
            ("/a/b/../../", "/"),
            ("/v1/file.txt", "/v1/file.txt"),
            ("/v1/%41", "/v1/%41"),
        ];
        for (path, normal) in cases {
            assert_eq!(normalize(path).as_deref(), Ok(normal), "{path}");
        }
        assert!(matches!(normalize("/v1/chat"), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn climbing_above_the_root_or_hiding_a_separator_is_refused() {
        assert_eq!(normalize("/.."), Err(PathError::AboveRoot));
        assert_eq!(normalize("/a/../../etc/passwd"), Err(PathError::AboveRoot));
        assert_eq!(
            normalize("/public%2f..%2fadmin"),
            Err(PathError::AmbiguousSeparator)
        );
        assert_eq!(
            normalize("/public\\..\\admin"),
            Err(PathError::AmbiguousSeparator)
        );
        assert_eq!(normalize("/a%5Cb"), Err(PathError::AmbiguousSeparator));
    }

    proptest! {
        #[test]
        fn a_normal_path_has_no_dot_segments_and_is_its_own_normal_form(
            segments in proptest::collection::vec("(\\.|\\.\\.|%2e|%2E|[a-z]{1,3}|)", 0..8),
        ) {
            let path = format!("/{}", segments.join("/"));
            if let Ok(normal) = normalize(&path) {
                prop_assert!(normal.starts_with('/'));
                prop_assert!(!normal.contains("//"), "{}", normal);
                prop_assert!(!normal.split('/').any(|s| s == "." || s == ".."), "{}", normal);
                prop_assert_eq!(normalize(&normal).unwrap(), normal.clone());
            }
        }
    }
}
