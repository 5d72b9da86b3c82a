//! Errors as the SDK surfaces them: typed exceptions, HTTP statuses, the
//! request id, throttling as a retryable error.

use crate::support::{new_key, Counting, Daemon};
use aws_sdk_kms::config::retry::RetryConfig;
use aws_sdk_kms::error::ProvideErrorMetadata;
use aws_sdk_kms::operation::RequestId;
use std::time::Duration;

#[tokio::test]
async fn describe_key_of_a_missing_key_is_not_found() {
    let d = Daemon::start();
    let kms = d.client();
    for missing in [
        "00000000-0000-4000-8000-000000000000",
        "arn:aws:kms:us-east-1:000000000000:key/00000000-0000-4000-8000-000000000000",
        "alias/no-such-alias",
    ] {
        let err = kms
            .describe_key()
            .key_id(missing)
            .send()
            .await
            .expect_err("DescribeKey of a missing key");
        let raw = err.raw_response().expect("an HTTP answer");
        assert_eq!(raw.status().as_u16(), 404, "{missing}: {err:?}");
        // AWS's request id header, which the SDK reads for logs and support.
        assert!(err.request_id().is_some_and(|id| !id.is_empty()), "{err:?}");
        let service = err.into_service_error();
        assert!(service.is_not_found_exception(), "{missing}: {service:?}");
        assert!(
            service.message().is_some_and(|m| !m.is_empty()),
            "{service:?}"
        );
    }
}

#[tokio::test]
async fn answers_carry_a_request_id() {
    let d = Daemon::start();
    let kms = d.client();
    let a = kms
        .generate_random()
        .number_of_bytes(8)
        .send()
        .await
        .unwrap();
    let b = kms
        .generate_random()
        .number_of_bytes(8)
        .send()
        .await
        .unwrap();
    let (a, b) = (
        a.request_id().expect("x-amzn-RequestId"),
        b.request_id().unwrap(),
    );
    assert_ne!(a, b);
}

#[tokio::test]
async fn a_malformed_key_id_is_not_found() {
    let d = Daemon::start();
    let kms = d.client();
    // Neither an id, an ARN nor an alias: AWS answers NotFoundException
    // ("Invalid keyId") for DescribeKey and Encrypt.
    let err = kms
        .describe_key()
        .key_id("not a key")
        .send()
        .await
        .expect_err("DescribeKey of a malformed id");
    let err = err.into_service_error();
    assert!(err.is_not_found_exception(), "{err:?}");
}

/// AWS answers an alias name without its prefix ValidationException
/// ("Alias must start with the prefix \"alias/\". Please see ...", 400).
#[tokio::test]
async fn an_alias_name_without_its_prefix_is_a_validation_exception() {
    let d = Daemon::start();
    let kms = d.client();
    let id = new_key(&kms).await;
    let err = kms
        .create_alias()
        .alias_name("orders")
        .target_key_id(&id)
        .send()
        .await
        .expect_err("CreateAlias without alias/");
    let code = err.as_service_error().and_then(|e| e.code());
    assert_eq!(code, Some("ValidationException"), "{err:?}");
}

/// A quota of one cryptographic request per 1,000 s, bursts of one: the
/// second GenerateRandom is throttled. The SDK's standard retry mode
/// retries ThrottlingException (three attempts in all) and then gives the
/// error back with its code.
#[tokio::test]
async fn throttling_is_a_retryable_error() {
    let d = Daemon::start_with_config(Some(
        "[[quotas.limit]]\nprincipal = \"*\"\nclass = \"cryptographic\"\nrate = 0.001\nburst = 1.0\n",
    ));
    let http = Counting::new(&d.http_socket);
    let retry = RetryConfig::standard()
        .with_max_attempts(3)
        .with_initial_backoff(Duration::from_millis(1))
        .with_max_backoff(Duration::from_millis(10));
    let kms = d.client_with(retry, http.clone());

    kms.generate_random()
        .number_of_bytes(8)
        .send()
        .await
        .expect("the first request fits the burst");
    assert_eq!(http.sent(), 1);

    let err = kms
        .generate_random()
        .number_of_bytes(8)
        .send()
        .await
        .expect_err("the second is throttled");
    assert_eq!(
        http.sent(),
        4,
        "the SDK retries a ThrottlingException: 1 + 3 attempts"
    );
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(400));
    let service = err.into_service_error();
    assert_eq!(service.code(), Some("ThrottlingException"), "{service:?}");
    assert!(
        service
            .message()
            .is_some_and(|m| m.starts_with("You have exceeded the rate at which you may call KMS.")),
        "{service:?}"
    );

    // Management operations have their own bucket: not throttled.
    new_key(&kms).await;
}

/// DryRun: every check made, nothing done, DryRunOperationException (412)
/// where the call would have succeeded.
#[tokio::test]
async fn dry_run_answers_dry_run_operation_exception() {
    let d = Daemon::start();
    let kms = d.client();
    let id = new_key(&kms).await;
    let err = kms
        .encrypt()
        .key_id(&id)
        .plaintext(aws_sdk_kms::primitives::Blob::new(b"x".to_vec()))
        .dry_run(true)
        .send()
        .await
        .expect_err("a dry run");
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(412));
    let err = err.into_service_error();
    assert!(err.is_dry_run_operation_exception(), "{err:?}");
}

/// An AWS KMS operation kmsd does not serve (asymmetric keys): a final
/// 400 error the SDK does not retry, with a message that says so.
#[tokio::test]
async fn an_operation_kmsd_does_not_serve_is_a_final_error() {
    let d = Daemon::start();
    let http = Counting::new(&d.http_socket);
    let kms = d.client_with(RetryConfig::standard(), http.clone());
    let id = new_key(&kms).await;
    let before = http.sent();
    let err = kms
        .generate_data_key_pair()
        .key_id(&id)
        .key_pair_spec(aws_sdk_kms::types::DataKeyPairSpec::Rsa2048)
        .send()
        .await
        .expect_err("GenerateDataKeyPair");
    assert_eq!(http.sent() - before, 1, "not retried");
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(400));
    let err = err.into_service_error();
    assert_eq!(err.code(), Some("UnknownOperationException"), "{err:?}");
    assert!(
        err.message()
            .is_some_and(|m| m.contains("GenerateDataKeyPair")),
        "{err:?}"
    );
}
