//! Request bodies: one serde input type per operation with AWS's member
//! names (AWS's service model for KMS, 2014-11-01), read into owned
//! storage, then checked as the flatbuffers decoder checks
//! (`kms_proto::codec::check`) into the typed request, which borrows that
//! storage ([`JsonRequest`], a [`Yoke`]).
//!
//! Members kmsd does not know are ignored, as AWS ignores them. Members AWS
//! has and kmsd cannot honour (a custom key store, a Recipient, an
//! asymmetric algorithm...) are refused with UnsupportedOperationException
//! rather than ignored: ignoring them would answer something other than
//! what was asked, and for a grant constraint would make the grant wider.

use super::error::serialization;
use super::scan::scan;
use super::{JsonError, JsonLimits};
use base64::Engine as _;
use kms_proto::codec::check;
use kms_proto::types::limits;
use kms_proto::{
    AuditSeal, CancelKeyDeletion, Context, CreateAlias, CreateGrant, CreateKey, DataKeySpec,
    Decrypt, DeleteAlias, DeleteImportedKeyMaterial, DescribeKey, DisableKey, DisableKeyRotation,
    EnableKey, EnableKeyRotation, Encrypt, ErrorKind, ExpirationModel, GenerateDataKey,
    GenerateRandom, GetKeyPolicy, GetKeyRotationStatus, GetParametersForImport, GetStatus,
    GrantConstraints, GrantOperation, ImportKeyMaterial, KeySpec, KeyUsage, KmsError, ListAliases,
    ListGrants, ListKeyPolicies, ListKeyRotations, ListKeys, ListResourceTags, ListRetirableGrants,
    Operation, Origin, PutKeyPolicy, ReEncrypt, RetireGrant, RevokeGrant, RotateKeyOnDemand,
    ScheduleKeyDeletion, Tag, TagResource, UntagResource, UpdateAlias, UpdateKeyDescription,
    VerifyAuditSeals, WhoAmI, WrappingAlgorithm, WrappingKeySpec,
};
use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::fmt;
use std::mem::size_of;
use yoke::{Yoke, Yokeable};
use zeroize::Zeroizing;

/// A request body decoded into owned storage: the typed request and what
/// it borrows. Plaintext it holds (Encrypt's) is zeroed on drop; its
/// `Debug` is the typed request's, which redacts plaintext and key
/// material.
pub struct JsonRequest {
    decoded: Yoke<Decoded<'static>, Box<Input>>,
    heap: usize,
}

/// The typed request, borrowing the input it was made from.
#[derive(Yokeable)]
struct Decoded<'a>(Operation<'a>);

impl JsonRequest {
    /// Decodes the body of `operation` (the part of `X-Amz-Target` after
    /// `TrentService.`, e.g. `GenerateDataKey`). An empty body (or one of
    /// whitespace only) is `{}`, as the protocol asks of servers. The body
    /// is scanned against `limits` before it is parsed.
    ///
    /// Errors: UnknownOperationException for a name kmsd does not serve;
    /// ValidationException for a body over `limits`, a member out of its
    /// bounds or a required one missing; SerializationException for a body
    /// that is not JSON or not the operation's shape (wrong types, invalid
    /// base64); UnsupportedOperationException for AWS parameters kmsd does
    /// not offer.
    pub fn decode(
        operation: &str,
        body: &[u8],
        limits: &JsonLimits,
    ) -> Result<JsonRequest, JsonError> {
        let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            body
        };
        let parse = Input::parser(operation)?;
        let shape = scan(body, limits)?;
        let input = parse(body, operation)?;
        let decoded: Yoke<Decoded<'static>, Box<Input>> =
            Yoke::try_attach_to_cart(Box::new(input), |input: &Input| input.build().map(Decoded))?;
        let heap = size_of::<Input>()
            + body.len()
            + shape.entries * INPUT_ENTRY_BOUND
            + operation_heap(&decoded.get().0);
        Ok(JsonRequest { decoded, heap })
    }

    /// The typed request the service runs, borrowing from `self`.
    pub fn operation(&self) -> &Operation<'_> {
        &self.decoded.get().0
    }

    /// Heap bytes held, for the daemon's byte budgets: an upper bound
    /// (never less than the truth), from the body's size and its count of
    /// members and elements, and the typed request's own lists.
    pub fn heap_bytes(&self) -> usize {
        self.heap
    }
}

impl fmt::Debug for JsonRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("JsonRequest")
            .field(self.operation())
            .finish()
    }
}

/// The heap an input list can hold per member or element of the body: a
/// `Vec` holds at most four times its elements (serde grows it from
/// nothing, by doubling, from 4), and its largest element is a seal.
const INPUT_ENTRY_BOUND: usize = 4 * max_of(&[
    size_of::<(String, String)>(),
    size_of::<Object<TagIn>>(),
    size_of::<Object<SealIn>>(),
    size_of::<Named<GrantOperation>>(),
]);

const fn max_of(v: &[usize]) -> usize {
    let (mut m, mut i) = (0, 0);
    while i < v.len() {
        if v[i] > m {
            m = v[i];
        }
        i += 1;
    }
    m
}

/// The heap of the typed request's own lists (what it borrows is the
/// input's).
fn operation_heap(op: &Operation<'_>) -> usize {
    fn vec<T>(v: &Vec<T>) -> usize {
        v.capacity() * size_of::<T>()
    }
    match op {
        Operation::CreateKey(r) => vec(&r.tags),
        Operation::DescribeKey(r) => vec(&r.grant_tokens),
        Operation::GenerateDataKey(r) | Operation::GenerateDataKeyWithoutPlaintext(r) => {
            vec(&r.context) + vec(&r.grant_tokens)
        }
        Operation::Encrypt(r) => vec(&r.context) + vec(&r.grant_tokens),
        Operation::Decrypt(r) => vec(&r.context) + vec(&r.grant_tokens),
        Operation::ReEncrypt(r) => {
            vec(&r.source_context) + vec(&r.destination_context) + vec(&r.grant_tokens)
        }
        Operation::TagResource(r) => vec(&r.tags),
        Operation::UntagResource(r) => vec(&r.tag_keys),
        Operation::CreateGrant(r) => {
            vec(&r.operations)
                + vec(&r.grant_tokens)
                + r.constraints.as_ref().map_or(0, |c| {
                    vec(&c.encryption_context_subset) + vec(&c.encryption_context_equals)
                })
        }
        Operation::VerifyAuditSeals(r) => vec(&r.seals),
        _ => 0,
    }
}

// ------------------------------------------------------------- member types

