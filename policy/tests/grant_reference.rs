//! `CompiledGrant::allows` against a reference written here with the
//! simplest code that states the rules (owned maps keyed by the lower-case
//! key, no precomputation), on random grants and requests; and
//! `permits_child` checked for what it promises: a permitted child allows
//! no request its parent refuses.

use std::collections::BTreeMap;

use kms_policy::{Action, Caller, CompiledGrant, GrantSpec, NameResolver, Request};
use proptest::prelude::*;

const ARN: &str = "arn:aws:kms:us-east-1:000000000000:key/aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa";

struct Names;

impl NameResolver for Names {
    fn user(&self, name: &str) -> Option<u32> {
        (name == "alice").then_some(1000)
    }
    fn group(&self, _: &str) -> Option<u32> {
        None
    }
}

const GRANTEES: &[&str] = &[
    "uid:1",
    "uid:1000",
    "user:alice",
    "unit:a.service",
    "cgroup:/a",
    "cgroup:/",
];
const OPERATIONS: &[&str] = &[
    "Decrypt",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "ReEncryptFrom",
    "ReEncryptTo",
    "CreateGrant",
    "RetireGrant",
    "DescribeKey",
];
const WITH_CONTEXT: &[&str] = &[
    "Decrypt",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "ReEncryptFrom",
    "ReEncryptTo",
];
/// Keys that fold together and apart, one outside ASCII.
const KEYS: &[&str] = &[
    "team", "Team", "TEAM", "env", "Env", "x", "Équipe", "équipe",
];
const VALUES: &[&str] = &["a", "A", "b", ""];

#[derive(Clone, Debug)]
struct Grant {
    grantee: &'static str,
    ops: Vec<&'static str>,
    /// (equals?, pairs): no two keys the same in lower case.
    constraint: Option<(bool, Vec<(&'static str, &'static str)>)>,
}

#[derive(Clone, Debug)]
struct Req {
    uid: u32,
    unit: Option<&'static str>,
    cgroup: Option<&'static str>,
    action: Action,
    context: Vec<(&'static str, &'static str)>,
}

fn pick<T: Clone + std::fmt::Debug + 'static>(xs: &'static [T]) -> impl Strategy<Value = T> {
    proptest::sample::select(xs)
}

fn pairs(min: usize) -> impl Strategy<Value = Vec<(&'static str, &'static str)>> {
    proptest::collection::vec((pick(KEYS), pick(VALUES)), min..5)
}

fn grant() -> impl Strategy<Value = Grant> {
    (
        pick(GRANTEES),
        proptest::collection::vec(pick(OPERATIONS), 1..5),
        proptest::option::of((any::<bool>(), pairs(1))),
    )
        .prop_map(|(grantee, mut ops, constraint)| {
            // Keep the grant valid: a constraint needs an operation with a
            // context, CreateGrant company, a constraint distinct keys.
            let constraint = constraint.map(|(eq, ps)| {
                let mut seen: Vec<String> = Vec::new();
                let ps: Vec<_> = ps
                    .into_iter()
                    .filter(|(k, _)| {
                        let lower = k.to_lowercase();
                        let new = !seen.contains(&lower);
                        seen.push(lower);
                        new
                    })
                    .collect();
                (eq, ps)
            });
            if constraint.is_some() && !ops.iter().any(|o| WITH_CONTEXT.contains(o)) {
                ops.push("Decrypt");
            }
            if ops.iter().all(|o| *o == "CreateGrant") {
                ops.push("DescribeKey");
            }
            Grant {
                grantee,
                ops,
                constraint,
            }
        })
}

fn req() -> impl Strategy<Value = Req> {
    (
        pick(&[1u32, 2, 1000]),
        proptest::option::of(pick(&["a.service", "b.service"])),
        proptest::option::of(pick(&["/a", "/a/b", "/ab", "/"])),
        pick(Action::ALL),
        pairs(0),
    )
        .prop_map(|(uid, unit, cgroup, action, context)| Req {
            uid,
            unit,
            cgroup,
            action,
            context,
        })
}

