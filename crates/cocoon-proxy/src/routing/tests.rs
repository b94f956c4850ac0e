//! Routing: choice, failure accrual, and what a request needs of a worker.

use super::*;
use crate::queue::QueueConfig;
use cocoon_money::AccountId;
use cocoon_ratls::Claims;
use cocoon_tee::{AttestationKind, FakeAttester};
use std::time::{Duration, SystemTime};

/// A link sender over an in-memory link to a peer that serves nothing.
pub(crate) async fn sender() -> LinkSender {
    let (ours, theirs) = tokio::io::duplex(4096);
    tokio::spawn(async move {
        let never = tokio_util::sync::CancellationToken::new();
        cocoon_node::link::serve(theirs, axum::Router::new(), &never, Duration::ZERO).await
    });
    let (sender, driver) = cocoon_node::link::client_handshake(ours).await.unwrap();
    tokio::spawn(driver);
    sender
}

fn peer() -> PeerIdentity {
    let measurements = *FakeAttester::from_label("w").measurements();
    PeerIdentity {
        kind: AttestationKind::Fake,
        image_hash: measurements.image_hash(AttestationKind::Fake),
        measurements,
        claims: Claims {
            public_key: [0; 32],
            role: "worker".into(),
            attributes: Default::default(),
        },
        cert_fingerprint: [0; 32],
        public_key: [0; 32],
        not_after: SystemTime::now(),
    }
}

async fn add(routing: &Arc<Routing>, model: &str, coefficient: u32, max_active: u32) -> u64 {
    let info = worker_info(
        model,
        coefficient,
        max_active,
        cocoon_proto::EngineKind::Url,
    );
    routing.add(info, peer(), sender().await).id
}

fn worker_info(
    model: &str,
    coefficient: u32,
    max_active: u32,
    engine: cocoon_proto::EngineKind,
) -> WorkerInfo {
    WorkerInfo {
        protocol_version: 1,
        model: model.into(),
        model_hash: None,
        coefficient,
        max_active,
        engine: Some(engine),
        honours: engine.honours(),
        context_length: None,
        started_at: 0,
    }
}

/// The worker a plain request for `model` within `max_coefficient` gets (its slot is freed).
fn chosen(routing: &Arc<Routing>, model: &str, max_coefficient: u32) -> u64 {
    let slot = routing.choose(model, max_coefficient, &Needs::default(), None);
    slot.unwrap().worker.id
}

/// A one-slot worker of `engine` with `context_length`, started at `started_at`.
async fn add_engine(
    routing: &Arc<Routing>,
    model: &str,
    coefficient: u32,
    engine: cocoon_proto::EngineKind,
    context_length: Option<u32>,
    started_at: u64,
) -> u64 {
    let info = WorkerInfo {
        context_length,
        started_at,
        ..worker_info(model, coefficient, 1, engine)
    };
    routing.add(info, peer(), sender().await).id
}

#[tokio::test]
async fn cheapest_first_until_full_then_the_next() {
    let routing = Arc::new(Routing::default());
    let cheap = add(&routing, "m", 1000, 1).await;
    let dear = add(&routing, "m", 2000, 1).await;
    let first = routing.choose("m", 5000, &Needs::default(), None).unwrap();
    assert_eq!(first.worker.id, cheap);
    let second = routing.choose("m", 5000, &Needs::default(), None).unwrap();
    assert_eq!(second.worker.id, dear);
    assert!(matches!(
        routing.choose("m", 5000, &Needs::default(), None),
        Err(RouteError::Busy { workers: 2, .. })
    ));
    drop(first);
    assert_eq!(chosen(&routing, "m", 5000), cheap);
}

