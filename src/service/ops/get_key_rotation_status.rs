//! GetKeyRotationStatus: whether the key rotates automatically, its
//! period and next date, and when an on-demand rotation in progress
//! started (an HSM-only key's, between its pending record and its commit;
//! a key made by kmsd rotates within one store transaction, so none is
//! ever seen in progress). Every state (AWS's table); a key pending
//! deletion shows rotation off (AWS: "while pending deletion, its key
//! rotation status is false"), its schedule kept and shown again if the
//! deletion is cancelled. A key with imported material never rotates
//! automatically: false.

use crate::errors;
use crate::identity::Identity;
use crate::service::lifecycle::{check, Use};
use crate::service::op::{Authz, Control, ControlCtx, ExecError, Op, OutputSize};
use crate::service::MAX_KEY_ARN_TEXT;
use kms_proto::{GetKeyRotationStatus, GetKeyRotationStatusOutput, KeyState, Output};

impl Op for GetKeyRotationStatus<'_> {
    const NAME: &'static str = "GetKeyRotationStatus";
    const ACTION: &'static str = "kms:GetKeyRotationStatus";
    type Plane = Control;

    fn authorization(&self) -> Authz<'_> {
        Authz::key(self.key_id)
    }

    fn output_size(&self) -> OutputSize {
        OutputSize {
            success: MAX_KEY_ARN_TEXT,
            ..OutputSize::default()
        }
    }

    /// Reads the key's record (every state may be read).
    fn apply(&self, ctx: &ControlCtx<'_>, _caller: &Identity) -> Result<Output, ExecError> {
        let id = ctx.service().parse_key_id(self.key_id)?;
        let svc = ctx.service();
        let record = svc.read_key(&id)?;
        check(Use::Read, &id, svc.effective_state(&record))?;
        let on = record.state != KeyState::PendingDeletion && record.rotation_period_days.is_some();
        let started = ctx
            .store()
            .rotation_in_progress(&id)
            .map_err(|e| errors::store("reading a rotation in progress", e))?;
        Ok(Output::GetKeyRotationStatus(GetKeyRotationStatusOutput {
            key_id: ctx.service().arns().key_arn(&id),
            key_rotation_enabled: on,
            rotation_period_in_days: record.rotation_period_days.filter(|_| on),
            next_rotation_date: record.next_rotation_at.filter(|_| on),
            on_demand_rotation_start_date: started,
        }))
    }
}
