//! Grants: AWS's other way to allow the use of a key. A grant names one
//! grantee principal, the operations it may call, an optional retiring
//! principal and an optional encryption context constraint; it can only
//! allow, never deny.
//!
//! This module is the pure half: [`CompiledGrant::compile`] validates what
//! a CreateGrant request asks for ([`GrantSpec`]) with AWS's rules, and a
//! compiled grant answers, without allocating, whether it allows a
//! [`Request`] ([`CompiledGrant::allows`]), whether a grant created
//! through it is allowed ([`CompiledGrant::permits_child`]) and whether a
//! CreateGrant with a `Name` is a retry of it
//! ([`CompiledGrant::same_parameters`]). Storing grants, grant ids and
//! tokens, and RetireGrant/RevokeGrant are the daemon's.
//!
//! The AWS texts each rule follows are quoted where the rule is
//! implemented and in docs/policy.md ("Grants").

use std::fmt;

use crate::action::Action;
use crate::condition::{eq_folded, fold};
use crate::error::{shown, GrantError, GrantErrorKind};
use crate::principal::{NameResolver, Principal};
use crate::request::{Caller, Request};

macro_rules! grant_operations {
    ($($variant:ident),* $(,)?) => {
        /// An operation a grant can allow: AWS's `GrantOperation` enum
        /// (botocore's KMS model, in its order).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        #[allow(missing_docs)] // Each variant is the AWS operation of that name.
        pub enum GrantOperation {
            $($variant),*
        }

        impl GrantOperation {
            /// Every grant operation AWS defines, in its order.
            pub const ALL: [GrantOperation; GrantOperation::COUNT] = [$(GrantOperation::$variant),*];

            /// AWS's name of the operation, e.g. `Decrypt` (no `kms:`
            /// prefix: the wire's `Operations` and `kms:GrantOperations`
            /// use these).
            pub const fn name(self) -> &'static str {
                match self {
                    $(GrantOperation::$variant => stringify!($variant)),*
                }
            }
        }
    };
}

grant_operations! {
    Decrypt,
    Encrypt,
    GenerateDataKey,
    GenerateDataKeyWithoutPlaintext,
    ReEncryptFrom,
    ReEncryptTo,
    Sign,
    Verify,
    GetPublicKey,
    CreateGrant,
    RetireGrant,
    DescribeKey,
    GenerateDataKeyPair,
    GenerateDataKeyPairWithoutPlaintext,
    GenerateMac,
    VerifyMac,
    DeriveSharedSecret,
}

impl GrantOperation {
    /// How many grant operations AWS defines.
    pub const COUNT: usize = 17;

    /// The operation named exactly `name` (AWS's enum values are matched
    /// as written: `decrypt` is not one).
    pub fn from_name(name: &str) -> Option<GrantOperation> {
        GrantOperation::ALL.into_iter().find(|o| o.name() == name)
    }

    /// Whether kmsd's keys (symmetric encryption keys) support the
    /// operation: the six cryptographic operations with an encryption
    /// context, `CreateGrant`, `RetireGrant` and `DescribeKey`. The others
    /// are for asymmetric, HMAC or key agreement keys, or (the data key
    /// pairs) operations kmsd does not serve.
    pub const fn supported_by_symmetric_key(self) -> bool {
        GrantOperationSet::SYMMETRIC_KEY.contains(self)
    }

    /// Whether the operation takes an `EncryptionContext` (AWS: "The
    /// encryption context grant constraints are supported only on grant
    /// operations that include an EncryptionContext parameter"). For
    /// ReEncryptFrom it is the source context, for ReEncryptTo the
    /// destination's.
    pub const fn takes_encryption_context(self) -> bool {
        matches!(
            self,
            GrantOperation::Decrypt
                | GrantOperation::Encrypt
                | GrantOperation::GenerateDataKey
                | GrantOperation::GenerateDataKeyWithoutPlaintext
                | GrantOperation::ReEncryptFrom
                | GrantOperation::ReEncryptTo
                | GrantOperation::GenerateDataKeyPair
                | GrantOperation::GenerateDataKeyPairWithoutPlaintext
        )
    }