/// How to aim a request at a grant, so that the constraint is tested
/// often: one of the grant's operations, its grantee, and a context made
/// from the constraint's pairs (each key in one of its cases or dropped,
/// some values replaced) plus extra pairs.
#[derive(Clone, Debug)]
struct Aim {
    op: usize,
    as_grantee: bool,
    edits: Vec<(usize, Option<&'static str>, bool)>,
    extra: Vec<(&'static str, &'static str)>,
}

fn aim() -> impl Strategy<Value = Aim> {
    (
        any::<usize>(),
        proptest::bool::weighted(0.8),
        proptest::collection::vec(
            (
                any::<usize>(),
                proptest::option::weighted(0.2, pick(VALUES)),
                proptest::bool::weighted(0.15),
            ),
            5,
        ),
        proptest::collection::vec((pick(KEYS), pick(VALUES)), 0..2),
    )
        .prop_map(|(op, as_grantee, edits, extra)| Aim {
            op,
            as_grantee,
            edits,
            extra,
        })
}

fn aimed(g: &Grant, base: &Req, a: &Aim) -> Req {
    let op = g.ops[a.op % g.ops.len()];
    let action = Action::from_name(&format!("kms:{op}")).unwrap();
    let mut r = Req {
        action,
        ..base.clone()
    };
    if a.as_grantee {
        let (kind, rest) = g.grantee.split_once(':').unwrap();
        match kind {
            "uid" => r.uid = rest.parse().unwrap(),
            "user" => r.uid = 1000,
            "unit" => r.unit = Some("a.service"),
            _ => r.cgroup = Some("/a/b"),
        }
    }
    let mut context = Vec::new();
    if let Some((_, pairs)) = &g.constraint {
        for ((k, v), (variant, value, drop)) in pairs.iter().zip(&a.edits) {
            if *drop {
                continue;
            }
            let cases: Vec<&'static str> = KEYS
                .iter()
                .copied()
                .filter(|x| x.to_lowercase() == k.to_lowercase())
                .collect();
            context.push((cases[variant % cases.len()], value.unwrap_or(v)));
        }
    }
    context.extend(&a.extra);
    r.context = context;
    r
}

fn compile(g: &Grant) -> CompiledGrant {
    let (equals, subset) = match &g.constraint {
        Some((true, ps)) => (Some(&ps[..]), None),
        Some((false, ps)) => (None, Some(&ps[..])),
        None => (None, None),
    };
    CompiledGrant::compile(
        &GrantSpec {
            grantee_principal: g.grantee,
            operations: &g.ops,
            encryption_context_equals: equals,
            encryption_context_subset: subset,
            ..GrantSpec::default()
        },
        &Names,
    )
    .unwrap_or_else(|e| panic!("{g:?}: {e}"))
}

fn request(r: &Req) -> Request<'_> {
    Request {
        encryption_context: &r.context,
        ..Request::new(
            Caller {
                uid: r.uid,
                gid: r.uid,
                supplementary_gids: &[],
                unit: r.unit,
                cgroup: r.cgroup,
            },
            r.action,
            ARN,
        )
    }
}

// ---- The reference. ----

fn grantee_ok(grantee: &str, r: &Req) -> bool {
    let (kind, rest) = grantee.split_once(':').unwrap();
    match kind {
        "uid" => r.uid.to_string() == rest,
        "user" => r.uid == 1000 && rest == "alice",
        "unit" => r.unit == Some(rest),
        "cgroup" => r
            .cgroup
            .is_some_and(|c| rest == "/" || c == rest || c.starts_with(&format!("{rest}/"))),
        _ => unreachable!(),
    }
}

/// The context as a map from lower-case key to every value given for it.
fn by_key(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<String>> {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in pairs {
        m.entry(k.to_lowercase()).or_default().push(v.to_string());
    }
    m
}

fn reference(g: &Grant, r: &Req) -> bool {
    let op = r.action.name().strip_prefix("kms:").unwrap();
    if !OPERATIONS.contains(&op) || !g.ops.contains(&op) || !grantee_ok(g.grantee, r) {
        return false;
    }
    let Some((equals, pairs)) = &g.constraint else {
        return true;
    };
    if !WITH_CONTEXT.contains(&op) {
        return true;
    }
    let got = by_key(&r.context);
    let want = by_key(pairs);
    if *equals {
        // Exactly the constraint's pairs: the same keys, each once, with
        // the same values.
        got == want
    } else {
        // Each constraint pair is there, and its key has no other value.
        want.iter()
            .all(|(k, v)| got.get(k).is_some_and(|vs| vs.iter().all(|x| *x == v[0])))
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    /// Random requests, and requests aimed at the grant.
    #[test]
    fn allows_agrees_with_reference(
        g in grant(),
        reqs in proptest::collection::vec((req(), aim()), 1..8),
    ) {
        let compiled = compile(&g);
        for (r, a) in &reqs {
            for r in [r.clone(), aimed(&g, r, a)] {
                prop_assert_eq!(
                    compiled.allows(&request(&r)),
                    reference(&g, &r),
                    "{:?} for {:?}", g, r
                );
            }
        }
    }

    /// Whatever a permitted child allows, its parent allows (for the same
    /// grantee). The child takes its operations from the parent's, so
    /// that a good share of the pairs are permitted (about 45% when this
    /// was written).
    #[test]
    fn permitted_children_are_no_wider(
        parent in grant(),
        child in grant(),
        reqs in proptest::collection::vec((req(), aim()), 1..16),
    ) {
        let mut parent = parent;
        if !parent.ops.contains(&"CreateGrant") {
            parent.ops.push("CreateGrant");
        }
        let mut ops: Vec<&str> = child.ops.iter().copied().filter(|o| parent.ops.contains(o)).collect();
        if ops.is_empty() {
            ops.push(parent.ops[0]);
        }
        let child = Grant { grantee: parent.grantee, ops, ..child };
        // The same repairs as grant()'s.
        let child = Grant {
            ops: {
                let mut ops = child.ops.clone();
                if child.constraint.is_some() && !ops.iter().any(|o| WITH_CONTEXT.contains(o)) {
                    ops.push("Decrypt");
                }
                if ops.iter().all(|o| *o == "CreateGrant") {
                    ops.push("DescribeKey");
                }
                ops
            },
            ..child
        };
        let (p, c) = (compile(&parent), compile(&child));
        if p.permits_child(&c) {
            for (r, a) in &reqs {
                for r in [aimed(&child, r, a), aimed(&parent, r, a)] {
                    let r = request(&r);
                    prop_assert!(
                        !c.allows(&r) || p.allows(&r),
                        "{:?} permits {:?}, which allows {:?}", parent, child, r
                    );
                }
            }
        }
    }
}
