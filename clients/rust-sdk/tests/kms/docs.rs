//! docs/aws-sdk-rust.md shows the connector these tests run, unchanged.

/// The page that shows the client: docs/aws-sdk-rust.md, or
/// docs/aws-api.md if it has been merged there.
fn page() -> (std::path::PathBuf, String) {
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs");
    for name in ["aws-sdk-rust.md", "aws-api.md"] {
        let path = docs.join(name);
        if let Ok(text) = std::fs::read_to_string(&path) {
            if text.contains("pub struct UnixHttpClient") {
                return (path, text);
            }
        }
    }
    panic!(
        "no page in {} shows the client (pub struct UnixHttpClient)",
        docs.display()
    );
}

#[test]
fn the_documented_client_is_the_tested_one() {
    let lib = include_str!("../../src/lib.rs");
    let code = &lib[lib.find("use aws_sdk_kms").expect("src/lib.rs's first use")..];
    let (path, page) = page();
    assert!(
        page.contains(code),
        "{} does not show src/lib.rs's code from its first `use` on, unchanged: \
         copy it into the page's rust block again",
        path.display()
    );
}