#[tokio::test]
async fn a_worker_failing_in_a_row_is_set_aside_until_healthy_ones_are_full() {
    let routing = Arc::new(Routing::default());
    let cheap = add(&routing, "m", 1000, 4).await;
    let dear = add(&routing, "m", 2000, 1).await;
    let worker = |id: u64| routing.links().into_iter().find(|l| l.id == id).unwrap();
    for _ in 1..FAILURES_TO_SET_ASIDE {
        worker(cheap).record_failure();
    }
    assert_eq!(chosen(&routing, "m", 5000), cheap);
    worker(cheap).record_failure();
    // Set aside: the dearer healthy worker goes first…
    let taken = routing.choose("m", 5000, &Needs::default(), None).unwrap();
    assert_eq!(taken.worker.id, dear);
    // …and the one set aside only takes what nobody else can.
    assert_eq!(chosen(&routing, "m", 5000), cheap);
    drop(taken);
    assert_eq!(routing.snapshot()[0]["consecutive_failures"], 5);
    assert!(routing.snapshot()[0]["set_aside_ms"].as_u64() > Some(0));
    // One success restores it.
    worker(cheap).record_success();
    assert_eq!(chosen(&routing, "m", 5000), cheap);
}

#[tokio::test]
async fn set_aside_periods_double_while_failing_and_expire() {
    let routing = Arc::new(Routing::default());
    let id = add(&routing, "m", 1000, 1).await;
    let worker = routing.links().into_iter().find(|l| l.id == id).unwrap();
    let start = Instant::now();
    for _ in 0..FAILURES_TO_SET_ASIDE {
        worker.record_failure_at(start);
    }
    assert!(worker.is_aside(start + FIRST_SET_ASIDE - Duration::from_millis(1)));
    assert!(!worker.is_aside(start + FIRST_SET_ASIDE));
    // Failing again once it is back: twice as long, then capped.
    let back = start + FIRST_SET_ASIDE;
    worker.record_failure_at(back);
    assert!(worker.is_aside(back + FIRST_SET_ASIDE * 2 - Duration::from_millis(1)));
    assert!(!worker.is_aside(back + FIRST_SET_ASIDE * 2));
    for _ in 0..20 {
        worker.record_failure_at(back);
    }
    assert!(!worker.is_aside(back + LONGEST_SET_ASIDE));
}

#[tokio::test]
async fn equal_prices_go_to_the_least_loaded() {
    let routing = Arc::new(Routing::default());
    let a = add(&routing, "m", 1000, 4).await;
    let b = add(&routing, "m", 1000, 4).await;
    let first = routing.choose("m", 1000, &Needs::default(), None).unwrap();
    let second = routing.choose("m", 1000, &Needs::default(), None).unwrap();
    assert_ne!(first.worker.id, second.worker.id);
    assert!([a, b].contains(&first.worker.id) && [a, b].contains(&second.worker.id));
}

#[tokio::test]
async fn explains_unknown_models_and_price_limits() {
    let routing = Arc::new(Routing::default());
    let only = add(&routing, "m", 1000, 1).await;
    assert_eq!(
        routing.choose("other", 5000, &Needs::default(), None).err(),
        Some(RouteError::UnknownModel("other".into()))
    );
    let too_cheap = routing
        .choose("m", 500, &Needs::default(), None)
        .err()
        .unwrap();
    assert_eq!(
        too_cheap.to_string(),
        "no worker for model `m` at coefficient ≤ 500 (cheapest is 1000)"
    );
    assert_eq!(too_cheap.kind(), ErrorKind::Unavailable);
    // The failed worker is skipped on retry.
    assert!(matches!(
        routing.choose("m", 5000, &Needs::default(), Some(only)),
        Err(RouteError::Busy { workers: 0, .. })
    ));
    routing.remove(only);
    assert!(matches!(
        routing.choose("m", 5000, &Needs::default(), None),
        Err(RouteError::UnknownModel(_))
    ));
    assert!(routing.models().models.is_empty());
}

#[tokio::test]
async fn lists_models_with_capacity() {
    let routing = Arc::new(Routing::default());
    add(&routing, "m", 1000, 2).await;
    add(&routing, "m", 3000, 1).await;
    let _slot = routing.choose("m", 5000, &Needs::default(), None).unwrap();
    let list = routing.models();
    assert_eq!(
        list.models,
        vec![ModelEntry {
            id: "m".into(),
            workers: 2,
            min_coefficient: 1000,
            max_coefficient: 3000,
            free_slots: 2,
            created: 0,
            context_length: None,
        }]
    );
}

