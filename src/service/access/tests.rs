//! Authorization, table-driven: every operation against no permission, an
//! allow of exactly its action, an explicit deny, and conditions, in this
//! process (the end-to-end tests connect as other uids for real).

use crate::identity::{Identity, PeerDetails};
use crate::service::ops::test_support::TestService;
use kms_proto::*;

/// The administrator the test service's keys are made by (uid 0).
const ADMIN: Identity = Identity::local(0, 0, 1);

/// Someone else: not an administrator, not the creator.
fn other() -> Identity {
    Identity::accepted(4242, 4242, 2, PeerDetails::default())
}

fn policy(statements: &str) -> String {
    format!(r#"{{"Version":"2012-10-17","Statement":[{{"Sid":"admins","Effect":"Allow","Principal":{{"AWS":"uid:0"}},"Action":"kms:*","Resource":"*"}},{statements}]}}"#)
}

fn allow(action: &str) -> String {
    policy(&format!(
        r#"{{"Effect":"Allow","Principal":{{"AWS":"uid:4242"}},"Action":"{action}","Resource":"*"}}"#
    ))
}

fn allow_all_but(action: &str) -> String {
    policy(&format!(
        r#"{{"Effect":"Allow","Principal":{{"AWS":"uid:4242"}},"Action":"kms:*","Resource":"*"}},
           {{"Effect":"Deny","Principal":{{"AWS":"uid:4242"}},"Action":"{action}","Resource":"*"}}"#
    ))
}

struct Fixture {
    t: TestService,
    key: String,
    id: [u8; 16],
    blob: Vec<u8>,
    /// A grant to uid 5000 (Decrypt) the administrator made.
    grant_id: String,
    /// A policy that lets uid 4242 put the next one (the lockout check).
    next_policy: String,
}

impl Fixture {
    fn new() -> Fixture {
        let t = TestService::new();
        let key = t.create_key();
        let id = crate::service::Arns::default().parse_key_id(&key).unwrap();
        let blob = match t
            .call(Operation::Encrypt(Encrypt {
                key_id: &key,
                plaintext: b"x",
                ..Default::default()
            }))
            .unwrap()
        {
            Output::Encrypt(o) => o.ciphertext_blob,
            o => panic!("{o:?}"),
        };
        t.alias("alias/fixture", &key);
        let grant_id = match t
            .call(Operation::CreateGrant(CreateGrant {
                key_id: &key,
                grantee_principal: "uid:5000",
                operations: vec![GrantOperation::Decrypt],
                ..Default::default()
            }))
            .unwrap()
        {
            Output::CreateGrant(o) => o.grant_id,
            o => panic!("{o:?}"),
        };
        Fixture {
            t,
            key,
            id,
            blob,
            grant_id,
            next_policy: allow("kms:PutKeyPolicy"),
        }
    }

    fn put(&self, text: &str) {
        self.t.svc.put_key_policy(&ADMIN, &self.id, text, false).unwrap();
    }

    fn as_other(&self, op: Operation<'_>) -> Result<Output, KmsError> {
        self.t.svc.call(&op, &other())
    }
}

/// Every operation on the fixture's key, with the action its policy
/// check names. Requests that would fail after the check for reasons of
/// their own (an import token that is not one) still show whether the
/// check passed: only AccessDeniedException says it did not.
fn key_operations<'a>(f: &'a Fixture) -> Vec<(&'static str, Operation<'a>)> {
    let k = f.key.as_str();
    vec![
        ("kms:DescribeKey", Operation::DescribeKey(DescribeKey { key_id: k, ..Default::default() })),
        ("kms:Encrypt", Operation::Encrypt(Encrypt { key_id: k, plaintext: b"p", ..Default::default() })),
        ("kms:Decrypt", Operation::Decrypt(Decrypt { ciphertext_blob: &f.blob, ..Default::default() })),
        ("kms:GenerateDataKey", Operation::GenerateDataKey(GenerateDataKey { key_id: k, number_of_bytes: Some(16), ..Default::default() })),
        ("kms:GenerateDataKeyWithoutPlaintext", Operation::GenerateDataKeyWithoutPlaintext(GenerateDataKey { key_id: k, number_of_bytes: Some(16), ..Default::default() })),
        ("kms:UpdateKeyDescription", Operation::UpdateKeyDescription(UpdateKeyDescription { key_id: k, description: "d" })),
        ("kms:TagResource", Operation::TagResource(TagResource { key_id: k, tags: vec![Tag { key: "a", value: "b" }] })),
        ("kms:UntagResource", Operation::UntagResource(UntagResource { key_id: k, tag_keys: vec!["a"] })),
        ("kms:ListResourceTags", Operation::ListResourceTags(ListResourceTags { key_id: k, limit: 10, marker: None })),
        ("kms:CreateAlias", Operation::CreateAlias(CreateAlias { alias_name: "alias/new", target_key_id: k })),
        ("kms:UpdateAlias", Operation::UpdateAlias(UpdateAlias { alias_name: "alias/fixture", target_key_id: k })),
        ("kms:DeleteAlias", Operation::DeleteAlias(DeleteAlias { alias_name: "alias/fixture" })),
        ("kms:DisableKey", Operation::DisableKey(DisableKey { key_id: k })),
        ("kms:EnableKey", Operation::EnableKey(EnableKey { key_id: k })),
        ("kms:EnableKeyRotation", Operation::EnableKeyRotation(EnableKeyRotation { key_id: k, rotation_period_in_days: None })),
        ("kms:DisableKeyRotation", Operation::DisableKeyRotation(DisableKeyRotation { key_id: k })),
        ("kms:GetKeyRotationStatus", Operation::GetKeyRotationStatus(GetKeyRotationStatus { key_id: k })),
        ("kms:RotateKeyOnDemand", Operation::RotateKeyOnDemand(RotateKeyOnDemand { key_id: k })),
        ("kms:ListKeyRotations", Operation::ListKeyRotations(ListKeyRotations { key_id: k, limit: 10, marker: None })),
        ("kms:GetParametersForImport", Operation::GetParametersForImport(GetParametersForImport { key_id: k, wrapping_algorithm: WrappingAlgorithm::RsaesOaepSha256, wrapping_key_spec: WrappingKeySpec::Rsa2048 })),
        ("kms:ImportKeyMaterial", Operation::ImportKeyMaterial(ImportKeyMaterial { key_id: k, import_token: b"t", encrypted_key_material: b"m", ..Default::default() })),
        ("kms:DeleteImportedKeyMaterial", Operation::DeleteImportedKeyMaterial(DeleteImportedKeyMaterial { key_id: k })),
        ("kms:ScheduleKeyDeletion", Operation::ScheduleKeyDeletion(ScheduleKeyDeletion { key_id: k, pending_window_in_days: Some(7) })),
        ("kms:CancelKeyDeletion", Operation::CancelKeyDeletion(CancelKeyDeletion { key_id: k })),
        ("kms:PutKeyPolicy", Operation::PutKeyPolicy(PutKeyPolicy { key_id: k, policy: &f.next_policy, ..Default::default() })),
        ("kms:GetKeyPolicy", Operation::GetKeyPolicy(GetKeyPolicy { key_id: k, ..Default::default() })),
        ("kms:ListKeyPolicies", Operation::ListKeyPolicies(ListKeyPolicies { key_id: k, ..Default::default() })),
        ("kms:CreateGrant", Operation::CreateGrant(CreateGrant { key_id: k, grantee_principal: "uid:5001", operations: vec![GrantOperation::Encrypt], ..Default::default() })),
        ("kms:ListGrants", Operation::ListGrants(ListGrants { key_id: k, ..Default::default() })),
        ("kms:RevokeGrant", Operation::RevokeGrant(RevokeGrant { key_id: k, grant_id: &f.grant_id, dry_run: false })),
        ("kms:RetireGrant", Operation::RetireGrant(RetireGrant { key_id: Some(k), grant_id: Some(&f.grant_id), ..Default::default() })),
    ]
}

