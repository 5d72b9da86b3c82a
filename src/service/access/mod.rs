//! Who may do what with a key: its key policy and grants, compiled when
//! they are loaded ([`KeyAccess`], held by the cached key beside its
//! material, so that a change to either invalidates the cached key and with
//! it everything decided on the old ones), and the check every operation
//! makes before it does anything visible (`Service::authorize` and its
//! siblings).
//!
//! Decisions are cached per thread (`decisions`), keyed by the access's
//! generation, the connection and the action (and the request's context
//! and alias, compared in full on a hit): a request on a cached key pays a
//! hash lookup, not an evaluation.

mod decisions;
pub mod grants;
pub mod policies;
pub mod names;

use super::{Arns, Service};
use crate::identity::Identity;
use crate::keystore::access::StoredPolicy;
use kms_policy::{Action, CompiledPolicy, Decision, Policy, Request};
use kms_proto::{ErrorKind, KmsError};
use std::sync::atomic::{AtomicU64, Ordering};

/// Who administers keys and who may make them (`[access]` in the config).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessOptions {
    /// Principals given `kms:*` by the default key policy (and so by every
    /// key made without a policy), and allowed the account-wide operations
    /// (ListKeys, ListAliases, ListRetirableGrants for anyone).
    pub administrators: Vec<String>,
    /// Principals who may CreateKey, besides the administrators.
    pub key_creators: Vec<String>,
    /// Decide nothing: every request is allowed. Only for the benchmark
    /// that measures what authorization costs; the daemon refuses it
    /// unless started with `--benchmark-allow-unauthorized`.
    pub bypass: bool,
}

impl Default for AccessOptions {
    fn default() -> Self {
        AccessOptions {
            administrators: vec!["uid:0".into()],
            key_creators: Vec::new(),
            bypass: false,
        }
    }
}

/// Principal lists compiled once, for the account-wide checks (an
/// administrators' or key creators' list is a one-statement policy).
pub(crate) struct AccountAccess {
    options: AccessOptions,
    /// `kms:*` for the administrators.
    admins: CompiledPolicy,
    /// `kms:CreateKey` for the key creators and administrators.
    creators: CompiledPolicy,
}

/// The resource an account-wide action is checked against (a key's ARN is
/// what key policies name; account-wide actions have none).
const ACCOUNT_RESOURCE: &str = "*";

impl AccountAccess {
    /// Compiles `options`; an administrator or key creator that does not
    /// parse (or names an unknown user or group) is refused with its
    /// reason. The daemon's own uid is always an administrator: it owns
    /// the store and the root key's file, so naming it adds no power.
    pub(crate) fn new(mut options: AccessOptions) -> Result<AccountAccess, String> {
        let me = format!("uid:{}", rustix::process::geteuid().as_raw());
        if !options.administrators.contains(&me) {
            options.administrators.push(me);
        }
        let one = |principals: &[String], action: &str| -> Result<CompiledPolicy, String> {
            let doc = serde_json::json!({
                "Version": "2012-10-17",
                "Statement": [{
                    "Effect": "Allow",
                    "Principal": {"AWS": principals},
                    "Action": action,
                    "Resource": "*",
                }],
            });
            Policy::parse(&doc.to_string(), &names::SystemNames).map_err(|e| e.to_string())
        };
        let admins = one(&options.administrators, "kms:*")?;
        let mut creators_list = options.key_creators.clone();
        creators_list.extend(options.administrators.iter().cloned());
        let creators = one(&creators_list, "kms:CreateKey")?;
        Ok(AccountAccess {
            options,
            admins,
            creators,
        })
    }
}

/// What a key's requests are decided by: its policy and grants, compiled,
/// and its aliases (`kms:ResourceAliases`). Made when the key is loaded;
/// never changed (a change makes a new one, and invalidates the cached key).
pub struct KeyAccess {
    /// Unique among every `KeyAccess` the daemon made: cached decisions are
    /// keyed by it.
    generation: u64,
    /// The key's id (for the audit record's resource).
    id: [u8; 16],
    /// The key's ARN (what a statement's `Resource` names), made once.
    arn: String,
    policy: CompiledPolicy,
    /// The key's grants, compiled.
    grants: Vec<kms_policy::CompiledGrant>,
    /// The key's alias names.
    aliases: Vec<String>,
}

static GENERATION: AtomicU64 = AtomicU64::new(1);

impl std::fmt::Debug for KeyAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyAccess")
            .field("generation", &self.generation)
            .field("statements", &self.policy.statement_count())
            .finish()
    }
}

impl KeyAccess {
    /// The key's ARN.
    pub(crate) fn arn(&self) -> &str {
        &self.arn
    }

