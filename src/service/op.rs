//! What every operation declares, and the one place an [`Operation`] is
//! turned into its implementation.
//!
//! Each operation is one file under `ops/` implementing [`Op`] for its typed
//! request: its AWS name and policy action, its plane, the keys it needs,
//! its payload, a bound of its answer, and `apply`. Admission, routing,
//! the inline decision and execution derive from these declarations
//! through `with_op!`, the one `match` over the operations: adding an
//! operation is its file plus one arm there (and its wire encoding).
//!
//! The plane is a type: a data-plane operation's `apply` gets a
//! [`DataCtx`], which can reach keys (cached, prefetched, or loaded off
//! the I/O threads) and crypto but not the store; a control-plane
//! operation's gets a [`ControlCtx`], which adds the store, and is only
//! made off the I/O threads (by the control-plane executor, or by
//! in-process callers). So an operation cannot forget to stay off the
//! store on an I/O thread: it has no way to reach it there.

use super::hsm_executor::HsmThread;
use super::keys::{KeyRef, Needed};
use super::loader::Prefetched;
use super::{LoadedKey, Service};
use super::access::Ask;
use crate::identity::Identity;
use crate::keystore::Keystore;
use kms_proto::{KmsError, Operation, Output};
use std::sync::Arc;

/// Which plane an operation belongs to, as a value (for routing).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PlaneKind {
    /// Data-key operations on cached keys: fast, may run inline on an I/O
    /// thread.
    Data,
    /// Key management: reads or writes the store; runs on the control-plane
    /// executor only.
    Control,
}

/// A plane, as a type: what context its operations get.
pub trait Plane {
    /// The plane as a value.
    const KIND: PlaneKind;
    /// What an operation of this plane may use.
    type Ctx<'s>;
    /// Runs `op` at `site` with this plane's context.
    fn run<O: Op<Plane = Self>>(
        op: &O,
        svc: &Service,
        caller: &Identity,
        site: Site<'_>,
        resolved: &[Needed],
    ) -> Result<Output, ExecError>;
}

/// The data plane.
pub struct Data;
/// The control plane.
pub struct Control;

impl Plane for Data {
    const KIND: PlaneKind = PlaneKind::Data;
    type Ctx<'s> = DataCtx<'s>;
    fn run<O: Op<Plane = Self>>(
        op: &O,
        svc: &Service,
        caller: &Identity,
        site: Site<'_>,
        resolved: &[Needed],
    ) -> Result<Output, ExecError> {
        // Data-plane operations check the keys they load themselves (a
        // ciphertext names its key); nothing else may skip the check.
        debug_assert!(matches!(op.authorization(), Authz::InApply | Authz::Anyone | Authz::Administrators));
        if let Authz::Administrators = op.authorization() {
            svc.authorize_administrator(caller, O::ACTION)?;
        }
        op.apply(
            &DataCtx {
                svc,
                site,
                resolved,
            },
            caller,
        )
    }
}

impl Plane for Control {
    const KIND: PlaneKind = PlaneKind::Control;
    type Ctx<'s> = ControlCtx<'s>;
    fn run<O: Op<Plane = Self>>(
        op: &O,
        svc: &Service,
        caller: &Identity,
        site: Site<'_>,
        resolved: &[Needed],
    ) -> Result<Output, ExecError> {
        if matches!(site, Site::Io) {
            // Admission routes control-plane frames to their executor, so
            // the daemon never gets here; an in-process caller asking for
            // it is told to run it where it may block.
            return Err(ExecError::NotReady);
        }
        op.validate(svc)?;
        // Before anything else, so that a refused caller learns nothing
        // beyond whether the key exists.
        match op.authorization() {
            Authz::Key { key_id, field } => {
                let id = svc.resolve_key_id(key_id, field)?;
                svc.authorize_id(caller, &id, policy_action::<O>(), &Ask::default().named(key_id))?;
            }
            Authz::Account => svc.authorize_account(caller, policy_action::<O>())?,
            Authz::Administrators => svc.authorize_administrator(caller, O::ACTION)?,
            Authz::Anyone | Authz::InApply => {}
        }
        op.apply(
            &ControlCtx {
                data: DataCtx {
                    svc,
                    site,
                    resolved,
                },
            },
            caller,
        )
    }
}

