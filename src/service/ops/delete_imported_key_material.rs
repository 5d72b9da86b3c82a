//! DeleteImportedKeyMaterial: an EXTERNAL key's material is deleted from
//! the store (its version rows; the material digest stays, so only the
//! same material can be imported again), and the key goes PendingImport (a
//! key pending deletion stays so; a key already pending import is left as
//! it is, as AWS). Other origins: UnsupportedOperationException. The key
//! is invalidated before the answer: no request that starts after it sees
//! the material.

use crate::errors::format_key_id;
use crate::identity::Identity;
use crate::service::imports::external_key;
use crate::service::lifecycle::{self, Transition, Use};
use crate::service::op::{Authz, Control, ControlCtx, ExecError, Op, OutputSize};
use kms_proto::{DeleteImportedKeyMaterial, Output};

impl Op for DeleteImportedKeyMaterial<'_> {
    const NAME: &'static str = "DeleteImportedKeyMaterial";
    const ACTION: &'static str = "kms:DeleteImportedKeyMaterial";
    type Plane = Control;

    fn authorization(&self) -> Authz<'_> {
        Authz::key(self.key_id)
    }

    fn output_size(&self) -> OutputSize {
        OutputSize::default()
    }

    fn apply(&self, ctx: &ControlCtx<'_>, _caller: &Identity) -> Result<Output, ExecError> {
        let id = ctx.service().parse_key_id(self.key_id)?;
        {
            let mut store = ctx.store();
            let record = external_key(&store, &id, Self::NAME, Use::DeleteImported)?;
            let state = lifecycle::transition(&id, record.state, Transition::RemoveMaterial)?;
            store
                .remove_material(&id, state)
                .map_err(|e| crate::errors::store("deleting imported key material", e))?;
        }
        ctx.service().invalidate(&id);
        tracing::info!(key_id = %format_key_id(&id), "deleted imported key material");
        Ok(Output::DeleteImportedKeyMaterial)
    }
}
