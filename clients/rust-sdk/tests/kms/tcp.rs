//! The SDK over kmsd's loopback TCP listener (`[http] tcp`), where every
//! request must carry a SigV4 signature made with configured credentials
//! (docs/sigv4.md): the SDK's own signer (aws-sigv4) against kmsd's
//! verifier. With the right credentials the operations work as over the
//! Unix socket; with wrong ones the SDK gets AWS's codes, not retried.

use crate::support::{Counting, Daemon, ACCESS_KEY_ID, ACCOUNT_ID, OTHER_ACCESS_KEY_ID, REGION};
use aws_sdk_kms::config::retry::RetryConfig;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use aws_smithy_async::time::TimeSource;
use kmsd_sdk_tests::tcp::TcpHttpClient;
use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

#[tokio::test]
async fn signed_requests_create_and_use_a_key() {
    let d = Daemon::start_tcp();
    let kms = d.tcp_client();

    let created = kms
        .create_key()
        .description("made over TCP")
        .send()
        .await
        .expect("CreateKey over TCP");
    let meta = created.key_metadata.expect("KeyMetadata");
    let id = meta.key_id().to_owned();
    // The configured Region and account, as AWS builds a key's ARN.
    assert_eq!(
        meta.arn(),
        Some(format!("arn:aws:kms:{REGION}:{ACCOUNT_ID}:key/{id}").as_str())
    );
    assert_eq!(meta.aws_account_id(), Some(ACCOUNT_ID));

    // Encrypt and Decrypt with an encryption context.
    let plaintext = b"signed with SigV4".to_vec();
    let encrypted = kms
        .encrypt()
        .key_id(&id)
        .plaintext(Blob::new(plaintext.clone()))
        .encryption_context("tenant", "acme")
        .send()
        .await
        .expect("Encrypt");
    let blob = encrypted.ciphertext_blob().expect("CiphertextBlob").clone();
    let decrypted = kms
        .decrypt()
        .ciphertext_blob(blob.clone())
        .encryption_context("tenant", "acme")
        .send()
        .await
        .expect("Decrypt");
    assert_eq!(
        decrypted.plaintext().map(Blob::as_ref),
        Some(plaintext.as_slice())
    );
    assert_eq!(decrypted.key_id(), meta.arn());
    // Another context is a wrong ciphertext, as on AWS.
    let err = kms
        .decrypt()
        .ciphertext_blob(blob)
        .encryption_context("tenant", "other")
        .send()
        .await
        .expect_err("Decrypt with another context");
    assert!(
        err.into_service_error().is_invalid_ciphertext_exception(),
        "Decrypt with another context"
    );

    // GenerateDataKey: a 256-bit key and its copy under the KMS key.
    let data_key = kms
        .generate_data_key()
        .key_id(&id)
        .key_spec(DataKeySpec::Aes256)
        .encryption_context("purpose", "files")
        .send()
        .await
        .expect("GenerateDataKey");
    let key = data_key.plaintext().expect("Plaintext").as_ref().to_vec();
    assert_eq!(key.len(), 32);
    let unwrapped = kms
        .decrypt()
        .ciphertext_blob(data_key.ciphertext_blob().expect("CiphertextBlob").clone())
        .encryption_context("purpose", "files")
        .send()
        .await
        .expect("Decrypt of the data key");
    assert_eq!(
        unwrapped.plaintext().map(Blob::as_ref),
        Some(key.as_slice())
    );

    // The access key runs as the tests' uid: the same caller as on the
    // Unix socket (kernel's identity), which sees the key as its own.
    let over_unix = d
        .client()
        .describe_key()
        .key_id(&id)
        .send()
        .await
        .expect("DescribeKey over the Unix socket");
    assert_eq!(
        over_unix.key_metadata().and_then(|m| m.description()),
        Some("made over TCP")
    );
}

