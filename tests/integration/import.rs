//! Imports of key material (BYOK), with the wrapping done by OpenSSL's
//! command line, as AWS's documentation shows it, never by kmsd's own code:
//!
//! - `RSAES_OAEP_SHA_256`: `openssl pkeyutl -encrypt -pubin -inkey
//!   PublicKey.der -keyform DER -pkeyopt rsa_padding_mode:oaep -pkeyopt
//!   rsa_oaep_md:sha256 -pkeyopt rsa_mgf1_md:sha256`;
//! - `RSA_AES_KEY_WRAP_SHA_256`: an ephemeral AES-256 key encrypted so,
//!   followed by the material wrapped with `openssl enc
//!   -id-aes256-wrap-pad -K <hex> -iv A65959A6` (RFC 5649).
//!
//! Both roots: the file root, and the PKCS#11 root on the SoftHSM2 token of
//! tests/integration/hsm.rs (skipped with a note when there is none).

use std::path::Path;
use std::process::Command;

use cryptoki::mechanism::MechanismType;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use kmsd::crypto::import::{unwrap_material, ImportAlgorithm, ImportError};
use kmsd::crypto::KeyMaterial;
use kmsd::root::{FileRoot, ImportWrapping, Pkcs11Root, RootError, RootOfTrust, WrappingKeySpec};

use crate::hsm::{config, hsm_test, Admin};

// ---------------------------------------------------------------------------
// OpenSSL's command line

/// Runs `openssl` with `args`, panicking with its stderr if it fails.
fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running openssl (install it: scripts/install-deps.sh)");
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// RSAES-OAEP-SHA-256 encryption of `plaintext` under the DER public key
/// in `dir/PublicKey.der`, by `openssl pkeyutl`.
fn oaep_encrypt(dir: &Path, plaintext: &[u8], name: &str) -> Vec<u8> {
    let input = format!("{name}.plain");
    let output = format!("{name}.enc");
    std::fs::write(dir.join(&input), plaintext).unwrap();
    openssl(
        &[
            "pkeyutl",
            "-encrypt",
            "-pubin",
            "-inkey",
            "PublicKey.der",
            "-keyform",
            "DER",
            "-pkeyopt",
            "rsa_padding_mode:oaep",
            "-pkeyopt",
            "rsa_oaep_md:sha256",
            "-pkeyopt",
            "rsa_mgf1_md:sha256",
            "-in",
            &input,
            "-out",
            &output,
        ],
        dir,
    );
    std::fs::read(dir.join(output)).unwrap()
}

/// `material` wrapped for import under the public key `public_key` (DER
/// SubjectPublicKeyInfo, as GetParametersForImport returns it) with
/// `algorithm`, by the openssl command line in a temporary directory.
pub(crate) fn wrap_with_openssl_cli(
    public_key: &[u8],
    algorithm: ImportAlgorithm,
    material: &[u8],
) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    std::fs::write(dir.join("PublicKey.der"), public_key).unwrap();
    match algorithm {
        ImportAlgorithm::RsaesOaepSha256 => oaep_encrypt(dir, material, "material"),
        ImportAlgorithm::RsaAesKeyWrapSha256 => {
            openssl(&["rand", "-out", "aes-key.bin", "32"], dir);
            let aes_key = std::fs::read(dir.join("aes-key.bin")).unwrap();
            assert_eq!(aes_key.len(), 32);
            std::fs::write(dir.join("material.bin"), material).unwrap();
            openssl(
                &[
                    "enc",
                    "-id-aes256-wrap-pad",
                    "-K",
                    &hex::encode(&aes_key),
                    "-iv",
                    "A65959A6",
                    "-in",
                    "material.bin",
                    "-out",
                    "material.wrapped",
                ],
                dir,
            );
            let mut out = oaep_encrypt(dir, &aes_key, "aes-key");
            out.extend(std::fs::read(dir.join("material.wrapped")).unwrap());
            out
        }
    }
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; n];
    kmsd::crypto::rng::fill(&mut bytes);
    bytes
}