fn is_denied(r: &Result<Output, KmsError>) -> bool {
    matches!(r, Err(e) if e.kind == ErrorKind::AccessDenied)
}

#[test]
fn every_key_operation_is_denied_without_permission_and_allowed_by_exactly_its_action() {
    for i in 0..key_operations(&Fixture::new()).len() {
        // A fresh key for each: some operations change it.
        let f = Fixture::new();
        let (action, op) = key_operations(&f).swap_remove(i);
        let denied = f.as_other(op.clone());
        assert!(is_denied(&denied), "{action} without permission: {denied:?}");
        let e = denied.unwrap_err();
        assert!(
            e.message.contains("uid:4242") && e.message.contains(action),
            "the message names the principal and the action: {}",
            e.message
        );
        assert!(!e.message.contains("Statement"), "never the policy: {}", e.message);

        // Allowed: exactly this action (an alias op also needs nothing else).
        f.put(&allow(action));
        let allowed = f.as_other(op.clone());
        assert!(!is_denied(&allowed), "{action} allowed by its statement: {allowed:?}");

        // Every other action allowed, this one denied: the deny wins.
        let f = Fixture::new();
        let (_, op) = key_operations(&f).swap_remove(i);
        f.put(&allow_all_but(action));
        let e = f.as_other(op).unwrap_err();
        assert_eq!(e.kind, ErrorKind::AccessDenied, "{action} explicitly denied");
        assert!(e.message.contains("explicit deny"), "{}", e.message);
    }
}

