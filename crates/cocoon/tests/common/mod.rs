//! Starting real `cocoon` processes on loopback for end-to-end tests. Every proxy gets its own
//! ledger process (faucet on), and every node a fresh data directory for its wallet, so each
//! network pays its way exactly as a deployed one does.

#![allow(dead_code)]

use std::io::BufRead;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cocoon_tee::FakeAttester;

mod answers;
#[cfg(feature = "embedded")]
mod model;
mod scenarios;
mod ton;
#[path = "../../../cocoon-ton/tests/support/mod.rs"]
pub mod ton_devnet;
mod wallets;
// Not every test binary asks for answers or sets up a scenario.
#[allow(unused_imports)]
pub use answers::*;
#[cfg(feature = "embedded")]
#[allow(unused_imports)]
pub use model::*;
#[allow(unused_imports)]
pub use scenarios::*;
#[allow(unused_imports)]
pub use ton::*;
#[allow(unused_imports)]
pub use wallets::*;

/// What the faucet gives a test node that needs money (nano-units).
pub const TEST_FAUCET: &str = "1000000000000";

/// The seed of the key that owns every test ledger's registry unless a test names its own owner.
pub const TEST_OWNER_SEED: [u8; 32] = [0x5e; 32];

/// The test registry owner's key.
pub fn test_owner_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&TEST_OWNER_SEED)
}

/// The test registry owner's account (hex), for `--owner` and `--registry-owner`.
pub fn test_owner() -> String {
    cocoon_money::AccountId::from(&test_owner_key()).to_string()
}

/// A running `cocoon` process, killed when dropped (with its data directory, if it owns one).
pub struct Node {
    child: Child,
    /// The role (`cocoon`'s first argument), to name the node when it died early.
    role: String,
    /// Whether the test killed it (then its exit is no news).
    killed: bool,
    /// Its standard error so far, when [`Launch::capture_stderr`] asked for it.
    stderr: Option<Arc<Mutex<Vec<String>>>>,
    _dir: Option<tempfile::TempDir>,
}

/// How a node is started, beyond its arguments.
#[derive(Debug, Clone, Copy, Default)]
pub struct Launch {
    /// RLIMIT_NOFILE (soft and hard) for the process, as a deployment with the common default of
    /// 1 024 has (set through util-linux's `prlimit`).
    pub file_limit: Option<u64>,
    /// A soft RLIMIT_NOFILE below `file_limit` (the hard one), as a shell or service manager
    /// that keeps the soft default of 1 024 under a higher hard limit starts it.
    pub soft_file_limit: Option<u64>,
    /// Keep its standard error for [`Node::stderr_lines`] instead of passing it through.
    pub capture_stderr: bool,
}

impl Node {
    /// Starts `cocoon ARGS…`.
    pub fn start(args: &[String]) -> Node {
        Node::spawn(args, Stdio::null(), Launch::default())
    }

    /// Starts `cocoon ARGS…` as `launch` says.
    pub fn launch(args: &[String], launch: Launch) -> Node {
        Node::spawn(args, Stdio::null(), launch)
    }

    /// Starts `cocoon ARGS…` with its standard output readable, for commands that report on it.
    pub fn start_with_stdout(args: &[String]) -> (Node, std::process::ChildStdout) {
        let mut node = Node::spawn(args, Stdio::piped(), Launch::default());
        let stdout = node.child.stdout.take().expect("piped stdout");
        (node, stdout)
    }

