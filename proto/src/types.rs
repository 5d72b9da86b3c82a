//! Typed messages shared by the client and the daemon.
//!
//! Requests borrow from the frame they were decoded from (`'a`): the daemon
//! reads key ids, plaintext and encryption contexts in place from its receive
//! buffer. Responses are owned; plaintext in them is a [`SecretBytes`], which
//! is zeroized on drop and redacted in `Debug`.

use std::fmt;
use zeroize::Zeroizing;

/// Limits of the AWS KMS API that the protocol layer knows about.
pub mod limits {
    /// VerifyAuditSeals: most seals in one request.
    pub const MAX_AUDIT_SEALS: usize = 1000;
    /// Encrypt: plaintext size range.
    pub const MAX_PLAINTEXT: usize = 4096;
    /// Decrypt / ReEncrypt: the CiphertextBlob parameter's size range in
    /// AWS KMS (1..=6144 bytes; beyond it, ValidationException). kmsd's own
    /// blobs are shorter: see the daemon's blob formats.
    pub const MAX_CIPHERTEXT_BLOB: usize = 6144;
    /// GenerateDataKey / GenerateRandom: number of bytes range.
    pub const MAX_DATA_KEY_BYTES: u32 = 1024;
    /// GetStatus: most metric series in one answer (the daemon keeps the
    /// first ones by name; at least 4 tables fewer than the response table
    /// limit, with room for the rest of a batch).
    pub const MAX_STATUS_METRICS: usize = 2048;
    /// GetStatus: longest metric name and label name, in bytes.
    pub const MAX_METRIC_NAME_LEN: usize = 128;
    /// GetStatus: most labels of one series, and bytes of their names and
    /// values together.
    pub const MAX_METRIC_LABELS: usize = 8;
    /// GetStatus: bytes of one series' label names and values together.
    pub const MAX_METRIC_LABEL_BYTES: usize = 512;
    /// ListKeys: largest page.
    pub const MAX_LIST_LIMIT: u32 = 1000;
    /// ListKeys: page size when the request says 0.
    pub const DEFAULT_LIST_LIMIT: u32 = 100;
    /// Canonically encoded encryption context, in bytes.
    pub const MAX_CONTEXT_BYTES: usize = 8192;
    /// Pairs in one encryption context (bounds the flatbuffer verifier's
    /// table count; 8 KiB of context rarely needs more).
    pub const MAX_CONTEXT_ENTRIES: usize = 64;
    /// Length of a key id, alias or ARN string.
    pub const MAX_KEY_ID_LEN: usize = 2048;
    /// Length of a key description.
    pub const MAX_DESCRIPTION_LEN: usize = 8192;

    /// Alias name length range, in characters (AWS `AliasNameType`:
    /// 1..=256, `^[a-zA-Z0-9:/_-]+$`, starts with `alias/`, and `alias/aws/`
    /// is reserved).
    pub const MAX_ALIAS_NAME_LEN: usize = 256;
    /// Tag key length range, in characters (AWS `TagKeyType`: 1..=128).
    pub const MAX_TAG_KEY_LEN: usize = 128;
    /// Tag value length range, in characters (AWS `TagValueType`: 0..=256).
    pub const MAX_TAG_VALUE_LEN: usize = 256;
    /// Tags in one CreateKey or TagResource request, and tag keys in one
    /// UntagResource request (AWS: at most 50 tags per resource).
    pub const MAX_TAGS_PER_REQUEST: usize = 50;
    /// Tags on one key (AWS resource quota: 50 user-created tags per
    /// resource; more is LimitExceededException).
    pub const MAX_TAGS_PER_KEY: usize = 50;
    /// Aliases on one key (AWS resource quota: 50 aliases per KMS key).
    pub const MAX_ALIASES_PER_KEY: usize = 50;
    /// ListResourceTags: largest page (AWS: Limit 1..=50).
    pub const MAX_LIST_TAGS_LIMIT: u32 = 50;
    /// ListResourceTags: page size when the request says 0 (AWS: 50).
    pub const DEFAULT_LIST_TAGS_LIMIT: u32 = 50;
    /// ListAliases and ListKeyRotations use [`MAX_LIST_LIMIT`] and
    /// [`DEFAULT_LIST_LIMIT`] (AWS: Limit 1..=1000, default 100).
    pub const MAX_LIST_ALIASES_LIMIT: u32 = MAX_LIST_LIMIT;
    /// ImportKeyMaterial / GetParametersForImport: import token size range
    /// (AWS: 1..=6144 bytes).
    pub const MAX_IMPORT_TOKEN: usize = 6144;
    /// ImportKeyMaterial: encrypted key material size range (AWS:
    /// 1..=6144 bytes).
    pub const MAX_ENCRYPTED_KEY_MATERIAL: usize = 6144;
    /// ScheduleKeyDeletion: shortest waiting period in days.
    pub const MIN_PENDING_WINDOW_IN_DAYS: u32 = 7;
    /// ScheduleKeyDeletion: longest waiting period in days.
    pub const MAX_PENDING_WINDOW_IN_DAYS: u32 = 30;
    /// ScheduleKeyDeletion: waiting period when the request gives none.
    pub const DEFAULT_PENDING_WINDOW_IN_DAYS: u32 = 30;
    /// EnableKeyRotation: shortest rotation period in days.
    pub const MIN_ROTATION_PERIOD_IN_DAYS: u32 = 90;
    /// EnableKeyRotation: longest rotation period in days.
    pub const MAX_ROTATION_PERIOD_IN_DAYS: u32 = 2560;
    /// EnableKeyRotation: rotation period when the request gives none.
    pub const DEFAULT_ROTATION_PERIOD_IN_DAYS: u32 = 365;
    /// RotateKeyOnDemand: most on-demand rotations of one key, ever
    /// (AWS: 25, not adjustable; more is LimitExceededException).
    pub const MAX_ON_DEMAND_ROTATIONS: u32 = 25;
    /// GetParametersForImport: how long a wrapping key and import token
    /// are valid (AWS: 24 hours), in seconds.
    pub const IMPORT_PARAMETERS_VALIDITY_SECS: i64 = 24 * 60 * 60;
    /// ImportKeyMaterial: latest ValidTo, in days after the request (AWS:
    /// 365).
    pub const MAX_VALID_TO_DAYS: i64 = 365;

