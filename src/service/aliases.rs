//! Aliases: AWS's rules for alias names, and the in-memory alias table
//! the data path resolves names through.
//!
//! The store is the source of truth (`keystore::aliases`); the table is
//! its copy in memory, loaded when the service opens and changed by the
//! control plane after each commit and before the answer, while it still
//! holds the store (so two control-plane threads cannot apply their
//! changes to the table in another order than to the store). A name
//! therefore resolves to its new key from the very next request after an
//! UpdateAlias is answered, and a deleted alias is unknown from the very
//! next request after DeleteAlias. Lookups are one read lock and one hash
//! lookup, like the key cache, and never touch the store: I/O threads
//! resolve aliases at admission.

use super::key_id::{shown, Arns, ALIAS_PREFIX};
use super::Service;
use kms_proto::types::limits::MAX_ALIAS_NAME_LEN;
use kms_proto::{ErrorKind, KmsError};
use parking_lot::RwLock;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// Names reserved for AWS managed keys (AWS: "The alias name cannot begin
/// with alias/aws/").
pub const RESERVED_PREFIX: &str = "alias/aws/";

/// Checks an alias name given in `AliasName` against AWS's rules:
/// - 1..=256 characters, each of `[a-zA-Z0-9:/_-]` (AWS's `AliasNameType`
///   shape): else ValidationException, as AWS's request validation answers;
/// - it starts with `alias/`: else ValidationException, with AWS's message;
/// - it has a name after `alias/`, has no `:` (AWS
///   refuses colons although its pattern allows them), and does not start
///   with `alias/aws/` (reserved for AWS managed keys): else
///   InvalidAliasNameException (AWS: "the specified alias name is not
///   valid").
pub fn validate_name(name: &str) -> Result<(), KmsError> {
    let len = name.chars().count();
    if len == 0 || len > MAX_ALIAS_NAME_LEN {
        return Err(KmsError::validation(format!(
            "AliasName must be 1..={MAX_ALIAS_NAME_LEN} characters (got {len})"
        )));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'/' | b'_' | b'-'))
    {
        return Err(KmsError::validation(format!(
            "AliasName {} must satisfy the pattern ^[a-zA-Z0-9:/_-]+$",
            shown(name)
        )));
    }
    let invalid = |why: &str| {
        KmsError::new(
            ErrorKind::InvalidAliasName,
            format!("AliasName {} {why}", shown(name)),
        )
    };
    let Some(rest) = name.strip_prefix(ALIAS_PREFIX) else {
        // AWS's words and exception for a name without the prefix (as its
        // SDKs see it; aws-controllers-k8s/community#1878).
        return Err(KmsError::validation(format!(
            "AliasName {}: Alias must start with the prefix \"alias/\". Please see \
             https://docs.aws.amazon.com/kms/latest/developerguide/kms-alias.html",
            shown(name)
        )));
    };
    if rest.is_empty() {
        return Err(invalid("has no name after alias/"));
    }
    if name.contains(':') {
        return Err(invalid("contains ':', which alias names may not"));
    }
    if name.starts_with(RESERVED_PREFIX) {
        return Err(invalid(
            "starts with alias/aws/, which is reserved for AWS managed keys",
        ));
    }
    Ok(())
}

/// AlreadyExistsException for an alias name in use.
pub(crate) fn already_exists(arns: &Arns, name: &str) -> KmsError {
    KmsError::new(
        ErrorKind::AlreadyExists,
        format!("AliasName: an alias named {} already exists", arns.alias_arn(name)),
    )
}

/// LimitExceededException: the key has `max` aliases already.
pub(crate) fn too_many(id: &[u8; 16], max: u32) -> KmsError {
    KmsError::new(
        ErrorKind::LimitExceeded,
        format!(
            "key {} already has the maximum of {max} aliases (limits.max_aliases_per_key)",
            super::format_key_id(id)
        ),
    )
}

