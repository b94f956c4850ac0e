//! RA-TLS for Cocoon: attested, mutually authenticated TLS 1.3 links.
//!
//! Each node holds an [`Identity`]: a fresh Ed25519 key and a short-lived self-signed X.509
//! certificate with two critical extensions, [`QUOTE_OID_STR`] (the TEE quote,
//! [`cocoon_tee::Quote::to_bytes`]) and [`CLAIMS_OID_STR`] (the [`Claims`] as JSON). The
//! quote's report data is `SHA-512` of the claims bytes and the claims contain the
//! certificate's key, so a quote cannot be moved to another key.
//! [`verify_certificate`] checks all of that plus a [`cocoon_tee::Policy`]; [`Connector`] and
//! [`Acceptor`] run it on both sides of every handshake and return the peer's
//! [`PeerIdentity`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod certificate;
mod claims;
mod error;
mod identity;
mod link;
mod rejudge;
mod rotation;
mod verifier;

pub use certificate::{inspect_certificate, verify_certificate, CertificateContents, PeerIdentity};
pub use claims::{report_data_for, Claims};
pub use error::RatlsError;
pub use identity::{
    Identity, SharedIdentity, SharedPolicy, CLOCK_SKEW_ALLOWANCE, DEFAULT_VALIDITY, MAX_VALIDITY,
};
pub use link::{Acceptor, Connector, ALPN_H2, DEFAULT_ACCEPT_TIMEOUT, DEFAULT_HANDSHAKE_TIMEOUT};
pub use rejudge::PeerWatch;
pub use rotation::spawn_rotation;
pub use verifier::MAX_VERDICT_AGE;

/// OID arcs of the quote extension.
pub const QUOTE_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 12345, 1];
/// OID of the quote extension, dotted.
pub const QUOTE_OID_STR: &str = "1.3.6.1.4.1.12345.1";
/// OID arcs of the claims extension.
pub const CLAIMS_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 12345, 2];
/// OID of the claims extension, dotted.
pub const CLAIMS_OID_STR: &str = "1.3.6.1.4.1.12345.2";