/// A blob: base64 (standard alphabet, padded) in the body, its bytes here,
/// in a buffer zeroed on drop (a blob may be plaintext). Read from the
/// body's raw text, so that a string with escapes (`\/` from encoders that
/// escape slashes) is unescaped here, into a zeroed buffer, and never
/// through serde_json's scratch buffer.
struct Blob(Zeroizing<Vec<u8>>);

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = <&'de RawValue>::deserialize(d)?;
        decode_blob(raw.get()).map(Blob).map_err(de::Error::custom)
    }
}

const BAD_BASE64: &str = "a blob is not valid base64 (standard alphabet, padded)";

/// The bytes of a blob written `text` (a JSON value as written).
fn decode_blob(text: &str) -> Result<Zeroizing<Vec<u8>>, &'static str> {
    let Some(inner) = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .map(str::as_bytes)
    else {
        return Err("a blob must be a base64 string");
    };
    if memchr::memchr(b'\\', inner).is_none() {
        return base64_decode(inner);
    }
    // Base64 is ASCII: an escape that is not of an ASCII character leaves a
    // byte the decoder refuses.
    let mut text = Zeroizing::new(Vec::with_capacity(inner.len()));
    let mut i = 0;
    while i < inner.len() {
        let b = inner[i];
        i += 1;
        if b != b'\\' {
            text.push(b);
            continue;
        }
        let Some(&e) = inner.get(i) else {
            return Err(BAD_BASE64);
        };
        i += 1;
        text.push(match e {
            b'u' => {
                let hex = inner.get(i..i + 4).ok_or(BAD_BASE64)?;
                i += 4;
                let hex = std::str::from_utf8(hex).map_err(|_| BAD_BASE64)?;
                match u16::from_str_radix(hex, 16) {
                    Ok(c) if c < 0x80 => c as u8,
                    _ => 0xff,
                }
            }
            b'"' | b'\\' | b'/' => e,
            _ => 0xff,
        });
    }
    base64_decode(&text)
}

fn base64_decode(text: &[u8]) -> Result<Zeroizing<Vec<u8>>, &'static str> {
    // Sized first and never grown, so no unzeroed copy is left behind.
    let mut out = Zeroizing::new(vec![0u8; base64::decoded_len_estimate(text.len())]);
    let n = base64::engine::general_purpose::STANDARD
        .decode_slice(text, &mut out[..])
        .map_err(|_| BAD_BASE64)?;
    out.truncate(n);
    Ok(out)
}

/// A member that must be a JSON object. serde's derived structs also
/// read an array (of the members in order); AWS's shapes are objects only.
struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Object<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Object<T>, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Object)
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// An encryption context (or a grant constraint): a JSON object of string
/// values, as pairs in the body's order (the daemon sorts and checks
/// them, as it does the flatbuffers encoding's).
struct Pairs(Vec<(String, String)>);

impl<'de> Deserialize<'de> for Pairs {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Pairs;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of string values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Pairs, A::Error> {
                let mut pairs = Vec::new();
                while let Some(pair) = map.next_entry::<String, String>()? {
                    pairs.push(pair);
                }
                Ok(Pairs(pairs))
            }
        }
        d.deserialize_map(V)
    }
}

/// A timestamp: epoch seconds, an integer or a fraction (AWS JSON's
/// default timestamp format), floored to whole seconds.
struct Timestamp(i64);

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Timestamp;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("epoch seconds (a number)")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Timestamp, E> {
                Ok(Timestamp(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Timestamp, E> {
                i64::try_from(v)
                    .map(Timestamp)
                    .map_err(|_| E::custom("a timestamp is out of range"))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Timestamp, E> {
                let s = v.floor();
                // i64's range is [-2^63, 2^63): both bounds are exact f64s.
                if s.is_finite() && s >= -(2f64.powi(63)) && s < 2f64.powi(63) {
                    Ok(Timestamp(s as i64))
                } else {
                    Err(E::custom("a timestamp is out of range"))
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A value of one of AWS's enums as read: one kmsd serves, one AWS has that
/// kmsd does not (UnsupportedOperationException), or one AWS does not have
/// (ValidationException, as the flatbuffers decoder answers an unknown
/// enum value).
enum Named<T> {
    Served(T),
    Unsupported(&'static str),
    Unknown,
}

/// One of AWS's enums, as kmsd serves it.
trait AwsEnum: Sized + Copy {
    /// AWS's name of the enum (its shape).
    const NAME: &'static str;
    /// Every value AWS's model has.
    const VALUES: &'static [&'static str];
    /// What kmsd serves, for the message that refuses the rest.
    const SERVED: &'static str;
    /// The value `name` names, if kmsd serves it.
    fn served(name: &str) -> Option<Self>;
}

impl<'de, T: AwsEnum> Deserialize<'de> for Named<T> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<T: AwsEnum> Visitor<'_> for V<T> {
            type Value = Named<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Named<T>, E> {
                Ok(match T::served(s) {
                    Some(v) => Named::Served(v),
                    None => T::VALUES
                        .iter()
                        .find(|v| **v == s)
                        .map_or(Named::Unknown, |v| Named::Unsupported(v)),
                })
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

impl<T: AwsEnum> Named<T> {
    /// The value kmsd serves, or why not.
    fn get(&self, field: &dyn fmt::Display) -> Result<T, KmsError> {
        match self {
            Named::Served(v) => Ok(*v),
            Named::Unsupported(name) => Err(KmsError::new(
                ErrorKind::UnsupportedOperation,
                format!("{field} {name} is not supported: {}", T::SERVED),
            )),
            Named::Unknown => Err(KmsError::validation(format!(
                "{field}: unknown {}; AWS's values are {}",
                T::NAME,
                T::VALUES.join(", ")
            ))),
        }
    }
}

/// An optional enum member.
fn named<T: AwsEnum>(v: &Option<Named<T>>, field: &str) -> Result<Option<T>, KmsError> {
    v.as_ref().map(|n| n.get(&field)).transpose()
}

impl AwsEnum for KeySpec {
    const NAME: &'static str = "KeySpec";
    const VALUES: &'static [&'static str] = &[
        "RSA_2048",
        "RSA_3072",
        "RSA_4096",
        "ECC_NIST_P256",
        "ECC_NIST_P384",
        "ECC_NIST_P521",
        "ECC_SECG_P256K1",
        "SYMMETRIC_DEFAULT",
        "HMAC_224",
        "HMAC_256",
        "HMAC_384",
        "HMAC_512",
        "SM2",
        "ML_DSA_44",
        "ML_DSA_65",
        "ML_DSA_87",
        "ECC_NIST_EDWARDS25519",
    ];
    const SERVED: &'static str = "kmsd's keys are SYMMETRIC_DEFAULT";
    fn served(name: &str) -> Option<Self> {
        (name == "SYMMETRIC_DEFAULT").then_some(KeySpec::SymmetricDefault)
    }
}

impl AwsEnum for KeyUsage {
    const NAME: &'static str = "KeyUsageType";
    const VALUES: &'static [&'static str] = &[
        "SIGN_VERIFY",
        "ENCRYPT_DECRYPT",
        "GENERATE_VERIFY_MAC",
        "KEY_AGREEMENT",
    ];
    const SERVED: &'static str = "kmsd's keys are ENCRYPT_DECRYPT";
    fn served(name: &str) -> Option<Self> {
        (name == "ENCRYPT_DECRYPT").then_some(KeyUsage::EncryptDecrypt)
    }
}

impl AwsEnum for Origin {
    const NAME: &'static str = "OriginType";
    const VALUES: &'static [&'static str] =
        &["AWS_KMS", "EXTERNAL", "AWS_CLOUDHSM", "EXTERNAL_KEY_STORE"];
    const SERVED: &'static str = "kmsd makes AWS_KMS, EXTERNAL and AWS_CLOUDHSM (HSM-only) keys";
    fn served(name: &str) -> Option<Self> {
        match name {
            "AWS_KMS" => Some(Origin::Kmsd),
            "EXTERNAL" => Some(Origin::External),
            "AWS_CLOUDHSM" => Some(Origin::Hsm),
            _ => None,
        }
    }
}

impl AwsEnum for DataKeySpec {
    const NAME: &'static str = "DataKeySpec";
    const VALUES: &'static [&'static str] = &["AES_256", "AES_128"];
    const SERVED: &'static str = "AES_256 or AES_128";
    fn served(name: &str) -> Option<Self> {
        match name {
            "AES_256" => Some(DataKeySpec::Aes256),
            "AES_128" => Some(DataKeySpec::Aes128),
            _ => None,
        }
    }
}

/// AWS's EncryptionAlgorithmSpec: kmsd's keys are symmetric, so the only
/// value it serves is SYMMETRIC_DEFAULT, which is what it does anyway.
#[derive(Clone, Copy)]
struct SymmetricDefault;

impl AwsEnum for SymmetricDefault {
    const NAME: &'static str = "EncryptionAlgorithmSpec";
    const VALUES: &'static [&'static str] = &[
        "SYMMETRIC_DEFAULT",
        "RSAES_OAEP_SHA_1",
        "RSAES_OAEP_SHA_256",
        "SM2PKE",
    ];
    const SERVED: &'static str = "kmsd's keys are symmetric (SYMMETRIC_DEFAULT)";
    fn served(name: &str) -> Option<Self> {
        (name == "SYMMETRIC_DEFAULT").then_some(SymmetricDefault)
    }
}

impl AwsEnum for WrappingAlgorithm {
    const NAME: &'static str = "AlgorithmSpec";
    const VALUES: &'static [&'static str] = &[
        "RSAES_PKCS1_V1_5",
        "RSAES_OAEP_SHA_1",
        "RSAES_OAEP_SHA_256",
        "RSA_AES_KEY_WRAP_SHA_1",
        "RSA_AES_KEY_WRAP_SHA_256",
        "SM2PKE",
    ];
    // Every RSA algorithm decodes: the daemon refuses the ones it does not
    // offer, with its own message (as for the flatbuffers encoding).
    const SERVED: &'static str = "kmsd wraps with RSA";
    fn served(name: &str) -> Option<Self> {
        WrappingAlgorithm::from_name(name)
    }
}

impl AwsEnum for WrappingKeySpec {
    const NAME: &'static str = "WrappingKeySpec";
    const VALUES: &'static [&'static str] = &["RSA_2048", "RSA_3072", "RSA_4096", "SM2"];
    const SERVED: &'static str = "kmsd wraps with RSA";
    fn served(name: &str) -> Option<Self> {
        WrappingKeySpec::from_name(name)
    }
}

