//! Grants: CreateGrant, ListGrants, ListRetirableGrants, RetireGrant and
//! RevokeGrant as the service does them. A grant allows its grantee the
//! operations it lists on its one key (within its constraint); it never
//! denies. Each change commits, then invalidates the key (its cached
//! access and every decision made on it), then answers: a grant works
//! from the very next request after CreateGrant is answered, and stops
//! for the very next request after RetireGrant or RevokeGrant is.
//!
//! Grant ids are 64 hex digits (as AWS's); grant tokens are kmsd's own
//! (`GrantToken`): the grant id and 16 random bytes, base64, so every
//! CreateGrant answers a different token for the same grant, as AWS does.
//! They are not secrets and confer nothing (kmsd is consistent at once:
//! there is no delay for a token to bridge); requests that carry them
//! have them checked for form (InvalidGrantTokenException), and
//! RetireGrant takes one to name the grant.

use super::{Ask, KeyAccess, Service};
use crate::crypto::rng;
use crate::errors;
use crate::identity::Identity;
use crate::keystore::access::{self as rows, GrantRow};
use crate::keystore::annotations;
use crate::service::{lifecycle, Arns};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use kms_policy::{Action, CompiledGrant, Decision, GrantSpec, NameResolver, NoNames};
use kms_proto::{ErrorKind, KmsError};

/// Grants of one key (AWS: 50,000).
pub const MAX_GRANTS_PER_KEY: u64 = 50_000;

/// Grant tokens one request may carry (AWS's GrantTokenList: 10).
pub const MAX_GRANT_TOKENS: usize = 10;

/// The longest grant token (AWS: 8,192 characters).
pub const MAX_GRANT_TOKEN_LEN: usize = 8192;

const TOKEN_VERSION: u8 = 1;

/// A grant's token: its id and a nonce, base64.
pub fn grant_token(grant_id: &str) -> String {
    let mut bytes = vec![TOKEN_VERSION];
    bytes.extend(decode_grant_id(grant_id).expect("a stored grant id is 64 hex digits"));
    let mut nonce = [0u8; 16];
    rng::fill(&mut nonce);
    bytes.extend(nonce);
    B64.encode(bytes)
}

/// The grant id a token names; InvalidGrantTokenException if it is not a
/// token kmsd made.
pub fn token_grant_id(token: &str) -> Result<String, KmsError> {
    let bad = || {
        KmsError::new(
            ErrorKind::InvalidGrantToken,
            "the grant token is not one CreateGrant returned",
        )
    };
    if token.is_empty() || token.len() > MAX_GRANT_TOKEN_LEN {
        return Err(bad());
    }
    let bytes = B64.decode(token).map_err(|_| bad())?;
    if bytes.len() != 1 + 32 + 16 || bytes[0] != TOKEN_VERSION {
        return Err(bad());
    }
    Ok(hex(&bytes[1..33]))
}

/// Checks the form of a request's GrantTokens (at most 10, each one kmsd
/// made); they confer nothing (see the module's documentation).
pub fn check_grant_tokens(tokens: &[&str]) -> Result<(), KmsError> {
    if tokens.len() > MAX_GRANT_TOKENS {
        return Err(KmsError::validation(format!(
            "GrantTokens: {} tokens, more than {MAX_GRANT_TOKENS}",
            tokens.len()
        )));
    }
    tokens.iter().try_for_each(|t| token_grant_id(t).map(drop))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_grant_id(id: &str) -> Option<Vec<u8>> {
    if id.len() != 64 || !id.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)) {
        return None;
    }
    (0..32)
        .map(|i| u8::from_str_radix(&id[2 * i..2 * i + 2], 16).ok())
        .collect()
}

/// A grant id as a client gave it: InvalidGrantIdException unless it is
/// one kmsd makes (64 lower-case hex digits).
pub fn check_grant_id(id: &str) -> Result<(), KmsError> {
    decode_grant_id(id).map(drop).ok_or_else(|| {
        KmsError::new(
            ErrorKind::InvalidGrantId,
            format!(
                "GrantId {:?} is not a grant id (64 hex digits)",
                id.chars().take(80).collect::<String>()
            ),
        )
    })
}

/// DryRunOperationException: the request would have succeeded.
pub fn dry_run_ok() -> KmsError {
    KmsError::new(
        ErrorKind::DryRunOperation,
        "The request would have succeeded, but the DryRun flag is set.",
    )
}

