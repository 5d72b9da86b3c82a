//! The cryptographic operations: Encrypt, Decrypt, GenerateDataKey(WithoutPlaintext),
//! ReEncrypt, GenerateRandom.

use crate::support::{names_key, new_key, Daemon};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeySpec, EncryptionAlgorithmSpec};

/// The key's ARN, as the cryptographic operations answer `KeyId`.
async fn arn_of(kms: &aws_sdk_kms::Client, id: &str) -> String {
    kms.describe_key()
        .key_id(id)
        .send()
        .await
        .expect("DescribeKey")
        .key_metadata
        .and_then(|m| m.arn)
        .expect("Arn")
}

#[tokio::test]
async fn encrypt_then_decrypt_with_the_encryption_context() {
    let d = Daemon::start();
    let kms = d.client();
    let id = new_key(&kms).await;
    let arn = arn_of(&kms, &id).await;
    let plaintext = b"card 4111-1111-1111-1111".to_vec();

    let encrypted = kms
        .encrypt()
        .key_id(&id)
        .plaintext(Blob::new(plaintext.clone()))
        .encryption_context("tenant", "acme")
        .encryption_context("purpose", "test")
        .send()
        .await
        .expect("Encrypt");
    names_key(encrypted.key_id(), &id);
    assert_eq!(
        encrypted.encryption_algorithm(),
        Some(&EncryptionAlgorithmSpec::SymmetricDefault)
    );
    let blob = encrypted.ciphertext_blob().expect("CiphertextBlob").clone();
    assert_ne!(blob.as_ref(), plaintext.as_slice());

    // Decrypt without KeyId: the ciphertext names its key. The context's
    // order does not matter.
    let decrypted = kms
        .decrypt()
        .ciphertext_blob(blob.clone())
        .encryption_context("purpose", "test")
        .encryption_context("tenant", "acme")
        .send()
        .await
        .expect("Decrypt");
    assert_eq!(
        decrypted.plaintext().map(Blob::as_ref),
        Some(plaintext.as_slice())
    );
    names_key(decrypted.key_id(), &id);
    assert_eq!(
        decrypted.encryption_algorithm(),
        Some(&EncryptionAlgorithmSpec::SymmetricDefault)
    );
    // With KeyId (as an id, as the ARN): the same.
    for key in [id.as_str(), arn.as_str()] {
        let again = kms
            .decrypt()
            .key_id(key)
            .ciphertext_blob(blob.clone())
            .encryption_context("tenant", "acme")
            .encryption_context("purpose", "test")
            .send()
            .await
            .expect("Decrypt with KeyId");
        assert_eq!(
            again.plaintext().map(Blob::as_ref),
            Some(plaintext.as_slice())
        );
    }

    // A wrong context, a missing one, an extra pair: InvalidCiphertextException.
    let wrong = [
        vec![("tenant", "other"), ("purpose", "test")],
        vec![],
        vec![("tenant", "acme")],
        vec![("tenant", "acme"), ("purpose", "test"), ("extra", "x")],
    ];
    for context in wrong {
        let mut call = kms.decrypt().ciphertext_blob(blob.clone());
        for (k, v) in &context {
            call = call.encryption_context(*k, *v);
        }
        let err = call
            .send()
            .await
            .expect_err("Decrypt with the wrong context");
        let status = err.raw_response().map(|r| r.status().as_u16());
        assert_eq!(status, Some(400), "{err:?}");
        let err = err.into_service_error();
        assert!(
            err.is_invalid_ciphertext_exception(),
            "{context:?}: {err:?}"
        );
    }
}

#[tokio::test]
async fn decrypt_refuses_a_damaged_ciphertext_and_the_wrong_key() {
    let d = Daemon::start();
    let kms = d.client();
    let id = new_key(&kms).await;
    let other = new_key(&kms).await;
    let blob = kms
        .encrypt()
        .key_id(&id)
        .plaintext(Blob::new(b"secret".to_vec()))
        .send()
        .await
        .expect("Encrypt")
        .ciphertext_blob
        .expect("CiphertextBlob");

    let mut damaged = blob.clone().into_inner();
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    let err = kms
        .decrypt()
        .ciphertext_blob(Blob::new(damaged))
        .send()
        .await
        .expect_err("Decrypt of a damaged ciphertext");
    assert!(
        err.into_service_error().is_invalid_ciphertext_exception(),
        "damaged ciphertext"
    );

    // KeyId names another key than the ciphertext's: IncorrectKeyException.
    let err = kms
        .decrypt()
        .key_id(&other)
        .ciphertext_blob(blob)
        .send()
        .await
        .expect_err("Decrypt with another key");
    let err = err.into_service_error();
    assert!(err.is_incorrect_key_exception(), "{err:?}");
}

