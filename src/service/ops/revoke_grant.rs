//! RevokeGrant: deletes a grant of a key (a key id or key ARN) by its id.
//! The key policy's `kms:RevokeGrant` decides who may (its
//! administrators).

use crate::identity::Identity;
use crate::service::op::{Authz, Control, ControlCtx, ExecError, Op, OutputSize};
use kms_proto::{Output, RevokeGrant};

impl Op for RevokeGrant<'_> {
    const NAME: &'static str = "RevokeGrant";
    const ACTION: &'static str = "kms:RevokeGrant";
    type Plane = Control;


    fn authorization(&self) -> Authz<'_> {
        Authz::key(self.key_id)
    }

    fn output_size(&self) -> OutputSize {
        // No fields (AWS).
        OutputSize::default()
    }

    /// Deleted, the key invalidated, then answered: the grant allows
    /// nothing from the next request on.
    fn apply(&self, ctx: &ControlCtx<'_>, _caller: &Identity) -> Result<Output, ExecError> {
        let id = ctx.service().resolve_key_id(self.key_id, "KeyId")?;
        ctx.service().revoke_grant(&id, self.grant_id, self.dry_run)?;
        Ok(Output::RevokeGrant)
    }
}