impl AwsEnum for ExpirationModel {
    const NAME: &'static str = "ExpirationModelType";
    const VALUES: &'static [&'static str] =
        &["KEY_MATERIAL_EXPIRES", "KEY_MATERIAL_DOES_NOT_EXPIRE"];
    const SERVED: &'static str = "";
    fn served(name: &str) -> Option<Self> {
        ExpirationModel::from_name(name)
    }
}

impl AwsEnum for GrantOperation {
    const NAME: &'static str = "GrantOperation";
    // kms_proto's GrantOperation has every value AWS's model has.
    const VALUES: &'static [&'static str] = &[];
    const SERVED: &'static str = "";
    fn served(name: &str) -> Option<Self> {
        GrantOperation::from_name(name)
    }
}

/// ListKeyRotations' IncludeKeyMaterial: kmsd lists rotations only (AWS's
/// default, ROTATIONS_ONLY).
#[derive(Clone, Copy)]
struct RotationsOnly;

impl AwsEnum for RotationsOnly {
    const NAME: &'static str = "IncludeKeyMaterial";
    const VALUES: &'static [&'static str] = &["ALL_KEY_MATERIAL", "ROTATIONS_ONLY"];
    const SERVED: &'static str = "kmsd lists rotations only (ROTATIONS_ONLY)";
    fn served(name: &str) -> Option<Self> {
        (name == "ROTATIONS_ONLY").then_some(RotationsOnly)
    }
}

/// ImportKeyMaterial's ImportType. Either value is accepted: kmsd imports
/// a key's first material, or the same material again, which is what AWS's
/// defaults do when the member is absent; new material for a key that has
/// some is refused by the daemon (IncorrectKeyMaterialException).
#[derive(Clone, Copy)]
struct ImportType;

impl AwsEnum for ImportType {
    const NAME: &'static str = "ImportType";
    const VALUES: &'static [&'static str] = &["NEW_KEY_MATERIAL", "EXISTING_KEY_MATERIAL"];
    const SERVED: &'static str = "";
    fn served(name: &str) -> Option<Self> {
        Self::VALUES.contains(&name).then_some(ImportType)
    }
}

// -------------------------------------------------------------- input types

