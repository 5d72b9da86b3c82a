//! What the service learns while it runs one item, noted for its audit
//! record on the running thread: the policy decision and the key it was
//! made on (`Service::authorize` and friends), and the key version used
//! (`Service::seal` / `unseal`). A thread-local cell: a store of a few
//! bytes per item, no lock, no allocation, and the operations' signatures
//! untouched.

use std::cell::Cell;

/// How the item was authorized, as far as the service got.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Decision {
    /// No check ran (refused before it, an operation anyone may call, or
    /// authorization bypassed for a benchmark).
    #[default]
    None,
    /// Allowed by the key's policy or one of its grants.
    Allow,
    /// Denied by an explicit deny.
    ExplicitDeny,
    /// Denied: no statement or grant allows it.
    ImplicitDeny,
    /// Allowed as one of `[access]`'s administrators or key creators.
    AccountAllow,
}

impl Decision {
    /// Its name in records.
    pub fn name(self) -> Option<&'static str> {
        match self {
            Decision::None => None,
            Decision::Allow => Some("Allow"),
            Decision::ExplicitDeny => Some("ExplicitDeny"),
            Decision::ImplicitDeny => Some("ImplicitDeny"),
            Decision::AccountAllow => Some("AllowAccount"),
        }
    }
}

/// One item's note.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Note {
    /// The last decision made for the item.
    pub decision: Decision,
    /// The key it was made on (for the record's `resources`).
    pub key: Option<[u8; 16]>,
    /// The key version sealed or opened with (0: none).
    pub version: u32,
}

thread_local! {
    static NOTE: Cell<Note> = const { Cell::new(Note { decision: Decision::None, key: None, version: 0 }) };
}

/// Clears the note before an item runs.
pub fn reset() {
    NOTE.with(|n| n.set(Note::default()));
}

/// The note of the item that just ran.
pub fn take() -> Note {
    NOTE.with(|n| n.replace(Note::default()))
}

/// Notes a decision on `key` (`None`: an account-wide one).
pub fn decision(decision: Decision, key: Option<[u8; 16]>) {
    NOTE.with(|n| {
        let mut v = n.get();
        v.decision = decision;
        if key.is_some() {
            v.key = key;
        }
        n.set(v);
    });
}

/// Notes the key version used on `key`.
pub fn version(key: [u8; 16], version: u32) {
    NOTE.with(|n| {
        let mut v = n.get();
        v.key.get_or_insert(key);
        v.version = version;
        n.set(v);
    });
}