/// A stored grant's constraint, as pairs.
#[derive(serde::Serialize, serde::Deserialize, Default)]
struct StoredConstraint {
    #[serde(rename = "EncryptionContextEquals", skip_serializing_if = "Option::is_none")]
    equals: Option<Vec<(String, String)>>,
    #[serde(rename = "EncryptionContextSubset", skip_serializing_if = "Option::is_none")]
    subset: Option<Vec<(String, String)>>,
}

/// What a grant row holds, parsed: its operations and constraint.
pub struct GrantParts {
    /// Operation names.
    pub operations: Vec<String>,
    /// EncryptionContextEquals pairs.
    pub equals: Option<Vec<(String, String)>>,
    /// EncryptionContextSubset pairs.
    pub subset: Option<Vec<(String, String)>>,
}

impl GrantParts {
    /// The parts of `row`.
    pub fn of(row: &GrantRow) -> Result<GrantParts, KmsError> {
        let c: StoredConstraint = match &row.constraints {
            Some(json) => serde_json::from_str(json)
                .map_err(|e| crate::service::internal("reading a grant's constraint", e))?,
            None => StoredConstraint::default(),
        };
        Ok(GrantParts {
            operations: row.operations.clone(),
            equals: c.equals,
            subset: c.subset,
        })
    }
}

fn pairs(v: &Option<Vec<(String, String)>>) -> Option<Vec<(&str, &str)>> {
    v.as_ref()
        .map(|v| v.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect())
}

/// Compiles a stored grant (its principals are stored resolved, as
/// numbers: no names to look up).
pub(crate) fn compile_row(row: &GrantRow) -> Result<CompiledGrant, KmsError> {
    let parts = GrantParts::of(row)?;
    let ops: Vec<&str> = parts.operations.iter().map(String::as_str).collect();
    let (eq, sub) = (pairs(&parts.equals), pairs(&parts.subset));
    let spec = GrantSpec {
        grantee_principal: &row.grantee,
        retiring_principal: row.retiring.as_deref(),
        operations: &ops,
        encryption_context_equals: eq.as_deref(),
        encryption_context_subset: sub.as_deref(),
        name: row.name.as_deref(),
    };
    CompiledGrant::compile(&spec, &NoNames)
        .map_err(|e| crate::service::internal("loading a grant", e.reason()))
}

/// A principal as stored: `user:NAME` resolved to `uid:N` (the user
/// database may change; the grant keeps meaning whom it meant).
fn stored_principal(text: &str, resolver: &dyn NameResolver) -> String {
    match text.strip_prefix("user:").and_then(|n| resolver.user(n)) {
        Some(uid) => format!("uid:{uid}"),
        None => text.to_owned(),
    }
}

/// What CreateGrant asks, owned where the row needs it.
pub struct NewGrant<'a> {
    /// The request's parameters.
    pub spec: GrantSpec<'a>,
    /// DryRun.
    pub dry_run: bool,
}

impl KeyAccess {
    /// The grants' answer to `req`: whether one allows it.
    pub(super) fn grants_allow(&self, req: &kms_policy::Request<'_>) -> bool {
        self.grants.iter().any(|g| g.allows(req))
    }
}

