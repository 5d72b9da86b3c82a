//! PutKeyPolicy: replaces a key's policy (AWS allows one, named
//! `default`). KeyId: a key id, key ARN, alias name or alias ARN. The
//! decoder bounds the name (1..=128 characters); the policy is checked by
//! `service::access` (MalformedPolicyDocumentException with the reason).

use crate::identity::Identity;
use crate::service::access::policies::check_policy_name;
use crate::service::op::{Authz, Control, ControlCtx, ExecError, Op, OutputSize};
use kms_proto::{Output, PutKeyPolicy};

impl Op for PutKeyPolicy<'_> {
    const NAME: &'static str = "PutKeyPolicy";
    const ACTION: &'static str = "kms:PutKeyPolicy";
    type Plane = Control;


    fn authorization(&self) -> Authz<'_> {
        Authz::key(self.key_id)
    }

    fn output_size(&self) -> OutputSize {
        // No fields (AWS).
        OutputSize::default()
    }

    /// Checked (MalformedPolicyDocumentException with the reason; the
    /// lockout safety check unless bypassed), committed, the key
    /// invalidated, then answered.
    fn apply(&self, ctx: &ControlCtx<'_>, caller: &Identity) -> Result<Output, ExecError> {
        check_policy_name(self.policy_name)?;
        let id = ctx.service().resolve_key_id(self.key_id, "KeyId")?;
        ctx.service().put_key_policy(
            caller,
            &id,
            self.policy,
            self.bypass_policy_lockout_safety_check,
        )?;
        Ok(Output::PutKeyPolicy)
    }
}