/// Declares one input type: AWS's member names are the fields' names in
/// PascalCase; every member is optional in the body (presence is checked
/// when the typed request is built, with the flatbuffers decoder's
/// messages); members not listed are ignored.
macro_rules! input {
    ($(#[$meta:meta])* $name:ident { $($field:ident: $ty:ty),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Deserialize, Default)]
        #[serde(rename_all = "PascalCase", default, expecting = "a JSON object")]
        struct $name {
            $($field: Option<$ty>,)*
        }
    };
}

input!(CreateKeyIn {
    policy: String,
    description: String,
    key_usage: Named<KeyUsage>,
    customer_master_key_spec: Named<KeySpec>,
    key_spec: Named<KeySpec>,
    origin: Named<Origin>,
    custom_key_store_id: IgnoredAny,
    bypass_policy_lockout_safety_check: bool,
    tags: Vec<Object<TagIn>>,
    multi_region: bool,
    xks_key_id: IgnoredAny,
});

input!(TagIn {
    tag_key: String,
    tag_value: String,
});

input!(DescribeKeyIn {
    key_id: String,
    grant_tokens: Vec<String>,
});

input!(ListKeysIn {
    limit: u32,
    marker: String,
});

input!(
    /// GenerateDataKey and GenerateDataKeyWithoutPlaintext.
    GenerateDataKeyIn {
        key_id: String,
        encryption_context: Pairs,
        number_of_bytes: u32,
        key_spec: Named<DataKeySpec>,
        grant_tokens: Vec<String>,
        recipient: IgnoredAny,
        dry_run: bool,
    }
);

input!(EncryptIn {
    key_id: String,
    plaintext: Blob,
    encryption_context: Pairs,
    grant_tokens: Vec<String>,
    encryption_algorithm: Named<SymmetricDefault>,
    dry_run: bool,
});

input!(DecryptIn {
    ciphertext_blob: Blob,
    encryption_context: Pairs,
    grant_tokens: Vec<String>,
    key_id: String,
    encryption_algorithm: Named<SymmetricDefault>,
    recipient: IgnoredAny,
    dry_run: bool,
    dry_run_modifiers: Vec<IgnoredAny>,
});

input!(ReEncryptIn {
    ciphertext_blob: Blob,
    source_encryption_context: Pairs,
    source_key_id: String,
    destination_key_id: String,
    destination_encryption_context: Pairs,
    source_encryption_algorithm: Named<SymmetricDefault>,
    destination_encryption_algorithm: Named<SymmetricDefault>,
    grant_tokens: Vec<String>,
    dry_run: bool,
    dry_run_modifiers: Vec<IgnoredAny>,
});

input!(GenerateRandomIn {
    number_of_bytes: u32,
    custom_key_store_id: IgnoredAny,
    recipient: IgnoredAny,
});

input!(UpdateKeyDescriptionIn {
    key_id: String,
    description: String,
});

input!(TagResourceIn {
    key_id: String,
    tags: Vec<Object<TagIn>>,
});

input!(UntagResourceIn {
    key_id: String,
    tag_keys: Vec<String>,
});

input!(
    /// ListResourceTags, ListKeyPolicies.
    KeyPageIn {
        key_id: String,
        limit: u32,
        marker: String,
    }
);

input!(
    /// CreateAlias and UpdateAlias.
    AliasIn {
        alias_name: String,
        target_key_id: String,
    }
);

input!(DeleteAliasIn { alias_name: String });

input!(ListAliasesIn {
    key_id: String,
    limit: u32,
    marker: String,
});

input!(
    /// The operations whose only member is the key: EnableKey,
    /// DisableKey, CancelKeyDeletion, DisableKeyRotation,
    /// GetKeyRotationStatus, RotateKeyOnDemand.
    KeyIdIn { key_id: String }
);

input!(ScheduleKeyDeletionIn {
    key_id: String,
    pending_window_in_days: u32,
});

input!(EnableKeyRotationIn {
    key_id: String,
    rotation_period_in_days: u32,
});

input!(ListKeyRotationsIn {
    key_id: String,
    include_key_material: Named<RotationsOnly>,
    limit: u32,
    marker: String,
});

input!(GetParametersForImportIn {
    key_id: String,
    wrapping_algorithm: Named<WrappingAlgorithm>,
    wrapping_key_spec: Named<WrappingKeySpec>,
});

input!(ImportKeyMaterialIn {
    key_id: String,
    import_token: Blob,
    encrypted_key_material: Blob,
    valid_to: Timestamp,
    expiration_model: Named<ExpirationModel>,
    import_type: Named<ImportType>,
    key_material_description: IgnoredAny,
    key_material_id: IgnoredAny,
});

input!(DeleteImportedKeyMaterialIn {
    key_id: String,
    key_material_id: IgnoredAny,
});

input!(PutKeyPolicyIn {
    key_id: String,
    policy_name: String,
    policy: String,
    bypass_policy_lockout_safety_check: bool,
});

input!(GetKeyPolicyIn {
    key_id: String,
    policy_name: String,
});

input!(CreateGrantIn {
    key_id: String,
    grantee_principal: String,
    retiring_principal: String,
    operations: Vec<Named<GrantOperation>>,
    constraints: ConstraintsIn,
    grant_tokens: Vec<String>,
    name: String,
    dry_run: bool,
    grantee_service_principal: IgnoredAny,
    retiring_service_principal: IgnoredAny,
});

input!(ListGrantsIn {
    limit: u32,
    marker: String,
    key_id: String,
    grant_id: String,
    grantee_principal: String,
    grantee_service_principal: IgnoredAny,
});

input!(ListRetirableGrantsIn {
    limit: u32,
    marker: String,
    retiring_principal: String,
});

input!(RetireGrantIn {
    grant_token: String,
    key_id: String,
    grant_id: String,
    dry_run: bool,
});

input!(RevokeGrantIn {
    key_id: String,
    grant_id: String,
    dry_run: bool,
});

input!(
    /// WhoAmI and GetStatus (kmsd's own): no members.
    EmptyIn {}
);

input!(
    /// VerifyAuditSeals (kmsd's own): the flatbuffers schema's names in
    /// PascalCase.
    VerifyAuditSealsIn { seals: Vec<Object<SealIn>> }
);

input!(SealIn {
    seq: u64,
    prev_hash: Blob,
    mac: Blob,
});

/// A grant's Constraints. Unlike elsewhere, a member kmsd does not know
/// is refused (UnsupportedOperationException), not ignored: a constraint
/// ignored would make the grant allow more than its creator asked
/// (AWS's SourceArn, and whatever AWS adds).
#[derive(Default)]
struct ConstraintsIn {
    encryption_context_subset: Option<Pairs>,
    encryption_context_equals: Option<Pairs>,
    /// The first member kmsd does not enforce, if any.
    unsupported: Option<&'static str>,
}

impl<'de> Deserialize<'de> for ConstraintsIn {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ConstraintsIn;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ConstraintsIn, A::Error> {
                let mut c = ConstraintsIn::default();
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    match &*key {
                        "EncryptionContextSubset" => {
                            c.encryption_context_subset = map.next_value()?;
                        }
                        "EncryptionContextEquals" => {
                            c.encryption_context_equals = map.next_value()?;
                        }
                        other => {
                            // A null member is an absent one.
                            if map.next_value::<Option<IgnoredAny>>()?.is_some() {
                                c.unsupported.get_or_insert(if other == "SourceArn" {
                                    "Constraints.SourceArn"
                                } else {
                                    "a member of Constraints other than EncryptionContextSubset \
                                     and EncryptionContextEquals"
                                });
                            }
                        }
                    }
                }
                Ok(c)
            }
        }
        d.deserialize_map(V)
    }
}