/// The material kmsd recovers from `encrypted` with pair `id` of `root`.
fn import_with(
    wrapping: &dyn ImportWrapping,
    id: &[u8; 20],
    handle: &[u8],
    spec: WrappingKeySpec,
    algorithm: ImportAlgorithm,
    encrypted: &[u8],
) -> Result<KeyMaterial, ImportError<RootError>> {
    unwrap_material(algorithm, spec.modulus_len(), encrypted, |c| {
        wrapping.decrypt(id, handle, c)
    })
}

const ALGORITHMS: [ImportAlgorithm; 2] = [
    ImportAlgorithm::RsaesOaepSha256,
    ImportAlgorithm::RsaAesKeyWrapSha256,
];

/// Every spec and both algorithms through `wrapping`: 32 random bytes
/// wrapped by the openssl CLI come back; 31 or 33 bytes are the wrong
/// length; another pair's wrapping and a flipped byte do not decrypt.
fn round_trips_through(wrapping: &dyn ImportWrapping, first_id: [u8; 20]) -> Vec<[u8; 20]> {
    let mut ids = Vec::new();
    let specs = [
        WrappingKeySpec::Rsa2048,
        WrappingKeySpec::Rsa3072,
        WrappingKeySpec::Rsa4096,
    ];
    let other_id = {
        let mut id = first_id;
        id[19] ^= 0xFF;
        id
    };
    let other = wrapping
        .generate(&other_id, WrappingKeySpec::Rsa2048)
        .unwrap();
    ids.push(other_id);
    for (n, spec) in specs.into_iter().enumerate() {
        let mut id = first_id;
        id[19] = n as u8;
        let pair = wrapping.generate(&id, spec).unwrap();
        ids.push(id);
        for algorithm in ALGORITHMS {
            let what = format!("{} with {}", spec.name(), algorithm.name());
            let material = random_bytes(32);
            let encrypted = wrap_with_openssl_cli(&pair.public_key, algorithm, &material);
            let key = import_with(wrapping, &id, &pair.handle, spec, algorithm, &encrypted)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(key.expose().as_slice(), material.as_slice(), "{what}");

            for len in [31usize, 33] {
                let encrypted =
                    wrap_with_openssl_cli(&pair.public_key, algorithm, &random_bytes(len));
                assert!(
                    matches!(
                        import_with(wrapping, &id, &pair.handle, spec, algorithm, &encrypted),
                        Err(ImportError::WrongLength(n)) if n == len
                    ),
                    "{what}, {len} bytes"
                );
            }
            let mut corrupt = encrypted.clone();
            corrupt[spec.modulus_len() / 2] ^= 0x01;
            assert!(
                matches!(
                    import_with(wrapping, &id, &pair.handle, spec, algorithm, &corrupt),
                    Err(ImportError::DoesNotDecrypt)
                ),
                "{what}, corrupt"
            );
            if spec == WrappingKeySpec::Rsa2048 {
                // Material wrapped for another import's key.
                let foreign = wrap_with_openssl_cli(&other.public_key, algorithm, &material);
                assert!(
                    matches!(
                        import_with(wrapping, &id, &pair.handle, spec, algorithm, &foreign),
                        Err(ImportError::DoesNotDecrypt)
                    ),
                    "{what}, another pair's wrapping"
                );
            }
        }
    }
    ids
}

// ---------------------------------------------------------------------------
// The roots

#[test]
fn openssl_cli_wrapped_material_imports_under_the_file_root() {
    let root = FileRoot::from_key(KeyMaterial::generate());
    let wrapping = root.import_wrapping().expect("the file root imports");
    round_trips_through(wrapping, [0x11; 20]);
}

