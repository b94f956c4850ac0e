//! The local TON devnet (`contracts/devnet/server.js`: the real TVM of `@ton/sandbox` behind the
//! TON HTTP API v2 subset the backend uses, with a faucet) as a child process of `cocoon dev
//! --settlement ton-devnet`, stopped with the network.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long the devnet may take to print its address (Node starts and compiles nothing: the
/// committed contract code is loaded).
const START_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// A running devnet; killed when dropped, and gone when this process dies however it dies (it
/// exits when its standard input, held here, closes).
pub struct Devnet {
    _child: Child,
    _stdin: tokio::process::ChildStdin,
    /// Its base URL (the faucet is at `/devnet/faucet`).
    pub base: String,
}

impl Devnet {
    /// The TON HTTP API v2 endpoint (`--ton-api`).
    pub fn api(&self) -> String {
        format!("{}/api/v2", self.base)
    }
}

/// Where the devnet's sources are: `contracts/` under the current directory (a checkout), else
/// the one this binary was built from.
fn contracts_dir() -> anyhow::Result<PathBuf> {
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contracts");
    for dir in [PathBuf::from("contracts"), built_from] {
        if dir.join("node_modules/@ton/sandbox").is_dir() {
            return Ok(dir);
        }
    }
    bail!(
        "the TON devnet needs contracts/node_modules (run scripts/setup.sh in the Cocoon checkout, \
         and run `cocoon dev --settlement ton-devnet` from it)"
    )
}

/// Starts the devnet on `listen`.
pub async fn start(listen: &str) -> anyhow::Result<Devnet> {
    let dir = contracts_dir()?;
    let mut child = Command::new("node")
        .args(["devnet/server.js", "--listen", listen, "--exit-with-stdin"])
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting the TON devnet (`node`; Node 20 is needed)")?;
    let stdout = child.stdout.take().context("the devnet's output")?;
    let stdin = child.stdin.take().context("the devnet's input")?;
    let mut lines = BufReader::new(stdout).lines();
    let read = async {
        while let Some(line) = lines.next_line().await? {
            if let Some(url) = line.strip_prefix("devnet listening on ") {
                return Ok::<_, anyhow::Error>(url.trim().to_owned());
            }
        }
        bail!("the devnet exited before it listened")
    };
    let base = tokio::time::timeout(START_TIMEOUT, read)
        .await
        .context("the devnet did not start in time")??;
    // Keep reading what it prints, so a full pipe never stalls it.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Devnet {
        _child: child,
        _stdin: stdin,
        base,
    })
}
