use std::collections::BTreeMap;

use cocoon_money::AccountId;
use cocoon_tee::FakeAttester;
use sha2::{Digest, Sha256};

use super::*;

const ANSWER: &str = "The capital of France is Paris.";
const REQUEST: &[u8] =
    br#"{"model":"smol","messages":[{"role":"user","content":"Capital of France?"}]}"#;
const MODEL_HASH: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

fn identity(label: &str, role: &str, attributes: &[(&str, &str)]) -> Identity {
    let attributes: BTreeMap<String, String> = attributes
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Identity::generate(
        &FakeAttester::from_label(label),
        role,
        attributes,
        Duration::from_secs(3600),
    )
    .unwrap()
}

fn worker_identity() -> Identity {
    identity(
        "worker-image",
        "worker",
        &[("model", "smol"), ("model_hash", MODEL_HASH)],
    )
}

fn record(worker: &Identity) -> AnswerRecord {
    let usage = TokenUsage {
        prompt_tokens: 12,
        completion_tokens: 7,
        ..TokenUsage::default()
    };
    let prices = Prices::default();
    let charge = price(&usage, 1500, &prices).unwrap().client_price;
    AnswerRecord {
        request_id: "req-1".into(),
        issued_at: unix_now(),
        model: "smol".into(),
        model_hash: Some(MODEL_HASH.into()),
        worker_image_hash: Verifier::new().verify(worker.quote()).unwrap().image_hash,
        request_sha256: Hash32(Sha256::digest(REQUEST).into()),
        response_sha256: Hash32(Sha256::digest(ANSWER.as_bytes()).into()),
        usage,
        coefficient: 1500,
        prices,
        charge,
    }
}

fn receipt() -> Receipt {
    let worker = worker_identity();
    let proxy = identity("proxy-image", "proxy", &[]);
    let signed = WorkerReceipt::sign(record(&worker), &worker);
    assert_eq!(signed.signer().unwrap(), worker.claims().public_key);
    Receipt::countersign(signed, &proxy).unwrap()
}

fn expect<'a>(verifier: &'a Verifier, response: &str) -> Expectations<'a> {
    Expectations {
        verifier,
        min_kind: AttestationKind::Fake,
        registry: None,
        response_sha256: Some(Sha256::digest(response.as_bytes()).into()),
        request_sha256: Some(Sha256::digest(REQUEST).into()),
    }
}

#[test]
fn a_receipt_verifies_with_its_answer_and_request() {
    let verifier = Verifier::new();
    let receipt = receipt();
    let verified = receipt.verify(&expect(&verifier, ANSWER)).unwrap();
    assert_eq!(verified.worker.claims.role, "worker");
    assert_eq!(verified.proxy.claims.role, "proxy");
    // Both transport forms read back to the same receipt.
    let json = serde_json::to_string(&receipt).unwrap();
    assert_eq!(Receipt::parse(&json).unwrap(), receipt);
    assert_eq!(Receipt::parse(&receipt.to_header()).unwrap(), receipt);
    let (record, worker, proxy) = receipt.to_wire();
    assert_eq!(Receipt::from_wire(&record, worker, proxy).unwrap(), receipt);
    let worker_half = WorkerReceipt::sign(record_of(&receipt), &worker_identity());
    let (record, certificate) = worker_half.to_wire();
    assert_eq!(
        WorkerReceipt::from_wire(&record, certificate).unwrap(),
        worker_half
    );
    // A worker's half is not a full receipt.
    assert!(matches!(
        Receipt::from_wire(&record, certificate, certificate),
        Err(ReceiptError::Malformed(_))
    ));
}

fn record_of(receipt: &Receipt) -> AnswerRecord {
    receipt.answer.clone()
}

