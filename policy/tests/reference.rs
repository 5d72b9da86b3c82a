//! The evaluator against a reference written separately here, on random
//! small policies and requests. The reference works on the test's own
//! model of a policy (not on the crate's compiled form) with the simplest
//! code that states the rules of docs/policy.md: owned vectors, a
//! recursive wildcard matcher, no precomputation.

use kms_policy::{Action, Caller, Decision, GrantConstraintType, Policy, Request};
use proptest::prelude::*;
use serde_json::{json, Value};

const ARN_A: &str = "arn:aws:kms:us-east-1:000000000000:key/aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa";
const ARN_B: &str = "arn:aws:kms:us-east-1:000000000000:key/bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbbbbb";

const PRINCIPALS: &[&str] = &[
    "*",
    "uid:1",
    "uid:2",
    "gid:10",
    "gid:20",
    "unit:a.service",
    "cgroup:/a",
];
const ACTION_PATTERNS: &[&str] = &[
    "kms:Encrypt",
    "kms:Decrypt",
    "kms:*",
    "kms:ReEncrypt*",
    "KMS:encrypt",
    "kms:?ecrypt",
    "kms:GenerateDataKey*",
    "*",
];
const ACTIONS: &[Action] = &[
    Action::Encrypt,
    Action::Decrypt,
    Action::ReEncryptFrom,
    Action::GenerateDataKey,
    Action::GenerateDataKeyWithoutPlaintext,
    Action::DescribeKey,
];
const RESOURCES: &[&str] = &["*", ARN_A, ARN_B];
const STRING_OPS: &[&str] = &[
    "StringEquals",
    "StringNotEquals",
    "StringEqualsIgnoreCase",
    "StringNotEqualsIgnoreCase",
    "StringLike",
    "StringNotLike",
];
const NUMERIC_OPS: &[&str] = &[
    "NumericEquals",
    "NumericNotEquals",
    "NumericLessThan",
    "NumericLessThanEquals",
    "NumericGreaterThan",
    "NumericGreaterThanEquals",
];
const SINGLE_STRING_KEYS: &[&str] = &[
    "kms:EncryptionContext:team",
    "kms:EncryptionContext:TEAM",
    "kms:EncryptionContext:env",
    "kms:RequestAlias",
    "kmsd:CallerUnit",
    "kms:CallerAccount",
    "kms:GranteePrincipal",
    "kms:RetiringPrincipal",
    "kms:GrantConstraintType",
];
const MULTI_KEYS: &[&str] = &[
    "kms:EncryptionContextKeys",
    "kms:ResourceAliases",
    "kms:GrantOperations",
];
const NUMERIC_KEYS: &[&str] = &["kmsd:CallerUid", "kmsd:CallerGid"];
const BOOL_KEY: &str = "kms:BypassPolicyLockoutSafetyCheck";
const STRING_VALUES: &[&str] = &[
    "a",
    "A",
    "b",
    "a*",
    "?",
    "*",
    "alias/x",
    "alias/*",
    "1",
    "team",
    "Team",
    "env",
    "Decrypt",
    "a.service",
    "uid:1",
    "unit:*",
    "EncryptionContextSubset",
];

/// One condition of the model: operator text, key, values.
#[derive(Clone, Debug)]
struct Cond {
    op: String,
    key: String,
    values: Vec<String>,
}

#[derive(Clone, Debug)]
struct Stmt {
    deny: bool,
    principals: Vec<String>,
    actions: Vec<String>,
    resources: Vec<String>,
    conds: Vec<Cond>,
}

#[derive(Clone, Debug)]
struct Req {
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
    unit: Option<String>,
    cgroup: Option<String>,
    action: Action,
    key: &'static str,
    context: Vec<(String, String)>,
    alias: Option<String>,
    aliases: Vec<String>,
    grant_ops: Vec<String>,
    bypass: Option<bool>,
    grantee: Option<String>,
    retiring: Option<String>,
    constraint_type: Option<GrantConstraintType>,
}

fn pick<T: Clone + std::fmt::Debug + 'static>(xs: &'static [T]) -> impl Strategy<Value = T> {
    proptest::sample::select(xs)
}

