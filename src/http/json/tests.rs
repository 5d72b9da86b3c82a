//! The AWS JSON codec: every operation's request as an AWS SDK sends it,
//! every answer read back by a JSON parser, every way a body is refused,
//! and the status of every exception.

use super::*;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use flatbuffers::FlatBufferBuilder;
use kms_proto::codec::{build_request, decode_request, DecodeLimits};
use kms_proto::*;
use serde_json::{json, Value};

const KEY: &str = "1b4e28ba-2fa1-41d2-883f-0016d3cca427";
const ARN: &str = "arn:aws:kms:us-east-1:111122223333:key/1b4e28ba-2fa1-41d2-883f-0016d3cca427";

fn b64(b: &[u8]) -> String {
    STANDARD.encode(b)
}

fn decode(op: &str, body: &Value) -> Result<JsonRequest, JsonError> {
    JsonRequest::decode(op, body.to_string().as_bytes(), &JsonLimits::default())
}

fn decoded(op: &str, body: &Value) -> JsonRequest {
    decode(op, body).unwrap_or_else(|e| panic!("{op} {body}: {e}"))
}

fn refused(op: &str, body: &[u8]) -> JsonError {
    match JsonRequest::decode(op, body, &JsonLimits::default()) {
        Ok(r) => panic!("{op} {:?} decoded: {r:?}", String::from_utf8_lossy(body)),
        Err(e) => e,
    }
}

/// The refusal of `body`: its exception name and message.
fn refusal(op: &str, body: &Value) -> (&'static str, String) {
    let e = refused(op, body.to_string().as_bytes());
    (e.name(), e.message().to_owned())
}

// ------------------------------------------------------------------ requests

