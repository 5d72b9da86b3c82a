//! GetParametersForImport: a new RSA wrapping key pair in the root of trust
//! and an import token bound to the key and the pair, valid 24 hours by the
//! service's clock, stored durably (a restart keeps them). Only EXTERNAL
//! keys (else UnsupportedOperationException); states as AWS's table
//! (Enabled, Disabled, PendingImport: a key with material may be given the
//! same material again).
//!
//! The pair is recorded pending, generated (up to seconds for RSA-4096)
//! without the store lock, then stored with its token, replacing the key's
//! previous parameters, whose pair is destroyed. A crash in between leaves
//! a pending record that start-up reconciliation settles
//! (`service/imports.rs`): no pair is left in the root that the store does
//! not name.

use crate::errors;
use crate::identity::Identity;
use crate::keystore::ImportParams;
use crate::service::imports::{self, external_key, settle_wrapping_key};
use crate::service::lifecycle::Use;
use crate::service::op::{Authz, Control, ControlCtx, ExecError, Op, OutputSize};
use crate::service::MAX_KEY_ARN_TEXT;
use kms_proto::types::limits::IMPORT_PARAMETERS_VALIDITY_SECS;
use kms_proto::{GetParametersForImport, GetParametersForImportOutput, Output};

/// The longest public key handed out: a DER SubjectPublicKeyInfo of
/// RSA-4096 is 550 bytes.
const MAX_PUBLIC_KEY: usize = 600;

impl Op for GetParametersForImport<'_> {
    const NAME: &'static str = "GetParametersForImport";
    const ACTION: &'static str = "kms:GetParametersForImport";
    type Plane = Control;

    fn authorization(&self) -> Authz<'_> {
        Authz::key(self.key_id)
    }

    fn output_size(&self) -> OutputSize {
        OutputSize {
            success: MAX_KEY_ARN_TEXT + imports::TOKEN_LEN + MAX_PUBLIC_KEY,
            ..OutputSize::default()
        }
    }

    fn apply(&self, ctx: &ControlCtx<'_>, _caller: &Identity) -> Result<Output, ExecError> {
        let id = ctx.service().parse_key_id(self.key_id)?;
        let algorithm = imports::algorithm(self.wrapping_algorithm)?;
        let spec = imports::spec(self.wrapping_key_spec);
        let svc = ctx.service();
        let wrapping = imports::wrapping(svc)?;
        external_key(&ctx.store(), &id, Self::NAME, Use::Import)?;

        let token = imports::new_token(&id);
        let pair_id = imports::wrapping_key_id(&token).expect("a token just made names its pair");
        let now = svc.now();
        ctx.store()
            .begin_wrapping_key(&pair_id, now)
            .map_err(|e| errors::store("recording an import wrapping key", e))?;
        let pair = match wrapping.generate(&pair_id, spec) {
            Ok(pair) => pair,
            Err(e) => {
                // A failed generation (a timeout, a lost session) may still
                // have made the pair.
                settle_wrapping_key(svc, &pair_id);
                return Err(errors::root("generating an import wrapping key", e).into());
            }
        };
        let valid_to = now + IMPORT_PARAMETERS_VALIDITY_SECS;
        let params = ImportParams {
            token: token.clone(),
            wrapping_algorithm: algorithm.name().to_owned(),
            wrapping_key_spec: spec.name().to_owned(),
            wrapping_key: pair.handle,
            valid_to,
        };
        let replaced = {
            let mut store = ctx.store();
            // Again under the lock: the key may have changed (or gone)
            // while the pair was generated.
            external_key(&store, &id, Self::NAME, Use::Import).and_then(|_| {
                store
                    .put_import_params(&id, &params, &pair_id, imports::wrapping_key_id, now)
                    .map_err(|e| errors::store("storing import parameters", e))
            })
        };
        let replaced = match replaced {
            Ok(replaced) => replaced,
            Err(e) => {
                settle_wrapping_key(svc, &pair_id);
                return Err(e.into());
            }
        };
        if let Some(old) = replaced.filter(|o| !o.wrapping_key.is_empty()) {
            if let Some(old_id) = imports::wrapping_key_id(&old.token) {
                settle_wrapping_key(svc, &old_id);
            }
        }
        Ok(Output::GetParametersForImport(
            GetParametersForImportOutput {
                key_id: ctx.service().arns().key_arn(&id),
                import_token: token,
                public_key: pair.public_key,
                parameters_valid_to: valid_to,
            },
        ))
    }
}
