//! The proxy's money under faults, with real processes: the ledger going away and coming back,
//! the proxy's disk filling up, and apps hanging up at the end of their answers.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;
use cocoon_money::{price, Amount, Prices};
use cocoon_proto::TokenUsage;
use futures::StreamExt;
use serde_json::{json, Value};

fn cost(usage: &TokenUsage) -> cocoon_money::Cost {
    price(usage, 1_000, &Prices::default()).unwrap()
}

#[tokio::test]
async fn inference_continues_through_a_ledger_outage_and_its_charges_settle_afterwards() {
    let (_proxy, mut proxy) = proxy(&["--withdraw-threshold", "0"]);
    let (_worker, worker_stats) = worker(&proxy, &["--claim-threshold", "1"]);
    let (_client, api) = client(&proxy, &[]);
    wait_for_model(&api, "synthetic", 1).await;
    let (mut paid, mut earned) = (0, 0);
    let mut serve = |usage: Option<TokenUsage>| {
        let usage = usage.expect("answered");
        paid += cost(&usage).client_price;
        earned += cost(&usage).worker_pay;
    };
    serve(ask(&api, &chat(4, true)).await);
    let proxy_id = account_of(&proxy.stats).await;
    let client_id = account_of(&api).await;
    let worker_id = account_of(&worker_stats).await;

    proxy.kill_ledger();
    // Every request during the outage is answered, streamed or not, for longer than the proxy
    // trusts a cached contract (2 s) without asking the ledger.
    let outage = Instant::now();
    let mut during = 0;
    while outage.elapsed() < Duration::from_secs(4) || during < 6 {
        serve(ask(&api, &chat(3 + during % 4, during % 2 == 0)).await);
        during += 1;
    }
    let wallet_now = wallet(&proxy.stats).await;
    assert_eq!(wallet_now["charged"], paid, "{wallet_now}");
    assert!(
        wallet_now["ledger_unreachable_for_ms"].is_u64(),
        "{wallet_now}"
    );

    proxy.restart_ledger();
    // What accrued reaches the ledger: the client paid what the worker earned plus commission.
    let client_contract = eventually!(
        contract(&proxy.ledger, proxy_id, "clients", client_id).await,
        |c| c["charged"] == paid
    );
    assert_eq!(client_contract["collected"], paid, "{client_contract}");
    eventually!(
        contract(&proxy.ledger, proxy_id, "workers", worker_id).await,
        |c| c["paid"] == earned
    );
    let proxy_contract = get_json(&format!("{}/v1/proxies/{proxy_id}", proxy.ledger)).await;
    assert_eq!(
        proxy_commission(&proxy.ledger, proxy_id).await,
        paid - earned
    );
    assert_eq!(
        proxy_contract["paid_to_workers"], earned,
        "{proxy_contract}"
    );
    let settled = eventually!(wallet(&proxy.stats).await, |w| w
        ["ledger_unreachable_for_ms"]
        .is_null());
    assert_eq!(settled["earned"], earned, "{settled}");
}

#[tokio::test]
async fn a_client_the_proxy_never_read_is_refused_during_a_ledger_outage() {
    let (_proxy, mut proxy) = proxy(&[]);
    let (_worker, _) = worker(&proxy, &[]);
    let (_client, api) = client(&proxy, &[]);
    wait_for_model(&api, "synthetic", 1).await;
    // Opened on the ledger, but never seen by the proxy (no request yet).
    proxy.kill_ledger();
    let refused = post_chat(&api, &chat(3, false)).await.unwrap();
    assert_eq!(refused.status(), 503);
    proxy.restart_ledger();
    eventually!(ask(&api, &chat(3, false)).await, |answer| answer.is_some());
}

/// A tmpfs mounted on a directory for one test, unmounted when dropped.
struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    /// Mounts a `size` tmpfs on `path`, or says why not (not root, no mount namespace…).
    fn mount(path: &Path, size: &str) -> Result<SmallDisk, String> {
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .map_err(|error| format!("mount: {error}"))?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).into_owned());
        }
        Ok(SmallDisk {
            path: path.to_owned(),
        })
    }

    /// Fills what is left of the disk with one file; returns its path.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let filler = self.path.join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 << 10];
        while file.write_all(&block).is_ok() {}
        let small = [0u8; 512];
        while file.write_all(&small).is_ok() {}
        let _ = file.sync_all();
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

#[tokio::test]
async fn a_proxy_that_cannot_write_charges_refuses_requests_and_recovers_by_itself() {
    let proxy = proxy_addrs(&[]);
    let disk = match SmallDisk::mount(&proxy.data_dir, "16m") {
        Ok(disk) => disk,
        Err(why) => {
            eprintln!("skipped: cannot mount a small disk for the proxy's data ({why})");
            return;
        }
    };
    let _proxy_node = Node::start(&proxy_args(&proxy, &[]));
    let (_worker, _) = worker(&proxy, &[]);
    let (_client, api) = client(&proxy, &[]);
    wait_for_model(&api, "synthetic", 1).await;
    ask(&api, &chat(4, true)).await.expect("served");
    let healthz = format!("http://{}/healthz", proxy.stats);

    let filler = disk.fill();
    // Streamed answers reach the app before their charge is written: at most the ones under
    // way when the disk filled up go out unbilled; then the proxy takes no more requests.
    let mut refused = None;
    for _ in 0..40 {
        let response = post_chat(&api, &chat(4, true)).await.unwrap();
        if response.status() == 503 {
            refused = Some(response.text().await.unwrap());
            break;
        }
        assert_eq!(response.status(), 200);
        all_events(response).await;
    }
    let refused = refused.expect("a proxy that cannot write charges keeps serving");
    assert!(refused.contains("cannot record charges"), "{refused}");
    let charged_before = wallet(&proxy.stats).await["charged"].as_u64().unwrap();
    for _ in 0..5 {
        assert!(ask(&api, &chat(4, true)).await.is_none(), "served unbilled");
    }
    let health = http().get(&healthz).send().await.unwrap();
    assert_eq!(health.status(), 503);
    let reason = health.text().await.unwrap();
    assert!(reason.contains("cannot record charges"), "{reason}");

    std::fs::remove_file(filler).unwrap();
    wait_for_ok(&healthz).await;
    let usage = ask(&api, &chat(4, true)).await.expect("served again");
    let charged = wallet(&proxy.stats).await["charged"].as_u64().unwrap();
    assert_eq!(charged, charged_before + cost(&usage).client_price);
}

