//! EnableKey: the key may be used for cryptographic operations again.
//! Allowed from Enabled (a no-op, as in AWS), Disabled and Unavailable
//! (the stored state changes; the key shows Unavailable until its HSM is
//! back); elsewhere AWS's KMSInvalidStateException.

use crate::identity::Identity;
use crate::service::lifecycle::{transition, Transition};
use crate::service::op::{Authz, Control, ControlCtx, ExecError, Op, OutputSize};
use kms_proto::{EnableKey, Output};

impl Op for EnableKey<'_> {
    const NAME: &'static str = "EnableKey";
    const ACTION: &'static str = "kms:EnableKey";
    type Plane = Control;

    fn authorization(&self) -> Authz<'_> {
        Authz::key(self.key_id)
    }

    fn output_size(&self) -> OutputSize {
        OutputSize::default()
    }

    /// Enabled in the store, then invalidated, then answered.
    fn apply(&self, ctx: &ControlCtx<'_>, _caller: &Identity) -> Result<Output, ExecError> {
        let id = ctx.service().parse_key_id(self.key_id)?;
        ctx.service().change_key(&id, |rec, shown| {
            rec.state = transition(&id, shown, Transition::Enable)?;
            Ok(())
        })?;
        Ok(Output::EnableKey)
    }
}
