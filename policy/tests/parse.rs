//! Parsing: the shapes kmsd accepts, and every refusal with its reason.

use kms_policy::{Policy, PolicyError, MAX_POLICY_BYTES};

/// Resolves `alice` (1000) and `kmsadmin` (500) only.
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

fn parse(text: &str) -> Result<kms_policy::CompiledPolicy, PolicyError> {
    Policy::parse(text, &Names)
}

/// A one-statement document with `stmt` as the statement's members.
fn doc(stmt: &str) -> String {
    format!(r#"{{"Version":"2012-10-17","Statement":[{{{stmt}}}]}}"#)
}

const BASE: &str = r#""Effect":"Allow","Principal":"*","Action":"kms:Encrypt","Resource":"*""#;

#[test]
fn valid_shapes() {
    let cases: Vec<(&str, String)> = vec![
        ("minimal", doc(BASE)),
        (
            "statement as an object, no version, an Id",
            r#"{"Id":"x","Statement":{"Effect":"Deny","Principal":"*","Action":"kms:*","Resource":"*"}}"#.into(),
        ),
        ("2008 version", format!(r#"{{"Version":"2008-10-17","Statement":[{{{BASE}}}]}}"#)),
        (
            "every principal kind, AWS and kmsd",
            doc(r#""Effect":"Allow","Principal":{"AWS":["uid:0","gid:10","user:alice","group:kmsadmin"],"kmsd":"unit:app.service"},"Action":"kms:Decrypt","Resource":"*""#),
        ),
        (
            "cgroup principal",
            doc(r#""Effect":"Allow","Principal":{"AWS":"cgroup:/system.slice/app.service"},"Action":"kms:Decrypt","Resource":"*""#),
        ),
        (
            "sid with spaces, action list with wildcards and case",
            doc(r#""Sid":"Allow use of the key","Effect":"Allow","Principal":"*","Action":["KMS:encrypt","kms:GenerateDataKey*","kms:ReEncrypt*","kms:?escribeKey"],"Resource":"*""#),
        ),
        (
            "resource ARN, upper-case hex",
            doc(&format!(r#""Effect":"Allow","Principal":"*","Action":"kms:Encrypt","Resource":["{}"]"#, ARN.to_uppercase().replace("ARN:AWS:KMS:US-EAST-1:000000000000:KEY/", "arn:aws:kms:us-east-1:000000000000:key/"))),
        ),
        (
            "resource ARNs of any partition, region and account, and the legacy form",
            doc(r#""Effect":"Allow","Principal":"*","Action":"kms:Encrypt","Resource":[
                "arn:aws:kms:eu-west-3:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
                "arn:aws-us-gov:kms:us-gov-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
                "arn:aws-cn:kms:cn-north-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
                "arn:kmsd:kms:local:key/1234abcd-12ab-34cd-56ef-1234567890ab"]"#),
        ),
        (
            "every condition operator and key",
            doc(r#""Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*","Condition":{
                "StringEquals":{"kms:EncryptionContext:Team":"a","kms:CallerAccount":"1000"},
                "StringNotEquals":{"kmsd:CallerUnit":"x.service"},
                "StringEqualsIgnoreCase":{"kms:RequestAlias":"alias/A"},
                "StringNotEqualsIgnoreCase":{"kms:EncryptionContext:x":["a","b"]},
                "StringLike":{"kms:RequestAlias":"alias/*test*"},
                "StringNotLike":{"kms:RequestAlias":"alias/prod-?"},
                "ForAnyValue:StringEquals":{"kms:EncryptionContextKeys":"Team"},
                "ForAllValues:StringLike":{"kms:ResourceAliases":"alias/*"},
                "ForAllValues:StringEqualsIfExists":{"kms:GrantOperations":["Decrypt","Encrypt"]},
                "StringEqualsIfExists":{"kms:RequestAlias":"alias/a"},
                "NumericEquals":{"kmsd:CallerUid":0},
                "NumericNotEquals":{"kmsd:CallerGid":"5"},
                "NumericLessThan":{"kmsd:CallerUid":"1000"},
                "NumericLessThanEquals":{"kmsd:CallerUid":"-1"},
                "NumericGreaterThan":{"kmsd:CallerUid":"1"},
                "NumericGreaterThanEqualsIfExists":{"kmsd:CallerGid":"1"},
                "Bool":{"kms:BypassPolicyLockoutSafetyCheck":false},
                "BoolIfExists":{"kms:BypassPolicyLockoutSafetyCheck":"TRUE"},
                "Null":{"kms:RequestAlias":"true","kms:EncryptionContextKeys":false}
            }"#),
        ),
        (
            "condition key names in any case",
            doc(r#""Effect":"Allow","Principal":"*","Action":"kms:Decrypt","Resource":"*","Condition":{"StringEquals":{"KMS:ENCRYPTIONCONTEXT:team":"a","kmsd:calleruNIT":"a.service"}}"#),
        ),
    ];
    for (name, text) in cases {
        let p = parse(&text).unwrap_or_else(|e| panic!("{name}: refused: {e}"));
        assert!(p.statement_count() >= 1, "{name}");
    }
}

#[test]
fn malformed() {
    let long = "a".repeat(1025);
    let many_statements = format!(
        r#"{{"Statement":[{}]}}"#,
        vec![format!("{{{BASE}}}"); 129].join(",")
    );
    let too_big = format!(
        r#"{{"Statement":[{{{BASE}}}],"Id":"{}"}}"#,
        "x".repeat(MAX_POLICY_BYTES)
    );
    let deep = format!("{}{}", "[".repeat(9), "]".repeat(9));
    let stars = "*a".repeat(17);
    let many_values = format!(
        "[{}]",
        (0..65)
            .map(|i| format!("\"{i}\""))
            .collect::<Vec<_>>()
            .join(",")
    );
    // (case, document, a piece of the reason)
    let cases: Vec<(&str, String, &str)> = vec![
        ("too big", too_big, "longer than 32768 bytes"),
        ("too deep", deep, "nests deeper than 8"),
        ("not JSON", "{".into(), "not valid JSON"),
        (
            "trailing garbage",
            format!("{} x", doc(BASE)),
            "not valid JSON",
        ),
        ("not an object", "[]".into(), "must be a JSON object"),
        (
            "duplicate key",
            doc(&format!(r#"{BASE},"Effect":"Deny""#)),
            "duplicate key \"Effect\"",
        ),
        (
            "long string",
            doc(&format!(r#"{BASE},"Sid":"{long}""#)),
            "longer than 1024 bytes",
        ),
        (
            "bad version",
            format!(r#"{{"Version":"2020-01-01","Statement":[{{{BASE}}}]}}"#),
            "Version:",
        ),
        (
            "unknown top-level element",
            format!(r#"{{"Statement":[{{{BASE}}}],"Extra":1}}"#),
            "unsupported policy element \"Extra\"",
        ),
        (
            "no statement",
            r#"{"Version":"2012-10-17"}"#.into(),
            "Statement: missing",
        ),
        (
            "empty statement list",
            r#"{"Statement":[]}"#.into(),
            "Statement: is empty",
        ),
        (
            "statement not an object",
            r#"{"Statement":["x"]}"#.into(),
            "Statement[0]: must be an object",
        ),
        (
            "too many statements",
            many_statements,
            "more than 128 statements",
        ),
        (
            "NotPrincipal",
            doc(r#""Effect":"Allow","NotPrincipal":"*","Action":"kms:Encrypt","Resource":"*""#),
            "Statement[0].NotPrincipal: is not supported",
        ),
        (
            "NotAction",
            doc(r#""Effect":"Allow","Principal":"*","NotAction":"kms:Encrypt","Resource":"*""#),
            "Statement[0].NotAction: is not supported",
        ),
        (
            "NotResource",
            doc(r#""Effect":"Allow","Principal":"*","Action":"kms:Encrypt","NotResource":"*""#),
            "Statement[0].NotResource: is not supported",
        ),
        (
            "unknown element",
            doc(&format!(r#"{BASE},"Extra":1"#)),
            "unsupported statement element \"Extra\"",
        ),
        (
            "duplicate sid",
            format!(r#"{{"Statement":[{{"Sid":"a",{BASE}}},{{"Sid":"a",{BASE}}}]}}"#),
            "Statement[1].Sid: \"a\" is not unique",
        ),
        (
            "sid not a string",
            doc(&format!(r#"{BASE},"Sid":1"#)),
            "Statement[0].Sid: must be a string",
        ),
        (
            "no effect",
            doc(r#""Principal":"*","Action":"kms:Encrypt","Resource":"*""#),
            "Statement[0].Effect: missing",
        ),
        (
            "effect case",
            doc(r#""Effect":"allow","Principal":"*","Action":"kms:Encrypt","Resource":"*""#),
            "Statement[0].Effect: must be",
        ),
        (
            "no principal",
            doc(r#""Effect":"Allow","Action":"kms:Encrypt","Resource":"*""#),
            "Statement[0].Principal: missing",
        ),
        (
            "principal string not *",
            doc(r#""Effect":"Allow","Principal":"uid:0","Action":"kms:Encrypt","Resource":"*""#),
            "Statement[0].Principal: must be",
        ),
        (
            "principal empty object",
            doc(r#""Effect":"Allow","Principal":{},"Action":"kms:Encrypt","Resource":"*""#),
            "Statement[0].Principal: must be",
        ),
        (
            "principal empty list",
            doc(r#""Effect":"Allow","Principal":{"AWS":[]},"Action":"kms:Encrypt","Resource":"*""#),
            "Statement[0].Principal.AWS: is empty",
        ),
        (
            "principal type",
            doc(
                r#""Effect":"Allow","Principal":{"Service":"x"},"Action":"kms:Encrypt","Resource":"*""#,
            ),
            "unsupported principal type \"Service\"",
        ),
        (
            "AWS ARN principal",
            doc(
                r#""Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:Encrypt","Resource":"*""#,
            ),
            "is not a principal",
        ),
        (
            "uid not a number",
            doc(
                r#""Effect":"Allow","Principal":{"AWS":"uid:+5"},"Action":"kms:Encrypt","Resource":"*""#,
            ),
            "is not a uid",
        ),
        (
            "uid overflow",
            doc(
                r#""Effect":"Allow","Principal":{"AWS":"uid:4294967296"},"Action":"kms:Encrypt","Resource":"*""#,
            ),
            "is not a uid",
        ),
        (
            "gid empty",
            doc(
                r#""Effect":"Allow","Principal":{"AWS":"gid:"},"Action":"kms:Encrypt","Resource":"*""#,
            ),
            "is not a gid",
        ),
        (
            "unknown user",
            doc(
                r#""Effect":"Allow","Principal":{"AWS":"user:bob"},"Action":"kms:Encrypt","Resource":"*""#,
            ),
            "Statement[0].Principal.AWS: \"user:bob\" names no user",
        ),
        (
            "unknown group",
            doc(
                r#""Effect":"Allow","Principal":{"AWS":"group:wheel"},"Action":"kms:Encrypt","Resource":"*""#,
            ),
            "\"group:wheel\" names no group",
        ),
        (
            "bad user name",
            doc(
                r#""Effect":"Allow","Principal":{"AWS":"user:a b"},"Action":"kms:Encrypt","Resource":"*""#,
            ),
            "is not a valid user or group name",
        ),
        (
            "unit not a service",
            doc(
                r#""Effect":"Allow","Principal":{"AWS":"unit:app.socket"},"Action":"kms:Encrypt","Resource":"*""#,
            ),
            "is not a systemd service unit",
        ),
        (
            "unit bad char",
            doc(
                r#""Effect":"Allow","Principal":{"AWS":"unit:a/b.service"},"Action":"kms:Encrypt","Resource":"*""#,
            ),
            "is not a systemd service unit",
        ),
        (
            "cgroup relative",
            doc(
                r#""Effect":"Allow","Principal":{"AWS":"cgroup:system.slice"},"Action":"kms:Encrypt","Resource":"*""#,
            ),
            "is not an absolute cgroup path",
        ),
        (
            "cgroup dotdot",
            doc(
                r#""Effect":"Allow","Principal":{"AWS":"cgroup:/a/../b"},"Action":"kms:Encrypt","Resource":"*""#,
            ),
            "is not an absolute cgroup path",
        ),
        (
            "cgroup trailing slash",
            doc(
                r#""Effect":"Allow","Principal":{"AWS":"cgroup:/a/"},"Action":"kms:Encrypt","Resource":"*""#,
            ),
            "is not an absolute cgroup path",
        ),
        (
            "no action",
            doc(r#""Effect":"Allow","Principal":"*","Resource":"*""#),
            "Statement[0].Action: missing",
        ),
        (
            "unknown action",
            doc(r#""Effect":"Allow","Principal":"*","Action":"kms:Encypt","Resource":"*""#),
            "Statement[0].Action: \"kms:Encypt\" names no kmsd action",
        ),
        (
            "other service action",
            doc(r#""Effect":"Allow","Principal":"*","Action":"s3:*","Resource":"*""#),
            "names no kmsd action",
        ),
        (
            "action not a string",
            doc(r#""Effect":"Allow","Principal":"*","Action":[1],"Resource":"*""#),
            "Statement[0].Action: must be a string",
        ),
        (
            "action wildcards",
            doc(&format!(
                r#""Effect":"Allow","Principal":"*","Action":"kms:{stars}","Resource":"*""#
            )),
            "more than 16 wildcards",
        ),
        (
            "no resource",
            doc(r#""Effect":"Allow","Principal":"*","Action":"kms:Encrypt""#),
            "Statement[0].Resource: missing",
        ),
        (
            "resource ARN with an 11-digit account",
            doc(
                r#""Effect":"Allow","Principal":"*","Action":"kms:Encrypt","Resource":"arn:aws:kms:us-east-1:11112222333:key/1234abcd-12ab-34cd-56ef-1234567890ab""#,
            ),
            "is neither * nor a key ARN",
        ),
        (
            "resource ARN with an upper-case region",
            doc(
                r#""Effect":"Allow","Principal":"*","Action":"kms:Encrypt","Resource":"arn:aws:kms:US-EAST-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab""#,
            ),
            "is neither * nor a key ARN",
        ),
        (
            "resource ARN of another partition shape",
            doc(
                r#""Effect":"Allow","Principal":"*","Action":"kms:Encrypt","Resource":"arn:amazon:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab""#,
            ),
            "is neither * nor a key ARN",
        ),
        (
            "resource ARN of another service",
            doc(
                r#""Effect":"Allow","Principal":"*","Action":"kms:Encrypt","Resource":"arn:aws:s3:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab""#,
            ),
            "is neither * nor a key ARN",
        ),
        (
            "resource ARN without a region",
            doc(
                r#""Effect":"Allow","Principal":"*","Action":"kms:Encrypt","Resource":"arn:aws:kms::111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab""#,
            ),
            "is neither * nor a key ARN",
        ),
        (
            "resource ARN with a short key id",
            doc(
                r#""Effect":"Allow","Principal":"*","Action":"kms:Encrypt","Resource":"arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890a""#,
            ),
            "is neither * nor a key ARN",
        ),
        (
            "resource legacy wildcard ARN",
            doc(
                r#""Effect":"Allow","Principal":"*","Action":"kms:Encrypt","Resource":"arn:kmsd:kms:local:key/*""#,
            ),
            "is neither * nor a key ARN",
        ),
        (
            "resource wildcard ARN",
            doc(
                r#""Effect":"Allow","Principal":"*","Action":"kms:Encrypt","Resource":"arn:aws:kms:us-east-1:000000000000:key/*""#,
            ),
            "is neither * nor a key ARN",
        ),
        (
            "resource alias ARN",
            doc(
                r#""Effect":"Allow","Principal":"*","Action":"kms:Encrypt","Resource":"arn:aws:kms:us-east-1:000000000000:alias/x""#,
            ),
            "is neither * nor a key ARN",
        ),
        (
            "condition not an object",
            doc(&format!(r#"{BASE},"Condition":[]"#)),
            "Statement[0].Condition: must be an object",
        ),
        (
            "unsupported operator",
            doc(&format!(
                r#"{BASE},"Condition":{{"DateLessThan":{{"kms:ValidTo":"1"}}}}"#
            )),
            "Statement[0].Condition: unsupported condition operator \"DateLessThan\"",
        ),
        (
            "operator case",
            doc(&format!(
                r#"{BASE},"Condition":{{"stringequals":{{"kms:RequestAlias":"a"}}}}"#
            )),
            "unsupported condition operator \"stringequals\"",
        ),
        (
            "NullIfExists",
            doc(&format!(
                r#"{BASE},"Condition":{{"NullIfExists":{{"kms:RequestAlias":"true"}}}}"#
            )),
            "unsupported condition operator \"NullIfExists\"",
        ),
        (
            "unsupported key",
            doc(&format!(
                r#"{BASE},"Condition":{{"StringEquals":{{"kms:ViaService":"x"}}}}"#
            )),
            "Statement[0].Condition.StringEquals: unsupported condition key \"kms:ViaService\"",
        ),
        (
            "empty context key part",
            doc(&format!(
                r#"{BASE},"Condition":{{"StringEquals":{{"kms:EncryptionContext:":"x"}}}}"#
            )),
            "unsupported condition key",
        ),
        (
            "operator with no key",
            doc(&format!(r#"{BASE},"Condition":{{"StringEquals":{{}}}}"#)),
            "names no condition key",
        ),
        (
            "ForAllValues on a context key",
            doc(&format!(
                r#"{BASE},"Condition":{{"ForAllValues:StringEquals":{{"kms:EncryptionContext:a":"x"}}}}"#
            )),
            "overly permissive",
        ),
        (
            "multi-valued key without qualifier",
            doc(&format!(
                r#"{BASE},"Condition":{{"StringEquals":{{"kms:EncryptionContextKeys":"x"}}}}"#
            )),
            "needs ForAnyValue: or ForAllValues:",
        ),
        (
            "qualifier on single-valued key",
            doc(&format!(
                r#"{BASE},"Condition":{{"ForAnyValue:StringEquals":{{"kms:RequestAlias":"x"}}}}"#
            )),
            "apply to multi-valued keys only",
        ),
        (
            "numeric on a string key",
            doc(&format!(
                r#"{BASE},"Condition":{{"NumericEquals":{{"kms:RequestAlias":"1"}}}}"#
            )),
            "operator \"NumericEquals\" does not apply",
        ),
        (
            "string on a numeric key",
            doc(&format!(
                r#"{BASE},"Condition":{{"StringEquals":{{"kmsd:CallerUid":"1"}}}}"#
            )),
            "does not apply to this key",
        ),
        (
            "bool on a string key",
            doc(&format!(
                r#"{BASE},"Condition":{{"Bool":{{"kms:RequestAlias":"true"}}}}"#
            )),
            "does not apply to this key",
        ),
        (
            "not a number",
            doc(&format!(
                r#"{BASE},"Condition":{{"NumericEquals":{{"kmsd:CallerUid":"1.5"}}}}"#
            )),
            "\"1.5\" is not an integer",
        ),
        (
            "not a bool",
            doc(&format!(
                r#"{BASE},"Condition":{{"Bool":{{"kms:BypassPolicyLockoutSafetyCheck":"yes"}}}}"#
            )),
            "\"yes\" is not true or false",
        ),
        (
            "null not a bool",
            doc(&format!(
                r#"{BASE},"Condition":{{"Null":{{"kms:RequestAlias":"1"}}}}"#
            )),
            "is not true or false",
        ),
        (
            "empty values",
            doc(&format!(
                r#"{BASE},"Condition":{{"StringEquals":{{"kms:RequestAlias":[]}}}}"#
            )),
            "lists no value",
        ),
        (
            "object value",
            doc(&format!(
                r#"{BASE},"Condition":{{"StringEquals":{{"kms:RequestAlias":{{}}}}}}"#
            )),
            "values must be strings",
        ),
        (
            "too many values",
            doc(&format!(
                r#"{BASE},"Condition":{{"StringEquals":{{"kms:RequestAlias":{many_values}}}}}"#
            )),
            "more than 64 values",
        ),
        (
            "policy variable",
            doc(&format!(
                r#"{BASE},"Condition":{{"StringLike":{{"kms:RequestAlias":"alias/${{aws:username}}"}}}}"#
            )),
            "policy variables are not supported",
        ),
        (
            "StringLike wildcards",
            doc(&format!(
                r#"{BASE},"Condition":{{"StringLike":{{"kms:RequestAlias":"{stars}"}}}}"#
            )),
            "more than 16 wildcards",
        ),
    ];
    let mut seen = std::collections::HashSet::new();
    for (name, text, reason) in cases {
        assert!(seen.insert(name), "case {name} twice");
        let e = parse(&text)
            .err()
            .unwrap_or_else(|| panic!("{name}: accepted"));
        assert_eq!(e.exception_name(), "MalformedPolicyDocumentException");
        assert!(
            e.reason().contains(reason),
            "{name}: reason {:?} lacks {reason:?}",
            e.reason()
        );
    }
}

#[test]
fn default_policy_round_trips() {
    let text = kms_policy::default_key_policy(&["uid:0", "group:kmsadmin"], Some(1000)).unwrap();
    let p = parse(&text).unwrap();
    assert_eq!(p.statement_count(), 2);
    // A name the resolver does not know makes the stored policy fail, as
    // any other policy would.
    let text = kms_policy::default_key_policy(&["user:bob"], Some(1000)).unwrap();
    assert!(parse(&text).unwrap_err().reason().contains("names no user"));
    // A principal that is not one is refused by the builder itself.
    let e = kms_policy::default_key_policy(&["root"], Some(1000)).unwrap_err();
    assert!(e.reason().contains("administrators[0]"), "{e}");
    // With no administrators, only the creator's statement.
    let text = kms_policy::default_key_policy(&[], Some(7)).unwrap();
    assert_eq!(parse(&text).unwrap().statement_count(), 1);
}
