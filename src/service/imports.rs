//! What the three import operations share (GetParametersForImport,
//! ImportKeyMaterial, DeleteImportedKeyMaterial: `ops/`), and the import's
//! due work and start-up reconciliation.
//!
//! - **Import token**: `0x01 || key id (16) || 32 random bytes`, stored in
//!   `import_params` (one row per key: the latest call's) and compared in
//!   constant time. It names its key, so a token of another key is told
//!   apart from a stale one only in the log, never by timing of secrets.
//! - **Wrapping key id** (the root's name for the RSA pair): the key id
//!   and the token's first four random bytes, so the store needs no other
//!   column and a token always names its pair.
//! - **Material digest**: SHA-256 over a domain string, the key id and the
//!   material (AWS derives its key material id from the same two). It is
//!   kept when the material is deleted or expires, so that a re-import can
//!   be checked to be the same material (AWS: IncorrectKeyMaterialException
//!   otherwise) without keeping the material. It is not keyed by the root
//!   of trust on purpose: `kmsd migrate-root` moves a store to another root
//!   key, and a digest keyed by the old one could never match again.
//! - **Due work** (`scheduler::KINDS`): material whose ValidTo has passed
//!   is deleted (the key goes PendingImport, or stays PendingDeletion);
//!   import parameters whose 24 hours have passed lose their wrapping key
//!   (destroyed in the root; the token stays, answered
//!   ExpiredImportTokenException).
//! - **Crash safety**: a wrapping key about to be made, or retired (by a
//!   newer GetParametersForImport or by a finished import), is recorded in
//!   `import_pending` first (in the transaction that retires it); once
//!   destroyed, the record goes. Start-up reconciliation settles what a
//!   crash left: a pending key that no stored token names is destroyed.
//!   So the root holds no wrapping key that the store does not name.

use ctutils::CtEq;
use zeroize::Zeroizing;

use super::lifecycle::{self, Transition};
use super::Service;
use crate::crypto::import::ImportAlgorithm;
use crate::crypto::{rng, KeyMaterial};
use crate::errors::{self, format_key_id};
use crate::keystore::{KeyRecord, Keystore, StoreError};
use crate::root::{ImportWrapping, WrappingKeySpec};
use kms_proto::{ErrorKind, KmsError, Origin};

/// Length of an import token.
pub(crate) const TOKEN_LEN: usize = 1 + 16 + 32;
const TOKEN_VERSION: u8 = 1;

/// A new import token for key `key_id`.
pub(crate) fn new_token(key_id: &[u8; 16]) -> Vec<u8> {
    let mut token = Vec::with_capacity(TOKEN_LEN);
    token.push(TOKEN_VERSION);
    token.extend_from_slice(key_id);
    let mut random = [0u8; 32];
    rng::fill_os(&mut random);
    token.extend_from_slice(&random);
    token
}

/// The key a token was made for, if it is one of ours.
pub(crate) fn token_key(token: &[u8]) -> Option<[u8; 16]> {
    if token.len() != TOKEN_LEN || token[0] != TOKEN_VERSION {
        return None;
    }
    token[1..17].try_into().ok()
}

/// The root's name of the wrapping key pair behind `token`.
pub(crate) fn wrapping_key_id(token: &[u8]) -> Option<[u8; 20]> {
    let key = token_key(token)?;
    let mut id = [0u8; 20];
    id[..16].copy_from_slice(&key);
    id[16..].copy_from_slice(&token[17..21]);
    Some(id)
}

/// Whether two tokens are equal, in time independent of where they differ.
pub(crate) fn same_token(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.ct_eq(b).to_bool()
}

/// Whether two material digests are equal, in constant time.
pub(crate) fn same_digest(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a[..].ct_eq(&b[..]).to_bool()
}

/// The wrapping algorithm kmsd implements for `a`, or
/// UnsupportedOperationException naming it (AWS offers the SHA-1 and
/// PKCS#1 v1.5 ones too; kmsd does not: docs/import.md).
pub(crate) fn algorithm(a: kms_proto::WrappingAlgorithm) -> Result<ImportAlgorithm, KmsError> {
    match a {
        kms_proto::WrappingAlgorithm::RsaesOaepSha256 => Ok(ImportAlgorithm::RsaesOaepSha256),
        kms_proto::WrappingAlgorithm::RsaAesKeyWrapSha256 => {
            Ok(ImportAlgorithm::RsaAesKeyWrapSha256)
        }
        other => Err(KmsError::new(
            ErrorKind::UnsupportedOperation,
            format!(
                "WrappingAlgorithm {} is not supported: kmsd imports with RSAES_OAEP_SHA_256 or \
                 RSA_AES_KEY_WRAP_SHA_256",
                other.name()
            ),
        )),
    }
}

