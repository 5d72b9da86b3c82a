//! Byte budgets: how many bytes of requests and answers the daemon holds for
//! frames in flight, per connection and overall.
//!
//! A frame is charged, before any of its work is done, its request bytes
//! plus an upper bound of its answer (the service computes the bound from
//! the decoded request: see `wire::bound`). The charge rides
//! with the answer and is given back when the answer has been written, or
//! dropped (its connection is gone). A connection whose next frame does not
//! fit is simply not read until enough comes back: that is the
//! backpressure, and a client that never reads its answers stops being read
//! (and is disconnected by the write deadline).
//!
//! Two budgets are charged: the connection's own (so one connection cannot
//! take the whole daemon's) and the global one (so many connections cannot
//! together grow the daemon without bound). A connection with nothing else
//! in flight may run one frame of at most [`FLOOR`] bytes without the global
//! budget: when hostile connections that never read hold all of it, a
//! well-behaved client still gets its (small) requests answered. The
//! floor's total is at most `max_connections x FLOOR`.
//!
//! The budgets are atomics, not `tokio::sync::Semaphore`s: a semaphore takes
//! its waiter lock on every release, which would put a lock shared by every
//! I/O thread on the data path; here a release is one atomic subtraction
//! and a load, and the waiter lock is taken only while someone waits.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::Notify;

/// Largest frame charge (request bytes plus answer bound) a connection with
/// nothing else in flight may run without the global budget. Large enough
/// for any single request of the API except a ListKeys page of more than
/// ~300 keys (`Service::answer_bound`), small enough that 1024 connections'
/// floors together stay at 64 MiB.
pub const FLOOR: usize = 64 * 1024;

/// A count of bytes that may be held at once.
pub struct Budget {
    cap: usize,
    used: AtomicUsize,
    /// Tasks waiting in [`Budget::take`]: releases notify only when some
    /// task waits.
    waiters: AtomicUsize,
    notify: Notify,
}

impl Budget {
    /// A budget of `cap` bytes (at least 1).
    pub fn new(cap: usize) -> Budget {
        Budget {
            cap: cap.max(1),
            used: AtomicUsize::new(0),
            waiters: AtomicUsize::new(0),
            notify: Notify::new(),
        }
    }

    #[cfg(any(test, feature = "internals"))]
    /// The capacity.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// Takes `n` bytes (at most the capacity) if they are free.
    fn try_take(&self, n: usize) -> bool {
        debug_assert!(n <= self.cap);
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            if used + n > self.cap {
                return false;
            }
            match self.used.compare_exchange_weak(
                used,
                used + n,
                Ordering::SeqCst,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => used = now,
            }
        }
    }

    /// Takes `n` bytes (at most the capacity), waiting until they are free.
    /// Not fair: a large take may wait while smaller ones go ahead, which
    /// only slows the largest frames of a daemon already at its budget.
    async fn take(&self, n: usize) {
        if self.try_take(n) {
            return;
        }
        self.waiters.fetch_add(1, Ordering::SeqCst);
        // Decrements the waiter count however the wait ends (a cancelled
        // wait at shutdown included).
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let _waiting = Waiting(&self.waiters);
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Registered before the check, so a release between the check
            // and the await is not missed.
            notified.as_mut().enable();
            if self.try_take(n) {
                return;
            }
            notified.await;
        }
    }

    /// Gives back `n` bytes.
    fn give(&self, n: usize) {
        if n == 0 {
            return;
        }
        self.used.fetch_sub(n, Ordering::SeqCst);
        // SeqCst on both sides: either the waiter's check sees this release
        // or this load sees the waiter.
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.notify.notify_waiters();
        }
    }
}

/// One connection's budget, with the global one it also charges.
pub struct ConnBudget {
    own: Budget,
    global: Arc<Budget>,
}

impl ConnBudget {
    /// A connection's budget of `cap` bytes under `global`.
    pub fn new(cap: usize, global: Arc<Budget>) -> Arc<ConnBudget> {
        Arc::new(ConnBudget {
            own: Budget::new(cap),
            global,
        })
    }

    #[cfg(any(test, feature = "internals"))]
    /// Bytes this connection holds now.
    pub fn used(&self) -> usize {
        self.own.used()
    }

    /// What a charge of `n` bytes takes from each budget: never more than a
    /// budget's capacity, so a frame larger than a budget still runs, alone.
    fn parts(&self, n: usize) -> (usize, usize) {
        (n.min(self.own.cap), n.min(self.global.cap))
    }

    /// The global part, once the connection's own part is held: nothing if
    /// this frame is all the connection holds and fits the floor.
    fn global_part(&self, own: usize, global: usize) -> usize {
        if self.own.used() == own && global <= FLOOR {
            0
        } else {
            global
        }
    }

    /// Charges `n` bytes if both budgets have room now.
    pub fn try_charge(self: &Arc<Self>, n: usize) -> Option<Charge> {
        let (own, global) = self.parts(n);
        if !self.own.try_take(own) {
            return None;
        }
        let global = self.global_part(own, global);
        if global > 0 && !self.global.try_take(global) {
            self.own.give(own);
            return None;
        }
        Some(Charge {
            conn: Arc::clone(self),
            own,
            global,
        })
    }

    /// Charges `n` bytes, waiting for room: first in the connection's own
    /// budget (its answers being written), then in the global one.
    pub async fn charge(self: &Arc<Self>, n: usize) -> Charge {
        let (own, global) = self.parts(n);
        self.own.take(own).await;
        // Given back if the wait below is cancelled.
        let mut charge = Charge {
            conn: Arc::clone(self),
            own,
            global: 0,
        };
        let global = self.global_part(own, global);
        if global > 0 {
            self.global.take(global).await;
            charge.global = global;
        }
        charge
    }
}