#[test]
fn an_allow_of_another_action_allows_nothing_else() {
    let f = Fixture::new();
    f.put(&allow("kms:Decrypt"));
    for (action, op) in key_operations(&f) {
        let r = f.as_other(op);
        assert_eq!(is_denied(&r), action != "kms:Decrypt", "{action}: {r:?}");
    }
}

#[test]
fn account_operations_are_the_administrators_and_key_creators() {
    let f = Fixture::new();
    for op in [
        Operation::CreateKey(CreateKey::default()),
        Operation::ListKeys(ListKeys::default()),
        Operation::ListAliases(ListAliases::default()),
    ] {
        let r = f.as_other(op.clone());
        assert!(is_denied(&r), "{}: {r:?}", op.name());
        assert!(f.t.svc.call(&op, &ADMIN).is_ok(), "{}", op.name());
    }
    // kmsd's own operator operations: the administrators only (this
    // service has no audit log: the administrator is told so).
    let seals = Operation::VerifyAuditSeals(kms_proto::VerifyAuditSeals::default());
    assert!(is_denied(&f.as_other(seals.clone())));
    let e = f.t.svc.call(&seals, &ADMIN).unwrap_err();
    assert_eq!(e.kind, kms_proto::ErrorKind::UnsupportedOperation, "{e}");
    // Anyone: their own identity, random bytes.
    assert!(f.as_other(Operation::WhoAmI(WhoAmI)).is_ok());
    assert!(f
        .as_other(Operation::GenerateRandom(GenerateRandom { number_of_bytes: 8 }))
        .is_ok());
}

#[test]
fn the_default_policy_gives_the_creator_use_of_the_key_and_not_its_management() {
    let t = TestService::new();
    let creator = Identity::local(4242, 4242, 1);
    // Key creators are configured; here the administrator makes the key as
    // if for the creator, through the same default policy.
    let id = [9u8; 16];
    let p = t.svc.new_key_policy(&creator, &id, None, false).unwrap();
    assert!(p.text.contains("uid:4242") && p.text.contains("uid:0"), "{}", p.text);
    let key = t.create_key();
    let kid = crate::service::Arns::default().parse_key_id(&key).unwrap();
    t.svc.put_key_policy(&ADMIN, &kid, &p.text, true).unwrap();
    let enc = t.svc.call(
        &Operation::Encrypt(Encrypt { key_id: &key, plaintext: b"p", ..Default::default() }),
        &creator,
    );
    assert!(enc.is_ok(), "{enc:?}");
    let dis = t.svc.call(&Operation::DisableKey(DisableKey { key_id: &key }), &creator);
    assert!(is_denied(&dis), "{dis:?}");
}

#[test]
fn conditions_on_the_encryption_context_and_the_request_alias_decide() {
    let f = Fixture::new();
    f.put(&policy(
        r#"{"Effect":"Allow","Principal":{"AWS":"uid:4242"},"Action":"kms:Encrypt","Resource":"*",
            "Condition":{"StringEquals":{"kms:EncryptionContext:tenant":"B"}}},
           {"Effect":"Allow","Principal":{"AWS":"uid:4242"},"Action":"kms:GenerateDataKey","Resource":"*",
            "Condition":{"StringLike":{"kms:RequestAlias":"alias/fix*"}}}"#,
    ));
    let who = other();
    let enc = |ctx: Vec<(&'static str, &'static str)>| {
        f.t.svc.call(
            &Operation::Encrypt(Encrypt {
                key_id: &f.key,
                plaintext: b"p",
                context: ctx,
                ..Default::default()
            }),
            &who,
        )
    };
    // The same connection asks again and again: cached decisions must
    // still tell the contexts apart.
    for _ in 0..3 {
        assert!(enc(vec![("tenant", "B")]).is_ok());
        assert!(is_denied(&enc(vec![("tenant", "A")])));
        assert!(is_denied(&enc(vec![])));
        assert!(enc(vec![("TENANT", "B")]).is_ok(), "context keys are case-insensitive in conditions");
    }
    let gdk = |key_id: &str| {
        f.t.svc.call(
            &Operation::GenerateDataKey(GenerateDataKey {
                key_id,
                number_of_bytes: Some(16),
                ..Default::default()
            }),
            &who,
        )
    };
    assert!(gdk("alias/fixture").is_ok());
    assert!(is_denied(&gdk(&f.key)), "by key id: no alias in the request");
}