fn cond() -> impl Strategy<Value = Cond> {
    let if_exists = any::<bool>().prop_map(|b| if b { "IfExists" } else { "" });
    let strings = || proptest::collection::vec(pick(STRING_VALUES).prop_map(String::from), 1..3);
    let single = (
        pick(STRING_OPS),
        if_exists.clone(),
        pick(SINGLE_STRING_KEYS),
        strings(),
    )
        .prop_map(|(op, ie, key, values)| Cond {
            op: format!("{op}{ie}"),
            key: key.into(),
            values,
        });
    let multi = (
        pick(&["ForAnyValue:", "ForAllValues:"]),
        pick(STRING_OPS),
        if_exists.clone(),
        pick(MULTI_KEYS),
        strings(),
    )
        .prop_map(|(q, op, ie, key, values)| Cond {
            op: format!("{q}{op}{ie}"),
            key: key.into(),
            values,
        });
    let numeric = (
        pick(NUMERIC_OPS),
        if_exists.clone(),
        pick(NUMERIC_KEYS),
        proptest::collection::vec(pick(&[0u32, 1, 2, 3, 10, 20, 30]), 1..3),
    )
        .prop_map(|(op, ie, key, values)| Cond {
            op: format!("{op}{ie}"),
            key: key.into(),
            values: values.iter().map(u32::to_string).collect(),
        });
    let boolean = (if_exists, any::<bool>()).prop_map(|(ie, b)| Cond {
        op: format!("Bool{ie}"),
        key: BOOL_KEY.into(),
        values: vec![b.to_string()],
    });
    let all_keys: Vec<&'static str> = SINGLE_STRING_KEYS
        .iter()
        .chain(MULTI_KEYS)
        .chain(NUMERIC_KEYS)
        .chain([&BOOL_KEY])
        .copied()
        .collect();
    let null = (proptest::sample::select(all_keys), any::<bool>()).prop_map(|(key, b)| Cond {
        op: "Null".into(),
        key: key.into(),
        values: vec![b.to_string()],
    });
    prop_oneof![single, multi, numeric, boolean, null]
}

fn stmt() -> impl Strategy<Value = Stmt> {
    (
        any::<bool>(),
        proptest::collection::vec(pick(PRINCIPALS).prop_map(String::from), 1..3),
        proptest::collection::vec(pick(ACTION_PATTERNS).prop_map(String::from), 1..3),
        proptest::collection::vec(pick(RESOURCES).prop_map(String::from), 1..3),
        proptest::collection::vec(cond(), 0..3),
    )
        .prop_map(|(deny, principals, actions, resources, conds)| Stmt {
            deny,
            principals,
            actions,
            resources,
            conds,
        })
}

fn req() -> impl Strategy<Value = Req> {
    let opt = |xs: &'static [&'static str]| proptest::option::of(pick(xs).prop_map(String::from));
    (
        (
            pick(&[1u32, 2, 3]),
            pick(&[10u32, 20, 30]),
            proptest::collection::vec(pick(&[10u32, 20]), 0..2),
            opt(&["a.service", "b.service"]),
            opt(&["/a", "/a/b", "/ab", "/"]),
        ),
        pick(ACTIONS),
        pick(&[ARN_A, ARN_B]),
        proptest::collection::vec(
            (pick(&["team", "Team", "env"]), pick(&["a", "A", "b"]))
                .prop_map(|(k, v)| (k.to_string(), v.to_string())),
            0..3,
        ),
        opt(&["alias/x", "a", "alias/y"]),
        proptest::collection::vec(pick(&["alias/x", "a"]).prop_map(String::from), 0..3),
        proptest::collection::vec(pick(&["Decrypt", "Encrypt"]).prop_map(String::from), 0..3),
        proptest::option::of(any::<bool>()),
        (
            opt(&["uid:1", "uid:2", "unit:a.service"]),
            opt(&["uid:1", "cgroup:/a"]),
            proptest::option::of(pick(&[
                GrantConstraintType::EncryptionContextEquals,
                GrantConstraintType::EncryptionContextSubset,
            ])),
        ),
    )
        .prop_map(
            |(
                (uid, gid, groups, unit, cgroup),
                action,
                key,
                context,
                alias,
                aliases,
                grant_ops,
                bypass,
                (grantee, retiring, constraint_type),
            )| Req {
                uid,
                gid,
                groups,
                unit,
                cgroup,
                action,
                key,
                context,
                alias,
                aliases,
                grant_ops,
                bypass,
                grantee,
                retiring,
                constraint_type,
            },
        )
}