/// An engine on loopback that streams `tokens` one-word chunks, then, as real engines may, takes
/// a while to finish: `finishing` empty chunks `pause` apart, then the usage chunk and `[DONE]`.
/// An app that hangs up after the last word is noticed gone (its connection refuses those
/// chunks) before the worker's usage reaches the proxy.
async fn slow_to_finish_engine(finishing: usize, pause: Duration) -> String {
    use axum::routing::post;
    let router = axum::Router::new().route(
        "/v1/chat/completions",
        post(move |axum::Json(request): axum::Json<Value>| async move {
            let tokens = request["max_tokens"].as_u64().unwrap_or(1);
            let chunk = |delta: Value| {
                let chunk = json!({"object": "chat.completion.chunk", "model": "synthetic",
                                   "choices": [{"index": 0, "delta": delta}]});
                format!("data: {chunk}\n\n")
            };
            let words = (0..tokens).map(move |_| chunk(json!({"content": "word "})));
            let finishing = (0..finishing).map(move |_| chunk(json!({})));
            let usage = json!({"object": "chat.completion.chunk", "model": "synthetic", "choices": [],
                "usage": {"prompt_tokens": 5, "completion_tokens": tokens, "total_tokens": 5 + tokens}});
            let end = format!("data: {usage}\n\ndata: [DONE]\n\n");
            let body = futures::stream::iter(words)
                .chain(futures::stream::iter(finishing).then(move |chunk| async move {
                    tokio::time::sleep(pause).await;
                    chunk
                }))
                .chain(futures::stream::once(async move { end }))
                .map(Ok::<_, std::convert::Infallible>);
            (
                [("content-type", "text/event-stream")],
                axum::body::Body::from_stream(body),
            )
        }),
    );
    serve_on_loopback(router).await
}

/// Words in each answer of [`apps_hang_up_after_the_last_word`].
const WORDS: u64 = 8;

/// Sends `requests` streamed requests of [`WORDS`] words at once through a network whose engine
/// is [`slow_to_finish_engine`]`(finishing, pause)`; each app hangs up right after the last word.
/// Returns the proxy's wallet once every answer is done with (all worker slots free again: an
/// abandoned answer's tail is charged, or given up, before its slot is).
async fn apps_hang_up_after_the_last_word(
    finishing: usize,
    pause: Duration,
    requests: usize,
) -> Value {
    let (_proxy, proxy) = proxy(&[]);
    let engine = slow_to_finish_engine(finishing, pause).await;
    let worker_args = [
        "--engine",
        &engine,
        "--model",
        "synthetic",
        "--max-active",
        "64",
    ];
    let (_worker, _) = worker(&proxy, &worker_args);
    let (_client, api) = client(&proxy, &[]);
    wait_for_model(&api, "synthetic", 1).await;
    assert_eq!(wallet(&proxy.stats).await["charged"], 0);

    let hang_up_after_last_word = || async {
        let response = post_chat(&api, &chat(WORDS, true)).await.unwrap();
        assert_eq!(response.status(), 200);
        let mut events = events(response);
        let mut words = 0;
        while words < WORDS {
            let event = events.next().await.expect("the answer's words");
            if event.contains("word") {
                words += 1;
            }
        }
        // Gone, before the usage chunk and `[DONE]`.
    };
    futures::future::join_all((0..requests).map(|_| hang_up_after_last_word())).await;
    eventually!(proxy_workers(&proxy).await, |workers| workers
        .iter()
        .all(|w| w["active"] == 0));
    wallet(&proxy.stats).await
}

#[tokio::test]
async fn an_answer_the_worker_completed_is_charged_though_the_app_hung_up_before_its_end() {
    const REQUESTS: usize = 24;
    // 0.8 s of empty chunks (under 1 KiB) before the usage: the answer is complete but for them.
    let wallet = apps_hang_up_after_the_last_word(8, Duration::from_millis(100), REQUESTS).await;
    let usage = TokenUsage {
        prompt_tokens: 5,
        completion_tokens: WORDS,
        ..TokenUsage::default()
    };
    let requests = REQUESTS as Amount;
    assert_eq!(
        wallet["charged"],
        requests * cost(&usage).client_price,
        "{wallet}"
    );
    assert_eq!(
        wallet["earned"],
        requests * cost(&usage).worker_pay,
        "{wallet}"
    );
}

#[tokio::test]
async fn an_answer_abandoned_well_before_its_end_is_cancelled_and_not_charged() {
    // 200 empty chunks (about 20 KiB) before the usage: more than the proxy reads for a client
    // that has gone, so it gives up on the answer instead of charging for what it never sent.
    let wallet = apps_hang_up_after_the_last_word(200, Duration::from_millis(5), 4).await;
    assert_eq!(wallet["charged"], 0, "{wallet}");
    assert_eq!(wallet["earned"], 0, "{wallet}");
}