/// One operation's input, as parsed.
enum Input {
    CreateKey(CreateKeyIn),
    DescribeKey(DescribeKeyIn),
    ListKeys(ListKeysIn),
    GenerateDataKey(GenerateDataKeyIn),
    GenerateDataKeyWithoutPlaintext(GenerateDataKeyIn),
    Encrypt(EncryptIn),
    Decrypt(DecryptIn),
    ReEncrypt(ReEncryptIn),
    GenerateRandom(GenerateRandomIn),
    UpdateKeyDescription(UpdateKeyDescriptionIn),
    TagResource(TagResourceIn),
    UntagResource(UntagResourceIn),
    ListResourceTags(KeyPageIn),
    CreateAlias(AliasIn),
    UpdateAlias(AliasIn),
    DeleteAlias(DeleteAliasIn),
    ListAliases(ListAliasesIn),
    EnableKey(KeyIdIn),
    DisableKey(KeyIdIn),
    ScheduleKeyDeletion(ScheduleKeyDeletionIn),
    CancelKeyDeletion(KeyIdIn),
    EnableKeyRotation(EnableKeyRotationIn),
    DisableKeyRotation(KeyIdIn),
    GetKeyRotationStatus(KeyIdIn),
    RotateKeyOnDemand(KeyIdIn),
    ListKeyRotations(ListKeyRotationsIn),
    GetParametersForImport(GetParametersForImportIn),
    ImportKeyMaterial(ImportKeyMaterialIn),
    DeleteImportedKeyMaterial(DeleteImportedKeyMaterialIn),
    WhoAmI(EmptyIn),
    PutKeyPolicy(PutKeyPolicyIn),
    GetKeyPolicy(GetKeyPolicyIn),
    ListKeyPolicies(KeyPageIn),
    CreateGrant(CreateGrantIn),
    ListGrants(ListGrantsIn),
    ListRetirableGrants(ListRetirableGrantsIn),
    RetireGrant(RetireGrantIn),
    RevokeGrant(RevokeGrantIn),
    GetStatus(EmptyIn),
    VerifyAuditSeals(VerifyAuditSealsIn),
}

/// Parses a body (the first argument) as one operation's (named by the
/// second) input.
type Parser = fn(&[u8], &str) -> Result<Input, KmsError>;

/// AWS KMS's operations that kmsd does not serve (AWS's model, 2014-11-01),
/// named in the UnknownOperationException that refuses them.
const AWS_ONLY_OPERATIONS: &[&str] = &[
    "ConnectCustomKeyStore",
    "CreateCustomKeyStore",
    "DeleteCustomKeyStore",
    "DeriveSharedSecret",
    "DescribeCustomKeyStores",
    "DisconnectCustomKeyStore",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
    "GenerateMac",
    "GetKeyLastUsage",
    "GetPublicKey",
    "ReplicateKey",
    "Sign",
    "UpdateCustomKeyStore",
    "UpdatePrimaryRegion",
    "Verify",
    "VerifyMac",
];

impl Input {
    /// The parser of `operation`'s input, or UnknownOperationException.
    fn parser(operation: &str) -> Result<Parser, JsonError> {
        fn from<'de, T: Deserialize<'de>>(body: &'de [u8], operation: &str) -> Result<T, KmsError> {
            serde_json::from_slice(body)
                .map(|Object(input)| input)
                .map_err(|e| serialization(operation, &e))
        }
        Ok(match operation {
            "CreateKey" => |b, o| from(b, o).map(Input::CreateKey),
            "DescribeKey" => |b, o| from(b, o).map(Input::DescribeKey),
            "ListKeys" => |b, o| from(b, o).map(Input::ListKeys),
            "GenerateDataKey" => |b, o| from(b, o).map(Input::GenerateDataKey),
            "GenerateDataKeyWithoutPlaintext" => {
                |b, o| from(b, o).map(Input::GenerateDataKeyWithoutPlaintext)
            }
            "Encrypt" => |b, o| from(b, o).map(Input::Encrypt),
            "Decrypt" => |b, o| from(b, o).map(Input::Decrypt),
            "ReEncrypt" => |b, o| from(b, o).map(Input::ReEncrypt),
            "GenerateRandom" => |b, o| from(b, o).map(Input::GenerateRandom),
            "UpdateKeyDescription" => |b, o| from(b, o).map(Input::UpdateKeyDescription),
            "TagResource" => |b, o| from(b, o).map(Input::TagResource),
            "UntagResource" => |b, o| from(b, o).map(Input::UntagResource),
            "ListResourceTags" => |b, o| from(b, o).map(Input::ListResourceTags),
            "CreateAlias" => |b, o| from(b, o).map(Input::CreateAlias),
            "UpdateAlias" => |b, o| from(b, o).map(Input::UpdateAlias),
            "DeleteAlias" => |b, o| from(b, o).map(Input::DeleteAlias),
            "ListAliases" => |b, o| from(b, o).map(Input::ListAliases),
            "EnableKey" => |b, o| from(b, o).map(Input::EnableKey),
            "DisableKey" => |b, o| from(b, o).map(Input::DisableKey),
            "ScheduleKeyDeletion" => |b, o| from(b, o).map(Input::ScheduleKeyDeletion),
            "CancelKeyDeletion" => |b, o| from(b, o).map(Input::CancelKeyDeletion),
            "EnableKeyRotation" => |b, o| from(b, o).map(Input::EnableKeyRotation),
            "DisableKeyRotation" => |b, o| from(b, o).map(Input::DisableKeyRotation),
            "GetKeyRotationStatus" => |b, o| from(b, o).map(Input::GetKeyRotationStatus),
            "RotateKeyOnDemand" => |b, o| from(b, o).map(Input::RotateKeyOnDemand),
            "ListKeyRotations" => |b, o| from(b, o).map(Input::ListKeyRotations),
            "GetParametersForImport" => |b, o| from(b, o).map(Input::GetParametersForImport),
            "ImportKeyMaterial" => |b, o| from(b, o).map(Input::ImportKeyMaterial),
            "DeleteImportedKeyMaterial" => |b, o| from(b, o).map(Input::DeleteImportedKeyMaterial),
            "WhoAmI" => |b, o| from(b, o).map(Input::WhoAmI),
            "PutKeyPolicy" => |b, o| from(b, o).map(Input::PutKeyPolicy),
            "GetKeyPolicy" => |b, o| from(b, o).map(Input::GetKeyPolicy),
            "ListKeyPolicies" => |b, o| from(b, o).map(Input::ListKeyPolicies),
            "CreateGrant" => |b, o| from(b, o).map(Input::CreateGrant),
            "ListGrants" => |b, o| from(b, o).map(Input::ListGrants),
            "ListRetirableGrants" => |b, o| from(b, o).map(Input::ListRetirableGrants),
            "RetireGrant" => |b, o| from(b, o).map(Input::RetireGrant),
            "RevokeGrant" => |b, o| from(b, o).map(Input::RevokeGrant),
            "GetStatus" => |b, o| from(b, o).map(Input::GetStatus),
            "VerifyAuditSeals" => |b, o| from(b, o).map(Input::VerifyAuditSeals),
            other => return Err(unknown_operation(other)),
        })
    }

