//! The end-to-end tests: real `cocoon` processes (proxies, workers, clients, ledgers, the TON devnet)
//! over loopback, one module per capability. One test binary, not one per file: each binary links the
//! whole dependency graph, and one libtest run keeps both cores busy until the last test ends.

mod common;

mod attest;
mod attestation;
mod billing_faults;
mod client_payments;
mod closing;
mod dev;
mod embedded_api;
mod embedded_model;
mod floods;
mod hostile_requests;
mod money;
mod network;
mod openai_edge;
mod openai_sdk;
mod proxy_keys;
mod queue;
mod readiness;
mod receipts;
mod registry;
mod registry_trust;
mod ton_money;
mod ton_wallet;
