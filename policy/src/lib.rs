//! # kms-policy: kmsd's key policies
//!
//! Every kmsd key has one key policy, a JSON document in AWS's shape
//! (`Version`, `Statement` with `Sid`, `Effect`, `Principal`, `Action`,
//! `Resource`, `Condition`) whose principals are local identities
//! (`uid:N`, `gid:N`, `user:NAME`, `group:NAME`, `unit:NAME.service`,
//! `cgroup:PATH`, `*`). docs/policy.md describes the whole language.
//!
//! The pipeline: [`Policy::parse`] reads and validates a document once
//! (limits, then JSON, then each statement; names resolved through a
//! [`NameResolver`]) into a [`CompiledPolicy`]; [`CompiledPolicy::evaluate`]
//! decides a [`Request`] (borrowed, built without allocation) into a
//! [`Decision`] without allocating. [`default_key_policy`] builds the
//! policy of a key made without one, and
//! [`CompiledPolicy::allows_subsequent_put_key_policy`] is AWS's lockout
//! safety check.
//!
//! Grants ([`CompiledGrant`]): [`CompiledGrant::compile`] validates what a
//! CreateGrant asks for ([`GrantSpec`]) with AWS's rules, and
//! [`CompiledGrant::allows`] decides a [`Request`] without allocating;
//! [`CompiledGrant::permits_child`] is AWS's rule for grants created
//! through a grant and [`CompiledGrant::same_parameters`] its `Name`
//! idempotency.
//!
//! Layout: `document` (JSON, limits, statements), `principal`, `action`
//! (the action names and the bit sets patterns compile to), `condition`
//! (operators and keys), `glob` (the linear-time wildcard matcher),
//! `evaluate`, `request` (what evaluation reads and returns), `default`,
//! `grant`, `error`.
//!
//! Boundary: this crate does no I/O and no system calls (the daemon
//! resolves names through the resolver it passes), knows nothing of the
//! daemon, and has no unsafe code.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod action;
mod condition;
mod default;
mod document;
mod error;
mod evaluate;
mod glob;
mod grant;
mod principal;
mod request;

pub use action::Action;
pub use default::{default_key_policy, CREATOR_ACTIONS};
pub use document::{
    CompiledPolicy, Policy, MAX_DEPTH, MAX_LIST, MAX_POLICY_BYTES, MAX_STATEMENTS,
    MAX_STRING_BYTES, MAX_WILDCARDS,
};
pub use error::{GrantError, GrantErrorKind, PolicyError};
pub use grant::{
    CompiledGrant, GrantConstraintType, GrantOperation, GrantOperationSet, GrantSpec,
    MAX_CONSTRAINT_BYTES, MAX_CONSTRAINT_PAIRS,
};
pub use principal::{NameResolver, NoNames};
pub use request::{Caller, Decision, Request};

// The daemon shares compiled policies between its threads (a cache of
// them beside the key cache).
const _: fn() = || {
    fn shared<T: Send + Sync>() {}
    shared::<CompiledPolicy>();
    shared::<PolicyError>();
    shared::<CompiledGrant>();
    shared::<GrantError>();
};