    /// Checks the input as the flatbuffers decoder checks its tables, and
    /// makes the typed request.
    fn build(&self) -> Result<Operation<'_>, KmsError> {
        Ok(match self {
            Input::CreateKey(r) => {
                unsupported(r.custom_key_store_id.is_some(), "CustomKeyStoreId")?;
                unsupported(r.xks_key_id.is_some(), "XksKeyId")?;
                unsupported(r.multi_region == Some(true), "MultiRegion")?;
                let key_spec = match (
                    named(&r.key_spec, "KeySpec")?,
                    named(&r.customer_master_key_spec, "CustomerMasterKeySpec")?,
                ) {
                    (Some(_), Some(_)) => {
                        return Err(KmsError::validation(
                            "specify KeySpec or CustomerMasterKeySpec (its deprecated name), \
                             not both",
                        ))
                    }
                    (spec, cmk_spec) => spec.or(cmk_spec).unwrap_or_default(),
                };
                Operation::CreateKey(CreateKey {
                    description: r.description.as_deref().unwrap_or(""),
                    key_usage: named(&r.key_usage, "KeyUsage")?.unwrap_or_default(),
                    key_spec,
                    origin: named(&r.origin, "Origin")?.unwrap_or_default(),
                    tags: tags(&r.tags, "Tags", 0)?,
                    policy: r.policy.as_deref().map(check::policy).transpose()?,
                    bypass_policy_lockout_safety_check: r
                        .bypass_policy_lockout_safety_check
                        .unwrap_or(false),
                })
            }
            Input::DescribeKey(r) => Operation::DescribeKey(DescribeKey {
                key_id: key_id(&r.key_id)?,
                grant_tokens: grant_tokens(&r.grant_tokens)?,
            }),
            Input::ListKeys(r) => Operation::ListKeys(ListKeys {
                limit: limit(r.limit, limits::MAX_LIST_LIMIT)?,
                marker: r.marker.as_deref(),
            }),
            Input::GenerateDataKey(r) => Operation::GenerateDataKey(generate_data_key(r)?),
            Input::GenerateDataKeyWithoutPlaintext(r) => {
                Operation::GenerateDataKeyWithoutPlaintext(generate_data_key(r)?)
            }
            Input::Encrypt(r) => {
                named(&r.encryption_algorithm, "EncryptionAlgorithm")?;
                Operation::Encrypt(Encrypt {
                    key_id: key_id(&r.key_id)?,
                    // Absent is empty: the daemon refuses it by its size, as
                    // it does the flatbuffers encoding's.
                    plaintext: blob(&r.plaintext),
                    context: context(&r.encryption_context)?,
                    grant_tokens: grant_tokens(&r.grant_tokens)?,
                    dry_run: r.dry_run.unwrap_or(false),
                })
            }
            Input::Decrypt(r) => {
                named(&r.encryption_algorithm, "EncryptionAlgorithm")?;
                unsupported(r.recipient.is_some(), "Recipient")?;
                unsupported(
                    r.dry_run_modifiers.as_ref().is_some_and(|m| !m.is_empty()),
                    "DryRunModifiers",
                )?;
                Operation::Decrypt(Decrypt {
                    ciphertext_blob: blob(&r.ciphertext_blob),
                    key_id: r.key_id.as_deref(),
                    context: context(&r.encryption_context)?,
                    grant_tokens: grant_tokens(&r.grant_tokens)?,
                    dry_run: r.dry_run.unwrap_or(false),
                })
            }
            Input::ReEncrypt(r) => {
                named(&r.source_encryption_algorithm, "SourceEncryptionAlgorithm")?;
                named(
                    &r.destination_encryption_algorithm,
                    "DestinationEncryptionAlgorithm",
                )?;
                unsupported(
                    r.dry_run_modifiers.as_ref().is_some_and(|m| !m.is_empty()),
                    "DryRunModifiers",
                )?;
                Operation::ReEncrypt(ReEncrypt {
                    ciphertext_blob: blob(&r.ciphertext_blob),
                    source_key_id: r.source_key_id.as_deref(),
                    source_context: context(&r.source_encryption_context)?,
                    destination_key_id: check::required(
                        r.destination_key_id.as_deref(),
                        "DestinationKeyId",
                    )?,
                    destination_context: context(&r.destination_encryption_context)?,
                    grant_tokens: grant_tokens(&r.grant_tokens)?,
                    dry_run: r.dry_run.unwrap_or(false),
                })
            }
            Input::GenerateRandom(r) => {
                unsupported(r.custom_key_store_id.is_some(), "CustomKeyStoreId")?;
                unsupported(r.recipient.is_some(), "Recipient")?;
                // Absent is 0, which the daemon refuses by its range.
                Operation::GenerateRandom(GenerateRandom {
                    number_of_bytes: r.number_of_bytes.unwrap_or(0),
                })
            }
            Input::UpdateKeyDescription(r) => {
                Operation::UpdateKeyDescription(UpdateKeyDescription {
                    key_id: key_id(&r.key_id)?,
                    // AWS requires the member; an empty description clears it.
                    description: check::required_chars(
                        r.description.as_deref(),
                        "Description",
                        0,
                        limits::MAX_DESCRIPTION_LEN,
                    )?,
                })
            }
            Input::TagResource(r) => Operation::TagResource(TagResource {
                key_id: key_id(&r.key_id)?,
                tags: tags(&r.tags, "Tags", 1)?,
            }),
            Input::UntagResource(r) => {
                let key_id = key_id(&r.key_id)?;
                let keys = r.tag_keys.as_deref().unwrap_or_default();
                check::count(keys.len(), "TagKeys", 1, limits::MAX_TAGS_PER_REQUEST)?;
                let tag_keys = keys
                    .iter()
                    .enumerate()
                    .map(|(i, k)| check::tag_key(i, k).map(|()| k.as_str()))
                    .collect::<Result<_, _>>()?;
                Operation::UntagResource(UntagResource { key_id, tag_keys })
            }
            Input::ListResourceTags(r) => Operation::ListResourceTags(ListResourceTags {
                key_id: key_id(&r.key_id)?,
                limit: limit(r.limit, limits::MAX_LIST_TAGS_LIMIT)?,
                marker: r.marker.as_deref(),
            }),
            Input::CreateAlias(r) => Operation::CreateAlias(CreateAlias {
                alias_name: check::alias_name(r.alias_name.as_deref())?,
                target_key_id: check::required(r.target_key_id.as_deref(), "TargetKeyId")?,
            }),
            Input::UpdateAlias(r) => Operation::UpdateAlias(UpdateAlias {
                alias_name: check::alias_name(r.alias_name.as_deref())?,
                target_key_id: check::required(r.target_key_id.as_deref(), "TargetKeyId")?,
            }),
            Input::DeleteAlias(r) => Operation::DeleteAlias(DeleteAlias {
                alias_name: check::alias_name(r.alias_name.as_deref())?,
            }),
            Input::ListAliases(r) => Operation::ListAliases(ListAliases {
                key_id: r.key_id.as_deref(),
                limit: limit(r.limit, limits::MAX_LIST_ALIASES_LIMIT)?,
                marker: r.marker.as_deref(),
            }),
            Input::EnableKey(r) => Operation::EnableKey(EnableKey {
                key_id: key_id(&r.key_id)?,
            }),
            Input::DisableKey(r) => Operation::DisableKey(DisableKey {
                key_id: key_id(&r.key_id)?,
            }),
            Input::ScheduleKeyDeletion(r) => Operation::ScheduleKeyDeletion(ScheduleKeyDeletion {
                key_id: key_id(&r.key_id)?,
                pending_window_in_days: r.pending_window_in_days,
            }),
            Input::CancelKeyDeletion(r) => Operation::CancelKeyDeletion(CancelKeyDeletion {
                key_id: key_id(&r.key_id)?,
            }),
            Input::EnableKeyRotation(r) => Operation::EnableKeyRotation(EnableKeyRotation {
                key_id: key_id(&r.key_id)?,
                rotation_period_in_days: r.rotation_period_in_days,
            }),
            Input::DisableKeyRotation(r) => Operation::DisableKeyRotation(DisableKeyRotation {
                key_id: key_id(&r.key_id)?,
            }),
            Input::GetKeyRotationStatus(r) => {
                Operation::GetKeyRotationStatus(GetKeyRotationStatus {
                    key_id: key_id(&r.key_id)?,
                })
            }
            Input::RotateKeyOnDemand(r) => Operation::RotateKeyOnDemand(RotateKeyOnDemand {
                key_id: key_id(&r.key_id)?,
            }),
            Input::ListKeyRotations(r) => {
                named(&r.include_key_material, "IncludeKeyMaterial")?;
                Operation::ListKeyRotations(ListKeyRotations {
                    key_id: key_id(&r.key_id)?,
                    limit: limit(r.limit, limits::MAX_LIST_LIMIT)?,
                    marker: r.marker.as_deref(),
                })
            }
            Input::GetParametersForImport(r) => {
                Operation::GetParametersForImport(GetParametersForImport {
                    key_id: key_id(&r.key_id)?,
                    wrapping_algorithm: named(&r.wrapping_algorithm, "WrappingAlgorithm")?
                        .ok_or_else(|| KmsError::validation("WrappingAlgorithm is required"))?,
                    wrapping_key_spec: named(&r.wrapping_key_spec, "WrappingKeySpec")?
                        .ok_or_else(|| KmsError::validation("WrappingKeySpec is required"))?,
                })
            }
            Input::ImportKeyMaterial(r) => {
                named(&r.import_type, "ImportType")?;
                unsupported(
                    r.key_material_description.is_some(),
                    "KeyMaterialDescription",
                )?;
                unsupported(r.key_material_id.is_some(), "KeyMaterialId")?;
                Operation::ImportKeyMaterial(ImportKeyMaterial {
                    key_id: key_id(&r.key_id)?,
                    import_token: check::required_bytes(
                        blob(&r.import_token),
                        "ImportToken",
                        limits::MAX_IMPORT_TOKEN,
                    )?,
                    encrypted_key_material: check::required_bytes(
                        blob(&r.encrypted_key_material),
                        "EncryptedKeyMaterial",
                        limits::MAX_ENCRYPTED_KEY_MATERIAL,
                    )?,
                    valid_to: r.valid_to.as_ref().map(|t| t.0),
                    expiration_model: named(&r.expiration_model, "ExpirationModel")?
                        .unwrap_or_default(),
                })
            }
            Input::DeleteImportedKeyMaterial(r) => {
                unsupported(r.key_material_id.is_some(), "KeyMaterialId")?;
                Operation::DeleteImportedKeyMaterial(DeleteImportedKeyMaterial {
                    key_id: key_id(&r.key_id)?,
                })
            }
            Input::WhoAmI(EmptyIn {}) => Operation::WhoAmI(WhoAmI),
            Input::PutKeyPolicy(r) => Operation::PutKeyPolicy(PutKeyPolicy {
                key_id: key_id(&r.key_id)?,
                policy_name: check::policy_name(r.policy_name.as_deref())?,
                policy: check::policy(check::required(r.policy.as_deref(), "Policy")?)?,
                bypass_policy_lockout_safety_check: r
                    .bypass_policy_lockout_safety_check
                    .unwrap_or(false),
            }),
            Input::GetKeyPolicy(r) => Operation::GetKeyPolicy(GetKeyPolicy {
                key_id: key_id(&r.key_id)?,
                policy_name: check::policy_name(r.policy_name.as_deref())?,
            }),
            Input::ListKeyPolicies(r) => Operation::ListKeyPolicies(ListKeyPolicies {
                key_id: key_id(&r.key_id)?,
                limit: limit(r.limit, limits::MAX_LIST_POLICIES_LIMIT)?,
                marker: check::marker(r.marker.as_deref())?,
            }),
            Input::CreateGrant(r) => create_grant(r)?,
            Input::ListGrants(r) => {
                unsupported(
                    r.grantee_service_principal.is_some(),
                    "GranteeServicePrincipal",
                )?;
                Operation::ListGrants(ListGrants {
                    key_id: key_id(&r.key_id)?,
                    limit: limit(r.limit, limits::MAX_LIST_GRANTS_LIMIT)?,
                    marker: check::marker(r.marker.as_deref())?,
                    grant_id: check::grant_id(r.grant_id.as_deref())?,
                    grantee_principal: check::principal(
                        r.grantee_principal.as_deref(),
                        "GranteePrincipal",
                    )?,
                })
            }
            Input::ListRetirableGrants(r) => Operation::ListRetirableGrants(ListRetirableGrants {
                retiring_principal: check::required_chars(
                    r.retiring_principal.as_deref(),
                    "RetiringPrincipal",
                    1,
                    limits::MAX_PRINCIPAL_LEN,
                )?,
                limit: limit(r.limit, limits::MAX_LIST_GRANTS_LIMIT)?,
                marker: check::marker(r.marker.as_deref())?,
            }),
            Input::RetireGrant(r) => Operation::RetireGrant(RetireGrant {
                grant_token: check::retire_grant_token(r.grant_token.as_deref())?,
                key_id: r.key_id.as_deref(),
                grant_id: check::grant_id(r.grant_id.as_deref())?,
                dry_run: r.dry_run.unwrap_or(false),
            }),
            Input::RevokeGrant(r) => Operation::RevokeGrant(RevokeGrant {
                key_id: key_id(&r.key_id)?,
                grant_id: check::required_chars(
                    r.grant_id.as_deref(),
                    "GrantId",
                    1,
                    limits::MAX_GRANT_ID_LEN,
                )?,
                dry_run: r.dry_run.unwrap_or(false),
            }),
            Input::GetStatus(EmptyIn {}) => Operation::GetStatus(GetStatus),
            Input::VerifyAuditSeals(r) => {
                let seals = r.seals.as_deref().unwrap_or_default();
                check::seal_count(seals.len())?;
                let seals = seals
                    .iter()
                    .map(|Object(s)| {
                        check::seal(
                            s.seq.unwrap_or(0),
                            s.prev_hash.as_ref().map(|b| &b.0[..]),
                            s.mac.as_ref().map(|b| &b.0[..]),
                        )
                    })
                    .collect::<Result<Vec<AuditSeal>, _>>()?;
                Operation::VerifyAuditSeals(VerifyAuditSeals { seals })
            }
        })
    }
}

