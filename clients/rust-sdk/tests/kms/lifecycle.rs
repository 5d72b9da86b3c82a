//! Key states and rotation: EnableKey, DisableKey, ScheduleKeyDeletion,
//! CancelKeyDeletion, the rotation operations, GetParametersForImport.

use crate::support::{names_key, new_key, Daemon};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{AlgorithmSpec, KeyState, OriginType, RotationType, WrappingKeySpec};

async fn state_of(kms: &aws_sdk_kms::Client, id: &str) -> (KeyState, bool) {
    let meta = kms
        .describe_key()
        .key_id(id)
        .send()
        .await
        .expect("DescribeKey")
        .key_metadata
        .expect("KeyMetadata");
    (meta.key_state.expect("KeyState"), meta.enabled)
}

async fn encrypt(
    kms: &aws_sdk_kms::Client,
    id: &str,
) -> Result<Blob, aws_sdk_kms::error::SdkError<aws_sdk_kms::operation::encrypt::EncryptError>> {
    kms.encrypt()
        .key_id(id)
        .plaintext(Blob::new(b"state".to_vec()))
        .send()
        .await
        .map(|o| o.ciphertext_blob.expect("CiphertextBlob"))
}

#[tokio::test]
async fn a_disabled_key_refuses_encrypt_and_decrypt_until_enabled() {
    let d = Daemon::start();
    let kms = d.client();
    let id = new_key(&kms).await;
    let blob = encrypt(&kms, &id).await.expect("Encrypt");

    kms.disable_key()
        .key_id(&id)
        .send()
        .await
        .expect("DisableKey");
    assert_eq!(state_of(&kms, &id).await, (KeyState::Disabled, false));
    let err = encrypt(&kms, &id)
        .await
        .expect_err("Encrypt with a disabled key");
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(409));
    let err = err.into_service_error();
    assert!(err.is_disabled_exception(), "{err:?}");
    let err = kms
        .decrypt()
        .ciphertext_blob(blob.clone())
        .send()
        .await
        .expect_err("Decrypt with a disabled key");
    assert!(err.into_service_error().is_disabled_exception());
    // Disabling a disabled key is not an error in AWS.
    kms.disable_key()
        .key_id(&id)
        .send()
        .await
        .expect("DisableKey again");

    kms.enable_key()
        .key_id(&id)
        .send()
        .await
        .expect("EnableKey");
    assert_eq!(state_of(&kms, &id).await, (KeyState::Enabled, true));
    let decrypted = kms
        .decrypt()
        .ciphertext_blob(blob)
        .send()
        .await
        .expect("Decrypt");
    assert_eq!(decrypted.plaintext().map(Blob::as_ref), Some(&b"state"[..]));
}