/// The root's key size for `s`.
pub(crate) fn spec(s: kms_proto::WrappingKeySpec) -> WrappingKeySpec {
    match s {
        kms_proto::WrappingKeySpec::Rsa2048 => WrappingKeySpec::Rsa2048,
        kms_proto::WrappingKeySpec::Rsa3072 => WrappingKeySpec::Rsa3072,
        kms_proto::WrappingKeySpec::Rsa4096 => WrappingKeySpec::Rsa4096,
    }
}

/// The root's import wrapping, or an internal error (every real root has
/// one).
pub(crate) fn wrapping(svc: &Service) -> Result<&dyn ImportWrapping, KmsError> {
    svc.core.root.import_wrapping().ok_or_else(|| {
        errors::internal(
            "importing key material",
            "the root of trust cannot hold import wrapping keys",
        )
    })
}

/// `key_id`'s record, checked to be an EXTERNAL key (else
/// UnsupportedOperationException, as AWS) that `operation` may use in its
/// state.
pub(crate) fn external_key(
    store: &Keystore,
    key_id: &[u8; 16],
    operation: &str,
    use_: lifecycle::Use,
) -> Result<KeyRecord, KmsError> {
    let record = store
        .get_key(key_id)
        .map_err(|e| errors::store("reading key", e))?
        .ok_or_else(|| errors::key_not_found(key_id))?;
    if record.origin != Origin::External {
        return Err(lifecycle::wrong_origin(key_id, record.origin, operation));
    }
    lifecycle::check(use_, key_id, record.state)?;
    Ok(record)
}

/// The digest of `material` for key `key_id` (module docs): what AWS calls
/// the key material's identifier, "based on the KMS key ID and the
/// imported key material".
pub(crate) fn material_digest(key_id: &[u8; 16], material: &KeyMaterial) -> [u8; 32] {
    let mut input = Zeroizing::new(Vec::with_capacity(40 + 16 + 32));
    input.extend_from_slice(b"kmsd imported key material digest v1");
    input.extend_from_slice(key_id);
    input.extend_from_slice(material.expose());
    crate::crypto::rsa::sha256(&input)
}

/// Destroys wrapping key pair `id` in the root (if it holds one), then
/// forgets its pending record; a failure leaves the record for start-up
/// reconciliation, and is logged.
pub(crate) fn settle_wrapping_key(svc: &Service, id: &[u8; 20]) {
    let Some(w) = svc.core.root.import_wrapping() else {
        return;
    };
    let settled = w
        .destroy(id)
        .map_err(|e| e.to_string())
        .and_then(|_| svc.store().end_wrapping_key(id).map_err(|e| e.to_string()));
    if let Err(e) = settled {
        tracing::warn!(
            wrapping_key_id = %hex(id),
            "settling an import wrapping key: {e}; start-up will retry"
        );
    }
}

/// How many expired keys one pass handles at most (the next pass goes on).
const EXPIRY_BATCH: u32 = 1000;

/// Due work: imported material whose ValidTo is at or before `now` is
/// deleted (the key goes PendingImport; a key pending deletion stays so),
/// each key committed, then invalidated. Returns how many keys lost their
/// material.
pub(crate) fn expire_material(svc: &Service, now: i64) -> Result<usize, KmsError> {
    let due = svc
        .store()
        .expired_material(now, EXPIRY_BATCH)
        .map_err(|e| errors::store("finding expired key material", e))?;
    let mut done = 0;
    for id in due {
        {
            let mut store = svc.store();
            // Read again under the store lock: a re-import since may have
            // moved its expiry.
            let Some(record) = store
                .get_key(&id)
                .map_err(|e| errors::store("reading key", e))?
            else {
                continue;
            };
            if record.current_version == 0 || record.valid_to.is_none_or(|t| t > now) {
                continue;
            }
            let state = lifecycle::transition(&id, record.state, Transition::RemoveMaterial)?;
            store
                .remove_material(&id, state)
                .map_err(|e| errors::store("deleting expired key material", e))?;
        }
        svc.invalidate(&id);
        tracing::info!(key_id = %format_key_id(&id), "imported key material expired and was deleted");
        done += 1;
    }
    Ok(done)
}

/// Due work: import parameters whose validity ended at or before `now`
/// lose their wrapping key (destroyed in the root first, then forgotten).
/// Returns how many.
pub(crate) fn expire_import_parameters(svc: &Service, now: i64) -> Result<usize, KmsError> {
    let due = svc
        .store()
        .expired_import_params(now)
        .map_err(|e| errors::store("finding expired import parameters", e))?;
    let Some(w) = svc.core.root.import_wrapping() else {
        return Ok(0);
    };
    let mut done = 0;
    for (key_id, token, _handle) in due {
        if let Some(id) = wrapping_key_id(&token) {
            w.destroy(&id)
                .map_err(|e| errors::root("destroying an expired import wrapping key", e))?;
        }
        svc.store()
            .clear_wrapping_key(&key_id, &token)
            .map_err(|e| errors::store("forgetting an expired import wrapping key", e))?;
        done += 1;
    }
    Ok(done)
}

