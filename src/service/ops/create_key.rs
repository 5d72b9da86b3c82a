//! CreateKey: a new symmetric KMS key with a fresh 256-bit backing key,
//! made by kmsd and wrapped by the root of trust (origin KMSD), or
//! generated inside the HSM and never leaving it (origin HSM).
//!
//! An HSM-only key takes two steps that no transaction spans: the token
//! key, then the store's record. So the limit is checked and the key is
//! recorded as *pending* in the store before the token object is generated; a
//! failure after the generation destroys the token object, and a crash in
//! between leaves the pending record, which start-up reconciliation
//! ([`reconcile_hsm_only_keys`]) settles by destroying the token object. A token
//! key is never left behind that no stored key names, and no stored key
//! names a token object that was not made.

use crate::service::LifecycleLimits;
use crate::crypto::{rng, KeyMaterial};
use crate::errors;
use crate::identity::Identity;
use crate::keystore::KeyRecord;
use crate::root::HsmOnlyKeys;
use crate::service::backing::object_id;
use crate::service::op::{Authz, Control, ControlCtx, ExecError, Op, OutputSize};
use crate::service::{format_key_id, Service, MAX_KEY_ARN_TEXT, KEY_ID_TEXT};
use kms_proto::{CreateKey, ErrorKind, KeyState, KmsError, Origin, Output};

/// Validates the request against the configured limits: the description
/// (ValidationException naming Description), the tags (see
/// `tag_resource::validate_tags`; more than
/// `limits.max_tags_per_key` is TagException: the request's tags are not
/// valid for a key, and no retry makes them so). KeyUsage and KeySpec
/// decode only as ENCRYPT_DECRYPT and SYMMETRIC_DEFAULT, the only ones
/// kmsd has (the codec answers others ValidationException).
pub fn validate(req: &CreateKey<'_>, limits: &LifecycleLimits) -> Result<(), KmsError> {
    super::update_key_description::validate_description(req.description, limits)?;
    super::tag_resource::validate_tags(&req.tags, limits)?;
    if req.tags.len() > limits.max_tags_per_key as usize {
        return Err(KmsError::new(
            ErrorKind::Tag,
            format!(
                "Tags: {} tags, more than the {} a key may have (limits.max_tags_per_key)",
                req.tags.len(),
                limits.max_tags_per_key
            ),
        ));
    }
    Ok(())
}

impl Op for CreateKey<'_> {
    const NAME: &'static str = "CreateKey";
    const ACTION: &'static str = "kms:CreateKey";
    type Plane = Control;

    fn authorization(&self) -> Authz<'_> {
        Authz::Account
    }

    fn output_size(&self) -> OutputSize {
        OutputSize {
            success: KEY_ID_TEXT + MAX_KEY_ARN_TEXT + self.description.len(),
            ..OutputSize::default()
        }
    }

    /// Creates the key: generates the backing key, wraps it with the root
    /// of trust, stores it durably with its tags, and caches it. An
    /// EXTERNAL key is stored PendingImport with no version (current
    /// version 0) until its material is imported.
    fn apply(&self, ctx: &ControlCtx<'_>, caller: &Identity) -> Result<Output, ExecError> {
        let svc = ctx.service();
        validate(self, svc.lifecycle_limits())?;
        let mut id = [0u8; 16];
        rng::fill(&mut id);
        let key_id = *uuid::Builder::from_random_bytes(id).into_uuid().as_bytes();
        // Checked (and names resolved) before anything is made.
        let policy = svc.new_key_policy(
            caller,
            &key_id,
            self.policy,
            self.bypass_policy_lockout_safety_check,
        )?;
        let created_at = svc.now();
        let external = self.origin == Origin::External;
        let record = KeyRecord {
            key_id,
            created_at,
            description: self.description.to_owned(),
            state: if external {
                KeyState::PendingImport
            } else {
                KeyState::Enabled
            },
            origin: self.origin,
            current_version: u32::from(!external),
            ..Default::default()
        };
        match self.origin {
            Origin::Hsm => create_in_hsm(ctx, &record, &self.tags, &policy)?,
            Origin::External => svc.store_new_key(record.clone(), None, &self.tags, &policy)?,
            Origin::Kmsd => {
                let material = KeyMaterial::generate();
                svc.store_new_key(record.clone(), Some(&material), &self.tags, &policy)?;
            }
        }
        tracing::info!(key_id = %format_key_id(&key_id), origin = ?self.origin, "created key");
        Ok(Output::CreateKey(svc.metadata(&record)))
    }
}

