//! `cocoon attest`: certificates made, shown and checked by the real binary.

use std::process::Command;

use crate::common::image_hash;
use serde_json::Value;

fn cocoon(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_cocoon"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("cocoon runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[test]
fn a_generated_certificate_shows_its_claims_and_verifies_only_under_a_matching_policy() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("worker.pem");
    let cert = cert.to_str().unwrap();
    let (ok, fingerprint) = cocoon(&[
        "attest",
        "gen-cert",
        "--out",
        cert,
        "--image-label",
        "attest-test",
        "--role",
        "worker",
        "--claim",
        "model=m",
    ]);
    assert!(ok);
    let expected_image = image_hash("attest-test");
    let (ok, printed) = cocoon(&["attest", "image-hash", "--image-label", "attest-test"]);
    assert!(ok);
    assert_eq!(printed.trim(), expected_image);
    let (ok, printed) = cocoon(&[
        "attest",
        "image-hash",
        "--image-label",
        "attest-test",
        "--json",
    ]);
    assert!(ok);
    let printed: Value = serde_json::from_str(&printed).unwrap();
    assert_eq!(printed["image_hash"], expected_image.as_str());
    assert_eq!(printed["tee"], "fake");
    let again = dir.path().join("again.pem");
    let again = again.to_str().unwrap();
    let (ok, made) = cocoon(&[
        "attest",
        "gen-cert",
        "--out",
        again,
        "--image-label",
        "attest-test",
        "--json",
    ]);
    assert!(ok);
    let made: Value = serde_json::from_str(&made).unwrap();
    assert_eq!(made["out"], again);
    assert_eq!(made["fingerprint"].as_str().map(str::len), Some(64));

    let (ok, shown) = cocoon(&["attest", "show", cert, "--json"]);
    assert!(ok);
    let shown: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["fingerprint"], fingerprint.trim());
    assert_eq!(shown["claims"]["role"], "worker");
    assert_eq!(shown["claims"]["attributes"]["model"], "m");
    assert_eq!(shown["quote"]["kind"], "fake");
    assert_eq!(shown["quote"]["verifies"], true);
    assert_eq!(shown["quote"]["image_hash"], expected_image.as_str());

    let (ok, verdict) = cocoon(&[
        "attest",
        "verify",
        cert,
        "--allow-image",
        &expected_image,
        "--min-kind",
        "fake",
        "--json",
    ]);
    assert!(ok, "{verdict}");
    assert_eq!(
        serde_json::from_str::<Value>(&verdict).unwrap()["valid"],
        true
    );

    let (ok, verdict) = cocoon(&[
        "attest",
        "verify",
        cert,
        "--allow-image",
        &image_hash("other"),
        "--min-kind",
        "fake",
        "--json",
    ]);
    assert!(!ok);
    let verdict: Value = serde_json::from_str(&verdict).unwrap();
    assert_eq!(verdict["valid"], false);
    assert!(
        verdict["error"]
            .as_str()
            .unwrap()
            .contains("not in the allowed list"),
        "{verdict}"
    );

    // A day and a half later the one-day certificate has expired.
    let later = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 129_600)
        .to_string();
    let (ok, verdict) = cocoon(&[
        "attest",
        "verify",
        cert,
        "--at",
        &later,
        "--min-kind",
        "fake",
        "--json",
    ]);
    assert!(!ok);
    assert!(verdict.contains("expired"), "{verdict}");
    // By default `tdx` is the minimum: a fake quote proves nothing and is refused.
    let (ok, verdict) = cocoon(&["attest", "verify", cert, "--json"]);
    assert!(!ok);
    assert!(
        verdict.contains("below the policy's minimum tdx"),
        "{verdict}"
    );
}

#[test]
fn a_corrupted_certificate_is_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("c.der");
    std::fs::write(&cert, b"not a certificate").unwrap();
    let (ok, _) = cocoon(&["attest", "show", cert.to_str().unwrap()]);
    assert!(!ok);
}