#[test]
fn a_policy_change_takes_effect_for_the_very_next_request() {
    let f = Fixture::new();
    let who = other();
    let enc = || {
        f.t.svc.call(
            &Operation::Encrypt(Encrypt { key_id: &f.key, plaintext: b"p", ..Default::default() }),
            &who,
        )
    };
    assert!(is_denied(&enc()));
    f.put(&allow("kms:Encrypt"));
    assert!(enc().is_ok());
    assert!(enc().is_ok(), "cached");
    f.put(&allow("kms:Decrypt"));
    assert!(is_denied(&enc()), "the cached allow went with the old policy");
}

#[test]
fn a_policy_that_would_lock_out_its_author_is_refused_unless_bypassed() {
    let f = Fixture::new();
    let lockout = r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"uid:4242"},"Action":"kms:*","Resource":"*"}]}"#;
    let e = f.t.svc.put_key_policy(&ADMIN, &f.id, lockout, false).unwrap_err();
    assert!(e.message.contains("will not allow you to update the key policy"), "{e:?}");
    assert_ne!(f.t.svc.key_policy_text(&f.id).unwrap(), lockout, "nothing changed");
    f.t.svc.put_key_policy(&ADMIN, &f.id, lockout, true).unwrap();
    assert_eq!(f.t.svc.key_policy_text(&f.id).unwrap(), lockout);
}

#[test]
fn bad_policies_are_refused_with_their_reason_and_change_nothing() {
    let f = Fixture::new();
    let before = f.t.svc.key_policy_text(&f.id).unwrap();
    for (text, reason) in [
        ("not json", "JSON"),
        (r#"{"Statement":[]}"#, "Statement"),
        (
            r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*","Condition":{"DateEquals":{"aws:CurrentTime":"x"}}}]}"#,
            "DateEquals",
        ),
        (
            r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"user:no-such-user-kmsd"},"Action":"kms:*","Resource":"*"}]}"#,
            "no-such-user-kmsd",
        ),
    ] {
        let e = f.t.svc.put_key_policy(&ADMIN, &f.id, text, true).unwrap_err();
        assert!(e.message.contains(reason), "{text}: {e:?}");
    }
    let huge = format!(r#"{{"Statement":[],"x":"{}"}}"#, "a".repeat(40_000));
    assert!(f.t.svc.put_key_policy(&ADMIN, &f.id, &huge, true).is_err());
    assert_eq!(f.t.svc.key_policy_text(&f.id).unwrap(), before);
}

