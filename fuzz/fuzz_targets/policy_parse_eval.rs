//! The key policy parser on arbitrary bytes: a document that parses is
//! evaluated against fixed requests (and must decide them the same way
//! twice); one that does not is refused with a reason, never a panic.
#![no_main]

use kms_policy::{Action, Caller, NameResolver, Policy, Request};
use libfuzzer_sys::fuzz_target;

/// Knows `alice` and `kmsadmin`, so that names reach both outcomes.
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

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let policy = match Policy::parse(text, &Names) {
        Ok(p) => p,
        Err(e) => {
            assert_eq!(e.exception_name(), "MalformedPolicyDocumentException");
            assert!(!e.reason().is_empty());
            return;
        }
    };
    let caller = Caller {
        uid: 1000,
        gid: 1000,
        supplementary_gids: &[500],
        unit: Some("app.service"),
        cgroup: Some("/system.slice/app.service"),
    };
    let full = Request {
        encryption_context: &[("Team", "payments"), ("env", "prod")],
        request_alias: Some("alias/my-test-key"),
        key_aliases: &["alias/my-test-key", "alias/b"],
        grant_operations: &["Decrypt", "Encrypt"],
        bypass_policy_lockout_safety_check: Some(false),
        ..Request::new(caller, Action::CreateGrant, ARN)
    };
    for req in [full, Request::new(caller, Action::Decrypt, ARN)] {
        let d = policy.evaluate(&req);
        assert_eq!(d, policy.evaluate(&req));
    }
    let _ = policy.allows_subsequent_put_key_policy(&caller, ARN);
});