    /// Grant tokens in one request (AWS `GrantTokenList`: 0..=10).
    pub const MAX_GRANT_TOKENS: usize = 10;
    /// A grant token's length, in bytes (AWS `GrantTokenType`: 1..=8192).
    pub const MAX_GRANT_TOKEN_LEN: usize = 8192;
    /// A key policy document, in bytes (AWS's key policy quota: 32 KiB;
    /// longer is LimitExceededException, as AWS answers it).
    pub const MAX_POLICY_BYTES: usize = 32 * 1024;
    /// A key policy's name, in characters (AWS `PolicyNameType`: 1..=128).
    pub const MAX_POLICY_NAME_LEN: usize = 128;
    /// The name of a key's policy: the only one AWS allows, and what an
    /// absent PolicyName means.
    pub const DEFAULT_POLICY_NAME: &str = "default";
    /// Policies one key has (AWS: one, named `default`).
    pub const MAX_POLICIES_PER_KEY: usize = 1;
    /// ListKeyPolicies: largest page (AWS: Limit 1..=1000, default 100,
    /// as [`DEFAULT_LIST_LIMIT`]).
    pub const MAX_LIST_POLICIES_LIMIT: u32 = MAX_LIST_LIMIT;
    /// A grantee or retiring principal, in characters (AWS
    /// `PrincipalIdType`: 1..=256).
    pub const MAX_PRINCIPAL_LEN: usize = 256;
    /// A grant's name, in characters (AWS `GrantNameType`: 1..=256,
    /// `^[a-zA-Z0-9:/_-]+$`, which the daemon checks).
    pub const MAX_GRANT_NAME_LEN: usize = 256;
    /// A grant id, in characters (AWS `GrantIdType`: 1..=128).
    pub const MAX_GRANT_ID_LEN: usize = 128;
    /// Operations in one grant: AWS's 17 grant operations.
    pub const MAX_GRANT_OPERATIONS: usize = 17;
    /// Pairs in one grant constraint (AWS: "up to 8 encryption context
    /// pairs" in each of EncryptionContextSubset and
    /// EncryptionContextEquals).
    pub const MAX_GRANT_CONSTRAINT_PAIRS: usize = 8;
    /// Characters of one grant constraint, its keys and values together
    /// (AWS: "the encryption context value in each constraint cannot
    /// exceed 384 characters").
    pub const MAX_GRANT_CONSTRAINT_CHARS: usize = 384;
    /// ListGrants and ListRetirableGrants: largest page (AWS: Limit
    /// 1..=100).
    pub const MAX_LIST_GRANTS_LIMIT: u32 = 100;
    /// ListGrants and ListRetirableGrants: page size when the request says
    /// 0 (AWS: 50).
    pub const DEFAULT_LIST_GRANTS_LIMIT: u32 = 50;
    /// The Marker of ListKeyPolicies, ListGrants and ListRetirableGrants,
    /// in characters (AWS `MarkerType`: 1..=1024); the daemon's next
    /// markers are no longer.
    pub const MAX_MARKER_LEN: usize = 1024;
    /// A grant's IssuingAccount as the daemon answers it, in characters
    /// (kmsd's own bound: AWS's is a 12-digit account id).
    pub const MAX_ISSUING_ACCOUNT_LEN: usize = 256;
}

/// Bytes that must not linger or leak: zeroized on drop, redacted in Debug.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    /// Takes ownership of `bytes`.
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretBytes(Zeroizing::new(bytes))
    }
    /// Copies `bytes`.
    pub fn from_slice(bytes: &[u8]) -> Self {
        SecretBytes::new(bytes.to_vec())
    }
    /// The secret bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
    /// The secret bytes, for filling in place (e.g. with random bytes).
    pub fn expose_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes(<{} bytes redacted>)", self.0.len())
    }
}

/// Key spec of a KMS key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum KeySpec {
    /// AES-256-GCM (XAES-256-GCM per message).
    #[default]
    SymmetricDefault,
}

/// What a KMS key may be used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum KeyUsage {
    /// Encrypt, Decrypt, data keys.
    #[default]
    EncryptDecrypt,
}

/// Where a key's material came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Origin {
    /// Generated by kmsd.
    #[default]
    Kmsd,
    /// Imported.
    External,
    /// Generated inside the HSM and never leaves it (AWS: AWS_CLOUDHSM).
    Hsm,
}

/// Lifecycle state of a KMS key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum KeyState {
    /// Usable.
    #[default]
    Enabled,
    /// Disabled by an operator.
    Disabled,
    /// Scheduled for deletion.
    PendingDeletion,
    /// Waiting for imported material.
    PendingImport,
    /// An HSM-only key whose HSM cannot be reached (AWS: a key in an
    /// unavailable custom key store).
    Unavailable,
}

impl KeyState {
    /// The AWS name of the state.
    pub fn name(self) -> &'static str {
        match self {
            KeyState::Enabled => "Enabled",
            KeyState::Disabled => "Disabled",
            KeyState::PendingDeletion => "PendingDeletion",
            KeyState::PendingImport => "PendingImport",
            KeyState::Unavailable => "Unavailable",
        }
    }
}

/// Spec of a generated data key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataKeySpec {
    /// 16 bytes.
    Aes128,
    /// 32 bytes.
    Aes256,
}

impl DataKeySpec {
    /// Length of the key in bytes.
    pub fn num_bytes(self) -> u32 {
        match self {
            DataKeySpec::Aes128 => 16,
            DataKeySpec::Aes256 => 32,
        }
    }
}

/// Defines a fieldless enum with AWS's name for each value, `name`,
/// `from_name` and `ALL`.
macro_rules! aws_enum {
    (
        $(#[$meta:meta])*
        $name:ident { $( $(#[$vmeta:meta])* $variant:ident = $aws:literal, )+ }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every value, in wire order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// AWS's name of the value (e.g. in the AWS CLI and JSON).
            pub fn name(self) -> &'static str {
                match self {
                    $( $name::$variant => $aws, )+
                }
            }

            /// The value AWS names `name` (exact, case-sensitive).
            pub fn from_name(name: &str) -> Option<$name> {
                match name {
                    $( $aws => Some($name::$variant), )+
                    _ => None,
                }
            }
        }
    };
}

aws_enum! {
    /// GetParametersForImport: how the key material will be wrapped (AWS
    /// `AlgorithmSpec`). All of AWS's RSA algorithms decode, so that the
    /// daemon can refuse the ones it does not offer with a clear error.
    WrappingAlgorithm {
        /// RSAES-PKCS1-v1_5 (AWS deprecates it).
        RsaesPkcs1V15 = "RSAES_PKCS1_V1_5",
        /// RSAES-OAEP with SHA-1.
        RsaesOaepSha1 = "RSAES_OAEP_SHA_1",
        /// RSAES-OAEP with SHA-256.
        RsaesOaepSha256 = "RSAES_OAEP_SHA_256",
        /// RSAES-OAEP (SHA-1) of an ephemeral AES key, then AES key wrap
        /// with padding (RFC 5649) of the material.
        RsaAesKeyWrapSha1 = "RSA_AES_KEY_WRAP_SHA_1",
        /// RSAES-OAEP (SHA-256) of an ephemeral AES key, then AES key wrap
        /// with padding (RFC 5649) of the material.
        RsaAesKeyWrapSha256 = "RSA_AES_KEY_WRAP_SHA_256",
    }
}

aws_enum! {
    /// GetParametersForImport: the wrapping key's type (AWS
    /// `WrappingKeySpec`).
    WrappingKeySpec {
        /// RSA, 2048-bit modulus.
        Rsa2048 = "RSA_2048",
        /// RSA, 3072-bit modulus.
        Rsa3072 = "RSA_3072",
        /// RSA, 4096-bit modulus.
        Rsa4096 = "RSA_4096",
    }
}

aws_enum! {
    /// Whether imported key material expires (AWS `ExpirationModelType`).
    ExpirationModel {
        /// The material expires at `valid_to` (AWS's default).
        KeyMaterialExpires = "KEY_MATERIAL_EXPIRES",
        /// The material does not expire.
        KeyMaterialDoesNotExpire = "KEY_MATERIAL_DOES_NOT_EXPIRE",
    }
}

impl Default for ExpirationModel {
    /// AWS's default when a request names none.
    fn default() -> Self {
        ExpirationModel::KeyMaterialExpires
    }
}

aws_enum! {
    /// How a key version came to be (AWS `RotationType`).
    RotationType {
        /// By the automatic rotation schedule.
        Automatic = "AUTOMATIC",
        /// By RotateKeyOnDemand.
        OnDemand = "ON_DEMAND",
    }
}

aws_enum! {
    /// An operation a grant allows (AWS `GrantOperation`), in AWS's order
    /// (the wire's). A grant on a kmsd key (symmetric) can use only some
    /// of them; the daemon refuses the others.
    GrantOperation {
        /// Decrypt.
        Decrypt = "Decrypt",
        /// Encrypt.
        Encrypt = "Encrypt",
        /// GenerateDataKey.
        GenerateDataKey = "GenerateDataKey",
        /// GenerateDataKeyWithoutPlaintext.
        GenerateDataKeyWithoutPlaintext = "GenerateDataKeyWithoutPlaintext",
        /// ReEncrypt with the key as the source.
        ReEncryptFrom = "ReEncryptFrom",
        /// ReEncrypt with the key as the destination.
        ReEncryptTo = "ReEncryptTo",
        /// Sign (asymmetric keys; not a kmsd operation).
        Sign = "Sign",
        /// Verify (asymmetric keys; not a kmsd operation).
        Verify = "Verify",
        /// GetPublicKey (asymmetric keys; not a kmsd operation).
        GetPublicKey = "GetPublicKey",
        /// CreateGrant.
        CreateGrant = "CreateGrant",
        /// RetireGrant.
        RetireGrant = "RetireGrant",
        /// DescribeKey.
        DescribeKey = "DescribeKey",
        /// GenerateDataKeyPair (not a kmsd operation).
        GenerateDataKeyPair = "GenerateDataKeyPair",
        /// GenerateDataKeyPairWithoutPlaintext (not a kmsd operation).
        GenerateDataKeyPairWithoutPlaintext = "GenerateDataKeyPairWithoutPlaintext",
        /// GenerateMac (HMAC keys; not a kmsd operation).
        GenerateMac = "GenerateMac",
        /// VerifyMac (HMAC keys; not a kmsd operation).
        VerifyMac = "VerifyMac",
        /// DeriveSharedSecret (key agreement keys; not a kmsd operation).
        DeriveSharedSecret = "DeriveSharedSecret",
    }
}

/// An encryption context as sent: pairs in the client's order. The daemon
/// sorts and validates it.
pub type Context<'a> = Vec<(&'a str, &'a str)>;

/// The encryption-context constraints of a grant as sent (AWS
/// `GrantConstraints`; CreateGrant): pairs in the client's order, at most
/// 8 in each, of at most 384 characters in all (each checked by the
/// decoder). An empty list is an absent constraint.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct GrantConstraints<'a> {
    /// The request's context must include every pair (AWS
    /// EncryptionContextSubset).
    pub encryption_context_subset: Context<'a>,
    /// The request's context must be exactly these pairs (AWS
    /// EncryptionContextEquals).
    pub encryption_context_equals: Context<'a>,
}

/// A grant's constraints as answered (ListGrants, ListRetirableGrants).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct OwnedGrantConstraints {
    /// AWS EncryptionContextSubset.
    pub encryption_context_subset: Vec<(String, String)>,
    /// AWS EncryptionContextEquals.
    pub encryption_context_equals: Vec<(String, String)>,
}

