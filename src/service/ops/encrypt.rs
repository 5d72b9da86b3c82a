//! Encrypt: up to 4096 bytes under a KMS key's current version.

use crate::identity::Identity;
use crate::service::access::grants::{check_grant_tokens, dry_run_ok};
use crate::service::access::Ask;
use kms_policy::Action;
use crate::service::keys::KeyRef;
use crate::service::op::{Authz, Data, DataCtx, ExecError, Op, OutputSize};
use crate::service::{Service, BLOB_OVERHEAD_MAX, MAX_KEY_ARN_TEXT};
use kms_proto::types::limits::MAX_PLAINTEXT;
use kms_proto::{Encrypt, EncryptOutput, KmsError, Output};

/// Validates the plaintext size (1..=4096 bytes, as AWS KMS).
pub fn validate(req: &Encrypt<'_>) -> Result<(), KmsError> {
    if req.plaintext.is_empty() || req.plaintext.len() > MAX_PLAINTEXT {
        return Err(KmsError::validation(format!(
            "Plaintext length {} is out of range 1..={MAX_PLAINTEXT}",
            req.plaintext.len()
        )));
    }
    Ok(())
}

impl Op for Encrypt<'_> {
    const NAME: &'static str = "Encrypt";
    const ACTION: &'static str = "kms:Encrypt";
    type Plane = Data;

    fn keys(&self, svc: &Service, out: &mut Vec<KeyRef>) {
        if let Ok(id) = svc.resolve_key_id(self.key_id, "KeyId") {
            out.push(KeyRef { id, version: None });
        }
    }

    fn payload(&self) -> usize {
        self.plaintext.len()
    }

    fn heap_bytes(&self) -> usize {
        super::context_heap(&self.context) + std::mem::size_of_val(self.grant_tokens.as_slice())
    }

    fn authorization(&self) -> Authz<'_> {
        Authz::InApply
    }

    fn output_size(&self) -> OutputSize {
        OutputSize {
            success: MAX_KEY_ARN_TEXT + self.plaintext.len().min(MAX_PLAINTEXT) + BLOB_OVERHEAD_MAX,
            error_text: super::context_error_text(&self.context),
            entries: 0,
        }
    }

    /// Seals the plaintext, bound to the encryption context.
    fn apply(&self, ctx: &DataCtx<'_>, caller: &Identity) -> Result<Output, ExecError> {
        validate(self)?;
        check_grant_tokens(&self.grant_tokens)?;
        let context = super::context(&self.context)?;
        let key = ctx.key_named(self.key_id, "KeyId")?;
        let ask = Ask::context(&self.context).named(self.key_id);
        ctx.authorize(caller, &key, Action::Encrypt, &ask)?;
        key.check_usable()?;
        if self.dry_run {
            return Err(dry_run_ok().into());
        }
        let ciphertext_blob = ctx
            .service()
            .seal(&key, &context, self.plaintext, ctx.site())?;
        Ok(Output::Encrypt(EncryptOutput {
            key_id: key.arn().to_owned(),
            ciphertext_blob,
        }))
    }
}