    /// The policy action of the same operation (`ReEncryptFrom` is
    /// `kms:ReEncryptFrom`), or `None` for an operation kmsd does not
    /// serve.
    pub const fn action(self) -> Option<Action> {
        Some(match self {
            GrantOperation::Decrypt => Action::Decrypt,
            GrantOperation::Encrypt => Action::Encrypt,
            GrantOperation::GenerateDataKey => Action::GenerateDataKey,
            GrantOperation::GenerateDataKeyWithoutPlaintext => {
                Action::GenerateDataKeyWithoutPlaintext
            }
            GrantOperation::ReEncryptFrom => Action::ReEncryptFrom,
            GrantOperation::ReEncryptTo => Action::ReEncryptTo,
            GrantOperation::CreateGrant => Action::CreateGrant,
            GrantOperation::RetireGrant => Action::RetireGrant,
            GrantOperation::DescribeKey => Action::DescribeKey,
            GrantOperation::Sign
            | GrantOperation::Verify
            | GrantOperation::GetPublicKey
            | GrantOperation::GenerateDataKeyPair
            | GrantOperation::GenerateDataKeyPairWithoutPlaintext
            | GrantOperation::GenerateMac
            | GrantOperation::VerifyMac
            | GrantOperation::DeriveSharedSecret => return None,
        })
    }

    /// The grant operation a policy action is, if a grant can allow it.
    pub const fn from_action(action: Action) -> Option<GrantOperation> {
        Some(match action {
            Action::Decrypt => GrantOperation::Decrypt,
            Action::Encrypt => GrantOperation::Encrypt,
            Action::GenerateDataKey => GrantOperation::GenerateDataKey,
            Action::GenerateDataKeyWithoutPlaintext => {
                GrantOperation::GenerateDataKeyWithoutPlaintext
            }
            Action::ReEncryptFrom => GrantOperation::ReEncryptFrom,
            Action::ReEncryptTo => GrantOperation::ReEncryptTo,
            Action::CreateGrant => GrantOperation::CreateGrant,
            Action::RetireGrant => GrantOperation::RetireGrant,
            Action::DescribeKey => GrantOperation::DescribeKey,
            _ => return None,
        })
    }

    const fn bit(self) -> u32 {
        1 << (self as u8)
    }
}

// The set is a u32 bitmask.
const _: () = assert!(GrantOperation::ALL.len() <= 32);

impl fmt::Display for GrantOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of grant operations, one bit each.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct GrantOperationSet(u32);

impl GrantOperationSet {
    /// No operation.
    pub const EMPTY: GrantOperationSet = GrantOperationSet(0);

    /// What a grant for one of kmsd's symmetric encryption keys may allow:
    /// Decrypt, Encrypt, GenerateDataKey, GenerateDataKeyWithoutPlaintext,
    /// ReEncryptFrom, ReEncryptTo, CreateGrant, RetireGrant, DescribeKey.
    pub const SYMMETRIC_KEY: GrantOperationSet = GrantOperationSet::of(&[
        GrantOperation::Decrypt,
        GrantOperation::Encrypt,
        GrantOperation::GenerateDataKey,
        GrantOperation::GenerateDataKeyWithoutPlaintext,
        GrantOperation::ReEncryptFrom,
        GrantOperation::ReEncryptTo,
        GrantOperation::CreateGrant,
        GrantOperation::RetireGrant,
        GrantOperation::DescribeKey,
    ]);

    /// The set of `ops` (duplicates collapse).
    pub const fn of(ops: &[GrantOperation]) -> GrantOperationSet {
        let mut bits = 0;
        let mut i = 0;
        while i < ops.len() {
            bits |= ops[i].bit();
            i += 1;
        }
        GrantOperationSet(bits)
    }

    /// This set and `op`.
    pub const fn with(self, op: GrantOperation) -> GrantOperationSet {
        GrantOperationSet(self.0 | op.bit())
    }

    /// Whether `op` is in the set.
    pub const fn contains(self, op: GrantOperation) -> bool {
        self.0 & op.bit() != 0
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// How many operations the set has.
    pub const fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// Whether every operation of this set is in `other`.
    pub const fn is_subset(self, other: GrantOperationSet) -> bool {
        self.0 & !other.0 == 0
    }

    /// Whether some operation of the set takes an encryption context.
    pub const fn takes_encryption_context(self) -> bool {
        let mut i = 0;
        while i < GrantOperation::COUNT {
            let op = GrantOperation::ALL[i];
            if self.contains(op) && op.takes_encryption_context() {
                return true;
            }
            i += 1;
        }
        false
    }

    /// The operations, in AWS's order.
    pub fn iter(self) -> impl Iterator<Item = GrantOperation> {
        GrantOperation::ALL
            .into_iter()
            .filter(move |o| self.contains(*o))
    }

    /// The operations' names, written into `buf` without allocating: what
    /// [`Request::grant_operations`] (`kms:GrantOperations`) takes.
    pub fn names<'b>(
        self,
        buf: &'b mut [&'static str; GrantOperation::COUNT],
    ) -> &'b [&'static str] {
        let mut n = 0;
        for op in self.iter() {
            buf[n] = op.name();
            n += 1;
        }
        &buf[..n]
    }
}

