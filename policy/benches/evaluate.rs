//! The cost of a policy decision, the check every request will pay before
//! any work: a compiled policy's `evaluate`, beside the naive baseline of
//! parsing the stored document for each request (what compiling once
//! saves), for a typical policy and for a 128-statement one where no
//! statement matches until the last; and a grant's `allows` with a
//! two-pair `EncryptionContextSubset` constraint against a three-pair
//! context (the check a request allowed by a grant pays per grant).

use criterion::{criterion_group, criterion_main, Criterion};
use kms_policy::{
    default_key_policy, Action, Caller, CompiledGrant, GrantSpec, NoNames, Policy, Request,
};

const ARN: &str = "arn:aws:kms:us-east-1:000000000000:key/1b4e28ba-2fa1-41d2-883f-0016d3cca427";

/// The default policy plus a conditioned deny, as a key might carry.
fn typical() -> String {
    let default = default_key_policy(&["uid:0", "gid:0"], Some(1000)).unwrap_or_default();
    let deny = r#"{"Sid":"prod context only","Effect":"Deny","Principal":"*","Action":"kms:Decrypt","Resource":"*",
        "Condition":{"StringNotEqualsIgnoreCase":{"kms:EncryptionContext:env":"prod"}}}"#;
    default.replacen("\"Statement\": [", &format!("\"Statement\": [{deny},"), 1)
}

/// 127 statements for other uids with conditions, then the one that allows.
fn many() -> String {
    let mut stmts: Vec<String> = (0..127)
        .map(|i| {
            format!(
                r#"{{"Effect":"Allow","Principal":{{"AWS":["uid:{}","gid:{}"]}},"Action":["kms:Encrypt","kms:GenerateDataKey*"],"Resource":"*","Condition":{{"StringLike":{{"kms:EncryptionContext:tenant":"t{i}-*"}}}}}}"#,
                5000 + i,
                5000 + i
            )
        })
        .collect();
    stmts.push(
        r#"{"Effect":"Allow","Principal":{"AWS":"uid:1000"},"Action":"kms:Encrypt","Resource":"*"}"#
            .into(),
    );
    format!(r#"{{"Statement":[{}]}}"#, stmts.join(","))
}

fn bench(c: &mut Criterion) {
    let caller = Caller {
        uid: 1000,
        gid: 1000,
        supplementary_gids: &[27, 100],
        unit: Some("app.service"),
        cgroup: Some("/system.slice/app.service"),
    };
    let req = Request {
        encryption_context: &[("tenant", "acme"), ("env", "prod")],
        ..Request::new(caller, Action::Encrypt, ARN)
    };
    for (name, text) in [("typical", typical()), ("128_statements", many())] {
        let policy = Policy::parse(&text, &NoNames).expect("the bench's policy parses");
        assert!(policy.evaluate(&req).is_allowed(), "{name}: not allowed");
        c.bench_function(&format!("policy/{name}/evaluate"), |b| {
            b.iter(|| policy.evaluate(std::hint::black_box(&req)))
        });
        c.bench_function(&format!("policy/{name}/parse_and_evaluate"), |b| {
            b.iter(|| {
                Policy::parse(std::hint::black_box(&text), &NoNames)
                    .map(|p| p.evaluate(&req))
                    .is_ok()
            })
        });
    }
}

fn bench_grant(c: &mut Criterion) {
    let caller = Caller {
        uid: 1000,
        gid: 1000,
        supplementary_gids: &[27, 100],
        unit: Some("app.service"),
        cgroup: Some("/system.slice/app.service"),
    };
    let grant = CompiledGrant::compile(
        &GrantSpec {
            grantee_principal: "uid:1000",
            operations: &["Encrypt", "Decrypt", "GenerateDataKey", "DescribeKey"],
            encryption_context_subset: Some(&[("Tenant", "acme"), ("env", "prod")]),
            ..GrantSpec::default()
        },
        &NoNames,
    )
    .expect("the bench's grant compiles");
    let req = Request {
        encryption_context: &[("app", "billing"), ("env", "prod"), ("tenant", "acme")],
        ..Request::new(caller, Action::Decrypt, ARN)
    };
    assert!(grant.allows(&req), "the grant does not allow the request");
    c.bench_function("grant/subset_2_of_3/allows", |b| {
        b.iter(|| grant.allows(std::hint::black_box(&req)))
    });
}

criterion_group!(benches, bench, bench_grant);
criterion_main!(benches);