/// ValidationException: an alias was named where AWS requires a key
/// ("Aliases must refer to keys. Not aliases").
pub(crate) fn target_is_alias(field: &str) -> KmsError {
    KmsError::validation(format!(
        "{field} must be a key id or key ARN: aliases must refer to keys, not to aliases"
    ))
}

/// The in-memory alias table: name to key id, and each key's names.
///
/// Lookups take no lock and write no shared memory in the common case:
/// each thread keeps a memo of the names it resolved, valid while the
/// table's generation is unchanged (one atomic load, of a line that
/// stays shared in every core's cache). Two I/O threads resolving names
/// through a read lock would bounce the lock's cache line between their
/// cores on every item (measured: about 4% of GenerateDataKey's
/// throughput, in the daemon and in process). Every change bumps the
/// generation after changing the map, so a lookup that starts after a
/// change was answered sees the change: it finds the new generation,
/// drops its memo, and reads the map under the read lock.
pub struct AliasTable {
    inner: RwLock<Names>,
    /// Bumped by every change, after the change (under the write lock).
    generation: AtomicU64,
    /// Which table a thread's memo belongs to (tests and benches open many
    /// services in one process).
    table: u64,
}

impl Default for AliasTable {
    fn default() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        AliasTable {
            inner: RwLock::default(),
            generation: AtomicU64::new(0),
            table: NEXT.fetch_add(1, Ordering::Relaxed),
        }
    }
}

/// Most names a thread's memo holds; past it the memo starts over (a
/// client sending many unknown names costs itself the lock, nothing more).
const MEMO_MAX: usize = 4096;

/// One thread's resolutions, valid for one table at one generation.
#[derive(Default)]
struct Memo {
    table: u64,
    generation: u64,
    names: HashMap<Box<str>, Option<[u8; 16]>>,
}

thread_local! {
    static MEMO: RefCell<Memo> = RefCell::new(Memo::default());
}

#[derive(Default)]
struct Names {
    by_name: HashMap<Box<str>, [u8; 16]>,
    /// Each key's names, for dropping a deleted key's aliases.
    by_key: HashMap<[u8; 16], Vec<Box<str>>>,
}

impl Names {
    fn unlink(&mut self, name: &str, id: &[u8; 16]) {
        if let Some(names) = self.by_key.get_mut(id) {
            names.retain(|n| &**n != name);
            if names.is_empty() {
                self.by_key.remove(id);
            }
        }
    }
}

impl AliasTable {
    /// A table holding `aliases` (name, key id), as read from the store.
    pub fn from_rows(aliases: impl IntoIterator<Item = (String, [u8; 16])>) -> AliasTable {
        let t = AliasTable::default();
        for (name, id) in aliases {
            t.set(&name, id);
        }
        t
    }

    /// The key `name` (a whole alias name, `alias/...`) names.
    #[inline]
    pub fn get(&self, name: &str) -> Option<[u8; 16]> {
        let generation = self.generation.load(Ordering::Acquire);
        MEMO.with(|m| {
            let mut m = m.borrow_mut();
            if m.table != self.table || m.generation != generation {
                m.names.clear();
                m.table = self.table;
                m.generation = generation;
            } else if let Some(known) = m.names.get(name) {
                return *known;
            }
            let found = self.inner.read().by_name.get(name).copied();
            if m.names.len() >= MEMO_MAX {
                m.names.clear();
            }
            m.names.insert(name.into(), found);
            found
        })
    }

    /// Marks a change (called with the write lock held, after the change).
    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Points `name` at `id` (a new alias, or one moved to another key).
    pub fn set(&self, name: &str, id: [u8; 16]) {
        let mut t = self.inner.write();
        if let Some(old) = t.by_name.insert(name.into(), id) {
            if old == id {
                return;
            }
            t.unlink(name, &old);
        }
        t.by_key.entry(id).or_default().push(name.into());
        self.changed();
    }

