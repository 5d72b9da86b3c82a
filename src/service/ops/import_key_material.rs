//! ImportKeyMaterial: 256 bits of the caller's key material, encrypted
//! under the public key of the key's latest GetParametersForImport, become
//! the key's version 1 backing key (wrapped by the root of trust like any
//! other); a key pending import becomes Enabled (AWS), one that had
//! material keeps its state and gets the new expiry.
//!
//! In order, each failure with AWS's exception and nothing applied:
//! ValidTo and ExpirationModel (ValidationException: required with
//! KEY_MATERIAL_EXPIRES, in the future and at most 365 days ahead, absent
//! with KEY_MATERIAL_DOES_NOT_EXPIRE); the key (NotFoundException, an
//! origin other than EXTERNAL UnsupportedOperationException, its state);
//! the token (another key's or a replaced one: InvalidImportTokenException;
//! past its 24 hours: ExpiredImportTokenException); the material
//! (InvalidCiphertextException when it does not decrypt,
//! IncorrectKeyMaterialException when it is not 32 bytes, or not the
//! material imported before, compared through its digest in constant
//! time). The RSA decryption runs without the store lock; the key,
//! the token and the digest are checked again under it, and the version,
//! state, expiry and digest are written in one transaction that also ends
//! the token and records its wrapping pair pending. Then the key is
//! invalidated, then the pair destroyed (a crash before leaves it to
//! start-up reconciliation), then the answer.

use crate::crypto::import::{unwrap_material, ImportAlgorithm, ImportError};
use crate::errors::{self, format_key_id};
use crate::identity::Identity;
use crate::keystore::{ImportParams, ImportedMaterial};
use crate::root::{RootError, WrappingKeySpec};
use crate::service::imports::{self, external_key, settle_wrapping_key};
use crate::service::lifecycle::{self, Transition, Use};
use crate::service::op::{Authz, Control, ControlCtx, ExecError, Op, OutputSize};
use kms_proto::types::limits::MAX_VALID_TO_DAYS;
use kms_proto::{ErrorKind, ExpirationModel, ImportKeyMaterial, KmsError, Output};

/// The material's expiry the request asks for: `Some(ValidTo)`, or `None`
/// for material that does not expire.
pub fn valid_to(req: &ImportKeyMaterial<'_>, now: i64) -> Result<Option<i64>, KmsError> {
    match (req.expiration_model, req.valid_to) {
        (ExpirationModel::KeyMaterialExpires, None) => Err(KmsError::validation(
            "ValidTo is required when ExpirationModel is KEY_MATERIAL_EXPIRES",
        )),
        (ExpirationModel::KeyMaterialExpires, Some(t)) => {
            if t <= now {
                return Err(KmsError::validation(format!(
                    "ValidTo ({t}) must be in the future (now is {now})"
                )));
            }
            let latest = now + MAX_VALID_TO_DAYS * 24 * 60 * 60;
            if t > latest {
                return Err(KmsError::validation(format!(
                    "ValidTo ({t}) must be at most {MAX_VALID_TO_DAYS} days from now ({latest})"
                )));
            }
            Ok(Some(t))
        }
        (ExpirationModel::KeyMaterialDoesNotExpire, Some(_)) => Err(KmsError::validation(
            "ValidTo must be omitted when ExpirationModel is KEY_MATERIAL_DOES_NOT_EXPIRE",
        )),
        (ExpirationModel::KeyMaterialDoesNotExpire, None) => Ok(None),
    }
}

fn invalid_token(id: &[u8; 16], why: &str) -> KmsError {
    KmsError::new(
        ErrorKind::InvalidImportToken,
        format!(
            "the import token is not valid for {} ({why}); use the token of its latest \
             GetParametersForImport",
            format_key_id(id)
        ),
    )
}

fn expired_token(id: &[u8; 16]) -> KmsError {
    KmsError::new(
        ErrorKind::ExpiredImportToken,
        format!(
            "the import token of {} has expired; call GetParametersForImport again",
            format_key_id(id)
        ),
    )
}

/// The key's import parameters, if `token` is their token (compared in
/// constant time), else InvalidImportTokenException.
fn params_for(
    params: Option<ImportParams>,
    id: &[u8; 16],
    token: &[u8],
) -> Result<ImportParams, KmsError> {
    match params {
        Some(p) if imports::same_token(&p.token, token) => Ok(p),
        Some(_) => Err(invalid_token(
            id,
            match imports::token_key(token) {
                Some(k) if k != *id => "it was issued for another key",
                Some(_) => "it was replaced by a newer GetParametersForImport, or already used",
                None => "it is not an import token",
            },
        )),
        None => Err(invalid_token(id, "the key has no import parameters")),
    }
}