impl FromIterator<GrantOperation> for GrantOperationSet {
    fn from_iter<I: IntoIterator<Item = GrantOperation>>(iter: I) -> Self {
        iter.into_iter().fold(GrantOperationSet::EMPTY, Self::with)
    }
}

impl fmt::Debug for GrantOperationSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// The type of a grant's encryption context constraint
/// (`kms:GrantConstraintType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GrantConstraintType {
    /// `EncryptionContextEquals`: the request's context must be exactly
    /// the constraint's pairs.
    EncryptionContextEquals,
    /// `EncryptionContextSubset`: the request's context must include the
    /// constraint's pairs, and may have more.
    EncryptionContextSubset,
}

impl GrantConstraintType {
    /// AWS's name: `EncryptionContextEquals` or `EncryptionContextSubset`.
    pub const fn name(self) -> &'static str {
        match self {
            GrantConstraintType::EncryptionContextEquals => "EncryptionContextEquals",
            GrantConstraintType::EncryptionContextSubset => "EncryptionContextSubset",
        }
    }
}

/// The most pairs in a grant constraint: kmsd's limit for an encryption
/// context (`kms_proto::types::limits::MAX_CONTEXT_ENTRIES`), since a
/// constraint must match a request's context. AWS documents a tighter one
/// ("Each constraint value can include up to 8 encryption context pairs").
pub const MAX_CONSTRAINT_PAIRS: usize = 64;

/// The largest grant constraint, counted as the canonical encoding of an
/// encryption context counts it (each pair: 4 bytes of lengths, the key,
/// the value): kmsd's context limit
/// (`kms_proto::types::limits::MAX_CONTEXT_BYTES`). AWS documents a limit
/// per value instead ("The encryption context value in each constraint
/// cannot exceed 384 characters").
pub const MAX_CONSTRAINT_BYTES: usize = 8192;

/// The longest `GranteePrincipal`, `RetiringPrincipal` and `Name`, in
/// characters (botocore's `PrincipalIdType` and `GrantNameType`: max 256).
const MAX_PARAMETER_CHARS: usize = 256;

/// What a CreateGrant request asks for, borrowed from it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GrantSpec<'a> {
    /// `GranteePrincipal`: who may use the grant (`uid:N`, `user:NAME`,
    /// `unit:NAME.service` or `cgroup:PATH`).
    pub grantee_principal: &'a str,
    /// `RetiringPrincipal`: who may retire it, if anyone besides the
    /// grantee (when the grant allows RetireGrant) and the key's
    /// administrators.
    pub retiring_principal: Option<&'a str>,
    /// `Operations`, by AWS's names (`Decrypt`, ...).
    pub operations: &'a [&'a str],
    /// `Constraints.EncryptionContextEquals`.
    pub encryption_context_equals: Option<&'a [(&'a str, &'a str)]>,
    /// `Constraints.EncryptionContextSubset`.
    pub encryption_context_subset: Option<&'a [(&'a str, &'a str)]>,
    /// `Name`: makes retries idempotent (see
    /// [`CompiledGrant::same_parameters`]).
    pub name: Option<&'a str>,
}

impl<'a> GrantSpec<'a> {
    /// The request the key policy decides for this CreateGrant by
    /// `caller` on `key_arn`: `kms:CreateGrant` with `kms:GrantOperations`
    /// (the names as given), `kms:GranteePrincipal`,
    /// `kms:RetiringPrincipal` and `kms:GrantConstraintType` filled in, and
    /// the constraint's pairs as the encryption context
    /// (`kms:EncryptionContext:<key>`, `kms:EncryptionContextKeys`, which
    /// AWS lists for CreateGrant: the only context a CreateGrant carries
    /// is its constraint's). A spec with both constraints, which
    /// [`CompiledGrant::compile`] refuses, gets neither.
    pub fn policy_request(&self, caller: Caller<'a>, key_arn: &'a str) -> Request<'a> {
        let (constraint_type, context) = match (
            self.encryption_context_equals,
            self.encryption_context_subset,
        ) {
            (Some(pairs), None) => (Some(GrantConstraintType::EncryptionContextEquals), pairs),
            (None, Some(pairs)) => (Some(GrantConstraintType::EncryptionContextSubset), pairs),
            _ => (None, &[][..]),
        };
        Request {
            encryption_context: context,
            grant_operations: self.operations,
            grantee_principal: Some(self.grantee_principal),
            retiring_principal: self.retiring_principal,
            grant_constraint_type: constraint_type,
            ..Request::new(caller, Action::CreateGrant, key_arn)
        }
    }
}

