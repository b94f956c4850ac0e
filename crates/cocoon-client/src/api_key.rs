//! The client API's keys: a request carries one of the configured keys, or none are configured.

use cocoon_proto::ErrorKind;
use http::{header, HeaderMap};
use subtle::ConstantTimeEq;

use crate::http::Failure;

/// Whether `headers` carry one of `keys` as `Authorization: Bearer <key>`.
pub fn authorized(headers: &HeaderMap, keys: &[String]) -> Result<(), Failure> {
    if keys.is_empty() {
        return Ok(());
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(presented) = presented else {
        return Err(Failure::new(
            ErrorKind::Unauthorized,
            "missing API key: send `Authorization: Bearer <key>`",
        ));
    };
    // Compare every key in constant time, so timing does not reveal how much of a key matched.
    let matched = keys.iter().fold(false, |matched, key| {
        matched | bool::from(key.as_bytes().ct_eq(presented.as_bytes()))
    });
    if matched {
        Ok(())
    } else {
        Err(Failure::new(ErrorKind::Unauthorized, "invalid API key"))
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderValue, StatusCode};

    use super::*;

    #[test]
    fn api_keys_are_checked_when_configured() {
        let keys = vec!["secret-1".to_owned(), "secret-2".to_owned()];
        let mut headers = HeaderMap::new();
        assert_eq!(authorized(&headers, &[]), Ok(()));
        let missing = authorized(&headers, &keys).unwrap_err();
        assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
        assert!(missing.error.error.message.contains("missing"));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer secret-3"),
        );
        let wrong = authorized(&headers, &keys).unwrap_err();
        assert_eq!(wrong.error.kind(), Some(ErrorKind::Unauthorized));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer secret-2"),
        );
        assert_eq!(authorized(&headers, &keys), Ok(()));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic secret-2"),
        );
        assert!(authorized(&headers, &keys).is_err());
    }
}
