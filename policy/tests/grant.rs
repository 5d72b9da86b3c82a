//! Grants, table-driven: every grant operation for every kind of grantee
//! and constraint, every refusal with its reason, grants created through
//! grants, `Name` retries, and the grant condition keys of key policies.

use kms_policy::{
    Action, Caller, CompiledGrant, Decision, GrantConstraintType, GrantError, GrantErrorKind,
    GrantOperation, GrantOperationSet, GrantSpec, Policy, Request, MAX_CONSTRAINT_BYTES,
    MAX_CONSTRAINT_PAIRS,
};

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

const ALICE: Caller<'static> = Caller {
    uid: 1000,
    gid: 1000,
    supplementary_gids: &[500],
    unit: Some("app.service"),
    cgroup: Some("/system.slice/app.service/worker"),
};

const BOB: Caller<'static> = Caller {
    uid: 1001,
    gid: 500,
    supplementary_gids: &[],
    unit: Some("other.service"),
    cgroup: Some("/system.slice/other.service"),
};

const NOBODY: Caller<'static> = Caller {
    uid: 65534,
    gid: 65534,
    supplementary_gids: &[],
    unit: None,
    cgroup: None,
};

/// The grantee kinds, each naming ALICE and not BOB or NOBODY (but
/// `uid:1001`, which names BOB).
const GRANTEES: &[(&str, &[Caller<'static>])] = &[
    ("uid:1000", &[ALICE]),
    ("user:alice", &[ALICE]),
    ("unit:app.service", &[ALICE]),
    ("cgroup:/system.slice/app.service", &[ALICE]),
    ("cgroup:/", &[ALICE, BOB]),
    ("uid:1001", &[BOB]),
];

const CALLERS: &[Caller<'static>] = &[ALICE, BOB, NOBODY];

fn compile(spec: &GrantSpec<'_>) -> CompiledGrant {
    CompiledGrant::compile(spec, &Names).unwrap_or_else(|e| panic!("{spec:?}: {e}"))
}

fn refuse(spec: &GrantSpec<'_>) -> GrantError {
    match CompiledGrant::compile(spec, &Names) {
        Ok(g) => panic!("{spec:?} compiled: {g:?}"),
        Err(e) => e,
    }
}

/// A grant for uid:1000 of `ops` (by name).
fn spec<'a>(ops: &'a [&'a str]) -> GrantSpec<'a> {
    GrantSpec {
        grantee_principal: "uid:1000",
        operations: ops,
        ..GrantSpec::default()
    }
}

/// An encryption context.
type Context = &'static [(&'static str, &'static str)];

const CONSTRAINT: Context = &[("Department", "IT"), ("Project", "Alpha")];

/// Request contexts against CONSTRAINT: (what, context, Equals holds,
/// Subset holds).
const CONTEXTS: &[(&str, Context, bool, bool)] = &[
    (
        "exact",
        &[("Department", "IT"), ("Project", "Alpha")],
        true,
        true,
    ),
    (
        "other order",
        &[("Project", "Alpha"), ("Department", "IT")],
        true,
        true,
    ),
    (
        "keys in other cases",
        &[("department", "IT"), ("PROJECT", "Alpha")],
        true,
        true,
    ),
    (
        "a value in another case",
        &[("Department", "it"), ("Project", "Alpha")],
        false,
        false,
    ),
    (
        "another value",
        &[("Department", "IT"), ("Project", "Beta")],
        false,
        false,
    ),
    (
        "an extra key",
        &[
            ("Department", "IT"),
            ("Project", "Alpha"),
            ("Purpose", "Test"),
        ],
        false,
        true,
    ),
    ("a missing key", &[("Department", "IT")], false, false),
    (
        "a missing key and an extra one",
        &[("Department", "IT"), ("Purpose", "Alpha")],
        false,
        false,
    ),
    ("empty", &[], false, false),
    (
        "a key twice in two cases, same value",
        &[
            ("Department", "IT"),
            ("department", "IT"),
            ("Project", "Alpha"),
        ],
        false,
        true,
    ),
    (
        "a key twice in two cases, two values",
        &[
            ("Department", "IT"),
            ("department", "HR"),
            ("Project", "Alpha"),
        ],
        false,
        false,
    ),
    (
        "a value with the key's case",
        &[("Department", "It"), ("Project", "alpha")],
        false,
        false,
    ),
];

/// Every grant operation, for every grantee kind and caller, with each
/// kind of constraint (or none) against every context.
#[test]
fn every_operation_grantee_and_constraint() {
    let mut checked = 0;
    for op in GrantOperation::ALL {
        if !op.supported_by_symmetric_key() {
            let names = [op.name()];
            let e = refuse(&spec(&names));
            assert_eq!(e.kind(), GrantErrorKind::UnsupportedOperation, "{op}");
            assert_eq!(e.exception_name(), "ValidationException");
            assert!(
                e.reason().starts_with(&format!(
                    "Operations[0]: {op} is not supported by kmsd's symmetric encryption keys"
                )),
                "{e}"
            );
            continue;
        }
        let action = op.action().expect("a supported operation is an action");
        for constraint in [
            None,
            Some(GrantConstraintType::EncryptionContextEquals),
            Some(GrantConstraintType::EncryptionContextSubset),
        ] {
            // A constraint needs an operation with a context, and
            // CreateGrant needs company: add Decrypt or DescribeKey.
            let mut names = vec![op.name()];
            if constraint.is_some() && !op.takes_encryption_context() {
                names.push("Decrypt");
            } else if op == GrantOperation::CreateGrant {
                names.push("DescribeKey");
            }
            for (grantee, who) in GRANTEES {
                let g = compile(&GrantSpec {
                    grantee_principal: grantee,
                    operations: &names,
                    encryption_context_equals: (constraint
                        == Some(GrantConstraintType::EncryptionContextEquals))
                    .then_some(CONSTRAINT),
                    encryption_context_subset: (constraint
                        == Some(GrantConstraintType::EncryptionContextSubset))
                    .then_some(CONSTRAINT),
                    ..GrantSpec::default()
                });
                assert_eq!(g.constraint_type(), constraint);
                for caller in CALLERS {
                    let is_grantee = who.contains(caller);
                    assert_eq!(g.is_grantee(caller), is_grantee, "{grantee} {caller:?}");
                    for (what, context, equals, subset) in CONTEXTS {
                        let holds = match constraint {
                            _ if !op.takes_encryption_context() => true,
                            None => true,
                            Some(GrantConstraintType::EncryptionContextEquals) => *equals,
                            Some(GrantConstraintType::EncryptionContextSubset) => *subset,
                        };
                        let req = Request {
                            encryption_context: context,
                            ..Request::new(*caller, action, ARN)
                        };
                        assert_eq!(
                            g.allows(&req),
                            is_grantee && holds,
                            "{op} for {grantee}, caller {}, {constraint:?}, context {what}",
                            caller.uid
                        );
                        checked += 1;
                    }
                }
            }
        }
    }
    // 9 operations x 3 constraints x 6 grantees x 3 callers x 12 contexts.
    assert_eq!(checked, 9 * 3 * 6 * 3 * 12);
}

/// A grant allows its operations and nothing else, whatever the grantee.
#[test]
fn only_the_grant_operations() {
    for op in GrantOperationSet::SYMMETRIC_KEY.iter() {
        let mut names = vec![op.name()];
        if op == GrantOperation::CreateGrant {
            names.push("RetireGrant");
        }
        let g = compile(&spec(&names));
        for action in Action::ALL {
            let want =
                GrantOperation::from_action(*action).is_some_and(|o| names.contains(&o.name()));
            assert_eq!(
                g.allows(&Request::new(ALICE, *action, ARN)),
                want,
                "{names:?} for {action:?}"
            );
        }
    }
    // Every operation at once: still no other action (GenerateRandom,
    // PutKeyPolicy, RevokeGrant, ListGrants...).
    let all: Vec<&str> = GrantOperationSet::SYMMETRIC_KEY
        .iter()
        .map(GrantOperation::name)
        .collect();
    let g = compile(&spec(&all));
    assert_eq!(g.operations(), GrantOperationSet::SYMMETRIC_KEY);
    for action in Action::ALL {
        assert_eq!(
            g.allows(&Request::new(ALICE, *action, ARN)),
            GrantOperation::from_action(*action).is_some(),
            "{action:?}"
        );
    }
}

#[test]
fn retiring_principal() {
    let ops = ["Decrypt"];
    let g = compile(&GrantSpec {
        retiring_principal: Some("unit:other.service"),
        ..spec(&ops)
    });
    assert!(g.is_retiring_principal(&BOB));
    assert!(!g.is_retiring_principal(&ALICE));
    assert_eq!(g.retiring_principal(), Some("unit:other.service"));
    let none = compile(&spec(&ops));
    assert!(!none.is_retiring_principal(&ALICE));
    assert!(!none.is_retiring_principal(&BOB));
    assert_eq!(none.retiring_principal(), None);
    // The grantee may retire a grant only when it allows RetireGrant.
    assert!(!none.allows(&Request::new(ALICE, Action::RetireGrant, ARN)));
    let retire = compile(&spec(&["Decrypt", "RetireGrant"]));
    assert!(retire.allows(&Request::new(ALICE, Action::RetireGrant, ARN)));
    let by_name = compile(&GrantSpec {
        retiring_principal: Some("user:alice"),
        ..spec(&ops)
    });
    assert!(by_name.is_retiring_principal(&ALICE));
}

#[test]
fn accepted_shapes_and_accessors() {
    let pairs: Vec<(String, String)> = (0..MAX_CONSTRAINT_PAIRS)
        .map(|i| (format!("k{i}"), "v".to_string()))
        .collect();
    let borrowed: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let name = "n".repeat(256);
    let grantee = format!("cgroup:/{}", "a".repeat(248));
    assert_eq!(grantee.len(), 256);
    let ops = ["ReEncryptTo", "Decrypt", "Decrypt", "DescribeKey"];
    let g = compile(&GrantSpec {
        grantee_principal: &grantee,
        retiring_principal: Some("uid:0"),
        operations: &ops,
        encryption_context_subset: Some(&borrowed),
        name: Some(&name),
        ..GrantSpec::default()
    });
    assert_eq!(g.grantee_principal(), grantee);
    assert_eq!(g.name(), Some(name.as_str()));
    assert_eq!(
        g.operations(),
        GrantOperationSet::of(&[
            GrantOperation::Decrypt,
            GrantOperation::ReEncryptTo,
            GrantOperation::DescribeKey
        ])
    );
    assert_eq!(g.constraint_pairs().count(), MAX_CONSTRAINT_PAIRS);
    // At the byte limit exactly: 4 + 1 + value.
    let value = "v".repeat(MAX_CONSTRAINT_BYTES - 5);
    let at_limit = [("k", value.as_str())];
    let g = compile(&GrantSpec {
        encryption_context_equals: Some(&at_limit),
        ..spec(&["Encrypt"])
    });
    assert_eq!(
        g.constraint_type(),
        Some(GrantConstraintType::EncryptionContextEquals)
    );
    // Pairs come back as given, sorted by key; names with every allowed
    // character; every principal character.
    let g = compile(&GrantSpec {
        encryption_context_subset: Some(&[("b", "2"), ("A", "1")]),
        name: Some("a-Z_0:9/x"),
        ..spec(&["Encrypt"])
    });
    assert_eq!(
        g.constraint_pairs().collect::<Vec<_>>(),
        [("A", "1"), ("b", "2")]
    );
    compile(&GrantSpec {
        grantee_principal: "unit:a_b-c.d@e.service",
        ..spec(&["Encrypt"])
    });
    // An empty value is a value.
    compile(&GrantSpec {
        encryption_context_subset: Some(&[("k", "")]),
        ..spec(&["Encrypt"])
    });
}

/// Every refusal, with its kind and reason.
#[test]
fn refusals() {
    use GrantErrorKind::{InvalidConstraints, InvalidPrincipal, Malformed, UnsupportedOperation};
    let long_principal = format!("uid:{}", "1".repeat(253));
    let long_name = "n".repeat(257);
    let many: Vec<(String, String)> = (0..=MAX_CONSTRAINT_PAIRS)
        .map(|i| (format!("k{i}"), "v".to_string()))
        .collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let big = "v".repeat(MAX_CONSTRAINT_BYTES - 4);
    let big = [("k", big.as_str())];
    let one = [("Department", "IT")];
    let dec = ["Decrypt"];
    let grantee = |g| GrantSpec {
        grantee_principal: g,
        ..spec(&dec)
    };
    let retiring = |r| GrantSpec {
        retiring_principal: Some(r),
        ..spec(&dec)
    };
    let named = |n| GrantSpec {
        name: Some(n),
        ..spec(&dec)
    };
    let subset = |pairs| GrantSpec {
        encryption_context_subset: Some(pairs),
        ..spec(&dec)
    };
    let cases: Vec<(GrantSpec<'_>, GrantErrorKind, String)> =
        vec![
        (grantee(""), Malformed, "GranteePrincipal: must not be empty".into()),
        (
            grantee(&long_principal),
            Malformed,
            format!(
                "GranteePrincipal: \"uid:{}\"... is longer than 256 characters",
                "1".repeat(60)
            ),
        ),
        (
            grantee("uid 1000"),
            Malformed,
            r#"GranteePrincipal: "uid 1000" has a character outside [A-Za-z0-9_+=,.@:/-]"#.into(),
        ),
        (
            grantee("unit:é.service"),
            Malformed,
            r#"GranteePrincipal: "unit:é.service" has a character outside [A-Za-z0-9_+=,.@:/-]"#
                .into(),
        ),
        (
            grantee("*"),
            InvalidPrincipal,
            "GranteePrincipal: \"*\" is everyone: a grant names one user, service or cgroup \
             (uid:N, user:NAME, unit:NAME.service or cgroup:PATH)"
                .into(),
        ),
        (
            grantee("gid:10"),
            InvalidPrincipal,
            "GranteePrincipal: \"gid:10\" is a group, and a group cannot be a grant's principal: \
             a grant names one user, service or cgroup \
             (uid:N, user:NAME, unit:NAME.service or cgroup:PATH)"
                .into(),
        ),
        (
            grantee("group:kmsadmin"),
            InvalidPrincipal,
            "GranteePrincipal: \"group:kmsadmin\" is a group, and a group cannot be a grant's \
             principal: a grant names one user, service or cgroup \
             (uid:N, user:NAME, unit:NAME.service or cgroup:PATH)"
                .into(),
        ),
        (
            grantee("user:bob"),
            InvalidPrincipal,
            r#"GranteePrincipal: "user:bob" names no user"#.into(),
        ),
        (
            grantee("uid:-1"),
            InvalidPrincipal,
            r#"GranteePrincipal: "uid:-1" is not a uid (decimal, 0..=4294967295)"#.into(),
        ),
        (
            grantee("uid:4294967296"),
            InvalidPrincipal,
            r#"GranteePrincipal: "uid:4294967296" is not a uid (decimal, 0..=4294967295)"#.into(),
        ),
        (
            grantee("alice"),
            InvalidPrincipal,
            "GranteePrincipal: \"alice\" is not a principal (uid:N, gid:N, user:NAME, \
             group:NAME, unit:NAME.service, cgroup:PATH or *)"
                .into(),
        ),
        (
            grantee("arn:aws:iam::111122223333:user/x"),
            InvalidPrincipal,
            "GranteePrincipal: \"arn:aws:iam::111122223333:user/x\" is not a principal \
             (uid:N, gid:N, user:NAME, group:NAME, unit:NAME.service, cgroup:PATH or *)"
                .into(),
        ),
        (
            grantee("unit:app"),
            InvalidPrincipal,
            r#"GranteePrincipal: "unit:app" is not a systemd service unit (unit:NAME.service)"#
                .into(),
        ),
        (
            grantee("cgroup:a/b"),
            InvalidPrincipal,
            r#"GranteePrincipal: "cgroup:a/b" is not an absolute cgroup path (cgroup:/a/b)"#.into(),
        ),
        (
            grantee("cgroup:/a/../b"),
            InvalidPrincipal,
            r#"GranteePrincipal: "cgroup:/a/../b" is not an absolute cgroup path (cgroup:/a/b)"#
                .into(),
        ),
        (
            retiring(""),
            Malformed,
            "RetiringPrincipal: must not be empty".into(),
        ),
        (
            retiring("gid:0"),
            InvalidPrincipal,
            "RetiringPrincipal: \"gid:0\" is a group, and a group cannot be a grant's principal: \
             a grant names one user, service or cgroup \
             (uid:N, user:NAME, unit:NAME.service or cgroup:PATH)"
                .into(),
        ),
        (
            retiring("user:nobody"),
            InvalidPrincipal,
            r#"RetiringPrincipal: "user:nobody" names no user"#.into(),
        ),
        (
            spec(&[]),
            Malformed,
            "Operations: lists no operation (kmsd's keys support Decrypt, Encrypt, \
             GenerateDataKey, GenerateDataKeyWithoutPlaintext, ReEncryptFrom, ReEncryptTo, \
             CreateGrant, RetireGrant, DescribeKey)"
                .into(),
        ),
        (
            spec(&["Decrypt", "decrypt"]),
            Malformed,
            r#"Operations[1]: "decrypt" is not a grant operation"#.into(),
        ),
        (
            spec(&["kms:Decrypt"]),
            Malformed,
            r#"Operations[0]: "kms:Decrypt" is not a grant operation"#.into(),
        ),
        (
            spec(&["GenerateRandom"]),
            Malformed,
            r#"Operations[0]: "GenerateRandom" is not a grant operation"#.into(),
        ),
        (
            spec(&["Decrypt", "Sign"]),
            UnsupportedOperation,
            "Operations[1]: Sign is not supported by kmsd's symmetric encryption keys \
             (they support Decrypt, Encrypt, GenerateDataKey, GenerateDataKeyWithoutPlaintext, \
             ReEncryptFrom, ReEncryptTo, CreateGrant, RetireGrant, DescribeKey)"
                .into(),
        ),
        (
            spec(&["CreateGrant"]),
            Malformed,
            "Operations: Grants must not contain only the CreateGrant operation".into(),
        ),
        (
            spec(&["CreateGrant", "CreateGrant"]),
            Malformed,
            "Operations: Grants must not contain only the CreateGrant operation".into(),
        ),
        (named(""), Malformed, "Name: must not be empty".into()),
        (
            named("my grant"),
            Malformed,
            r#"Name: "my grant" has a character outside [a-zA-Z0-9:/_-]"#.into(),
        ),
        (
            named("a.b"),
            Malformed,
            r#"Name: "a.b" has a character outside [a-zA-Z0-9:/_-]"#.into(),
        ),
        (
            named(&long_name),
            Malformed,
            format!(
                "Name: \"{}\"... is longer than 256 characters",
                "n".repeat(64)
            ),
        ),
        (
            GrantSpec {
                encryption_context_equals: Some(&one),
                ..subset(&one)
            },
            InvalidConstraints,
            "Constraints: More than one constraint supplied \
             (EncryptionContextEquals and EncryptionContextSubset)"
                .into(),
        ),
        (
            GrantSpec {
                encryption_context_equals: Some(&[]),
                ..spec(&dec)
            },
            InvalidConstraints,
            "Constraints.EncryptionContextEquals: lists no encryption context pair".into(),
        ),
        (
            subset(&many[..]),
            InvalidConstraints,
            "Constraints.EncryptionContextSubset: has 65 pairs, more than 64".into(),
        ),
        (
            subset(&big),
            InvalidConstraints,
            "Constraints.EncryptionContextSubset: is 8193 bytes encoded, more than 8192".into(),
        ),
        (
            subset(&[("a", "1"), ("", "2")]),
            InvalidConstraints,
            "Constraints.EncryptionContextSubset: has an empty key".into(),
        ),
        (
            subset(&[("Team", "a"), ("env", "b"), ("TEAM", "a")]),
            InvalidConstraints,
            "Constraints.EncryptionContextSubset: keys \"Team\" and \"TEAM\" are the same key \
             (constraint keys are not case-sensitive)"
                .into(),
        ),
        (
            subset(&[("k", "a"), ("k", "a")]),
            InvalidConstraints,
            "Constraints.EncryptionContextSubset: keys \"k\" and \"k\" are the same key \
             (constraint keys are not case-sensitive)"
                .into(),
        ),
        (
            GrantSpec {
                operations: &["DescribeKey", "RetireGrant", "CreateGrant"],
                ..subset(&one)
            },
            InvalidConstraints,
            "Constraints: apply only to operations that take an encryption context \
             (Decrypt, Encrypt, GenerateDataKey, GenerateDataKeyWithoutPlaintext, \
             ReEncryptFrom, ReEncryptTo), and the grant allows none of them"
                .into(),
        ),
    ];
    for (spec, kind, reason) in &cases {
        let e = refuse(spec);
        assert_eq!((e.kind(), e.reason()), (*kind, reason.as_str()), "{spec:?}");
        assert_eq!(e.to_string(), *reason);
        assert_eq!(e.exception_name(), "ValidationException");
    }
}

/// The order of the checks: the grantee first, then the retiring
/// principal, the operations, the name, the constraints.
#[test]
fn first_refusal_wins() {
    let all_bad = GrantSpec {
        grantee_principal: "gid:1",
        retiring_principal: Some("*"),
        operations: &["Sign"],
        encryption_context_equals: Some(&[]),
        encryption_context_subset: Some(&[]),
        name: Some(""),
    };
    let mut s = all_bad;
    let mut fields = Vec::new();
    for fix in 0..5 {
        fields.push(refuse(&s).reason().split(':').next().unwrap().to_string());
        match fix {
            0 => s.grantee_principal = "uid:1000",
            1 => s.retiring_principal = None,
            2 => s.operations = &["Decrypt"],
            3 => s.name = None,
            _ => s.encryption_context_equals = None,
        }
    }
    assert_eq!(
        fields,
        [
            "GranteePrincipal",
            "RetiringPrincipal",
            "Operations[0]",
            "Name",
            "Constraints"
        ]
    );
}

#[test]
fn permits_child() {
    const IT: Context = &[("Department", "IT")];
    const IT_LOWER_KEY: Context = &[("department", "IT")];
    const IT_UPPER_KEY: Context = &[("DEPARTMENT", "IT")];
    const IT_LOWER_VALUE: Context = &[("Department", "it")];
    const IT_ALPHA: Context = &[("Department", "IT"), ("Project", "Alpha")];
    const ALPHA: Context = &[("Project", "Alpha")];
    type C = Option<(GrantConstraintType, Context)>;
    use GrantConstraintType::{EncryptionContextEquals as Equals, EncryptionContextSubset as Sub};
    let grant = |ops: &[&str], c: C| {
        compile(&GrantSpec {
            grantee_principal: "uid:1000",
            operations: ops,
            encryption_context_equals: c.filter(|c| c.0 == Equals).map(|c| c.1),
            encryption_context_subset: c.filter(|c| c.0 == Sub).map(|c| c.1),
            ..GrantSpec::default()
        })
    };
    let parent_ops = ["Decrypt", "Encrypt", "CreateGrant", "DescribeKey"];
    let parents = [
        ("no constraint", grant(&parent_ops, None)),
        ("Subset IT", grant(&parent_ops, Some((Sub, IT)))),
        ("Equals IT", grant(&parent_ops, Some((Equals, IT)))),
        (
            "no CreateGrant",
            grant(&["Decrypt", "Encrypt", "DescribeKey"], None),
        ),
    ];
    // (child operations, child constraint, permitted by each parent)
    let cases: &[(&[&str], C, [bool; 4])] = &[
        (&["Decrypt"], None, [true, false, false, false]),
        (&parent_ops, None, [true, false, false, false]),
        (&["Decrypt", "GenerateDataKey"], None, [false; 4]),
        (&["Decrypt", "GenerateDataKey"], Some((Sub, IT)), [false; 4]),
        (&["Decrypt", "RetireGrant"], None, [false; 4]),
        (&["Decrypt"], Some((Sub, IT)), [true, true, false, false]),
        (
            &["Decrypt"],
            Some((Sub, IT_LOWER_KEY)),
            [true, true, false, false],
        ),
        (
            &["Decrypt"],
            Some((Sub, IT_LOWER_VALUE)),
            [true, false, false, false],
        ),
        (
            &["Decrypt"],
            Some((Sub, IT_ALPHA)),
            [true, true, false, false],
        ),
        (
            &["Decrypt"],
            Some((Sub, ALPHA)),
            [true, false, false, false],
        ),
        (&["Decrypt"], Some((Equals, IT)), [true, true, true, false]),
        (
            &["Decrypt"],
            Some((Equals, IT_UPPER_KEY)),
            [true, true, true, false],
        ),
        (
            &["Decrypt"],
            Some((Equals, IT_LOWER_VALUE)),
            [true, false, false, false],
        ),
        (
            &["Decrypt"],
            Some((Equals, IT_ALPHA)),
            [true, true, false, false],
        ),
        (
            &["Decrypt"],
            Some((Equals, ALPHA)),
            [true, false, false, false],
        ),
        (
            &["Decrypt", "CreateGrant"],
            Some((Sub, IT_ALPHA)),
            [true, true, false, false],
        ),
        // No operation with a context: no constraint to carry.
        (&["DescribeKey"], None, [true, true, true, false]),
        (
            &["DescribeKey", "CreateGrant"],
            None,
            [true, true, true, false],
        ),
    ];
    for (ops, c, want) in cases {
        let child = grant(ops, *c);
        for ((what, parent), want) in parents.iter().zip(want) {
            assert_eq!(
                parent.permits_child(&child),
                *want,
                "{what} parent, child {ops:?} {c:?}"
            );
        }
    }
    // A grant can always recreate itself when it allows CreateGrant.
    for (_, p) in &parents[..3] {
        assert!(p.permits_child(p));
    }
}

#[test]
fn same_parameters() {
    let pairs = [("a", "1"), ("b", "2")];
    let base = GrantSpec {
        grantee_principal: "uid:1000",
        retiring_principal: Some("uid:0"),
        operations: &["Decrypt", "Encrypt"],
        encryption_context_subset: Some(&pairs),
        name: Some("n1"),
        ..GrantSpec::default()
    };
    let original = compile(&base);
    let cases: Vec<(&str, GrantSpec<'_>, bool)> = vec![
        ("identical", base, true),
        (
            "operations in another order, one twice",
            GrantSpec {
                operations: &["Encrypt", "Decrypt", "Encrypt"],
                ..base
            },
            true,
        ),
        (
            "pairs in another order",
            GrantSpec {
                encryption_context_subset: Some(&[("b", "2"), ("a", "1")]),
                ..base
            },
            true,
        ),
        ("no name", GrantSpec { name: None, ..base }, false),
        (
            "another name",
            GrantSpec {
                name: Some("n2"),
                ..base
            },
            false,
        ),
        (
            "the same uid, written otherwise",
            GrantSpec {
                grantee_principal: "user:alice",
                ..base
            },
            false,
        ),
        (
            "no retiring principal",
            GrantSpec {
                retiring_principal: None,
                ..base
            },
            false,
        ),
        (
            "another retiring principal",
            GrantSpec {
                retiring_principal: Some("uid:1"),
                ..base
            },
            false,
        ),
        (
            "other operations",
            GrantSpec {
                operations: &["Decrypt"],
                ..base
            },
            false,
        ),
        (
            "Equals instead of Subset",
            GrantSpec {
                encryption_context_subset: None,
                encryption_context_equals: Some(&pairs),
                ..base
            },
            false,
        ),
        (
            "no constraint",
            GrantSpec {
                encryption_context_subset: None,
                ..base
            },
            false,
        ),
        (
            "a key in another case",
            GrantSpec {
                encryption_context_subset: Some(&[("A", "1"), ("b", "2")]),
                ..base
            },
            false,
        ),
        (
            "another value",
            GrantSpec {
                encryption_context_subset: Some(&[("a", "1"), ("b", "3")]),
                ..base
            },
            false,
        ),
    ];
    for (what, s, want) in cases {
        let g = compile(&s);
        assert_eq!(original.same_parameters(&g), want, "{what}");
        assert_eq!(g.same_parameters(&original), want, "{what}, reversed");
    }
    // Without a name, not even a grant is its own retry.
    let unnamed = compile(&GrantSpec { name: None, ..base });
    assert!(!unnamed.same_parameters(&unnamed));
    assert!(original.same_parameters(&original));
}

/// `kms:GranteePrincipal`, `kms:RetiringPrincipal`,
/// `kms:GrantConstraintType` and the constraint as the CreateGrant's
/// encryption context, through `GrantSpec::policy_request`.
#[test]
fn grant_condition_keys() {
    let policy = Policy::parse(
        r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:CreateGrant","Resource":"*",
            "Condition":{
                "StringEquals":{"kms:GranteePrincipal":"uid:1000","kms:EncryptionContext:department":"IT"},
                "StringLike":{"kms:RetiringPrincipal":"uid:*"},
                "StringEqualsIfExists":{"kms:GrantConstraintType":"EncryptionContextSubset"},
                "ForAllValues:StringEquals":{"kms:GrantOperations":["Decrypt","Encrypt"]}
            }}]}"#,
        &Names,
    )
    .unwrap();
    let it = [("Department", "IT")];
    let base = GrantSpec {
        grantee_principal: "uid:1000",
        retiring_principal: Some("uid:0"),
        operations: &["Decrypt"],
        encryption_context_subset: Some(&it),
        ..GrantSpec::default()
    };
    let req = base.policy_request(BOB, ARN);
    assert_eq!(req.action, Action::CreateGrant);
    assert_eq!(req.grantee_principal, Some("uid:1000"));
    assert_eq!(req.retiring_principal, Some("uid:0"));
    assert_eq!(
        req.grant_constraint_type,
        Some(GrantConstraintType::EncryptionContextSubset)
    );
    assert_eq!(req.encryption_context, &it);
    assert_eq!(req.grant_operations, &["Decrypt"]);
    let cases: Vec<(&str, GrantSpec<'_>, Decision)> = vec![
        ("all hold", base, Decision::Allow),
        (
            "another grantee",
            GrantSpec {
                grantee_principal: "uid:1001",
                ..base
            },
            Decision::ImplicitDeny,
        ),
        (
            "the grantee written by name",
            GrantSpec {
                grantee_principal: "user:alice",
                ..base
            },
            Decision::ImplicitDeny,
        ),
        (
            "a retiring unit",
            GrantSpec {
                retiring_principal: Some("unit:x.service"),
                ..base
            },
            Decision::ImplicitDeny,
        ),
        (
            "no retiring principal",
            GrantSpec {
                retiring_principal: None,
                ..base
            },
            Decision::ImplicitDeny,
        ),
        (
            "Equals",
            GrantSpec {
                encryption_context_subset: None,
                encryption_context_equals: Some(&it),
                ..base
            },
            Decision::ImplicitDeny,
        ),
        (
            "another context",
            GrantSpec {
                encryption_context_subset: Some(&[("Department", "HR")]),
                ..base
            },
            Decision::ImplicitDeny,
        ),
        (
            "another operation",
            GrantSpec {
                operations: &["Decrypt", "DescribeKey"],
                ..base
            },
            Decision::ImplicitDeny,
        ),
    ];
    for (what, s, want) in cases {
        assert_eq!(policy.evaluate(&s.policy_request(BOB, ARN)), want, "{what}");
    }
    // Without a constraint the type is absent (IfExists holds) and so is
    // the context (the context condition does not).
    let bare = GrantSpec {
        encryption_context_subset: None,
        ..base
    }
    .policy_request(BOB, ARN);
    assert_eq!(bare.grant_constraint_type, None);
    assert!(bare.encryption_context.is_empty());
    let null = Policy::parse(
        r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:CreateGrant","Resource":"*",
            "Condition":{"Null":{"kms:GrantConstraintType":"true","kms:RetiringPrincipal":"false"}}}]}"#,
        &Names,
    )
    .unwrap();
    assert_eq!(null.evaluate(&bare), Decision::Allow);
    assert_eq!(
        null.evaluate(&base.policy_request(BOB, ARN)),
        Decision::ImplicitDeny
    );
    // Other requests have none of them.
    let other = Request::new(BOB, Action::CreateGrant, ARN);
    assert_eq!(
        (
            other.grantee_principal,
            other.retiring_principal,
            other.grant_constraint_type
        ),
        (None, None, None)
    );
    // Both constraints (refused by compile): neither reaches the policy.
    let both = GrantSpec {
        encryption_context_equals: Some(&it),
        ..base
    }
    .policy_request(BOB, ARN);
    assert_eq!(both.grant_constraint_type, None);
    assert!(both.encryption_context.is_empty());
}