fn to_json(stmts: &[Stmt]) -> String {
    let statements: Vec<Value> = stmts
        .iter()
        .map(|s| {
            let mut v = json!({
                "Effect": if s.deny { "Deny" } else { "Allow" },
                "Principal": if s.principals.iter().any(|p| p == "*") && s.principals.len() == 1 {
                    json!("*")
                } else {
                    json!({"AWS": s.principals})
                },
                "Action": s.actions,
                "Resource": s.resources,
            });
            if !s.conds.is_empty() {
                // Each (operator, key) once: later duplicates would be
                // duplicate JSON keys, so the model keeps only the first.
                let mut block = serde_json::Map::new();
                for c in &s.conds {
                    let ops = block
                        .entry(c.op.clone())
                        .or_insert_with(|| json!({}))
                        .as_object_mut()
                        .unwrap();
                    ops.entry(c.key.clone()).or_insert_with(|| json!(c.values));
                }
                v["Condition"] = Value::Object(block);
            }
            v
        })
        .collect();
    json!({"Version": "2012-10-17", "Statement": statements}).to_string()
}

/// The conditions the JSON really carries (the first of each pair).
fn effective(conds: &[Cond]) -> Vec<Cond> {
    let mut out: Vec<Cond> = Vec::new();
    for c in conds {
        if !out.iter().any(|o| o.op == c.op && o.key == c.key) {
            out.push(c.clone());
        }
    }
    out
}

// ---- The reference evaluator. ----

fn glob(p: &[char], s: &[char]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some('*') => (0..=s.len()).any(|i| glob(&p[1..], &s[i..])),
        Some('?') => !s.is_empty() && glob(&p[1..], &s[1..]),
        Some(c) => s.first() == Some(c) && glob(&p[1..], &s[1..]),
    }
}

fn like(pattern: &str, s: &str) -> bool {
    glob(
        &pattern.chars().collect::<Vec<_>>(),
        &s.chars().collect::<Vec<_>>(),
    )
}

fn principal_ok(p: &str, r: &Req) -> bool {
    if p == "*" {
        return true;
    }
    let (kind, rest) = p.split_once(':').unwrap();
    match kind {
        "uid" => r.uid.to_string() == rest,
        "gid" => r.gid.to_string() == rest || r.groups.iter().any(|g| g.to_string() == rest),
        "unit" => r.unit.as_deref() == Some(rest),
        "cgroup" => r
            .cgroup
            .as_deref()
            .is_some_and(|c| rest == "/" || c == rest || c.starts_with(&format!("{rest}/"))),
        _ => unreachable!(),
    }
}

/// The request's values for a key: strings, numbers or booleans, as text;
/// empty when absent.
fn values_of(key: &str, r: &Req) -> Vec<String> {
    let lower = key.to_lowercase();
    if let Some(part) = lower.strip_prefix("kms:encryptioncontext:") {
        return r
            .context
            .iter()
            .filter(|(k, _)| k.to_lowercase() == part)
            .map(|(_, v)| v.clone())
            .collect();
    }
    match lower.as_str() {
        "kms:encryptioncontextkeys" => r.context.iter().map(|(k, _)| k.clone()).collect(),
        "kms:requestalias" => r.alias.iter().cloned().collect(),
        "kms:resourcealiases" => r.aliases.clone(),
        "kms:grantoperations" => r.grant_ops.clone(),
        "kms:calleraccount" => vec![r.uid.to_string()],
        "kmsd:callerunit" => r.unit.iter().cloned().collect(),
        "kmsd:calleruid" => vec![r.uid.to_string()],
        "kmsd:callergid" => vec![r.gid.to_string()],
        "kms:bypasspolicylockoutsafetycheck" => r.bypass.iter().map(bool::to_string).collect(),
        "kms:granteeprincipal" => r.grantee.iter().cloned().collect(),
        "kms:retiringprincipal" => r.retiring.iter().cloned().collect(),
        "kms:grantconstrainttype" => r
            .constraint_type
            .iter()
            .map(|t| match t {
                GrantConstraintType::EncryptionContextEquals => {
                    "EncryptionContextEquals".to_string()
                }
                GrantConstraintType::EncryptionContextSubset => {
                    "EncryptionContextSubset".to_string()
                }
            })
            .collect(),
        _ => unreachable!("{key}"),
    }
}