/// One pair of a compiled constraint.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Pair {
    /// The key as given (ListGrants returns it; retries compare it).
    key: String,
    /// The key in Unicode lower case: what requests' keys are matched with.
    folded: String,
    value: String,
}

/// A compiled encryption context constraint.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Constraint {
    kind: GrantConstraintType,
    /// At least one pair, no two keys the same in any case, sorted by key.
    pairs: Vec<Pair>,
}

/// Whether request context key `key` is the constraint key `folded`
/// (already lower case), in any case, without allocating. Unicode lower
/// case as the `IgnoreCase` operators and `kms:EncryptionContext:<key>`
/// fold; an ASCII key takes the short path (an ASCII key folds to ASCII).
fn key_is(key: &str, folded: &str) -> bool {
    if key.is_ascii() {
        key.len() == folded.len() && key.eq_ignore_ascii_case(folded)
    } else {
        eq_folded(key, folded)
    }
}

impl Constraint {
    /// Whether a request's encryption context satisfies the constraint.
    ///
    /// AWS (`GrantConstraints`, botocore's KMS model): "in a grant
    /// constraint, the key in each key-value pair is not case sensitive,
    /// but the value is case sensitive"; `EncryptionContextEquals`: "The
    /// grant allows the operation only when the encryption context in the
    /// request is the same as the encryption context specified in this
    /// constraint"; `EncryptionContextSubset`: "only when the encryption
    /// context in the request includes the key-value pairs specified in
    /// this constraint, although it can include additional key-value
    /// pairs".
    ///
    /// Each constraint pair must be in the request: some request key is
    /// its key in any case, and every request pair with such a key has
    /// its value exactly (a request with `Team` and `team` satisfies the
    /// constraint only if both have the value: the stricter reading, as
    /// for `kms:EncryptionContext:<key>`). For Equals the request also has
    /// as many pairs as the constraint; since no two constraint keys are
    /// the same in any case, each request pair then matches exactly one
    /// constraint pair, so the two are the same set.
    fn holds(&self, context: &[(&str, &str)]) -> bool {
        if self.kind == GrantConstraintType::EncryptionContextEquals
            && context.len() != self.pairs.len()
        {
            return false;
        }
        self.pairs.iter().all(|p| {
            let mut found = false;
            for (k, v) in context {
                if key_is(k, &p.folded) {
                    if *v != p.value {
                        return false;
                    }
                    found = true;
                }
            }
            found
        })
    }

    /// Whether every pair of this constraint is in `other` (keys in any
    /// case, values exactly).
    fn pairs_within(&self, other: &Constraint) -> bool {
        self.pairs.iter().all(|p| {
            other
                .pairs
                .iter()
                .any(|q| q.folded == p.folded && q.value == p.value)
        })
    }
}

/// A validated grant: what a CreateGrant asked for, with its principals
/// resolved, ready to decide requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompiledGrant {
    grantee: Principal,
    grantee_text: String,
    retiring: Option<(Principal, String)>,
    operations: GrantOperationSet,
    constraint: Option<Constraint>,
    name: Option<String>,
}

fn malformed(reason: String) -> GrantError {
    GrantError::new(GrantErrorKind::Malformed, reason)
}

/// A text parameter against its shape: 1 to 256 characters, each one
/// `allowed`; `pattern` is the shape's pattern for the reason.
fn check_text(
    text: &str,
    field: &str,
    allowed: fn(char) -> bool,
    pattern: &str,
) -> Result<(), GrantError> {
    if text.is_empty() {
        return Err(malformed(format!("{field}: must not be empty")));
    }
    if text.chars().count() > MAX_PARAMETER_CHARS {
        return Err(malformed(format!(
            "{field}: {} is longer than {MAX_PARAMETER_CHARS} characters",
            shown(text)
        )));
    }
    if !text.chars().all(allowed) {
        return Err(malformed(format!(
            "{field}: {} has a character outside {pattern}",
            shown(text)
        )));
    }
    Ok(())
}

/// botocore's `PrincipalIdType` pattern, `^[\w+=,.@:/-]+$` (`\w` is
/// ASCII letters, digits and `_`).
fn principal_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '=' | ',' | '.' | '@' | ':' | '/' | '-')
}

