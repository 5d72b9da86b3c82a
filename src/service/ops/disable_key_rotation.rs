//! DisableKeyRotation: no more automatic rotations; the current version
//! stays current, and on-demand rotations are still allowed (AWS).
//! Enabling it again starts a new schedule from that day (AWS: "based on
//! the new rotation-enable date"). Same states and origins as
//! EnableKeyRotation.

use crate::identity::Identity;
use crate::service::lifecycle::{check, wrong_origin, Use};
use crate::service::op::{Authz, Control, ControlCtx, ExecError, Op, OutputSize};
use kms_proto::{DisableKeyRotation, Origin, Output};

impl Op for DisableKeyRotation<'_> {
    const NAME: &'static str = "DisableKeyRotation";
    const ACTION: &'static str = "kms:DisableKeyRotation";
    type Plane = Control;

    fn authorization(&self) -> Authz<'_> {
        Authz::key(self.key_id)
    }

    fn output_size(&self) -> OutputSize {
        OutputSize::default()
    }

    /// The schedule cleared in the store, then invalidated, then answered.
    fn apply(&self, ctx: &ControlCtx<'_>, _caller: &Identity) -> Result<Output, ExecError> {
        let id = ctx.service().parse_key_id(self.key_id)?;
        ctx.service().change_key(&id, |rec, shown| {
            if rec.origin == Origin::External {
                return Err(wrong_origin(&id, rec.origin, Self::NAME));
            }
            check(Use::Rotation, &id, shown)?;
            rec.rotation_period_days = None;
            rec.next_rotation_at = None;
            Ok(())
        })?;
        Ok(Output::DisableKeyRotation)
    }
}