#[tokio::test]
async fn capacities_announced_by_workers_add_up_without_overflow() {
    let routing = Arc::new(Routing::default());
    add(&routing, "m", 1000, u32::MAX).await;
    add(&routing, "m", 1000, u32::MAX).await;
    assert_eq!(routing.models().models[0].free_slots, u32::MAX);
}

fn needs(params: &[&str], max_tokens: Option<u64>) -> Needs {
    Needs {
        params: params.iter().map(|&p| p.to_owned()).collect(),
        max_tokens,
    }
}

#[tokio::test]
async fn a_request_goes_only_to_an_engine_that_honours_its_parameters() {
    use cocoon_proto::EngineKind;
    let routing = Arc::new(Routing::default());
    let embedded = add_engine(&routing, "m", 1000, EngineKind::Embedded, Some(2048), 0).await;
    // The embedded engine alone: `suffix` is refused by name, before anything is reserved.
    let refused = routing
        .check("m", &needs(&["top_k", "suffix"], None))
        .unwrap_err();
    assert_eq!(refused.to_openai().error.param.as_deref(), Some("suffix"));
    assert_eq!(refused.kind(), ErrorKind::InvalidRequest);
    assert!(routing.check("m", &needs(&["top_k"], None)).is_ok());
    // A dearer engine-URL worker honours everything: the request goes there, not to the cheaper.
    let url = add_engine(&routing, "m", 3000, EngineKind::Url, None, 0).await;
    assert!(routing.check("m", &needs(&["suffix"], None)).is_ok());
    let slot = routing
        .choose("m", 5000, &needs(&["suffix"], None), None)
        .unwrap();
    assert_eq!(slot.worker.id, url);
    drop(slot);
    let slot = routing.choose("m", 5000, &Needs::default(), None).unwrap();
    assert_eq!(slot.worker.id, embedded);
    // Only the dearer worker can serve it, and it is above the client's limit: said so.
    let refused = routing.choose("m", 2000, &needs(&["suffix"], None), None);
    assert!(
        matches!(
            refused,
            Err(RouteError::TooExpensive { cheapest: 3000, .. })
        ),
        "{:?}",
        refused.err()
    );
}

#[tokio::test]
async fn a_limit_beyond_every_context_is_a_context_length_error() {
    use cocoon_proto::EngineKind;
    let routing = Arc::new(Routing::default());
    add_engine(&routing, "m", 1000, EngineKind::Embedded, Some(2048), 0).await;
    let long = add_engine(&routing, "m", 2000, EngineKind::Embedded, Some(8192), 0).await;
    // The boundary: a prompt needs at least one token of the context.
    assert!(routing.check("m", &needs(&[], Some(8191))).is_ok());
    let refused = routing.check("m", &needs(&[], Some(8192))).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::ContextLength);
    assert_eq!(
        refused.to_openai().error.param.as_deref(),
        Some("max_tokens")
    );
    assert!(refused.to_string().contains("8192 tokens"), "{refused}");
    // A limit only the longer context fits goes to it, though it is dearer.
    let slot = routing
        .choose("m", 5000, &needs(&[], Some(4000)), None)
        .unwrap();
    assert_eq!(slot.worker.id, long);
    // No limit: any context fits.
    assert!(routing.check("m", &Needs::default()).is_ok());
}

#[tokio::test]
async fn the_model_list_says_when_a_model_became_available_and_its_context() {
    use cocoon_proto::EngineKind;
    let routing = Arc::new(Routing::default());
    add_engine(
        &routing,
        "m",
        1000,
        EngineKind::Embedded,
        Some(2048),
        1_700_000_500,
    )
    .await;
    add_engine(
        &routing,
        "m",
        1000,
        EngineKind::Embedded,
        Some(4096),
        1_700_000_000,
    )
    .await;
    add_engine(&routing, "u", 1000, EngineKind::Url, None, 0).await;
    let list = routing.models();
    assert_eq!(list.models[0].created, 1_700_000_000);
    assert_eq!(list.models[0].context_length, Some(4096));
    assert_eq!(list.models[1].created, 0);
    assert_eq!(list.models[1].context_length, None);
}