impl GrantConstraints<'_> {
    /// An owned copy.
    pub fn to_owned_constraints(&self) -> OwnedGrantConstraints {
        let own = |c: &Context<'_>| {
            c.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        OwnedGrantConstraints {
            encryption_context_subset: own(&self.encryption_context_subset),
            encryption_context_equals: own(&self.encryption_context_equals),
        }
    }
}

impl OwnedGrantConstraints {
    /// A borrowed view, for a request.
    pub fn as_constraints(&self) -> GrantConstraints<'_> {
        fn view(c: &[(String, String)]) -> Context<'_> {
            c.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
        }
        GrantConstraints {
            encryption_context_subset: view(&self.encryption_context_subset),
            encryption_context_equals: view(&self.encryption_context_equals),
        }
    }
}

/// A tag as sent: borrowed from the frame (AWS `Tag`: TagKey 1..=128
/// characters, TagValue 0..=256 characters).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Tag<'a> {
    /// Tag key (AWS TagKey).
    pub key: &'a str,
    /// Tag value (AWS TagValue; may be empty).
    pub value: &'a str,
}

/// A tag as answered (ListResourceTags).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct OwnedTag {
    /// Tag key (AWS TagKey).
    pub key: String,
    /// Tag value (AWS TagValue).
    pub value: String,
}

impl Tag<'_> {
    /// An owned copy.
    pub fn to_owned_tag(&self) -> OwnedTag {
        OwnedTag {
            key: self.key.to_owned(),
            value: self.value.to_owned(),
        }
    }
}

impl OwnedTag {
    /// A borrowed view, for a request.
    pub fn as_tag(&self) -> Tag<'_> {
        Tag {
            key: &self.key,
            value: &self.value,
        }
    }
}

/// CreateKey.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct CreateKey<'a> {
    /// Free text, at most 8192 characters.
    pub description: &'a str,
    /// Key usage.
    pub key_usage: KeyUsage,
    /// Key spec.
    pub key_spec: KeySpec,
    /// Where the key material is made: `Kmsd` (default), `Hsm`, or
    /// `External` (AWS's EXTERNAL: the key starts PendingImport, its
    /// material comes with ImportKeyMaterial).
    pub origin: Origin,
    /// Tags of the new key (at most 50).
    pub tags: Vec<Tag<'a>>,
    /// The key policy, a JSON document of 1..=32768 bytes; `None` for the
    /// default key policy (AWS Policy).
    pub policy: Option<&'a str>,
    /// Skip the check that `policy` lets the caller change it later (AWS
    /// BypassPolicyLockoutSafetyCheck).
    pub bypass_policy_lockout_safety_check: bool,
}

/// DescribeKey.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct DescribeKey<'a> {
    /// Key id or ARN.
    pub key_id: &'a str,
    /// Grant tokens (AWS GrantTokens): at most 10, each 1..=8192 bytes.
    pub grant_tokens: Vec<&'a str>,
}

/// ListKeys.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ListKeys<'a> {
    /// Page size, 1..=1000; 0 for the default.
    pub limit: u32,
    /// Where the previous page stopped.
    pub marker: Option<&'a str>,
}

/// GenerateDataKey and GenerateDataKeyWithoutPlaintext.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct GenerateDataKey<'a> {
    /// Key id or ARN.
    pub key_id: &'a str,
    /// Length in bytes (1..=1024); exactly one of this and `key_spec`.
    pub number_of_bytes: Option<u32>,
    /// Key spec; exactly one of this and `number_of_bytes`.
    pub key_spec: Option<DataKeySpec>,
    /// Encryption context.
    pub context: Context<'a>,
    /// Grant tokens (AWS GrantTokens): at most 10, each 1..=8192 bytes.
    pub grant_tokens: Vec<&'a str>,
    /// Only check that the request would succeed (AWS DryRun): the answer
    /// is then DryRunOperationException, or the error it would have had.
    pub dry_run: bool,
}

/// Encrypt. Its Debug output redacts the plaintext.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Encrypt<'a> {
    /// Key id or ARN.
    pub key_id: &'a str,
    /// 1..=4096 bytes. Borrowed from the frame, never copied or logged.
    pub plaintext: &'a [u8],
    /// Encryption context.
    pub context: Context<'a>,
    /// Grant tokens (AWS GrantTokens): at most 10, each 1..=8192 bytes.
    pub grant_tokens: Vec<&'a str>,
    /// Only check that the request would succeed (AWS DryRun): the answer
    /// is then DryRunOperationException, or the error it would have had.
    pub dry_run: bool,
}

impl fmt::Debug for Encrypt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encrypt")
            .field("key_id", &self.key_id)
            .field(
                "plaintext",
                &format_args!("<{} bytes redacted>", self.plaintext.len()),
            )
            .field("context", &self.context)
            .field("grant_tokens", &self.grant_tokens)
            .field("dry_run", &self.dry_run)
            .finish()
    }
}

/// Decrypt.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Decrypt<'a> {
    /// The blob Encrypt or GenerateDataKey returned.
    pub ciphertext_blob: &'a [u8],
    /// When given, must be the blob's key.
    pub key_id: Option<&'a str>,
    /// Encryption context; must equal the one used to encrypt.
    pub context: Context<'a>,
    /// Grant tokens (AWS GrantTokens): at most 10, each 1..=8192 bytes.
    pub grant_tokens: Vec<&'a str>,
    /// Only check that the request would succeed (AWS DryRun): the answer
    /// is then DryRunOperationException, or the error it would have had.
    pub dry_run: bool,
}