fn cond_ok(c: &Cond, r: &Req) -> bool {
    let vals = values_of(&c.key, r);
    if c.op == "Null" {
        return c.values.contains(&vals.is_empty().to_string());
    }
    let (qualifier, rest) = match c.op.split_once(':') {
        Some((q, rest)) => (q, rest),
        None => ("", c.op.as_str()),
    };
    let (base, if_exists) = match rest.strip_suffix("IfExists") {
        Some(b) => (b, true),
        None => (rest, false),
    };
    let negated = base.contains("Not");
    if vals.is_empty() {
        return if_exists
            || match qualifier {
                "ForAllValues" => true,
                "ForAnyValue" => false,
                _ => negated,
            };
    }
    let matches = |v: &str, cv: &str| -> bool {
        match base.replace("Not", "").as_str() {
            "StringEquals" | "Bool" => v == cv,
            "StringEqualsIgnoreCase" => v.to_lowercase() == cv.to_lowercase(),
            "StringLike" => like(cv, v),
            num => {
                let (v, cv): (i64, i64) = (v.parse().unwrap(), cv.parse().unwrap());
                match num {
                    "NumericEquals" => v == cv,
                    "NumericLessThan" => v < cv,
                    "NumericLessThanEquals" => v <= cv,
                    "NumericGreaterThan" => v > cv,
                    "NumericGreaterThanEquals" => v >= cv,
                    _ => unreachable!("{num}"),
                }
            }
        }
    };
    let one = |v: &String| c.values.iter().any(|cv| matches(v, cv)) != negated;
    if qualifier == "ForAnyValue" {
        vals.iter().any(one)
    } else {
        vals.iter().all(one)
    }
}

fn reference(stmts: &[Stmt], r: &Req) -> Decision {
    let applies = |s: &Stmt| {
        s.principals.iter().any(|p| principal_ok(p, r))
            && s.actions
                .iter()
                .any(|a| like(&a.to_lowercase(), &r.action.name().to_lowercase()))
            && s.resources.iter().any(|x| x == "*" || x == r.key)
            && effective(&s.conds).iter().all(|c| cond_ok(c, r))
    };
    if stmts.iter().any(|s| s.deny && applies(s)) {
        Decision::ExplicitDeny
    } else if stmts.iter().any(|s| !s.deny && applies(s)) {
        Decision::Allow
    } else {
        Decision::ImplicitDeny
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn evaluator_agrees_with_reference(
        stmts in proptest::collection::vec(stmt(), 1..4),
        reqs in proptest::collection::vec(req(), 1..6),
    ) {
        let text = to_json(&stmts);
        let policy = Policy::parse(&text, &kms_policy::NoNames)
            .map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        for r in &reqs {
            let context: Vec<(&str, &str)> =
                r.context.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let aliases: Vec<&str> = r.aliases.iter().map(String::as_str).collect();
            let grant_ops: Vec<&str> = r.grant_ops.iter().map(String::as_str).collect();
            let request = Request {
                caller: Caller {
                    uid: r.uid,
                    gid: r.gid,
                    supplementary_gids: &r.groups,
                    unit: r.unit.as_deref(),
                    cgroup: r.cgroup.as_deref(),
                },
                action: r.action,
                key_arn: r.key,
                encryption_context: &context,
                request_alias: r.alias.as_deref(),
                key_aliases: &aliases,
                grant_operations: &grant_ops,
                bypass_policy_lockout_safety_check: r.bypass,
                grantee_principal: r.grantee.as_deref(),
                retiring_principal: r.retiring.as_deref(),
                grant_constraint_type: r.constraint_type,
            };
            prop_assert_eq!(policy.evaluate(&request), reference(&stmts, r), "{} for {:?}", text, r);
        }
    }

    #[test]
    fn parse_never_panics(text in ".{0,300}") {
        let _ = Policy::parse(&text, &kms_policy::NoNames);
    }
}