    fn spawn(args: &[String], stdout: Stdio, launch: Launch) -> Node {
        let cocoon = env!("CARGO_BIN_EXE_cocoon");
        let mut command = match launch.file_limit {
            // `prlimit` execs the command: the child's pid stays the node's.
            Some(limit) => {
                let mut command = Command::new("prlimit");
                command
                    .arg(format!(
                        "--nofile={}:{limit}",
                        launch.soft_file_limit.unwrap_or(limit)
                    ))
                    .arg("--")
                    .arg(cocoon);
                command
            }
            None => Command::new(cocoon),
        };
        command
            .args(args)
            .env("COCOON_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(stdout);
        if launch.capture_stderr {
            command.stderr(Stdio::piped());
        }
        let mut child = command.spawn().expect("cocoon starts");
        let stderr = child.stderr.take().map(|pipe| {
            let lines = Arc::new(Mutex::new(Vec::new()));
            let sink = lines.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    sink.lock().unwrap().push(line);
                }
            });
            lines
        });
        Node {
            child,
            role: args.first().cloned().unwrap_or_default(),
            killed: false,
            stderr,
            _dir: None,
        }
    }

    /// The lines it has written to standard error so far (started with
    /// [`Launch::capture_stderr`]).
    pub fn stderr_lines(&self) -> Vec<String> {
        let lines = self.stderr.as_ref().expect("stderr is captured");
        lines.lock().unwrap().clone()
    }

    /// Starts `cocoon ARGS…`, removing `dir` when the node is dropped.
    pub fn start_owning(args: &[String], dir: tempfile::TempDir) -> Node {
        let mut node = Node::start(args);
        node._dir = Some(dir);
        node
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has exited (and how).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM, as a service manager stopping it would; the node then stops by itself.
    pub fn terminate(&mut self) {
        self.signal("TERM");
    }

    /// SIGINT, as Ctrl-C in its terminal would; the node then stops by itself.
    pub fn interrupt(&mut self) {
        self.signal("INT");
    }

    fn signal(&mut self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits up to `within` for the node to exit by itself; returns how it exited.
    pub fn exit_within(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let started = Instant::now();
        while started.elapsed() < within {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        self.killed = true;
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // A node that died on its own explains a failed wait; its own error is on stderr above.
        let died = if self.killed { None } else { self.exited() };
        if let Some(status) = died.filter(|status| !status.success()) {
            eprintln!(
                "the {} node had exited before the test ended: {status}",
                self.role
            );
        }
        self.kill();
    }
}

/// A port free right now on loopback, for a node this test starts.
///
/// A node binds its ports only after it has attested and opened its wallet (a second or more on a
/// loaded machine), so a port that is merely free now must not be one the kernel may hand out
/// meanwhile: not an ephemeral port (another test's `bind(0)` or outgoing connection could take
/// it), and never the same one twice in this process. Ports are taken in turn from the range
/// below the kernel's ephemeral range, starting at an offset drawn from the process id so that
/// test binaries running side by side start apart.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    // Clear of `cocoon dev`'s ports (10000–14000 and up by instance) and `cocoon bench`'s (19000).
    let low = ephemeral_low.saturating_sub(12_000).max(1024);
    let span = ephemeral_low.saturating_sub(low).max(1);
    let start = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let port = low + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        if let Ok(port) = u16::try_from(port) {
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    panic!("no free port below the ephemeral range {ephemeral_low}")
}

/// `127.0.0.1:PORT` on a free port.
pub fn free_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// The image hash `fake` attestation gives a node with `label`.
pub fn image_hash(label: &str) -> String {
    FakeAttester::from_label(label).image_hash().to_string()
}

/// Addresses of a proxy, and what it settles on.
pub struct ProxyAddrs {
    pub workers: String,
    pub clients: String,
    pub stats: String,
    /// Base URL of its ledger (on TON: the devnet's API).
    pub ledger: String,
    /// On TON, the flags every node and command of this network takes (`--settlement
    /// ton-devnet --ton-api … --ton-root …`); empty on the local ledger.
    pub ton: Vec<String>,
    /// Its data directory (wallet key, money database).
    pub data_dir: PathBuf,
    /// The registry owner every node of this network pins (`--registry-owner`; empty on TON,
    /// where the root is the authority).
    pub registry_owner: String,
    /// The ledger process or the devnet, shared by every node of this network.
    settler: Settler,
    /// The proxy's data directory outlives proxy processes, so a proxy can be restarted on it.
    _data_dir: tempfile::TempDir,
}

/// What a test network settles on.
enum Settler {
    Ledger {
        node: Node,
        /// Its command line, to restart it on its database.
        args: Vec<String>,
        /// Outlives ledger processes, so the ledger can be restarted on it.
        _dir: tempfile::TempDir,
    },
    Devnet(ton_devnet::Devnet),
}

impl ProxyAddrs {
    /// Kills the ledger process (SIGKILL), as an outage would.
    pub fn kill_ledger(&mut self) {
        match &mut self.settler {
            Settler::Ledger { node, .. } => node.kill(),
            Settler::Devnet(_) => panic!("a network on TON has no ledger process"),
        }
    }

    /// Starts the ledger again on the same address and database; waits until it listens.
    pub fn restart_ledger(&mut self) {
        let Settler::Ledger { node, args, .. } = &mut self.settler else {
            panic!("a network on TON has no ledger process");
        };
        *node = Node::start(args);
        wait_for_port(self.ledger.trim_start_matches("http://"));
    }

    /// The devnet of a network on TON.
    pub fn devnet(&self) -> &ton_devnet::Devnet {
        match &self.settler {
            Settler::Devnet(devnet) => devnet,
            Settler::Ledger { .. } => panic!("this network settles on a local ledger"),
        }
    }
}

/// Waits (blocking) until something listens on `addr`.
pub fn wait_for_port(addr: &str) {
    let started = Instant::now();
    while TcpStream::connect(addr).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "nothing listens on {addr}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts a ledger (faucet on) with its database in `dir` and `extra` flags; returns it and its
/// base URL. Unless `extra` names another `--owner`, the test owner owns the registry (also one
/// from `--registry`, whose owner must then be [`test_owner`]) and signs a first version of it, so
/// that nodes pinning the owner have one to read.
pub fn ledger(dir: &Path, extra: &[&str]) -> (Node, String) {
    let (node, url, _) = ledger_with_args(dir, extra, Launch::default());
    (node, url)
}

/// [`ledger`], started as `launch` says.
pub fn ledger_launched(dir: &Path, extra: &[&str], launch: Launch) -> (Node, String) {
    let (node, url, _) = ledger_with_args(dir, extra, launch);
    (node, url)
}

/// [`ledger`] started as `launch` says, also returning its command line (to restart it).
fn ledger_with_args(dir: &Path, extra: &[&str], launch: Launch) -> (Node, String, Vec<String>) {
    let listen = free_addr();
    let owner = test_owner();
    let args = strings(&[
        "ledger",
        "--listen",
        &listen,
        "--database",
        &dir.join("ledger.sqlite3").display().to_string(),
        "--faucet",
    ]);
    let args = with_defaults(args, &[("--owner", &owner)], extra);
    let node = Node::launch(&args, launch);
    wait_for_port(&listen);
    let url = format!("http://{listen}");
    if !extra.contains(&"--owner") {
        let key = dir.join("test-owner.key");
        std::fs::write(&key, hex::encode(TEST_OWNER_SEED)).unwrap();
        let key = key.display().to_string();
        cocoon_ok(&["registry", "--ledger", &url, "--owner-key", &key, "publish"]);
    }
    (node, url, args)
}

/// `args` plus `--FLAG VALUE` unless `extra` sets that flag itself; then `extra`.
fn with_defaults(mut args: Vec<String>, defaults: &[(&str, &str)], extra: &[&str]) -> Vec<String> {
    for (flag, value) in defaults {
        if !extra.contains(flag) {
            args.extend(strings(&[flag, value]));
        }
    }
    args.extend(strings(extra));
    args
}

/// Starts a proxy with `extra` flags, on a fresh ledger of its own.
pub fn proxy(extra: &[&str]) -> (Node, ProxyAddrs) {
    proxy_on_ledger(&[], extra)
}

/// Starts a proxy with `extra` flags, on a fresh ledger started with `ledger_extra` flags.
pub fn proxy_on_ledger(ledger_extra: &[&str], extra: &[&str]) -> (Node, ProxyAddrs) {
    let addrs = proxy_addrs(ledger_extra);
    let node = Node::start(&proxy_args(&addrs, extra));
    (node, addrs)
}

/// A fresh ledger started with `ledger_extra` flags, and addresses and a data directory for a
/// proxy on it, which the caller starts (`Node::start(&proxy_args(&addrs, extra))`).
pub fn proxy_addrs(ledger_extra: &[&str]) -> ProxyAddrs {
    let ledger_dir = tempfile::tempdir().unwrap();
    let (ledger_node, ledger_url, ledger_args) =
        ledger_with_args(ledger_dir.path(), ledger_extra, Launch::default());
    let dir = tempfile::tempdir().unwrap();
    let registry_owner = match ledger_extra.iter().position(|flag| *flag == "--owner") {
        Some(at) => ledger_extra[at + 1].to_owned(),
        None => test_owner(),
    };
    ProxyAddrs {
        workers: free_addr(),
        clients: free_addr(),
        stats: free_addr(),
        ledger: ledger_url,
        ton: Vec::new(),
        data_dir: dir.path().to_owned(),
        registry_owner,
        settler: Settler::Ledger {
            node: ledger_node,
            args: ledger_args,
            _dir: ledger_dir,
        },
        _data_dir: dir,
    }
}

/// The command line of the proxy at `addrs` (used again to restart it).
pub fn proxy_args(addrs: &ProxyAddrs, extra: &[&str]) -> Vec<String> {
    proxy_args_for(
        addrs,
        &addrs.workers,
        &addrs.clients,
        &addrs.stats,
        &addrs.data_dir,
        extra,
    )
}

/// The command line of a proxy in the network of `network` (its ledger and registry owner) with
/// these addresses and data directory.
fn proxy_args_for(
    network: &ProxyAddrs,
    workers: &str,
    clients: &str,
    stats: &str,
    data_dir: &Path,
    extra: &[&str],
) -> Vec<String> {
    let operator_key = data_dir.join(OPERATOR_KEY_FILE).display().to_string();
    let args = strings(&[
        "proxy",
        "--worker-listen",
        workers,
        "--client-listen",
        clients,
        "--stats-listen",
        stats,
        "--ledger",
        &network.ledger,
        "--data-dir",
        &data_dir.display().to_string(),
    ]);
    let args = [args, network.ton.clone()].concat();
    with_defaults(
        args,
        &[
            ("--registry-owner", &network.registry_owner),
            ("--image-label", "test-proxy"),
            ("--tee", "fake"),
            ("--min-worker-tee", "fake"),
            ("--min-client-tee", "fake"),
            ("--faucet", TEST_FAUCET),
            ("--settle-interval-ms", "200"),
            // Development only: the proxy opens its contract and authorizes its keys itself,
            // unless the test gives it an operator account (then it waits for authorization).
            if extra.contains(&"--operator-account") {
                ("--operator-account", "")
            } else {
                ("--operator-key-file", operator_key.as_str())
            },
        ],
        extra,
    )
}

/// The test proxy operator's key file, in the proxy's data directory (created by the proxy).
pub const OPERATOR_KEY_FILE: &str = "operator.key";

/// Another proxy in an existing network (same ledger and registry owner, a wallet of its own).
pub struct OtherProxy {
    pub workers: String,
    pub clients: String,
    pub stats: String,
    _data_dir: tempfile::TempDir,
}

/// Starts another proxy with `extra` flags in the network of `network`.
pub fn proxy_beside(network: &ProxyAddrs, extra: &[&str]) -> (Node, OtherProxy) {
    let dir = tempfile::tempdir().unwrap();
    let other = OtherProxy {
        workers: free_addr(),
        clients: free_addr(),
        stats: free_addr(),
        _data_dir: dir,
    };
    let args = proxy_args_for(
        network,
        &other.workers,
        &other.clients,
        &other.stats,
        other._data_dir.path(),
        extra,
    );
    (Node::start(&args), other)
}

/// Starts a synthetic-engine worker for `proxy` with `extra` flags; returns it and its stats address.
pub fn worker(proxy: &ProxyAddrs, extra: &[&str]) -> (Node, String) {
    worker_on(proxy, Some(&proxy.workers), extra)
}

/// Starts a synthetic-engine worker in the network of `network` (its ledger and registry owner)
/// that dials `proxy`, or the proxies the registry lists when `None`.
pub fn worker_on(network: &ProxyAddrs, proxy: Option<&str>, extra: &[&str]) -> (Node, String) {
    let stats = free_addr();
    let dir = tempfile::tempdir().unwrap();
    let mut args = strings(&[
        "worker",
        "--stats-listen",
        &stats,
        "--ledger",
        &network.ledger,
    ]);
    if let Some(proxy) = proxy {
        args.extend(strings(&["--proxy", proxy]));
    }
    args.extend(network.ton.iter().cloned());
    let data_dir = dir.path().display().to_string();
    let args = with_defaults(
        args,
        &[
            ("--registry-owner", &network.registry_owner),
            ("--data-dir", &data_dir),
            ("--image-label", "test-worker"),
            ("--tee", "fake"),
            ("--min-peer-tee", "fake"),
            ("--engine", "synthetic"),
            ("--claim-interval-ms", "200"),
            // On TON the claims' fees come from the worker's own wallet.
            if network.ton.is_empty() {
                ("--faucet", "0")
            } else {
                ("--faucet", TEST_FAUCET)
            },
        ],
        extra,
    );
    (Node::start_owning(&args, dir), stats)
}

/// Starts a client for `proxy` with `extra` flags; returns it and its API base URL.
pub fn client(proxy: &ProxyAddrs, extra: &[&str]) -> (Node, String) {
    client_on(proxy, Some(&proxy.clients), extra)
}

/// Starts a client in the network of `network` (its ledger and registry owner) that uses `proxy`,
/// or the proxies the registry lists when `None`.
pub fn client_on(network: &ProxyAddrs, proxy: Option<&str>, extra: &[&str]) -> (Node, String) {
    client_launched(network, proxy, extra, Launch::default())
}

/// [`client_on`], started as `launch` says.
pub fn client_launched(
    network: &ProxyAddrs,
    proxy: Option<&str>,
    extra: &[&str],
    launch: Launch,
) -> (Node, String) {
    let listen = free_addr();
    let dir = tempfile::tempdir().unwrap();
    let client = ClientArgs {
        ledger: &network.ledger,
        registry_owner: &network.registry_owner,
        listen: &listen,
        data_dir: &dir.path().display().to_string(),
    };
    let extra: Vec<&str> = network
        .ton
        .iter()
        .map(String::as_str)
        .chain(extra.iter().copied())
        .collect();
    let mut node = Node::launch(&client.args(proxy, &extra), launch);
    node._dir = Some(dir);
    (node, format!("http://{listen}"))
}

/// Where a client listens, settles and keeps its state, and whom it believes about the registry.
pub struct ClientArgs<'a> {
    pub ledger: &'a str,
    pub registry_owner: &'a str,
    pub listen: &'a str,
    /// The default `--data-dir` (`extra` may set another).
    pub data_dir: &'a str,
}

impl ClientArgs<'_> {
    /// The client's command line: it uses `proxy`, or the registry's proxies when `None`.
    pub fn args(&self, proxy: Option<&str>, extra: &[&str]) -> Vec<String> {
        let mut args = strings(&["client", "--listen", self.listen, "--ledger", self.ledger]);
        if let Some(proxy) = proxy {
            args.extend(strings(&["--proxy", proxy]));
        }
        with_defaults(
            args,
            &[
                ("--registry-owner", self.registry_owner),
                ("--data-dir", self.data_dir),
                ("--image-label", "test-client"),
                ("--tee", "fake"),
                ("--min-peer-tee", "fake"),
                ("--faucet", TEST_FAUCET),
                ("--settle-interval-ms", "200"),
            ],
            extra,
        )
    }
}

/// Runs `cocoon ARGS…` to completion; returns whether it succeeded, its stdout and its stderr.
pub fn cocoon(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_cocoon"))
        .args(args)
        .env("COCOON_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("cocoon runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs `cocoon ARGS…`, which must succeed; returns its stdout.
pub fn cocoon_ok(args: &[&str]) -> String {
    let (ok, stdout, stderr) = cocoon(args);
    assert!(ok, "cocoon {args:?} failed: {stderr}");
    stdout
}

/// Owned copies of `items`, for command lines.
pub fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// An HTTP client that opens a new connection per request, like the benchmarks.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// GETs `url` and reads its JSON answer.
pub async fn get_json(url: &str) -> serde_json::Value {
    http().get(url).send().await.unwrap().json().await.unwrap()
}

/// GETs `url` and reads its answer as text.
pub async fn get_text(url: &str) -> String {
    http().get(url).send().await.unwrap().text().await.unwrap()
}

/// The workers a proxy has linked, as its `/jsonstats` lists them (id, model, coefficient, load,
/// failures…).
pub async fn proxy_workers(proxy: &ProxyAddrs) -> Vec<serde_json::Value> {
    let stats = get_json(&format!("http://{}/jsonstats", proxy.stats)).await;
    stats["details"]["workers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The client's `/jsonstats` `details.wallet` (its contract as it last saw it).
pub async fn client_wallet(api: &str) -> serde_json::Value {
    get_json(&format!("{api}/jsonstats")).await["details"]["wallet"].clone()
}

/// Waits until the client at `api` has an open, funded contract with its proxy.
pub async fn wait_for_funds(api: &str) {
    let started = Instant::now();
    loop {
        if let Ok(response) = http().get(format!("{api}/jsonstats")).send().await {
            if let Ok(stats) = response.json::<serde_json::Value>().await {
                if stats["details"]["wallet"]["available"]
                    .as_u64()
                    .unwrap_or(0)
                    > 0
                {
                    return;
                }
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "client at {api} was never funded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `api` lists `model` with at least `workers` workers, and its contract is funded.
pub async fn wait_for_model(api: &str, model: &str, workers: u64) {
    wait_for_model_only(api, model, workers).await;
    wait_for_funds(api).await;
}

/// Waits until `api` lists `model` with at least `workers` workers.
pub async fn wait_for_model_only(api: &str, model: &str, workers: u64) {
    let started = Instant::now();
    loop {
        if let Ok(response) = http().get(format!("{api}/v1/models")).send().await {
            if let Ok(list) = response.json::<serde_json::Value>().await {
                let ready = list["data"].as_array().is_some_and(|models| {
                    models
                        .iter()
                        .any(|m| m["id"] == model && m["workers"].as_u64().unwrap_or(0) >= workers)
                });
                if ready {
                    return;
                }
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "model {model} with {workers} workers never became routable at {api}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `url` answers 200.
pub async fn wait_for_ok(url: &str) {
    let started = Instant::now();
    loop {
        if let Ok(response) = http().get(url).send().await {
            if response.status() == 200 {
                return;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{url} never answered 200"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `details.wallet` of a node's `/jsonstats` at `stats` (`HOST:PORT` or a base URL).
pub async fn wallet(stats: &str) -> serde_json::Value {
    let base = if stats.starts_with("http") {
        stats.to_owned()
    } else {
        format!("http://{stats}")
    };
    get_json(&format!("{base}/jsonstats")).await["details"]["wallet"].clone()
}

/// The wallet account of the node whose stats are at `stats`.
pub async fn account_of(stats: &str) -> cocoon_money::AccountId {
    wallet(stats).await["account"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Waits until `check` holds for the value `read` produces, failing with the last value.
#[allow(unused_macros)]
macro_rules! eventually {
    ($read:expr, |$v:ident| $check:expr) => {{
        let started = std::time::Instant::now();
        loop {
            let $v = $read;
            if $check {
                break $v;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(30),
                "never held: {:?}",
                $v
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }};
}
#[allow(unused_imports)]
pub(crate) use eventually;

/// A contract of `proxy` on `ledger`: `kind` is `clients` or `workers`.
pub async fn contract(
    ledger: &str,
    proxy: cocoon_money::AccountId,
    kind: &str,
    party: cocoon_money::AccountId,
) -> serde_json::Value {
    get_json(&format!("{ledger}/v1/proxies/{proxy}/{kind}/{party}")).await
}

/// What proxy `proxy` holds on `ledger` beyond the stake it opened with: its pool plus what is
/// left of the stake, less the registry's `min_proxy_stake` (its commission, once every client
/// payment and worker claim is applied). A worker may claim before the client's signed payment
/// reaches the ledger; the stake covers that claim until the payment fills the pool.
pub async fn proxy_commission(ledger: &str, proxy: cocoon_money::AccountId) -> u64 {
    let contract = get_json(&format!("{ledger}/v1/proxies/{proxy}")).await;
    let registry = get_json(&format!("{ledger}/v1/registry")).await;
    let holdings = contract["pool"].as_u64().unwrap() + contract["stake"].as_u64().unwrap();
    holdings - registry["min_proxy_stake"].as_u64().unwrap()
}