/// ReEncrypt.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ReEncrypt<'a> {
    /// The blob to re-encrypt.
    pub ciphertext_blob: &'a [u8],
    /// When given, must be the blob's key.
    pub source_key_id: Option<&'a str>,
    /// The context the blob was encrypted under.
    pub source_context: Context<'a>,
    /// Key id or ARN for the new blob.
    pub destination_key_id: &'a str,
    /// Context for the new blob.
    pub destination_context: Context<'a>,
    /// Grant tokens (AWS GrantTokens): at most 10, each 1..=8192 bytes.
    pub grant_tokens: Vec<&'a str>,
    /// Only check that the request would succeed (AWS DryRun): the answer
    /// is then DryRunOperationException, or the error it would have had.
    pub dry_run: bool,
}

/// GenerateRandom.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenerateRandom {
    /// 1..=1024 bytes.
    pub number_of_bytes: u32,
}

/// One seal of kmsd's audit log, as its seal record has it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct AuditSeal {
    /// The seal record's sequence number.
    pub seq: u64,
    /// SHA-256 of the record before it (its `previousHash`).
    pub prev_hash: [u8; 32],
    /// The seal (HMAC-SHA256).
    pub mac: [u8; 32],
}

/// VerifyAuditSeals (kmsd's own, administrators only): which of these seals
/// the daemon's seal key made, and the chain's head now.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct VerifyAuditSeals {
    /// At most [`limits::MAX_AUDIT_SEALS`] seals (none: only the head).
    pub seals: Vec<AuditSeal>,
}

/// WhoAmI (kmsd's own, no AWS counterpart): the identity the daemon sees
/// for the caller's connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct WhoAmI;

/// GetStatus (kmsd's own, no AWS counterpart; administrators only): the
/// daemon's uptime, version and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct GetStatus;

/// UpdateKeyDescription.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct UpdateKeyDescription<'a> {
    /// Key id or ARN.
    pub key_id: &'a str,
    /// The new description, 0..=8192 characters.
    pub description: &'a str,
}

/// TagResource: adds tags, or replaces the value of a tag key the key has.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct TagResource<'a> {
    /// Key id or ARN.
    pub key_id: &'a str,
    /// 1..=50 tags.
    pub tags: Vec<Tag<'a>>,
}

/// UntagResource.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct UntagResource<'a> {
    /// Key id or ARN.
    pub key_id: &'a str,
    /// 1..=50 tag keys to remove.
    pub tag_keys: Vec<&'a str>,
}

/// ListResourceTags.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ListResourceTags<'a> {
    /// Key id or ARN.
    pub key_id: &'a str,
    /// Page size, 1..=50; 0 for the default (50).
    pub limit: u32,
    /// Where the previous page stopped.
    pub marker: Option<&'a str>,
}

/// CreateAlias.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct CreateAlias<'a> {
    /// `alias/...`, 1..=256 characters.
    pub alias_name: &'a str,
    /// Key id or ARN of the key it names (not an alias).
    pub target_key_id: &'a str,
}

/// UpdateAlias: points an existing alias at another key.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct UpdateAlias<'a> {
    /// `alias/...`, 1..=256 characters.
    pub alias_name: &'a str,
    /// Key id or ARN of the key it names from now on.
    pub target_key_id: &'a str,
}

/// DeleteAlias.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct DeleteAlias<'a> {
    /// `alias/...`, 1..=256 characters.
    pub alias_name: &'a str,
}

/// ListAliases.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ListAliases<'a> {
    /// Only the aliases of this key (key id or ARN); all when absent.
    pub key_id: Option<&'a str>,
    /// Page size, 1..=1000; 0 for the default (100).
    pub limit: u32,
    /// Where the previous page stopped.
    pub marker: Option<&'a str>,
}

/// EnableKey.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct EnableKey<'a> {
    /// Key id or ARN.
    pub key_id: &'a str,
}

/// DisableKey.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct DisableKey<'a> {
    /// Key id or ARN.
    pub key_id: &'a str,
}

/// ScheduleKeyDeletion.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ScheduleKeyDeletion<'a> {
    /// Key id or ARN.
    pub key_id: &'a str,
    /// Waiting period, 7..=30 days; absent for the default (30).
    pub pending_window_in_days: Option<u32>,
}

/// CancelKeyDeletion (the key is Disabled afterwards, as in AWS).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct CancelKeyDeletion<'a> {
    /// Key id or ARN.
    pub key_id: &'a str,
}

/// EnableKeyRotation.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct EnableKeyRotation<'a> {
    /// Key id or ARN.
    pub key_id: &'a str,
    /// Rotation period, 90..=2560 days; absent for the default (365).
    pub rotation_period_in_days: Option<u32>,
}

/// DisableKeyRotation.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct DisableKeyRotation<'a> {
    /// Key id or ARN.
    pub key_id: &'a str,
}

/// GetKeyRotationStatus.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct GetKeyRotationStatus<'a> {
    /// Key id or ARN.
    pub key_id: &'a str,
}

/// RotateKeyOnDemand.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RotateKeyOnDemand<'a> {
    /// Key id or ARN.
    pub key_id: &'a str,
}

/// ListKeyRotations.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ListKeyRotations<'a> {
    /// Key id or ARN.
    pub key_id: &'a str,
    /// Page size, 1..=1000; 0 for the default (100).
    pub limit: u32,
    /// Where the previous page stopped.
    pub marker: Option<&'a str>,
}

/// GetParametersForImport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetParametersForImport<'a> {
    /// Key id or ARN of an EXTERNAL key.
    pub key_id: &'a str,
    /// How the material will be wrapped.
    pub wrapping_algorithm: WrappingAlgorithm,
    /// The wrapping key's type.
    pub wrapping_key_spec: WrappingKeySpec,
}

/// ImportKeyMaterial. Its Debug output redacts the encrypted key material
/// (wrapped, but still the key's material).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct ImportKeyMaterial<'a> {
    /// Key id or ARN of an EXTERNAL key.
    pub key_id: &'a str,
    /// The token GetParametersForImport returned, 1..=6144 bytes.
    pub import_token: &'a [u8],
    /// The material wrapped under that call's public key, 1..=6144 bytes.
    /// Borrowed from the frame, never copied or logged.
    pub encrypted_key_material: &'a [u8],
    /// When the material expires, seconds since the Unix epoch; required
    /// with `KeyMaterialExpires`, absent with `KeyMaterialDoesNotExpire`.
    pub valid_to: Option<i64>,
    /// Whether the material expires (AWS's default: it does).
    pub expiration_model: ExpirationModel,
}

impl fmt::Debug for ImportKeyMaterial<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImportKeyMaterial")
            .field("key_id", &self.key_id)
            .field(
                "import_token",
                &format_args!("<{} bytes>", self.import_token.len()),
            )
            .field(
                "encrypted_key_material",
                &format_args!("<{} bytes redacted>", self.encrypted_key_material.len()),
            )
            .field("valid_to", &self.valid_to)
            .field("expiration_model", &self.expiration_model)
            .finish()
    }
}

/// DeleteImportedKeyMaterial.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct DeleteImportedKeyMaterial<'a> {
    /// Key id or ARN of an EXTERNAL key.
    pub key_id: &'a str,
}

