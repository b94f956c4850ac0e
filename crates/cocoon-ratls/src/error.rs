//! The error type of RA-TLS certificate handling and attested connections.

use cocoon_tee::TeeError;

/// Why an RA-TLS certificate was refused, or an attested link could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RatlsError {
    /// The bytes are not a well-formed X.509 certificate.
    #[error("certificate does not parse: {0}")]
    CertificateParse(String),
    /// A required RA-TLS extension is absent.
    #[error("certificate lacks the {name} extension ({oid})")]
    MissingExtension {
        /// Human name of the extension.
        name: &'static str,
        /// Its OID.
        oid: &'static str,
    },
    /// An RA-TLS extension appears more than once.
    #[error("certificate carries the {0} extension more than once")]
    DuplicateExtension(&'static str),
    /// An RA-TLS extension is present but not marked critical.
    #[error("certificate's {0} extension is not marked critical")]
    ExtensionNotCritical(&'static str),
    /// The certificate carries a critical extension other than ours.
    #[error("certificate carries an unexpected critical extension {0}")]
    UnexpectedCriticalExtension(String),
    /// The certificate's key or signature is not Ed25519.
    #[error("certificate {what} algorithm is {oid}, expected Ed25519 (1.3.101.112)")]
    NotEd25519 {
        /// `"key"` or `"signature"`.
        what: &'static str,
        /// The algorithm OID found.
        oid: String,
    },
    /// The certificate is not signed by its own key.
    #[error("certificate is not self-signed: its signature does not verify with its own key")]
    NotSelfSigned,
    /// The certificate's validity starts in the future.
    #[error("certificate is not valid before {not_before} (unix seconds), now is {now}")]
    NotYetValid {
        /// Start of validity, unix seconds.
        not_before: i64,
        /// Verification time, unix seconds.
        now: i64,
    },
    /// The certificate's validity has ended.
    #[error("certificate expired at {not_after} (unix seconds), now is {now}")]
    Expired {
        /// End of validity, unix seconds.
        not_after: i64,
        /// Verification time, unix seconds.
        now: i64,
    },
    /// The certificate's lifetime is longer than peers accept ([`crate::MAX_VALIDITY`]).
    #[error("certificate is valid for {seconds} s, longer than the {max} s accepted")]
    LifetimeTooLong {
        /// Its `notAfter - notBefore`.
        seconds: i64,
        /// The longest accepted, clock-skew allowance included.
        max: i64,
    },
    /// The claims extension is not valid claims JSON.
    #[error("certificate claims are not valid: {0}")]
    InvalidClaims(String),
    /// The quote's report data is not `SHA-512(claims)`.
    #[error("quote report data is not SHA-512 of the certificate's claims")]
    ReportDataMismatch,
    /// The claims name a different public key than the certificate's.
    #[error("claims public key {claimed} differs from the certificate key {actual}")]
    PublicKeyMismatch {
        /// Hex of the key in the claims.
        claimed: String,
        /// Hex of the certificate's key.
        actual: String,
    },
    /// The quote does not decode or verify.
    #[error("certificate quote is invalid: {0}")]
    Quote(#[source] TeeError),
    /// The quote verifies but the policy refuses it.
    #[error("peer refused by policy: {0}")]
    Policy(#[source] TeeError),
    /// The peer's attested claims name another role than this link is for (a client on a
    /// proxy's worker port, a worker where a proxy was dialled…).
    #[error("peer claims the role {claimed:?}, but this link accepts only {expected:?}")]
    WrongRole {
        /// The role this link accepts.
        expected: String,
        /// The role the peer's certificate claims.
        claimed: String,
    },
    /// Our own attester could not produce a quote.
    #[error("cannot attest this node: {0}")]
    Attestation(#[source] TeeError),
    /// Building our own certificate or TLS configuration failed.
    #[error("cannot build RA-TLS identity: {0}")]
    Identity(String),
    /// TLS configuration was refused by rustls.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The peer address is not `host:port`.
    #[error("invalid peer address {0:?}: expected host:port")]
    InvalidAddress(String),
    /// TCP connection failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address dialled.
        addr: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// Our side refused the peer's certificate during the handshake.
    #[error("peer certificate rejected: {0}")]
    PeerRejected(String),
    /// The TLS handshake failed for another reason (including the peer refusing us).
    #[error("TLS handshake failed: {0}")]
    Handshake(#[source] std::io::Error),
    /// The TLS handshake did not finish in time.
    #[error("TLS handshake timed out after {0:?}")]
    HandshakeTimeout(std::time::Duration),
    /// The handshake finished without a peer certificate (cannot happen with our configs).
    #[error("peer presented no certificate")]
    NoPeerCertificate,
}
