//! The fuzz targets: every decoder that reads bytes a peer chose.

mod attestation;
mod http;
mod money;

use crate::Target;

/// Every target, in the order `cocoon-fuzz` runs them.
pub const ALL: &[Target] = &[
    attestation::CERTIFICATE,
    attestation::CLAIMS,
    attestation::QUOTE,
    attestation::TDX_QUOTE,
    money::RECEIPT,
    money::RECEIPT_WIRE,
    money::VOUCHER,
    money::TRANSACTION,
    money::LEDGER_RULES,
    http::OPENAI_REQUEST,
    http::CLIENT_SSE,
    http::WORKER_SSE,
];

/// The target called `name`.
pub fn by_name(name: &str) -> Option<&'static Target> {
    ALL.iter().find(|t| t.name == name)
}
