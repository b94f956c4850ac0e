//! Where a worker's engine runs, as the worker attests it.
//!
//! Prompts reach the engine in clear. An engine inside the worker's process, or on the TD's own
//! loopback interface, keeps them inside the TEE; an engine anywhere else receives them over the
//! host's network, outside it. A worker's command line is chosen by the host and is not measured,
//! so the worker puts its engine into its attested claims (attribute [`ENGINE_ATTRIBUTE`]) and
//! proxies judge that claim, not the worker's word: a proxy admits a worker whose engine is remote
//! only when its operator said so.

use http::Uri;

/// The certificate attribute naming the worker's engine: `embedded`, `synthetic` or the URL.
pub const ENGINE_ATTRIBUTE: &str = "engine";

/// Where an engine claim says the engine runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineLocation {
    /// Inside the worker's process (`embedded`, `synthetic`).
    InProcess,
    /// At a loopback address (`localhost`, `127.0.0.0/8`, `::1`): inside the worker's TEE.
    Loopback,
    /// Anywhere else, or a claim that cannot be read: prompts would leave the TEE.
    Remote,
}

impl EngineLocation {
    /// Whether prompts stay inside the worker's TEE.
    pub fn is_inside_tee(self) -> bool {
        self != EngineLocation::Remote
    }
}

/// Judges an engine claim. Anything that is not an in-process engine or an `http` URL whose host
/// is a loopback name or address counts as remote (fail closed): a host name other than
/// `localhost` may resolve anywhere.
pub fn locate(claim: &str) -> EngineLocation {
    if claim == "embedded" || claim == "synthetic" {
        return EngineLocation::InProcess;
    }
    let Ok(uri) = claim.parse::<Uri>() else {
        return EngineLocation::Remote;
    };
    let host = match uri.host() {
        Some(host) if uri.scheme_str() == Some("http") => host,
        _ => return EngineLocation::Remote,
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        EngineLocation::Loopback
    } else {
        EngineLocation::Remote
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_process_and_loopback_engines_are_inside_the_tee() {
        for claim in ["embedded", "synthetic"] {
            assert_eq!(locate(claim), EngineLocation::InProcess, "{claim}");
        }
        for claim in [
            "http://127.0.0.1:8000",
            "http://127.3.4.5:8000/v1",
            "http://localhost:8000",
            "http://LOCALHOST",
            "http://[::1]:8000",
        ] {
            assert_eq!(locate(claim), EngineLocation::Loopback, "{claim}");
            assert!(locate(claim).is_inside_tee());
        }
    }

    #[test]
    fn anything_else_is_remote() {
        for claim in [
            "http://10.0.0.5:8000",
            "http://0.0.0.0:8000",
            "http://[::]:8000",
            "http://engine.internal:8000",
            "http://localhost.attacker.example:8000",
            "http://127.0.0.1.nip.io:8000",
            "https://127.0.0.1:8000",
            "http://user@evil.example:80",
            "",
            "not a url",
            "embedded ",
        ] {
            assert_eq!(locate(claim), EngineLocation::Remote, "{claim:?}");
            assert!(!locate(claim).is_inside_tee());
        }
    }
}
