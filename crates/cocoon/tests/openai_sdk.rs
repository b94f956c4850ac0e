//! End-to-end: the official OpenAI Python SDK (installed by `scripts/setup.sh` into `.venv`)
//! against a real network: chat, stream, legacy completions, `models.retrieve`/`list`, errors
//! naming their parameter, `_request_id`, and `RateLimitError` on a spent quota; and, with the real
//! embedded model, tool calls (forced, `none`, streamed), `parse()` with a pydantic model, logprobs
//! and `n` billed per choice. Skipped, loudly,
//! where the venv is missing (so `cargo test` passes without the setup), except on CI (`CI` set),
//! which runs the setup.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// The venv's Python, if it exists and can import `openai`.
fn sdk_python() -> Option<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = root.join(".venv/bin/python");
    let imports = Command::new(&python)
        .args(["-c", "import openai"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    imports.then_some(python)
}

#[tokio::test]
async fn the_official_python_sdk_works_against_the_client() {
    let Some(python) = sdk_python() else {
        // CI runs scripts/setup.sh: there a missing venv is a failure, not a skip.
        assert!(
            std::env::var_os("CI").is_none(),
            "no .venv with the `openai` package (scripts/setup.sh installs it)"
        );
        eprintln!(
            "\n\n*** SKIPPED the_official_python_sdk_works_against_the_client: no .venv with the \
             `openai` package; run scripts/setup.sh ***\n\n"
        );
        return;
    };
    let (_proxy_node, proxy) = proxy(&[]);
    let (_worker, _) = worker(&proxy, &[]);
    let (_client, api) = client(&proxy, &[]);
    let (_broke, broke_api) = client(&proxy, &["--faucet", "0"]);
    wait_for_model(&api, "synthetic", 1).await;
    wait_for_model_only(&broke_api, "synthetic", 1).await;

    run_script(
        &python,
        "openai_sdk_check.py",
        &[
            ("COCOON_API", format!("{api}/v1")),
            ("COCOON_BROKE_API", format!("{broke_api}/v1")),
            ("COCOON_MODEL", "synthetic".to_owned()),
        ],
    )
    .await;
}

/// The SDK with the real embedded model: forced, `none` and streamed tool calls, `parse()` with a
/// pydantic model (strict `json_schema`), logprobs, `n` billed per choice, a refusal by name.
#[cfg(feature = "embedded")]
#[tokio::test]
async fn the_official_python_sdk_gets_tools_structured_output_logprobs_and_n() {
    let Some(python) = sdk_python() else {
        assert!(std::env::var_os("CI").is_none(), "no .venv with `openai`");
        eprintln!(
            "\n\n*** SKIPPED: no .venv with the `openai` package; run scripts/setup.sh ***\n\n"
        );
        return;
    };
    let Some((_network, api)) = embedded_network(4).await else {
        return;
    };
    run_script(
        &python,
        "openai_sdk_embedded.py",
        &[
            ("COCOON_API", format!("{api}/v1")),
            ("COCOON_MODEL", MODEL_NAME.to_owned()),
        ],
    )
    .await;
}

/// Runs `tests/sdk/<script>` with `env`; it must end with "all checks passed" within 240 s.
async fn run_script(python: &std::path::Path, script: &str, env: &[(&str, String)]) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sdk")
        .join(script);
    let mut child = Command::new(python)
        .arg(&script)
        .envs(env.iter().map(|(key, value)| (*key, value.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the venv's python runs");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(240) {
            child.kill().unwrap();
            panic!("{} did not finish within 240 s", script.display());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        status.success() && stdout.contains("all checks passed"),
        "{} failed:\n{stdout}\n{stderr}",
        script.display()
    );
}
