//! A cap on connections that makes room by closing the idle ones.
//!
//! A plain cap lets whoever fills it first keep everyone else out: 1 100 connections that never
//! send a byte would hold a surface until their timeouts. Here a new connection at the cap
//! evicts the occupant idle the longest (no request in flight), so holding a slot costs an
//! attacker a live request; only when every occupant is busy is the newcomer refused.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// `in_flight` of an evicted occupant: far above any real count, so that a request starting
/// after the eviction does not make it look busy again.
const EVICTED: usize = usize::MAX / 2;

/// At most `cap` occupants; see the module docs.
#[derive(Debug)]
pub struct Slots {
    cap: usize,
    /// How long an occupant is spared after it arrived or last finished a request.
    grace: Duration,
    next_id: AtomicU64,
    /// Occupants by arrival: the first idle one in this order is the longest-standing.
    occupants: Mutex<BTreeMap<u64, Arc<Occupant>>>,
}

#[derive(Debug)]
struct Occupant {
    in_flight: AtomicUsize,
    /// Whether a request has ever been in flight.
    used: AtomicBool,
    /// When the last request ended (or the occupant arrived).
    idle_since: Mutex<Instant>,
    evicted: CancellationToken,
}

/// What [`Slots::admit`] decided.
#[derive(Debug)]
pub enum Admission {
    /// There was room.
    Admitted(Slot),
    /// There was room once the longest-idle occupant was evicted.
    Evicted(Slot),
    /// Every occupant is busy: the newcomer must be refused.
    Full,
}

/// One occupant's place; dropping it frees the place.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    id: u64,
    occupant: Arc<Occupant>,
}

/// A request in flight on a [`Slot`]: the slot cannot be evicted while one lives.
#[derive(Debug)]
pub struct Busy(Arc<Occupant>);

impl Slots {
    /// Room for `cap` occupants (at least one); any idle occupant may be evicted.
    pub fn new(cap: usize) -> Arc<Self> {
        Slots::sparing(cap, Duration::ZERO)
    }

    /// Room for `cap` occupants (at least one), sparing each from eviction for `grace` after it
    /// arrived or went idle: a newcomer finding only younger occupants is refused instead. For
    /// places held while work is under way (a handshake), so that a crowd of newcomers cannot cut
    /// every one of them short.
    pub fn sparing(cap: usize, grace: Duration) -> Arc<Self> {
        Arc::new(Slots {
            cap: cap.max(1),
            grace,
            next_id: AtomicU64::new(0),
            occupants: Mutex::new(BTreeMap::new()),
        })
    }

    /// The cap.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Occupants now.
    pub fn len(&self) -> usize {
        self.occupants().len()
    }