impl Service {
    /// CreateGrant on key `id`: validated (ValidationException naming the
    /// parameter), authorized (the key policy's `kms:CreateGrant`, with
    /// `kms:GrantOperations` and the grant's constraint as its context; or
    /// a grant of the caller's that allows CreateGrant and whose
    /// constraint the new grant is at least as strict as), the key's state
    /// checked, then, unless a grant of the same Name and parameters
    /// exists (AWS: the retry gets the original grant), stored,
    /// the key invalidated, and answered with the grant's id and a token.
    pub(crate) fn create_grant(
        &self,
        caller: &Identity,
        id: &[u8; 16],
        new: &NewGrant<'_>,
    ) -> Result<(String, String), KmsError> {
        let resolver = super::names::SystemNames;
        let compiled = CompiledGrant::compile(&new.spec, &resolver)
            .map_err(|e| KmsError::validation(e.reason().to_owned()))?;
        let arn = self.arns().key_arn(id);
        let access = self.read_access(id)?;
        if !self.access.options.bypass {
            let req = new.spec.policy_request(caller.caller(), &arn);
            let decision = match access.policy.evaluate(&req) {
                Decision::ImplicitDeny
                    if access
                        .grants
                        .iter()
                        .any(|g| g.allows(&req) && g.permits_child(&compiled)) =>
                {
                    Decision::Allow
                }
                d => d,
            };
            if !decision.is_allowed() {
                return Err(super::denied(caller, Action::CreateGrant, &arn, decision));
            }
        }
        let grantee = stored_principal(new.spec.grantee_principal, &resolver);
        let retiring = new
            .spec
            .retiring_principal
            .map(|r| stored_principal(r, &resolver));
        let constraints = match (new.spec.encryption_context_equals, new.spec.encryption_context_subset) {
            (None, None) => None,
            (e, s) => Some(
                serde_json::to_string(&StoredConstraint {
                    equals: e.map(|p| p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
                    subset: s.map(|p| p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
                })
                .expect("pairs serialize"),
            ),
        };
        let mut grant_id = [0u8; 32];
        rng::fill(&mut grant_id);
        let row = GrantRow {
            grant_id: hex(&grant_id),
            key_id: *id,
            name: new.spec.name.map(str::to_owned),
            grantee,
            retiring,
            operations: compiled.operations().iter().map(|o| o.name().to_owned()).collect(),
            constraints,
            issuing: format!("uid:{}", caller.uid),
            created_at: self.now(),
        };
        let dry_run = new.dry_run;
        let granted = self
            .store()
            .in_transaction(|tx| {
                let key = annotations::key(tx, id)?.ok_or_else(|| errors::key_not_found(id))?;
                lifecycle::check(lifecycle::Use::Grant, id, key.state)?;
                if dry_run {
                    return Err(dry_run_ok().into());
                }
                if let Some(name) = &row.name {
                    // AWS: a retry with the same Name and parameters gets the
                    // original grant (compared as stored: names resolved).
                    let new = compile_row(&row)?;
                    for old in rows::read_grants(tx, id)? {
                        if old.name.as_ref() == Some(name)
                            && compile_row(&old)?.same_parameters(&new)
                        {
                            return Ok((old.grant_id, false));
                        }
                    }
                }
                if rows::count_grants(tx, id)? >= MAX_GRANTS_PER_KEY {
                    return Err(KmsError::new(
                        ErrorKind::LimitExceeded,
                        format!(
                            "key {} has {MAX_GRANTS_PER_KEY} grants, the most a key may have",
                            crate::service::format_key_id(id)
                        ),
                    )
                    .into());
                }
                rows::insert_grant(tx, &row)?;
                Ok((row.grant_id.clone(), true))
            })
            .map_err(|e| e.into_client("creating a grant"))?;
        let (grant_id, created) = granted;
        if created {
            self.invalidate(id);
            tracing::info!(
                key_id = %crate::service::format_key_id(id),
                grant_id = %grant_id,
                grantee = %row.grantee,
                caller = %caller.principal(),
                "grant created"
            );
        }
        let token = grant_token(&grant_id);
        Ok((grant_id, token))
    }

    /// RevokeGrant (authorized by the key policy's `kms:RevokeGrant`
    /// before this is called): NotFoundException if the key has no such
    /// grant.
    pub(crate) fn revoke_grant(
        &self,
        id: &[u8; 16],
        grant_id: &str,
        dry_run: bool,
    ) -> Result<(), KmsError> {
        check_grant_id(grant_id)?;
        self.delete_grant(id, grant_id, dry_run, "revoked")
    }

    /// RetireGrant, naming the grant by token or by key and id: allowed to
    /// the grant's retiring principal, to its grantee if it allows
    /// RetireGrant, and to whoever the key policy allows
    /// `kms:RetireGrant`.
    pub(crate) fn retire_grant(
        &self,
        caller: &Identity,
        token: Option<&str>,
        key_and_id: Option<([u8; 16], &str)>,
        dry_run: bool,
    ) -> Result<(), KmsError> {
        let grant_id = match (token, key_and_id) {
            (Some(t), given) => {
                let gid = token_grant_id(t)?;
                if given.is_some_and(|(_, g)| g != gid) {
                    return Err(KmsError::validation(
                        "GrantToken names another grant than KeyId and GrantId",
                    ));
                }
                gid
            }
            (None, Some((_, gid))) => {
                check_grant_id(gid)?;
                gid.to_owned()
            }
            (None, None) => {
                return Err(KmsError::validation(
                    "RetireGrant needs GrantToken, or KeyId and GrantId",
                ))
            }
        };
        let row = self
            .store()
            .grant(&grant_id)
            .map_err(|e| errors::store("reading a grant", e))?
            .ok_or_else(|| grant_not_found(&grant_id))?;
        if let Some((k, _)) = key_and_id {
            if k != row.key_id {
                return Err(if token.is_some() {
                    KmsError::validation("GrantToken names another grant than KeyId and GrantId")
                } else {
                    grant_not_found(&grant_id)
                });
            }
        }
        let key = row.key_id;
        let access = self.read_access(&key)?;
        let grant = compile_row(&row)?;
        let who = caller.caller();
        let by_grant = grant.is_retiring_principal(&who)
            || (grant.is_grantee(&who)
                && grant
                    .operations()
                    .contains(kms_policy::GrantOperation::RetireGrant));
        if !by_grant {
            self.authorize(caller, &access, Action::RetireGrant, &Ask::default())?;
        }
        self.delete_grant(&key, &grant_id, dry_run, "retired")
    }

    fn delete_grant(
        &self,
        id: &[u8; 16],
        grant_id: &str,
        dry_run: bool,
        how: &str,
    ) -> Result<(), KmsError> {
        self.store()
            .in_transaction(|tx| {
                annotations::key(tx, id)?.ok_or_else(|| errors::key_not_found(id))?;
                if rows::read_grant(tx, grant_id)?.is_none_or(|g| g.key_id != *id) {
                    return Err(grant_not_found(grant_id).into());
                }
                if dry_run {
                    return Err(dry_run_ok().into());
                }
                rows::delete_grant(tx, id, grant_id)?;
                Ok(())
            })
            .map_err(|e| e.into_client("removing a grant"))?;
        self.invalidate(id);
        tracing::info!(
            key_id = %crate::service::format_key_id(id),
            grant_id,
            "grant {how}"
        );
        Ok(())
    }
}

/// NotFoundException for a grant.
pub fn grant_not_found(grant_id: &str) -> KmsError {
    KmsError::new(
        ErrorKind::NotFound,
        format!("grant {grant_id} does not exist"),
    )
}

/// A grant as ListGrants and ListRetirableGrants answer it.
pub(crate) fn grant_entry(arns: &Arns, row: &GrantRow) -> Result<kms_proto::GrantListEntry, KmsError> {
    let parts = GrantParts::of(row)?;
    let operations = parts
        .operations
        .iter()
        .map(|o| {
            kms_proto::GrantOperation::from_name(o)
                .ok_or_else(|| crate::service::internal("reading a grant", format!("operation {o:?}")))
        })
        .collect::<Result<_, _>>()?;
    let constraints = (parts.equals.is_some() || parts.subset.is_some()).then(|| {
        kms_proto::OwnedGrantConstraints {
            encryption_context_subset: parts.subset.unwrap_or_default(),
            encryption_context_equals: parts.equals.unwrap_or_default(),
        }
    });
    Ok(kms_proto::GrantListEntry {
        key_id: arns.key_arn(&row.key_id),
        grant_id: row.grant_id.clone(),
        name: row.name.clone(),
        creation_date: row.created_at,
        grantee_principal: row.grantee.clone(),
        retiring_principal: row.retiring.clone(),
        issuing_account: row.issuing.clone(),
        operations,
        constraints,
    })
}

/// A principal a client names in a filter or ListRetirableGrants, in the
/// form grants store it (`user:NAME` as `uid:N`); ValidationException if
/// it is not a grant principal.
pub(crate) fn principal_as_stored(text: &str, field: &str) -> Result<(String, CompiledGrant), KmsError> {
    let resolver = super::names::SystemNames;
    let probe = CompiledGrant::compile(
        &GrantSpec {
            grantee_principal: text,
            operations: &["Decrypt"],
            ..GrantSpec::default()
        },
        &resolver,
    )
    .map_err(|e| KmsError::validation(format!("{field}: {}", e.reason().replace("GranteePrincipal", field))))?;
    Ok((stored_principal(text, &resolver), probe))
}

/// ListGrants' and ListRetirableGrants' page size: 1..=100, 0 for 50.
pub(crate) fn page_limit(limit: u32) -> Result<u32, KmsError> {
    use kms_proto::types::limits::{DEFAULT_LIST_GRANTS_LIMIT, MAX_LIST_GRANTS_LIMIT};
    match limit {
        0 => Ok(DEFAULT_LIST_GRANTS_LIMIT),
        n if n <= MAX_LIST_GRANTS_LIMIT => Ok(n),
        n => Err(KmsError::validation(format!(
            "Limit {n} is out of range 1..={MAX_LIST_GRANTS_LIMIT}"
        ))),
    }
}