    /// Compiles a stored policy (its names as they were resolved when it
    /// was stored).
    pub(crate) fn compile(
        arns: &Arns,
        key_id: &[u8; 16],
        policy: &StoredPolicy,
        grants: &[crate::keystore::access::GrantRow],
        aliases: Vec<String>,
    ) -> Result<KeyAccess, KmsError> {
        let resolver = names::StoredNames::parse(&policy.names)
            .map_err(|e| super::internal("loading key policy", e))?;
        let policy = Policy::parse(&policy.text, &resolver)
            .map_err(|e| super::internal("loading key policy", e))?;
        let grants = grants
            .iter()
            .map(grants::compile_row)
            .collect::<Result<_, _>>()?;
        Ok(KeyAccess {
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
            id: *key_id,
            arn: arns.key_arn(key_id),
            policy,
            grants,
            aliases,
        })
    }

    #[cfg(test)]
    /// An access that allows everyone everything (unit tests of what is
    /// not authorization).
    pub(crate) fn for_tests() -> KeyAccess {
        let text = r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*"}]}"#;
        KeyAccess::compile(
            &Arns::default(),
            &[0; 16],
            &StoredPolicy {
                text: text.into(),
                names: "{}".into(),
            },
            &[],
            Vec::new(),
        )
        .expect("the test policy parses")
    }

    fn decide(&self, caller: &Identity, action: Action, ask: &Ask<'_>) -> Decision {
        // On the stack: evaluation allocates nothing for a key of at most 8
        // aliases (most have one or none).
        let mut on_stack = [""; 8];
        let heap: Vec<&str>;
        let aliases: &[&str] = if self.aliases.len() <= on_stack.len() {
            for (slot, a) in on_stack.iter_mut().zip(&self.aliases) {
                *slot = a;
            }
            &on_stack[..self.aliases.len()]
        } else {
            heap = self.aliases.iter().map(String::as_str).collect();
            &heap
        };
        let req = Request {
            encryption_context: ask.context,
            request_alias: ask.request_alias,
            key_aliases: aliases,
            grant_operations: ask.grant_operations,
            bypass_policy_lockout_safety_check: ask.bypass,
            ..Request::new(caller.caller(), action, &self.arn)
        };
        // Grants only allow: a policy's explicit deny stands. A grant's
        // CreateGrant and RetireGrant are not a key-wide right (a grant
        // made through a grant must be as strict as it, and a grant's
        // RetireGrant retires that grant only): `grants` decides those.
        match self.policy.evaluate(&req) {
            Decision::ImplicitDeny
                if !matches!(action, Action::CreateGrant | Action::RetireGrant)
                    && self.grants_allow(&req) =>
            {
                Decision::Allow
            }
            d => d,
        }
    }
}

/// The default key policy (the administrators' and, if given, the
/// creator's), as stored.
pub(crate) fn default_policy(
    account: &AccountAccess,
    creator: Option<u32>,
) -> Result<StoredPolicy, String> {
    let admins: Vec<&str> = account.options.administrators.iter().map(String::as_str).collect();
    let text = kms_policy::default_key_policy(&admins, creator).map_err(|e| e.to_string())?;
    let recording = names::Recording::new(&names::SystemNames);
    Policy::parse(&text, &recording).map_err(|e| e.to_string())?;
    Ok(StoredPolicy {
        text,
        names: recording.into_json(),
    })
}

impl KeyAccess {
    /// The access of a key as the loader read it: its policy (`fallback`
    /// for a key stored without one), grants and aliases.
    pub(crate) fn from_stored(
        stored: &crate::keystore::StoredKey,
        fallback: &StoredPolicy,
        arns: &Arns,
    ) -> Result<KeyAccess, KmsError> {
        KeyAccess::compile(
            arns,
            &stored.record.key_id,
            stored.policy.as_ref().unwrap_or(fallback),
            &stored.grants,
            stored.aliases.clone(),
        )
    }
}

/// What a request brings to its authorization beyond caller, key and
/// action.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ask<'a> {
    /// Its encryption context (canonical order or not: compared as given).
    pub context: &'a [(&'a str, &'a str)],
    /// The alias name its KeyId gave (`alias/...`), if any.
    pub request_alias: Option<&'a str>,
    /// CreateGrant's operations.
    pub grant_operations: &'a [&'a str],
    /// CreateKey's and PutKeyPolicy's bypass flag.
    pub bypass: Option<bool>,
}