/// botocore's `GrantNameType` pattern, `^[a-zA-Z0-9:/_-]+$`.
fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, ':' | '/' | '_' | '-')
}

const GRANT_PRINCIPALS: &str = "a grant names one user, service or cgroup \
     (uid:N, user:NAME, unit:NAME.service or cgroup:PATH)";

/// A grantee or retiring principal: AWS's shape, then a local principal
/// that is one identity. AWS: "Valid principals include Amazon Web
/// Services accounts, IAM users, IAM roles, federated users, and assumed
/// role users" (botocore, `CreateGrantRequest.GranteePrincipal`), which
/// leaves out groups: kmsd refuses `gid:`, `group:` and `*`.
fn grant_principal(
    text: &str,
    field: &str,
    resolver: &dyn NameResolver,
) -> Result<Principal, GrantError> {
    let invalid = |why: String| GrantError::new(GrantErrorKind::InvalidPrincipal, why);
    if text == "*" {
        return Err(invalid(format!(
            "{field}: \"*\" is everyone: {GRANT_PRINCIPALS}"
        )));
    }
    check_text(text, field, principal_char, "[A-Za-z0-9_+=,.@:/-]")?;
    if matches!(text.split_once(':'), Some(("gid" | "group", _))) {
        return Err(invalid(format!(
            "{field}: {} is a group, and a group cannot be a grant's principal: {GRANT_PRINCIPALS}",
            shown(text)
        )));
    }
    Principal::parse(text, field, resolver).map_err(|e| invalid(e.reason().to_owned()))
}

fn supported_list() -> String {
    let names: Vec<&str> = GrantOperationSet::SYMMETRIC_KEY
        .iter()
        .map(GrantOperation::name)
        .collect();
    names.join(", ")
}

fn operations(names: &[&str]) -> Result<GrantOperationSet, GrantError> {
    if names.is_empty() {
        return Err(malformed(format!(
            "Operations: lists no operation (kmsd's keys support {})",
            supported_list()
        )));
    }
    let mut set = GrantOperationSet::EMPTY;
    for (i, name) in names.iter().enumerate() {
        let op = GrantOperation::from_name(name).ok_or_else(|| {
            malformed(format!(
                "Operations[{i}]: {} is not a grant operation",
                shown(name)
            ))
        })?;
        if !op.supported_by_symmetric_key() {
            // AWS: "the operation must be supported on the KMS key. For
            // example, you cannot create a grant for a symmetric
            // encryption KMS key that allows the Sign operation ... If you
            // try, KMS returns a ValidationError exception" (botocore,
            // CreateGrantRequest.Operations).
            return Err(GrantError::new(
                GrantErrorKind::UnsupportedOperation,
                format!(
                    "Operations[{i}]: {op} is not supported by kmsd's symmetric encryption keys \
                     (they support {})",
                    supported_list()
                ),
            ));
        }
        set = set.with(op);
    }
    if set == GrantOperationSet::of(&[GrantOperation::CreateGrant]) {
        // KMS's own answer to such a request, as reported in
        // ansible/ansible#31960 (2019): "ValidationException ... Grants
        // must not contain only the CreateGrant operation."
        return Err(malformed(
            "Operations: Grants must not contain only the CreateGrant operation".into(),
        ));
    }
    Ok(set)
}

