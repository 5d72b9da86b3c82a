//! Lifecycle requests over a real socket, for the durability tests
//! (crash.rs, states_table.rs, seeding.rs): each operation through the
//! typed client, answered as `Ok(output)` or the exception's kind.

use kms_proto::client::{Client, ClientError};
use kms_proto::*;

/// An answer: the output, or the exception (a broken connection panics:
/// these tests talk to a daemon that is up).
pub type Answer = Result<Output, ErrorKind>;

/// Sends `op` and waits for its answer.
pub fn call(c: &mut Client, op: Operation<'_>) -> Answer {
    match c.call(op) {
        Ok(o) => Ok(o),
        Err(ClientError::Kms(e)) => Err(e.kind),
        Err(e) => panic!("connection failed: {e}"),
    }
}

/// Sends `op`, which must succeed.
#[track_caller]
pub fn ok(c: &mut Client, op: Operation<'_>) -> Output {
    let name = op.name();
    match c.call(op) {
        Ok(o) => o,
        Err(e) => panic!("{name}: {e}"),
    }
}

/// CreateKey with `origin`; its key id.
pub fn create(c: &mut Client, origin: Origin) -> String {
    match ok(
        c,
        Operation::CreateKey(CreateKey {
            description: "lifecycle test key",
            origin,
            ..Default::default()
        }),
    ) {
        Output::CreateKey(m) => m.key_id,
        other => panic!("{other:?}"),
    }
}

/// DescribeKey.
#[track_caller]
pub fn describe(c: &mut Client, key_id: &str) -> KeyMetadata {
    match ok(
        c,
        Operation::DescribeKey(DescribeKey {
            key_id,
            ..Default::default()
        }),
    ) {
        Output::DescribeKey(m) => m,
        other => panic!("{other:?}"),
    }
}

/// The key's state.
#[track_caller]
pub fn state(c: &mut Client, key_id: &str) -> KeyState {
    describe(c, key_id).key_state
}

/// GetKeyRotationStatus.
#[track_caller]
pub fn rotation_status(c: &mut Client, key_id: &str) -> GetKeyRotationStatusOutput {
    match ok(
        c,
        Operation::GetKeyRotationStatus(GetKeyRotationStatus { key_id }),
    ) {
        Output::GetKeyRotationStatus(o) => o,
        other => panic!("{other:?}"),
    }
}

/// Every alias of `key_id` (one page: tests make few).
#[track_caller]
pub fn aliases_of(c: &mut Client, key_id: &str) -> Vec<String> {
    match ok(
        c,
        Operation::ListAliases(ListAliases {
            key_id: Some(key_id),
            limit: 1000,
            marker: None,
        }),
    ) {
        Output::ListAliases(o) => {
            assert!(!o.truncated);
            o.aliases.into_iter().map(|a| a.alias_name).collect()
        }
        other => panic!("{other:?}"),
    }
}

/// Every tag of `key_id` (tests make at most 50).
#[track_caller]
pub fn tags_of(c: &mut Client, key_id: &str) -> Vec<(String, String)> {
    match ok(
        c,
        Operation::ListResourceTags(ListResourceTags {
            key_id,
            limit: 50,
            marker: None,
        }),
    ) {
        Output::ListResourceTags(o) => {
            assert!(!o.truncated);
            let mut t: Vec<_> = o.tags.into_iter().map(|t| (t.key, t.value)).collect();
            t.sort();
            t
        }
        other => panic!("{other:?}"),
    }
}

/// Encrypt of `plaintext` (no context).
pub fn encrypt(c: &mut Client, key_id: &str, plaintext: &[u8]) -> Result<Vec<u8>, ErrorKind> {
    call(
        c,
        Operation::Encrypt(Encrypt {
            key_id,
            plaintext,
            context: vec![],
            ..Default::default()
        }),
    )
    .map(|o| match o {
        Output::Encrypt(e) => e.ciphertext_blob,
        other => panic!("{other:?}"),
    })
}

/// Decrypt of `blob` (no context): its plaintext.
pub fn decrypt(c: &mut Client, blob: &[u8]) -> Result<Vec<u8>, ErrorKind> {
    call(
        c,
        Operation::Decrypt(Decrypt {
            ciphertext_blob: blob,
            key_id: None,
            context: vec![],
            ..Default::default()
        }),
    )
    .map(|o| match o {
        Output::Decrypt(d) => d.plaintext.expose().to_vec(),
        other => panic!("{other:?}"),
    })
}

/// GetParametersForImport with RSAES_OAEP_SHA_256 and RSA_2048: (token,
/// DER public key).
pub fn import_parameters(c: &mut Client, key_id: &str) -> Result<(Vec<u8>, Vec<u8>), ErrorKind> {
    call(
        c,
        Operation::GetParametersForImport(GetParametersForImport {
            key_id,
            wrapping_algorithm: WrappingAlgorithm::RsaesOaepSha256,
            wrapping_key_spec: WrappingKeySpec::Rsa2048,
        }),
    )
    .map(|o| match o {
        Output::GetParametersForImport(p) => (p.import_token, p.public_key),
        other => panic!("{other:?}"),
    })
}

/// `material` encrypted with RSAES-OAEP-SHA-256 under the DER public key,
/// by OpenSSL's command line (as AWS's documentation shows it).
pub fn wrap_for_import(public_key: &[u8], material: &[u8]) -> Vec<u8> {
    crate::import::wrap_with_openssl_cli(
        public_key,
        kmsd::crypto::import::ImportAlgorithm::RsaesOaepSha256,
        material,
    )
}

/// ImportKeyMaterial of `material` (does not expire) with a token and key
/// from [`import_parameters`].
pub fn import_with(
    c: &mut Client,
    key_id: &str,
    (token, public_key): &(Vec<u8>, Vec<u8>),
    material: &[u8],
) -> Answer {
    let wrapped = wrap_for_import(public_key, material);
    call(
        c,
        Operation::ImportKeyMaterial(ImportKeyMaterial {
            key_id,
            import_token: token,
            encrypted_key_material: &wrapped,
            valid_to: None,
            expiration_model: ExpirationModel::KeyMaterialDoesNotExpire,
        }),
    )
}

/// Imports `material` into the EXTERNAL key `key_id` (fresh parameters).
#[track_caller]
pub fn import(c: &mut Client, key_id: &str, material: &[u8]) {
    let params = import_parameters(c, key_id).expect("GetParametersForImport");
    import_with(c, key_id, &params, material).expect("ImportKeyMaterial");
}