/// Settles the import wrapping keys recorded pending (being made, or
/// retired, when a crash or a failing root interrupted): a key a stored
/// token still names is kept, any other is destroyed, and the record
/// forgotten. Run at start-up, before serving (no GetParametersForImport
/// is in flight then). Returns how many keys were destroyed; a root failure
/// is logged and the record kept for the next start.
///
/// Only recorded ids are touched, never every `kmsd-import-*` object the
/// root holds: another kmsd may share the token.
///
/// # Errors
///
/// The store failing.
pub fn reconcile_import_wrapping_keys(svc: &Service) -> Result<usize, StoreError> {
    let pending = svc.store().pending_wrapping_keys()?;
    if pending.is_empty() {
        return Ok(0);
    }
    let Some(w) = svc.core.root.import_wrapping() else {
        return Ok(0);
    };
    let live: Vec<[u8; 20]> = svc
        .store()
        .live_import_tokens()?
        .iter()
        .filter_map(|t| wrapping_key_id(t))
        .collect();
    let mut destroyed = 0;
    for id in pending {
        if live.contains(&id) {
            svc.store().end_wrapping_key(&id)?;
            continue;
        }
        match w.destroy(&id) {
            Ok(was) => {
                svc.store().end_wrapping_key(&id)?;
                destroyed += usize::from(was);
                tracing::warn!(
                    wrapping_key_id = %hex(&id),
                    destroyed = was,
                    "settled an import wrapping key left by an interrupted GetParametersForImport \
                     or ImportKeyMaterial"
                );
            }
            Err(e) => tracing::error!(
                wrapping_key_id = %hex(&id),
                "could not settle an import wrapping key (kept for the next start): {e}"
            ),
        }
    }
    Ok(destroyed)
}