/// `kms:GrantIsForAWSResource` names AWS services, which kmsd has none of:
/// refused like any other unsupported key.
#[test]
fn grant_is_for_aws_resource_is_refused() {
    let e = Policy::parse(
        r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:CreateGrant","Resource":"*",
            "Condition":{"Bool":{"kms:GrantIsForAWSResource":"true"}}}]}"#,
        &Names,
    )
    .unwrap_err();
    assert_eq!(
        e.reason(),
        "Statement[0].Condition.Bool: unsupported condition key \"kms:GrantIsForAWSResource\""
    );
    // The grant keys are single-valued strings.
    let e = Policy::parse(
        r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:CreateGrant","Resource":"*",
            "Condition":{"ForAnyValue:StringEquals":{"kms:GranteePrincipal":"uid:1"}}}]}"#,
        &Names,
    )
    .unwrap_err();
    assert!(
        e.reason()
            .ends_with("ForAnyValue:/ForAllValues: apply to multi-valued keys only"),
        "{e}"
    );
    let e = Policy::parse(
        r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:CreateGrant","Resource":"*",
            "Condition":{"NumericEquals":{"kms:GrantConstraintType":"1"}}}]}"#,
        &Names,
    )
    .unwrap_err();
    assert!(e.reason().contains("does not apply to this key"), "{e}");
}
