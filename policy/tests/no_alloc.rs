//! Evaluation does not allocate: a counting global allocator around
//! `CompiledPolicy::evaluate` over a policy that uses every kind of
//! principal, condition and key, and around `CompiledGrant::allows` over
//! grants with each kind of grantee and constraint. A binary of its own,
//! with one test, because the allocator is process-wide.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use kms_policy::{
    Action, Caller, CompiledGrant, Decision, GrantOperation, GrantSpec, NoNames, Policy, Request,
};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: GlobalAlloc is an unsafe trait; this shim (the only unsafe code
// of the crate's tests, none in the crate) counts and forwards every call
// unchanged to the system allocator, so it keeps the system's guarantees.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const ARN: &str = "arn:aws:kms:us-east-1:000000000000:key/1234abcd-12ab-34cd-56ef-1234567890ab";

#[test]
fn evaluate_does_not_allocate() {
    let text = format!(
        r#"{{"Statement":[
        {{"Effect":"Deny","Principal":{{"AWS":["cgroup:/x","unit:z.service"]}},"Action":"kms:*","Resource":"*"}},
        {{"Effect":"Allow","Principal":{{"AWS":["uid:7","gid:8","unit:a.service","cgroup:/a"]}},
          "Action":["kms:Encrypt","kms:GenerateDataKey*","kms:CreateGrant"],"Resource":["{ARN}"],
          "Condition":{{
            "StringEqualsIgnoreCase":{{"kms:EncryptionContext:TEAM":"payments"}},
            "StringNotEquals":{{"kms:CallerAccount":"0"}},
            "StringLikeIfExists":{{"kms:RequestAlias":"alias/*"}},
            "ForAllValues:StringLike":{{"kms:EncryptionContextKeys":["?eam","env*"],"kms:GrantOperations":"*"}},
            "ForAnyValue:StringEquals":{{"kms:ResourceAliases":"alias/a"}},
            "NumericLessThan":{{"kmsd:CallerUid":"1000"}},
            "BoolIfExists":{{"kms:BypassPolicyLockoutSafetyCheck":"false"}},
            "Null":{{"kmsd:CallerUnit":"false"}}
          }}}}
    ]}}"#
    );
    let policy = Policy::parse(&text, &NoNames).unwrap();
    let caller = Caller {
        uid: 7,
        gid: 7,
        supplementary_gids: &[8],
        unit: Some("a.service"),
        cgroup: Some("/a/b"),
    };
    let req = Request {
        encryption_context: &[("Team", "Payments"), ("env", "prod")],
        request_alias: Some("alias/a"),
        key_aliases: &["alias/a", "alias/b"],
        ..Request::new(caller, Action::Encrypt, ARN)
    };
    let denied = Request {
        caller: Caller {
            cgroup: Some("/x/y"),
            ..caller
        },
        ..req
    };
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let mut decisions = [Decision::ImplicitDeny; 3];
    for _ in 0..100 {
        decisions = [
            policy.evaluate(&req),
            policy.evaluate(&denied),
            policy.evaluate(&Request::new(caller, Action::Decrypt, ARN)),
        ];
    }
    let after = ALLOCATIONS.load(Ordering::Relaxed);
    // The decisions are real: one of each kind.
    assert_eq!(
        decisions,
        [
            Decision::Allow,
            Decision::ExplicitDeny,
            Decision::ImplicitDeny
        ]
    );
    assert_eq!(after - before, 0, "evaluate allocated");

    // The grant condition keys, through a CreateGrant's request.
    let grant_policy = Policy::parse(
        r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:CreateGrant","Resource":"*",
            "Condition":{
                "StringEquals":{"kms:GranteePrincipal":"cgroup:/a","kms:EncryptionContext:team":"payments"},
                "StringLikeIfExists":{"kms:RetiringPrincipal":"uid:*"},
                "StringEqualsIgnoreCase":{"kms:GrantConstraintType":"encryptioncontextsubset"},
                "ForAllValues:StringEquals":{"kms:GrantOperations":["Decrypt","DescribeKey"]}
            }}]}"#,
        &NoNames,
    )
    .unwrap();
    let subset = [("Team", "payments")];
    let create = GrantSpec {
        grantee_principal: "cgroup:/a",
        retiring_principal: Some("uid:0"),
        operations: &["DescribeKey", "Decrypt"],
        encryption_context_subset: Some(&subset),
        ..GrantSpec::default()
    };
    // Grants with each kind of grantee and constraint, and requests that
    // take each path (ASCII and non-ASCII keys, Equals' length test).
    let grants = [
        CompiledGrant::compile(&create, &NoNames).unwrap(),
        CompiledGrant::compile(
            &GrantSpec {
                grantee_principal: "uid:7",
                operations: &["Encrypt", "CreateGrant"],
                encryption_context_equals: Some(&[("ÉQUIPE", "a"), ("env", "prod")]),
                ..GrantSpec::default()
            },
            &NoNames,
        )
        .unwrap(),
        CompiledGrant::compile(
            &GrantSpec {
                grantee_principal: "unit:a.service",
                operations: &["Encrypt", "Decrypt"],
                ..GrantSpec::default()
            },
            &NoNames,
        )
        .unwrap(),
    ];
    let requests = [
        Request {
            encryption_context: &[("team", "payments"), ("env", "prod")],
            ..Request::new(caller, Action::Decrypt, ARN)
        },
        Request {
            encryption_context: &[("équipe", "a"), ("ENV", "prod")],
            ..Request::new(caller, Action::Encrypt, ARN)
        },
        Request {
            encryption_context: &[("équipe", "a")],
            ..Request::new(caller, Action::Encrypt, ARN)
        },
        Request::new(caller, Action::DescribeKey, ARN),
        Request::new(caller, Action::CreateGrant, ARN),
    ];
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let mut allowed = [[false; 5]; 3];
    let mut grant_decision = Decision::ImplicitDeny;
    let mut names_len = 0;
    for _ in 0..100 {
        for (g, row) in grants.iter().zip(allowed.iter_mut()) {
            for (r, cell) in requests.iter().zip(row.iter_mut()) {
                *cell = g.allows(r);
            }
            assert!(g.is_grantee(&caller) || !g.is_retiring_principal(&caller));
        }
        let mut buf = [""; GrantOperation::COUNT];
        names_len = grants[0].operations().names(&mut buf).len();
        grant_decision = grant_policy.evaluate(&create.policy_request(caller, ARN));
    }
    let after = ALLOCATIONS.load(Ordering::Relaxed);
    assert_eq!(
        allowed,
        [
            [true, false, false, true, false],
            [false, true, false, false, true],
            [true, true, true, false, false],
        ]
    );
    assert_eq!(names_len, 2);
    assert_eq!(grant_decision, Decision::Allow);
    assert_eq!(after - before, 0, "a grant's allows allocated");
}