#[test]
fn openssl_cli_wrapped_material_imports_under_the_pkcs11_root() {
    let Some((_lock, env)) = hsm_test("openssl_cli_wrapped_material_imports_under_the_pkcs11_root")
    else {
        return;
    };
    let root = Pkcs11Root::open(&config(env, &env.shared_key)).unwrap();
    let wrapping = root.import_wrapping().expect("the PKCS#11 root imports");
    // Ids unique to this run: the token outlives it.
    let mut first_id = [0u8; 20];
    first_id[..16].copy_from_slice(&random_bytes(16));
    let ids = round_trips_through(wrapping, first_id);
    eprintln!(
        "NOTE: the token decrypts RSA-OAEP-SHA-256 by {:?}",
        root.hsm().import_oaep_path()
    );
    assert!(root.hsm().import_oaep_path().is_some());

    let held = wrapping.held().unwrap();
    for id in &ids {
        assert!(held.contains(id), "held() lists {}", hex::encode(id));
    }

    // What the token says about a private key: in the token, sensitive,
    // never extractable, decryption only; no public key object is left.
    {
        let admin = Admin::open(env);
        let s = admin.session();
        let found = s.find_objects(&[Attribute::Id(ids[1].to_vec())]).unwrap();
        assert_eq!(found.len(), 1, "only the private key stays");
        let attrs = s
            .get_attributes(
                found[0],
                &[
                    AttributeType::Class,
                    AttributeType::KeyType,
                    AttributeType::Token,
                    AttributeType::Private,
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::NeverExtractable,
                    AttributeType::Decrypt,
                    AttributeType::Sign,
                    AttributeType::Unwrap,
                    AttributeType::AllowedMechanisms,
                ],
            )
            .unwrap();
        let (allowed, attrs) = attrs.split_last().unwrap();
        // OAEP and raw RSA (a set, in the token's order), never PKCS#1
        // v1.5 (a padding oracle).
        let Attribute::AllowedMechanisms(allowed) = allowed else {
            panic!("no CKA_ALLOWED_MECHANISMS: {allowed:?}");
        };
        let mut allowed: Vec<_> = allowed.iter().map(|m| u64::from(*m)).collect();
        allowed.sort_unstable();
        let mut expected = vec![
            u64::from(MechanismType::RSA_PKCS_OAEP),
            u64::from(MechanismType::RSA_X_509),
        ];
        expected.sort_unstable();
        assert_eq!(allowed, expected);
        assert_eq!(
            attrs,
            [
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::KeyType(KeyType::RSA),
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::NeverExtractable(true),
                Attribute::Decrypt(true),
                Attribute::Sign(false),
                Attribute::Unwrap(false),
            ]
        );
        // The private exponent is refused.
        assert!(s
            .get_attributes(found[0], &[AttributeType::PrivateExponent])
            .unwrap()
            .is_empty());
    }

    // A handle that is not the id is refused; generating again under an
    // id replaces the pair (the old public key no longer imports).
    let id = ids[1];
    let material = random_bytes(32);
    let old = wrapping.generate(&id, WrappingKeySpec::Rsa2048).unwrap();
    let new = wrapping.generate(&id, WrappingKeySpec::Rsa2048).unwrap();
    assert_ne!(old.public_key, new.public_key);
    let for_old =
        wrap_with_openssl_cli(&old.public_key, ImportAlgorithm::RsaesOaepSha256, &material);
    assert!(wrapping
        .decrypt(&id, &new.handle, &for_old)
        .unwrap()
        .is_none());
    assert!(matches!(
        wrapping.decrypt(&id, &[0u8; 20], &for_old),
        Err(RootError::Invalid(_))
    ));

    // Destroyed: gone from the token, and its id no longer decrypts.
    for id in &ids {
        assert!(wrapping.destroy(id).unwrap());
        assert!(!wrapping.destroy(id).unwrap());
    }
    assert!(matches!(
        wrapping.decrypt(&id, &id, &for_old),
        Err(RootError::Invalid(_))
    ));
    let held = wrapping.held().unwrap();
    assert!(ids.iter().all(|id| !held.contains(id)));
    assert!(root.hsm().is_available());
    assert_eq!(root.hsm().stats().rebuilds, 0);
}