/// How an operation is authorized: declared by each operation (there is no
/// default, so a new operation cannot forget).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Authz<'a> {
    /// Anyone who can connect (WhoAmI, GenerateRandom: they use no key and
    /// reveal nothing about one).
    Anyone,
    /// An account-wide action: the administrators' and key creators'
    /// (`[access]`; CreateKey only the key creators' and administrators').
    Account,
    /// kmsd's own operator operations (its status, the audit log's seals):
    /// the administrators only (`access.administrators`, the daemon's uid).
    /// Their actions (`kmsd:...`) are in no key policy.
    Administrators,
    /// The action on the key `key_id` names, by its key policy and grants,
    /// checked before `apply` runs.
    Key {
        /// The client's identifier (key id, key ARN, alias name or ARN).
        key_id: &'a str,
        /// Its field, for errors.
        field: &'a str,
    },
    /// `apply` checks the keys it uses itself (the data plane: the key of
    /// a ciphertext is known only once it is parsed; aliases, which need
    /// two keys; grants, whose retiring principal may retire them).
    InApply,
}

impl<'a> Authz<'a> {
    /// The action on the key named by the request's `KeyId`.
    pub fn key(key_id: &'a str) -> Authz<'a> {
        Authz::Key {
            key_id,
            field: "KeyId",
        }
    }
}

/// The policy action of `O`.
fn policy_action<O: Op>() -> kms_policy::Action {
    kms_policy::Action::from_name(O::ACTION)
        .expect("an operation authorized by policy names a policy action (tested)")
}

/// Upper bounds of what one outcome of an operation can hold, from its
/// request alone (before it runs), independent of any encoding: each
/// encoding adds its own overheads (see `wire::bound`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutputSize {
    /// Bytes of strings and blobs in a success.
    pub success: usize,
    /// Bytes of client text an error message may quote (escaped), beyond
    /// the longest fixed message.
    pub error_text: usize,
    /// List entries in a success (each is a table of its own).
    pub entries: usize,
}

/// One operation: its declarations and its implementation.
#[cfg_attr(not(any(test, feature = "internals")), allow(dead_code))]
pub trait Op {
    /// AWS's operation name, e.g. "Encrypt".
    const NAME: &'static str;
    /// The action a key policy names for it, e.g. "kms:Encrypt".
    const ACTION: &'static str;
    /// Its plane ([`Data`] or [`Control`]).
    type Plane: Plane;
    /// Its quota slot (a compile-time error if `NAME` has none: see
    /// `quota::profiles::OPERATIONS`).
    const QUOTA_INDEX: usize = crate::quota::op_index(Self::NAME);
    /// The keys it needs loaded before it runs (by key id, or by the key id
    /// and version a ciphertext names), resolving alias names through
    /// `svc` ([`Service::resolve_key_id`]: the in-memory alias table, never
    /// the store: admission runs on I/O threads); what it cannot resolve is
    /// skipped here and answered by `apply`.
    fn keys(&self, _svc: &Service, _out: &mut Vec<KeyRef>) {}
    /// Bytes of client payload it carries (plaintext, ciphertext, or the
    /// bytes it asks to be generated), for the inline decision.
    fn payload(&self) -> usize {
        0
    }
    /// Heap bytes its decoded form holds (its encryption contexts), for
    /// the byte budgets.
    fn heap_bytes(&self) -> usize {
        0
    }
    /// Bounds of its outcome.
    fn output_size(&self) -> OutputSize;
    /// How it is authorized.
    fn authorization(&self) -> Authz<'_>;
    /// Checks of the request alone (its parameters' ranges and forms),
    /// made before authorization and before the key is looked up, as AWS
    /// validates a request before it looks at the resource. `apply` may
    /// check more.
    fn validate(&self, _svc: &Service) -> Result<(), KmsError> {
        Ok(())
    }
    /// Runs it.
    fn apply(
        &self,
        ctx: &<Self::Plane as Plane>::Ctx<'_>,
        caller: &Identity,
    ) -> Result<Output, ExecError>;
}

/// Why an operation produced no output.
#[derive(Debug, PartialEq, Eq)]
pub enum ExecError {
    /// Answer the client with this error.
    Kms(KmsError),
    /// On an I/O thread, it needs a key that is not cached (evicted since
    /// admission): run it off the I/O thread instead. Nothing visible has
    /// happened.
    NotReady,
}

impl From<KmsError> for ExecError {
    fn from(e: KmsError) -> Self {
        ExecError::Kms(e)
    }
}

