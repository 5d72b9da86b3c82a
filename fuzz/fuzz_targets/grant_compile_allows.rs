//! Grants on arbitrary input: a CreateGrant's parameters are read from
//! the input's lines, compiled, and, when they compile, the grant decides
//! fixed and input-given requests (the same way twice, and never for a
//! caller that is not its grantee or an action it does not allow); one
//! that does not compile is refused with a ValidationException and a
//! reason, never a panic.
//!
//! Input lines: grantee, retiring principal (empty: none), operations
//! (comma-separated), constraint type (`E`quals, `S`ubset, `B`oth, other:
//! none), constraint pairs (`k=v` separated by `;`), name (empty: none),
//! then request contexts (`k=v;...`), one a line. A second grant, from
//! the same lines shifted by one, is checked as a child of the first.
#![no_main]

use kms_policy::{
    Action, Caller, CompiledGrant, GrantOperation, GrantSpec, NameResolver, Policy, Request,
};
use libfuzzer_sys::fuzz_target;

/// Knows `alice`, so that names reach both outcomes.
struct Names;

impl NameResolver for Names {
    fn user(&self, name: &str) -> Option<u32> {
        (name == "alice").then_some(1000)
    }
    fn group(&self, name: &str) -> Option<u32> {
        (name == "kmsadmin").then_some(500)
    }
}

const ARN: &str = "arn:aws:kms:us-east-1:000000000000:key/1234abcd-12ab-34cd-56ef-1234567890ab";

const CALLERS: [Caller<'static>; 2] = [
    Caller {
        uid: 1000,
        gid: 1000,
        supplementary_gids: &[500],
        unit: Some("app.service"),
        cgroup: Some("/system.slice/app.service"),
    },
    Caller {
        uid: 0,
        gid: 0,
        supplementary_gids: &[],
        unit: None,
        cgroup: None,
    },
];

/// `k=v;k=v` as pairs (a part without `=` is a key with an empty value).
fn pairs(line: &str) -> Vec<(&str, &str)> {
    if line.is_empty() {
        return Vec::new();
    }
    line.split(';')
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .collect()
}

struct Parsed<'a> {
    grantee: &'a str,
    retiring: Option<&'a str>,
    ops: Vec<&'a str>,
    kind: u8,
    pairs: Vec<(&'a str, &'a str)>,
    name: Option<&'a str>,
}

impl<'a> Parsed<'a> {
    fn new(lines: &[&'a str]) -> Parsed<'a> {
        let line = |i: usize| lines.get(i).copied().unwrap_or("");
        let nonempty = |s: &'a str| (!s.is_empty()).then_some(s);
        Parsed {
            grantee: line(0),
            retiring: nonempty(line(1)),
            ops: if line(2).is_empty() {
                Vec::new()
            } else {
                line(2).split(',').collect()
            },
            kind: line(3).bytes().next().unwrap_or(0),
            pairs: pairs(line(4)),
            name: nonempty(line(5)),
        }
    }

    fn spec(&self) -> GrantSpec<'_> {
        let (equals, subset) = match self.kind {
            b'E' => (Some(&self.pairs[..]), None),
            b'S' => (None, Some(&self.pairs[..])),
            b'B' => (Some(&self.pairs[..]), Some(&self.pairs[..])),
            _ => (None, None),
        };
        GrantSpec {
            grantee_principal: self.grantee,
            retiring_principal: self.retiring,
            operations: &self.ops,
            encryption_context_equals: equals,
            encryption_context_subset: subset,
            name: self.name,
        }
    }
}

fn compile(spec: &GrantSpec<'_>) -> Option<CompiledGrant> {
    match CompiledGrant::compile(spec, &Names) {
        Ok(g) => Some(g),
        Err(e) => {
            assert_eq!(e.exception_name(), "ValidationException");
            assert!(!e.reason().is_empty());
            // Quoted client text is bounded: no reason grows with the input.
            assert!(e.reason().len() < 1024, "{}", e.reason());
            None
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines: Vec<&str> = text.split('\n').collect();
    let parsed = Parsed::new(&lines);
    let spec = parsed.spec();
    // The key policy's view of the CreateGrant never panics either.
    let policy = Policy::parse(
        r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:CreateGrant","Resource":"*",
            "Condition":{"StringLike":{"kms:GranteePrincipal":"uid:*","kms:EncryptionContext:team":"*"},
            "StringEqualsIfExists":{"kms:GrantConstraintType":"EncryptionContextSubset"}}}]}"#,
        &Names,
    )
    .expect("the target's policy parses");
    let _ = policy.evaluate(&spec.policy_request(CALLERS[0], ARN));
    let Some(grant) = compile(&spec) else {
        return;
    };
    let mut contexts: Vec<Vec<(&str, &str)>> = lines.iter().skip(6).map(|l| pairs(l)).collect();
    contexts.push(parsed.pairs.clone());
    contexts.push(Vec::new());
    for caller in &CALLERS {
        for action in Action::ALL {
            for context in &contexts {
                let req = Request {
                    encryption_context: context,
                    ..Request::new(*caller, *action, ARN)
                };
                let allowed = grant.allows(&req);
                assert_eq!(allowed, grant.allows(&req));
                if allowed {
                    assert!(grant.is_grantee(caller));
                    let op = GrantOperation::from_action(*action).expect("a grant operation");
                    assert!(grant.operations().contains(op));
                }
            }
        }
    }
    assert_eq!(
        grant.permits_child(&grant),
        grant.operations().contains(GrantOperation::CreateGrant)
    );
    assert_eq!(grant.same_parameters(&grant), grant.name().is_some());
    if let Some(child) = compile(&Parsed::new(lines.get(1..).unwrap_or(&[])).spec()) {
        let permitted = grant.permits_child(&child);
        if permitted {
            assert!(child.operations().is_subset(grant.operations()));
        }
    }
});
