//! Every fuzz target, briefly: no input may make a decoder panic. `COCOON_FUZZ_CASES` sets the
//! number of mutated inputs per target (default 2 000); `cocoon-fuzz --cases N` runs them long.

use cocoon_fuzz::{fuzz, targets, Report};

fn cases() -> u64 {
    std::env::var("COCOON_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

fn check(name: &str) {
    let target = targets::by_name(name).expect("a target");
    let Report {
        executions,
        findings,
        panics,
        ..
    } = fuzz(target, cases(), 1);
    assert!(executions > cases());
    let messages: Vec<_> = findings.iter().map(|f| f.message.as_str()).collect();
    assert_eq!(
        panics, 0,
        "{name}: inputs made the decoder panic: {messages:#?}"
    );
}

#[test]
fn every_target_is_tested_here() {
    let here = include_str!("decoders.rs");
    for target in targets::ALL {
        assert!(
            here.contains(&format!("check(\"{}\")", target.name)),
            "{} has no test",
            target.name
        );
    }
}

#[test]
fn certificate() {
    check("certificate");
}
#[test]
fn claims() {
    check("claims");
}
#[test]
fn quote() {
    check("quote");
}
#[test]
fn tdx_quote() {
    check("tdx-quote");
}
#[test]
fn receipt() {
    check("receipt");
}
#[test]
fn receipt_record() {
    check("receipt-record");
}
#[test]
fn voucher() {
    check("voucher");
}
#[test]
fn transaction() {
    check("transaction");
}
#[test]
fn ledger_rules() {
    check("ledger-rules");
}
#[test]
fn openai_request() {
    check("openai-request");
}
#[test]
fn client_sse() {
    check("client-sse");
}
#[test]
fn worker_sse() {
    check("worker-sse");
}