#[tokio::test]
async fn schedule_and_cancel_key_deletion() {
    let d = Daemon::start();
    let kms = d.client();
    let id = new_key(&kms).await;

    // A window outside 7..=30 days: ValidationException.
    let err = kms
        .schedule_key_deletion()
        .key_id(&id)
        .pending_window_in_days(6)
        .send()
        .await
        .expect_err("a 6-day window");
    assert_eq!(
        err.as_service_error().and_then(|e| e.meta().code()),
        Some("ValidationException"),
        "{err:?}"
    );

    let scheduled = kms
        .schedule_key_deletion()
        .key_id(&id)
        .pending_window_in_days(7)
        .send()
        .await
        .expect("ScheduleKeyDeletion");
    names_key(scheduled.key_id(), &id);
    assert_eq!(scheduled.key_state(), Some(&KeyState::PendingDeletion));
    assert_eq!(scheduled.pending_window_in_days(), Some(7));
    let when = scheduled.deletion_date().expect("DeletionDate");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let days = (when.secs() - now) as f64 / 86_400.0;
    assert!((6.9..=7.1).contains(&days), "deletion in {days} days");

    let meta = kms
        .describe_key()
        .key_id(&id)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    assert_eq!(meta.key_state(), Some(&KeyState::PendingDeletion));
    assert!(!meta.enabled());
    assert_eq!(meta.deletion_date(), Some(when));
    assert_eq!(meta.pending_deletion_window_in_days(), Some(7));

    // A key pending deletion: KMSInvalidStateException (409) for its use,
    // for EnableKey and for scheduling it again.
    let err = encrypt(&kms, &id)
        .await
        .expect_err("Encrypt, pending deletion");
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(409));
    let err = err.into_service_error();
    assert!(err.is_kms_invalid_state_exception(), "{err:?}");
    let err = kms
        .enable_key()
        .key_id(&id)
        .send()
        .await
        .expect_err("EnableKey, pending deletion");
    assert!(err.into_service_error().is_kms_invalid_state_exception());
    let err = kms
        .schedule_key_deletion()
        .key_id(&id)
        .send()
        .await
        .expect_err("ScheduleKeyDeletion, pending deletion");
    assert!(err.into_service_error().is_kms_invalid_state_exception());

    // CancelKeyDeletion leaves it Disabled (AWS's rule), without a date.
    let cancelled = kms
        .cancel_key_deletion()
        .key_id(&id)
        .send()
        .await
        .expect("CancelKeyDeletion");
    names_key(cancelled.key_id(), &id);
    let meta = kms
        .describe_key()
        .key_id(&id)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    assert_eq!(meta.key_state(), Some(&KeyState::Disabled));
    assert_eq!(meta.deletion_date(), None);

    // Cancelling a key not pending deletion: KMSInvalidStateException.
    let err = kms
        .cancel_key_deletion()
        .key_id(&id)
        .send()
        .await
        .expect_err("CancelKeyDeletion of a disabled key");
    assert!(err.into_service_error().is_kms_invalid_state_exception());

    kms.enable_key()
        .key_id(&id)
        .send()
        .await
        .expect("EnableKey");
    encrypt(&kms, &id).await.expect("Encrypt after cancelling");
}

#[tokio::test]
async fn automatic_rotation_is_enabled_and_disabled() {
    let d = Daemon::start();
    let kms = d.client();
    let id = new_key(&kms).await;
    let status = kms
        .get_key_rotation_status()
        .key_id(&id)
        .send()
        .await
        .expect("GetKeyRotationStatus");
    assert!(!status.key_rotation_enabled());
    assert_eq!(status.next_rotation_date(), None);

    kms.enable_key_rotation()
        .key_id(&id)
        .rotation_period_in_days(90)
        .send()
        .await
        .expect("EnableKeyRotation");
    let status = kms
        .get_key_rotation_status()
        .key_id(&id)
        .send()
        .await
        .expect("GetKeyRotationStatus");
    assert!(status.key_rotation_enabled());
    assert_eq!(status.rotation_period_in_days(), Some(90));
    assert!(status.next_rotation_date().is_some(), "{status:?}");
    assert!(
        status.key_id().is_some_and(|k| k.ends_with(&id)),
        "{status:?}"
    );

    // Outside 90..=2560 days: ValidationException.
    let err = kms
        .enable_key_rotation()
        .key_id(&id)
        .rotation_period_in_days(89)
        .send()
        .await
        .expect_err("an 89-day period");
    assert_eq!(
        err.as_service_error().and_then(|e| e.meta().code()),
        Some("ValidationException"),
        "{err:?}"
    );

    kms.disable_key_rotation()
        .key_id(&id)
        .send()
        .await
        .expect("DisableKeyRotation");
    let status = kms
        .get_key_rotation_status()
        .key_id(&id)
        .send()
        .await
        .expect("GetKeyRotationStatus");
    assert!(!status.key_rotation_enabled());
}