/// A `Resource` may name the key by its ARN in this kmsd's form or the
/// legacy one (matched by key id); an ARN of another partition, region
/// or account is refused when the policy is given, and nothing changes.
#[test]
fn resources_name_keys_by_this_kmsds_arns_or_the_legacy_ones() {
    let f = Fixture::new();
    let who = other();
    let enc = |key_id: &str| {
        f.t.svc.call(
            &Operation::Encrypt(Encrypt { key_id, plaintext: b"p", ..Default::default() }),
            &who,
        )
    };
    let own = f.t.svc.arns().key_arn(&f.id);
    assert_eq!(own, format!("arn:aws:kms:us-east-1:000000000000:key/{}", f.key));
    let legacy = format!("arn:kmsd:kms:local:key/{}", f.key.to_uppercase());
    let alias_arn = f.t.svc.arns().alias_arn("alias/fixture");
    for named in [own.as_str(), legacy.as_str()] {
        f.put(&policy(&format!(
            r#"{{"Effect":"Allow","Principal":{{"AWS":"uid:4242"}},"Action":"kms:Encrypt","Resource":"{named}"}}"#
        )));
        for key_id in [f.key.as_str(), own.as_str(), alias_arn.as_str()] {
            assert!(enc(key_id).is_ok(), "{named}: {key_id}");
        }
        f.put(&policy(&format!(
            r#"{{"Effect":"Allow","Principal":{{"AWS":"uid:4242"}},"Action":"kms:*","Resource":"*"}},
               {{"Effect":"Deny","Principal":{{"AWS":"uid:4242"}},"Action":"kms:Encrypt","Resource":["{named}"]}}"#
        )));
        let e = enc(&f.key).unwrap_err();
        assert_eq!(e.kind, ErrorKind::AccessDenied, "{named}");
        assert!(e.message.contains(&own), "the denial names the key's ARN: {e}");
    }
    // Another key's ARN: accepted, applies to no request on this key.
    let another = f.t.svc.arns().key_arn(&[9; 16]);
    f.put(&policy(&format!(
        r#"{{"Effect":"Allow","Principal":{{"AWS":"uid:4242"}},"Action":"kms:Encrypt","Resource":"{another}"}}"#
    )));
    assert!(is_denied(&enc(&f.key)));
    let before = f.t.svc.key_policy_text(&f.id).unwrap();
    for foreign in [
        format!("arn:aws:kms:eu-west-3:000000000000:key/{}", f.key),
        format!("arn:aws:kms:us-east-1:111122223333:key/{}", f.key),
        format!("arn:aws-cn:kms:us-east-1:000000000000:key/{}", f.key),
    ] {
        let text = policy(&format!(
            r#"{{"Effect":"Allow","Principal":{{"AWS":"uid:4242"}},"Action":"kms:Encrypt","Resource":"{foreign}"}}"#
        ));
        let e = f.t.svc.put_key_policy(&ADMIN, &f.id, &text, true).unwrap_err();
        assert_eq!(e.kind, ErrorKind::MalformedPolicyDocument, "{foreign}");
        assert!(
            e.message.contains("not a key ARN of this kmsd")
                && e.message.contains("arn:aws:kms:us-east-1:000000000000:key/"),
            "{e}"
        );
    }
    assert_eq!(f.t.svc.key_policy_text(&f.id).unwrap(), before);
}

