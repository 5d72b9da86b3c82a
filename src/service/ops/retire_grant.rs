//! RetireGrant: deletes a grant named by its token, or by its key (a key
//! id, key ARN, alias) and grant id; who may is in
//! `Service::retire_grant` (docs/access.md).

use crate::identity::Identity;
use crate::service::op::{Authz, Control, ControlCtx, ExecError, Op, OutputSize};
use kms_proto::{KmsError, Output, RetireGrant};

impl Op for RetireGrant<'_> {
    const NAME: &'static str = "RetireGrant";
    const ACTION: &'static str = "kms:RetireGrant";
    type Plane = Control;


    fn authorization(&self) -> Authz<'_> {
        Authz::InApply
    }

    fn output_size(&self) -> OutputSize {
        // No fields (AWS).
        OutputSize::default()
    }

    /// By token, or by key and grant id; see
    /// [`Service::retire_grant`](crate::service::Service) for who may.
    fn apply(&self, ctx: &ControlCtx<'_>, caller: &Identity) -> Result<Output, ExecError> {
        let svc = ctx.service();
        let key_and_id = match (self.key_id, self.grant_id) {
            (Some(k), Some(g)) => Some((svc.resolve_key_id(k, "KeyId")?, g)),
            (None, None) => None,
            _ => {
                return Err(KmsError::validation(
                    "RetireGrant: KeyId and GrantId go together (or give GrantToken)",
                )
                .into())
            }
        };
        svc.retire_grant(caller, self.grant_token, key_and_id, self.dry_run)?;
        Ok(Output::RetireGrant)
    }
}