#[tokio::test]
async fn list_keys_pages_and_a_missing_key_is_not_found() {
    let d = Daemon::start_tcp();
    let kms = d.tcp_client();
    let mut created = BTreeSet::new();
    for _ in 0..3 {
        let meta = kms
            .create_key()
            .send()
            .await
            .expect("CreateKey")
            .key_metadata
            .expect("KeyMetadata");
        created.insert(meta.key_id);
    }

    // The SDK's paginator, one key a page: three signed requests or more,
    // each carrying the previous page's marker.
    let listed: BTreeSet<String> = kms
        .list_keys()
        .limit(1)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .expect("ListKeys pages")
        .into_iter()
        .map(|k| {
            let id = k.key_id.expect("KeyId");
            assert_eq!(
                k.key_arn.as_deref(),
                Some(format!("arn:aws:kms:{REGION}:{ACCOUNT_ID}:key/{id}").as_str())
            );
            id
        })
        .collect();
    assert_eq!(listed, created);

    for missing in [
        "00000000-0000-4000-8000-000000000000".to_owned(),
        format!("arn:aws:kms:{REGION}:{ACCOUNT_ID}:key/00000000-0000-4000-8000-000000000000"),
    ] {
        let err = kms
            .describe_key()
            .key_id(&missing)
            .send()
            .await
            .expect_err("DescribeKey of a missing key");
        let status = err.raw_response().map(|r| r.status().as_u16());
        assert_eq!(status, Some(404), "{missing}: {err:?}");
        let err = err.into_service_error();
        assert!(err.is_not_found_exception(), "{missing}: {err:?}");
    }
}

/// `kms.list_keys()`'s error and how many requests the SDK sent for it
/// (its standard retries, 3 attempts, included), through a client of `d`'s
/// listener built by `build` from the documented configuration.
async fn list_keys_refused(
    d: &Daemon,
    build: impl FnOnce(aws_sdk_kms::config::Builder) -> aws_sdk_kms::config::Builder,
) -> (String, String, usize) {
    let http = Counting::wrapping(TcpHttpClient);
    let config = build(d.tcp_config(ACCESS_KEY_ID, d.secret(), REGION))
        .retry_config(RetryConfig::standard())
        .http_client(http.clone())
        .build();
    let err = aws_sdk_kms::Client::from_conf(config)
        .list_keys()
        .send()
        .await
        .expect_err("a refused ListKeys");
    let status = err.raw_response().map(|r| r.status().as_u16());
    assert_eq!(status, Some(400), "{err:?}");
    assert!(
        matches!(err, SdkError::ServiceError(_)),
        "a service error: {err:?}"
    );
    let code = err.code().expect("an error code").to_owned();
    let message = err.message().expect("a message").to_owned();
    (code, message, http.sent())
}

#[tokio::test]
async fn wrong_credentials_get_aws_codes_and_are_not_retried() {
    let d = Daemon::start_tcp();

    // A wrong secret: the signature does not verify.
    let (code, message, sent) = list_keys_refused(&d, |c| {
        c.credentials_provider(aws_sdk_kms::config::Credentials::new(
            ACCESS_KEY_ID,
            "not-the-secret",
            None,
            None,
            "test",
        ))
    })
    .await;
    assert_eq!(code, "InvalidSignatureException", "{message}");
    assert!(message.contains("signature we calculated"), "{message}");
    assert_eq!(sent, 1, "a wrong signature is not retried");

    // The secret with its file's newline: not part of the secret.
    let with_newline = format!("{}\n", d.secret());
    let (code, message, sent) = list_keys_refused(&d, |c| {
        c.credentials_provider(aws_sdk_kms::config::Credentials::new(
            ACCESS_KEY_ID,
            with_newline,
            None,
            None,
            "test",
        ))
    })
    .await;
    assert_eq!(code, "InvalidSignatureException", "{message}");
    assert_eq!(sent, 1);

    // An access key kmsd does not know.
    let (code, message, sent) = list_keys_refused(&d, |c| {
        c.credentials_provider(aws_sdk_kms::config::Credentials::new(
            "AKIDNOBODY",
            "whatever",
            None,
            None,
            "test",
        ))
    })
    .await;
    assert_eq!(code, "UnrecognizedClientException", "{message}");
    assert_eq!(
        message,
        "The security token included in the request is invalid."
    );
    assert_eq!(sent, 1);

    // Temporary credentials (a session token): kmsd issues none.
    let secret = d.secret().to_owned();
    let (code, message, sent) = list_keys_refused(&d, |c| {
        c.credentials_provider(aws_sdk_kms::config::Credentials::new(
            ACCESS_KEY_ID,
            secret,
            Some("FwoGZXIvYXdzEXAMPLETOKEN".to_owned()),
            None,
            "test",
        ))
    })
    .await;
    assert_eq!(code, "UnrecognizedClientException", "{message}");
    assert_eq!(sent, 1);

    // The right credentials for another Region: the scope is wrong.
    let (code, message, sent) = list_keys_refused(&d, |c| {
        c.region(aws_sdk_kms::config::Region::new("eu-west-1"))
    })
    .await;
    assert_eq!(code, "InvalidSignatureException", "{message}");
    assert!(
        message.contains("valid region") && message.contains("eu-west-1"),
        "{message}"
    );
    assert_eq!(sent, 1);

    // And the right ones work on the same daemon.
    d.tcp_client().list_keys().send().await.expect("ListKeys");
}