fn hex(id: &[u8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::identity::Identity;
    use crate::root::{FileRoot, RootError, RootOfTrust};
    use crate::service::{scheduler, ServiceOptions};
    use kms_proto::*;
    use std::sync::Arc;

    const PEER: Identity = Identity::local(0, 0, 0);
    const T0: i64 = 1_800_000_000;
    const DAY: i64 = 24 * 60 * 60;

    fn service_in(dir: &std::path::Path, clock: &Arc<ManualClock>) -> Service {
        Service::with_options(
            Keystore::open(dir).unwrap(),
            Arc::new(FileRoot::from_key(KeyMaterial::from_bytes([9; 32]))),
            ServiceOptions {
                access: Default::default(),
                limits: Default::default(),
                max_keys: 1000,
                cache: Default::default(),
                loader_threads: 1,
                queue_capacity: 64,
                clock: Arc::clone(clock) as Arc<dyn crate::clock::Clock>,
                lifecycle_limits: Default::default(),
                hsm_invocation_limit: crate::service::backing::HSM_INVOCATION_LIMIT,
                arns: Default::default(),
            },
        )
        .unwrap()
    }

    fn call(svc: &Service, op: Operation<'_>) -> Result<Output, KmsError> {
        svc.call(&op, &PEER)
    }

    fn kind(r: Result<Output, KmsError>) -> ErrorKind {
        r.expect_err("an error").kind
    }

    fn create(svc: &Service, origin: Origin) -> KeyMetadata {
        match call(
            svc,
            Operation::CreateKey(CreateKey {
                origin,
                ..CreateKey::default()
            }),
        ) {
            Ok(Output::CreateKey(m)) => m,
            other => panic!("{other:?}"),
        }
    }

    fn describe(svc: &Service, key: &str) -> KeyMetadata {
        match call(
            svc,
            Operation::DescribeKey(DescribeKey {
                key_id: key,
                ..Default::default()
            }),
        ) {
            Ok(Output::DescribeKey(m)) => m,
            other => panic!("{other:?}"),
        }
    }

    fn params(
        svc: &Service,
        key: &str,
        algorithm: WrappingAlgorithm,
    ) -> Result<GetParametersForImportOutput, KmsError> {
        call(
            svc,
            Operation::GetParametersForImport(kms_proto::GetParametersForImport {
                key_id: key,
                wrapping_algorithm: algorithm,
                wrapping_key_spec: kms_proto::WrappingKeySpec::Rsa2048,
            }),
        )
        .map(|o| match o {
            Output::GetParametersForImport(p) => p,
            other => panic!("{other:?}"),
        })
    }

    /// RSAES-OAEP-SHA-256 by OpenSSL (in process here; the integration
    /// tests use its command line).
    /// OpenSSL's RSAES-OAEP-SHA-256 encryption (the client's side).
    fn oaep(public_key: &[u8], plaintext: &[u8]) -> Vec<u8> {
        crate::crypto::rsa::encrypt_oaep_sha256(public_key, plaintext).unwrap()
    }

    fn import(
        svc: &Service,
        key: &str,
        token: &[u8],
        encrypted: &[u8],
        valid_to: Option<i64>,
    ) -> Result<Output, KmsError> {
        call(
            svc,
            Operation::ImportKeyMaterial(kms_proto::ImportKeyMaterial {
                key_id: key,
                import_token: token,
                encrypted_key_material: encrypted,
                valid_to,
                expiration_model: if valid_to.is_some() {
                    ExpirationModel::KeyMaterialExpires
                } else {
                    ExpirationModel::KeyMaterialDoesNotExpire
                },
            }),
        )
    }

    fn import_material(svc: &Service, key: &str, material: &[u8], valid_to: Option<i64>) {
        let p = params(svc, key, WrappingAlgorithm::RsaesOaepSha256).unwrap();
        import(svc, key, &p.import_token, &oaep(&p.public_key, material), valid_to).unwrap();
    }

    fn encrypt(svc: &Service, key: &str) -> Result<Vec<u8>, KmsError> {
        call(
            svc,
            Operation::Encrypt(Encrypt {
                key_id: key,
                plaintext: b"attack at dawn",
                context: vec![],
                ..Default::default()
            }),
        )
        .map(|o| match o {
            Output::Encrypt(e) => e.ciphertext_blob,
            other => panic!("{other:?}"),
        })
    }

    fn decrypt(svc: &Service, blob: &[u8]) -> Result<Vec<u8>, KmsError> {
        call(
            svc,
            Operation::Decrypt(Decrypt {
                ciphertext_blob: blob,
                key_id: None,
                context: vec![],
                ..Default::default()
            }),
        )
        .map(|o| match o {
            Output::Decrypt(d) => d.plaintext.expose().to_vec(),
            other => panic!("{other:?}"),
        })
    }

    fn delete_material(svc: &Service, key: &str) -> Result<Output, KmsError> {
        call(
            svc,
            Operation::DeleteImportedKeyMaterial(DeleteImportedKeyMaterial { key_id: key }),
        )
    }

    #[test]
    fn import_use_delete_and_reimport_the_same_material() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::at(T0);
        let svc = service_in(dir.path(), &clock);
        let key = create(&svc, Origin::External);
        assert_eq!(
            (key.key_state, key.current_version, key.expiration_model),
            (KeyState::PendingImport, 0, None)
        );
        let id = &key.key_id;
        let e = encrypt(&svc, id).unwrap_err();
        assert_eq!(e.kind, ErrorKind::KmsInvalidState);
        assert!(e.message.contains("pending import"), "{e}");

        let p = params(&svc, id, WrappingAlgorithm::RsaesOaepSha256).unwrap();
        assert_eq!(p.parameters_valid_to, T0 + DAY);
        assert_eq!(p.key_id, crate::service::Arns::default().key_arn(&token_key(&p.import_token).unwrap()));
        let material = [0x5Cu8; 32];
        import(&svc, id, &p.import_token, &oaep(&p.public_key, &material), None).unwrap();
        let m = describe(&svc, id);
        assert_eq!(
            (m.key_state, m.current_version, m.expiration_model, m.valid_to),
            (
                KeyState::Enabled,
                1,
                Some(ExpirationModel::KeyMaterialDoesNotExpire),
                None
            )
        );
        let blob = encrypt(&svc, id).unwrap();
        assert_eq!(decrypt(&svc, &blob).unwrap(), b"attack at dawn");
        // The token was used up.
        assert_eq!(
            kind(import(&svc, id, &p.import_token, &oaep(&p.public_key, &material), None)),
            ErrorKind::InvalidImportToken
        );

        delete_material(&svc, id).unwrap();
        let m = describe(&svc, id);
        assert_eq!((m.key_state, m.current_version), (KeyState::PendingImport, 0));
        for e in [encrypt(&svc, id).unwrap_err(), decrypt(&svc, &blob).unwrap_err()] {
            assert_eq!(e.kind, ErrorKind::KmsInvalidState);
            assert!(e.message.contains("pending import"), "{e}");
        }
        // Deleting again changes nothing.
        delete_material(&svc, id).unwrap();

        // Other material is refused, nothing applied; the same is taken.
        let p = params(&svc, id, WrappingAlgorithm::RsaesOaepSha256).unwrap();
        let e = import(&svc, id, &p.import_token, &oaep(&p.public_key, &[0x5D; 32]), None)
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::IncorrectKeyMaterial);
        assert!(e.message.contains("imported into"), "{e}");
        assert_eq!(describe(&svc, id).key_state, KeyState::PendingImport);
        import(&svc, id, &p.import_token, &oaep(&p.public_key, &material), Some(T0 + DAY)).unwrap();
        assert_eq!(decrypt(&svc, &blob).unwrap(), b"attack at dawn");
        let m = describe(&svc, id);
        assert_eq!(
            (m.key_state, m.valid_to, m.expiration_model),
            (
                KeyState::Enabled,
                Some(T0 + DAY),
                Some(ExpirationModel::KeyMaterialExpires)
            )
        );
        // Imported into an Enabled key again (a new expiry): same material.
        import_material(&svc, id, &material, None);
        assert_eq!(describe(&svc, id).valid_to, None);
        // Nothing pending in the store once all is settled.
        assert!(svc.store().pending_wrapping_keys().unwrap().is_empty());
    }

    #[test]
    fn key_wrap_import_survives_a_restart_between_parameters_and_import() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::at(T0);
        let (key, p) = {
            let svc = service_in(dir.path(), &clock);
            let key = create(&svc, Origin::External).key_id;
            let p = params(&svc, &key, WrappingAlgorithm::RsaAesKeyWrapSha256).unwrap();
            (key, p)
        };
        clock.advance(DAY - 1);
        let svc = service_in(dir.path(), &clock);
        let ephemeral = [0x11u8; 32];
        let mut encrypted = oaep(&p.public_key, &ephemeral);
        use aes_kw::KeyInit as _;
        let kwp = aes_kw::KwpAes256::new((&ephemeral).into());
        let mut wrapped = [0u8; 40];
        encrypted.extend(kwp.wrap_key(&[0x22; 32], &mut wrapped).unwrap());
        import(&svc, &key, &p.import_token, &encrypted, None).unwrap();
        let blob = encrypt(&svc, &key).unwrap();
        assert_eq!(decrypt(&svc, &blob).unwrap(), b"attack at dawn");
    }

    #[test]
    fn bad_tokens_material_and_requests_each_get_their_exception() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::at(T0);
        let svc = service_in(dir.path(), &clock);
        let a = create(&svc, Origin::External).key_id;
        let b = create(&svc, Origin::External).key_id;
        let pa = params(&svc, &a, WrappingAlgorithm::RsaesOaepSha256).unwrap();
        let pb = params(&svc, &b, WrappingAlgorithm::RsaesOaepSha256).unwrap();
        let good = oaep(&pa.public_key, &[1; 32]);

        // Another key's token.
        let e = import(&svc, &a, &pb.import_token, &good, None).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidImportToken);
        assert!(e.message.contains("another key"), "{e}");
        // Garbage and a truncated token.
        assert_eq!(kind(import(&svc, &a, b"junk", &good, None)), ErrorKind::InvalidImportToken);
        assert_eq!(
            kind(import(&svc, &a, &pa.import_token[1..], &good, None)),
            ErrorKind::InvalidImportToken
        );
        // Material for another key's wrapping key, and garbage.
        let for_b = oaep(&pb.public_key, &[1; 32]);
        for bad in [&for_b[..], &[7u8; 256][..], &good[..100], b"x"] {
            assert_eq!(
                kind(import(&svc, &a, &pa.import_token, bad, None)),
                ErrorKind::InvalidCiphertext
            );
        }
        // The wrong length of material.
        for len in [16usize, 31, 33, 64] {
            let e = import(&svc, &a, &pa.import_token, &oaep(&pa.public_key, &vec![3; len]), None)
                .unwrap_err();
            assert_eq!(e.kind, ErrorKind::IncorrectKeyMaterial, "{len}");
            assert!(e.message.contains(&format!("{len} bytes")), "{e}");
        }
        // ValidTo and ExpirationModel.
        for (valid_to, model, what) in [
            (None, ExpirationModel::KeyMaterialExpires, "required"),
            (Some(T0), ExpirationModel::KeyMaterialExpires, "future"),
            (Some(T0 + 365 * DAY + 1), ExpirationModel::KeyMaterialExpires, "365 days"),
            (Some(T0 + 10), ExpirationModel::KeyMaterialDoesNotExpire, "omitted"),
        ] {
            let e = call(
                &svc,
                Operation::ImportKeyMaterial(kms_proto::ImportKeyMaterial {
                    key_id: &a,
                    import_token: &pa.import_token,
                    encrypted_key_material: &good,
                    valid_to,
                    expiration_model: model,
                }),
            )
            .unwrap_err();
            assert_eq!(e.kind, ErrorKind::Validation);
            assert!(e.message.contains("ValidTo") && e.message.contains(what), "{e}");
        }
        // None of it applied.
        assert_eq!(describe(&svc, &a).key_state, KeyState::PendingImport);
        // A replaced token: the newer parameters win.
        let pa2 = params(&svc, &a, WrappingAlgorithm::RsaesOaepSha256).unwrap();
        assert_eq!(
            kind(import(&svc, &a, &pa.import_token, &good, None)),
            ErrorKind::InvalidImportToken
        );
        // Expired, by the clock.
        clock.advance(DAY);
        let good2 = oaep(&pa2.public_key, &[1; 32]);
        assert_eq!(
            kind(import(&svc, &a, &pa2.import_token, &good2, None)),
            ErrorKind::ExpiredImportToken
        );
        // Unsupported algorithms, other origins, unknown keys.
        let e = params(&svc, &a, WrappingAlgorithm::RsaesOaepSha1).unwrap_err();
        assert_eq!(e.kind, ErrorKind::UnsupportedOperation);
        assert!(e.message.contains("RSAES_OAEP_SHA_1"), "{e}");
        let own = create(&svc, Origin::Kmsd).key_id;
        for e in [
            params(&svc, &own, WrappingAlgorithm::RsaesOaepSha256).unwrap_err(),
            import(&svc, &own, &pa2.import_token, &good2, None).unwrap_err(),
            delete_material(&svc, &own).unwrap_err(),
        ] {
            assert_eq!(e.kind, ErrorKind::UnsupportedOperation, "{e}");
            assert!(e.message.contains("origin"), "{e}");
        }
        let unknown = "6f1c4ad6-9b0e-4c1e-9d53-4f7a6c2d1e00";
        assert_eq!(
            params(&svc, unknown, WrappingAlgorithm::RsaesOaepSha256)
                .unwrap_err()
                .kind,
            ErrorKind::NotFound
        );
        assert_eq!(kind(delete_material(&svc, unknown)), ErrorKind::NotFound);
    }

    #[test]
    fn material_and_parameters_expire_by_the_clock() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::at(T0);
        let svc = service_in(dir.path(), &clock);
        let key = create(&svc, Origin::External).key_id;
        import_material(&svc, &key, &[4; 32], Some(T0 + 100));
        let blob = encrypt(&svc, &key).unwrap();
        let unused = params(&svc, &key, WrappingAlgorithm::RsaesOaepSha256).unwrap();

        clock.advance(99);
        let pass = scheduler::run_due(&svc);
        assert_eq!(pass.total(), 0, "{pass:?}");
        assert_eq!(decrypt(&svc, &blob).unwrap(), b"attack at dawn");

        clock.advance(1);
        let pass = scheduler::run_due(&svc);
        assert!(pass.failed.is_empty(), "{pass:?}");
        assert!(pass.done.contains(&("imported material expiry", 1)), "{pass:?}");
        let m = describe(&svc, &key);
        assert_eq!(
            (m.key_state, m.current_version, m.valid_to),
            (KeyState::PendingImport, 0, None)
        );
        assert_eq!(kind(decrypt(&svc, &blob).map(|_| Output::ImportKeyMaterial)), ErrorKind::KmsInvalidState);

        // The unused parameters' 24 hours pass: their wrapping key goes, the
        // token answers that it expired.
        clock.advance(DAY);
        let pass = scheduler::run_due(&svc);
        assert!(pass.done.contains(&("import parameters expiry", 1)), "{pass:?}");
        assert!(svc.store().import_params(&token_key(&unused.import_token).unwrap()).unwrap().unwrap().wrapping_key.is_empty());
        assert_eq!(
            kind(import(&svc, &key, &unused.import_token, &oaep(&unused.public_key, &[4; 32]), None)),
            ErrorKind::ExpiredImportToken
        );
        assert_eq!(scheduler::run_due(&svc).total(), 0, "nothing twice");
        // The same material comes back under new parameters.
        import_material(&svc, &key, &[4; 32], None);
        assert_eq!(decrypt(&svc, &blob).unwrap(), b"attack at dawn");
    }

    #[test]
    fn states_follow_aws_for_imports() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::at(T0);
        let svc = service_in(dir.path(), &clock);
        let key = create(&svc, Origin::External).key_id;
        let id = token_key(&params(&svc, &key, WrappingAlgorithm::RsaesOaepSha256).unwrap().import_token).unwrap();
        import_material(&svc, &key, &[8; 32], None);

        // A Disabled key keeps its state through a re-import, and goes
        // PendingImport when its material is deleted; a re-import then
        // enables it (AWS).
        svc.store().set_state(&id, KeyState::Disabled).unwrap();
        svc.invalidate(&id);
        import_material(&svc, &key, &[8; 32], None);
        assert_eq!(describe(&svc, &key).key_state, KeyState::Disabled);
        assert_eq!(kind(encrypt(&svc, &key).map(|_| Output::ImportKeyMaterial)), ErrorKind::Disabled);
        delete_material(&svc, &key).unwrap();
        assert_eq!(describe(&svc, &key).key_state, KeyState::PendingImport);
        import_material(&svc, &key, &[8; 32], None);
        assert_eq!(describe(&svc, &key).key_state, KeyState::Enabled);

        // Pending deletion: the material can be deleted (the state stays),
        // nothing can be imported, and crypto says "pending deletion".
        svc.store().set_state(&id, KeyState::PendingDeletion).unwrap();
        svc.invalidate(&id);
        delete_material(&svc, &key).unwrap();
        let m = describe(&svc, &key);
        assert_eq!((m.key_state, m.current_version), (KeyState::PendingDeletion, 0));
        let e = encrypt(&svc, &key).unwrap_err();
        assert!(e.message.contains("pending deletion"), "{e}");
        assert_eq!(
            params(&svc, &key, WrappingAlgorithm::RsaesOaepSha256).unwrap_err().kind,
            ErrorKind::KmsInvalidState
        );
        // A key with no material whose state says Enabled (a cancelled
        // deletion) is still refused, never used.
        svc.store().set_state(&id, KeyState::Enabled).unwrap();
        svc.invalidate(&id);
        let e = encrypt(&svc, &key).unwrap_err();
        assert_eq!(e.kind, ErrorKind::KmsInvalidState);
        assert!(e.message.contains("pending import"), "{e}");
    }

    /// A file root that keeps a list of the wrapping pairs it holds, as a
    /// token would: a destroyed pair no longer decrypts.
    struct HoldingRoot {
        file: FileRoot,
        held: parking_lot::Mutex<std::collections::BTreeSet<[u8; 20]>>,
    }

    impl RootOfTrust for HoldingRoot {
        fn kind(&self) -> &'static str {
            "file"
        }
        fn wrap(&self, key: &KeyMaterial) -> Result<Vec<u8>, RootError> {
            self.file.wrap(key)
        }
        fn unwrap(&self, wrapped: &[u8]) -> Result<KeyMaterial, RootError> {
            self.file.unwrap(wrapped)
        }
        fn import_wrapping(&self) -> Option<&dyn ImportWrapping> {
            Some(self)
        }
    }

    impl ImportWrapping for HoldingRoot {
        fn generate(
            &self,
            id: &[u8; 20],
            spec: crate::root::WrappingKeySpec,
        ) -> Result<crate::root::WrappingKeyPair, RootError> {
            let pair = self.file.import_wrapping().unwrap().generate(id, spec)?;
            self.held.lock().insert(*id);
            Ok(pair)
        }
        fn decrypt(
            &self,
            id: &[u8; 20],
            handle: &[u8],
            ciphertext: &[u8],
        ) -> Result<Option<Zeroizing<Vec<u8>>>, RootError> {
            if !self.held.lock().contains(id) {
                return Err(RootError::Invalid("no such pair".into()));
            }
            self.file
                .import_wrapping()
                .unwrap()
                .decrypt(id, handle, ciphertext)
        }
        fn destroy(&self, id: &[u8; 20]) -> Result<bool, RootError> {
            Ok(self.held.lock().remove(id))
        }
        fn held(&self) -> Result<Vec<[u8; 20]>, RootError> {
            Ok(self.held.lock().iter().copied().collect())
        }
    }

    #[test]
    fn the_root_holds_exactly_the_pairs_the_store_names() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::at(T0);
        let root = Arc::new(HoldingRoot {
            file: FileRoot::from_key(KeyMaterial::from_bytes([7; 32])),
            held: Default::default(),
        });
        let svc = Service::with_options(
            Keystore::open(dir.path()).unwrap(),
            Arc::clone(&root) as Arc<dyn RootOfTrust>,
            ServiceOptions {
                access: Default::default(),
                limits: Default::default(),
                max_keys: 1000,
                cache: Default::default(),
                loader_threads: 1,
                queue_capacity: 64,
                clock: Arc::clone(&clock) as Arc<dyn crate::clock::Clock>,
                lifecycle_limits: Default::default(),
                hsm_invocation_limit: crate::service::backing::HSM_INVOCATION_LIMIT,
                arns: Default::default(),
            },
        )
        .unwrap();
        // Sorted: the fake root keeps its pairs in a hash set.
        let held = || {
            let mut v = root.held.lock().iter().copied().collect::<Vec<_>>();
            v.sort();
            v
        };
        let key = create(&svc, Origin::External).key_id;

        // New parameters replace the old, whose pair is destroyed.
        let first = params(&svc, &key, WrappingAlgorithm::RsaesOaepSha256).unwrap();
        let second = params(&svc, &key, WrappingAlgorithm::RsaesOaepSha256).unwrap();
        assert_eq!(held(), vec![wrapping_key_id(&second.import_token).unwrap()]);
        let _ = first;
        // A finished import destroys its pair.
        import(&svc, &key, &second.import_token, &oaep(&second.public_key, &[3; 32]), None).unwrap();
        assert!(held().is_empty());
        assert!(svc.store().pending_wrapping_keys().unwrap().is_empty());

        // As a crash would leave them: a pair made but not stored, and a
        // stored one whose pending record was not yet cleared.
        let live = params(&svc, &key, WrappingAlgorithm::RsaesOaepSha256).unwrap();
        let live_id = wrapping_key_id(&live.import_token).unwrap();
        let orphan = [0x0F; 20];
        svc.store().begin_wrapping_key(&orphan, T0).unwrap();
        root.generate(&orphan, crate::root::WrappingKeySpec::Rsa2048).unwrap();
        svc.store().begin_wrapping_key(&live_id, T0).unwrap();
        // Another kmsd's pair in the same token, never recorded here.
        let foreign = [0xF0; 20];
        root.generate(&foreign, crate::root::WrappingKeySpec::Rsa2048).unwrap();
        assert_eq!(svc.reconcile_import_wrapping_keys().unwrap(), 1);
        let mut expected = vec![live_id, foreign];
        expected.sort();
        assert_eq!(held(), expected);
        assert!(svc.store().pending_wrapping_keys().unwrap().is_empty());
        assert_eq!(svc.reconcile_import_wrapping_keys().unwrap(), 0);

        // Expired parameters lose their pair.
        clock.advance(DAY);
        assert!(scheduler::run_due(&svc).done.contains(&("import parameters expiry", 1)));
        assert_eq!(held(), vec![foreign]);
        assert_eq!(
            kind(import(&svc, &key, &live.import_token, &oaep(&live.public_key, &[3; 32]), None)),
            ErrorKind::ExpiredImportToken
        );

        // A key deleted with live parameters: its pair goes with it.
        let doomed = create(&svc, Origin::External).key_id;
        let doomed_params = params(&svc, &doomed, WrappingAlgorithm::RsaesOaepSha256).unwrap();
        assert!(held().contains(&wrapping_key_id(&doomed_params.import_token).unwrap()));
        call(
            &svc,
            Operation::ScheduleKeyDeletion(kms_proto::ScheduleKeyDeletion {
                key_id: &doomed,
                pending_window_in_days: Some(7),
            }),
        )
        .unwrap();
        clock.advance(7 * DAY);
        assert!(scheduler::run_due(&svc).done.contains(&("deletion", 1)));
        assert_eq!(held(), vec![foreign]);
        assert!(svc.store().pending_wrapping_keys().unwrap().is_empty());
    }

    #[test]
    fn tokens_name_their_key_and_pair() {
        let key = [0xAB; 16];
        let a = new_token(&key);
        let b = new_token(&key);
        assert_eq!(a.len(), TOKEN_LEN);
        assert_ne!(a, b);
        assert_eq!(token_key(&a), Some(key));
        let id = wrapping_key_id(&a).unwrap();
        assert_eq!(&id[..16], &key);
        assert_eq!(&id[16..], &a[17..21]);
        assert!(same_token(&a, &a.clone()));
        assert!(!same_token(&a, &b));
        assert!(!same_token(&a, &a[..48]));
        for bad in [&a[..48], &[0u8; TOKEN_LEN][..], b"".as_slice()] {
            assert_eq!(token_key(bad), None);
            assert_eq!(wrapping_key_id(bad), None);
        }
    }

    #[test]
    fn the_digest_is_bound_to_the_key_and_the_material() {
        let m = KeyMaterial::from_bytes([5; 32]);
        let d = material_digest(&[1; 16], &m);
        assert!(same_digest(&d, &material_digest(&[1; 16], &m.clone())));
        assert!(!same_digest(&d, &material_digest(&[2; 16], &m)));
        let m2 = KeyMaterial::from_bytes([6; 32]);
        assert!(!same_digest(&d, &material_digest(&[1; 16], &m2)));
        // Not a plain hash of the material: another key's digest of the
        // same material tells nothing.
        assert_ne!(d, crate::crypto::rsa::sha256(m.expose()));
    }

    #[test]
    fn only_the_sha_256_algorithms_are_offered() {
        use kms_proto::WrappingAlgorithm as W;
        assert_eq!(algorithm(W::RsaesOaepSha256), Ok(ImportAlgorithm::RsaesOaepSha256));
        assert_eq!(
            algorithm(W::RsaAesKeyWrapSha256),
            Ok(ImportAlgorithm::RsaAesKeyWrapSha256)
        );
        for a in [W::RsaesPkcs1V15, W::RsaesOaepSha1, W::RsaAesKeyWrapSha1] {
            let e = algorithm(a).unwrap_err();
            assert_eq!(e.kind, ErrorKind::UnsupportedOperation);
            assert!(e.message.contains(a.name()), "{e}");
        }
        for s in kms_proto::WrappingKeySpec::ALL {
            assert_eq!(spec(*s).name(), s.name());
        }
    }
}
