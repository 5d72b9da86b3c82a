//! CancelKeyDeletion: a key pending deletion is kept. It comes back
//! Disabled (AWS: "the KMS key state is Disabled"; EnableKey makes it
//! usable again), or PendingImport if it has no key material (an EXTERNAL
//! key scheduled for deletion before its import: AWS keeps such a key
//! waiting for its material). Its deletion date is cleared; its automatic
//! rotation setting, kept while it was pending deletion, applies again.
//! Any other state: KMSInvalidStateException "... is not pending deletion".

use crate::identity::Identity;
use crate::service::lifecycle::{transition, Transition};
use crate::service::op::{Authz, Control, ControlCtx, ExecError, Op, OutputSize};
use crate::service::MAX_KEY_ARN_TEXT;
use kms_proto::{CancelKeyDeletion, CancelKeyDeletionOutput, KeyState, Output};

impl Op for CancelKeyDeletion<'_> {
    const NAME: &'static str = "CancelKeyDeletion";
    const ACTION: &'static str = "kms:CancelKeyDeletion";
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

    /// Disabled (or PendingImport) in the store, deletion date cleared,
    /// then invalidated, then answered.
    fn apply(&self, ctx: &ControlCtx<'_>, _caller: &Identity) -> Result<Output, ExecError> {
        let id = ctx.service().parse_key_id(self.key_id)?;
        ctx.service().change_key(&id, |rec, shown| {
            let next = transition(&id, shown, Transition::CancelDeletion)?;
            rec.state = if rec.current_version == 0 {
                KeyState::PendingImport
            } else {
                next
            };
            rec.deletion_date = None;
            rec.pending_window_days = None;
            Ok(())
        })?;
        tracing::info!(key_id = %crate::service::format_key_id(&id), "key deletion cancelled");
        Ok(Output::CancelKeyDeletion(CancelKeyDeletionOutput {
            key_id: ctx.service().arns().key_arn(&id),
        }))
    }
}
