//! The PKCS#11 root of trust on a real token, one session (`pool_size = 1`):
//! the raw rates that cap any path calling the HSM per request.
//!
//! - unwrap: `C_UnwrapKey` + `C_GetAttributeValue(CKA_VALUE)` +
//!   `C_DestroyObject`, with the session copy of the root key and with the
//!   token object itself, into a public (default) or a private session
//!   object, and with the value read in one call (kmsd) or cryptoki's way
//!   (size query, then read);
//! - wrap: `C_CreateObject` + `C_WrapKey` + `C_DestroyObject`, the same
//!   three ways (one `C_WrapKey` into a 40-byte buffer, or size query first);
//! - AES-256-GCM of 32 bytes with an HSM-only key;
//! - the file root's in-process KWP as the naive baseline.
//!
//! Which token: `KMSD_HSM_CONFIG=FILE` (a kmsd config whose [root.pkcs11]
//! root key exists: `kmsd hsm init`), or the throwaway token that
//! `scripts/test.sh` describes (`KMSD_TEST_PKCS11_MODULE`,
//! `KMSD_TEST_TOKEN_LABEL`, `KMSD_TEST_PIN`, `SOFTHSM2_CONF`), in which the
//! bench creates its own root key. With neither, it prints a note and exits.
//!
//! The size-query-first variants exist only with the `bench-ffi` feature
//! (the bench's `required-features`):
//!
//! ```sh
//! KMSD_HSM_CONFIG=/etc/kmsd.toml cargo bench --features bench-ffi --bench hsm
//! ```

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kmsd::config::{Config, Pkcs11Config};
use kmsd::crypto::KeyMaterial;
use kmsd::hsm::Hsm;
use kmsd::root::{FileRoot, RootOfTrust};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

/// The token to measure, or why there is none.
fn token() -> Result<(Pkcs11Config, Option<PathBuf>), String> {
    if let Some(path) = std::env::var_os("KMSD_HSM_CONFIG") {
        let config = Config::load(&PathBuf::from(&path)).map_err(|e| e.to_string())?;
        return config
            .root
            .pkcs11
            .map(|p| (p, None))
            .ok_or_else(|| format!("{} has no [root.pkcs11] section", path.to_string_lossy()));
    }
    let (Ok(module), Ok(token_label), Ok(pin)) = (
        std::env::var("KMSD_TEST_PKCS11_MODULE"),
        std::env::var("KMSD_TEST_TOKEN_LABEL"),
        std::env::var("KMSD_TEST_PIN"),
    ) else {
        return Err(
            "no token configured: set KMSD_HSM_CONFIG=FILE (a kmsd config with \
                    [root.pkcs11]) or run under scripts/test.sh's KMSD_TEST_* variables"
                .to_owned(),
        );
    };
    let dir = std::env::temp_dir().join(format!("kmsd-bench-hsm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let pin_file = dir.join("pin");
    std::fs::write(&pin_file, pin).map_err(|e| e.to_string())?;
    std::fs::set_permissions(&pin_file, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| e.to_string())?;
    let config = Pkcs11Config {
        module: module.into(),
        token_label,
        key_label: format!("kmsd-bench-root-{}", std::process::id()),
        pin_file: Some(pin_file),
        pin_env: None,
        pool_size: 1,
        kwp_mechanism: 0x210A,
        session_copy: true,
        private_unwrapped: false,
    };
    kmsd::hsm::init_root_key(&config).map_err(|e| e.to_string())?;
    Ok((config, Some(dir)))
}

fn bench(c: &mut Criterion) {
    let (base, temp_dir) = match token() {
        Ok(found) => found,
        Err(why) => {
            eprintln!("benches/hsm: skipped: {why}");
            return;
        }
    };
    let backing = KeyMaterial::generate();

    let mut g = c.benchmark_group("hsm");
    g.throughput(Throughput::Elements(1));
    // The default (session copy, public unwrapped object), then each
    // setting changed alone.
    for (session_copy, private) in [(true, false), (false, false), (true, true)] {
        let name = match (session_copy, private) {
            (true, false) => "session_copy",
            (false, _) => "token_key",
            (true, true) => "session_copy_private_unwrapped",
        };
        let mut config = base.clone();
        config.pool_size = 1;
        config.session_copy = session_copy;
        config.private_unwrapped = private;
        // One Hsm at a time: dropping the one that initialised the module
        // finalises it.
        let hsm = Hsm::open(&config).unwrap_or_else(|e| panic!("benches/hsm: {e}"));
        let wrapped = hsm.wrap_key(&backing).unwrap();
        assert_eq!(hsm.unwrap_key(&wrapped).unwrap().expose(), backing.expose());
        g.bench_function(format!("unwrap/{name}/one_call"), |b| {
            b.iter(|| hsm.unwrap_key(&wrapped).unwrap())
        });
        g.bench_function(format!("unwrap/{name}/two_calls"), |b| {
            b.iter(|| hsm.unwrap_key_two_calls(&wrapped).unwrap())
        });
        g.bench_function(format!("wrap/{name}/one_call"), |b| {
            b.iter(|| hsm.wrap_key(&backing).unwrap())
        });
        g.bench_function(format!("wrap/{name}/two_calls"), |b| {
            b.iter(|| hsm.wrap_key_two_calls(&backing).unwrap())
        });
        // HSM-only key: with session_copy each session works on a session
        // copy of its token object, without it on the token object itself.
        let id = format!("kmsd-bench-gcm-{name}-{}", std::process::id());
        let key = hsm.generate_key(&id, id.as_bytes()).unwrap();
        let iv = [9u8; 12];
        let sealed = hsm.gcm_encrypt(&key, &iv, b"aad", &[0x42; 32]).unwrap();
        g.bench_function(format!("gcm_encrypt_32B/{name}"), |b| {
            b.iter(|| hsm.gcm_encrypt(&key, &iv, b"aad", &[0x42; 32]).unwrap())
        });
        g.bench_function(format!("gcm_decrypt_32B/{name}"), |b| {
            b.iter(|| hsm.gcm_decrypt(&key, &iv, b"aad", &sealed).unwrap())
        });
        hsm.destroy_key(&key).unwrap();
        assert_eq!(hsm.stats().rebuilds, 0);
    }
    // The naive baseline: the same KWP in process.
    let file = FileRoot::from_key(KeyMaterial::from_bytes([7; 32]));
    let wrapped = file.wrap(&backing).unwrap();
    g.bench_function("unwrap/file_root_in_process", |b| {
        b.iter(|| file.unwrap(&wrapped).unwrap())
    });
    g.finish();
    if let Some(dir) = temp_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
