//! Background renewal of a node's RA-TLS identity before its certificate expires.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cocoon_tee::Attester;
use tokio::task::JoinHandle;

use crate::{Identity, SharedIdentity};

/// Shortest wait between attempts, so a failing attester is not hammered.
const MIN_RETRY: Duration = Duration::from_secs(1);

/// Spawns a task that replaces `identity` with a freshly generated one (new key, new quote)
/// when half of the current certificate's remaining lifetime has passed. Failures are logged
/// and retried; abort the returned handle to stop.
///
/// Links already established keep their certificate; only new handshakes use the new one.
pub fn spawn_rotation(
    identity: SharedIdentity,
    attester: Arc<dyn Attester>,
    role: String,
    attributes: BTreeMap<String, String>,
    validity: Duration,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut wait = half_remaining(identity.load().not_after());
        loop {
            tokio::time::sleep(wait).await;
            match Identity::generate(&*attester, &role, attributes.clone(), validity) {
                Ok(fresh) => {
                    tracing::info!(
                        role = %role,
                        fingerprint = %hex::encode(fresh.fingerprint()),
                        "rotated RA-TLS certificate"
                    );
                    identity.store(Arc::new(fresh));
                    wait = half_remaining(identity.load().not_after());
                }
                Err(e) => {
                    tracing::warn!(role = %role, error = %e, "RA-TLS certificate rotation failed");
                    wait = half_remaining(identity.load().not_after()).min(Duration::from_secs(60));
                }
            }
        }
    })
}

fn half_remaining(not_after: SystemTime) -> Duration {
    let remaining = not_after
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    (remaining / 2).max(MIN_RETRY)
}

#[cfg(test)]
mod tests {
    use cocoon_tee::FakeAttester;

    use super::*;

    #[tokio::test]
    async fn identity_is_replaced_before_expiry() {
        let attester = Arc::new(FakeAttester::from_label("w"));
        let validity = Duration::from_secs(3);
        let shared = Identity::generate(&*attester, "worker", BTreeMap::new(), validity)
            .unwrap()
            .into_shared();
        let first = shared.load().fingerprint();
        let task = spawn_rotation(
            shared.clone(),
            attester,
            "worker".into(),
            BTreeMap::new(),
            validity,
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while shared.load().fingerprint() == first {
            assert!(
                tokio::time::Instant::now() < deadline,
                "identity was not rotated"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(shared.load().not_after() > SystemTime::now());
        assert_eq!(shared.load().claims().role, "worker");
        task.abort();
    }

    #[test]
    fn waits_half_the_remaining_lifetime_but_at_least_a_second() {
        let in_an_hour = SystemTime::now() + Duration::from_secs(3600);
        let wait = half_remaining(in_an_hour);
        assert!(wait <= Duration::from_secs(1800) && wait > Duration::from_secs(1790));
        assert_eq!(half_remaining(SystemTime::UNIX_EPOCH), MIN_RETRY);
    }
}