#[test]
fn user_and_group_names_are_kept_as_the_numbers_they_had() {
    let f = Fixture::new();
    let text = r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":["user:root","group:root"]},"Action":"kms:*","Resource":"*"}]}"#;
    f.t.svc.put_key_policy(&ADMIN, &f.id, text, false).unwrap();
    let stored = f.t.svc.store().key_policy(&f.id).unwrap().unwrap();
    assert_eq!(stored.text, text, "GetKeyPolicy returns the document as given");
    assert_eq!(stored.names, r#"{"group:root":0,"user:root":0}"#);
}

fn grant(f: &Fixture, req: CreateGrant<'_>, who: &Identity) -> Result<CreateGrantOutput, KmsError> {
    f.t.svc.call(&Operation::CreateGrant(req), who).map(|o| match o {
        Output::CreateGrant(o) => o,
        o => panic!("{o:?}"),
    })
}

fn encrypt_as(f: &Fixture, who: &Identity, ctx: Vec<(&'static str, &'static str)>) -> Result<Output, KmsError> {
    f.t.svc.call(
        &Operation::Encrypt(Encrypt {
            key_id: &f.key,
            plaintext: b"p",
            context: ctx,
            ..Default::default()
        }),
        who,
    )
}

#[test]
fn a_grant_allows_its_grantee_from_the_next_request_until_it_is_revoked_or_retired() {
    let f = Fixture::new();
    let who = other();
    assert!(is_denied(&encrypt_as(&f, &who, vec![])));
    let g = grant(
        &f,
        CreateGrant {
            key_id: &f.key,
            grantee_principal: "uid:4242",
            operations: vec![GrantOperation::Encrypt, GrantOperation::RetireGrant],
            ..Default::default()
        },
        &ADMIN,
    )
    .unwrap();
    assert_eq!(g.grant_id.len(), 64);
    assert!(encrypt_as(&f, &who, vec![]).is_ok(), "the very next request");
    assert!(encrypt_as(&f, &who, vec![]).is_ok(), "cached");
    // Only what it lists.
    let d = f.t.svc.call(&Operation::Decrypt(Decrypt { ciphertext_blob: &f.blob, ..Default::default() }), &who);
    assert!(is_denied(&d), "{d:?}");
    // Revoked: the very next request is denied.
    f.t.svc
        .call(&Operation::RevokeGrant(RevokeGrant { key_id: &f.key, grant_id: &g.grant_id, dry_run: false }), &ADMIN)
        .unwrap();
    assert!(is_denied(&encrypt_as(&f, &who, vec![])));
    let again = f.t.svc.call(&Operation::RevokeGrant(RevokeGrant { key_id: &f.key, grant_id: &g.grant_id, dry_run: false }), &ADMIN);
    assert_eq!(again.unwrap_err().kind, ErrorKind::NotFound);

    // Retired by its grantee (it allows RetireGrant), by token.
    let g = grant(
        &f,
        CreateGrant {
            key_id: &f.key,
            grantee_principal: "uid:4242",
            operations: vec![GrantOperation::Encrypt, GrantOperation::RetireGrant],
            ..Default::default()
        },
        &ADMIN,
    )
    .unwrap();
    assert!(encrypt_as(&f, &who, vec![]).is_ok());
    f.t.svc
        .call(&Operation::RetireGrant(RetireGrant { grant_token: Some(&g.grant_token), ..Default::default() }), &who)
        .unwrap();
    assert!(is_denied(&encrypt_as(&f, &who, vec![])));
}

#[test]
fn constraints_follow_aws_case_rules() {
    let f = Fixture::new();
    let who = other();
    grant(
        &f,
        CreateGrant {
            key_id: &f.key,
            grantee_principal: "uid:4242",
            operations: vec![GrantOperation::Encrypt],
            constraints: Some(GrantConstraints {
                encryption_context_subset: vec![("Tenant", "B")],
                ..Default::default()
            }),
            ..Default::default()
        },
        &ADMIN,
    )
    .unwrap();
    assert!(encrypt_as(&f, &who, vec![("tenant", "B"), ("extra", "x")]).is_ok(), "keys in any case, more pairs fine");
    assert!(is_denied(&encrypt_as(&f, &who, vec![("tenant", "b")])), "values exactly");
    assert!(is_denied(&encrypt_as(&f, &who, vec![])));
}

#[test]
fn a_named_grant_is_created_once_and_each_answer_has_its_own_token() {
    let f = Fixture::new();
    let req = || CreateGrant {
        key_id: &f.key,
        grantee_principal: "uid:4242",
        operations: vec![GrantOperation::Decrypt],
        name: Some("svc-b"),
        ..Default::default()
    };
    let a = grant(&f, req(), &ADMIN).unwrap();
    let b = grant(&f, req(), &ADMIN).unwrap();
    assert_eq!(a.grant_id, b.grant_id);
    assert_ne!(a.grant_token, b.grant_token);
    let list = |grantee: Option<&str>| match f
        .t
        .svc
        .call(&Operation::ListGrants(ListGrants { key_id: &f.key, grantee_principal: grantee, ..Default::default() }), &ADMIN)
        .unwrap()
    {
        Output::ListGrants(o) => o.grants,
        o => panic!("{o:?}"),
    };
    assert_eq!(list(Some("uid:4242")).len(), 1);
    assert_eq!(list(None).len(), 2, "with the fixture's");
    let entry = &list(Some("uid:4242"))[0];
    assert_eq!(entry.name.as_deref(), Some("svc-b"));
    assert_eq!(entry.issuing_account, "uid:0");
    assert_eq!(entry.operations, vec![GrantOperation::Decrypt]);
}

#[test]
fn dry_run_says_what_would_have_happened_and_does_nothing() {
    let f = Fixture::new();
    let e = f
        .t
        .call(Operation::CreateGrant(CreateGrant {
            key_id: &f.key,
            grantee_principal: "uid:4242",
            operations: vec![GrantOperation::Encrypt],
            dry_run: true,
            ..Default::default()
        }))
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::DryRunOperation);
    assert!(is_denied(&encrypt_as(&f, &other(), vec![])), "no grant was made");
    let e = f
        .t
        .call(Operation::Encrypt(Encrypt { key_id: &f.key, plaintext: b"p", dry_run: true, ..Default::default() }))
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::DryRunOperation);
    let e = f
        .t
        .call(Operation::Decrypt(Decrypt { ciphertext_blob: &f.blob, dry_run: true, ..Default::default() }))
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::DryRunOperation);
    // A dry run by someone without permission is AccessDeniedException.
    let r = f.t.svc.call(
        &Operation::Encrypt(Encrypt { key_id: &f.key, plaintext: b"p", dry_run: true, ..Default::default() }),
        &other(),
    );
    assert!(is_denied(&r), "{r:?}");
    // And one of a disabled key says so.
    f.t.set_state(&f.key, KeyState::Disabled);
    let e = f
        .t
        .call(Operation::Encrypt(Encrypt { key_id: &f.key, plaintext: b"p", dry_run: true, ..Default::default() }))
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Disabled);
}

