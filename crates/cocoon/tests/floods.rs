//! End-to-end: connection floods against the ports a network listens on. Each attacked node runs
//! with the common default file limit of 1 024 descriptors, and the flood opens more connections
//! than that, as the attack that found these defects did.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use arc_swap::ArcSwap;
use cocoon_ratls::{Connector, Identity, DEFAULT_VALIDITY};
use cocoon_tee::{AttestationKind, NoneAttester, Policy, Verifier};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The attacked node's RLIMIT_NOFILE.
const FILE_LIMIT: u64 = 1024;
/// Connections in a flood: more than the attacked node has descriptors.
const FLOOD: usize = 1100;
/// How long a real request may take while the flood holds its connections open. Far more than
/// a request needs on loopback, far less than the flood can hold a port (forever before, or until
/// the header and handshake timeouts).
const REAL_REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// Body timeout given to the attacked surfaces, so that the stalled-body check is quick.
const BODY_TIMEOUT_SECS: &str = "2";

fn limited() -> Launch {
    Launch {
        file_limit: Some(FILE_LIMIT),
        ..Launch::default()
    }
}

/// Lets this test process open the flood's connections (and the answers' sockets).
fn raise_own_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    let wanted = (3 * FLOOD) as u64;
    if limit.current.is_some_and(|current| current < wanted) {
        limit.current = limit
            .maximum
            .map(|max| max.min(4 * wanted))
            .or(Some(4 * wanted));
        setrlimit(Resource::Nofile, limit).expect("the test can raise its own file limit");
    }
}

/// Opens `FLOOD` connections to `addr`, one after the other as a simple attacker would: most send
/// nothing, every tenth sends `partial` (the start of a request or handshake) and stops. They stay
/// open until dropped.
async fn flood(addr: &str, partial: &'static [u8]) -> Vec<TcpStream> {
    let mut connections = Vec::with_capacity(FLOOD);
    for index in 0..FLOOD {
        // A port whose backlog is full drops SYNs; what cannot connect soon is not part of it.
        let Ok(Ok(mut tcp)) =
            tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr)).await
        else {
            break;
        };
        if index % 10 == 0 && tcp.write_all(partial).await.is_err() {
            continue;
        }
        connections.push(tcp);
    }
    assert!(
        connections.len() > FILE_LIMIT as usize,
        "only {} flood connections opened",
        connections.len()
    );
    connections
}

/// Sends `POST path` announcing a body that never comes; the server must answer 408 and close the
/// connection instead of waiting forever.
async fn assert_a_stalled_body_is_answered_408(addr: &str, path: &str) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    // A generous bound on the wait, so that a server that holds the request forever fails the
    // test instead of hanging it.
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), tcp.read_to_end(&mut answer))
        .await
        .expect("the server neither answered nor closed the connection")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "a stalled body is answered 408, got: {answer}"
    );
}

/// A ledger under a flood: the node, its directory and the flood's connections live as long as
/// this does.
struct FloodedLedger {
    addr: String,
    _ledger: Node,
    _dir: tempfile::TempDir,
    _flood: Vec<TcpStream>,
}

/// Starts a ledger with `extra` flags and the file limit, floods it, and checks that a read is
/// still answered while the flood holds its connections.
async fn flood_a_ledger(extra: &[&str]) -> FloodedLedger {
    raise_own_file_limit();
    let dir = tempfile::tempdir().unwrap();
    let (ledger, url) = ledger_launched(dir.path(), extra, limited());
    let addr = url.trim_start_matches("http://").to_owned();
    let flood = flood(&addr, b"GET /v1/stats HTTP/1.1\r\nHost: x\r\n").await;
    let read = tokio::time::timeout(
        REAL_REQUEST_DEADLINE,
        http().get(format!("{url}/v1/stats")).send(),
    )
    .await
    .expect("a ledger read was starved by the flood")
    .unwrap();
    assert_eq!(read.status(), 200);
    FloodedLedger {
        addr,
        _ledger: ledger,
        _dir: dir,
        _flood: flood,
    }
}

#[tokio::test]
async fn a_flood_of_idle_and_half_sent_connections_does_not_starve_the_ledger() {
    let ledger = flood_a_ledger(&["--body-timeout-secs", BODY_TIMEOUT_SECS]).await;
    assert_a_stalled_body_is_answered_408(&ledger.addr, "/v1/transactions").await;
}

#[tokio::test]
async fn a_ledger_out_of_descriptors_closes_idle_connections_and_keeps_serving() {
    // A cap above the file limit: only surviving EMFILE keeps the ledger serving.
    flood_a_ledger(&["--max-connections", "4096"]).await;
}

