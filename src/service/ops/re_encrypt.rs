//! ReEncrypt: decrypt under the source key and encrypt under the destination
//! key inside the daemon; the plaintext never leaves it.

use crate::identity::Identity;
use crate::service::access::grants::{check_grant_tokens, dry_run_ok};
use crate::service::access::Ask;
use kms_policy::Action;
use crate::service::keys::KeyRef;
use crate::service::op::{Authz, Data, DataCtx, ExecError, Op, OutputSize};
use crate::service::{Service, BLOB_OVERHEAD_MAX, MAX_KEY_ARN_TEXT};
use kms_proto::{Output, ReEncrypt, ReEncryptOutput};

impl Op for ReEncrypt<'_> {
    const NAME: &'static str = "ReEncrypt";
    // AWS checks kms:ReEncryptFrom on the source key and kms:ReEncryptTo on
    // the destination; this is the action's family name in policies.
    const ACTION: &'static str = "kms:ReEncrypt*";
    type Plane = Data;

    fn keys(&self, svc: &Service, out: &mut Vec<KeyRef>) {
        if let Ok(id) = svc.resolve_key_id(self.destination_key_id, "DestinationKeyId") {
            out.push(KeyRef { id, version: None });
        }
        out.extend(super::decrypt::blob_key(self.ciphertext_blob));
    }

    fn payload(&self) -> usize {
        self.ciphertext_blob.len()
    }

    fn heap_bytes(&self) -> usize {
        super::context_heap(&self.source_context)
            + super::context_heap(&self.destination_context)
            + std::mem::size_of_val(self.grant_tokens.as_slice())
    }

    fn authorization(&self) -> Authz<'_> {
        Authz::InApply
    }

    fn output_size(&self) -> OutputSize {
        OutputSize {
            success: 2 * MAX_KEY_ARN_TEXT + self.ciphertext_blob.len() + BLOB_OVERHEAD_MAX,
            error_text: super::context_error_text(&self.source_context)
                + super::context_error_text(&self.destination_context),
            entries: 0,
        }
    }

    /// Opens the source blob and seals its plaintext for the destination.
    fn apply(&self, ctx: &DataCtx<'_>, caller: &Identity) -> Result<Output, ExecError> {
        // Before the destination key is loaded: a bad blob costs nothing.
        super::decrypt::validate_blob(self.ciphertext_blob)?;
        check_grant_tokens(&self.grant_tokens)?;
        let source_context = super::context(&self.source_context)?;
        let destination_context = super::context(&self.destination_context)?;
        let destination = ctx.key_named(self.destination_key_id, "DestinationKeyId")?;
        let ask = Ask::context(&self.destination_context).named(self.destination_key_id);
        ctx.authorize(caller, &destination, Action::ReEncryptTo, &ask)?;
        destination.check_usable()?;
        let (source, plaintext) = super::decrypt::decrypt_blob(
            ctx,
            self.ciphertext_blob,
            self.source_key_id.map(|k| (k, "SourceKeyId")),
            &source_context,
            (caller, Action::ReEncryptFrom, &self.source_context),
        )?;
        if self.dry_run {
            // It would have succeeded: the plaintext is dropped (zeroized).
            return Err(dry_run_ok().into());
        }
        let ciphertext_blob = ctx.service().seal(
            &destination,
            &destination_context,
            plaintext.expose(),
            ctx.site(),
        )?;
        Ok(Output::ReEncrypt(ReEncryptOutput {
            source_key_id: source.arn().to_owned(),
            key_id: destination.arn().to_owned(),
            ciphertext_blob,
        }))
    }
}