impl Op for ImportKeyMaterial<'_> {
    const NAME: &'static str = "ImportKeyMaterial";
    const ACTION: &'static str = "kms:ImportKeyMaterial";
    type Plane = Control;

    fn payload(&self) -> usize {
        self.encrypted_key_material.len()
    }

    fn authorization(&self) -> Authz<'_> {
        Authz::key(self.key_id)
    }

    fn output_size(&self) -> OutputSize {
        OutputSize::default()
    }

    fn apply(&self, ctx: &ControlCtx<'_>, _caller: &Identity) -> Result<Output, ExecError> {
        let id = ctx.service().parse_key_id(self.key_id)?;
        let svc = ctx.service();
        let now = svc.now();
        let valid_to = valid_to(self, now)?;
        let params = {
            let store = ctx.store();
            external_key(&store, &id, Self::NAME, Use::Import)?;
            store
                .import_params(&id)
                .map_err(|e| errors::store("reading import parameters", e))?
        };
        let params = params_for(params, &id, self.import_token)?;
        if params.valid_to <= now || params.wrapping_key.is_empty() {
            return Err(expired_token(&id).into());
        }
        let stored_enum = |e| errors::internal("reading import parameters", e);
        let algorithm = match params.wrapping_algorithm.as_str() {
            "RSAES_OAEP_SHA_256" => ImportAlgorithm::RsaesOaepSha256,
            "RSA_AES_KEY_WRAP_SHA_256" => ImportAlgorithm::RsaAesKeyWrapSha256,
            other => return Err(stored_enum(format!("unknown wrapping algorithm {other:?}")).into()),
        };
        let spec = kms_proto::WrappingKeySpec::from_name(&params.wrapping_key_spec)
            .map(imports::spec)
            .ok_or_else(|| stored_enum(format!("unknown wrapping key spec {:?}", params.wrapping_key_spec)))?;
        let pair_id = imports::wrapping_key_id(&params.token)
            .ok_or_else(|| stored_enum("a stored import token is malformed".to_owned()))?;

        let wrapping = imports::wrapping(svc)?;
        let material = unwrap_material(
            algorithm,
            WrappingKeySpec::modulus_len(spec),
            self.encrypted_key_material,
            |c| wrapping.decrypt(&pair_id, &params.wrapping_key, c),
        )
        .map_err(|e| match e {
            ImportError::DoesNotDecrypt => KmsError::new(
                ErrorKind::InvalidCiphertext,
                format!(
                    "EncryptedKeyMaterial does not decrypt with the wrapping key of this import \
                     token ({}); wrap the material under that call's public key",
                    algorithm.name()
                ),
            ),
            ImportError::WrongLength(n) => KmsError::new(
                ErrorKind::IncorrectKeyMaterial,
                format!(
                    "the key material is {n} bytes long; a SYMMETRIC_DEFAULT key takes exactly \
                     32 bytes (256 bits)"
                ),
            ),
            ImportError::Decryptor(RootError::Invalid(detail)) => {
                // The root no longer has the pair (destroyed at expiry, or
                // the root of trust changed).
                tracing::warn!(key_id = %format_key_id(&id), "import wrapping key unusable: {detail}");
                invalid_token(&id, "its wrapping key is no longer available")
            }
            ImportError::Decryptor(e) => errors::root("decrypting imported key material", e),
        })?;

        let digest = imports::material_digest(&id, &material);
        let wrapped = svc
            .core
            .root
            .wrap(&material)
            .map_err(|e| errors::root("wrapping imported key material", e))?;
        drop(material);
        {
            let mut store = ctx.store();
            let record = external_key(&store, &id, Self::NAME, Use::Import)?;
            let current = store
                .import_params(&id)
                .map_err(|e| errors::store("reading import parameters", e))?;
            if !current.is_some_and(|p| imports::same_token(&p.token, &params.token)) {
                return Err(invalid_token(&id, "it was replaced or used while this import ran").into());
            }
            if let Some(before) = store
                .material_digest(&id)
                .map_err(|e| errors::store("reading key", e))?
            {
                if !imports::same_digest(&before, &digest) {
                    return Err(KmsError::new(
                        ErrorKind::IncorrectKeyMaterial,
                        format!(
                            "the key material is not the material imported into {} before; a \
                             key's material can only be imported again as it was",
                            format_key_id(&id)
                        ),
                    )
                    .into());
                }
            }
            let state = lifecycle::transition(&id, record.state, Transition::Import)?;
            store
                .import_material(
                    &id,
                    &ImportedMaterial {
                        wrapped: &wrapped,
                        digest: &digest,
                        state,
                        valid_to,
                        expiration_model: self.expiration_model,
                        token: &params.token,
                        retire: pair_id,
                        now,
                    },
                )
                .map_err(|e| errors::store("storing imported key material", e))?;
        }
        svc.invalidate(&id);
        settle_wrapping_key(svc, &pair_id);
        tracing::info!(key_id = %format_key_id(&id), valid_to, "imported key material");
        Ok(Output::ImportKeyMaterial)
    }
}