#[test]
fn changing_any_byte_of_the_answer_fails() {
    let verifier = Verifier::new();
    let receipt = receipt();
    for at in 0..ANSWER.len() {
        let mut bytes = ANSWER.as_bytes().to_vec();
        bytes[at] ^= 0x01;
        let changed = String::from_utf8(bytes).unwrap();
        let error = receipt.verify(&expect(&verifier, &changed)).unwrap_err();
        assert!(
            matches!(
                error,
                ReceiptError::DigestMismatch {
                    what: "response",
                    ..
                }
            ),
            "{error}"
        );
    }
    let error = receipt
        .verify(&Expectations {
            request_sha256: Some(Sha256::digest(b"another request").into()),
            ..expect(&verifier, ANSWER)
        })
        .unwrap_err();
    assert!(matches!(
        error,
        ReceiptError::DigestMismatch {
            what: "request",
            ..
        }
    ));
}

#[test]
fn changing_the_record_breaks_the_signatures() {
    let verifier = Verifier::new();
    let tampered: [fn(&mut Receipt); 5] = [
        |r| r.answer.usage.completion_tokens += 1,
        |r| r.answer.usage.prompt_tokens -= 1,
        |r| r.answer.charge -= 1,
        |r| r.answer.response_sha256.0[0] ^= 1,
        |r| r.answer.model_hash = None,
    ];
    for tamper in tampered {
        let mut receipt = receipt();
        tamper(&mut receipt);
        let response = ANSWER;
        let error = receipt
            .verify(&Expectations {
                response_sha256: None,
                ..expect(&verifier, response)
            })
            .unwrap_err();
        assert!(
            matches!(error, ReceiptError::BadSignature("worker")),
            "{error}"
        );
    }
}

#[test]
fn changing_either_signature_fails() {
    let verifier = Verifier::new();
    for (which, field) in [("worker", 0), ("proxy", 1)] {
        for at in [0, 17, 127] {
            let mut receipt = receipt();
            let signature = if field == 0 {
                &mut receipt.worker_signature
            } else {
                &mut receipt.proxy_signature
            };
            let mut bytes = hex::decode(&*signature).unwrap();
            bytes[at / 2] ^= 0x10;
            *signature = hex::encode(bytes);
            let error = receipt.verify(&expect(&verifier, ANSWER)).unwrap_err();
            assert!(
                matches!(error, ReceiptError::BadSignature(w) if w == which),
                "{which} at {at}: {error}"
            );
        }
    }
}

#[test]
fn certificates_must_be_the_right_nodes_and_agree_with_the_record() {
    let verifier = Verifier::new();
    // A proxy signing as the worker is caught by its role.
    let proxy = identity("proxy-image", "proxy", &[]);
    let mut answer = record(&worker_identity());
    answer.worker_image_hash = Verifier::new().verify(proxy.quote()).unwrap().image_hash;
    let receipt = Receipt::countersign(WorkerReceipt::sign(answer, &proxy), &proxy).unwrap();
    let error = receipt.verify(&expect(&verifier, ANSWER)).unwrap_err();
    assert!(
        matches!(
            error,
            ReceiptError::WrongRole {
                which: "worker",
                ..
            }
        ),
        "{error}"
    );

    // A worker whose certificate names other weights cannot vouch for these.
    let other = identity(
        "worker-image",
        "worker",
        &[("model", "smol"), ("model_hash", &"0".repeat(64))],
    );
    let receipt =
        Receipt::countersign(WorkerReceipt::sign(record(&other), &other), &proxy).unwrap();
    let error = receipt.verify(&expect(&verifier, ANSWER)).unwrap_err();
    assert!(
        matches!(
            error,
            ReceiptError::ContradictsCertificate {
                field: "model hash",
                ..
            }
        ),
        "{error}"
    );

    // A fake-attested receipt is not good enough where TDX is required.
    let error = super::tests::receipt()
        .verify(&Expectations {
            min_kind: AttestationKind::Tdx,
            ..expect(&verifier, ANSWER)
        })
        .unwrap_err();
    assert!(
        matches!(
            error,
            ReceiptError::Certificate {
                which: "worker",
                ..
            }
        ),
        "{error}"
    );
}