/// The HSM-only key's steps: limit and pending record, token object, store.
fn create_in_hsm(
    ctx: &ControlCtx<'_>,
    record: &KeyRecord,
    tags: &[kms_proto::Tag<'_>],
    policy: &crate::keystore::access::StoredPolicy,
) -> Result<(), KmsError> {
    let svc = ctx.service();
    let vault = svc.hsm_only_keys_for_create()?;
    let key_id = &record.key_id;
    let room = ctx
        .store()
        .begin_hsm_only_key(key_id, 1, record.created_at, svc.max_keys())
        .map_err(|e| errors::store("recording a pending HSM key", e))?;
    if !room {
        return Err(errors::store_full(svc.max_keys()));
    }
    if let Err(e) = vault.generate(&object_id(key_id, 1)) {
        // A failed generation (a timeout, a lost session) may still have
        // made the key.
        abandon(svc, vault, key_id, 1);
        return Err(errors::root("generating an HSM-only key", e));
    }
    if let Err(e) = svc.store_new_key(record.clone(), None, tags, policy) {
        abandon(svc, vault, key_id, 1);
        return Err(e);
    }
    Ok(())
}

/// Destroys the token object of a CreateKey that failed after its pending
/// record, then forgets the record; if either step fails the record stays
/// for start-up reconciliation.
fn abandon(svc: &Service, vault: &dyn HsmOnlyKeys, key_id: &[u8; 16], version: u32) {
    match vault.destroy(&object_id(key_id, version)) {
        Ok(_) => {
            if let Err(e) = svc.store().end_hsm_only_key(key_id, version) {
                tracing::warn!(
                    key_id = %format_key_id(key_id),
                    "forgetting a pending HSM key: {e}; start-up will"
                );
            }
        }
        Err(e) => tracing::warn!(
            key_id = %format_key_id(key_id),
            "destroying the token object of a failed CreateKey: {e}; start-up will retry"
        ),
    }
}

/// Settles the HSM-only key versions left pending by an interrupted
/// CreateKey or rotation (a crash between generating the token object and
/// storing it), or by a deletion whose token objects were not all
/// destroyed: a token object is kept only if the store holds its version;
/// otherwise it is destroyed (if it was made), and the record forgotten.
/// Run at start-up, before the daemon serves and before the scheduler's
/// first pass (so no CreateKey or rotation is in flight). Returns how many
/// token objects were destroyed; a record that cannot be settled now (the
/// HSM failing) is logged and kept for the next start.
///
/// # Errors
///
/// The store failing.
pub fn reconcile_hsm_only_keys(svc: &Service) -> Result<usize, crate::keystore::StoreError> {
    use crate::keystore::lifecycle::PendingReason;
    let pending = svc.store().pending_hsm_versions()?;
    if pending.is_empty() {
        return Ok(0);
    }
    let Some(vault) = svc.core.root.hsm_only_keys() else {
        tracing::warn!(
            pending = pending.len(),
            "HSM-only keys are pending but the root of trust has no HSM; kept for a start with the PKCS#11 root"
        );
        return Ok(0);
    };
    let mut destroyed = 0;
    for p in pending {
        let (key_id, version) = (p.key_id, p.version);
        // Storing a key (or a version) ends its pending record in the same
        // transaction, so a stored version is never pending; checked
        // anyway, since destroying a stored version's token object would
        // lose every ciphertext under it. A deleted key's versions are
        // destroyed whatever is found: the key is gone.
        let stored = match p.reason {
            PendingReason::Delete => false,
            PendingReason::Create => svc.store().get_key(&key_id)?.is_some(),
            PendingReason::Rotate => svc.store().has_version(&key_id, version)?,
        };
        if stored {
            svc.store().end_hsm_only_key(&key_id, version)?;
            continue;
        }
        match vault.destroy(&object_id(&key_id, version)) {
            Ok(was) => {
                svc.store().end_hsm_only_key(&key_id, version)?;
                destroyed += usize::from(was);
                tracing::warn!(
                    key_id = %format_key_id(&key_id),
                    version,
                    reason = ?p.reason,
                    token_key_destroyed = was,
                    "settled an HSM-only key whose CreateKey, rotation or deletion was interrupted (no orphan token object is left)"
                );
            }
            Err(e) => tracing::error!(
                key_id = %format_key_id(&key_id),
                version,
                "could not settle a pending HSM-only key (kept for the next start): {e}"
            ),
        }
    }
    Ok(destroyed)
}

#[cfg(test)]
mod tests {
    use crate::service::LifecycleLimits;
    use crate::service::ops::test_support::*;
    use kms_proto::*;

    #[test]
    fn a_key_is_created_with_its_description_and_tags() {
        let t = TestService::new();
        let m = t.create(CreateKey {
            description: "db",
            tags: tags(&[("team", "red"), ("env", "")]),
            ..Default::default()
        });
        assert_eq!((m.description.as_str(), m.key_state), ("db", KeyState::Enabled));
        assert_eq!(
            t.tags(&m.key_id),
            [("env".into(), "".into()), ("team".into(), "red".into())]
        );
    }

    #[test]
    fn bad_descriptions_and_tags_create_nothing() {
        let t = TestService::with_limits(LifecycleLimits {
            max_tags_per_key: 2,
            max_description_len: 10,
            ..Default::default()
        });
        let cases: [(CreateKey<'_>, ErrorKind, &str); 4] = [
            (
                CreateKey {
                    description: "12345678901",
                    ..Default::default()
                },
                ErrorKind::Validation,
                "Description",
            ),
            (
                CreateKey {
                    tags: tags(&[("a", "1"), ("b", "2"), ("c", "3")]),
                    ..Default::default()
                },
                ErrorKind::Tag,
                "max_tags_per_key",
            ),
            (
                CreateKey {
                    tags: tags(&[("aws:reserved", "1")]),
                    ..Default::default()
                },
                ErrorKind::Tag,
                "Tags[0].TagKey",
            ),
            (
                CreateKey {
                    tags: tags(&[("", "1")]),
                    ..Default::default()
                },
                ErrorKind::Validation,
                "Tags[0].TagKey",
            ),
        ];
        for (req, kind, needle) in cases {
            let e = t.call(Operation::CreateKey(req)).unwrap_err();
            assert_eq!(e.kind, kind, "{e}");
            assert!(e.message.contains(needle), "{e}");
        }
        assert_eq!(t.svc.store().count_keys().unwrap(), 0);
    }

    #[test]
    fn an_external_key_waits_for_its_material_and_refuses_crypto() {
        let t = TestService::new();
        let m = t.create(CreateKey {
            origin: Origin::External,
            tags: tags(&[("k", "v")]),
            ..Default::default()
        });
        assert_eq!(
            (m.key_state, m.enabled, m.current_version, m.origin),
            (KeyState::PendingImport, false, 0, Origin::External)
        );
        let id = crate::service::Arns::default().parse_key_id(&m.key_id).unwrap();
        assert!(t.svc.store().get_versions(&id).unwrap().is_empty());
        assert_eq!(t.describe(&m.key_id).key_state, KeyState::PendingImport);
        t.alias("alias/ext", &m.key_id);
        let check = |t: &TestService| {
            for key_id in [m.key_id.as_str(), "alias/ext"] {
                let e = t
                    .call(Operation::GenerateDataKey(GenerateDataKey {
                        key_id,
                        number_of_bytes: Some(32),
                        key_spec: None,
                        context: vec![],
                        ..Default::default()
                    }))
                    .unwrap_err();
                assert_eq!(e.kind, ErrorKind::KmsInvalidState);
                assert!(e.message.contains("pending import"), "{e}");
                let e = t
                    .call(Operation::Encrypt(Encrypt {
                        key_id,
                        plaintext: b"x",
                        context: vec![],
                        ..Default::default()
                    }))
                    .unwrap_err();
                assert_eq!(e.kind, ErrorKind::KmsInvalidState);
            }
        };
        // Cached at creation, and loaded from the store.
        check(&t);
        t.svc.invalidate(&id);
        check(&t);
    }
}