/// Where an operation runs, and so how it gets a key that is not cached.
#[derive(Clone, Copy)]
pub enum Site<'a> {
    /// An I/O thread: cached keys only (anything else is
    /// [`ExecError::NotReady`]); no store, no PKCS#11, no waiting.
    Io,
    /// A worker, the control-plane executor, the HSM executor or an
    /// in-process caller: keys the dispatcher prefetched come from
    /// `prefetched` (a failed load is answered with its error, never
    /// loaded again), others are loaded, waiting at most the load timeout.
    Blocking {
        /// What the key loader got for the frame's missing keys.
        prefetched: Option<&'a Prefetched>,
    },
    /// A thread of the HSM executor: like `Blocking`, but a key that is
    /// neither cached nor prefetched is loaded on this very thread (a load
    /// queued for the executor could wait behind the frame itself).
    Hsm {
        /// The executor thread the frame runs on.
        thread: &'a HsmThread<'a>,
        /// What the key loader got for the frame's missing keys.
        prefetched: Option<&'a Prefetched>,
    },
}

impl Site<'_> {
    /// Whether the thread may block (store, PKCS#11, key loads).
    pub fn may_block(&self) -> bool {
        !matches!(self, Site::Io)
    }
}

/// What a data-plane operation may use: keys and crypto, no store.
pub struct DataCtx<'a> {
    svc: &'a Service,
    site: Site<'a>,
    /// The keys admission found cached, sorted by key id.
    resolved: &'a [Needed],
}

impl<'a> DataCtx<'a> {
    /// The service's key material and crypto helpers.
    pub fn service(&self) -> &'a Service {
        self.svc
    }

    /// Where this runs.
    pub fn site(&self) -> Site<'a> {
        self.site
    }

    /// The key `r` names: from the cache, else from the prefetch, else
    /// loaded (off the I/O threads only).
    pub fn key(&self, r: KeyRef) -> Result<Arc<LoadedKey>, ExecError> {
        // A frame's keys were looked up once, at admission: no second
        // cache lookup per item.
        let i = self.resolved.partition_point(|n| n.key.id < r.id);
        if let Some(Some(k)) = self
            .resolved
            .get(i)
            .filter(|n| n.key.id == r.id)
            .map(|n| &n.cached)
        {
            // Unless the key changed since admission (a DisableKey
            // acknowledged while this frame was queued): then it is looked
            // up again.
            if self.svc.is_fresh(k) {
                return Ok(Arc::clone(k));
            }
        }
        self.svc.key_at(r, self.site)
    }

    /// Fails with AccessDeniedException unless `caller` may do `action`
    /// on `key` (its policy and grants as of its loading; cached per
    /// connection).
    pub fn authorize(
        &self,
        caller: &Identity,
        key: &LoadedKey,
        action: kms_policy::Action,
        ask: &Ask<'_>,
    ) -> Result<(), KmsError> {
        self.svc.authorize(caller, key.access(), action, ask)?;
        // The key's own rate (`quotas.per_key_rate`), once the caller is
        // known to may use it: a refused caller does not spend the key's.
        self.svc.quotas().admit_key(&key.quota)
    }

    /// The key a client-supplied identifier in `field` names (a key id,
    /// key ARN, alias name or alias ARN), current version.
    pub fn key_named(&self, key_id: &str, field: &str) -> Result<Arc<LoadedKey>, ExecError> {
        let id = self.svc.resolve_key_id(key_id, field)?;
        self.key(KeyRef { id, version: None })
    }
}

/// What a control-plane operation may use: a [`DataCtx`] and the store.
pub struct ControlCtx<'a> {
    data: DataCtx<'a>,
}

impl<'a> ControlCtx<'a> {
    /// The service.
    pub fn service(&self) -> &'a Service {
        self.data.svc
    }

    /// The store (the thread may block: this context is never made on an
    /// I/O thread).
    pub fn store(&self) -> parking_lot::MutexGuard<'a, Keystore> {
        self.data.svc.store()
    }
}

