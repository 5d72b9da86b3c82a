//! GenerateDataKey and GenerateDataKeyWithoutPlaintext: a random data key,
//! returned encrypted under the KMS key (and in plaintext for the former).
//! The two share the request type; [`WithoutPlaintext`] is the second's
//! [`Op`].

use crate::crypto::rng;
use crate::identity::Identity;
use crate::service::access::grants::{check_grant_tokens, dry_run_ok};
use crate::service::access::Ask;
use kms_policy::Action;
use crate::service::keys::KeyRef;
use crate::service::op::{Authz, Data, DataCtx, ExecError, Op, OutputSize};
use crate::service::{Service, BLOB_OVERHEAD_MAX, MAX_KEY_ARN_TEXT};
use kms_proto::types::limits::MAX_DATA_KEY_BYTES;
use kms_proto::{
    GenerateDataKey, GenerateDataKeyOutput, GenerateDataKeyWithoutPlaintextOutput, KmsError,
    Output, SecretBytes,
};

/// Validates the size: exactly one of NumberOfBytes (1..=1024) and KeySpec.
pub fn validate(req: &GenerateDataKey<'_>) -> Result<usize, KmsError> {
    match (req.number_of_bytes, req.key_spec) {
        (Some(_), Some(_)) => Err(KmsError::validation(
            "specify either NumberOfBytes or KeySpec, not both",
        )),
        (None, None) => Err(KmsError::validation("NumberOfBytes or KeySpec is required")),
        (Some(n), None) if n == 0 || n > MAX_DATA_KEY_BYTES => Err(KmsError::validation(format!(
            "NumberOfBytes {n} is out of range 1..={MAX_DATA_KEY_BYTES}"
        ))),
        (Some(n), None) => Ok(n as usize),
        (None, Some(spec)) => Ok(spec.num_bytes() as usize),
    }
}

/// The data key's size as asked, capped (for bounds; validation is
/// `validate`'s).
fn asked(req: &GenerateDataKey<'_>) -> usize {
    let n = match (req.number_of_bytes, req.key_spec) {
        (Some(n), _) => n,
        (None, Some(spec)) => spec.num_bytes(),
        (None, None) => 0,
    };
    n.min(MAX_DATA_KEY_BYTES) as usize
}

fn keys(req: &GenerateDataKey<'_>, svc: &Service, out: &mut Vec<KeyRef>) {
    if let Ok(id) = svc.resolve_key_id(req.key_id, "KeyId") {
        out.push(KeyRef { id, version: None });
    }
}

fn payload(req: &GenerateDataKey<'_>) -> usize {
    req.number_of_bytes.unwrap_or(32) as usize
}

/// Generates the data key and seals it under the key's current version.
fn generate(
    req: &GenerateDataKey<'_>,
    ctx: &DataCtx<'_>,
    caller: &Identity,
    with_plaintext: bool,
) -> Result<Output, ExecError> {
    let len = validate(req)?;
    check_grant_tokens(&req.grant_tokens)?;
    let context = super::context(&req.context)?;
    let key = ctx.key_named(req.key_id, "KeyId")?;
    let action = if with_plaintext {
        Action::GenerateDataKey
    } else {
        Action::GenerateDataKeyWithoutPlaintext
    };
    ctx.authorize(caller, &key, action, &Ask::context(&req.context).named(req.key_id))?;
    key.check_usable()?;
    if req.dry_run {
        return Err(dry_run_ok().into());
    }
    let mut plaintext = SecretBytes::new(vec![0; len]);
    rng::fill(plaintext.expose_mut());
    let ciphertext_blob = ctx
        .service()
        .seal(&key, &context, plaintext.expose(), ctx.site())?;
    let key_id = key.arn().to_owned();
    Ok(if with_plaintext {
        Output::GenerateDataKey(GenerateDataKeyOutput {
            key_id,
            plaintext,
            ciphertext_blob,
        })
    } else {
        Output::GenerateDataKeyWithoutPlaintext(GenerateDataKeyWithoutPlaintextOutput {
            key_id,
            ciphertext_blob,
        })
    })
}

impl Op for GenerateDataKey<'_> {
    const NAME: &'static str = "GenerateDataKey";
    const ACTION: &'static str = "kms:GenerateDataKey";
    type Plane = Data;

    fn keys(&self, svc: &Service, out: &mut Vec<KeyRef>) {
        keys(self, svc, out)
    }

    fn payload(&self) -> usize {
        payload(self)
    }

    fn heap_bytes(&self) -> usize {
        super::context_heap(&self.context) + std::mem::size_of_val(self.grant_tokens.as_slice())
    }

    fn authorization(&self) -> Authz<'_> {
        Authz::InApply
    }

    fn output_size(&self) -> OutputSize {
        OutputSize {
            success: MAX_KEY_ARN_TEXT + 2 * asked(self) + BLOB_OVERHEAD_MAX,
            error_text: super::context_error_text(&self.context),
            entries: 0,
        }
    }

    fn apply(&self, ctx: &DataCtx<'_>, caller: &Identity) -> Result<Output, ExecError> {
        generate(self, ctx, caller, true)
    }
}

/// GenerateDataKeyWithoutPlaintext's [`Op`] (its request is
/// GenerateDataKey's).
pub struct WithoutPlaintext<'r, 'a>(pub &'r GenerateDataKey<'a>);

impl Op for WithoutPlaintext<'_, '_> {
    const NAME: &'static str = "GenerateDataKeyWithoutPlaintext";
    const ACTION: &'static str = "kms:GenerateDataKeyWithoutPlaintext";
    type Plane = Data;

    fn keys(&self, svc: &Service, out: &mut Vec<KeyRef>) {
        keys(self.0, svc, out)
    }

    fn payload(&self) -> usize {
        payload(self.0)
    }

    fn heap_bytes(&self) -> usize {
        self.0.heap_bytes()
    }

    fn authorization(&self) -> Authz<'_> {
        Authz::InApply
    }

    fn output_size(&self) -> OutputSize {
        OutputSize {
            success: MAX_KEY_ARN_TEXT + asked(self.0) + BLOB_OVERHEAD_MAX,
            error_text: super::context_error_text(&self.0.context),
            entries: 0,
        }
    }

    fn apply(&self, ctx: &DataCtx<'_>, caller: &Identity) -> Result<Output, ExecError> {
        generate(self.0, ctx, caller, false)
    }
}