#[test]
fn a_wrong_charge_is_reported_even_when_signed() {
    let verifier = Verifier::new();
    let worker = worker_identity();
    let mut answer = record(&worker);
    answer.charge += 1;
    let receipt = Receipt::countersign(
        WorkerReceipt::sign(answer, &worker),
        &identity("proxy-image", "proxy", &[]),
    )
    .unwrap();
    let error = receipt.verify(&expect(&verifier, ANSWER)).unwrap_err();
    assert!(matches!(error, ReceiptError::WrongCharge { .. }), "{error}");
}

#[test]
fn the_registry_must_allow_the_images_and_the_model() {
    let verifier = Verifier::new();
    let receipt = receipt();
    let verified = receipt.verify(&expect(&verifier, ANSWER)).unwrap();
    let mut registry = Registry::new(AccountId([1; 32]));
    registry.worker_image_hashes = vec![Hash32(verified.worker.image_hash.0)];
    registry.proxy_image_hashes = vec![Hash32(verified.proxy.image_hash.0)];
    registry
        .models
        .insert("smol".into(), MODEL_HASH.parse().unwrap());
    let with = |registry: &Registry| {
        receipt.verify(&Expectations {
            registry: Some(registry),
            ..expect(&verifier, ANSWER)
        })
    };
    with(&registry).unwrap();

    let mut revoked = registry.clone();
    revoked.proxy_image_hashes = vec![Hash32([7; 32])];
    assert!(
        matches!(with(&revoked), Err(ReceiptError::NotAllowed(what)) if what.starts_with("proxy image"))
    );
    let mut other_weights = registry.clone();
    other_weights.models.insert("smol".into(), Hash32([7; 32]));
    assert!(
        matches!(with(&other_weights), Err(ReceiptError::NotAllowed(what)) if what.starts_with("model"))
    );
}

#[test]
fn garbage_is_malformed() {
    for text in ["", "{}", "not base64 !", "eyJ2ZXJzaW9uIjoxfQ"] {
        assert!(
            matches!(Receipt::parse(text), Err(ReceiptError::Malformed(_))),
            "{text}"
        );
    }
    let mut receipt = receipt();
    receipt.version = 3;
    let verifier = Verifier::new();
    assert!(matches!(
        receipt.verify(&expect(&verifier, ANSWER)),
        Err(ReceiptError::Malformed(_))
    ));
}

#[test]
fn a_crafted_issue_time_is_refused_not_a_panic() {
    let verifier = Verifier::new();
    let worker = worker_identity();
    let proxy = identity("proxy-image", "proxy", &[]);
    for issued_at in [u64::MAX, u64::MAX / 2, i64::MAX as u64 + 1] {
        // Signed by both nodes: only the time is wrong.
        let mut record = record(&worker);
        record.issued_at = issued_at;
        let receipt = Receipt::countersign(WorkerReceipt::sign(record, &worker), &proxy).unwrap();
        let error = receipt.verify(&expect(&verifier, ANSWER)).unwrap_err();
        assert!(
            matches!(
                error,
                ReceiptError::IssuedAtOutOfRange(_) | ReceiptError::Certificate { .. }
            ),
            "{issued_at}: {error}"
        );
    }
}

#[test]
fn a_weak_key_signs_nothing() {
    // The identity point, with the signature (R = identity, s = 0) that non-strict Ed25519
    // accepts under it for any message.
    let mut weak = [0u8; 32];
    weak[0] = 1;
    let mut signature = [0u8; 64];
    signature[0] = 1;
    assert!(matches!(
        check_signature(&weak, &hex::encode(signature), b"any message", "test"),
        Err(ReceiptError::BadSignature("test"))
    ));
}

/// Keys of a receipt's two certificates, as a verifier holds them.
fn keys(worker: &Identity, proxy: &Identity) -> (VerifyingKey, VerifyingKey) {
    let key =
        |identity: &Identity| VerifyingKey::from_bytes(&identity.claims().public_key).unwrap();
    (key(worker), key(proxy))
}