const CLIENT_A: AccountId = AccountId([0xa; 32]);
const CLIENT_B: AccountId = AccountId([0xb; 32]);

fn queued_routing(queue: QueueConfig) -> Arc<Routing> {
    Arc::new(Routing::new(queue))
}

fn far() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(60)
}

/// Waits until `count` requests wait for model `m`.
async fn until_waiting(routing: &Routing, count: u64) {
    while routing.queue_snapshot()["models"]["m"]["waiting"].as_u64() != Some(count) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Queues a request of `client` labelled `label`; its slot comes back on `served` with the label.
fn wait_in_line(
    routing: &Arc<Routing>,
    client: AccountId,
    label: &'static str,
    served: &tokio::sync::mpsc::UnboundedSender<(&'static str, Slot)>,
) -> tokio::task::JoinHandle<()> {
    wait_in_line_within(routing, client, 5000, label, served)
}

/// [`wait_in_line`] for a request whose price limit is `max_coefficient`.
fn wait_in_line_within(
    routing: &Arc<Routing>,
    client: AccountId,
    max_coefficient: u32,
    label: &'static str,
    served: &tokio::sync::mpsc::UnboundedSender<(&'static str, Slot)>,
) -> tokio::task::JoinHandle<()> {
    let (routing, served) = (routing.clone(), served.clone());
    tokio::spawn(async move {
        let slot = routing
            .acquire("m", max_coefficient, &Needs::default(), client, far())
            .await
            .unwrap();
        served.send((label, slot)).ok().unwrap();
    })
}

#[tokio::test]
async fn a_waiter_no_free_worker_suits_keeps_its_turn_while_the_next_client_is_served() {
    let routing = queued_routing(QueueConfig::default());
    add(&routing, "m", 1000, 1).await;
    add(&routing, "m", 3000, 1).await;
    let cheap = routing.choose("m", 5000, &Needs::default(), None).unwrap();
    let dear = routing.choose("m", 5000, &Needs::default(), None).unwrap();
    let (served, mut order) = tokio::sync::mpsc::unbounded_channel();
    // A waits first but pays at most 1000; B takes any price.
    wait_in_line_within(&routing, CLIENT_A, 1000, "a", &served);
    until_waiting(&routing, 1).await;
    wait_in_line(&routing, CLIENT_B, "b", &served);
    until_waiting(&routing, 2).await;
    drop(dear);
    let (label, slot) = order.recv().await.unwrap();
    assert_eq!((label, slot.worker.info.coefficient), ("b", 3000));
    drop(cheap);
    let (label, slot) = order.recv().await.unwrap();
    assert_eq!((label, slot.worker.info.coefficient), ("a", 1000));
}

#[tokio::test]
async fn a_freed_slot_goes_to_the_clients_in_turn_not_in_order_of_arrival() {
    let routing = queued_routing(QueueConfig::default());
    add(&routing, "m", 1000, 1).await;
    let held = routing.choose("m", 5000, &Needs::default(), None).unwrap();
    let (served, mut order) = tokio::sync::mpsc::unbounded_channel();
    // Client A's burst arrives first, then B's one request.
    for (count, (client, label)) in [
        (CLIENT_A, "a1"),
        (CLIENT_A, "a2"),
        (CLIENT_A, "a3"),
        (CLIENT_B, "b1"),
    ]
    .into_iter()
    .enumerate()
    {
        wait_in_line(&routing, client, label, &served);
        until_waiting(&routing, count as u64 + 1).await;
    }
    drop(held);
    let mut labels = Vec::new();
    for _ in 0..4 {
        let (label, slot) = order.recv().await.unwrap();
        labels.push(label);
        drop(slot);
    }
    assert_eq!(labels, ["a1", "b1", "a2", "a3"]);
    let stats = &routing.queue_snapshot()["models"]["m"];
    assert_eq!(stats["waiting"], 0, "{stats}");
    assert_eq!(stats["served"], 4, "{stats}");
}

#[tokio::test]
async fn a_newcomer_does_not_take_a_slot_someone_waits_for() {
    let routing = queued_routing(QueueConfig::default());
    add(&routing, "m", 1000, 1).await;
    let held = routing.choose("m", 5000, &Needs::default(), None).unwrap();
    let (served, mut order) = tokio::sync::mpsc::unbounded_channel();
    wait_in_line(&routing, CLIENT_A, "first", &served);
    until_waiting(&routing, 1).await;
    drop(held);
    let (label, slot) = order.recv().await.unwrap();
    assert_eq!(label, "first");
    // While it is held, a newcomer waits too, and gets it next.
    wait_in_line(&routing, CLIENT_B, "newcomer", &served);
    until_waiting(&routing, 1).await;
    drop(slot);
    assert_eq!(order.recv().await.unwrap().0, "newcomer");
}

#[tokio::test]
async fn a_full_queue_and_a_full_share_refuse_with_retry_after() {
    let routing = queued_routing(QueueConfig {
        depth: 3,
        per_client: 2,
        wait: Duration::from_millis(1500),
    });
    add(&routing, "m", 1000, 1).await;
    let _held = routing.choose("m", 5000, &Needs::default(), None).unwrap();
    let (served, _order) = tokio::sync::mpsc::unbounded_channel();
    wait_in_line(&routing, CLIENT_A, "a1", &served);
    wait_in_line(&routing, CLIENT_A, "a2", &served);
    until_waiting(&routing, 2).await;
    let refused = |client| {
        let routing = routing.clone();
        async move {
            let needs = Needs::default();
            routing
                .acquire("m", 5000, &needs, client, far())
                .await
                .err()
        }
    };
    let share = refused(CLIENT_A).await;
    assert!(matches!(
        share,
        Some(RouteError::ClientShareFull { share: 2, .. })
    ));
    assert_eq!(
        share.as_ref().map(RouteError::kind),
        Some(ErrorKind::RateLimited)
    );
    assert_eq!(share.and_then(|error| error.retry_after()), Some(2));
    wait_in_line(&routing, CLIENT_B, "b1", &served);
    until_waiting(&routing, 3).await;
    let full = refused(CLIENT_B).await;
    assert!(matches!(full, Some(RouteError::QueueFull { depth: 3, .. })));
    assert_eq!(
        full.as_ref().map(RouteError::kind),
        Some(ErrorKind::Unavailable)
    );
    assert_eq!(full.and_then(|error| error.retry_after()), Some(2));
    let refused = &routing.queue_snapshot()["models"]["m"]["refused"];
    assert_eq!(refused["queue_full"], 1, "{refused}");
    assert_eq!(refused["client_share"], 1, "{refused}");
}

#[tokio::test]
async fn a_wait_ends_at_the_queue_wait_or_the_request_deadline() {
    let routing = queued_routing(QueueConfig {
        wait: Duration::from_millis(20),
        ..QueueConfig::default()
    });
    add(&routing, "m", 1000, 1).await;
    let held = routing.choose("m", 5000, &Needs::default(), None).unwrap();
    let timed_out = routing
        .acquire("m", 5000, &Needs::default(), CLIENT_A, far())
        .await
        .err();
    assert!(
        matches!(
            timed_out,
            Some(RouteError::QueueTimeout { retry_after: 1, .. })
        ),
        "{timed_out:?}"
    );
    // A request whose own deadline is sooner waits no longer than that.
    let patient = queued_routing(QueueConfig {
        wait: Duration::from_secs(3600),
        ..QueueConfig::default()
    });
    add(&patient, "m", 1000, 1).await;
    let _held_too = patient.choose("m", 5000, &Needs::default(), None).unwrap();
    let soon = tokio::time::Instant::now() + Duration::from_millis(20);
    assert!(matches!(
        patient
            .acquire("m", 5000, &Needs::default(), CLIENT_A, soon)
            .await,
        Err(RouteError::QueueTimeout { .. })
    ));
    let stats = &routing.queue_snapshot()["models"]["m"];
    assert_eq!(stats["waiting"], 0, "{stats}");
    assert_eq!(stats["refused"]["timed_out"], 1, "{stats}");
    // Nothing of the timed-out request is left: the slot, once free, is free.
    drop(held);
    assert!(routing.choose("m", 5000, &Needs::default(), None).is_ok());
}

#[tokio::test]
async fn a_request_dropped_while_waiting_leaves_the_queue_and_takes_no_slot() {
    let routing = queued_routing(QueueConfig::default());
    add(&routing, "m", 1000, 1).await;
    let held = routing.choose("m", 5000, &Needs::default(), None).unwrap();
    let (served, mut order) = tokio::sync::mpsc::unbounded_channel();
    let gone = wait_in_line(&routing, CLIENT_A, "gone", &served);
    until_waiting(&routing, 1).await;
    wait_in_line(&routing, CLIENT_B, "stays", &served);
    until_waiting(&routing, 2).await;
    gone.abort();
    until_waiting(&routing, 1).await;
    assert_eq!(routing.queue_snapshot()["models"]["m"]["abandoned"], 1);
    drop(held);
    let (label, slot) = order.recv().await.unwrap();
    assert_eq!(label, "stays");
    drop(slot);
    let worker = &routing.snapshot()[0];
    assert_eq!(worker["active"], 0, "{worker}");
}

#[tokio::test]
async fn a_new_worker_takes_waiting_requests_and_the_last_one_leaving_sends_them_away() {
    let routing = queued_routing(QueueConfig::default());
    let first = add(&routing, "m", 1000, 1).await;
    let _held = routing.choose("m", 5000, &Needs::default(), None).unwrap();
    let (served, mut order) = tokio::sync::mpsc::unbounded_channel();
    wait_in_line(&routing, CLIENT_A, "a1", &served);
    until_waiting(&routing, 1).await;
    let second = add(&routing, "m", 1000, 1).await;
    let (_, slot) = order.recv().await.unwrap();
    assert_eq!(slot.worker.id, second);
    let waiting = {
        let routing = routing.clone();
        tokio::spawn(async move {
            routing
                .acquire("m", 5000, &Needs::default(), CLIENT_B, far())
                .await
        })
    };
    until_waiting(&routing, 1).await;
    routing.remove(first);
    routing.remove(second);
    assert!(matches!(
        waiting.await.unwrap(),
        Err(RouteError::UnknownModel(_))
    ));
}

#[tokio::test]
async fn no_queue_refuses_a_busy_model_at_once() {
    let routing = queued_routing(QueueConfig {
        depth: 0,
        ..QueueConfig::default()
    });
    add(&routing, "m", 1000, 1).await;
    let _held = routing.choose("m", 5000, &Needs::default(), None).unwrap();
    assert!(matches!(
        routing
            .acquire("m", 5000, &Needs::default(), CLIENT_A, far())
            .await,
        Err(RouteError::QueueFull { depth: 0, .. })
    ));
}

#[tokio::test]
async fn only_the_exact_text_remembered_as_the_link_certificate_is_taken_for_it() {
    let routing = Arc::new(Routing::new(QueueConfig::default()));
    let link = routing.add(
        worker_info("m", 1000, 1, cocoon_proto::EngineKind::Url),
        peer(),
        sender().await,
    );
    let certificate = HeaderValue::from_static("MIIBcertificate-text");
    assert!(
        !link.is_link_certificate(&certificate),
        "nothing remembered yet"
    );
    link.remember_link_certificate(&certificate);
    assert!(link.is_link_certificate(&certificate));
    for other in ["MIIBcertificate-texT", "MIIBcertificate-tex", ""] {
        assert!(!link.is_link_certificate(&HeaderValue::from_static(other)));
    }
}