/// PutKeyPolicy: replaces a key's policy.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PutKeyPolicy<'a> {
    /// Key id or ARN.
    pub key_id: &'a str,
    /// 1..=128 characters; `None` means `default`, the only name AWS
    /// allows.
    pub policy_name: Option<&'a str>,
    /// The key policy, a JSON document of 1..=32768 bytes.
    pub policy: &'a str,
    /// Skip the check that the policy lets the caller change it later (AWS
    /// BypassPolicyLockoutSafetyCheck).
    pub bypass_policy_lockout_safety_check: bool,
}

/// GetKeyPolicy.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct GetKeyPolicy<'a> {
    /// Key id or ARN.
    pub key_id: &'a str,
    /// 1..=128 characters; `None` means `default`.
    pub policy_name: Option<&'a str>,
}

/// ListKeyPolicies: the names of a key's policies (AWS: only `default`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ListKeyPolicies<'a> {
    /// Key id or ARN.
    pub key_id: &'a str,
    /// Page size, 1..=1000; 0 for the default (100).
    pub limit: u32,
    /// Where the previous page stopped (1..=1024 characters).
    pub marker: Option<&'a str>,
}

/// CreateGrant.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct CreateGrant<'a> {
    /// Key id or ARN.
    pub key_id: &'a str,
    /// Who gets the permissions, 1..=256 characters.
    pub grantee_principal: &'a str,
    /// Who may retire the grant besides its grantee, 1..=256 characters.
    pub retiring_principal: Option<&'a str>,
    /// What the grant allows: 1..=17 operations.
    pub operations: Vec<GrantOperation>,
    /// Encryption-context constraints on the grant's cryptographic
    /// operations; `None` for none.
    pub constraints: Option<GrantConstraints<'a>>,
    /// Grant tokens (AWS GrantTokens): at most 10, each 1..=8192 bytes.
    pub grant_tokens: Vec<&'a str>,
    /// 1..=256 characters: a retry with the same name and parameters gets
    /// the same grant id instead of a new grant.
    pub name: Option<&'a str>,
    /// Only check that the request would succeed (AWS DryRun).
    pub dry_run: bool,
}

/// ListGrants: a key's grants, optionally only one grant or one grantee's.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ListGrants<'a> {
    /// Key id or ARN.
    pub key_id: &'a str,
    /// Page size, 1..=100; 0 for the default (50).
    pub limit: u32,
    /// Where the previous page stopped (1..=1024 characters).
    pub marker: Option<&'a str>,
    /// Only this grant (1..=128 characters).
    pub grant_id: Option<&'a str>,
    /// Only the grants to this principal (1..=256 characters).
    pub grantee_principal: Option<&'a str>,
}

/// ListRetirableGrants: the grants a principal may retire, over all keys.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ListRetirableGrants<'a> {
    /// The retiring principal, 1..=256 characters.
    pub retiring_principal: &'a str,
    /// Page size, 1..=100; 0 for the default (50).
    pub limit: u32,
    /// Where the previous page stopped (1..=1024 characters).
    pub marker: Option<&'a str>,
}

/// RetireGrant: by its token, or by key and grant id.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RetireGrant<'a> {
    /// The grant's token, 1..=8192 bytes.
    pub grant_token: Option<&'a str>,
    /// Key id or ARN of the grant's key (with `grant_id`).
    pub key_id: Option<&'a str>,
    /// The grant's id, 1..=128 characters (with `key_id`).
    pub grant_id: Option<&'a str>,
    /// Only check that the request would succeed (AWS DryRun).
    pub dry_run: bool,
}

/// RevokeGrant.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RevokeGrant<'a> {
    /// Key id or ARN.
    pub key_id: &'a str,
    /// The grant's id, 1..=128 characters.
    pub grant_id: &'a str,
    /// Only check that the request would succeed (AWS DryRun).
    pub dry_run: bool,
}