#[tokio::test]
async fn generate_data_key_plaintext_decrypts_back_from_its_ciphertext() {
    let d = Daemon::start();
    let kms = d.client();
    let id = new_key(&kms).await;

    for (spec, bytes, len) in [
        (Some(DataKeySpec::Aes256), None, 32),
        (Some(DataKeySpec::Aes128), None, 16),
        (None, Some(64), 64),
    ] {
        let generated = kms
            .generate_data_key()
            .key_id(&id)
            .set_key_spec(spec.clone())
            .set_number_of_bytes(bytes)
            .encryption_context("file", "report.pdf")
            .send()
            .await
            .expect("GenerateDataKey");
        names_key(generated.key_id(), &id);
        let plaintext = generated.plaintext().expect("Plaintext").as_ref().to_vec();
        assert_eq!(plaintext.len(), len, "{spec:?} {bytes:?}");
        let decrypted = kms
            .decrypt()
            .ciphertext_blob(generated.ciphertext_blob().expect("CiphertextBlob").clone())
            .encryption_context("file", "report.pdf")
            .send()
            .await
            .expect("Decrypt of a data key");
        assert_eq!(
            decrypted.plaintext().map(Blob::as_ref),
            Some(plaintext.as_slice())
        );
    }

    // Neither KeySpec nor NumberOfBytes: AWS requires one (ValidationException).
    let err = kms
        .generate_data_key()
        .key_id(&id)
        .send()
        .await
        .expect_err("GenerateDataKey without a size");
    assert_eq!(
        err.as_service_error().and_then(|e| e.meta().code()),
        Some("ValidationException"),
        "{err:?}"
    );
}

#[tokio::test]
async fn generate_data_key_without_plaintext_gives_a_ciphertext_only() {
    let d = Daemon::start();
    let kms = d.client();
    let id = new_key(&kms).await;
    let generated = kms
        .generate_data_key_without_plaintext()
        .key_id(&id)
        .key_spec(DataKeySpec::Aes256)
        .encryption_context("k", "v")
        .send()
        .await
        .expect("GenerateDataKeyWithoutPlaintext");
    names_key(generated.key_id(), &id);
    let decrypted = kms
        .decrypt()
        .ciphertext_blob(generated.ciphertext_blob().expect("CiphertextBlob").clone())
        .encryption_context("k", "v")
        .send()
        .await
        .expect("Decrypt");
    assert_eq!(decrypted.plaintext().map(|p| p.as_ref().len()), Some(32));
}

#[tokio::test]
async fn re_encrypt_moves_a_ciphertext_to_a_second_key() {
    let d = Daemon::start();
    let kms = d.client();
    let first = new_key(&kms).await;
    let second = new_key(&kms).await;
    let blob = kms
        .encrypt()
        .key_id(&first)
        .plaintext(Blob::new(b"moving".to_vec()))
        .encryption_context("stage", "old")
        .send()
        .await
        .expect("Encrypt")
        .ciphertext_blob
        .expect("CiphertextBlob");

    let moved = kms
        .re_encrypt()
        .ciphertext_blob(blob)
        .source_encryption_context("stage", "old")
        .destination_key_id(&second)
        .destination_encryption_context("stage", "new")
        .send()
        .await
        .expect("ReEncrypt");
    names_key(moved.source_key_id(), &first);
    names_key(moved.key_id(), &second);
    assert_eq!(
        moved.source_encryption_algorithm(),
        Some(&EncryptionAlgorithmSpec::SymmetricDefault)
    );
    assert_eq!(
        moved.destination_encryption_algorithm(),
        Some(&EncryptionAlgorithmSpec::SymmetricDefault)
    );
    let new_blob = moved.ciphertext_blob().expect("CiphertextBlob").clone();

    let decrypted = kms
        .decrypt()
        .ciphertext_blob(new_blob.clone())
        .encryption_context("stage", "new")
        .send()
        .await
        .expect("Decrypt of the new ciphertext");
    assert_eq!(
        decrypted.plaintext().map(Blob::as_ref),
        Some(&b"moving"[..])
    );
    names_key(decrypted.key_id(), &second);
    // It is the second key's now: naming the first is IncorrectKeyException.
    let err = kms
        .decrypt()
        .key_id(&first)
        .ciphertext_blob(new_blob)
        .encryption_context("stage", "new")
        .send()
        .await
        .expect_err("Decrypt naming the old key");
    assert!(err.into_service_error().is_incorrect_key_exception());
}

