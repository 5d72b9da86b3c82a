//! Evaluation, table-driven: allow, deny wins, implicit deny, principals,
//! actions, resources and every condition operator and qualifier.

use kms_policy::{Action, Caller, CompiledPolicy, Decision, Policy, Request};

struct Names;

impl kms_policy::NameResolver for Names {
    fn user(&self, name: &str) -> Option<u32> {
        (name == "alice").then_some(1000)
    }
    fn group(&self, name: &str) -> Option<u32> {
        (name == "kmsadmin").then_some(500)
    }
}

const ARN: &str = "arn:aws:kms:us-east-1:000000000000:key/1234abcd-12ab-34cd-56ef-1234567890ab";
const OTHER_ARN: &str =
    "arn:aws:kms:us-east-1:000000000000:key/00000000-0000-0000-0000-000000000000";

const ALICE: Caller<'static> = Caller {
    uid: 1000,
    gid: 1000,
    supplementary_gids: &[500, 27],
    unit: Some("app.service"),
    cgroup: Some("/system.slice/app.service/worker"),
};

const BOB: Caller<'static> = Caller {
    uid: 1001,
    gid: 1001,
    supplementary_gids: &[],
    unit: None,
    cgroup: None,
};

fn policy(text: &str) -> CompiledPolicy {
    Policy::parse(text, &Names).unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// A policy allowing `principal` `action` on `resource` under `condition`.
fn allow(principal: &str, action: &str, resource: &str, condition: &str) -> String {
    let cond = if condition.is_empty() {
        String::new()
    } else {
        format!(r#","Condition":{condition}"#)
    };
    format!(
        r#"{{"Statement":[{{"Effect":"Allow","Principal":{principal},"Action":{action},"Resource":{resource}{cond}}}]}}"#
    )
}

fn enc(caller: Caller<'static>) -> Request<'static> {
    Request::new(caller, Action::Encrypt, ARN)
}

#[test]
fn allow_deny_and_implicit_deny() {
    let text = r#"{"Statement":[
        {"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*"},
        {"Effect":"Deny","Principal":{"AWS":"uid:1001"},"Action":"kms:Decrypt","Resource":"*"},
        {"Effect":"Allow","Principal":{"AWS":"uid:1001"},"Action":"kms:Decrypt","Resource":"*"}
    ]}"#;
    let p = policy(text);
    assert_eq!(p.evaluate(&enc(BOB)), Decision::Allow);
    let dec = Request::new(BOB, Action::Decrypt, ARN);
    // The deny comes before one allow and after another: it wins anyway.
    assert_eq!(p.evaluate(&dec), Decision::ExplicitDeny);
    assert_eq!(
        p.evaluate(&Request::new(ALICE, Action::Decrypt, ARN)),
        Decision::Allow
    );
    let only_deny = policy(
        r#"{"Statement":{"Effect":"Deny","Principal":"*","Action":"kms:Decrypt","Resource":"*"}}"#,
    );
    assert_eq!(only_deny.evaluate(&enc(ALICE)), Decision::ImplicitDeny);
    assert!(!Decision::ImplicitDeny.is_allowed());
    assert!(!Decision::ExplicitDeny.is_allowed());
    assert!(Decision::Allow.is_allowed());
}

#[test]
fn principals() {
    // (principal, caller, allowed)
    let cases: &[(&str, Caller<'static>, bool)] = &[
        (r#""*""#, BOB, true),
        (r#"{"AWS":"uid:1000"}"#, ALICE, true),
        (r#"{"AWS":"uid:1000"}"#, BOB, false),
        (r#"{"AWS":"user:alice"}"#, ALICE, true),
        (r#"{"AWS":"user:alice"}"#, BOB, false),
        (r#"{"AWS":"gid:1000"}"#, ALICE, true),
        (r#"{"AWS":"gid:27"}"#, ALICE, true),
        (r#"{"AWS":"gid:27"}"#, BOB, false),
        (r#"{"AWS":"group:kmsadmin"}"#, ALICE, true),
        (r#"{"AWS":"group:kmsadmin"}"#, BOB, false),
        (r#"{"kmsd":"unit:app.service"}"#, ALICE, true),
        (r#"{"kmsd":"unit:other.service"}"#, ALICE, false),
        (r#"{"kmsd":"unit:app.service"}"#, BOB, false),
        (r#"{"AWS":"cgroup:/system.slice/app.service"}"#, ALICE, true),
        (
            r#"{"AWS":"cgroup:/system.slice/app.service/worker"}"#,
            ALICE,
            true,
        ),
        (r#"{"AWS":"cgroup:/system.slice/app"}"#, ALICE, false),
        (r#"{"AWS":"cgroup:/"}"#, ALICE, true),
        (r#"{"AWS":"cgroup:/"}"#, BOB, false),
        (r#"{"AWS":["uid:5","uid:1001"]}"#, BOB, true),
        (r#"{"AWS":"uid:5","kmsd":"gid:1001"}"#, BOB, true),
    ];
    for &(principal, caller, want) in cases {
        let p = policy(&allow(principal, r#""kms:Encrypt""#, r#""*""#, ""));
        assert_eq!(
            p.evaluate(&enc(caller)).is_allowed(),
            want,
            "{principal} for uid {}",
            caller.uid
        );
    }
}

#[test]
fn actions_and_resources() {
    // (action patterns, resource, request action, request key, allowed)
    let cases: &[(&str, &str, Action, &str, bool)] = &[
        (r#""kms:Encrypt""#, r#""*""#, Action::Encrypt, ARN, true),
        (r#""kms:Encrypt""#, r#""*""#, Action::Decrypt, ARN, false),
        (r#""KMS:ENCRYPT""#, r#""*""#, Action::Encrypt, ARN, true),
        (r#""kms:*""#, r#""*""#, Action::RevokeGrant, ARN, true),
        (r#""*""#, r#""*""#, Action::ListKeys, ARN, true),
        (
            r#""kms:GenerateDataKey*""#,
            r#""*""#,
            Action::GenerateDataKeyWithoutPlaintext,
            ARN,
            true,
        ),
        (
            r#""kms:GenerateDataKey*""#,
            r#""*""#,
            Action::GenerateRandom,
            ARN,
            false,
        ),
        (
            r#""kms:reencrypt*""#,
            r#""*""#,
            Action::ReEncryptTo,
            ARN,
            true,
        ),
        (r#""kms:?ecrypt""#, r#""*""#, Action::Decrypt, ARN, true),
        (r#""kms:?ecrypt""#, r#""*""#, Action::Encrypt, ARN, false),
        (
            r#"["kms:Decrypt","kms:List*"]"#,
            r#""*""#,
            Action::ListRetirableGrants,
            ARN,
            true,
        ),
        (
            r#""kms:Describe*""#,
            r#""*""#,
            Action::DescribeKey,
            ARN,
            true,
        ),
        (
            r#""kms:Encrypt""#,
            &format!("\"{ARN}\""),
            Action::Encrypt,
            ARN,
            true,
        ),
        (
            r#""kms:Encrypt""#,
            &format!("\"{ARN}\""),
            Action::Encrypt,
            OTHER_ARN,
            false,
        ),
        (
            r#""kms:Encrypt""#,
            &format!("[\"{OTHER_ARN}\",\"{ARN}\"]"),
            Action::Encrypt,
            ARN,
            true,
        ),
        (
            r#""kms:Encrypt""#,
            &format!("\"{}\"", ARN.replace("abcd", "ABCD")),
            Action::Encrypt,
            ARN,
            true,
        ),
    ];
    for (actions, resource, action, key, want) in cases {
        let p = policy(&allow(r#""*""#, actions, resource, ""));
        let req = Request::new(BOB, *action, key);
        assert_eq!(
            p.evaluate(&req).is_allowed(),
            *want,
            "{actions} on {resource} for {action:?} {key}"
        );
    }
}

/// A key ARN names its key by key id: the legacy form and the forms of
/// other regions and accounts name the same key as the request's ARN (a
/// stored policy keeps naming its keys when the daemon's `[aws]` changes;
/// the daemon refuses foreign forms when a policy is given), for a `Deny`
/// as for an `Allow`. The policy lists the ARNs it names.
#[test]
fn key_arns_match_by_key_id_in_every_form() {
    let id = "1234abcd-12ab-34cd-56ef-1234567890ab";
    let request_arns = [
        format!("arn:aws:kms:us-east-1:000000000000:key/{id}"),
        format!("arn:aws:kms:eu-west-3:123456789012:key/{id}"),
    ];
    for named in [
        format!("arn:aws:kms:us-east-1:000000000000:key/{id}"),
        format!("arn:aws:kms:eu-west-3:123456789012:key/{id}"),
        format!(
            "arn:aws-cn:kms:cn-north-1:111122223333:key/{}",
            id.to_uppercase()
        ),
        format!("arn:kmsd:kms:local:key/{id}"),
    ] {
        let p = policy(&allow(
            r#""*""#,
            r#""kms:Encrypt""#,
            &format!("\"{named}\""),
            "",
        ));
        assert_eq!(
            p.key_arns().collect::<Vec<_>>(),
            [named.replace(&id.to_uppercase(), id).as_str()]
        );
        for arn in &request_arns {
            assert!(
                p.evaluate(&Request::new(BOB, Action::Encrypt, arn))
                    .is_allowed(),
                "{named} {arn}"
            );
            assert!(
                !p.evaluate(&Request::new(BOB, Action::Encrypt, OTHER_ARN))
                    .is_allowed(),
                "{named}"
            );
        }
        let deny = format!(
            r#"{{"Statement":[{{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*"}},
            {{"Effect":"Deny","Principal":"*","Action":"kms:Encrypt","Resource":"{named}"}}]}}"#
        );
        let p = policy(&deny);
        for arn in &request_arns {
            assert_eq!(
                p.evaluate(&Request::new(BOB, Action::Encrypt, arn)),
                Decision::ExplicitDeny
            );
        }
        assert!(p
            .evaluate(&Request::new(BOB, Action::Encrypt, OTHER_ARN))
            .is_allowed());
    }
    assert_eq!(
        policy(&allow(r#""*""#, r#""kms:*""#, r#""*""#, ""))
            .key_arns()
            .count(),
        0
    );
}

/// A request with the things conditions read.
fn rich() -> Request<'static> {
    Request {
        encryption_context: &[("Team", "Payments"), ("env", "prod")],
        request_alias: Some("alias/my-test-key"),
        key_aliases: &["alias/a", "alias/b"],
        grant_operations: &["Decrypt", "Encrypt"],
        bypass_policy_lockout_safety_check: Some(false),
        ..Request::new(ALICE, Action::CreateGrant, ARN)
    }
}

/// The same with none of them.
fn bare() -> Request<'static> {
    Request::new(BOB, Action::CreateGrant, ARN)
}

#[test]
fn conditions() {
    // (condition block, allowed for rich(), allowed for bare())
    let cases: &[(&str, bool, bool)] = &[
        // StringEquals on a context key: the key part in any case, the
        // value exactly.
        (
            r#"{"StringEquals":{"kms:EncryptionContext:team":"Payments"}}"#,
            true,
            false,
        ),
        (
            r#"{"StringEquals":{"kms:EncryptionContext:TEAM":"payments"}}"#,
            false,
            false,
        ),
        (
            r#"{"StringEquals":{"kms:EncryptionContext:Team":["x","Payments"]}}"#,
            true,
            false,
        ),
        (
            r#"{"StringEqualsIgnoreCase":{"kms:EncryptionContext:Team":"PAYMENTS"}}"#,
            true,
            false,
        ),
        // Negated operators: true when no value matches, and when the
        // single-valued key is absent.
        (
            r#"{"StringNotEquals":{"kms:EncryptionContext:Team":"Payments"}}"#,
            false,
            true,
        ),
        (
            r#"{"StringNotEquals":{"kms:EncryptionContext:Team":"payments"}}"#,
            true,
            true,
        ),
        (
            r#"{"StringNotEqualsIgnoreCase":{"kms:EncryptionContext:Team":"payments"}}"#,
            false,
            true,
        ),
        (
            r#"{"StringLike":{"kms:RequestAlias":"alias/*test*"}}"#,
            true,
            false,
        ),
        (
            r#"{"StringLike":{"kms:RequestAlias":"alias/*TEST*"}}"#,
            false,
            false,
        ),
        (
            r#"{"StringNotLike":{"kms:RequestAlias":"alias/*test*"}}"#,
            false,
            true,
        ),
        (
            r#"{"StringNotLike":{"kms:RequestAlias":"alias/prod*"}}"#,
            true,
            true,
        ),
        // IfExists: absent is true, present is the operator.
        (
            r#"{"StringEqualsIfExists":{"kms:RequestAlias":"alias/other"}}"#,
            false,
            true,
        ),
        (
            r#"{"StringLikeIfExists":{"kms:RequestAlias":"alias/my-*"}}"#,
            true,
            true,
        ),
        // Multi-valued keys.
        (
            r#"{"ForAnyValue:StringEquals":{"kms:EncryptionContextKeys":"env"}}"#,
            true,
            false,
        ),
        (
            r#"{"ForAnyValue:StringEquals":{"kms:EncryptionContextKeys":"Env"}}"#,
            false,
            false,
        ),
        (
            r#"{"ForAnyValue:StringEqualsIgnoreCase":{"kms:EncryptionContextKeys":"ENV"}}"#,
            true,
            false,
        ),
        (
            r#"{"ForAllValues:StringEquals":{"kms:EncryptionContextKeys":["Team","env"]}}"#,
            true,
            true,
        ),
        (
            r#"{"ForAllValues:StringEquals":{"kms:EncryptionContextKeys":["Team"]}}"#,
            false,
            true,
        ),
        (
            r#"{"ForAnyValue:StringNotEquals":{"kms:EncryptionContextKeys":["Team"]}}"#,
            true,
            false,
        ),
        (
            r#"{"ForAllValues:StringNotEquals":{"kms:EncryptionContextKeys":["x"]}}"#,
            true,
            true,
        ),
        (
            r#"{"ForAnyValue:StringEqualsIfExists":{"kms:EncryptionContextKeys":"nope"}}"#,
            false,
            true,
        ),
        (
            r#"{"ForAnyValue:StringLike":{"kms:ResourceAliases":"alias/b*"}}"#,
            true,
            false,
        ),
        (
            r#"{"ForAllValues:StringLike":{"kms:ResourceAliases":"alias/a*"}}"#,
            false,
            true,
        ),
        (
            r#"{"ForAllValues:StringEquals":{"kms:GrantOperations":["Decrypt","Encrypt","DescribeKey"]}}"#,
            true,
            true,
        ),
        (
            r#"{"ForAllValues:StringEquals":{"kms:GrantOperations":["Decrypt"]}}"#,
            false,
            true,
        ),
        (
            r#"{"ForAnyValue:StringEquals":{"kms:GrantOperations":"Encrypt"}}"#,
            true,
            false,
        ),
        // Null.
        (r#"{"Null":{"kms:RequestAlias":"true"}}"#, false, true),
        (r#"{"Null":{"kms:RequestAlias":"false"}}"#, true, false),
        (
            r#"{"Null":{"kms:EncryptionContextKeys":"false"}}"#,
            true,
            false,
        ),
        (
            r#"{"Null":{"kms:EncryptionContext:env":false}}"#,
            true,
            false,
        ),
        (
            r#"{"Null":{"kms:EncryptionContext:nope":true}}"#,
            true,
            true,
        ),
        (
            r#"{"Null":{"kms:BypassPolicyLockoutSafetyCheck":"true"}}"#,
            false,
            true,
        ),
        (r#"{"Null":{"kmsd:CallerUnit":"true"}}"#, false, true),
        // Bool.
        (
            r#"{"Bool":{"kms:BypassPolicyLockoutSafetyCheck":"false"}}"#,
            true,
            false,
        ),
        (
            r#"{"Bool":{"kms:BypassPolicyLockoutSafetyCheck":true}}"#,
            false,
            false,
        ),
        (
            r#"{"BoolIfExists":{"kms:BypassPolicyLockoutSafetyCheck":"true"}}"#,
            false,
            true,
        ),
        // Numeric on the caller's ids (alice 1000/1000, bob 1001/1001).
        (r#"{"NumericEquals":{"kmsd:CallerUid":1000}}"#, true, false),
        (
            r#"{"NumericNotEquals":{"kmsd:CallerUid":"1000"}}"#,
            false,
            true,
        ),
        (
            r#"{"NumericLessThan":{"kmsd:CallerUid":"1001"}}"#,
            true,
            false,
        ),
        (
            r#"{"NumericLessThanEquals":{"kmsd:CallerUid":"1001"}}"#,
            true,
            true,
        ),
        (
            r#"{"NumericGreaterThan":{"kmsd:CallerGid":"1000"}}"#,
            false,
            true,
        ),
        (
            r#"{"NumericGreaterThanEquals":{"kmsd:CallerGid":["1000"]}}"#,
            true,
            true,
        ),
        (
            r#"{"NumericEquals":{"kmsd:CallerGid":["5","1001"]}}"#,
            false,
            true,
        ),
        // The caller's account (uid as text) and unit.
        (
            r#"{"StringEquals":{"kms:CallerAccount":"1000"}}"#,
            true,
            false,
        ),
        (r#"{"StringLike":{"kms:CallerAccount":"100?"}}"#, true, true),
        (
            r#"{"StringEquals":{"kmsd:CallerUnit":"app.service"}}"#,
            true,
            false,
        ),
        (
            r#"{"StringNotEquals":{"kmsd:CallerUnit":"app.service"}}"#,
            false,
            true,
        ),
        // Keys in an operator, and operators, are ANDed; values ORed.
        (
            r#"{"StringEquals":{"kms:EncryptionContext:Team":"Payments","kms:EncryptionContext:env":"dev"}}"#,
            false,
            false,
        ),
        (
            r#"{"StringEquals":{"kms:EncryptionContext:Team":"Payments"},"StringLike":{"kms:RequestAlias":"alias/my*"}}"#,
            true,
            false,
        ),
        (
            r#"{"StringEquals":{"kms:EncryptionContext:Team":"Payments"},"Null":{"kms:RequestAlias":"true"}}"#,
            false,
            false,
        ),
        // IgnoreCase folds Unicode, not only ASCII; `?` is one character,
        // however many bytes.
        (
            r#"{"StringLike":{"kms:EncryptionContext:team":"Pa?ments"}}"#,
            true,
            false,
        ),
        // Condition key names in any case.
        (
            r#"{"StringEquals":{"KMS:REQUESTALIAS":"alias/my-test-key"}}"#,
            true,
            false,
        ),
    ];
    for &(cond, want_rich, want_bare) in cases {
        let p = policy(&allow(r#""*""#, r#""kms:*""#, r#""*""#, cond));
        assert_eq!(p.evaluate(&rich()).is_allowed(), want_rich, "rich: {cond}");
        assert_eq!(p.evaluate(&bare()).is_allowed(), want_bare, "bare: {cond}");
    }
}

#[test]
fn unicode_values() {
    let req = Request {
        encryption_context: &[("Stadt", "zürich")],
        ..enc(ALICE)
    };
    // (condition, allowed)
    let cases: &[(&str, bool)] = &[
        (
            r#"{"StringEqualsIgnoreCase":{"kms:EncryptionContext:STADT":"ZÜRICH"}}"#,
            true,
        ),
        (
            r#"{"StringEquals":{"kms:EncryptionContext:stadt":"ZÜRICH"}}"#,
            false,
        ),
        (
            r#"{"StringLike":{"kms:EncryptionContext:stadt":"z?rich"}}"#,
            true,
        ),
        (
            r#"{"StringLike":{"kms:EncryptionContext:stadt":"z??rich"}}"#,
            false,
        ),
        (
            r#"{"StringNotEqualsIgnoreCase":{"kms:EncryptionContext:stadt":"ZÜRICH"}}"#,
            false,
        ),
    ];
    for &(cond, want) in cases {
        let p = policy(&allow(r#""*""#, r#""kms:Encrypt""#, r#""*""#, cond));
        assert_eq!(p.evaluate(&req).is_allowed(), want, "{cond}");
    }
}

#[test]
fn context_key_in_two_cases() {
    // `Team` and `team` both name the condition's key part: every value
    // must satisfy the operator.
    let req = Request {
        encryption_context: &[("Team", "a"), ("team", "b")],
        ..enc(ALICE)
    };
    let eq = policy(&allow(
        r#""*""#,
        r#""kms:Encrypt""#,
        r#""*""#,
        r#"{"StringEquals":{"kms:EncryptionContext:TEAM":"a"}}"#,
    ));
    assert_eq!(eq.evaluate(&req), Decision::ImplicitDeny);
    let either = policy(&allow(
        r#""*""#,
        r#""kms:Encrypt""#,
        r#""*""#,
        r#"{"StringEquals":{"kms:EncryptionContext:TEAM":["a","b"]}}"#,
    ));
    assert_eq!(either.evaluate(&req), Decision::Allow);
}

#[test]
fn a_denied_condition_only_denies_when_it_holds() {
    let p = policy(
        r#"{"Statement":[
        {"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*"},
        {"Effect":"Deny","Principal":"*","Action":"kms:Decrypt","Resource":"*",
         "Condition":{"StringNotEquals":{"kms:EncryptionContext:env":"prod"}}}
    ]}"#,
    );
    let prod = Request {
        encryption_context: &[("env", "prod")],
        ..Request::new(BOB, Action::Decrypt, ARN)
    };
    let dev = Request {
        encryption_context: &[("env", "dev")],
        ..prod
    };
    assert_eq!(p.evaluate(&prod), Decision::Allow);
    assert_eq!(p.evaluate(&dev), Decision::ExplicitDeny);
    // No context at all: the negated operator holds, so the deny applies.
    assert_eq!(
        p.evaluate(&Request::new(BOB, Action::Decrypt, ARN)),
        Decision::ExplicitDeny
    );
}

#[test]
fn lockout_safety_check() {
    let admins = kms_policy::default_key_policy(&["uid:0", "group:kmsadmin"], Some(1001)).unwrap();
    let p = policy(&admins);
    let root = Caller {
        uid: 0,
        gid: 0,
        ..BOB
    };
    // Administrators (by uid, by group membership) may change the policy.
    assert!(p.allows_subsequent_put_key_policy(&root, ARN));
    assert!(p.allows_subsequent_put_key_policy(&ALICE, ARN));
    // The creator may use the key but not change its policy.
    assert!(!p.allows_subsequent_put_key_policy(&BOB, ARN));
    let bob_enc = Request::new(BOB, Action::Encrypt, ARN);
    assert_eq!(p.evaluate(&bob_enc), Decision::Allow);
    assert_eq!(
        p.evaluate(&Request::new(BOB, Action::ScheduleKeyDeletion, ARN)),
        Decision::ImplicitDeny
    );
    for a in [
        Action::Decrypt,
        Action::ReEncryptFrom,
        Action::ReEncryptTo,
        Action::GenerateDataKey,
        Action::GenerateDataKeyWithoutPlaintext,
        Action::DescribeKey,
    ] {
        assert!(p.evaluate(&Request::new(BOB, a, ARN)).is_allowed(), "{a:?}");
    }
    // A policy that forbids bypassing still passes the check: the
    // subsequent request is taken without the bypass flag.
    let guarded = policy(&allow(
        r#"{"AWS":"uid:1001"}"#,
        r#""kms:PutKeyPolicy""#,
        r#""*""#,
        r#"{"Bool":{"kms:BypassPolicyLockoutSafetyCheck":"false"}}"#,
    ));
    assert!(guarded.allows_subsequent_put_key_policy(&BOB, ARN));
    // A policy naming another key does not let anyone change this one's.
    let elsewhere = policy(&allow(
        r#""*""#,
        r#""kms:*""#,
        &format!("\"{OTHER_ARN}\""),
        "",
    ));
    assert!(!elsewhere.allows_subsequent_put_key_policy(&BOB, ARN));
}