/// One operation, the single typed form of every request item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operation<'a> {
    /// CreateKey.
    CreateKey(CreateKey<'a>),
    /// DescribeKey.
    DescribeKey(DescribeKey<'a>),
    /// ListKeys.
    ListKeys(ListKeys<'a>),
    /// GenerateDataKey.
    GenerateDataKey(GenerateDataKey<'a>),
    /// GenerateDataKeyWithoutPlaintext.
    GenerateDataKeyWithoutPlaintext(GenerateDataKey<'a>),
    /// Encrypt.
    Encrypt(Encrypt<'a>),
    /// Decrypt.
    Decrypt(Decrypt<'a>),
    /// ReEncrypt.
    ReEncrypt(ReEncrypt<'a>),
    /// GenerateRandom.
    GenerateRandom(GenerateRandom),
    /// UpdateKeyDescription.
    UpdateKeyDescription(UpdateKeyDescription<'a>),
    /// TagResource.
    TagResource(TagResource<'a>),
    /// UntagResource.
    UntagResource(UntagResource<'a>),
    /// ListResourceTags.
    ListResourceTags(ListResourceTags<'a>),
    /// CreateAlias.
    CreateAlias(CreateAlias<'a>),
    /// UpdateAlias.
    UpdateAlias(UpdateAlias<'a>),
    /// DeleteAlias.
    DeleteAlias(DeleteAlias<'a>),
    /// ListAliases.
    ListAliases(ListAliases<'a>),
    /// EnableKey.
    EnableKey(EnableKey<'a>),
    /// DisableKey.
    DisableKey(DisableKey<'a>),
    /// ScheduleKeyDeletion.
    ScheduleKeyDeletion(ScheduleKeyDeletion<'a>),
    /// CancelKeyDeletion.
    CancelKeyDeletion(CancelKeyDeletion<'a>),
    /// EnableKeyRotation.
    EnableKeyRotation(EnableKeyRotation<'a>),
    /// DisableKeyRotation.
    DisableKeyRotation(DisableKeyRotation<'a>),
    /// GetKeyRotationStatus.
    GetKeyRotationStatus(GetKeyRotationStatus<'a>),
    /// RotateKeyOnDemand.
    RotateKeyOnDemand(RotateKeyOnDemand<'a>),
    /// ListKeyRotations.
    ListKeyRotations(ListKeyRotations<'a>),
    /// GetParametersForImport.
    GetParametersForImport(GetParametersForImport<'a>),
    /// ImportKeyMaterial.
    ImportKeyMaterial(ImportKeyMaterial<'a>),
    /// DeleteImportedKeyMaterial.
    DeleteImportedKeyMaterial(DeleteImportedKeyMaterial<'a>),
    /// WhoAmI (kmsd's own).
    WhoAmI(WhoAmI),
    /// PutKeyPolicy.
    PutKeyPolicy(PutKeyPolicy<'a>),
    /// GetKeyPolicy.
    GetKeyPolicy(GetKeyPolicy<'a>),
    /// ListKeyPolicies.
    ListKeyPolicies(ListKeyPolicies<'a>),
    /// CreateGrant.
    CreateGrant(CreateGrant<'a>),
    /// ListGrants.
    ListGrants(ListGrants<'a>),
    /// ListRetirableGrants.
    ListRetirableGrants(ListRetirableGrants<'a>),
    /// RetireGrant.
    RetireGrant(RetireGrant<'a>),
    /// RevokeGrant.
    RevokeGrant(RevokeGrant<'a>),
    /// GetStatus (kmsd's own).
    GetStatus(GetStatus),
    /// VerifyAuditSeals (kmsd's own).
    VerifyAuditSeals(VerifyAuditSeals),
}

impl Operation<'_> {
    /// The AWS operation name.
    pub fn name(&self) -> &'static str {
        match self {
            Operation::CreateKey(_) => "CreateKey",
            Operation::DescribeKey(_) => "DescribeKey",
            Operation::ListKeys(_) => "ListKeys",
            Operation::GenerateDataKey(_) => "GenerateDataKey",
            Operation::GenerateDataKeyWithoutPlaintext(_) => "GenerateDataKeyWithoutPlaintext",
            Operation::Encrypt(_) => "Encrypt",
            Operation::Decrypt(_) => "Decrypt",
            Operation::ReEncrypt(_) => "ReEncrypt",
            Operation::GenerateRandom(_) => "GenerateRandom",
            Operation::UpdateKeyDescription(_) => "UpdateKeyDescription",
            Operation::TagResource(_) => "TagResource",
            Operation::UntagResource(_) => "UntagResource",
            Operation::ListResourceTags(_) => "ListResourceTags",
            Operation::CreateAlias(_) => "CreateAlias",
            Operation::UpdateAlias(_) => "UpdateAlias",
            Operation::DeleteAlias(_) => "DeleteAlias",
            Operation::ListAliases(_) => "ListAliases",
            Operation::EnableKey(_) => "EnableKey",
            Operation::DisableKey(_) => "DisableKey",
            Operation::ScheduleKeyDeletion(_) => "ScheduleKeyDeletion",
            Operation::CancelKeyDeletion(_) => "CancelKeyDeletion",
            Operation::EnableKeyRotation(_) => "EnableKeyRotation",
            Operation::DisableKeyRotation(_) => "DisableKeyRotation",
            Operation::GetKeyRotationStatus(_) => "GetKeyRotationStatus",
            Operation::RotateKeyOnDemand(_) => "RotateKeyOnDemand",
            Operation::ListKeyRotations(_) => "ListKeyRotations",
            Operation::GetParametersForImport(_) => "GetParametersForImport",
            Operation::ImportKeyMaterial(_) => "ImportKeyMaterial",
            Operation::DeleteImportedKeyMaterial(_) => "DeleteImportedKeyMaterial",
            Operation::WhoAmI(_) => "WhoAmI",
            Operation::PutKeyPolicy(_) => "PutKeyPolicy",
            Operation::GetKeyPolicy(_) => "GetKeyPolicy",
            Operation::ListKeyPolicies(_) => "ListKeyPolicies",
            Operation::CreateGrant(_) => "CreateGrant",
            Operation::ListGrants(_) => "ListGrants",
            Operation::ListRetirableGrants(_) => "ListRetirableGrants",
            Operation::RetireGrant(_) => "RetireGrant",
            Operation::RevokeGrant(_) => "RevokeGrant",
            Operation::GetStatus(_) => "GetStatus",
            Operation::VerifyAuditSeals(_) => "VerifyAuditSeals",
        }
    }

    /// Every operation's name, in the order of [`Operation::index`] (the
    /// schema's union order): metrics keep one slot per operation.
    pub const NAMES: [&'static str; 40] = [
        "CreateKey",
        "DescribeKey",
        "ListKeys",
        "GenerateDataKey",
        "GenerateDataKeyWithoutPlaintext",
        "Encrypt",
        "Decrypt",
        "ReEncrypt",
        "GenerateRandom",
        "UpdateKeyDescription",
        "TagResource",
        "UntagResource",
        "ListResourceTags",
        "CreateAlias",
        "UpdateAlias",
        "DeleteAlias",
        "ListAliases",
        "EnableKey",
        "DisableKey",
        "ScheduleKeyDeletion",
        "CancelKeyDeletion",
        "EnableKeyRotation",
        "DisableKeyRotation",
        "GetKeyRotationStatus",
        "RotateKeyOnDemand",
        "ListKeyRotations",
        "GetParametersForImport",
        "ImportKeyMaterial",
        "DeleteImportedKeyMaterial",
        "WhoAmI",
        "PutKeyPolicy",
        "GetKeyPolicy",
        "ListKeyPolicies",
        "CreateGrant",
        "ListGrants",
        "ListRetirableGrants",
        "RetireGrant",
        "RevokeGrant",
        "GetStatus",
        "VerifyAuditSeals",
    ];

    /// The operation's position in [`Operation::NAMES`]: a dense index for
    /// tables of per-operation counters (no string comparison on the data
    /// path).
    pub fn index(&self) -> usize {
        match self {
            Operation::CreateKey(_) => 0,
            Operation::DescribeKey(_) => 1,
            Operation::ListKeys(_) => 2,
            Operation::GenerateDataKey(_) => 3,
            Operation::GenerateDataKeyWithoutPlaintext(_) => 4,
            Operation::Encrypt(_) => 5,
            Operation::Decrypt(_) => 6,
            Operation::ReEncrypt(_) => 7,
            Operation::GenerateRandom(_) => 8,
            Operation::UpdateKeyDescription(_) => 9,
            Operation::TagResource(_) => 10,
            Operation::UntagResource(_) => 11,
            Operation::ListResourceTags(_) => 12,
            Operation::CreateAlias(_) => 13,
            Operation::UpdateAlias(_) => 14,
            Operation::DeleteAlias(_) => 15,
            Operation::ListAliases(_) => 16,
            Operation::EnableKey(_) => 17,
            Operation::DisableKey(_) => 18,
            Operation::ScheduleKeyDeletion(_) => 19,
            Operation::CancelKeyDeletion(_) => 20,
            Operation::EnableKeyRotation(_) => 21,
            Operation::DisableKeyRotation(_) => 22,
            Operation::GetKeyRotationStatus(_) => 23,
            Operation::RotateKeyOnDemand(_) => 24,
            Operation::ListKeyRotations(_) => 25,
            Operation::GetParametersForImport(_) => 26,
            Operation::ImportKeyMaterial(_) => 27,
            Operation::DeleteImportedKeyMaterial(_) => 28,
            Operation::WhoAmI(_) => 29,
            Operation::PutKeyPolicy(_) => 30,
            Operation::GetKeyPolicy(_) => 31,
            Operation::ListKeyPolicies(_) => 32,
            Operation::CreateGrant(_) => 33,
            Operation::ListGrants(_) => 34,
            Operation::ListRetirableGrants(_) => 35,
            Operation::RetireGrant(_) => 36,
            Operation::RevokeGrant(_) => 37,
            Operation::GetStatus(_) => 38,
            Operation::VerifyAuditSeals(_) => 39,
        }
    }
}

/// The body of a request: one operation or a batch. Items that could not be
/// decoded (e.g. an operation this daemon does not know) are kept as errors
/// in place, so that their neighbours are still answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestBody<'a> {
    /// One operation.
    Single(Result<Operation<'a>, crate::KmsError>),
    /// Several operations, answered item by item in order.
    Batch(Vec<Result<Operation<'a>, crate::KmsError>>),
}

impl<'a> RequestBody<'a> {
    /// Its items: the one operation, or the batch's.
    pub fn items(&self) -> &[Result<Operation<'a>, crate::KmsError>] {
        match self {
            RequestBody::Single(op) => std::slice::from_ref(op),
            RequestBody::Batch(items) => items,
        }
    }
}

/// A decoded request frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// Echoed in the response; the client matches answers by it.
    pub request_id: u64,
    /// What to do.
    pub body: RequestBody<'a>,
}

/// Metadata of a KMS key.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct KeyMetadata {
    /// The key id (a UUID).
    pub key_id: String,
    /// The key ARN (`arn:<partition>:kms:<region>:<account>:key/<key id>`,
    /// the daemon's `[aws]` region and account).
    pub arn: String,
    /// Seconds since the Unix epoch.
    pub creation_date: i64,
    /// Whether the key state is Enabled.
    pub enabled: bool,
    /// Description.
    pub description: String,
    /// State.
    pub key_state: KeyState,
    /// Usage.
    pub key_usage: KeyUsage,
    /// Spec.
    pub key_spec: KeySpec,
    /// Origin.
    pub origin: Origin,
    /// Version new ciphertexts are made with.
    pub current_version: u32,
    /// When a key pending deletion will be deleted (seconds since the Unix
    /// epoch); absent otherwise.
    pub deletion_date: Option<i64>,
    /// The waiting period of a key pending deletion, in days; absent
    /// otherwise.
    pub pending_deletion_window_in_days: Option<u32>,
    /// When the imported material of an EXTERNAL key expires (seconds since
    /// the Unix epoch); absent when it does not expire or there is none.
    pub valid_to: Option<i64>,
    /// Whether an EXTERNAL key's material expires; absent for other keys.
    pub expiration_model: Option<ExpirationModel>,
}

/// What a metric is, as Prometheus types it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum MetricKind {
    /// Only goes up (or restarts at 0 with the daemon).
    #[default]
    Counter,
    /// Goes up and down.
    Gauge,
    /// Samples in buckets: `value` is their sum, `count` their number, and
    /// `quantiles` estimates read from the buckets.
    Histogram,
}

/// One metric series of a GetStatus answer.
#[derive(Clone, Debug, Default)]
pub struct MetricSample {
    /// Prometheus name, e.g. `kmsd_requests_total`.
    pub name: String,
    /// Counter, gauge or histogram.
    pub kind: MetricKind,
    /// Label names and values.
    pub labels: Vec<(String, String)>,
    /// A counter's or gauge's value; a histogram's sum.
    pub value: f64,
    /// A histogram's sample count (0 otherwise).
    pub count: u64,
    /// A histogram's quantiles and their estimates, e.g. `(0.99, 0.0004)`.
    pub quantiles: Vec<(f64, f64)>,
}

// Compared bit for bit (so NaN equals itself): the values are carried, not
// computed with.
impl PartialEq for MetricSample {
    fn eq(&self, o: &Self) -> bool {
        let q = |v: &[(f64, f64)]| -> Vec<(u64, u64)> {
            v.iter().map(|(a, b)| (a.to_bits(), b.to_bits())).collect()
        };
        self.name == o.name
            && self.kind == o.kind
            && self.labels == o.labels
            && self.value.to_bits() == o.value.to_bits()
            && self.count == o.count
            && q(&self.quantiles) == q(&o.quantiles)
    }
}
impl Eq for MetricSample {}

impl MetricSample {
    /// The value of label `name`, if it has one.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// GetStatus result.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct GetStatusOutput {
    /// kmsd's version.
    pub version: String,
    /// Milliseconds since the daemon started.
    pub uptime_ms: u64,
    /// Every series, sorted by name then labels (at most
    /// `limits::MAX_STATUS_METRICS`).
    pub metrics: Vec<MetricSample>,
}

/// One key of a ListKeys page.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct KeyListEntry {
    /// Key id.
    pub key_id: String,
    /// Key ARN.
    pub arn: String,
}

/// ListKeys result.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ListKeysOutput {
    /// This page.
    pub keys: Vec<KeyListEntry>,
    /// Pass as `marker` to get the next page; set when `truncated`.
    pub next_marker: Option<String>,
    /// Whether there are more keys.
    pub truncated: bool,
}

/// GenerateDataKey result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenerateDataKeyOutput {
    /// The ARN of the key that encrypted the data key (AWS answers the
    /// key ARN here).
    pub key_id: String,
    /// The data key.
    pub plaintext: SecretBytes,
    /// The data key encrypted under the KMS key.
    pub ciphertext_blob: Vec<u8>,
}

/// GenerateDataKeyWithoutPlaintext result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenerateDataKeyWithoutPlaintextOutput {
    /// The ARN of the key that encrypted the data key (AWS answers the
    /// key ARN here).
    pub key_id: String,
    /// The data key encrypted under the KMS key.
    pub ciphertext_blob: Vec<u8>,
}

/// Encrypt result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncryptOutput {
    /// The ARN of the key used (AWS answers the key ARN here).
    pub key_id: String,
    /// The ciphertext blob.
    pub ciphertext_blob: Vec<u8>,
}

/// Decrypt result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecryptOutput {
    /// The ARN of the key the blob was encrypted under (AWS answers the
    /// key ARN here).
    pub key_id: String,
    /// The plaintext.
    pub plaintext: SecretBytes,
}

/// ReEncrypt result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReEncryptOutput {
    /// The ARN of the key the source blob was under (AWS answers the key
    /// ARN here).
    pub source_key_id: String,
    /// The ARN of the key of the new blob.
    pub key_id: String,
    /// The new blob.
    pub ciphertext_blob: Vec<u8>,
}

/// GenerateRandom result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenerateRandomOutput {
    /// Random bytes.
    pub plaintext: SecretBytes,
}

/// VerifyAuditSeals result.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct VerifyAuditSealsOutput {
    /// One per seal asked about, in order: whether it is valid.
    pub valid: Vec<bool>,
    /// The sequence number of the last record written.
    pub head_seq: u64,
    /// SHA-256 of that record's line.
    pub head_hash: [u8; 32],
}

/// WhoAmI result: the caller as the daemon sees it (SO_PEERCRED at
/// accept), which key policies and grants decide on.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct WhoAmIOutput {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// The connecting process's id at connect time (0 outside the daemon's
    /// pid namespace); for logs, never for decisions (pids are reused).
    pub pid: i32,
    /// Supplementary group ids (SO_PEERGROUPS), sorted (at most 65536).
    pub groups: Vec<u32>,
    /// The systemd service (`name.service`) the caller runs in, if known.
    pub unit: Option<String>,
    /// The caller's cgroup v2 path, if known.
    pub cgroup: Option<String>,
}

/// ListResourceTags result.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ListResourceTagsOutput {
    /// This page.
    pub tags: Vec<OwnedTag>,
    /// Pass as `marker` to get the next page; set when `truncated`.
    pub next_marker: Option<String>,
    /// Whether there are more tags.
    pub truncated: bool,
}

/// One alias of a ListAliases page.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct AliasListEntry {
    /// `alias/...`.
    pub alias_name: String,
    /// The alias ARN (`arn:<partition>:kms:<region>:<account>:alias/...`).
    pub alias_arn: String,
    /// Key id of the key it names.
    pub target_key_id: Option<String>,
    /// Seconds since the Unix epoch.
    pub creation_date: i64,
    /// When it was last pointed at a key, seconds since the Unix epoch.
    pub last_updated_date: i64,
}

/// ListAliases result.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ListAliasesOutput {
    /// This page.
    pub aliases: Vec<AliasListEntry>,
    /// Pass as `marker` to get the next page; set when `truncated`.
    pub next_marker: Option<String>,
    /// Whether there are more aliases.
    pub truncated: bool,
}

/// ScheduleKeyDeletion result.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ScheduleKeyDeletionOutput {
    /// The key's ARN (AWS answers the ARN here).
    pub key_id: String,
    /// When the key will be deleted, seconds since the Unix epoch.
    pub deletion_date: i64,
    /// The key's state now (PendingDeletion).
    pub key_state: KeyState,
    /// The waiting period, in days.
    pub pending_window_in_days: u32,
}

/// CancelKeyDeletion result.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct CancelKeyDeletionOutput {
    /// The key's ARN (AWS answers the ARN here).
    pub key_id: String,
}

/// GetKeyRotationStatus result.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct GetKeyRotationStatusOutput {
    /// The key's ARN (AWS answers the ARN here).
    pub key_id: String,
    /// Whether automatic rotation is on.
    pub key_rotation_enabled: bool,
    /// The automatic rotation period in days, when rotation is on.
    pub rotation_period_in_days: Option<u32>,
    /// Next automatic rotation, seconds since the Unix epoch, when
    /// rotation is on.
    pub next_rotation_date: Option<i64>,
    /// When an on-demand rotation in progress started, seconds since the
    /// Unix epoch.
    pub on_demand_rotation_start_date: Option<i64>,
}

/// RotateKeyOnDemand result.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RotateKeyOnDemandOutput {
    /// The key's ARN (AWS answers the ARN here).
    pub key_id: String,
}

/// One rotation of a ListKeyRotations page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RotationsListEntry {
    /// The key's ARN.
    pub key_id: String,
    /// When it rotated, seconds since the Unix epoch.
    pub rotation_date: i64,
    /// Automatic or on demand.
    pub rotation_type: RotationType,
}

/// ListKeyRotations result.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ListKeyRotationsOutput {
    /// This page.
    pub rotations: Vec<RotationsListEntry>,
    /// Pass as `marker` to get the next page; set when `truncated`.
    pub next_marker: Option<String>,
    /// Whether there are more rotations.
    pub truncated: bool,
}

/// GetParametersForImport result.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct GetParametersForImportOutput {
    /// The key's ARN (AWS answers the ARN here).
    pub key_id: String,
    /// Pass to ImportKeyMaterial with the material wrapped under
    /// `public_key`.
    pub import_token: Vec<u8>,
    /// The wrapping public key, DER SubjectPublicKeyInfo (as AWS).
    pub public_key: Vec<u8>,
    /// Until when token and key may be used, seconds since the Unix epoch.
    pub parameters_valid_to: i64,
}

/// GetKeyPolicy result.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct GetKeyPolicyOutput {
    /// The key policy document (JSON), at most 32768 bytes.
    pub policy: String,
    /// Its name (`default`).
    pub policy_name: String,
}

/// ListKeyPolicies result.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ListKeyPoliciesOutput {
    /// This page (AWS: only `default`).
    pub policy_names: Vec<String>,
    /// Pass as `marker` to get the next page; set when `truncated`.
    pub next_marker: Option<String>,
    /// Whether there are more names.
    pub truncated: bool,
}

/// CreateGrant result.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct CreateGrantOutput {
    /// The grant token (AWS: non-secret): usable in GrantTokens at once,
    /// and to retire the grant.
    pub grant_token: String,
    /// The grant's id.
    pub grant_id: String,
}

/// One grant of a ListGrants or ListRetirableGrants page.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct GrantListEntry {
    /// The grant's key (AWS answers the key ARN here).
    pub key_id: String,
    /// The grant's id.
    pub grant_id: String,
    /// The grant's name, when it has one.
    pub name: Option<String>,
    /// When it was created, seconds since the Unix epoch.
    pub creation_date: i64,
    /// Who has the permissions.
    pub grantee_principal: String,
    /// Who may retire it besides its grantee, when anyone.
    pub retiring_principal: Option<String>,
    /// Who created it (AWS: the account; kmsd: the daemon's choice, at most
    /// 256 characters).
    pub issuing_account: String,
    /// What it allows.
    pub operations: Vec<GrantOperation>,
    /// Its encryption-context constraints, when it has any.
    pub constraints: Option<OwnedGrantConstraints>,
}

/// ListGrants and ListRetirableGrants result.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ListGrantsOutput {
    /// This page.
    pub grants: Vec<GrantListEntry>,
    /// Pass as `marker` to get the next page; set when `truncated`.
    pub next_marker: Option<String>,
    /// Whether there are more grants.
    pub truncated: bool,
}

/// The result of one successful operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// CreateKey.
    CreateKey(KeyMetadata),
    /// DescribeKey.
    DescribeKey(KeyMetadata),
    /// ListKeys.
    ListKeys(ListKeysOutput),
    /// GenerateDataKey.
    GenerateDataKey(GenerateDataKeyOutput),
    /// GenerateDataKeyWithoutPlaintext.
    GenerateDataKeyWithoutPlaintext(GenerateDataKeyWithoutPlaintextOutput),
    /// Encrypt.
    Encrypt(EncryptOutput),
    /// Decrypt.
    Decrypt(DecryptOutput),
    /// ReEncrypt.
    ReEncrypt(ReEncryptOutput),
    /// GenerateRandom.
    GenerateRandom(GenerateRandomOutput),
    /// UpdateKeyDescription (no fields, as in AWS).
    UpdateKeyDescription,
    /// TagResource (no fields, as in AWS).
    TagResource,
    /// UntagResource (no fields, as in AWS).
    UntagResource,
    /// ListResourceTags.
    ListResourceTags(ListResourceTagsOutput),
    /// CreateAlias (no fields, as in AWS).
    CreateAlias,
    /// UpdateAlias (no fields, as in AWS).
    UpdateAlias,
    /// DeleteAlias (no fields, as in AWS).
    DeleteAlias,
    /// ListAliases.
    ListAliases(ListAliasesOutput),
    /// EnableKey (no fields, as in AWS).
    EnableKey,
    /// DisableKey (no fields, as in AWS).
    DisableKey,
    /// ScheduleKeyDeletion.
    ScheduleKeyDeletion(ScheduleKeyDeletionOutput),
    /// CancelKeyDeletion.
    CancelKeyDeletion(CancelKeyDeletionOutput),
    /// EnableKeyRotation (no fields, as in AWS).
    EnableKeyRotation,
    /// DisableKeyRotation (no fields, as in AWS).
    DisableKeyRotation,
    /// GetKeyRotationStatus.
    GetKeyRotationStatus(GetKeyRotationStatusOutput),
    /// RotateKeyOnDemand.
    RotateKeyOnDemand(RotateKeyOnDemandOutput),
    /// ListKeyRotations.
    ListKeyRotations(ListKeyRotationsOutput),
    /// GetParametersForImport.
    GetParametersForImport(GetParametersForImportOutput),
    /// ImportKeyMaterial (no fields, as in AWS).
    ImportKeyMaterial,
    /// DeleteImportedKeyMaterial (no fields, as in AWS).
    DeleteImportedKeyMaterial,
    /// WhoAmI (kmsd's own).
    WhoAmI(WhoAmIOutput),
    /// PutKeyPolicy (no fields, as in AWS).
    PutKeyPolicy,
    /// GetKeyPolicy.
    GetKeyPolicy(GetKeyPolicyOutput),
    /// ListKeyPolicies.
    ListKeyPolicies(ListKeyPoliciesOutput),
    /// CreateGrant.
    CreateGrant(CreateGrantOutput),
    /// ListGrants.
    ListGrants(ListGrantsOutput),
    /// ListRetirableGrants (AWS answers it with ListGrants' shape).
    ListRetirableGrants(ListGrantsOutput),
    /// RetireGrant (no fields, as in AWS).
    RetireGrant,
    /// RevokeGrant (no fields, as in AWS).
    RevokeGrant,
    /// GetStatus (kmsd's own).
    GetStatus(GetStatusOutput),
    /// VerifyAuditSeals (kmsd's own).
    VerifyAuditSeals(VerifyAuditSealsOutput),
}

/// The answer to one operation.
pub type Outcome = Result<Output, crate::KmsError>;

/// The body of a response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseBody {
    /// The whole frame failed (undecodable, unsupported version, batch over
    /// the limit, overload).
    Error(crate::KmsError),
    /// The answer to a single operation.
    Single(Outcome),
    /// Answers to a batch, in order.
    Batch(Vec<Outcome>),
}

/// A response frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The request's id (0 when the request could not be read).
    pub request_id: u64,
    /// The answer.
    pub body: ResponseBody,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_plaintext() {
        let secret = b"very secret plaintext";
        let e = Encrypt {
            key_id: "k",
            plaintext: secret,
            ..Encrypt::default()
        };
        let shown = format!("{e:?}");
        assert!(shown.contains("21 bytes redacted"), "{shown}");
        assert!(!shown.contains("118"), "{shown}"); // b'v' as a number
        let s = SecretBytes::from_slice(secret);
        assert_eq!(format!("{s:?}"), "SecretBytes(<21 bytes redacted>)");
    }
}