#[tokio::test]
async fn generate_random_gives_the_length_asked() {
    let d = Daemon::start();
    let kms = d.client();
    let mut seen = Vec::new();
    for n in [1, 32, 1024] {
        let random = kms
            .generate_random()
            .number_of_bytes(n)
            .send()
            .await
            .expect("GenerateRandom");
        let bytes = random.plaintext().expect("Plaintext").as_ref().to_vec();
        assert_eq!(bytes.len(), n as usize);
        seen.push(bytes);
    }
    let again = kms
        .generate_random()
        .number_of_bytes(32)
        .send()
        .await
        .unwrap();
    assert_ne!(again.plaintext().unwrap().as_ref(), seen[1].as_slice());

    // Outside 1..=1024: ValidationException.
    for n in [0, 1025] {
        let err = kms
            .generate_random()
            .number_of_bytes(n)
            .send()
            .await
            .expect_err("GenerateRandom out of bounds");
        assert_eq!(
            err.as_service_error().and_then(|e| e.meta().code()),
            Some("ValidationException"),
            "{n}: {err:?}"
        );
    }
}

#[tokio::test]
async fn plaintext_up_to_4096_bytes_and_no_more() {
    let d = Daemon::start();
    let kms = d.client();
    let id = new_key(&kms).await;
    let largest: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
    let blob = kms
        .encrypt()
        .key_id(&id)
        .plaintext(Blob::new(largest.clone()))
        .send()
        .await
        .expect("Encrypt of 4096 bytes")
        .ciphertext_blob
        .expect("CiphertextBlob");
    let decrypted = kms
        .decrypt()
        .ciphertext_blob(blob)
        .send()
        .await
        .expect("Decrypt");
    assert_eq!(
        decrypted.plaintext().map(Blob::as_ref),
        Some(largest.as_slice())
    );

    let err = kms
        .encrypt()
        .key_id(&id)
        .plaintext(Blob::new(vec![7; 4097]))
        .send()
        .await
        .expect_err("Encrypt of 4097 bytes");
    assert_eq!(
        err.as_service_error().and_then(|e| e.meta().code()),
        Some("ValidationException"),
        "{err:?}"
    );
}

/// Many calls in flight at once on one client (each on its own connection).
#[tokio::test]
async fn concurrent_calls_each_get_their_own_answer() {
    let d = Daemon::start();
    let kms = d.client();
    let id = new_key(&kms).await;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..64u32 {
        let (kms, id) = (kms.clone(), id.clone());
        calls.spawn(async move {
            let plaintext = format!("message {i}").into_bytes();
            let blob = kms
                .encrypt()
                .key_id(&id)
                .plaintext(Blob::new(plaintext.clone()))
                .encryption_context("i", i.to_string())
                .send()
                .await
                .expect("Encrypt")
                .ciphertext_blob
                .expect("CiphertextBlob");
            let decrypted = kms
                .decrypt()
                .ciphertext_blob(blob)
                .encryption_context("i", i.to_string())
                .send()
                .await
                .expect("Decrypt");
            assert_eq!(
                decrypted.plaintext().map(Blob::as_ref),
                Some(plaintext.as_slice())
            );
        });
    }
    let mut done = 0;
    while let Some(r) = calls.join_next().await {
        r.expect("a call panicked");
        done += 1;
    }
    assert_eq!(done, 64);
}