#[test]
fn a_batch_refuses_exactly_its_forged_receipts() {
    let (worker, proxy) = (worker_identity(), identity("proxy-image", "proxy", &[]));
    let (worker_key, proxy_key) = keys(&worker, &proxy);
    let receipts: Vec<Receipt> = (0..6)
        .map(|index| {
            let mut answer = record(&worker);
            answer.request_id = format!("req-{index}");
            Receipt::countersign(WorkerReceipt::sign(answer, &worker), &proxy).unwrap()
        })
        .collect();
    let signatures = |receipts: &[Receipt]| -> Vec<ReceiptSignatures> {
        receipts
            .iter()
            .map(|r| r.signatures(&worker_key, &proxy_key).unwrap())
            .collect()
    };
    let verdicts = |signatures: &[ReceiptSignatures]| -> Vec<bool> {
        verify_batch(&signatures.iter().collect::<Vec<_>>())
            .iter()
            .map(Result::is_ok)
            .collect()
    };
    assert_eq!(verdicts(&signatures(&receipts)), vec![true; 6]);
    assert!(verdicts(&[]).is_empty());

    let mut forged = receipts.clone();
    // A record changed after signing, and a proxy signature moved to another answer.
    forged[1].answer.charge = 0;
    forged[4].proxy_signature = receipts[3].proxy_signature.clone();
    let verdicts_forged = verdicts(&signatures(&forged));
    assert_eq!(verdicts_forged, vec![true, false, true, true, false, true]);
    // Keys swapped: nothing verifies.
    let swapped: Vec<ReceiptSignatures> = receipts
        .iter()
        .map(|r| r.signatures(&proxy_key, &worker_key).unwrap())
        .collect();
    assert_eq!(verdicts(&swapped), vec![false; 6]);
}

#[test]
fn a_small_order_key_that_would_pass_a_batch_is_refused() {
    // The identity point as a key: with R = identity and s = 0 the batch equation holds for any
    // message, so anyone could "sign" with it.
    let mut identity_point = [0u8; 32];
    identity_point[0] = 1;
    let weak = VerifyingKey::from_bytes(&identity_point).unwrap();
    let mut anything = [0u8; 64];
    anything[0] = 1;
    let signature = ed25519_dalek::Signature::from_bytes(&anything);
    let message: &[u8] = b"an answer nobody signed";
    assert!(
        ed25519_dalek::verify_batch(&[message; 2], &[signature; 2], &[weak; 2]).is_ok(),
        "the attack works on a bare batch"
    );
    let refused = ReceiptSignatures::new(
        (&weak, message.to_vec(), &hex::encode(anything)),
        (&weak, message.to_vec(), &hex::encode(anything)),
    );
    assert!(matches!(refused, Err(ReceiptError::BadSignature("worker"))));
}

/// Seven answers signed as one batch, each countersigned as the proxy does (once per batch).
fn batch_of_seven() -> (Vec<Receipt>, Identity, Identity) {
    let (worker, proxy) = (worker_identity(), identity("proxy-image", "proxy", &[]));
    let answers = (0..7)
        .map(|index| {
            let mut answer = record(&worker);
            answer.request_id = format!("req-{index}");
            answer
        })
        .collect();
    let signed = WorkerReceipt::sign_batch(answers, &worker);
    let message = signed[0].countersigned_message().unwrap();
    let proxy_signature = sign(&proxy, &message);
    let certificate = STANDARD.encode(proxy.certificate_der());
    let receipts = signed
        .into_iter()
        .map(|worker_half| {
            assert_eq!(worker_half.countersigned_message().unwrap(), message);
            Receipt::countersigned(worker_half, certificate.clone(), proxy_signature.clone())
        })
        .collect();
    (receipts, worker, proxy)
}

#[test]
fn each_answer_of_a_signed_batch_verifies_alone_offline() {
    let (receipts, _, _) = batch_of_seven();
    let verifier = Verifier::new();
    for (index, receipt) in receipts.iter().enumerate() {
        assert_eq!(receipt.version, RECEIPT_VERSION);
        assert_eq!(receipt.worker_signature, receipts[0].worker_signature);
        let batch = receipt.batch.as_ref().unwrap();
        assert_eq!((batch.index, batch.size), (index as u32, 7));
        // What an app keeps and an auditor reads back.
        let read = Receipt::parse(&receipt.to_header()).unwrap();
        read.verify(&expect(&verifier, ANSWER)).unwrap();
    }
}