    /// Forgets `name`.
    pub fn remove(&self, name: &str) {
        let mut t = self.inner.write();
        if let Some(old) = t.by_name.remove(name) {
            t.unlink(name, &old);
            self.changed();
        }
    }

    /// Forgets every alias of `id`; returns how many.
        pub fn remove_key(&self, id: &[u8; 16]) -> usize {
        let mut t = self.inner.write();
        let names = t.by_key.remove(id).unwrap_or_default();
        for n in &names {
            t.by_name.remove(n);
        }
        self.changed();
        names.len()
    }

    #[cfg(any(test, feature = "internals"))]
    /// Aliases held.
    pub fn len(&self) -> usize {
        self.inner.read().by_name.len()
    }

    #[cfg(any(test, feature = "internals"))]
    /// Whether it holds no alias.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Service {
    /// The in-memory alias table.
    pub(crate) fn aliases(&self) -> &AliasTable {
        &self.aliases
    }

    /// Drops every alias of a deleted key from the in-memory table. The key
    /// deletion calls it after its transaction (which deleted the alias rows
    /// with `keystore::aliases::delete_for_key`) commits, and before it
    /// answers or invalidates, while it still holds the store. Returns how
    /// many aliases went.
        pub fn forget_aliases_of(&self, id: &[u8; 16]) -> usize {
        self.aliases.remove_key(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_aws_rules_with_aws_exceptions() {
        for ok in ["alias/a", "alias/my-alias_/", "alias/App/DB-1", "alias/aws"] {
            assert_eq!(validate_name(ok), Ok(()), "{ok}");
        }
        let max = format!("alias/{}", "x".repeat(MAX_ALIAS_NAME_LEN - 6));
        assert_eq!(validate_name(&max), Ok(()));
        let cases = [
            ("", ErrorKind::Validation),
            (&format!("{max}x"), ErrorKind::Validation),
            ("alias/with space", ErrorKind::Validation),
            ("alias/é", ErrorKind::Validation),
            ("alias/a*b", ErrorKind::Validation),
            ("key/a", ErrorKind::Validation),
            ("aliasx", ErrorKind::Validation),
            ("alias/", ErrorKind::InvalidAliasName),
            ("alias/my:alias", ErrorKind::InvalidAliasName),
            ("alias/aws/ebs", ErrorKind::InvalidAliasName),
        ];
        for (name, kind) in cases {
            let e = validate_name(name).unwrap_err();
            assert_eq!(e.kind, kind, "{name}: {e}");
            assert!(e.message.contains("AliasName"), "{e}");
        }
    }

    #[test]
    fn the_table_moves_and_forgets_names() {
        let (a, b) = ([1; 16], [2; 16]);
        let t = AliasTable::from_rows([("alias/x".to_owned(), a), ("alias/y".to_owned(), a)]);
        assert_eq!(t.get("alias/x"), Some(a));
        t.set("alias/x", b);
        assert_eq!(t.get("alias/x"), Some(b));
        // Moving a name away from a key leaves the key's other names.
        assert_eq!(t.remove_key(&a), 1);
        assert_eq!(t.get("alias/y"), None);
        assert_eq!(t.get("alias/x"), Some(b));
        t.set("alias/x", b);
        t.remove("alias/x");
        assert!(t.is_empty());
        assert_eq!(t.remove_key(&b), 0);
    }

    #[test]
    fn a_thread_s_memo_never_outlives_a_change() {
        let (a, b) = ([1; 16], [2; 16]);
        let t = AliasTable::from_rows([("alias/x".to_owned(), a)]);
        let other = AliasTable::from_rows([("alias/x".to_owned(), b)]);
        // Memoized here, and unknown names too.
        assert_eq!(t.get("alias/x"), Some(a));
        assert_eq!(t.get("alias/new"), None);
        // Another table's memo is not this one's.
        assert_eq!(other.get("alias/x"), Some(b));
        assert_eq!(t.get("alias/x"), Some(a));
        std::thread::scope(|s| {
            s.spawn(|| {
                t.set("alias/x", b);
                t.set("alias/new", a);
            });
        });
        assert_eq!(t.get("alias/x"), Some(b));
        assert_eq!(t.get("alias/new"), Some(a));
        std::thread::scope(|s| {
            s.spawn(|| t.remove("alias/new"));
        });
        assert_eq!(t.get("alias/new"), None);
        std::thread::scope(|s| {
            s.spawn(|| t.remove_key(&b));
        });
        assert_eq!(t.get("alias/x"), None);
        // Past the memo's bound it starts over, still right.
        for i in 0..MEMO_MAX + 10 {
            assert_eq!(t.get(&format!("alias/unknown-{i}")), None);
        }
        t.set("alias/x", a);
        assert_eq!(t.get("alias/x"), Some(a));
    }

    /// A frame admitted and answered on a thread marked as an I/O thread
    /// (debug builds panic on any store call there), as the daemon runs a
    /// small frame with cached keys.
    fn run_on_io_thread(svc: &Service, ops: Vec<kms_proto::Operation<'_>>) -> Vec<kms_proto::Outcome> {
        use crate::wire::{answer, AnswerOptions};
        use kms_proto::{Request, RequestBody, ResponseBody};
        let mut frame = Vec::new();
        kms_proto::codec::encode_request(
            &mut flatbuffers::FlatBufferBuilder::new(),
            &Request {
                request_id: 1,
                body: RequestBody::Batch(ops.into_iter().map(Ok).collect()),
            },
            &mut frame,
        );
        let out = std::thread::scope(|s| {
            s.spawn(|| {
                crate::thread_role::enter_io();
                let a = crate::wire::admit_slice(svc, &frame[4..], crate::wire::DEFAULT_MAX_ANSWER)
                    .unwrap();
                assert!(a.all_cached(), "every key resolved and cached at admission");
                let mut out = Vec::new();
                let opts = AnswerOptions {
                    max_answer: crate::wire::DEFAULT_MAX_ANSWER,
                    gone: None,
                    record: None,
                };
                answer(svc, &a, &crate::identity::Identity::local(0, 0, 1), crate::service::Site::Io, opts, &mut out)
                    .expect("ran inline");
                out
            })
            .join()
            .unwrap()
        });
        match kms_proto::decode_response(&out[4..], 1 << 20).unwrap().body {
            ResponseBody::Batch(items) => items,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn aliases_resolve_at_admission_and_run_inline_on_an_io_thread() {
        use crate::service::ops::test_support::TestService;
        use kms_proto::*;
        let t = TestService::new();
        let (a, b) = (t.create_key(), t.create_key());
        t.alias("alias/a", &a);
        t.alias("alias/b", &b);
        // An alias change reloads its key (its aliases are part of its
        // access); both are loaded again by the encryptions.
        t.call(Operation::Encrypt(Encrypt {
            key_id: "alias/b",
            plaintext: b"warm",
            ..Default::default()
        }))
        .unwrap();
        let blob = match t
            .call(Operation::Encrypt(Encrypt {
                key_id: "alias/a",
                plaintext: b"secret",
                context: vec![],
                ..Default::default()
            }))
            .unwrap()
        {
            Output::Encrypt(o) => o.ciphertext_blob,
            o => panic!("{o:?}"),
        };
        let items = run_on_io_thread(
            &t.svc,
            vec![
                Operation::GenerateDataKey(GenerateDataKey {
                    key_id: "arn:aws:kms:us-east-1:000000000000:alias/b",
                    number_of_bytes: Some(16),
                    key_spec: None,
                    context: vec![],
                    ..Default::default()
                }),
                Operation::Decrypt(Decrypt {
                    ciphertext_blob: &blob,
                    key_id: Some("alias/a"),
                    context: vec![],
                    ..Default::default()
                }),
                Operation::ReEncrypt(ReEncrypt {
                    ciphertext_blob: &blob,
                    source_key_id: Some("alias/a"),
                    source_context: vec![],
                    destination_key_id: "alias/b",
                    destination_context: vec![],
                    ..Default::default()
                }),
                Operation::Decrypt(Decrypt {
                    ciphertext_blob: &blob,
                    key_id: Some("alias/b"),
                    context: vec![],
                    ..Default::default()
                }),
                Operation::Encrypt(Encrypt {
                    key_id: "alias/none",
                    plaintext: b"x",
                    context: vec![],
                    ..Default::default()
                }),
            ],
        );
        match &items[0] {
            Ok(Output::GenerateDataKey(o)) => assert_eq!(o.key_id, t.arn(&b)),
            o => panic!("{o:?}"),
        }
        match &items[1] {
            Ok(Output::Decrypt(o)) => assert_eq!(o.plaintext.expose(), b"secret"),
            o => panic!("{o:?}"),
        }
        match &items[2] {
            Ok(Output::ReEncrypt(o)) => assert_eq!((&o.source_key_id, &o.key_id), (&t.arn(&a), &t.arn(&b))),
            o => panic!("{o:?}"),
        }
        // The blob is a's, the alias names b.
        assert_eq!(items[3].as_ref().unwrap_err().kind, ErrorKind::IncorrectKey);
        let e = items[4].as_ref().unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert!(e.message.contains("KeyId") && e.message.contains("alias/none"), "{e}");
    }

    #[test]
    fn the_table_is_loaded_from_the_store_when_the_service_opens() {
        use crate::crypto::KeyMaterial;
        use crate::root::FileRoot;
        use kms_proto::*;
        let dir = tempfile::tempdir().unwrap();
        let open = || {
            Service::open(
                dir.path(),
                std::sync::Arc::new(FileRoot::from_key(KeyMaterial::from_bytes([7; 32]))),
                DecodeLimits::default(),
                100,
            )
            .unwrap()
        };
        let peer = crate::identity::Identity::local(0, 0, 1);
        let key = {
            let svc = open();
            let key = match svc.call(&Operation::CreateKey(CreateKey::default()), &peer).unwrap() {
                Output::CreateKey(m) => m.key_id,
                o => panic!("{o:?}"),
            };
            svc.call(
                &Operation::CreateAlias(CreateAlias {
                    alias_name: "alias/kept",
                    target_key_id: &key,
                }),
                &peer,
            )
            .unwrap();
            key
        };
        let svc = open();
        assert_eq!(svc.aliases().len(), 1);
        assert_eq!(
            svc.resolve_key_id("alias/kept", "KeyId").unwrap(),
            crate::service::Arns::default().parse_key_id(&key).unwrap()
        );
    }

    #[test]
    fn a_deleted_key_s_aliases_go_from_store_and_table() {
        use crate::keystore::aliases::delete_for_key;
        use crate::service::ops::test_support::TestService;
        let t = TestService::new();
        let (a, b) = (t.create_key(), t.create_key());
        t.alias("alias/a1", &a);
        t.alias("alias/a2", &a);
        t.alias("alias/b", &b);
        let id = crate::service::Arns::default().parse_key_id(&a).unwrap();
        // What the key deletion does: rows in its transaction, then the
        // table after the commit.
        let gone = t
            .svc
            .store()
            .in_transaction(|tx| Ok(delete_for_key(tx, &id)?))
            .unwrap();
        assert_eq!(gone, ["alias/a1", "alias/a2"]);
        assert_eq!(t.svc.forget_aliases_of(&id), 2);
        assert_eq!(t.aliases(), [("alias/b".to_owned(), b)]);
        assert!(t.svc.resolve_key_id("alias/a1", "KeyId").is_err());
    }
}
