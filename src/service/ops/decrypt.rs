//! Decrypt: the blob names its key and version; the caller may name the key
//! too, and must supply the same encryption context.

use crate::crypto::CanonicalContext;
use crate::errors;
use crate::identity::Identity;
use crate::service::access::grants::{check_grant_tokens, dry_run_ok};
use crate::service::access::Ask;
use kms_policy::Action;
use crate::service::keys::KeyRef;
use crate::service::op::{Authz, Data, DataCtx, ExecError, Op, OutputSize};
use crate::service::{backing, LoadedKey, Service, MAX_KEY_ARN_TEXT};
use kms_proto::types::limits::MAX_CIPHERTEXT_BLOB;
use kms_proto::{Decrypt, DecryptOutput, ErrorKind, KmsError, Output, SecretBytes};
use std::sync::Arc;

/// Validates the blob's size as AWS KMS does (CiphertextBlob is 1..=6144
/// bytes; outside that, ValidationException). Shared by ReEncrypt.
pub(crate) fn validate_blob(ciphertext_blob: &[u8]) -> Result<(), KmsError> {
    if ciphertext_blob.is_empty() || ciphertext_blob.len() > MAX_CIPHERTEXT_BLOB {
        return Err(KmsError::validation(format!(
            "CiphertextBlob length {} is out of range 1..={MAX_CIPHERTEXT_BLOB}",
            ciphertext_blob.len()
        )));
    }
    Ok(())
}

/// The key and version a blob names, if its header parses (shared by
/// ReEncrypt's `keys`).
pub(crate) fn blob_key(ciphertext_blob: &[u8]) -> Option<KeyRef> {
    let h = backing::parse_any_header(ciphertext_blob).ok()?;
    Some(KeyRef {
        id: h.key_id,
        version: Some(h.key_version),
    })
}

/// Opens a blob: checks the named key (`key_id`: the identifier and its
/// field; an alias is resolved), loads the blob's key and version, checks
/// that `caller` may do `action` with it (`raw_context`: the context as the
/// request gave it, for the policy's conditions), authenticates and
/// decrypts. Shared by Decrypt and ReEncrypt.
///
/// The blob's length is checked first: one longer than any valid blob is
/// refused before a key is loaded, copied or authenticated.
pub(crate) fn decrypt_blob(
    ctx: &DataCtx<'_>,
    ciphertext_blob: &[u8],
    key_id: Option<(&str, &str)>,
    context: &CanonicalContext,
    (caller, action, raw_context): (&Identity, Action, &[(&str, &str)]),
) -> Result<(Arc<LoadedKey>, SecretBytes), ExecError> {
    validate_blob(ciphertext_blob)?;
    let expected = key_id
        .map(|(k, field)| ctx.service().resolve_key_id(k, field))
        .transpose()?;
    let header =
        backing::parse_any_header(ciphertext_blob).map_err(|_| errors::invalid_ciphertext())?;
    if let Some(expected) = expected {
        if expected != header.key_id {
            return Err(errors::incorrect_key(&expected).into());
        }
    }
    let key = match ctx.key(KeyRef {
        id: header.key_id,
        version: Some(header.key_version),
    }) {
        Ok(k) => k,
        // A blob naming a key that never existed is a bad blob; one naming
        // a deleted key is answered NotFoundException (the key was
        // deleted), forever.
        Err(ExecError::Kms(e)) if e.kind == ErrorKind::NotFound && !errors::is_key_deleted(&e) => {
            return Err(errors::invalid_ciphertext().into())
        }
        Err(e) => return Err(e),
    };
    let mut ask = Ask::context(raw_context);
    if let Some((k, _)) = key_id {
        ask = ask.named(k);
    }
    ctx.authorize(caller, &key, action, &ask)?;
    key.check_usable()?;
    let mut plaintext = ctx.service().unseal(
        &key,
        header.key_version,
        ciphertext_blob,
        context,
        ctx.site(),
    )?;
    // Move the buffer out; the emptied Zeroizing wrapper has nothing left.
    Ok((key, SecretBytes::new(std::mem::take(&mut *plaintext))))
}

impl Op for Decrypt<'_> {
    const NAME: &'static str = "Decrypt";
    const ACTION: &'static str = "kms:Decrypt";
    type Plane = Data;

    fn keys(&self, _svc: &Service, out: &mut Vec<KeyRef>) {
        out.extend(blob_key(self.ciphertext_blob));
    }

    fn payload(&self) -> usize {
        self.ciphertext_blob.len()
    }

    fn heap_bytes(&self) -> usize {
        super::context_heap(&self.context) + std::mem::size_of_val(self.grant_tokens.as_slice())
    }

    fn authorization(&self) -> Authz<'_> {
        Authz::InApply
    }

    fn output_size(&self) -> OutputSize {
        // The plaintext is shorter than its blob.
        OutputSize {
            success: MAX_KEY_ARN_TEXT + self.ciphertext_blob.len(),
            error_text: super::context_error_text(&self.context),
            entries: 0,
        }
    }

    /// Decrypts the blob.
    fn apply(&self, ctx: &DataCtx<'_>, caller: &Identity) -> Result<Output, ExecError> {
        check_grant_tokens(&self.grant_tokens)?;
        let context = super::context(&self.context)?;
        let (key, plaintext) = decrypt_blob(
            ctx,
            self.ciphertext_blob,
            self.key_id.map(|k| (k, "KeyId")),
            &context,
            (caller, Action::Decrypt, &self.context),
        )?;
        if self.dry_run {
            // It would have succeeded: the plaintext is dropped (zeroized).
            return Err(dry_run_ok().into());
        }
        Ok(Output::Decrypt(DecryptOutput {
            key_id: key.arn().to_owned(),
            plaintext,
        }))
    }
}