fn constraint(kind: GrantConstraintType, pairs: &[(&str, &str)]) -> Result<Constraint, GrantError> {
    let field = format!("Constraints.{}", kind.name());
    let invalid = |why: String| {
        GrantError::new(
            GrantErrorKind::InvalidConstraints,
            format!("{field}: {why}"),
        )
    };
    if pairs.is_empty() {
        // AWS does not say what an empty map means (and its SDKs have sent
        // empty ones by mistake, aws/aws-sdk-java#328): refused rather than
        // guessed.
        return Err(invalid("lists no encryption context pair".into()));
    }
    if pairs.len() > MAX_CONSTRAINT_PAIRS {
        return Err(invalid(format!(
            "has {} pairs, more than {MAX_CONSTRAINT_PAIRS}",
            pairs.len()
        )));
    }
    let bytes = pairs.iter().fold(0usize, |n, (k, v)| {
        n.saturating_add(4 + k.len()).saturating_add(v.len())
    });
    if bytes > MAX_CONSTRAINT_BYTES {
        return Err(invalid(format!(
            "is {bytes} bytes encoded, more than {MAX_CONSTRAINT_BYTES}"
        )));
    }
    let mut out: Vec<Pair> = Vec::with_capacity(pairs.len());
    for (k, v) in pairs {
        if k.is_empty() {
            return Err(invalid("has an empty key".into()));
        }
        let folded = fold(k);
        if let Some(other) = out.iter().find(|p| p.folded == folded) {
            // AWS: "To avoid confusion, do not use multiple encryption
            // context pairs that differ only by case" -- in a constraint
            // they would be the same key twice.
            return Err(invalid(format!(
                "keys {} and {} are the same key (constraint keys are not case-sensitive)",
                shown(&other.key),
                shown(k)
            )));
        }
        out.push(Pair {
            key: (*k).to_owned(),
            folded,
            value: (*v).to_owned(),
        });
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(Constraint { kind, pairs: out })
}

impl CompiledGrant {
    /// Validates a CreateGrant request with AWS's rules, naming the
    /// parameter in each refusal:
    ///
    /// - `GranteePrincipal` and `RetiringPrincipal`: 1 to 256 characters
    ///   of `[A-Za-z0-9_+=,.@:/-]` (botocore's `PrincipalIdType`), then a
    ///   local principal naming one identity: `uid:N`, `user:NAME`
    ///   (resolved to a uid now), `unit:NAME.service` or `cgroup:PATH`;
    ///   never `gid:`, `group:` or `*`;
    /// - `Operations`: at least one, each an AWS grant operation that
    ///   kmsd's symmetric keys support (duplicates collapse), and not
    ///   CreateGrant alone;
    /// - `Name`: 1 to 256 characters of `[a-zA-Z0-9:/_-]`
    ///   (`GrantNameType`);
    /// - `Constraints`: at most one of `EncryptionContextEquals` and
    ///   `EncryptionContextSubset`, with 1 to [`MAX_CONSTRAINT_PAIRS`]
    ///   pairs, at most [`MAX_CONSTRAINT_BYTES`], no empty key and no key
    ///   twice in any case; only on a grant with an operation that takes
    ///   an encryption context.
    ///
    /// # Errors
    ///
    /// A [`GrantError`] whose reason names the parameter; every kind is
    /// answered with `ValidationException`.
    pub fn compile(
        spec: &GrantSpec<'_>,
        resolver: &dyn NameResolver,
    ) -> Result<CompiledGrant, GrantError> {
        let grantee = grant_principal(spec.grantee_principal, "GranteePrincipal", resolver)?;
        let retiring = match spec.retiring_principal {
            Some(text) => Some((
                grant_principal(text, "RetiringPrincipal", resolver)?,
                text.to_owned(),
            )),
            None => None,
        };
        let operations = operations(spec.operations)?;
        if let Some(name) = spec.name {
            check_text(name, "Name", name_char, "[a-zA-Z0-9:/_-]")?;
        }
        let constraint = match (
            spec.encryption_context_equals,
            spec.encryption_context_subset,
        ) {
            (Some(_), Some(_)) => {
                // The API model lets both members be set, but KMS refuses
                // the request: "More than one constraint supplied
                // (Service: AWSKMS; Status Code: 400; Error Code:
                // ValidationException)" (aws/aws-sdk-java#328), and AWS's
                // kms:GrantConstraintType says "The grant constraint can be
                // one of two types".
                return Err(GrantError::new(
                    GrantErrorKind::InvalidConstraints,
                    "Constraints: More than one constraint supplied \
                     (EncryptionContextEquals and EncryptionContextSubset)",
                ));
            }
            (Some(pairs), None) => Some(constraint(
                GrantConstraintType::EncryptionContextEquals,
                pairs,
            )?),
            (None, Some(pairs)) => Some(constraint(
                GrantConstraintType::EncryptionContextSubset,
                pairs,
            )?),
            (None, None) => None,
        };
        if constraint.is_some() && !operations.takes_encryption_context() {
            // AWS: "The encryption context grant constraints are supported
            // only on grant operations that include an EncryptionContext
            // parameter ... Grants with grant constraints can include the
            // DescribeKey and RetireGrant operations, but the constraint
            // doesn't apply to these operations." AWS does not say whether
            // it refuses a constraint on a grant with none of those
            // operations; such a constraint could never apply, so kmsd
            // refuses it.
            return Err(GrantError::new(
                GrantErrorKind::InvalidConstraints,
                "Constraints: apply only to operations that take an encryption context \
                 (Decrypt, Encrypt, GenerateDataKey, GenerateDataKeyWithoutPlaintext, \
                 ReEncryptFrom, ReEncryptTo), and the grant allows none of them",
            ));
        }
        Ok(CompiledGrant {
            grantee,
            grantee_text: spec.grantee_principal.to_owned(),
            retiring,
            operations,
            constraint,
            name: spec.name.map(str::to_owned),
        })
    }

    /// Whether the grant allows `req`, without allocating: the caller is
    /// the grantee, the action is one of the grant's operations, and,
    /// for an operation that takes an encryption context, the request's
    /// context satisfies the constraint (keys in any case, values
    /// exactly). The constraint does not apply to DescribeKey, RetireGrant
    /// and CreateGrant (AWS: "Grants with grant constraints can include
    /// the DescribeKey and RetireGrant operations, but the constraint
    /// doesn't apply to these operations").
    ///
    /// The request's key is not looked at: a grant belongs to one key,
    /// and the daemon asks only that key's grants.
    ///
    /// For `kms:CreateGrant` this is only half the answer: the grant
    /// created through this one must also pass [`Self::permits_child`].
    /// For `kms:RetireGrant` it is the grantee's right to retire this
    /// grant.
    pub fn allows(&self, req: &Request<'_>) -> bool {
        let Some(op) = GrantOperation::from_action(req.action) else {
            return false;
        };
        self.operations.contains(op)
            && self.grantee.matches(&req.caller)
            && (!op.takes_encryption_context()
                || self
                    .constraint
                    .as_ref()
                    .is_none_or(|c| c.holds(req.encryption_context)))
    }

    /// Whether `caller` is the grant's grantee principal.
    pub fn is_grantee(&self, caller: &Caller<'_>) -> bool {
        self.grantee.matches(caller)
    }

    /// Whether `caller` is the grant's retiring principal (false when it
    /// has none).
    pub fn is_retiring_principal(&self, caller: &Caller<'_>) -> bool {
        self.retiring
            .as_ref()
            .is_some_and(|(p, _)| p.matches(caller))
    }

    /// Whether this grant lets its grantee create `child`: this grant
    /// allows CreateGrant, the child's operations are some or all of this
    /// grant's, and its constraint is as strict or stricter.
    ///
    /// AWS (Developer Guide, "Granting CreateGrant permission",
    /// create-grant-overview.md): "The grantee principal can only create
    /// grants that allow some or all of the operations in the parent
    /// grant. The grant constraints in the grants they create must be at
    /// least as strict as those in the parent grant." "The child grant can
    /// add pairs to an EncryptionContextSubset constraint in the parent
    /// grant, but it cannot remove them. The child grant can change an
    /// EncryptionContextSubset constraint to an EncryptionContextEquals
    /// constraint, but not the reverse." And botocore's
    /// `CreateGrantRequest.Constraints`: "If a grant with a grant
    /// constraint includes the CreateGrant operation, the constraint
    /// requires that any grants created with the CreateGrant permission
    /// have an equally strict or stricter encryption context constraint."
    ///
    /// So, with keys compared in any case and values exactly: no parent
    /// constraint, any child; parent Subset S, a child Subset or Equals
    /// whose pairs include S; parent Equals E, a child Equals of exactly
    /// E. A child none of whose operations takes an encryption context
    /// (DescribeKey, RetireGrant, CreateGrant) needs no constraint: one
    /// would not apply to it, and kmsd refuses a constraint there
    /// (kmsd's reading; AWS does not say).
    pub fn permits_child(&self, child: &CompiledGrant) -> bool {
        if !self.operations.contains(GrantOperation::CreateGrant)
            || !child.operations.is_subset(self.operations)
        {
            return false;
        }
        let Some(parent) = &self.constraint else {
            return true;
        };
        if !child.operations.takes_encryption_context() {
            return true;
        }
        let Some(c) = &child.constraint else {
            return false;
        };
        use GrantConstraintType::{EncryptionContextEquals, EncryptionContextSubset};
        match (parent.kind, c.kind) {
            (EncryptionContextSubset, _) => parent.pairs_within(c),
            (EncryptionContextEquals, EncryptionContextEquals) => {
                parent.pairs.len() == c.pairs.len() && parent.pairs_within(c)
            }
            (EncryptionContextEquals, EncryptionContextSubset) => false,
        }
    }

    /// Whether `other` (a new CreateGrant for the same key) is a retry of
    /// this grant: both have a `Name`, and every parameter is identical
    /// (principals as written, the operations as a set, the constraint's
    /// type and pairs as a set, the name).
    ///
    /// AWS (botocore, `CreateGrantRequest.Name`): "When this value is
    /// absent, all CreateGrant requests result in a new grant with a unique
    /// GrantId even if all the supplied parameters are identical ... When
    /// this value is present, you can retry a CreateGrant request with
    /// identical parameters; if the grant already exists, the original
    /// GrantId is returned without creating a new grant. Note that the
    /// returned grant token is unique with every CreateGrant request, even
    /// when a duplicate GrantId is returned." And the Developer Guide: "If
    /// AWS KMS gets a CreateGrant request for a grant with the same
    /// properties as an existing grant, including the name, it recognizes
    /// the request as a retry, and does not create a new grant. You cannot
    /// use the Name value to identify the grant in any AWS KMS
    /// operations." So the same name with other parameters is not a retry:
    /// it makes a new grant (names are not unique).
    pub fn same_parameters(&self, other: &CompiledGrant) -> bool {
        self.name.is_some()
            && self.name == other.name
            && self.grantee_text == other.grantee_text
            && self.retiring.as_ref().map(|(_, t)| t) == other.retiring.as_ref().map(|(_, t)| t)
            && self.operations == other.operations
            && self.constraint == other.constraint
    }

    /// `GranteePrincipal`, as given.
    pub fn grantee_principal(&self) -> &str {
        &self.grantee_text
    }

    /// `RetiringPrincipal`, as given.
    pub fn retiring_principal(&self) -> Option<&str> {
        self.retiring.as_ref().map(|(_, t)| t.as_str())
    }

    /// The operations the grant allows.
    pub fn operations(&self) -> GrantOperationSet {
        self.operations
    }

    /// The type of the grant's constraint, if it has one.
    pub fn constraint_type(&self) -> Option<GrantConstraintType> {
        self.constraint.as_ref().map(|c| c.kind)
    }

    /// The constraint's pairs as given, sorted by key (empty without a
    /// constraint).
    pub fn constraint_pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.constraint
            .iter()
            .flat_map(|c| c.pairs.iter())
            .map(|p| (p.key.as_str(), p.value.as_str()))
    }

    /// `Name`, if the request gave one.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::{key_is, GrantOperation, GrantOperationSet};
    use crate::action::Action;

    #[test]
    fn names_and_actions() {
        assert_eq!(GrantOperation::ALL.len(), GrantOperation::COUNT);
        for op in GrantOperation::ALL {
            assert_eq!(GrantOperation::from_name(op.name()), Some(op));
            assert_eq!(GrantOperation::from_name(&op.name().to_lowercase()), None);
            match op.action() {
                Some(a) => {
                    assert_eq!(a.name(), format!("kms:{}", op.name()));
                    assert_eq!(GrantOperation::from_action(a), Some(op));
                    assert!(op.supported_by_symmetric_key());
                }
                None => assert!(!op.supported_by_symmetric_key()),
            }
        }
        assert_eq!(GrantOperationSet::SYMMETRIC_KEY.len(), 9);
        assert_eq!(GrantOperation::from_action(Action::GenerateRandom), None);
        assert_eq!(GrantOperation::from_action(Action::PutKeyPolicy), None);
    }

    #[test]
    fn sets() {
        let set = GrantOperationSet::of(&[
            GrantOperation::Decrypt,
            GrantOperation::DescribeKey,
            GrantOperation::Decrypt,
        ]);
        assert_eq!(set.len(), 2);
        assert!(set.takes_encryption_context());
        assert!(!GrantOperationSet::of(&[GrantOperation::DescribeKey]).takes_encryption_context());
        assert!(set.is_subset(GrantOperationSet::SYMMETRIC_KEY));
        assert!(!GrantOperationSet::SYMMETRIC_KEY.is_subset(set));
        let mut buf = [""; GrantOperation::COUNT];
        assert_eq!(set.names(&mut buf), ["Decrypt", "DescribeKey"]);
        assert_eq!(format!("{set:?}"), "{Decrypt, DescribeKey}");
        let collected: GrantOperationSet = set.iter().collect();
        assert_eq!(collected, set);
    }

    #[test]
    fn key_folding() {
        assert!(key_is("Team", "team"));
        assert!(key_is("TEAM", "team"));
        assert!(!key_is("Teams", "team"));
        assert!(key_is("ÉQUIPE", "équipe"));
        // The Kelvin sign folds to an ASCII k.
        assert!(key_is("\u{212a}ey", "key"));
        assert!(!key_is("key", "kéy"));
    }
}