// ---------------------------------------------------------------------------
// A real daemon: CreateKey, GetParametersForImport, ImportKeyMaterial,
// DeleteImportedKeyMaterial over the socket

mod daemon {
    use std::path::Path;
    use std::time::{Duration, Instant};

    use kms_proto::client::{Client, ClientError};
    use kms_proto::{
        CreateKey, DeleteImportedKeyMaterial, ErrorKind, ExpirationModel, GetParametersForImport,
        GetParametersForImportOutput, ImportKeyMaterial, KeyMetadata, KeyState, Operation, Origin,
        Output, WrappingAlgorithm, WrappingKeySpec,
    };
    use kmsd::crypto::import::ImportAlgorithm;

    use super::{random_bytes, wrap_with_openssl_cli};
    use crate::support::{hsm_root_config, Daemon};

    const DAY: i64 = 24 * 60 * 60;

    fn create_external(c: &mut Client) -> KeyMetadata {
        match c
            .call(Operation::CreateKey(CreateKey {
                origin: Origin::External,
                ..CreateKey::default()
            }))
            .unwrap()
        {
            Output::CreateKey(m) => m,
            other => panic!("{other:?}"),
        }
    }

    fn params(
        c: &mut Client,
        key: &str,
        algorithm: WrappingAlgorithm,
        spec: WrappingKeySpec,
    ) -> GetParametersForImportOutput {
        match c
            .call(Operation::GetParametersForImport(GetParametersForImport {
                key_id: key,
                wrapping_algorithm: algorithm,
                wrapping_key_spec: spec,
            }))
            .unwrap()
        {
            Output::GetParametersForImport(p) => p,
            other => panic!("{other:?}"),
        }
    }

    fn import(
        c: &mut Client,
        key: &str,
        token: &[u8],
        encrypted: &[u8],
        valid_to: Option<i64>,
    ) -> Result<Output, ClientError> {
        c.call(Operation::ImportKeyMaterial(ImportKeyMaterial {
            key_id: key,
            import_token: token,
            encrypted_key_material: encrypted,
            valid_to,
            expiration_model: if valid_to.is_some() {
                ExpirationModel::KeyMaterialExpires
            } else {
                ExpirationModel::KeyMaterialDoesNotExpire
            },
        }))
    }

    fn delete(c: &mut Client, key: &str) -> Result<Output, ClientError> {
        c.call(Operation::DeleteImportedKeyMaterial(
            DeleteImportedKeyMaterial { key_id: key },
        ))
    }

    fn kind<T: std::fmt::Debug>(r: Result<T, ClientError>) -> ErrorKind {
        r.expect_err("an error").kind().expect("an AWS exception")
    }

    fn decrypt(c: &mut Client, blob: &[u8]) -> Result<Vec<u8>, ClientError> {
        c.decrypt(blob, None, &[])
            .map(|d| d.plaintext.expose().to_vec())
    }

    /// A client that waits long enough for an RSA key pair generation in a
    /// token on a busy machine (seconds; the usual 20 s bound is for
    /// answers that take milliseconds).
    fn client(d: &Daemon) -> Client {
        let c = d.client();
        c.stream()
            .set_read_timeout(Some(Duration::from_secs(120)))
            .unwrap();
        c
    }