impl<'a> Ask<'a> {
    /// A request with only an encryption context.
    pub fn context(context: &'a [(&'a str, &'a str)]) -> Ask<'a> {
        Ask {
            context,
            ..Ask::default()
        }
    }

    /// A request that named its key `key_id` (`kms:RequestAlias` when that
    /// is an alias name or alias ARN).
    pub fn named(mut self, key_id: &'a str) -> Ask<'a> {
        self.request_alias = request_alias(key_id);
        self
    }
}

/// The alias name a KeyId gives, if it names an alias (an alias ARN's
/// name part: `kms:RequestAlias` values are alias names, never ARNs):
/// [`super::key_id::alias_named`].
pub fn request_alias(key_id: &str) -> Option<&str> {
    super::key_id::alias_named(key_id)
}

/// MalformedPolicyDocumentException with `reason`.
pub fn malformed(reason: String) -> KmsError {
    KmsError::new(ErrorKind::MalformedPolicyDocument, reason)
}

/// AccessDeniedException naming the principal and the action (never the
/// policy).
pub fn denied(caller: &Identity, action: Action, resource: &str, decision: Decision) -> KmsError {
    let why = match decision {
        Decision::ExplicitDeny => "an explicit deny in its key policy",
        _ => "no key policy statement or grant allows it",
    };
    KmsError::new(
        ErrorKind::AccessDenied,
        format!(
            "{} is not authorized to perform {} on resource {resource}: {why}",
            caller.principal(),
            action.name()
        ),
    )
}

impl Service {
    /// Whether `caller` may do `action` on the key whose access is
    /// `access` (a cached key's, or one read for the control plane).
    /// AccessDeniedException if not.
    pub(crate) fn authorize(
        &self,
        caller: &Identity,
        access: &KeyAccess,
        action: Action,
        ask: &Ask<'_>,
    ) -> Result<(), KmsError> {
        if self.access.options.bypass {
            return Ok(());
        }
        let decision = decisions::decide(access.generation, caller, action, ask, || {
            access.decide(caller, action, ask)
        });
        crate::audit::note::decision(
            match decision {
                Decision::Allow => crate::audit::note::Decision::Allow,
                Decision::ExplicitDeny => crate::audit::note::Decision::ExplicitDeny,
                _ => crate::audit::note::Decision::ImplicitDeny,
            },
            Some(access.id),
        );
        if decision.is_allowed() {
            Ok(())
        } else {
            Err(denied(caller, action, &access.arn, decision))
        }
    }

    #[cfg(feature = "internals")]
    /// The data path's check on a loaded key, for the benches.
    pub fn authorize_loaded(
        &self,
        caller: &Identity,
        key: &super::LoadedKey,
        action: Action,
        ask: &Ask<'_>,
    ) -> Result<(), KmsError> {
        self.authorize(caller, key.access(), action, ask)
    }

    #[cfg(feature = "internals")]
    /// PutKeyPolicy's service side, for the benches.
    pub fn set_key_policy(
        &self,
        caller: &Identity,
        id: &[u8; 16],
        text: &str,
    ) -> Result<(), KmsError> {
        self.put_key_policy(caller, id, text, true)
    }

    /// Whether `caller` may do `action` on key `id`, off the I/O threads
    /// (the control plane): decided on the cached key's access if it is
    /// cached and unchanged, else on its policy and grants as stored.
    /// NotFoundException if there is no such key.
    pub(crate) fn authorize_id(
        &self,
        caller: &Identity,
        id: &[u8; 16],
        action: Action,
        ask: &Ask<'_>,
    ) -> Result<(), KmsError> {
        if self.access.options.bypass {
            return Ok(());
        }
        if let Some(k) = self.core.cache.get(id).filter(|k| self.is_fresh(k)) {
            return self.authorize(caller, k.access(), action, ask);
        }
        let access = self.read_access(id)?;
        self.authorize(caller, &access, action, ask)
    }

    /// A key's access as stored now (the control plane).
    pub(crate) fn read_access(&self, id: &[u8; 16]) -> Result<KeyAccess, KmsError> {
        let (policy, grants, aliases) = {
            let store = self.store();
            if store
                .get_key(id)
                .map_err(|e| crate::errors::store("reading key", e))?
                .is_none()
            {
                return Err(if store.was_deleted(id).unwrap_or(false) {
                    crate::errors::key_deleted(id)
                } else {
                    crate::errors::key_not_found(id)
                });
            }
            let policy = store
                .key_policy(id)
                .map_err(|e| crate::errors::store("reading key policy", e))?;
            let grants = store
                .grants_of(id)
                .map_err(|e| crate::errors::store("reading grants", e))?;
            let aliases = store
                .alias_names_of(id)
                .map_err(|e| crate::errors::store("reading aliases", e))?;
            (policy, grants, aliases)
        };
        KeyAccess::compile(
            self.arns(),
            id,
            policy.as_ref().unwrap_or(&self.core.administrators),
            &grants,
            aliases,
        )
    }

    /// Whether `caller` may do an account-wide `action` (CreateKey,
    /// ListKeys, ListAliases): CreateKey is the key creators' and the
    /// administrators', the others the administrators' and the key
    /// creators'.
    pub(crate) fn authorize_account(
        &self,
        caller: &Identity,
        action: Action,
    ) -> Result<(), KmsError> {
        if self.access.options.bypass {
            return Ok(());
        }
        let req = Request::new(caller.caller(), action, ACCOUNT_RESOURCE);
        let allowed = self.access.admins.evaluate(&req).is_allowed()
            || self
                .access
                .creators
                .evaluate(&Request::new(caller.caller(), Action::CreateKey, ACCOUNT_RESOURCE))
                .is_allowed();
        crate::audit::note::decision(
            if allowed {
                crate::audit::note::Decision::AccountAllow
            } else {
                crate::audit::note::Decision::ImplicitDeny
            },
            None,
        );
        if allowed {
            Ok(())
        } else {
            Err(denied(caller, action, "*", Decision::ImplicitDeny))
        }
    }

    /// Fails with AccessDeniedException unless `caller` is one of the
    /// administrators (`access.administrators` and the daemon's own uid):
    /// kmsd's own operator operations (`Authz::Administrators`), which no
    /// key policy names. `name` is the operation's action, for the error.
    pub(crate) fn authorize_administrator(
        &self,
        caller: &Identity,
        name: &str,
    ) -> Result<(), KmsError> {
        if self.access.options.bypass {
            return Ok(());
        }
        // The administrators' policy allows `kms:*`: any action asks it.
        let req = Request::new(caller.caller(), Action::ListKeys, ACCOUNT_RESOURCE);
        if self.access.admins.evaluate(&req).is_allowed() {
            crate::audit::note::decision(crate::audit::note::Decision::AccountAllow, None);
            return Ok(());
        }
        crate::audit::note::decision(crate::audit::note::Decision::ImplicitDeny, None);
        Err(KmsError::new(
            kms_proto::ErrorKind::AccessDenied,
            format!(
                "{} is not authorized to perform {name}: it is for the administrators (access.administrators)",
                caller.principal()
            ),
        ))
    }

    /// The policy a new key gets: `given` (see [`Service::accept_policy`]),
    /// or the default policy: the administrators', and the use of the key
    /// for its creator (`caller`).
    pub(crate) fn new_key_policy(
        &self,
        caller: &Identity,
        key_id: &[u8; 16],
        given: Option<&str>,
        bypass: bool,
    ) -> Result<StoredPolicy, KmsError> {
        match given {
            Some(text) => self.accept_policy(caller, key_id, text, bypass),
            None => default_policy(&self.access, Some(caller.uid))
                .map_err(|e| super::internal("making the default key policy", e)),
        }
    }

    /// A policy document for key `key_id`, checked as AWS does
    /// (MalformedPolicyDocumentException with the reason): within the
    /// limits, every statement and principal valid, `user:`/`group:` names
    /// resolved now (and kept), and unless `bypass`, the lockout safety
    /// check: the policy must let `caller` change it again.
    pub(crate) fn accept_policy(
        &self,
        caller: &Identity,
        key_id: &[u8; 16],
        text: &str,
        bypass: bool,
    ) -> Result<StoredPolicy, KmsError> {
        let recording = names::Recording::new(&names::SystemNames);
        let compiled = Policy::parse(text, &recording).map_err(|e| malformed(e.to_string()))?;
        // A policy may name a key ARN of any partition, region and account
        // (matched by key id, so that a stored policy keeps naming its keys
        // after `[aws]` changes); a policy given now names this kmsd's, in
        // its form or the legacy one: another is a mistake, refused as the
        // policy crate refuses other resources it cannot match.
        let arns = self.arns();
        if let Some(other) = compiled.key_arns().find(|a| !arns.is_own_key_arn(a)) {
            return Err(malformed(format!(
                "Resource {} is not a key ARN of this kmsd (its key ARNs are {}<key id>)",
                super::key_id::shown(other),
                arns.key_arn_prefix()
            )));
        }
        if !bypass
            && !compiled.allows_subsequent_put_key_policy(&caller.caller(), &arns.key_arn(key_id))
        {
            // AWS's message.
            return Err(malformed(
                "The new key policy will not allow you to update the key policy in the future."
                    .into(),
            ));
        }
        Ok(StoredPolicy {
            text: text.to_owned(),
            names: recording.into_json(),
        })
    }
}
#[cfg(test)]
mod tests;