#[tokio::test]
async fn rotate_key_on_demand_adds_a_version_old_ciphertexts_still_decrypt() {
    let d = Daemon::start();
    let kms = d.client();
    let id = new_key(&kms).await;
    let before = encrypt(&kms, &id).await.expect("Encrypt");
    let rotations = kms
        .list_key_rotations()
        .key_id(&id)
        .send()
        .await
        .expect("ListKeyRotations");
    assert!(rotations.rotations().is_empty(), "{rotations:?}");

    let rotated = kms
        .rotate_key_on_demand()
        .key_id(&id)
        .send()
        .await
        .expect("RotateKeyOnDemand");
    assert!(
        rotated.key_id().is_some_and(|k| k.ends_with(&id)),
        "{rotated:?}"
    );

    let rotations = kms
        .list_key_rotations()
        .key_id(&id)
        .send()
        .await
        .expect("ListKeyRotations");
    assert_eq!(rotations.rotations().len(), 1, "{rotations:?}");
    let entry = &rotations.rotations()[0];
    assert_eq!(entry.rotation_type(), Some(&RotationType::OnDemand));
    assert!(entry.rotation_date().is_some(), "{entry:?}");
    assert!(
        entry.key_id().is_some_and(|k| k.ends_with(&id)),
        "{entry:?}"
    );
    assert!(!rotations.truncated());

    // A second rotation, then pages of one.
    kms.rotate_key_on_demand()
        .key_id(&id)
        .send()
        .await
        .expect("RotateKeyOnDemand");
    let paged = kms
        .list_key_rotations()
        .key_id(&id)
        .limit(1)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .expect("ListKeyRotations pages");
    assert_eq!(paged.len(), 2, "{paged:?}");

    let after = encrypt(&kms, &id).await.expect("Encrypt after rotating");
    assert_ne!(before, after);
    for blob in [before, after] {
        let decrypted = kms
            .decrypt()
            .ciphertext_blob(blob)
            .send()
            .await
            .expect("Decrypt");
        assert_eq!(decrypted.plaintext().map(Blob::as_ref), Some(&b"state"[..]));
    }
}

#[tokio::test]
async fn get_parameters_for_import_gives_a_wrapping_key_and_token() {
    let d = Daemon::start();
    let kms = d.client();
    let created = kms
        .create_key()
        .origin(OriginType::External)
        .send()
        .await
        .expect("CreateKey with Origin EXTERNAL");
    let meta = created.key_metadata().unwrap();
    assert_eq!(meta.origin(), Some(&OriginType::External));
    // No material yet: PendingImport, and not usable.
    assert_eq!(meta.key_state(), Some(&KeyState::PendingImport));
    assert!(!meta.enabled());
    let id = meta.key_id().to_owned();

    let params = kms
        .get_parameters_for_import()
        .key_id(&id)
        .wrapping_algorithm(AlgorithmSpec::RsaesOaepSha256)
        .wrapping_key_spec(WrappingKeySpec::Rsa2048)
        .send()
        .await
        .expect("GetParametersForImport");
    assert!(
        params.key_id().is_some_and(|k| k.ends_with(&id)),
        "{params:?}"
    );
    let public_key = params.public_key().expect("PublicKey").as_ref();
    // A DER SubjectPublicKeyInfo: a SEQUENCE, of about 294 bytes for RSA 2048.
    assert_eq!(public_key[0], 0x30);
    assert!(
        (280..=300).contains(&public_key.len()),
        "{}",
        public_key.len()
    );
    assert!(!params
        .import_token()
        .expect("ImportToken")
        .as_ref()
        .is_empty());
    let valid_to = params.parameters_valid_to().expect("ParametersValidTo");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // AWS's parameters are valid for 24 hours.
    let hours = (valid_to.secs() - now) as f64 / 3600.0;
    assert!((23.9..=24.1).contains(&hours), "valid for {hours} h");

    // A key of origin AWS_KMS takes no import: UnsupportedOperationException.
    let aws_key = new_key(&kms).await;
    let err = kms
        .get_parameters_for_import()
        .key_id(&aws_key)
        .wrapping_algorithm(AlgorithmSpec::RsaesOaepSha256)
        .wrapping_key_spec(WrappingKeySpec::Rsa2048)
        .send()
        .await
        .expect_err("GetParametersForImport of an AWS_KMS key");
    let err = err.into_service_error();
    assert!(err.is_unsupported_operation_exception(), "{err:?}");

    // Encrypt with the key still pending import: KMSInvalidStateException.
    let err = encrypt(&kms, &id)
        .await
        .expect_err("Encrypt, pending import");
    assert!(err.into_service_error().is_kms_invalid_state_exception());
}