/// Runs `$body` with `$r` bound to the [`Op`] implementation of `$op` (an
/// `&Operation`): the one `match` over the operations.
macro_rules! with_op {
    ($op:expr, $r:ident => $body:expr) => {{
        use kms_proto::Operation as O;
        match $op {
            O::CreateKey($r) => $body,
            O::DescribeKey($r) => $body,
            O::ListKeys($r) => $body,
            O::GenerateDataKey($r) => $body,
            O::GenerateDataKeyWithoutPlaintext(r) => {
                let $r = &$crate::service::ops::generate_data_key::WithoutPlaintext(r);
                $body
            }
            O::Encrypt($r) => $body,
            O::Decrypt($r) => $body,
            O::ReEncrypt($r) => $body,
            O::GenerateRandom($r) => $body,
            // Key lifecycle.
            O::UpdateKeyDescription($r) => $body,
            O::TagResource($r) => $body,
            O::UntagResource($r) => $body,
            O::ListResourceTags($r) => $body,
            O::CreateAlias($r) => $body,
            O::UpdateAlias($r) => $body,
            O::DeleteAlias($r) => $body,
            O::ListAliases($r) => $body,
            O::EnableKey($r) => $body,
            O::DisableKey($r) => $body,
            O::ScheduleKeyDeletion($r) => $body,
            O::CancelKeyDeletion($r) => $body,
            O::EnableKeyRotation($r) => $body,
            O::DisableKeyRotation($r) => $body,
            O::GetKeyRotationStatus($r) => $body,
            O::RotateKeyOnDemand($r) => $body,
            O::ListKeyRotations($r) => $body,
            O::GetParametersForImport($r) => $body,
            O::ImportKeyMaterial($r) => $body,
            O::DeleteImportedKeyMaterial($r) => $body,
            // kmsd's own.
            O::WhoAmI($r) => $body,
            // Access control: key policies and grants.
            O::PutKeyPolicy($r) => $body,
            O::GetKeyPolicy($r) => $body,
            O::ListKeyPolicies($r) => $body,
            O::CreateGrant($r) => $body,
            O::ListGrants($r) => $body,
            O::ListRetirableGrants($r) => $body,
            O::RetireGrant($r) => $body,
            O::RevokeGrant($r) => $body,
            // kmsd's own, administrators only.
            O::GetStatus($r) => $body,
            // The audit log's seals (kmsd's own).
            O::VerifyAuditSeals($r) => $body,
        }
    }};
}

fn plane_of<O: Op>(_: &O) -> PlaneKind {
    <O::Plane as Plane>::KIND
}

fn run_one<O: Op>(
    op: &O,
    svc: &Service,
    caller: &Identity,
    site: Site<'_>,
    resolved: &[Needed],
) -> Result<Output, ExecError> {
    // Before anything else about the item (AWS throttles before it looks at
    // the request): a flood costs the daemon this and an error answer. An
    // item that comes back NotReady from an I/O thread is charged again on
    // the worker that reruns it (rare: its key was evicted in between).
    svc.quotas().admit(caller.uid, O::QUOTA_INDEX)?;
    <O::Plane as Plane>::run(op, svc, caller, site, resolved)
}

/// The plane of `op`.
pub fn plane(op: &Operation<'_>) -> PlaneKind {
    with_op!(op, r => plane_of(r))
}

#[cfg(any(test, feature = "internals"))]
/// AWS's name of `op` and its policy action.
pub fn names(op: &Operation<'_>) -> (&'static str, &'static str) {
    fn of<O: Op>(_: &O) -> (&'static str, &'static str) {
        (O::NAME, O::ACTION)
    }
    with_op!(op, r => of(r))
}

/// Appends the keys `op` needs, alias names resolved through `svc`.
pub fn keys(op: &Operation<'_>, svc: &Service, out: &mut Vec<KeyRef>) {
    with_op!(op, r => r.keys(svc, out))
}

/// The payload `op` carries.
pub fn payload(op: &Operation<'_>) -> usize {
    with_op!(op, r => r.payload())
}

/// Heap bytes `op`'s decoded form holds.
pub fn heap_bytes(op: &Operation<'_>) -> usize {
    with_op!(op, r => r.heap_bytes())
}

/// Bounds of `op`'s outcome.
pub fn output_size(op: &Operation<'_>) -> OutputSize {
    with_op!(op, r => r.output_size())
}

/// Runs `op` for `caller` at `site`, with the keys admission looked up
/// (`resolved`, sorted by key; may be empty).
pub fn execute(
    svc: &Service,
    op: &Operation<'_>,
    caller: &Identity,
    site: Site<'_>,
    resolved: &[Needed],
) -> Result<Output, ExecError> {
    with_op!(op, r => run_one(r, svc, caller, site, resolved))
}
