//! `--baseline hsm-unwrap|hsm-gcm` against a real SoftHSM2 token: the
//! throwaway token `scripts/test.sh` makes (KMSD_TEST_PKCS11_MODULE,
//! KMSD_TEST_TOKEN_LABEL, KMSD_TEST_PIN, SOFTHSM2_CONF). Without it the test
//! prints a note, unless KMSD_REQUIRE_HSM=1 (CI), which makes it fail.

use kms_loadgen::driver::RunOptions;
use kms_loadgen::hsmraw::{self, HsmCall};
use kms_loadgen::run::{LoadModel, TargetKind};
use kms_loadgen::workload::{Mix, Popularity, WorkloadSpec};
use kmsd::config::Pkcs11Config;
use kmsd::hsm::Hsm;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

struct Token {
    module: String,
    label: String,
    pin: String,
}

fn token() -> Option<Token> {
    let var = |n: &str| std::env::var(n).ok().filter(|v| !v.is_empty());
    match (
        var("KMSD_TEST_PKCS11_MODULE"),
        var("KMSD_TEST_TOKEN_LABEL"),
        var("KMSD_TEST_PIN"),
    ) {
        (Some(module), Some(label), Some(pin)) => Some(Token { module, label, pin }),
        _ if var("KMSD_REQUIRE_HSM").as_deref() == Some("1") => {
            panic!("KMSD_REQUIRE_HSM=1 but no test token: run scripts/test.sh")
        }
        _ => {
            eprintln!(
                "NOTE: no SoftHSM test token (run scripts/test.sh); HSM baseline test not run"
            );
            None
        }
    }
}

fn spec(mix: &str) -> WorkloadSpec {
    WorkloadSpec {
        mix: Mix::parse(mix).unwrap(),
        payload_size: 32,
        keys: 1,
        popularity: Popularity::Uniform,
        context_pairs: 1,
        batch: 1,
        blobs_per_key: 1,
        seed: 1,
        hsm_keys: true,
        by_alias: false,
    }
}

#[test]
fn hsm_baselines_measure_the_token_and_leave_nothing_behind() {
    let Some(token) = token() else { return };
    let dir = tempfile::tempdir().unwrap();
    let pin_file = dir.path().join("pin");
    std::fs::write(&pin_file, &token.pin).unwrap();
    std::fs::set_permissions(&pin_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let key_label = format!("loadgen-baseline-root-{}", std::process::id());
    let pkcs11 = Pkcs11Config {
        module: token.module.clone().into(),
        token_label: token.label.clone(),
        key_label: key_label.clone(),
        pin_file: Some(pin_file.clone()),
        pin_env: None,
        pool_size: 1,
        kwp_mechanism: 0x210A,
        session_copy: true,
        private_unwrapped: false,
    };
    kmsd::hsm::init_root_key(&pkcs11).unwrap();
    let config = dir.path().join("kmsd.toml");
    std::fs::write(
        &config,
        format!(
            "[root]\nkind = \"pkcs11\"\n\n[root.pkcs11]\nmodule = \"{}\"\n\
             token_label = \"{}\"\nkey_label = \"{key_label}\"\npin_file = \"{}\"\n\
             pool_size = 4\n",
            token.module,
            token.label,
            pin_file.display()
        ),
    )
    .unwrap();
    let opts = RunOptions {
        model: LoadModel::Closed {
            connections: 1,
            pipeline: 1,
        },
        warmup: Duration::from_millis(50),
        duration: Duration::from_millis(300),
        progress: false,
        target_pid: None,
    };

    let cases = [
        (HsmCall::Unwrap, "decrypt", TargetKind::HsmUnwrap),
        (HsmCall::Gcm, "decrypt", TargetKind::HsmGcm),
        (HsmCall::Gcm, "generate-data-key", TargetKind::HsmGcm),
    ];
    for (call, mix, kind) in cases {
        let r = hsmraw::run(Some(&config), call, &spec(mix), &opts, mix).unwrap();
        assert_eq!(r.target, kind);
        // Every call is one operation, timed; SoftHSM manages thousands a
        // second, so 300 ms holds far more than ten.
        assert!(r.operations > 10, "{call:?} {mix}: {} calls", r.operations);
        assert_eq!(r.operations, r.requests);
        assert_eq!(r.latency.len(), r.operations);
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert!(r.throughput() > 0.0);
    }

    // The GCM baseline's temporary key is destroyed when it ends.
    let hsm = Hsm::open(&pkcs11).unwrap();
    let temp_id = format!("kms-loadgen-raw-gcm-{}", std::process::id());
    assert!(hsm.find_key(temp_id.as_bytes()).unwrap().is_none());
    drop(hsm);

    // Without a config naming a token: a clear error, no panic.
    let e = hsmraw::run(None, HsmCall::Unwrap, &spec("decrypt"), &opts, "x").unwrap_err();
    assert!(e.to_string().contains("--config"), "{e}");
    let no_hsm = dir.path().join("file-root.toml");
    std::fs::write(&no_hsm, "[root]\nkind = \"file\"\n").unwrap();
    let e = hsmraw::run(Some(&no_hsm), HsmCall::Unwrap, &spec("decrypt"), &opts, "x").unwrap_err();
    assert!(format!("{e:#}").contains("[root.pkcs11]"), "{e:#}");
}
