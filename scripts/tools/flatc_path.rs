//! Prints the path of the vendored flatc 23.5.26 (the one that generated
//! `proto/src/generated/kms_generated.rs`).

fn main() {
    let path = flatc::flatc();
    if !path.is_file() {
        eprintln!("flatc-path: {} does not exist", path.display());
        std::process::exit(1);
    }
    println!("{}", path.display());
}