    /// Whether there is no occupant.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A place for a newcomer: free, or made by evicting the longest-idle occupant.
    pub fn admit(self: &Arc<Self>) -> Admission {
        let mut occupants = self.occupants();
        let evicted = occupants.len() >= self.cap;
        if evicted && !self.evict_longest_idle(&mut occupants) {
            return Admission::Full;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let occupant = Arc::new(Occupant {
            in_flight: AtomicUsize::new(0),
            used: AtomicBool::new(false),
            idle_since: Mutex::new(Instant::now()),
            evicted: CancellationToken::new(),
        });
        occupants.insert(id, occupant.clone());
        let slot = Slot {
            slots: self.clone(),
            id,
            occupant,
        };
        if evicted {
            Admission::Evicted(slot)
        } else {
            Admission::Admitted(slot)
        }
    }

    /// Evicts the longest-idle occupant, if any is idle (to free a file descriptor when the
    /// process has run out). Returns whether one was.
    pub fn evict_idle(&self) -> bool {
        self.evict_longest_idle(&mut self.occupants())
    }

    /// Evicts the first occupant, in arrival order, with no request in flight for at least the
    /// grace period.
    fn evict_longest_idle(&self, occupants: &mut BTreeMap<u64, Arc<Occupant>>) -> bool {
        let now = Instant::now();
        let idle = occupants.iter().find_map(|(&id, occupant)| {
            let spared = now.saturating_duration_since(*lock(&occupant.idle_since)) < self.grace;
            // Claiming it atomically: a request that starts meanwhile finds it evicted, never the
            // other way round.
            let claimed = !spared
                && occupant
                    .in_flight
                    .compare_exchange(0, EVICTED, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok();
            claimed.then_some(id)
        });
        match idle.and_then(|id| occupants.remove(&id)) {
            Some(occupant) => {
                occupant.evicted.cancel();
                true
            }
            None => false,
        }
    }

    fn occupants(&self) -> MutexGuard<'_, BTreeMap<u64, Arc<Occupant>>> {
        // The map stays consistent whatever panicked while holding it.
        self.occupants
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Slot {
    /// Marks a request in flight until the returned guard is dropped.
    pub fn busy(&self) -> Busy {
        self.occupant.used.store(true, Ordering::Release);
        self.occupant.in_flight.fetch_add(1, Ordering::AcqRel);
        Busy(self.occupant.clone())
    }

    /// Resolves when this slot is evicted to make room for another.
    pub fn evicted(&self) -> WaitForCancellationFuture<'_> {
        self.occupant.evicted.cancelled()
    }

    /// Whether a request has ever been in flight on this slot.
    pub fn used(&self) -> bool {
        self.occupant.used.load(Ordering::Acquire)
    }

    /// Since when no request has been in flight (or since it was admitted), or `None` while one
    /// is.
    pub fn idle_since(&self) -> Option<Instant> {
        if self.occupant.in_flight.load(Ordering::Acquire) != 0 {
            return None;
        }
        Some(*lock(&self.occupant.idle_since))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut occupants = self.slots.occupants();
        // An evicted occupant is already gone (and its id never reused).
        if occupants
            .get(&self.id)
            .is_some_and(|occupant| Arc::ptr_eq(occupant, &self.occupant))
        {
            occupants.remove(&self.id);
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        *lock(&self.0.idle_since) = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

fn lock(instant: &Mutex<Instant>) -> MutexGuard<'_, Instant> {
    instant
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_evicted(slot: &Slot) -> bool {
        slot.occupant.evicted.is_cancelled()
    }

    fn admitted(admission: Admission) -> Slot {
        match admission {
            Admission::Admitted(slot) => slot,
            other => panic!("expected room, got {other:?}"),
        }
    }

    #[test]
    fn a_newcomer_at_the_cap_evicts_the_longest_idle_occupant() {
        let slots = Slots::new(2);
        let first = admitted(slots.admit());
        let second = admitted(slots.admit());
        let third = match slots.admit() {
            Admission::Evicted(slot) => slot,
            other => panic!("expected an eviction, got {other:?}"),
        };
        assert!(is_evicted(&first), "the oldest idle one goes");
        assert!(!is_evicted(&second));
        assert!(!is_evicted(&third));
        assert_eq!(slots.len(), 2);
        drop(first);
        assert_eq!(slots.len(), 2, "an evicted slot frees nothing twice");
    }

    #[test]
    fn busy_occupants_are_never_evicted_and_a_full_house_refuses() {
        let slots = Slots::new(2);
        let first = admitted(slots.admit());
        let second = admitted(slots.admit());
        let _request = first.busy();
        assert!(first.idle_since().is_none());
        // The second is idle: it goes, not the busy first.
        let third = match slots.admit() {
            Admission::Evicted(slot) => slot,
            other => panic!("expected an eviction, got {other:?}"),
        };
        assert!(is_evicted(&second));
        assert!(!is_evicted(&first));
        let _other_request = third.busy();
        assert!(matches!(slots.admit(), Admission::Full));
        assert!(!slots.evict_idle());
    }

    #[test]
    fn occupants_within_their_grace_are_spared_and_the_newcomer_refused() {
        let slots = Slots::sparing(1, Duration::from_secs(3600));
        let only = admitted(slots.admit());
        assert!(matches!(slots.admit(), Admission::Full));
        assert!(!slots.evict_idle());
        assert!(!is_evicted(&only));
    }

    #[test]
    fn a_finished_request_makes_the_slot_idle_again() {
        let slots = Slots::new(1);
        let only = admitted(slots.admit());
        drop(only.busy());
        assert!(only.idle_since().is_some());
        assert!(slots.evict_idle());
        assert!(is_evicted(&only));
        assert!(slots.is_empty());
    }
}
