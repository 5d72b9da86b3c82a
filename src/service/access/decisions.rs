//! The per-thread decision cache: what a connection was told about an
//! action on a key, so that the next such request costs a lookup, not an
//! evaluation.
//!
//! Keyed by the key's access generation (a new policy or grant makes a new
//! generation, so nothing decided on the old one is ever found again), the
//! connection (whose identity never changes), the action, and a hash of
//! the request's encryption context and alias; a hit compares the stored
//! context and alias with the request's in full, so a hash collision costs
//! an evaluation, never a wrong answer. Per thread: no locks, no sharing;
//! bounded (a full table is cleared). In-process callers (connection 0)
//! are not cached.

use super::Ask;
use crate::identity::Identity;
use kms_policy::{Action, Decision};
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};

/// Entries per thread before the table is cleared.
pub(super) const CAPACITY: usize = 4096;

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Slot {
    generation: u64,
    conn: u64,
    action: Action,
    /// Hash of the context and alias (0: neither).
    digest: u64,
}

struct Entry {
    decision: Decision,
    /// The context and alias decided on (compared on a hit).
    context: Box<[(Box<str>, Box<str>)]>,
    alias: Option<Box<str>>,
}

impl Entry {
    fn matches(&self, ask: &Ask<'_>) -> bool {
        self.alias.as_deref() == ask.request_alias
            && self.context.len() == ask.context.len()
            && self
                .context
                .iter()
                .zip(ask.context)
                .all(|((k, v), (k2, v2))| &**k == *k2 && &**v == *v2)
    }
}

type Table = HashMap<Slot, Entry, BuildHasherDefault<rustc_hash::FxHasher>>;

thread_local! {
    static DECISIONS: RefCell<Table> = RefCell::new(Table::default());
}

fn digest(ask: &Ask<'_>) -> u64 {
    if ask.context.is_empty() && ask.request_alias.is_none() {
        return 0;
    }
    let mut h = rustc_hash::FxHasher::default();
    ask.context.hash(&mut h);
    ask.request_alias.hash(&mut h);
    h.finish() | 1
}

/// The decision for `caller` doing `action` with `ask` on the key access of
/// `generation`: cached, or `evaluate`d and cached. Requests that carry
/// grant operations or a bypass flag (CreateGrant, CreateKey,
/// PutKeyPolicy: the control plane) are always evaluated.
pub(super) fn decide(
    generation: u64,
    caller: &Identity,
    action: Action,
    ask: &Ask<'_>,
    evaluate: impl FnOnce() -> Decision,
) -> Decision {
    if caller.conn == 0 || !ask.grant_operations.is_empty() || ask.bypass.is_some() {
        return evaluate();
    }
    let slot = Slot {
        generation,
        conn: caller.conn,
        action,
        digest: digest(ask),
    };
    let cached = DECISIONS.with(|t| {
        t.borrow()
            .get(&slot)
            .filter(|e| e.matches(ask))
            .map(|e| e.decision)
    });
    if let Some(d) = cached {
        return d;
    }
    let decision = evaluate();
    DECISIONS.with(|t| {
        let mut t = t.borrow_mut();
        if t.len() >= CAPACITY {
            t.clear();
        }
        t.insert(
            slot,
            Entry {
                decision,
                context: ask
                    .context
                    .iter()
                    .map(|(k, v)| (Box::from(*k), Box::from(*v)))
                    .collect(),
                alias: ask.request_alias.map(Box::from),
            },
        );
    });
    decision
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::PeerDetails;
    use std::cell::Cell;

    fn counted<'a>(calls: &'a Cell<u32>, d: Decision) -> impl FnOnce() -> Decision + 'a {
        move || {
            calls.set(calls.get() + 1);
            d
        }
    }

    #[test]
    fn a_decision_is_reused_only_for_the_same_generation_connection_action_and_context() {
        let a = Identity::accepted(5, 5, 1, PeerDetails::default());
        let b = Identity::accepted(5, 5, 1, PeerDetails::default());
        let calls = Cell::new(0);
        let ctx = [("tenant", "a")];
        let ask = Ask::context(&ctx);
        assert_eq!(decide(1, &a, Action::Encrypt, &ask, counted(&calls, Decision::Allow)), Decision::Allow);
        // Cached: the evaluation is not run again (its answer would differ).
        assert_eq!(decide(1, &a, Action::Encrypt, &ask, counted(&calls, Decision::ImplicitDeny)), Decision::Allow);
        assert_eq!(calls.get(), 1);
        // Anything else differing is evaluated.
        let other_ctx = [("tenant", "b")];
        for (g, who, action, ask) in [
            (2, &a, Action::Encrypt, Ask::context(&ctx)),
            (1, &b, Action::Encrypt, Ask::context(&ctx)),
            (1, &a, Action::Decrypt, Ask::context(&ctx)),
            (1, &a, Action::Encrypt, Ask::context(&other_ctx)),
            (1, &a, Action::Encrypt, Ask::context(&[])),
            (1, &a, Action::Encrypt, Ask::context(&ctx).named("alias/x")),
        ] {
            let before = calls.get();
            assert_eq!(decide(g, who, action, &ask, counted(&calls, Decision::ImplicitDeny)), Decision::ImplicitDeny);
            assert_eq!(calls.get(), before + 1);
        }
    }

    #[test]
    fn in_process_callers_and_grant_requests_are_always_evaluated() {
        let local = Identity::local(0, 0, 0);
        let calls = Cell::new(0);
        for _ in 0..3 {
            decide(9, &local, Action::Encrypt, &Ask::default(), counted(&calls, Decision::Allow));
        }
        assert_eq!(calls.get(), 3);
        let conn = Identity::accepted(0, 0, 0, PeerDetails::default());
        let ops = ["Decrypt"];
        let ask = Ask {
            grant_operations: &ops,
            ..Ask::default()
        };
        for _ in 0..2 {
            decide(9, &conn, Action::CreateGrant, &ask, counted(&calls, Decision::Allow));
        }
        assert_eq!(calls.get(), 5);
    }

    #[test]
    fn a_full_table_is_cleared_not_grown() {
        let conn = Identity::accepted(0, 0, 0, PeerDetails::default());
        for g in 0..(CAPACITY as u64 + 10) {
            decide(1_000_000 + g, &conn, Action::Encrypt, &Ask::default(), || Decision::Allow);
        }
        DECISIONS.with(|t| assert!(t.borrow().len() <= CAPACITY));
    }
}