/// Bytes held in a connection's budget and the global one; given back on
/// drop.
pub struct Charge {
    conn: Arc<ConnBudget>,
    own: usize,
    global: usize,
}

impl Charge {
    /// Bytes charged to the connection.
    pub fn bytes(&self) -> usize {
        self.own
    }

    /// Gives back all but `n` bytes (once the real answer size is known).
    pub fn shrink_to(&mut self, n: usize) {
        if n < self.own {
            self.conn.own.give(self.own - n);
            self.own = n;
        }
        if n < self.global {
            self.conn.global.give(self.global - n);
            self.global = n;
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.conn.own.give(self.own);
        self.conn.global.give(self.global);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn charges_both_budgets_and_gives_back_on_drop() {
        let global = Arc::new(Budget::new(1 << 20));
        let a = ConnBudget::new(1 << 20, Arc::clone(&global));
        // Nothing else in flight and within the floor: the global budget
        // is not charged.
        let first = a.try_charge(1000).unwrap();
        assert_eq!((a.used(), global.used()), (1000, 0));
        // A second frame is.
        let second = a.try_charge(2000).unwrap();
        assert_eq!((a.used(), global.used()), (3000, 2000));
        drop(first);
        drop(second);
        assert_eq!((a.used(), global.used()), (0, 0));
        // Above the floor, even alone: charged globally.
        let big = a.try_charge(FLOOR + 1).unwrap();
        assert_eq!(global.used(), FLOOR + 1);
        drop(big);
        assert_eq!(global.used(), 0);
    }

    #[test]
    fn a_full_budget_refuses_and_a_charge_larger_than_a_budget_runs_alone() {
        let global = Arc::new(Budget::new(4 * FLOOR));
        let a = ConnBudget::new(2 * FLOOR, Arc::clone(&global));
        let b = ConnBudget::new(2 * FLOOR, Arc::clone(&global));
        // Larger than both budgets: clamped to each capacity.
        let held = a.try_charge(10 * FLOOR).expect("runs alone");
        assert_eq!((a.used(), global.used()), (2 * FLOOR, 4 * FLOOR));
        assert!(a.try_charge(1).is_none(), "the connection's budget is full");
        drop(held);
        let held = a.try_charge(2 * FLOOR).unwrap();
        let b1 = b.try_charge(FLOOR).expect("within the floor");
        let b2 = b.try_charge(FLOOR).expect("fits the global budget");
        assert!(b.try_charge(1).is_none(), "b's budget is full");
        assert_eq!(global.used(), 3 * FLOOR);
        let _b3 = {
            drop(b1);
            b.try_charge(FLOOR).unwrap()
        };
        assert_eq!(global.used(), 4 * FLOOR);
        // The global budget is exhausted: a connection with nothing in
        // flight still gets one frame within the floor, no more.
        let other = ConnBudget::new(2 * FLOOR, Arc::clone(&global));
        assert!(other.try_charge(FLOOR + 1).is_none());
        let f = other.try_charge(FLOOR).expect("floor");
        assert!(other.try_charge(1).is_none());
        drop((f, b2, held));
        assert_eq!((a.used(), other.used()), (0, 0));
    }

    #[test]
    fn shrink_gives_back_the_excess() {
        let global = Arc::new(Budget::new(1 << 20));
        let a = ConnBudget::new(1 << 20, Arc::clone(&global));
        let mut c = a.try_charge(200_000).unwrap();
        c.shrink_to(1000);
        assert_eq!((a.used(), global.used(), c.bytes()), (1000, 1000, 1000));
        c.shrink_to(5000);
        assert_eq!(a.used(), 1000, "never grows");
        drop(c);
        assert_eq!((a.used(), global.used()), (0, 0));
    }

    #[test]
    fn a_waiting_charge_completes_when_bytes_come_back() {
        rt().block_on(async {
            let global = Arc::new(Budget::new(2 * FLOOR));
            let a = ConnBudget::new(4 * FLOOR, Arc::clone(&global));
            let b = ConnBudget::new(4 * FLOOR, Arc::clone(&global));
            let held = a.try_charge(2 * FLOOR).unwrap();
            let waiter = {
                let b = Arc::clone(&b);
                tokio::spawn(async move { b.charge(2 * FLOOR).await })
            };
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert!(!waiter.is_finished(), "the global budget is full");
            drop(held);
            let c = tokio::time::timeout(Duration::from_secs(10), waiter)
                .await
                .expect("woken by the release")
                .unwrap();
            assert_eq!(global.used(), 2 * FLOOR);
            drop(c);
            assert_eq!(global.used(), 0);
            assert_eq!(global.waiters.load(Ordering::SeqCst), 0);
        });
    }

    #[test]
    fn a_cancelled_wait_holds_nothing() {
        rt().block_on(async {
            let global = Arc::new(Budget::new(2 * FLOOR));
            let a = ConnBudget::new(4 * FLOOR, Arc::clone(&global));
            let held = a.try_charge(2 * FLOOR).unwrap();
            let b = ConnBudget::new(4 * FLOOR, Arc::clone(&global));
            let r = tokio::time::timeout(Duration::from_millis(20), b.charge(FLOOR + 1)).await;
            assert!(r.is_err());
            assert_eq!((b.used(), global.waiters.load(Ordering::SeqCst)), (0, 0));
            drop(held);
        });
    }
}
