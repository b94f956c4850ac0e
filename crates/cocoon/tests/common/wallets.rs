//! `cocoon wallet` from tests: the accounts of operators, clients and workers outside any node.

use serde_json::Value;

/// `cocoon wallet --json ARGS…` for the wallet in `data_dir` sealed to image `label`, which must
/// succeed; its JSON answer.
pub fn wallet_cli(ledger: &str, data_dir: &str, label: &str, args: &[&str]) -> Value {
    let output = wallet_command(ledger, data_dir, label, args);
    assert!(
        output.status.success(),
        "wallet {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// `cocoon wallet --json ARGS…` for the wallet in `data_dir` sealed to image `label`, run to
/// completion whatever its outcome.
pub fn wallet_command(
    ledger: &str,
    data_dir: &str,
    label: &str,
    args: &[&str],
) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_cocoon"))
        .args([
            "wallet",
            "--json",
            "--ledger",
            ledger,
            "--data-dir",
            data_dir,
            "--image-label",
            label,
        ])
        .args(args)
        .env("COCOON_LOG", "warn")
        .output()
        .unwrap()
}

/// The voucher key a keyless proxy asks its operator to authorize (from its log).
pub fn key_to_authorize(proxy: &super::Node) -> Option<String> {
    proxy.stderr_lines().iter().find_map(|line| {
        let (_, rest) = line.split_once("waiting for the operator")?;
        let (_, key) = rest.split_once("voucher_key=")?;
        Some(key.chars().take(64).collect())
    })
}