/// Each operation with a body shaped as botocore sends it (AWS's member
/// names, base64 blobs, epoch-second timestamps), and the typed request it
/// must become.
fn request_cases() -> Vec<(&'static str, Value, Operation<'static>)> {
    let ctx = json!({"tenant": "acme", "purpose": "test"});
    // json! writes members sorted by name: the pairs in the body's order.
    let pairs = vec![("purpose", "test"), ("tenant", "acme")];
    let blob: &'static [u8] = b"\x01\x02\x03 ciphertext \xff";
    vec![
        (
            "CreateKey",
            json!({
                "Description": "orders",
                "KeyUsage": "ENCRYPT_DECRYPT",
                "KeySpec": "SYMMETRIC_DEFAULT",
                "Origin": "AWS_KMS",
                "Tags": [{"TagKey": "team", "TagValue": "pay"}, {"TagKey": "env", "TagValue": ""}],
                "Policy": "{\"Version\":\"2012-10-17\",\"Statement\":[]}",
                "BypassPolicyLockoutSafetyCheck": true,
                "MultiRegion": false,
            }),
            Operation::CreateKey(CreateKey {
                description: "orders",
                key_usage: KeyUsage::EncryptDecrypt,
                key_spec: KeySpec::SymmetricDefault,
                origin: Origin::Kmsd,
                tags: vec![
                    Tag {
                        key: "team",
                        value: "pay",
                    },
                    Tag {
                        key: "env",
                        value: "",
                    },
                ],
                policy: Some("{\"Version\":\"2012-10-17\",\"Statement\":[]}"),
                bypass_policy_lockout_safety_check: true,
            }),
        ),
        (
            "DescribeKey",
            json!({"KeyId": "alias/orders", "GrantTokens": ["tok1", "tok2"]}),
            Operation::DescribeKey(DescribeKey {
                key_id: "alias/orders",
                grant_tokens: vec!["tok1", "tok2"],
            }),
        ),
        (
            "ListKeys",
            json!({"Limit": 10, "Marker": "m1"}),
            Operation::ListKeys(ListKeys {
                limit: 10,
                marker: Some("m1"),
            }),
        ),
        (
            "GenerateDataKey",
            json!({"KeyId": ARN, "KeySpec": "AES_256", "EncryptionContext": ctx, "GrantTokens": ["t"], "DryRun": true}),
            Operation::GenerateDataKey(GenerateDataKey {
                key_id: ARN,
                number_of_bytes: None,
                key_spec: Some(DataKeySpec::Aes256),
                context: pairs.clone(),
                grant_tokens: vec!["t"],
                dry_run: true,
            }),
        ),
        (
            "GenerateDataKeyWithoutPlaintext",
            json!({"KeyId": KEY, "NumberOfBytes": 64}),
            Operation::GenerateDataKeyWithoutPlaintext(GenerateDataKey {
                key_id: KEY,
                number_of_bytes: Some(64),
                ..Default::default()
            }),
        ),
        (
            "Encrypt",
            json!({"KeyId": KEY, "Plaintext": b64(b"hello"), "EncryptionContext": ctx, "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}),
            Operation::Encrypt(Encrypt {
                key_id: KEY,
                plaintext: b"hello",
                context: pairs.clone(),
                ..Default::default()
            }),
        ),
        (
            "Decrypt",
            json!({"CiphertextBlob": b64(blob), "KeyId": KEY, "EncryptionContext": ctx, "EncryptionAlgorithm": "SYMMETRIC_DEFAULT", "DryRun": false}),
            Operation::Decrypt(Decrypt {
                ciphertext_blob: blob,
                key_id: Some(KEY),
                context: pairs.clone(),
                ..Default::default()
            }),
        ),
        (
            "ReEncrypt",
            json!({
                "CiphertextBlob": b64(blob),
                "SourceEncryptionContext": ctx,
                "SourceKeyId": KEY,
                "DestinationKeyId": "alias/new",
                "DestinationEncryptionContext": {"a": "b"},
                "SourceEncryptionAlgorithm": "SYMMETRIC_DEFAULT",
                "DestinationEncryptionAlgorithm": "SYMMETRIC_DEFAULT",
                "GrantTokens": ["g"],
            }),
            Operation::ReEncrypt(ReEncrypt {
                ciphertext_blob: blob,
                source_key_id: Some(KEY),
                source_context: pairs.clone(),
                destination_key_id: "alias/new",
                destination_context: vec![("a", "b")],
                grant_tokens: vec!["g"],
                dry_run: false,
            }),
        ),
        (
            "GenerateRandom",
            json!({"NumberOfBytes": 32}),
            Operation::GenerateRandom(GenerateRandom {
                number_of_bytes: 32,
            }),
        ),
        (
            "UpdateKeyDescription",
            json!({"KeyId": KEY, "Description": ""}),
            Operation::UpdateKeyDescription(UpdateKeyDescription {
                key_id: KEY,
                description: "",
            }),
        ),
        (
            "TagResource",
            json!({"KeyId": KEY, "Tags": [{"TagKey": "k", "TagValue": "v"}]}),
            Operation::TagResource(TagResource {
                key_id: KEY,
                tags: vec![Tag {
                    key: "k",
                    value: "v",
                }],
            }),
        ),
        (
            "UntagResource",
            json!({"KeyId": KEY, "TagKeys": ["a", "b"]}),
            Operation::UntagResource(UntagResource {
                key_id: KEY,
                tag_keys: vec!["a", "b"],
            }),
        ),
        (
            "ListResourceTags",
            json!({"KeyId": KEY, "Limit": 5, "Marker": "x"}),
            Operation::ListResourceTags(ListResourceTags {
                key_id: KEY,
                limit: 5,
                marker: Some("x"),
            }),
        ),
        (
            "CreateAlias",
            json!({"AliasName": "alias/a", "TargetKeyId": KEY}),
            Operation::CreateAlias(CreateAlias {
                alias_name: "alias/a",
                target_key_id: KEY,
            }),
        ),
        (
            "UpdateAlias",
            json!({"AliasName": "alias/a", "TargetKeyId": ARN}),
            Operation::UpdateAlias(UpdateAlias {
                alias_name: "alias/a",
                target_key_id: ARN,
            }),
        ),
        (
            "DeleteAlias",
            json!({"AliasName": "alias/a"}),
            Operation::DeleteAlias(DeleteAlias {
                alias_name: "alias/a",
            }),
        ),
        (
            "ListAliases",
            json!({"KeyId": KEY, "Limit": 100}),
            Operation::ListAliases(ListAliases {
                key_id: Some(KEY),
                limit: 100,
                marker: None,
            }),
        ),
        (
            "EnableKey",
            json!({"KeyId": KEY}),
            Operation::EnableKey(EnableKey { key_id: KEY }),
        ),
        (
            "DisableKey",
            json!({"KeyId": KEY}),
            Operation::DisableKey(DisableKey { key_id: KEY }),
        ),
        (
            "ScheduleKeyDeletion",
            json!({"KeyId": KEY, "PendingWindowInDays": 7}),
            Operation::ScheduleKeyDeletion(ScheduleKeyDeletion {
                key_id: KEY,
                pending_window_in_days: Some(7),
            }),
        ),
        (
            "CancelKeyDeletion",
            json!({"KeyId": KEY}),
            Operation::CancelKeyDeletion(CancelKeyDeletion { key_id: KEY }),
        ),
        (
            "EnableKeyRotation",
            json!({"KeyId": KEY, "RotationPeriodInDays": 90}),
            Operation::EnableKeyRotation(EnableKeyRotation {
                key_id: KEY,
                rotation_period_in_days: Some(90),
            }),
        ),
        (
            "DisableKeyRotation",
            json!({"KeyId": KEY}),
            Operation::DisableKeyRotation(DisableKeyRotation { key_id: KEY }),
        ),
        (
            "GetKeyRotationStatus",
            json!({"KeyId": KEY}),
            Operation::GetKeyRotationStatus(GetKeyRotationStatus { key_id: KEY }),
        ),
        (
            "RotateKeyOnDemand",
            json!({"KeyId": KEY}),
            Operation::RotateKeyOnDemand(RotateKeyOnDemand { key_id: KEY }),
        ),
        (
            "ListKeyRotations",
            json!({"KeyId": KEY, "IncludeKeyMaterial": "ROTATIONS_ONLY", "Limit": 3, "Marker": "r"}),
            Operation::ListKeyRotations(ListKeyRotations {
                key_id: KEY,
                limit: 3,
                marker: Some("r"),
            }),
        ),
        (
            "GetParametersForImport",
            json!({"KeyId": KEY, "WrappingAlgorithm": "RSA_AES_KEY_WRAP_SHA_256", "WrappingKeySpec": "RSA_4096"}),
            Operation::GetParametersForImport(GetParametersForImport {
                key_id: KEY,
                wrapping_algorithm: WrappingAlgorithm::RsaAesKeyWrapSha256,
                wrapping_key_spec: WrappingKeySpec::Rsa4096,
            }),
        ),
        (
            "ImportKeyMaterial",
            json!({
                "KeyId": KEY,
                "ImportToken": b64(b"token"),
                "EncryptedKeyMaterial": b64(b"wrapped material"),
                "ValidTo": 1_733_180_000.75,
                "ExpirationModel": "KEY_MATERIAL_EXPIRES",
                "ImportType": "NEW_KEY_MATERIAL",
            }),
            Operation::ImportKeyMaterial(ImportKeyMaterial {
                key_id: KEY,
                import_token: b"token",
                encrypted_key_material: b"wrapped material",
                valid_to: Some(1_733_180_000),
                expiration_model: ExpirationModel::KeyMaterialExpires,
            }),
        ),
        (
            "DeleteImportedKeyMaterial",
            json!({"KeyId": KEY}),
            Operation::DeleteImportedKeyMaterial(DeleteImportedKeyMaterial { key_id: KEY }),
        ),
        ("WhoAmI", json!({}), Operation::WhoAmI(WhoAmI)),
        (
            "PutKeyPolicy",
            json!({"KeyId": KEY, "PolicyName": "default", "Policy": "{}", "BypassPolicyLockoutSafetyCheck": false}),
            Operation::PutKeyPolicy(PutKeyPolicy {
                key_id: KEY,
                policy_name: Some("default"),
                policy: "{}",
                bypass_policy_lockout_safety_check: false,
            }),
        ),
        (
            "GetKeyPolicy",
            json!({"KeyId": KEY}),
            Operation::GetKeyPolicy(GetKeyPolicy {
                key_id: KEY,
                policy_name: None,
            }),
        ),
        (
            "ListKeyPolicies",
            json!({"KeyId": KEY, "Limit": 1, "Marker": "p"}),
            Operation::ListKeyPolicies(ListKeyPolicies {
                key_id: KEY,
                limit: 1,
                marker: Some("p"),
            }),
        ),
        (
            "CreateGrant",
            json!({
                "KeyId": KEY,
                "GranteePrincipal": "uid:1000",
                "RetiringPrincipal": "uid:0",
                "Operations": ["Encrypt", "Decrypt", "RetireGrant"],
                "Constraints": {"EncryptionContextSubset": {"tenant": "acme"}},
                "GrantTokens": ["t"],
                "Name": "app-grant",
                "DryRun": false,
            }),
            Operation::CreateGrant(CreateGrant {
                key_id: KEY,
                grantee_principal: "uid:1000",
                retiring_principal: Some("uid:0"),
                operations: vec![
                    GrantOperation::Encrypt,
                    GrantOperation::Decrypt,
                    GrantOperation::RetireGrant,
                ],
                constraints: Some(GrantConstraints {
                    encryption_context_subset: vec![("tenant", "acme")],
                    encryption_context_equals: vec![],
                }),
                grant_tokens: vec!["t"],
                name: Some("app-grant"),
                dry_run: false,
            }),
        ),
        (
            "ListGrants",
            json!({"KeyId": KEY, "Limit": 50, "GrantId": "g1", "GranteePrincipal": "uid:7"}),
            Operation::ListGrants(ListGrants {
                key_id: KEY,
                limit: 50,
                marker: None,
                grant_id: Some("g1"),
                grantee_principal: Some("uid:7"),
            }),
        ),
        (
            "ListRetirableGrants",
            json!({"RetiringPrincipal": "uid:0", "Marker": "m"}),
            Operation::ListRetirableGrants(ListRetirableGrants {
                retiring_principal: "uid:0",
                limit: 0,
                marker: Some("m"),
            }),
        ),
        (
            "RetireGrant",
            json!({"KeyId": KEY, "GrantId": "g1", "DryRun": true}),
            Operation::RetireGrant(RetireGrant {
                grant_token: None,
                key_id: Some(KEY),
                grant_id: Some("g1"),
                dry_run: true,
            }),
        ),
        (
            "RevokeGrant",
            json!({"KeyId": KEY, "GrantId": "g1"}),
            Operation::RevokeGrant(RevokeGrant {
                key_id: KEY,
                grant_id: "g1",
                dry_run: false,
            }),
        ),
        ("GetStatus", json!({}), Operation::GetStatus(GetStatus)),
        (
            "VerifyAuditSeals",
            json!({"Seals": [{"Seq": 42, "PrevHash": b64(&[1; 32]), "Mac": b64(&[2; 32])}]}),
            Operation::VerifyAuditSeals(VerifyAuditSeals {
                seals: vec![AuditSeal {
                    seq: 42,
                    prev_hash: [1; 32],
                    mac: [2; 32],
                }],
            }),
        ),
    ]
}

#[test]
fn every_operation_decodes_from_its_aws_shape() {
    let cases = request_cases();
    for name in Operation::NAMES {
        assert!(
            cases.iter().any(|(n, _, _)| *n == name),
            "no request case for {name}"
        );
    }
    for (name, body, want) in cases {
        let req = decoded(name, &body);
        assert_eq!(*req.operation(), want, "{name} {body}");
        assert_eq!(req.operation().name(), name);
        assert!(req.heap_bytes() >= body.to_string().len(), "{name}");
    }
}

#[test]
fn absent_members_take_the_typed_requests_defaults() {
    let r = decoded("CreateKey", &json!({}));
    assert_eq!(*r.operation(), Operation::CreateKey(CreateKey::default()));
    let r = decoded("ListKeys", &json!({}));
    assert_eq!(*r.operation(), Operation::ListKeys(ListKeys::default()));
    // AWS's null is an absent member.
    let r = decoded(
        "ListAliases",
        &json!({"KeyId": null, "Limit": null, "Marker": null}),
    );
    assert_eq!(
        *r.operation(),
        Operation::ListAliases(ListAliases::default())
    );
    let r = decoded(
        "ImportKeyMaterial",
        &json!({"KeyId": KEY, "ImportToken": b64(b"t"), "EncryptedKeyMaterial": b64(b"m"),
                "ExpirationModel": "KEY_MATERIAL_DOES_NOT_EXPIRE"}),
    );
    let Operation::ImportKeyMaterial(i) = r.operation() else {
        panic!("{r:?}")
    };
    assert_eq!(
        (i.valid_to, i.expiration_model),
        (None, ExpirationModel::KeyMaterialDoesNotExpire)
    );
}

#[test]
fn create_key_names_origins_and_the_deprecated_spec() {
    for (name, origin) in [
        ("AWS_KMS", Origin::Kmsd),
        ("EXTERNAL", Origin::External),
        ("AWS_CLOUDHSM", Origin::Hsm),
    ] {
        let r = decoded(
            "CreateKey",
            &json!({"Origin": name, "CustomerMasterKeySpec": "SYMMETRIC_DEFAULT"}),
        );
        let Operation::CreateKey(c) = r.operation() else {
            panic!()
        };
        assert_eq!(c.origin, origin);
    }
    let (name, msg) = refusal(
        "CreateKey",
        &json!({"KeySpec": "SYMMETRIC_DEFAULT", "CustomerMasterKeySpec": "SYMMETRIC_DEFAULT"}),
    );
    assert_eq!(name, "ValidationException", "{msg}");
}

#[test]
fn an_empty_body_is_an_empty_object() {
    for body in [&b""[..], b"  \r\n", b"{}"] {
        let r = JsonRequest::decode("WhoAmI", body, &JsonLimits::default()).unwrap();
        assert_eq!(*r.operation(), Operation::WhoAmI(WhoAmI));
        let e = refused("DescribeKey", body);
        assert_eq!(
            (e.name(), e.message()),
            ("ValidationException", "KeyId is required")
        );
    }
}

#[test]
fn unknown_members_are_ignored_at_every_level() {
    let r = decoded(
        "CreateGrant",
        &json!({
            "KeyId": KEY,
            "GranteePrincipal": "uid:1",
            "Operations": ["Decrypt"],
            "SomethingNew": {"deep": [1, 2, {"x": null}]},
            "Constraints": {"EncryptionContextEquals": {"a": "b"}, "SourceArn": null},
        }),
    );
    let Operation::CreateGrant(g) = r.operation() else {
        panic!()
    };
    assert_eq!(
        g.constraints.as_ref().unwrap().encryption_context_equals,
        vec![("a", "b")]
    );
    let r = decoded(
        "TagResource",
        &json!({"KeyId": KEY, "Tags": [{"TagKey": "k", "TagValue": "v", "Extra": 1}], "Other": "x"}),
    );
    assert!(matches!(r.operation(), Operation::TagResource(t) if t.tags.len() == 1));
    let r = decoded(
        "Encrypt",
        &json!({"KeyId": KEY, "Plaintext": "AA==", "Future": [true]}),
    );
    assert!(matches!(r.operation(), Operation::Encrypt(e) if e.plaintext == [0]));
}

#[test]
fn blobs_are_standard_padded_base64_and_may_be_escaped() {
    let data: Vec<u8> = (0..=255).collect();
    let text = b64(&data);
    assert!(text.contains('/') && text.contains('+'));
    let r = decoded("Decrypt", &json!({"CiphertextBlob": text}));
    assert!(matches!(r.operation(), Operation::Decrypt(d) if d.ciphertext_blob == &data[..]));
    // An encoder that escapes slashes (PHP's json_encode does), and one that
    // escapes everything.
    let escaped = text.replace('/', "\\/");
    let body = format!("{{\"CiphertextBlob\":\"{escaped}\"}}");
    let r = JsonRequest::decode("Decrypt", body.as_bytes(), &JsonLimits::default()).unwrap();
    assert!(matches!(r.operation(), Operation::Decrypt(d) if d.ciphertext_blob == &data[..]));
    let body = "{\"Plaintext\":\"\\u0041\\u0041\\u003d\\u003d\",\"KeyId\":\"k\"}";
    let r = JsonRequest::decode("Encrypt", body.as_bytes(), &JsonLimits::default()).unwrap();
    assert!(matches!(r.operation(), Operation::Encrypt(e) if e.plaintext == [0]));
    for bad in [
        "AA=",        // short padding
        "AA",         // no padding
        "A===",       // too much
        "AB==",       // non-canonical trailing bits
        " AA==",      // whitespace
        "AA-_",       // URL-safe alphabet
        "\\u00e9A==", // an escaped non-ASCII character
        "\\nAA==",    // an escaped control character
    ] {
        let body = format!("{{\"KeyId\":\"k\",\"Plaintext\":\"{bad}\"}}");
        let e = refused("Encrypt", body.as_bytes());
        assert_eq!(e.name(), "SerializationException", "{bad}: {e}");
        assert!(e.message().contains("base64"), "{e}");
    }
    let (name, msg) = refusal("Encrypt", &json!({"KeyId": "k", "Plaintext": 12}));
    assert_eq!(name, "SerializationException", "{msg}");
}

#[test]
fn timestamps_are_epoch_seconds() {
    let valid_to = |v: Value| {
        let r = decoded(
            "ImportKeyMaterial",
            &json!({"KeyId": KEY, "ImportToken": "AA==", "EncryptedKeyMaterial": "AA==", "ValidTo": v}),
        );
        let Operation::ImportKeyMaterial(i) = r.operation() else {
            panic!()
        };
        i.valid_to
    };
    assert_eq!(valid_to(json!(1_733_180_000)), Some(1_733_180_000));
    assert_eq!(valid_to(json!(1_733_180_000.999)), Some(1_733_180_000));
    assert_eq!(valid_to(json!(-1.5)), Some(-2));
    assert_eq!(valid_to(json!(1.7e9)), Some(1_700_000_000));
    for bad in [json!("2024-12-03T00:00:00Z"), json!(1e300), json!(u64::MAX)] {
        let (name, msg) = refusal(
            "ImportKeyMaterial",
            &json!({"KeyId": KEY, "ImportToken": "AA==", "EncryptedKeyMaterial": "AA==", "ValidTo": bad}),
        );
        assert_eq!(name, "SerializationException", "{bad}: {msg}");
    }
}

#[test]
fn malformed_json_is_a_serialization_error() {
    for body in [
        &b"{"[..],
        b"{\"KeyId\":}",
        b"{\"KeyId\":\"k\"} trailing",
        b"{\"KeyId\":\"k\",}",
        b"[]",
        b"\"KeyId\"",
        b"null",
        b"{\"KeyId\":\"\xff\"}",
        b"{'KeyId':'k'}",
    ] {
        let e = refused("DescribeKey", body);
        assert_eq!(e.name(), "SerializationException", "{body:?}: {e}");
        assert_eq!(e.status(), 400);
    }
    // Nested shapes are objects too, not arrays of their members.
    for body in [
        &br#"{"KeyId":"k","Tags":[["a","b"]]}"#[..],
        br#"{"KeyId":"k","Tags":{"TagKey":"a"}}"#,
    ] {
        let e = refused("TagResource", body);
        assert_eq!(e.name(), "SerializationException", "{body:?}: {e}");
        assert_eq!(e.status(), 400);
    }
}

#[test]
fn wrong_types_are_serialization_errors_that_never_quote_the_value() {
    for (op, body) in [
        ("DescribeKey", json!({"KeyId": 5})),
        (
            "GenerateDataKey",
            json!({"KeyId": "k", "NumberOfBytes": "s3cr3t-value"}),
        ),
        (
            "GenerateDataKey",
            json!({"KeyId": "k", "NumberOfBytes": -1}),
        ),
        (
            "GenerateDataKey",
            json!({"KeyId": "k", "NumberOfBytes": 32.5}),
        ),
        (
            "Encrypt",
            json!({"KeyId": "k", "EncryptionContext": ["s3cr3t-value"]}),
        ),
        (
            "Encrypt",
            json!({"KeyId": "k", "EncryptionContext": {"a": 1}}),
        ),
        ("Encrypt", json!({"KeyId": "k", "DryRun": "s3cr3t-value"})),
        (
            "DescribeKey",
            json!({"KeyId": "k", "GrantTokens": "s3cr3t-value"}),
        ),
        ("CreateGrant", json!({"Operations": [7]})),
        ("CreateGrant", json!({"Constraints": "s3cr3t-value"})),
        ("CreateKey", json!({"KeySpec": false})),
    ] {
        let (name, msg) = refusal(op, &body);
        assert_eq!(name, "SerializationException", "{op} {body}: {msg}");
        assert!(!msg.contains("s3cr3t"), "{msg}");
        assert!(msg.contains("expected"), "{msg}");
    }
    // A member named twice.
    let e = refused("DescribeKey", br#"{"KeyId":"a","KeyId":"b"}"#);
    assert_eq!(e.name(), "SerializationException", "{e}");
}

#[test]
fn missing_required_members_are_validation_errors() {
    for (op, body, msg) in [
        (
            "DescribeKey",
            json!({"GrantTokens": []}),
            "KeyId is required",
        ),
        (
            "GenerateDataKey",
            json!({"KeySpec": "AES_256"}),
            "KeyId is required",
        ),
        (
            "ReEncrypt",
            json!({"CiphertextBlob": "AA=="}),
            "DestinationKeyId is required",
        ),
        (
            "CreateAlias",
            json!({"TargetKeyId": KEY}),
            "AliasName is required",
        ),
        (
            "CreateAlias",
            json!({"AliasName": "alias/a"}),
            "TargetKeyId is required",
        ),
        (
            "UpdateKeyDescription",
            json!({"KeyId": KEY}),
            "Description is required",
        ),
        ("TagResource", json!({"KeyId": KEY}), "Tags is required"),
        (
            "TagResource",
            json!({"KeyId": KEY, "Tags": [{"TagValue": "v"}]}),
            "Tags[0].TagKey is required",
        ),
        (
            "UntagResource",
            json!({"KeyId": KEY, "TagKeys": []}),
            "TagKeys is required",
        ),
        (
            "GetParametersForImport",
            json!({"KeyId": KEY, "WrappingKeySpec": "RSA_2048"}),
            "WrappingAlgorithm is required",
        ),
        (
            "GetParametersForImport",
            json!({"KeyId": KEY, "WrappingAlgorithm": "RSAES_OAEP_SHA_256"}),
            "WrappingKeySpec is required",
        ),
        (
            "ImportKeyMaterial",
            json!({"KeyId": KEY, "EncryptedKeyMaterial": "AA=="}),
            "ImportToken is required",
        ),
        (
            "ImportKeyMaterial",
            json!({"KeyId": KEY, "ImportToken": "AA==", "EncryptedKeyMaterial": ""}),
            "EncryptedKeyMaterial is required",
        ),
        ("PutKeyPolicy", json!({"KeyId": KEY}), "Policy is required"),
        (
            "CreateGrant",
            json!({"KeyId": KEY, "Operations": ["Decrypt"]}),
            "GranteePrincipal is required",
        ),
        (
            "CreateGrant",
            json!({"KeyId": KEY, "GranteePrincipal": "uid:1"}),
            "Operations is required",
        ),
        (
            "ListRetirableGrants",
            json!({}),
            "RetiringPrincipal is required",
        ),
        ("RevokeGrant", json!({"KeyId": KEY}), "GrantId is required"),
        (
            "VerifyAuditSeals",
            json!({"Seals": [{"Seq": 1, "Mac": b64(&[0; 32])}]}),
            "PrevHash must be 32 bytes",
        ),
    ] {
        assert_eq!(
            refusal(op, &body),
            ("ValidationException", msg.to_owned()),
            "{op} {body}"
        );
    }
}

/// The flatbuffers decoder's refusal of `op`.
fn flatbuffers_refusal(op: Operation<'_>) -> KmsError {
    let mut fbb = FlatBufferBuilder::new();
    build_request(
        &mut fbb,
        &Request {
            request_id: 1,
            body: RequestBody::Single(Ok(op)),
        },
    );
    let req = decode_request(fbb.finished_data(), &DecodeLimits::default()).unwrap();
    match req.body {
        RequestBody::Single(Err(e)) => e,
        other => panic!("flatbuffers decoded {other:?}"),
    }
}

#[test]
fn checks_both_codecs_make_refuse_with_the_same_words() {
    let long = "x".repeat(400);
    let tokens: Vec<String> = (0..11).map(|i| format!("t{i}")).collect();
    let token_refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
    let policy = "p".repeat(limits::MAX_POLICY_BYTES + 1);
    let big_ctx: Vec<(String, String)> = (0..65).map(|i| (format!("k{i}"), "v".into())).collect();
    let big_ctx_json: serde_json::Map<String, Value> = big_ctx
        .iter()
        .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
        .collect();
    let cases: Vec<(&str, Value, Operation<'_>)> = vec![
        (
            "DescribeKey",
            json!({"KeyId": KEY, "GrantTokens": tokens}),
            Operation::DescribeKey(DescribeKey {
                key_id: KEY,
                grant_tokens: token_refs.clone(),
            }),
        ),
        (
            "DescribeKey",
            json!({"KeyId": KEY, "GrantTokens": [""]}),
            Operation::DescribeKey(DescribeKey {
                key_id: KEY,
                grant_tokens: vec![""],
            }),
        ),
        (
            "CreateAlias",
            json!({"AliasName": long, "TargetKeyId": KEY}),
            Operation::CreateAlias(CreateAlias {
                alias_name: &long,
                target_key_id: KEY,
            }),
        ),
        (
            "TagResource",
            json!({"KeyId": KEY, "Tags": [{"TagKey": long, "TagValue": "v"}]}),
            Operation::TagResource(TagResource {
                key_id: KEY,
                tags: vec![Tag {
                    key: &long,
                    value: "v",
                }],
            }),
        ),
        (
            "PutKeyPolicy",
            json!({"KeyId": KEY, "Policy": policy}),
            Operation::PutKeyPolicy(PutKeyPolicy {
                key_id: KEY,
                policy: &policy,
                ..Default::default()
            }),
        ),
        (
            "Encrypt",
            json!({"KeyId": KEY, "Plaintext": "AA==", "EncryptionContext": big_ctx_json}),
            Operation::Encrypt(Encrypt {
                key_id: KEY,
                plaintext: &[0],
                context: big_ctx
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect(),
                ..Default::default()
            }),
        ),
        (
            "CreateGrant",
            json!({"KeyId": KEY, "GranteePrincipal": "u", "Operations": ["Decrypt"],
                   "Constraints": {"EncryptionContextSubset": {"k": long}}}),
            Operation::CreateGrant(CreateGrant {
                key_id: KEY,
                grantee_principal: "u",
                operations: vec![GrantOperation::Decrypt],
                constraints: Some(GrantConstraints {
                    encryption_context_subset: vec![("k", &long)],
                    encryption_context_equals: vec![],
                }),
                ..Default::default()
            }),
        ),
        (
            "ListGrants",
            json!({"KeyId": KEY, "Marker": ""}),
            Operation::ListGrants(ListGrants {
                key_id: KEY,
                marker: Some(""),
                ..Default::default()
            }),
        ),
        (
            "RetireGrant",
            json!({"GrantToken": ""}),
            Operation::RetireGrant(RetireGrant {
                grant_token: Some(""),
                ..Default::default()
            }),
        ),
    ];
    for (name, body, op) in cases {
        let fb = flatbuffers_refusal(op);
        let json = refused(name, body.to_string().as_bytes());
        assert_eq!(json, JsonError::Kms(fb.clone()), "{name}: {fb}");
    }
}

#[test]
fn aws_values_kmsd_does_not_offer_are_unsupported_and_unknown_values_invalid() {
    for (op, body) in [
        ("CreateKey", json!({"KeySpec": "RSA_2048"})),
        ("CreateKey", json!({"KeyUsage": "SIGN_VERIFY"})),
        ("CreateKey", json!({"Origin": "EXTERNAL_KEY_STORE"})),
        ("CreateKey", json!({"CustomKeyStoreId": "cks-1"})),
        ("CreateKey", json!({"MultiRegion": true})),
        ("CreateKey", json!({"XksKeyId": "x"})),
        (
            "Encrypt",
            json!({"KeyId": "k", "Plaintext": "AA==", "EncryptionAlgorithm": "RSAES_OAEP_SHA_256"}),
        ),
        (
            "Decrypt",
            json!({"CiphertextBlob": "AA==", "Recipient": {"KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256"}}),
        ),
        (
            "Decrypt",
            json!({"CiphertextBlob": "AA==", "DryRun": true, "DryRunModifiers": ["IGNORE_CIPHERTEXT"]}),
        ),
        (
            "ReEncrypt",
            json!({"DestinationKeyId": "k", "DestinationEncryptionAlgorithm": "SM2PKE"}),
        ),
        (
            "GenerateDataKey",
            json!({"KeyId": "k", "KeySpec": "AES_256", "Recipient": {}}),
        ),
        (
            "GenerateRandom",
            json!({"NumberOfBytes": 8, "CustomKeyStoreId": "c"}),
        ),
        (
            "ListKeyRotations",
            json!({"KeyId": "k", "IncludeKeyMaterial": "ALL_KEY_MATERIAL"}),
        ),
        (
            "GetParametersForImport",
            json!({"KeyId": "k", "WrappingAlgorithm": "SM2PKE", "WrappingKeySpec": "RSA_2048"}),
        ),
        (
            "GetParametersForImport",
            json!({"KeyId": "k", "WrappingAlgorithm": "RSAES_OAEP_SHA_1", "WrappingKeySpec": "SM2"}),
        ),
        (
            "ImportKeyMaterial",
            json!({"KeyId": "k", "ImportToken": "AA==", "EncryptedKeyMaterial": "AA==", "KeyMaterialId": "ab"}),
        ),
        (
            "DeleteImportedKeyMaterial",
            json!({"KeyId": "k", "KeyMaterialId": "ab"}),
        ),
        (
            "CreateGrant",
            json!({"KeyId": "k", "GranteeServicePrincipal": "s3.amazonaws.com", "Operations": ["Decrypt"]}),
        ),
        (
            "CreateGrant",
            json!({"KeyId": "k", "GranteePrincipal": "u", "Operations": ["Decrypt"],
                               "Constraints": {"SourceArn": "arn:aws:s3:::b"}}),
        ),
        (
            "CreateGrant",
            json!({"KeyId": "k", "GranteePrincipal": "u", "Operations": ["Decrypt"],
                               "Constraints": {"EncryptionContextSubset": {"a": "b"}, "NewConstraint": {}}}),
        ),
        (
            "ListGrants",
            json!({"KeyId": "k", "GranteeServicePrincipal": "s3.amazonaws.com"}),
        ),
    ] {
        let (name, msg) = refusal(op, &body);
        assert_eq!(name, "UnsupportedOperationException", "{op} {body}: {msg}");
    }
    for (op, body, field) in [
        ("CreateKey", json!({"KeySpec": "AES_999"}), "KeySpec"),
        ("CreateKey", json!({"Origin": "aws_kms"}), "Origin"),
        (
            "GenerateDataKey",
            json!({"KeyId": "k", "KeySpec": "AES_512"}),
            "KeySpec",
        ),
        (
            "ImportKeyMaterial",
            json!({"KeyId": "k", "ImportToken": "AA==", "EncryptedKeyMaterial": "AA==",
                                     "ExpirationModel": "NEVER"}),
            "ExpirationModel",
        ),
        (
            "CreateGrant",
            json!({"KeyId": "k", "GranteePrincipal": "u", "Operations": ["Decrypt", "Fly"]}),
            "Operations[1]",
        ),
    ] {
        let (name, msg) = refusal(op, &body);
        assert_eq!(name, "ValidationException", "{op} {body}: {msg}");
        assert!(msg.starts_with(field), "{msg}");
        assert!(!msg.contains("AES_999") && !msg.contains("Fly"), "{msg}");
    }
}

#[test]
fn a_limit_of_zero_is_refused_as_aws_does() {
    for op in ["ListKeys", "ListAliases", "ListResourceTags", "ListGrants"] {
        let (name, msg) = refusal(op, &json!({"KeyId": KEY, "Limit": 0}));
        assert_eq!(name, "ValidationException", "{msg}");
        assert!(msg.starts_with("Limit 0 is out of range 1..="), "{msg}");
    }
}

#[test]
fn unknown_operations_are_unknown_operation_exceptions() {
    for name in [
        "Nope",
        "",
        "encrypt",
        "TrentService.Encrypt",
        "Sign",
        "GetPublicKey",
    ] {
        let e = refused(name, b"{}");
        assert!(matches!(e, JsonError::UnknownOperation(_)), "{name}: {e:?}");
        assert_eq!(e.name(), "UnknownOperationException");
        assert_eq!(e.status(), 400);
    }
    assert!(refused("Sign", b"{}")
        .message()
        .contains("Sign is an AWS KMS operation"));
    // The client's text is not quoted.
    assert!(!refused("<script>", b"{}").message().contains("script"));
    // The name is checked before the body.
    let e = refused("Nope", b"{not json");
    assert_eq!(e.name(), "UnknownOperationException");
}

// -------------------------------------------------------------------- limits

fn tight() -> JsonLimits {
    JsonLimits {
        max_body: 200,
        max_depth: 3,
        max_fields: 10,
        max_string: 50,
    }
}

#[test]
fn bodies_over_the_limits_are_refused_before_parsing() {
    let ok = br#"{"KeyId":"k","EncryptionContext":{"a":"b"},"X":{"Y":{"Z":1}}}"#;
    JsonRequest::decode("GenerateDataKey", ok, &tight()).unwrap();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            format!(r#"{{"KeyId":"{}"}}"#, "k".repeat(248)).into_bytes(),
            "the request body has 260 bytes; at most 200 are allowed",
        ),
        (
            format!(r#"{{"KeyId":"{}"}}"#, "k".repeat(51)).into_bytes(),
            "a string in the request body has 51 bytes; at most 50 are allowed",
        ),
        (
            br#"{"KeyId":"k","X":{"Y":{"Z":[]}}}"#.to_vec(),
            "the request body nests deeper than 3 levels",
        ),
        (
            br#"{"KeyId":"k","X":[1,2,3,4,5,6,7,8,9,10]}"#.to_vec(),
            "the request body has more than 10 members and elements",
        ),
        // Malformed and too deep: the bound speaks first.
        (
            b"[[[[".to_vec(),
            "the request body nests deeper than 3 levels",
        ),
    ];
    for (body, msg) in cases {
        let e = JsonRequest::decode("GenerateDataKey", &body, &tight()).unwrap_err();
        assert_eq!(
            e,
            JsonError::Kms(KmsError::validation(msg)),
            "{}",
            String::from_utf8_lossy(&body)
        );
    }
    // Escapes count as written, and an escaped quote does not end a string.
    let body = format!(r#"{{"KeyId":"{}\"{}"}}"#, "a".repeat(20), "b".repeat(29));
    let e = JsonRequest::decode("GenerateDataKey", body.as_bytes(), &tight()).unwrap_err();
    assert!(
        e.message()
            .starts_with("a string in the request body has 51 bytes"),
        "{e}"
    );
    // Brackets inside strings are text.
    let body = br#"{"KeyId":"[[[[{{{{,,,,,,,,,,,,"}"#;
    JsonRequest::decode("DescribeKey", body, &tight()).unwrap();
}

#[test]
fn the_default_limits_fit_the_largest_valid_requests() {
    // A 32 KiB policy of two-byte characters, escaped as \u00XX.
    let policy: String = "é".repeat(limits::MAX_POLICY_BYTES / 2);
    let escaped: String = policy.chars().map(|_| "\\u00e9").collect();
    let body = format!(r#"{{"KeyId":"{KEY}","Policy":"{escaped}"}}"#);
    let r = JsonRequest::decode("PutKeyPolicy", body.as_bytes(), &JsonLimits::default()).unwrap();
    assert!(matches!(r.operation(), Operation::PutKeyPolicy(p) if p.policy == policy));
    // VerifyAuditSeals with its most seals, the largest sequence numbers.
    let seal = json!({"Seq": u64::MAX, "PrevHash": b64(&[0xff; 32]), "Mac": b64(&[0xee; 32])});
    let body = json!({"Seals": vec![seal; limits::MAX_AUDIT_SEALS]});
    let r = decoded("VerifyAuditSeals", &body);
    assert!(matches!(r.operation(), Operation::VerifyAuditSeals(v) if v.seals.len() == 1000));
    let (name, msg) = refusal(
        "VerifyAuditSeals",
        &json!({"Seals": vec![json!({}); limits::MAX_AUDIT_SEALS + 1]}),
    );
    assert_eq!(
        (name, msg.as_str()),
        ("ValidationException", "Seals must hold 0..=1000 seals")
    );
    // A 4 KiB plaintext.
    let body = json!({"KeyId": KEY, "Plaintext": b64(&[7; 4096])});
    decoded("Encrypt", &body);
}

// ------------------------------------------------------------------ secrets

#[test]
fn debug_output_never_shows_plaintext() {
    let r = decoded(
        "Encrypt",
        &json!({"KeyId": KEY, "Plaintext": b64(b"very secret text")}),
    );
    let shown = format!("{r:?}");
    assert!(shown.contains("16 bytes redacted"), "{shown}");
    assert!(!shown.contains("very") && !shown.contains("118"), "{shown}");
}

// ------------------------------------------------------------------ answers

fn encoded(output: &Output) -> Value {
    let mut out = Vec::new();
    encode_output(output, &mut out);
    serde_json::from_slice(&out)
        .unwrap_or_else(|e| panic!("{output:?}: {e}: {}", String::from_utf8_lossy(&out)))
}

fn metadata() -> KeyMetadata {
    KeyMetadata {
        key_id: KEY.into(),
        arn: ARN.into(),
        creation_date: 1_733_180_000,
        enabled: false,
        description: "tab\there \"quoted\" \u{1} é".into(),
        key_state: KeyState::PendingDeletion,
        key_usage: KeyUsage::EncryptDecrypt,
        key_spec: KeySpec::SymmetricDefault,
        origin: Origin::External,
        current_version: 3,
        deletion_date: Some(1_735_000_000),
        pending_deletion_window_in_days: Some(7),
        valid_to: Some(1_740_000_000),
        expiration_model: Some(ExpirationModel::KeyMaterialExpires),
    }
}

#[test]
fn key_metadata_has_aws_members_and_values() {
    for output in [
        Output::CreateKey(metadata()),
        Output::DescribeKey(metadata()),
    ] {
        let v = encoded(&output);
        let m = &v["KeyMetadata"];
        assert_eq!(
            m,
            &json!({
                "AWSAccountId": "111122223333",
                "KeyId": KEY,
                "Arn": ARN,
                "CreationDate": 1_733_180_000,
                "Enabled": false,
                "Description": "tab\there \"quoted\" \u{1} é",
                "KeyUsage": "ENCRYPT_DECRYPT",
                "KeyState": "PendingDeletion",
                "DeletionDate": 1_735_000_000,
                "ValidTo": 1_740_000_000,
                "Origin": "EXTERNAL",
                "ExpirationModel": "KEY_MATERIAL_EXPIRES",
                "KeyManager": "CUSTOMER",
                "CustomerMasterKeySpec": "SYMMETRIC_DEFAULT",
                "KeySpec": "SYMMETRIC_DEFAULT",
                "EncryptionAlgorithms": ["SYMMETRIC_DEFAULT"],
                "MultiRegion": false,
                "PendingDeletionWindowInDays": 7,
            })
        );
    }
    // kmsd's own ARNs name no account; optional members are left out.
    let m = KeyMetadata {
        arn: format!("arn:kmsd:kms:local:key/{KEY}"),
        origin: Origin::Hsm,
        key_state: KeyState::Unavailable,
        deletion_date: None,
        pending_deletion_window_in_days: None,
        valid_to: None,
        expiration_model: None,
        ..metadata()
    };
    let v = encoded(&Output::DescribeKey(m));
    let m = v["KeyMetadata"].as_object().unwrap();
    for absent in [
        "AWSAccountId",
        "DeletionDate",
        "ValidTo",
        "ExpirationModel",
        "PendingDeletionWindowInDays",
    ] {
        assert!(!m.contains_key(absent), "{absent}");
    }
    assert_eq!(m["Origin"], "AWS_CLOUDHSM");
    assert_eq!(m["KeyState"], "Unavailable");
    let v = encoded(&Output::DescribeKey(KeyMetadata {
        origin: Origin::Kmsd,
        ..metadata()
    }));
    assert_eq!(v["KeyMetadata"]["Origin"], "AWS_KMS");
}

#[test]
fn data_answers_carry_base64_blobs() {
    let ct: Vec<u8> = (0..93).collect();
    let pt: Vec<u8> = (100..132).collect();
    let v = encoded(&Output::GenerateDataKey(GenerateDataKeyOutput {
        key_id: ARN.into(),
        plaintext: SecretBytes::new(pt.clone()),
        ciphertext_blob: ct.clone(),
    }));
    assert_eq!(
        v,
        json!({"CiphertextBlob": b64(&ct), "Plaintext": b64(&pt), "KeyId": ARN})
    );
    let v = encoded(&Output::GenerateDataKeyWithoutPlaintext(
        GenerateDataKeyWithoutPlaintextOutput {
            key_id: ARN.into(),
            ciphertext_blob: ct.clone(),
        },
    ));
    assert_eq!(v, json!({"CiphertextBlob": b64(&ct), "KeyId": ARN}));
    let v = encoded(&Output::Encrypt(EncryptOutput {
        key_id: ARN.into(),
        ciphertext_blob: ct.clone(),
    }));
    assert_eq!(
        v,
        json!({"CiphertextBlob": b64(&ct), "KeyId": ARN, "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"})
    );
    let v = encoded(&Output::Decrypt(DecryptOutput {
        key_id: ARN.into(),
        plaintext: SecretBytes::new(pt.clone()),
    }));
    assert_eq!(
        v,
        json!({"KeyId": ARN, "Plaintext": b64(&pt), "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"})
    );
    let v = encoded(&Output::ReEncrypt(ReEncryptOutput {
        source_key_id: KEY.into(),
        key_id: ARN.into(),
        ciphertext_blob: ct.clone(),
    }));
    assert_eq!(
        v,
        json!({"CiphertextBlob": b64(&ct), "SourceKeyId": KEY, "KeyId": ARN,
               "SourceEncryptionAlgorithm": "SYMMETRIC_DEFAULT",
               "DestinationEncryptionAlgorithm": "SYMMETRIC_DEFAULT"})
    );
    let v = encoded(&Output::GenerateRandom(GenerateRandomOutput {
        plaintext: SecretBytes::new(vec![]),
    }));
    assert_eq!(v, json!({"Plaintext": ""}));
}

#[test]
fn answers_with_plaintext_fit_their_bound() {
    let odd = "\u{0}\"\\".repeat(40);
    for n in [0, 1, 2, 3, 31, 32, 1024, 4096] {
        for output in [
            Output::GenerateDataKey(GenerateDataKeyOutput {
                key_id: odd.clone(),
                plaintext: SecretBytes::new(vec![9; n]),
                ciphertext_blob: vec![1; n + 61],
            }),
            Output::Decrypt(DecryptOutput {
                key_id: odd.clone(),
                plaintext: SecretBytes::new(vec![9; n]),
            }),
            Output::GenerateRandom(GenerateRandomOutput {
                plaintext: SecretBytes::new(vec![9; n]),
            }),
        ] {
            let mut out = Vec::new();
            encode_output(&output, &mut out);
            let cap = out.capacity();
            assert!(out.len() <= output_len_bound(&output), "{n}");
            // Reserved once: the capacity is what the bound asked for.
            assert!(cap >= output_len_bound(&output));
        }
    }
}

#[test]
fn outputs_without_members_are_empty_objects() {
    for output in [
        Output::UpdateKeyDescription,
        Output::TagResource,
        Output::UntagResource,
        Output::CreateAlias,
        Output::UpdateAlias,
        Output::DeleteAlias,
        Output::EnableKey,
        Output::DisableKey,
        Output::EnableKeyRotation,
        Output::DisableKeyRotation,
        Output::ImportKeyMaterial,
        Output::DeleteImportedKeyMaterial,
        Output::PutKeyPolicy,
        Output::RetireGrant,
        Output::RevokeGrant,
    ] {
        assert_eq!(encoded(&output), json!({}), "{output:?}");
    }
}

#[test]
fn list_answers_have_aws_shapes() {
    let v = encoded(&Output::ListKeys(ListKeysOutput {
        keys: vec![KeyListEntry {
            key_id: KEY.into(),
            arn: ARN.into(),
        }],
        next_marker: Some("next".into()),
        truncated: true,
    }));
    assert_eq!(
        v,
        json!({"Keys": [{"KeyId": KEY, "KeyArn": ARN}], "NextMarker": "next", "Truncated": true})
    );
    let v = encoded(&Output::ListResourceTags(ListResourceTagsOutput {
        tags: vec![OwnedTag {
            key: "k".into(),
            value: "".into(),
        }],
        next_marker: None,
        truncated: false,
    }));
    assert_eq!(
        v,
        json!({"Tags": [{"TagKey": "k", "TagValue": ""}], "Truncated": false})
    );
    let v = encoded(&Output::ListAliases(ListAliasesOutput {
        aliases: vec![
            AliasListEntry {
                alias_name: "alias/a".into(),
                alias_arn: "arn:aws:kms:us-east-1:111122223333:alias/a".into(),
                target_key_id: Some(KEY.into()),
                creation_date: 1,
                last_updated_date: 2,
            },
            AliasListEntry {
                alias_name: "alias/b".into(),
                alias_arn: "arn:b".into(),
                target_key_id: None,
                creation_date: 3,
                last_updated_date: 4,
            },
        ],
        next_marker: None,
        truncated: false,
    }));
    assert_eq!(
        v,
        json!({"Aliases": [
            {"AliasName": "alias/a", "AliasArn": "arn:aws:kms:us-east-1:111122223333:alias/a",
             "TargetKeyId": KEY, "CreationDate": 1, "LastUpdatedDate": 2},
            {"AliasName": "alias/b", "AliasArn": "arn:b", "CreationDate": 3, "LastUpdatedDate": 4},
        ], "Truncated": false})
    );
    let v = encoded(&Output::ListKeyRotations(ListKeyRotationsOutput {
        rotations: vec![RotationsListEntry {
            key_id: ARN.into(),
            rotation_date: 1_733_180_000,
            rotation_type: RotationType::OnDemand,
        }],
        next_marker: Some("m".into()),
        truncated: true,
    }));
    assert_eq!(
        v,
        json!({"Rotations": [{"KeyId": ARN, "RotationDate": 1_733_180_000, "RotationType": "ON_DEMAND"}],
               "NextMarker": "m", "Truncated": true})
    );
    let v = encoded(&Output::ListKeyPolicies(ListKeyPoliciesOutput {
        policy_names: vec!["default".into()],
        next_marker: None,
        truncated: false,
    }));
    assert_eq!(v, json!({"PolicyNames": ["default"], "Truncated": false}));
}

#[test]
fn grant_answers_have_aws_shapes() {
    let grants = ListGrantsOutput {
        grants: vec![
            GrantListEntry {
                key_id: ARN.into(),
                grant_id: "g1".into(),
                name: Some("n".into()),
                creation_date: 10,
                grantee_principal: "uid:1".into(),
                retiring_principal: Some("uid:0".into()),
                issuing_account: "kmsd".into(),
                operations: vec![GrantOperation::Encrypt, GrantOperation::ReEncryptFrom],
                constraints: Some(OwnedGrantConstraints {
                    encryption_context_subset: vec![],
                    encryption_context_equals: vec![("a".into(), "b".into())],
                }),
            },
            GrantListEntry {
                key_id: ARN.into(),
                grant_id: "g2".into(),
                operations: vec![GrantOperation::Decrypt],
                ..Default::default()
            },
        ],
        next_marker: None,
        truncated: false,
    };
    let want = json!({"Grants": [
        {"KeyId": ARN, "GrantId": "g1", "Name": "n", "CreationDate": 10,
         "GranteePrincipal": "uid:1", "RetiringPrincipal": "uid:0", "IssuingAccount": "kmsd",
         "Operations": ["Encrypt", "ReEncryptFrom"],
         "Constraints": {"EncryptionContextEquals": {"a": "b"}}},
        {"KeyId": ARN, "GrantId": "g2", "CreationDate": 0, "GranteePrincipal": "",
         "IssuingAccount": "", "Operations": ["Decrypt"]},
    ], "Truncated": false});
    assert_eq!(encoded(&Output::ListGrants(grants.clone())), want);
    assert_eq!(encoded(&Output::ListRetirableGrants(grants)), want);
    let v = encoded(&Output::CreateGrant(CreateGrantOutput {
        grant_token: "tok".into(),
        grant_id: "g".into(),
    }));
    assert_eq!(v, json!({"GrantToken": "tok", "GrantId": "g"}));
}

#[test]
fn lifecycle_and_import_answers_have_aws_shapes() {
    let v = encoded(&Output::ScheduleKeyDeletion(ScheduleKeyDeletionOutput {
        key_id: ARN.into(),
        deletion_date: 1_735_000_000,
        key_state: KeyState::PendingDeletion,
        pending_window_in_days: 7,
    }));
    assert_eq!(
        v,
        json!({"KeyId": ARN, "DeletionDate": 1_735_000_000, "KeyState": "PendingDeletion", "PendingWindowInDays": 7})
    );
    for output in [
        Output::CancelKeyDeletion(CancelKeyDeletionOutput { key_id: ARN.into() }),
        Output::RotateKeyOnDemand(RotateKeyOnDemandOutput { key_id: ARN.into() }),
    ] {
        assert_eq!(encoded(&output), json!({"KeyId": ARN}));
    }
    let v = encoded(&Output::GetKeyRotationStatus(GetKeyRotationStatusOutput {
        key_id: ARN.into(),
        key_rotation_enabled: true,
        rotation_period_in_days: Some(365),
        next_rotation_date: Some(1_760_000_000),
        on_demand_rotation_start_date: None,
    }));
    assert_eq!(
        v,
        json!({"KeyRotationEnabled": true, "KeyId": ARN, "RotationPeriodInDays": 365, "NextRotationDate": 1_760_000_000})
    );
    let v = encoded(&Output::GetKeyRotationStatus(GetKeyRotationStatusOutput {
        key_id: ARN.into(),
        ..Default::default()
    }));
    assert_eq!(v, json!({"KeyRotationEnabled": false, "KeyId": ARN}));
    let v = encoded(&Output::GetParametersForImport(
        GetParametersForImportOutput {
            key_id: ARN.into(),
            import_token: vec![1, 2, 3],
            public_key: vec![4, 5],
            parameters_valid_to: 1_733_266_400,
        },
    ));
    assert_eq!(
        v,
        json!({"KeyId": ARN, "ImportToken": b64(&[1, 2, 3]), "PublicKey": b64(&[4, 5]), "ParametersValidTo": 1_733_266_400})
    );
    let v = encoded(&Output::GetKeyPolicy(GetKeyPolicyOutput {
        policy: "{\n  \"Version\": \"2012-10-17\"\n}".into(),
        policy_name: "default".into(),
    }));
    assert_eq!(
        v,
        json!({"Policy": "{\n  \"Version\": \"2012-10-17\"\n}", "PolicyName": "default"})
    );
}

#[test]
fn kmsd_answers_use_the_schemas_names() {
    let v = encoded(&Output::WhoAmI(WhoAmIOutput {
        uid: 1000,
        gid: 100,
        pid: -1,
        groups: vec![4, 27],
        unit: Some("app.service".into()),
        cgroup: None,
    }));
    assert_eq!(
        v,
        json!({"Uid": 1000, "Gid": 100, "Pid": -1, "Groups": [4, 27], "Unit": "app.service"})
    );
    let v = encoded(&Output::VerifyAuditSeals(VerifyAuditSealsOutput {
        valid: vec![true, false],
        head_seq: u64::MAX,
        head_hash: [3; 32],
    }));
    assert_eq!(
        v,
        json!({"Valid": [true, false], "HeadSeq": u64::MAX, "HeadHash": b64(&[3; 32])})
    );
    let v = encoded(&Output::GetStatus(GetStatusOutput {
        version: "0.1.0".into(),
        uptime_ms: 5,
        metrics: vec![
            MetricSample {
                name: "kmsd_requests_total".into(),
                kind: MetricKind::Counter,
                labels: vec![("operation".into(), "Encrypt".into())],
                value: 12.0,
                ..Default::default()
            },
            MetricSample {
                name: "kmsd_latency_seconds".into(),
                kind: MetricKind::Histogram,
                labels: vec![],
                value: 0.25,
                count: 4,
                quantiles: vec![(0.5, 0.001), (0.99, f64::NAN)],
            },
            MetricSample {
                name: "g".into(),
                kind: MetricKind::Gauge,
                value: f64::INFINITY,
                ..Default::default()
            },
        ],
    }));
    assert_eq!(
        v,
        json!({"Version": "0.1.0", "UptimeMs": 5, "Metrics": [
            {"Name": "kmsd_requests_total", "Kind": "counter", "Labels": {"operation": "Encrypt"}, "Value": 12.0},
            {"Name": "kmsd_latency_seconds", "Kind": "histogram", "Labels": {}, "Value": 0.25,
             "Count": 4, "Quantiles": {"0.5": 0.001, "0.99": null}},
            {"Name": "g", "Kind": "gauge", "Labels": {}, "Value": null},
        ]})
    );
}

#[test]
fn strings_are_escaped_and_read_back_unchanged() {
    let nasty: String = (0u8..0x80).map(char::from).collect::<String>() + "é😀\u{2028}";
    let v = encoded(&Output::CreateGrant(CreateGrantOutput {
        grant_token: nasty.clone(),
        grant_id: String::new(),
    }));
    assert_eq!(v["GrantToken"], nasty);
}

// ------------------------------------------------------------------ errors

#[test]
fn every_error_kind_has_awss_status() {
    let want = |k: ErrorKind| match k {
        ErrorKind::NotFound => 404,
        ErrorKind::Disabled
        | ErrorKind::KmsInvalidState
        | ErrorKind::AlreadyExists
        | ErrorKind::Conflict => 409,
        ErrorKind::DryRunOperation => 412,
        ErrorKind::KmsInternal | ErrorKind::KeyUnavailable | ErrorKind::Unrecognized => 500,
        ErrorKind::ServiceUnavailable => 503,
        _ => 400,
    };
    for k in ErrorKind::ALL.into_iter().chain([ErrorKind::Unrecognized]) {
        assert_eq!(status_of(k), want(k), "{k}");
    }
    // The ones a client must retry are 5xx, or ThrottlingException.
    for k in ErrorKind::ALL {
        assert_eq!(
            k.is_retryable(),
            status_of(k) >= 500 || k == ErrorKind::Throttling,
            "{k}"
        );
    }
}

#[test]
fn errors_are_a_type_and_a_message() {
    let mut out = Vec::new();
    let status = encode_error(
        &KmsError::new(ErrorKind::NotFound, "key \"x\" is\nnot here"),
        &mut out,
    );
    assert_eq!(status, 404);
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        v,
        json!({"__type": "NotFoundException", "message": "key \"x\" is\nnot here"})
    );
    let mut out = Vec::new();
    let e = refused("Nope", b"{}");
    assert_eq!(encode_json_error(&e, &mut out), 400);
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["__type"], "UnknownOperationException");
    let mut out = Vec::new();
    let e = refused("Encrypt", b"{");
    assert_eq!(encode_json_error(&e, &mut out), 400);
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["__type"], "SerializationException");
    let mut out = Vec::new();
    assert_eq!(
        encode_json_error(
            &JsonError::Kms(KmsError::new(ErrorKind::DryRunOperation, "ok")),
            &mut out
        ),
        412
    );
}