fn unknown_operation(name: &str) -> JsonError {
    // The name is the client's text: quoted only when it is one of AWS's.
    JsonError::UnknownOperation(match AWS_ONLY_OPERATIONS.iter().find(|o| **o == name) {
        Some(o) => format!("{o} is an AWS KMS operation kmsd does not serve"),
        None => "the operation named in X-Amz-Target is not one kmsd serves".to_owned(),
    })
}

/// Refuses a member kmsd cannot honour, when it is given.
fn unsupported(given: bool, member: &str) -> Result<(), KmsError> {
    if given {
        return Err(KmsError::new(
            ErrorKind::UnsupportedOperation,
            format!("{member} is not supported by kmsd"),
        ));
    }
    Ok(())
}

fn key_id(v: &Option<String>) -> Result<&str, KmsError> {
    check::required(v.as_deref(), "KeyId")
}

/// A blob's bytes; absent is empty.
fn blob(v: &Option<Blob>) -> &[u8] {
    v.as_ref().map_or(&[][..], |b| &b.0[..])
}

/// A page size: absent is 0, the daemon's "default"; AWS's minimum is 1, so
/// a Limit of 0 is refused here (the daemon checks the maximum, `max`).
fn limit(v: Option<u32>, max: u32) -> Result<u32, KmsError> {
    match v {
        Some(0) => Err(KmsError::validation(format!(
            "Limit 0 is out of range 1..={max}"
        ))),
        v => Ok(v.unwrap_or(0)),
    }
}