#[test]
fn a_grant_with_create_grant_passes_on_only_what_it_has() {
    let f = Fixture::new();
    let who = other();
    grant(
        &f,
        CreateGrant {
            key_id: &f.key,
            grantee_principal: "uid:4242",
            operations: vec![GrantOperation::Decrypt, GrantOperation::CreateGrant],
            constraints: Some(GrantConstraints {
                encryption_context_subset: vec![("tenant", "B")],
                ..Default::default()
            }),
            ..Default::default()
        },
        &ADMIN,
    )
    .unwrap();
    let child = |ops: Vec<GrantOperation>, subset: Vec<(&'static str, &'static str)>| CreateGrant {
        key_id: &f.key,
        grantee_principal: "uid:4343",
        operations: ops,
        constraints: Some(GrantConstraints { encryption_context_subset: subset, ..Default::default() }),
        ..Default::default()
    };
    assert!(grant(&f, child(vec![GrantOperation::Decrypt], vec![("tenant", "B"), ("app", "x")]), &who).is_ok());
    let more_ops = grant(&f, child(vec![GrantOperation::Encrypt], vec![("tenant", "B")]), &who);
    assert!(matches!(&more_ops, Err(e) if e.kind == ErrorKind::AccessDenied), "{more_ops:?}");
    let looser = grant(&f, child(vec![GrantOperation::Decrypt], vec![("app", "x")]), &who);
    assert!(matches!(&looser, Err(e) if e.kind == ErrorKind::AccessDenied), "{looser:?}");
}

#[test]
fn bad_grants_are_refused_with_aws_exceptions() {
    let f = Fixture::new();
    for (req, kind) in [
        (CreateGrant { key_id: &f.key, grantee_principal: "gid:5", operations: vec![GrantOperation::Decrypt], ..Default::default() }, ErrorKind::Validation),
        (CreateGrant { key_id: &f.key, grantee_principal: "uid:5", operations: vec![GrantOperation::Sign], ..Default::default() }, ErrorKind::Validation),
        (CreateGrant { key_id: &f.key, grantee_principal: "uid:5", operations: vec![GrantOperation::Decrypt], grant_tokens: vec!["not-a-token"], ..Default::default() }, ErrorKind::InvalidGrantToken),
        (CreateGrant { key_id: MISSING, grantee_principal: "uid:5", operations: vec![GrantOperation::Decrypt], ..Default::default() }, ErrorKind::NotFound),
    ] {
        let e = f.t.call(Operation::CreateGrant(req.clone())).unwrap_err();
        assert_eq!(e.kind, kind, "{req:?}: {e:?}");
    }
    let e = f
        .t
        .call(Operation::RevokeGrant(RevokeGrant { key_id: &f.key, grant_id: "xyz", dry_run: false }))
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidGrantId);
}

const MISSING: &str = crate::service::ops::test_support::MISSING_KEY;

#[test]
fn retirable_grants_are_listed_for_their_retiring_principal() {
    let f = Fixture::new();
    for _ in 0..3 {
        grant(
            &f,
            CreateGrant {
                key_id: &f.key,
                grantee_principal: "uid:5000",
                retiring_principal: Some("uid:4242"),
                operations: vec![GrantOperation::Decrypt],
                ..Default::default()
            },
            &ADMIN,
        )
        .unwrap();
    }
    let page = |who: &Identity, marker: Option<&str>| {
        f.t.svc.call(
            &Operation::ListRetirableGrants(ListRetirableGrants { retiring_principal: "uid:4242", limit: 2, marker }),
            who,
        )
    };
    let first = match page(&other(), None).unwrap() {
        Output::ListRetirableGrants(o) => o,
        o => panic!("{o:?}"),
    };
    assert_eq!(first.grants.len(), 2);
    assert!(first.truncated);
    let second = match page(&other(), first.next_marker.as_deref()).unwrap() {
        Output::ListRetirableGrants(o) => o,
        o => panic!("{o:?}"),
    };
    assert_eq!(second.grants.len(), 1);
    assert!(!second.truncated);
    // Someone else's list is the administrators' business.
    let stranger = Identity::accepted(777, 777, 1, PeerDetails::default());
    assert!(is_denied(&page(&stranger, None)));
    assert!(page(&ADMIN, None).is_ok());
    // The retiring principal retires one.
    let id = &first.grants[0].grant_id;
    f.t.svc
        .call(&Operation::RetireGrant(RetireGrant { key_id: Some(&f.key), grant_id: Some(id), ..Default::default() }), &other())
        .unwrap();
    let r = f.t.svc.call(
        &Operation::RetireGrant(RetireGrant { key_id: Some(&f.key), grant_id: Some(&first.grants[1].grant_id), ..Default::default() }),
        &stranger,
    );
    assert!(is_denied(&r), "{r:?}");
}

