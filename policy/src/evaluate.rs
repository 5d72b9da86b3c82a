//! Evaluation: AWS's order (an explicit Deny wins, then any Allow, else
//! an implicit deny), without allocating.

use crate::action::Action;
use crate::condition::{decimal, Ctx};
use crate::document::{same_key, CompiledPolicy, Effect, Resource, Statement};
use crate::request::{Caller, Decision, Request};

impl Statement {
    fn matches(&self, ctx: &Ctx<'_>) -> bool {
        let r = ctx.req;
        // The cheap tests first: one bit, then a short list.
        self.actions.contains(r.action)
            && match &self.resource {
                Resource::Any => true,
                Resource::Keys(keys) => keys.iter().any(|k| same_key(k, r.key_arn)),
            }
            && self.principals.iter().any(|p| p.matches(&r.caller))
            && self.conditions.iter().all(|c| c.holds(ctx))
    }
}

impl CompiledPolicy {
    /// Decides `req`: [`Decision::ExplicitDeny`] if any `Deny` statement
    /// matches, else [`Decision::Allow`] if any `Allow` statement does,
    /// else [`Decision::ImplicitDeny`]. A statement matches when its
    /// action, resource and principal match and all its conditions hold.
    pub fn evaluate(&self, req: &Request<'_>) -> Decision {
        let mut buf = [0u8; 10];
        let account = decimal(req.caller.uid, &mut buf);
        let ctx = Ctx { req, account };
        let mut allowed = false;
        for s in &self.statements {
            // An allow already found cannot change the answer unless a
            // deny follows, so allows after the first are skipped.
            if s.effect == Effect::Allow && allowed {
                continue;
            }
            if s.matches(&ctx) {
                match s.effect {
                    Effect::Deny => return Decision::ExplicitDeny,
                    Effect::Allow => allowed = true,
                }
            }
        }
        if allowed {
            Decision::Allow
        } else {
            Decision::ImplicitDeny
        }
    }

    /// AWS's policy lockout safety check: whether this policy lets
    /// `caller` make a subsequent `kms:PutKeyPolicy` on the key, so that a
    /// CreateKey or PutKeyPolicy without `BypassPolicyLockoutSafetyCheck`
    /// cannot leave the key without anyone able to change its policy. The
    /// subsequent request is taken as one without the bypass flag
    /// (`kms:BypassPolicyLockoutSafetyCheck` is false) and without
    /// encryption context or aliases.
    pub fn allows_subsequent_put_key_policy(&self, caller: &Caller<'_>, key_arn: &str) -> bool {
        let req = Request {
            bypass_policy_lockout_safety_check: Some(false),
            ..Request::new(*caller, Action::PutKeyPolicy, key_arn)
        };
        self.evaluate(&req).is_allowed()
    }

    /// Every key ARN the statements' `Resource`s name (key ids in lower
    /// case), for the daemon to check that a policy given to it names its
    /// own keys' ARNs (the policy takes any partition, region and account).
    pub fn key_arns(&self) -> impl Iterator<Item = &str> {
        self.statements
            .iter()
            .flat_map(|s| match &s.resource {
                Resource::Any => &[][..],
                Resource::Keys(keys) => &keys[..],
            })
            .map(String::as_str)
    }

    /// How many statements the policy has.
    pub fn statement_count(&self) -> usize {
        self.statements.len()
    }
}
