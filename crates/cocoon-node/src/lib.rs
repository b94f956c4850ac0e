//! Plumbing that every Cocoon node (proxy, worker, client) shares:
//!
//! - [`attestation`]: the node's attested identity and peer policy, built from its configuration;
//! - [`engine_claim`]: where a worker's attested engine runs (inside its TEE or not);
//! - [`link`]: HTTP/2 over RA-TLS in both directions (a dialer may be the HTTP/2 server);
//! - [`stats`]: the `/healthz`, `/stats`, `/jsonstats` and `/metrics` surfaces;
//! - [`registry`]: the registry read from the ledger and watched; policies that follow it;
//! - [`registry_trust`]: the pinned registry owner and the last version accepted;
//! - [`reply`]: OpenAI-shaped error responses; [`trailers`]: usage and failures at the end of answers;
//! - [`wallet`]: the node's sealed wallet key and the wallet peers name in their claims;
//! - [`backoff`] and [`shutdown`]: reconnect pacing and Ctrl-C/SIGTERM handling;
//! - [`serve`]: plain-HTTP surfaces and accept loops under limits (the `cocoon-serve` crate,
//!   which the ledger shares).

#![forbid(unsafe_code)]

pub mod attestation;
pub mod engine_claim;
pub mod key_file;
pub mod link;
pub mod prices;
pub mod registry;
pub mod registry_trust;
pub mod reply;
pub mod shutdown;
pub mod stats;
pub mod trailers;
pub mod wallet;

pub use cocoon_serve as serve;
pub use cocoon_serve::backoff;

/// The HTTP body type used on every surface and link.
pub type Body = axum::body::Body;
