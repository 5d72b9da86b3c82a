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