#[test]
fn a_batch_signature_does_not_vouch_for_another_answer_or_place() {
    let (receipts, worker, proxy) = batch_of_seven();
    let verifier = Verifier::new();
    let refused = |receipt: &Receipt| receipt.verify(&expect(&verifier, ANSWER)).unwrap_err();
    // Another answer under this receipt's proof and signatures: a bigger charge, or another
    // answer of the batch.
    let mut inflated = receipts[2].clone();
    inflated.answer.usage.completion_tokens += 100;
    inflated.answer.charge = price(&inflated.answer.usage, 1500, &Prices::default())
        .unwrap()
        .client_price;
    let mut swapped = receipts[2].clone();
    swapped.answer = receipts[3].answer.clone();
    // This answer claimed at another place, or in a batch of another size.
    let mut moved = receipts[2].clone();
    moved.batch.as_mut().unwrap().index = 3;
    let mut shrunk = receipts[2].clone();
    shrunk.batch.as_mut().unwrap().size = 4;
    // Answer 5 of 7 has a path that also reaches the root in a batch of 8.
    let mut grown = receipts[5].clone();
    grown.batch.as_mut().unwrap().size = 8;
    assert!(matches!(
        refused(&grown),
        ReceiptError::BadSignature("worker")
    ));
    for forged in [&inflated, &swapped, &moved, &shrunk] {
        assert!(
            matches!(
                refused(forged),
                ReceiptError::BadSignature("worker") | ReceiptError::Malformed(_)
            ),
            "{forged:?}"
        );
    }
    // Version 2 needs a proof; version 1 has none.
    let mut unproven = receipts[2].clone();
    unproven.batch = None;
    assert!(matches!(refused(&unproven), ReceiptError::Malformed(_)));
    let mut old_with_proof = receipts[2].clone();
    old_with_proof.version = 1;
    assert!(matches!(
        refused(&old_with_proof),
        ReceiptError::Malformed(_)
    ));
    // In a batch check, only the forged receipt is refused.
    let (worker_key, proxy_key) = keys(&worker, &proxy);
    let mut mixed = receipts.clone();
    mixed[1] = inflated;
    let signatures: Vec<ReceiptSignatures> = mixed
        .iter()
        .map(|r| r.signatures(&worker_key, &proxy_key).unwrap())
        .collect();
    let verdicts: Vec<bool> = verify_batch(&signatures.iter().collect::<Vec<_>>())
        .iter()
        .map(Result::is_ok)
        .collect();
    assert_eq!(verdicts, vec![true, false, true, true, true, true, true]);
}

#[test]
fn version_1_receipts_signed_per_record_still_verify() {
    let (worker, proxy) = (worker_identity(), identity("proxy-image", "proxy", &[]));
    let answer = record(&worker);
    let covered = Covered::of(1, &answer, None).unwrap();
    let worker_signature = sign(&worker, &covered.worker_message());
    let receipt = Receipt {
        version: 1,
        answer,
        batch: None,
        worker_certificate: STANDARD.encode(worker.certificate_der()),
        proxy_certificate: STANDARD.encode(proxy.certificate_der()),
        proxy_signature: sign(&proxy, &covered.proxy_message(&worker_signature)),
        worker_signature,
    };
    let verifier = Verifier::new();
    let read = Receipt::parse(&receipt.to_header()).unwrap();
    read.verify(&expect(&verifier, ANSWER)).unwrap();
    // Its signature does not pass as a batch of one's.
    let mut as_batch = receipt;
    as_batch.version = 2;
    as_batch.batch = Some(Inclusion {
        index: 0,
        size: 1,
        path: vec![],
    });
    assert!(as_batch.verify(&expect(&verifier, ANSWER)).is_err());
}