    /// The whole import story against `d`, whose clock is shifted by the
    /// offset in `clock`.
    fn scenario(d: &mut Daemon, clock: &Path) {
        let mut c = client(d);
        let a = create_external(&mut c).key_id;
        let b = create_external(&mut c).key_id;
        let m = c.describe_key(&a).unwrap();
        assert_eq!(
            (m.key_state, m.current_version, m.origin),
            (KeyState::PendingImport, 0, Origin::External)
        );
        assert_eq!(kind(c.encrypt(&a, b"x", &[])), ErrorKind::KmsInvalidState);

        // Both wrapping algorithms, wrapped by OpenSSL's command line.
        let material_a = random_bytes(32);
        let material_b = random_bytes(32);
        let pa = params(
            &mut c,
            &a,
            WrappingAlgorithm::RsaesOaepSha256,
            WrappingKeySpec::Rsa3072,
        );
        let now = pa.parameters_valid_to - DAY;
        let wrapped = wrap_with_openssl_cli(
            &pa.public_key,
            ImportAlgorithm::RsaesOaepSha256,
            &material_a,
        );
        import(&mut c, &a, &pa.import_token, &wrapped, None).unwrap();
        // (RSA_4096 is covered by the roots' tests above: generating one
        // in a token can take many seconds on a busy machine.)
        let pb = params(
            &mut c,
            &b,
            WrappingAlgorithm::RsaAesKeyWrapSha256,
            WrappingKeySpec::Rsa3072,
        );
        let wrapped = wrap_with_openssl_cli(
            &pb.public_key,
            ImportAlgorithm::RsaAesKeyWrapSha256,
            &material_b,
        );
        import(&mut c, &b, &pb.import_token, &wrapped, Some(now + 3600)).unwrap();
        let ma = c.describe_key(&a).unwrap();
        let mb = c.describe_key(&b).unwrap();
        assert_eq!(
            (ma.key_state, ma.expiration_model, ma.valid_to),
            (
                KeyState::Enabled,
                Some(ExpirationModel::KeyMaterialDoesNotExpire),
                None
            )
        );
        assert_eq!(
            (mb.key_state, mb.expiration_model, mb.valid_to),
            (
                KeyState::Enabled,
                Some(ExpirationModel::KeyMaterialExpires),
                Some(now + 3600)
            )
        );
        let blob_a = c.encrypt(&a, b"under a", &[]).unwrap().ciphertext_blob;
        let blob_b = c.encrypt(&b, b"under b", &[]).unwrap().ciphertext_blob;
        assert_eq!(decrypt(&mut c, &blob_a).unwrap(), b"under a");
        assert_eq!(decrypt(&mut c, &blob_b).unwrap(), b"under b");

        // Deleted: pending import, crypto refused.
        delete(&mut c, &a).unwrap();
        assert_eq!(
            c.describe_key(&a).unwrap().key_state,
            KeyState::PendingImport
        );
        assert_eq!(kind(c.encrypt(&a, b"x", &[])), ErrorKind::KmsInvalidState);
        assert_eq!(kind(decrypt(&mut c, &blob_a)), ErrorKind::KmsInvalidState);

        // New parameters survive a restart; then every wrong import gets
        // its exception, and the same material brings the old ciphertexts
        // back.
        let pa2 = params(
            &mut c,
            &a,
            WrappingAlgorithm::RsaesOaepSha256,
            WrappingKeySpec::Rsa2048,
        );
        d.restart();
        let mut c = client(d);
        let good = wrap_with_openssl_cli(
            &pa2.public_key,
            ImportAlgorithm::RsaesOaepSha256,
            &material_a,
        );
        assert_eq!(
            kind(import(&mut c, &a, b"not a token", &good, None)),
            ErrorKind::InvalidImportToken
        );
        let pb2 = params(
            &mut c,
            &b,
            WrappingAlgorithm::RsaesOaepSha256,
            WrappingKeySpec::Rsa2048,
        );
        assert_eq!(
            kind(import(&mut c, &a, &pb2.import_token, &good, None)),
            ErrorKind::InvalidImportToken,
            "another key's token"
        );
        for len in [16usize, 31, 33] {
            let short = wrap_with_openssl_cli(
                &pa2.public_key,
                ImportAlgorithm::RsaesOaepSha256,
                &random_bytes(len),
            );
            assert_eq!(
                kind(import(&mut c, &a, &pa2.import_token, &short, None)),
                ErrorKind::IncorrectKeyMaterial,
                "{len} bytes"
            );
        }
        let other = wrap_with_openssl_cli(
            &pa2.public_key,
            ImportAlgorithm::RsaesOaepSha256,
            &random_bytes(32),
        );
        assert_eq!(
            kind(import(&mut c, &a, &pa2.import_token, &other, None)),
            ErrorKind::IncorrectKeyMaterial,
            "not the material imported before"
        );
        let for_b = wrap_with_openssl_cli(
            &pb2.public_key,
            ImportAlgorithm::RsaesOaepSha256,
            &material_a,
        );
        assert_eq!(
            kind(import(&mut c, &a, &pa2.import_token, &for_b, None)),
            ErrorKind::InvalidCiphertext
        );
        assert_eq!(
            c.describe_key(&a).unwrap().key_state,
            KeyState::PendingImport
        );
        import(&mut c, &a, &pa2.import_token, &good, None).unwrap();
        assert_eq!(decrypt(&mut c, &blob_a).unwrap(), b"under a");

        // A day later by the daemon's clock: the token of yesterday has
        // expired, and so has b's material (the scheduler deletes it).
        let pa3 = params(
            &mut c,
            &a,
            WrappingAlgorithm::RsaAesKeyWrapSha256,
            WrappingKeySpec::Rsa2048,
        );
        std::fs::write(clock, (DAY + 1).to_string()).unwrap();
        let late = wrap_with_openssl_cli(
            &pa3.public_key,
            ImportAlgorithm::RsaAesKeyWrapSha256,
            &material_a,
        );
        assert_eq!(
            kind(import(&mut c, &a, &pa3.import_token, &late, None)),
            ErrorKind::ExpiredImportToken
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let m = c.describe_key(&b).unwrap();
            if m.key_state == KeyState::PendingImport {
                assert_eq!((m.current_version, m.valid_to), (0, None));
                break;
            }
            assert!(
                Instant::now() < deadline,
                "b's material did not expire; log:\n{}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(kind(decrypt(&mut c, &blob_b)), ErrorKind::KmsInvalidState);
        // a's material does not expire.
        assert_eq!(decrypt(&mut c, &blob_a).unwrap(), b"under a");
    }

    /// A config file: `base` (a root of trust section, or nothing) and a
    /// fast scheduler.
    fn start(base: Option<&Path>) -> (tempfile::TempDir, Daemon, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let clock = dir.path().join("clock-offset");
        std::fs::write(&clock, "0").unwrap();
        let mut text = match base {
            Some(p) => std::fs::read_to_string(p).unwrap(),
            None => String::new(),
        };
        text.push_str("\n[lifecycle]\nscheduler_interval_ms = 50\n");
        let config = dir.path().join("kmsd.toml");
        std::fs::write(&config, text).unwrap();
        let d = Daemon::start_env(
            &["--config", config.to_str().unwrap()],
            &[(kmsd::clock::TEST_CLOCK_ENV, clock.as_os_str())],
        );
        (dir, d, clock)
    }

    #[test]
    fn import_over_the_socket_with_the_file_root() {
        let (_dir, mut d, clock) = start(None);
        scenario(&mut d, &clock);
    }

    #[test]
    fn import_over_the_socket_with_the_pkcs11_root() {
        let Some(config) = hsm_root_config() else {
            eprintln!(
                "NOTE: import_over_the_socket_with_the_pkcs11_root: no SoftHSM token \
                 (scripts/test.sh prepares one); not run"
            );
            return;
        };
        let (_dir, mut d, clock) = start(Some(config));
        scenario(&mut d, &clock);
        assert!(
            d.log().contains("PKCS#11 root of trust ready"),
            "{}",
            d.log()
        );
    }
}
