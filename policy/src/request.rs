//! What evaluation looks at: the caller and the request, all borrowed, and
//! the decision.

use crate::action::Action;
use crate::grant::GrantConstraintType;

/// The local identity making a request (from SO_PEERCRED and, when the
/// daemon knows them, the caller's systemd unit and cgroup).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller<'a> {
    /// The caller's uid.
    pub uid: u32,
    /// The caller's primary gid.
    pub gid: u32,
    /// The caller's supplementary gids (a `gid:N` principal matches the
    /// primary gid or any of these).
    pub supplementary_gids: &'a [u32],
    /// The caller's systemd unit (`name.service`), if it runs in one.
    pub unit: Option<&'a str>,
    /// The caller's cgroup path (`/system.slice/x.service`), if known.
    pub cgroup: Option<&'a str>,
}

/// One request to decide, borrowing everything it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// Who asks.
    pub caller: Caller<'a>,
    /// For what.
    pub action: Action,
    /// The key's ARN (`arn:aws:kms:<region>:<account>:key/<id>`, as the
    /// daemon's `[aws]` makes it), matched by its key id against the key
    /// ARNs of the statements' `Resource` (for CreateKey, the new key's:
    /// its policy is the one that decides).
    pub key_arn: &'a str,
    /// The request's encryption context (`kms:EncryptionContext:<key>`,
    /// `kms:EncryptionContextKeys`); empty when the operation has none.
    pub encryption_context: &'a [(&'a str, &'a str)],
    /// The alias name (`alias/...`) the request's KeyId gave, if it named
    /// the key by alias (`kms:RequestAlias`).
    pub request_alias: Option<&'a str>,
    /// The key's alias names (`kms:ResourceAliases`).
    pub key_aliases: &'a [&'a str],
    /// CreateGrant's operations, by their wire names such as `Decrypt`
    /// (`kms:GrantOperations`); empty for other actions.
    pub grant_operations: &'a [&'a str],
    /// CreateKey's and PutKeyPolicy's `BypassPolicyLockoutSafetyCheck`
    /// (`false` when the request omits it, as AWS's request-parameter
    /// conditions see the default); `None` for other actions.
    pub bypass_policy_lockout_safety_check: Option<bool>,
    /// CreateGrant's `GranteePrincipal`, as the request gives it
    /// (`kms:GranteePrincipal`); `None` for other actions.
    pub grantee_principal: Option<&'a str>,
    /// CreateGrant's `RetiringPrincipal`, as the request gives it
    /// (`kms:RetiringPrincipal`); `None` for other actions and when the
    /// request has none.
    pub retiring_principal: Option<&'a str>,
    /// The type of CreateGrant's constraint (`kms:GrantConstraintType`);
    /// `None` for other actions and for a grant without a constraint.
    pub grant_constraint_type: Option<GrantConstraintType>,
}

impl<'a> Request<'a> {
    /// A request for `action` on `key_arn` by `caller` with no context,
    /// aliases, grant parameters or bypass flag: fill in the rest with
    /// struct update syntax ([`GrantSpec::policy_request`](crate::GrantSpec::policy_request)
    /// fills in CreateGrant's).
    pub fn new(caller: Caller<'a>, action: Action, key_arn: &'a str) -> Self {
        Request {
            caller,
            action,
            key_arn,
            encryption_context: &[],
            request_alias: None,
            key_aliases: &[],
            grant_operations: &[],
            bypass_policy_lockout_safety_check: None,
            grantee_principal: None,
            retiring_principal: None,
            grant_constraint_type: None,
        }
    }
}

/// A policy's answer to a request.
///
/// It says which rule decided, so that an AccessDeniedException's message
/// can say "explicitly denied" or "not allowed" with the principal and the
/// action, and never quote the policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// A statement allows the request and none denies it.
    Allow,
    /// A `Deny` statement matches the request (it wins over any `Allow`).
    ExplicitDeny,
    /// No statement matches: denied by the absence of an `Allow`.
    ImplicitDeny,
}

impl Decision {
    /// Whether the request may go on.
    pub fn is_allowed(self) -> bool {
        self == Decision::Allow
    }
}