fn context(v: &Option<Pairs>) -> Result<Context<'_>, KmsError> {
    let pairs = v.as_ref().map_or(&[][..], |p| &p.0[..]);
    check::context_pairs(pairs.len())?;
    Ok(pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect())
}

fn grant_tokens(v: &Option<Vec<String>>) -> Result<Vec<&str>, KmsError> {
    let tokens = v.as_deref().unwrap_or_default();
    check::grant_token_count(tokens.len())?;
    tokens
        .iter()
        .enumerate()
        .map(|(i, t)| check::grant_token(i, t).map(|()| t.as_str()))
        .collect()
}

fn tags<'a>(
    v: &'a Option<Vec<Object<TagIn>>>,
    field: &str,
    min: usize,
) -> Result<Vec<Tag<'a>>, KmsError> {
    let tags = v.as_deref().unwrap_or_default();
    check::tag_count(tags.len(), field, min)?;
    tags.iter()
        .enumerate()
        .map(|(i, Object(t))| check::tag(i, t.tag_key.as_deref(), t.tag_value.as_deref(), field))
        .collect()
}

fn generate_data_key(r: &GenerateDataKeyIn) -> Result<GenerateDataKey<'_>, KmsError> {
    unsupported(r.recipient.is_some(), "Recipient")?;
    Ok(GenerateDataKey {
        key_id: key_id(&r.key_id)?,
        // Present is what was asked, 0 included: the daemon checks the
        // range and that exactly one of the two is given.
        number_of_bytes: r.number_of_bytes,
        key_spec: named(&r.key_spec, "KeySpec")?,
        context: context(&r.encryption_context)?,
        grant_tokens: grant_tokens(&r.grant_tokens)?,
        dry_run: r.dry_run.unwrap_or(false),
    })
}

fn constraint<'a>(v: &'a Option<Pairs>, field: &str) -> Result<Context<'a>, KmsError> {
    let pairs = v.as_ref().map_or(&[][..], |p| &p.0[..]);
    check::constraint_pairs(pairs.len(), field)?;
    let pairs: Context<'a> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    check::constraint_chars(&pairs, field)?;
    Ok(pairs)
}

fn create_grant(r: &CreateGrantIn) -> Result<Operation<'_>, KmsError> {
    unsupported(
        r.grantee_service_principal.is_some(),
        "GranteeServicePrincipal",
    )?;
    unsupported(
        r.retiring_service_principal.is_some(),
        "RetiringServicePrincipal",
    )?;
    let operations = r.operations.as_deref().unwrap_or_default();
    check::grant_operation_count(operations.len())?;
    let operations = operations
        .iter()
        .enumerate()
        .map(|(i, o)| o.get(&format_args!("Operations[{i}]")))
        .collect::<Result<_, _>>()?;
    let constraints = match &r.constraints {
        None => None,
        Some(c) => {
            if let Some(member) = c.unsupported {
                unsupported(true, member)?;
            }
            Some(GrantConstraints {
                encryption_context_subset: constraint(
                    &c.encryption_context_subset,
                    "Constraints.EncryptionContextSubset",
                )?,
                encryption_context_equals: constraint(
                    &c.encryption_context_equals,
                    "Constraints.EncryptionContextEquals",
                )?,
            })
        }
    };
    Ok(Operation::CreateGrant(CreateGrant {
        key_id: key_id(&r.key_id)?,
        grantee_principal: check::required_chars(
            r.grantee_principal.as_deref(),
            "GranteePrincipal",
            1,
            limits::MAX_PRINCIPAL_LEN,
        )?,
        retiring_principal: check::principal(r.retiring_principal.as_deref(), "RetiringPrincipal")?,
        operations,
        constraints,
        grant_tokens: grant_tokens(&r.grant_tokens)?,
        name: check::optional_chars(r.name.as_deref(), "Name", 1, limits::MAX_GRANT_NAME_LEN)?,
        dry_run: r.dry_run.unwrap_or(false),
    }))
}
