//! The protocol's generated code matches its schema.
//!
//! `proto/src/generated/kms_generated.rs` is committed flatc output for
//! `schema/kms.fbs`. This test runs the same flatc (23.5.26, vendored and
//! built by the `flatc` dev-dependency, so no flatc needs to be installed)
//! on the schema and demands the committed file byte for byte.

use std::path::Path;
use std::process::Command;

/// Where flatc writes the Rust code for `schema/kms.fbs`.
const GENERATED: &str = "proto/src/generated/kms_generated.rs";

#[test]
fn generated_code_is_fresh() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let flatc = flatc::flatc();
    assert!(
        flatc.is_file(),
        "the vendored flatc is missing at {}",
        flatc.display()
    );
    let version = Command::new(flatc)
        .arg("--version")
        .output()
        .expect("run flatc --version");
    let version = String::from_utf8_lossy(&version.stdout);
    assert!(
        version.contains("23.5.26"),
        "the flatbuffers runtime is pinned to 23.5.26 but flatc says {version:?}"
    );

    let out = tempfile::tempdir().expect("temp dir");
    let status = Command::new(flatc)
        .arg("--rust")
        .arg("-o")
        .arg(out.path())
        .arg(repo.join("schema/kms.fbs"))
        .status()
        .expect("run flatc");
    assert!(status.success(), "flatc failed on schema/kms.fbs: {status}");

    let fresh = std::fs::read(out.path().join("kms_generated.rs")).expect("flatc wrote its output");
    let committed = std::fs::read(repo.join(GENERATED)).expect("read the committed code");
    if fresh != committed {
        let line = first_difference(&fresh, &committed);
        panic!(
            "{GENERATED} is stale: it differs from flatc's output for schema/kms.fbs \
             (first difference at line {line}). Run scripts/codegen.sh and commit the result."
        );
    }
}

/// The 1-based line of the first byte where `a` and `b` differ.
fn first_difference(a: &[u8], b: &[u8]) -> usize {
    let at = a
        .iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    1 + a[..at].iter().filter(|&&c| c == b'\n').count()
}