#[test]
fn every_grantable_operation_is_allowed_by_a_grant_of_it_and_only_it() {
    use kms_policy::{Action, GrantOperation as G};
    for i in 0..key_operations(&Fixture::new()).len() {
        let f = Fixture::new();
        let (action, op) = key_operations(&f).swap_remove(i);
        let Some(granted) = Action::from_name(action).and_then(G::from_action) else {
            // Not an operation a grant can give (management): only the
            // policy decides, and a grant of everything grantable does not
            // allow it.
            grant(
                &f,
                CreateGrant {
                    key_id: &f.key,
                    grantee_principal: "uid:4242",
                    operations: GrantOperation::ALL
                        .iter()
                        .copied()
                        .filter(|o| G::from_name(o.name()).is_some_and(G::supported_by_symmetric_key))
                        .collect(),
                    ..Default::default()
                },
                &ADMIN,
            )
            .unwrap();
            assert!(is_denied(&f.as_other(op)), "{action} by a grant");
            continue;
        };
        if matches!(granted, G::CreateGrant | G::RetireGrant) {
            // A grant's CreateGrant passes on only what it has, and its
            // RetireGrant retires only itself: their own tests above.
            continue;
        }
        let wire = GrantOperation::from_name(granted.name()).unwrap();
        // A grant of another operation allows nothing here.
        let other_op = if wire == GrantOperation::DescribeKey {
            GrantOperation::Encrypt
        } else {
            GrantOperation::DescribeKey
        };
        grant(
            &f,
            CreateGrant {
                key_id: &f.key,
                grantee_principal: "uid:4242",
                operations: vec![other_op],
                ..Default::default()
            },
            &ADMIN,
        )
        .unwrap();
        assert!(is_denied(&f.as_other(op.clone())), "{action} by a grant of {other_op:?}");
        grant(
            &f,
            CreateGrant {
                key_id: &f.key,
                grantee_principal: "uid:4242",
                operations: vec![wire],
                ..Default::default()
            },
            &ADMIN,
        )
        .unwrap();
        let r = f.as_other(op);
        assert!(!is_denied(&r), "{action} by a grant of it: {r:?}");
    }
}

#[test]
fn re_encrypt_needs_from_on_the_source_and_to_on_the_destination() {
    let f = Fixture::new();
    let dest = f.t.create_key();
    let re = || {
        f.t.svc.call(
            &Operation::ReEncrypt(ReEncrypt {
                ciphertext_blob: &f.blob,
                destination_key_id: &dest,
                ..Default::default()
            }),
            &other(),
        )
    };
    let e = re().unwrap_err();
    assert!(e.message.contains("kms:ReEncryptTo"), "the destination first: {e:?}");
    let dest_id = crate::service::Arns::default().parse_key_id(&dest).unwrap();
    f.t.svc
        .put_key_policy(&ADMIN, &dest_id, &allow("kms:ReEncryptTo"), false)
        .unwrap();
    let e = re().unwrap_err();
    assert!(e.message.contains("kms:ReEncryptFrom"), "{e:?}");
    f.put(&allow("kms:ReEncrypt*"));
    assert!(re().is_ok());
}

#[test]
fn a_grants_retire_grant_retires_that_grant_only() {
    let f = Fixture::new();
    let own = grant(
        &f,
        CreateGrant {
            key_id: &f.key,
            grantee_principal: "uid:4242",
            operations: vec![GrantOperation::Decrypt, GrantOperation::RetireGrant],
            ..Default::default()
        },
        &ADMIN,
    )
    .unwrap();
    // The fixture's grant (to uid 5000) is not 4242's to retire.
    let r = f.as_other(Operation::RetireGrant(RetireGrant {
        key_id: Some(&f.key),
        grant_id: Some(&f.grant_id),
        ..Default::default()
    }));
    assert!(is_denied(&r), "{r:?}");
    f.as_other(Operation::RetireGrant(RetireGrant {
        key_id: Some(&f.key),
        grant_id: Some(&own.grant_id),
        ..Default::default()
    }))
    .unwrap();
}