#[tokio::test]
async fn a_flood_of_idle_and_half_sent_connections_does_not_starve_the_client_api() {
    raise_own_file_limit();
    let (_proxy, proxy) = proxy(&[]);
    let (_worker, _) = worker(&proxy, &[]);
    let (_client, api) = client_launched(
        &proxy,
        Some(&proxy.clients),
        &["--body-timeout-secs", BODY_TIMEOUT_SECS],
        limited(),
    );
    wait_for_model(&api, "synthetic", 1).await;
    let addr = api.trim_start_matches("http://").to_owned();
    let _flood = flood(&addr, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n").await;

    let answer = tokio::time::timeout(REAL_REQUEST_DEADLINE, post_chat(&api, &chat(3, false)))
        .await
        .expect("a request was starved by idle connections")
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_a_stalled_body_is_answered_408(&addr, "/v1/chat/completions").await;
}

/// A proxy on a fresh ledger of its own, started as `launch` says.
fn proxy_launched(launch: Launch) -> (Node, ProxyAddrs) {
    let addrs = proxy_addrs(&[]);
    (Node::launch(&proxy_args(&addrs, &[]), launch), addrs)
}

/// WARN lines on a node's standard error about its ports: accepting, handshakes, links.
fn warnings(node: &Node) -> Vec<String> {
    node.stderr_lines()
        .into_iter()
        .filter(|line| line.contains("WARN"))
        .filter(|line| {
            ["peer=", "port=", "RA-TLS"]
                .iter()
                .any(|about| line.contains(about))
        })
        .collect()
}

/// Dials the proxy's client port as `intruder`, whom the proxy refuses, and waits for the verdict.
async fn intrude(intruder: &Connector, addr: &str) {
    // TLS 1.3: the client's handshake ends before the server judges its certificate; the
    // server's verdict is the read that follows.
    if let Ok((mut tls, _)) = intruder.connect(addr).await {
        let mut byte = [0u8; 1];
        let _ = tls.read(&mut byte).await;
    }
}

#[tokio::test]
async fn a_flood_of_half_open_handshakes_does_not_keep_a_client_off_the_proxy() {
    raise_own_file_limit();
    let (proxy_node, proxy) = proxy_launched(Launch {
        capture_stderr: true,
        ..limited()
    });
    let (_worker, _) = worker(&proxy, &[]);
    wait_for_port(&proxy.clients);
    let started = Instant::now();
    // The start of a TLS ClientHello, never finished.
    let _flood = flood(
        &proxy.clients,
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    )
    .await;

    let (_client, api) = client(&proxy, &[]);
    wait_for_model(&api, "synthetic", 1).await;
    let answer = post_chat(&api, &chat(3, false)).await.unwrap();
    assert_eq!(answer.status(), 200);
    // Running out of descriptors, dropping handshakes and refusing links were each logged at most
    // once a second, not once per connection.
    let seconds = started.elapsed().as_secs() as usize + 1;
    let warnings = warnings(&proxy_node);
    assert!(
        warnings.len() <= 2 * seconds,
        "{} warnings in {seconds} s under a flood of {FLOOD} connections, the first: {:?}",
        warnings.len(),
        &warnings[..warnings.len().min(5)]
    );
}

#[tokio::test]
async fn refused_handshakes_are_logged_at_most_once_a_second_with_a_count() {
    let (proxy_node, proxy) = proxy_launched(Launch {
        capture_stderr: true,
        ..Launch::default()
    });
    wait_for_port(&proxy.clients);
    // An intruder with no attestation: the proxy requires at least `fake`.
    let identity = Identity::generate(&NoneAttester, "client", BTreeMap::new(), DEFAULT_VALIDITY)
        .unwrap()
        .into_shared();
    let policy = Arc::new(ArcSwap::from_pointee(Policy::any_image(
        AttestationKind::Fake,
    )));
    let intruder = Connector::new(identity, policy, Arc::new(Verifier::new()), "proxy").unwrap();

    let started = Instant::now();
    let mut refused = 0;
    // Enough refusals, over more than one second, that a second line must carry a count.
    while refused < 200 || started.elapsed() < Duration::from_secs(2) {
        intrude(&intruder, &proxy.clients).await;
        refused += 1;
    }
    // The line that counts the refusals held back is written at the first refusal a second
    // after the previous line: refuse until it is there.
    let counted = |line: &String| line.contains("suppressed=") && !line.contains("suppressed=0");
    while !warnings(&proxy_node).iter().any(counted) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no line counts the refusals held back; the first lines: {:?}",
            &warnings(&proxy_node)[..warnings(&proxy_node).len().min(5)]
        );
        intrude(&intruder, &proxy.clients).await;
        refused += 1;
    }
    let seconds = started.elapsed().as_secs() as usize + 1;
    let warnings = warnings(&proxy_node);
    assert!(
        warnings
            .iter()
            .all(|line| !line.contains("rejected RA-TLS peer certificate")),
        "a refusal is logged once, by the port: {:?}",
        &warnings[..warnings.len().min(5)]
    );
    assert!(
        warnings.len() <= seconds + 2,
        "{} warnings for {refused} refusals in {seconds} s, the first: {:?}",
        warnings.len(),
        &warnings[..warnings.len().min(5)]
    );
}

/// The soft limit of open files a node runs under, from `/proc/<pid>/limits`.
fn soft_file_limit_of(node: &Node) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", node.pid())).unwrap();
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .expect("a file limit");
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

#[test]
fn a_node_started_under_the_soft_default_raises_it_to_the_hard_limit() {
    // A quarter of the soft limit is what each surface accepts; 1 024 would leave it 256.
    let addr = format!("127.0.0.1:{}", free_port());
    let engine = Node::launch(
        &strings(&["synthetic-engine", "--listen", &addr]),
        Launch {
            file_limit: Some(4 * FILE_LIMIT),
            soft_file_limit: Some(FILE_LIMIT),
            ..Launch::default()
        },
    );
    wait_for_port(&addr);
    assert_eq!(soft_file_limit_of(&engine), 4 * FILE_LIMIT);
}