#[tokio::test]
async fn each_access_key_runs_as_its_principal() {
    let d = Daemon::start_tcp();
    let admin = d.tcp_client();
    let id = admin
        .create_key()
        .send()
        .await
        .expect("CreateKey")
        .key_metadata
        .expect("KeyMetadata")
        .key_id;
    let other = aws_sdk_kms::Client::from_conf(
        d.tcp_config(OTHER_ACCESS_KEY_ID, d.other_secret(), REGION)
            .build(),
    );
    // A valid signature, of a principal with no rights on the key.
    let err = other
        .encrypt()
        .key_id(&id)
        .plaintext(Blob::new(b"x".to_vec()))
        .send()
        .await
        .expect_err("Encrypt with another principal's key");
    assert_eq!(err.code(), Some("AccessDeniedException"), "{err:?}");
    // Anyone may call GenerateRandom.
    let random = other
        .generate_random()
        .number_of_bytes(8)
        .send()
        .await
        .expect("GenerateRandom");
    assert_eq!(random.plaintext().map(|b| b.as_ref().len()), Some(8));
}

/// The time of the machine shifted by `ahead` (signed): a client whose
/// clock is wrong.
#[derive(Debug)]
struct Skewed {
    ahead: bool,
    by: Duration,
}

impl TimeSource for Skewed {
    fn now(&self) -> SystemTime {
        if self.ahead {
            SystemTime::now() + self.by
        } else {
            SystemTime::now() - self.by
        }
    }
}

/// A client whose clock is 10 minutes off signs requests kmsd refuses
/// (5 minutes at most, as AWS KMS); the SDK reads the skew from kmsd's
/// `Date` header, retries once signing at the corrected time, and the
/// request succeeds. With the correction off, AWS's code and message.
#[tokio::test]
async fn the_sdk_corrects_a_skewed_clock_from_the_date_header() {
    let d = Daemon::start_tcp();
    let retry = RetryConfig::standard()
        .with_initial_backoff(Duration::from_millis(1))
        .with_max_backoff(Duration::from_millis(10));
    for (ahead, words) in [
        (true, "Signature not yet current"),
        (false, "Signature expired"),
    ] {
        let by = Duration::from_secs(600);
        let http = Counting::wrapping(TcpHttpClient);
        let kms = aws_sdk_kms::Client::from_conf(
            d.tcp_config(ACCESS_KEY_ID, d.secret(), REGION)
                .retry_config(retry.clone())
                .time_source(Skewed { ahead, by })
                .http_client(http.clone())
                .build(),
        );
        kms.generate_random()
            .number_of_bytes(8)
            .send()
            .await
            .expect("GenerateRandom from a skewed clock, corrected");
        assert_eq!(
            http.sent(),
            2,
            "ahead {ahead}: refused once, then corrected"
        );
        // The client keeps the skew it learned: the next call is right
        // the first time.
        kms.generate_random()
            .number_of_bytes(8)
            .send()
            .await
            .expect("GenerateRandom");
        assert_eq!(http.sent(), 3);

        let http = Counting::wrapping(TcpHttpClient);
        let kms = aws_sdk_kms::Client::from_conf(
            d.tcp_config(ACCESS_KEY_ID, d.secret(), REGION)
                .retry_config(retry.clone())
                .time_source(Skewed { ahead, by })
                .disable_clock_skew_correction(true)
                .http_client(http.clone())
                .build(),
        );
        let err = kms
            .generate_random()
            .number_of_bytes(8)
            .send()
            .await
            .expect_err("GenerateRandom from a skewed clock");
        assert_eq!(err.code(), Some("InvalidSignatureException"), "{err:?}");
        assert!(err.message().is_some_and(|m| m.contains(words)), "{err:?}");
        assert_eq!(http.sent(), 1);
    }
}
