//! How clients name keys: key ids (hyphenated UUIDs), key ARNs, alias names
//! (`alias/...`) and alias ARNs, and how kmsd formats them.
//!
//! ARNs have AWS's form, `arn:<partition>:kms:<region>:<account>:key/<key
//! id>` and `...:alias/<name>`, for the region and account of `[aws]` in
//! the config: [`Arns`], built once from the config and owned by the
//! service (`Service::arns`), formats every ARN kmsd answers (the
//! operations, the audit record) and parses every one it is given. The
//! form kmsd had before `[aws]`, `arn:kmsd:kms:local:key/<key id>` and
//! `arn:kmsd:kms:local:alias/<name>` ([`LEGACY_ARN_BASE`]), is still
//! accepted on input (deprecated) so that stored client configs keep
//! working; it is never answered.
//!
//! Parsing is pure ([`Arns::parse_key_name`]); turning an alias into a key
//! id needs the service's alias table ([`Service::resolve_key_id`]), which
//! is the one resolution function every operation that accepts aliases
//! uses (the data path's `Op::keys` and `apply`, DescribeKey). Operations
//! that take a key id or key ARN only (AWS: EnableKey, TagResource, ...)
//! use [`Arns::parse_key_id_field`].
//!
//! Identifiers that cannot name anything are NotFoundException, as AWS
//! answers for identifiers it cannot resolve: an ARN of another partition,
//! region or account too (AWS: `NotFoundException: Invalid arn
//! <region>`); an empty identifier or one over 2048 characters is
//! ValidationException (AWS's KeyId shape). Every message names the
//! request field.

use super::Service;
use crate::config::AwsConfig;
use kms_proto::types::limits::MAX_KEY_ID_LEN;
use kms_proto::{ErrorKind, KmsError};

/// What kmsd's ARNs started with before `[aws]` (there was no account or
/// region on a host). Accepted on input, deprecated; never answered.
pub const LEGACY_ARN_BASE: &str = "arn:kmsd:kms:local:";

/// What every alias name starts with.
pub const ALIAS_PREFIX: &str = "alias/";

/// The resource part of a key ARN, before the key id.
const KEY_RESOURCE: &str = "key/";

/// A key id as clients see it (a hyphenated UUID).
pub(crate) const KEY_ID_TEXT: usize = 36;
/// An AWS account id: 12 digits.
pub const ACCOUNT_ID_LEN: usize = 12;
/// The longest region `[aws]` takes (AWS's longest is 14 characters).
pub const MAX_REGION_LEN: usize = 32;
/// The longest partition [`partition_of`] gives (`aws-us-gov`).
const MAX_PARTITION_LEN: usize = 10;
/// The longest ARN base, `arn:<partition>:kms:<region>:<account>:`, any
/// valid `[aws]` gives.
pub(crate) const MAX_ARN_BASE_TEXT: usize =
    "arn:".len() + MAX_PARTITION_LEN + ":kms:".len() + MAX_REGION_LEN + 1 + ACCOUNT_ID_LEN + 1;
/// The longest key ARN any valid `[aws]` gives (answer bounds count on it).
pub(crate) const MAX_KEY_ARN_TEXT: usize = MAX_ARN_BASE_TEXT + KEY_RESOURCE.len() + KEY_ID_TEXT;

/// AWS's partition of `region`, from the prefixes of the AWS SDKs'
/// partition table (`partitions.json`, each partition's `regionRegex`):
/// `aws-cn` for `cn-...`, `aws-us-gov` for `us-gov-...`, the isolated
/// partitions `aws-iso` (`us-iso-...`), `aws-iso-b` (`us-isob-...`),
/// `aws-iso-e` (`eu-isoe-...`), `aws-iso-f` (`us-isof-...`), `aws-eusc`
/// (`eusc-...`), and `aws` for every other region.
pub fn partition_of(region: &str) -> &'static str {
    const PARTITIONS: [(&str, &str); 7] = [
        ("cn-", "aws-cn"),
        ("us-gov-", "aws-us-gov"),
        ("us-iso-", "aws-iso"),
        ("us-isob-", "aws-iso-b"),
        ("eu-isoe-", "aws-iso-e"),
        ("us-isof-", "aws-iso-f"),
        ("eusc-", "aws-eusc"),
    ];
    PARTITIONS
        .iter()
        .find(|(prefix, _)| region.starts_with(prefix))
        .map_or("aws", |(_, partition)| partition)
}

/// Whether `region` has the shape of an AWS Region name: hyphenated parts,
/// at least three, the first two or more lower-case letters, the last
/// digits, the others lower-case letters or digits (`us-east-1`,
/// `eu-west-3`, `us-gov-west-1`); at most [`MAX_REGION_LEN`] characters.
/// An availability zone (`us-east-1a`) or `local` is not one.
pub fn is_region(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    let lower = |p: &str, digits: bool| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || (digits && b.is_ascii_digit()))
    };
    region.len() <= MAX_REGION_LEN
        && parts.len() >= 3
        && parts[0].len() >= 2
        && lower(parts[0], false)
        && parts[1..parts.len() - 1].iter().all(|p| lower(p, true))
        && parts[parts.len() - 1].bytes().all(|b| b.is_ascii_digit())
        && !parts[parts.len() - 1].is_empty()
}

/// Whether `id` is an AWS account id: exactly 12 ASCII digits.
pub fn is_account_id(id: &str) -> bool {
    id.len() == ACCOUNT_ID_LEN && id.bytes().all(|b| b.is_ascii_digit())
}

/// The ARN form of this kmsd: partition, region and account, from `[aws]`.
/// The one place ARNs are made and read; owned by the service, which
/// every operation reaches (`Service::arns`). The default is the default
/// config's (`arn:aws:kms:us-east-1:000000000000:`), for in-process
/// services (tests, benches, the load generator's baseline).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arns {
    /// `arn:<partition>:kms:<region>:<account>:`.
    base: String,
    /// `<base>key/`.
    key_prefix: String,
    partition: &'static str,
    region: String,
    account_id: String,
}

impl Default for Arns {
    fn default() -> Self {
        Arns::from_config(&AwsConfig::default()).expect("the default [aws] is valid")
    }
}

impl Arns {
    /// The form `[aws]` describes; an error says which field is wrong and
    /// why, for the config's validation.
    pub fn from_config(aws: &AwsConfig) -> Result<Arns, String> {
        Arns::new(&aws.region, &aws.account_id)
    }

    /// The form of `region` (its partition follows from it:
    /// [`partition_of`]) and `account_id`; an error names the field.
    pub fn new(region: &str, account_id: &str) -> Result<Arns, String> {
        if !is_region(region) {
            return Err(format!(
                "aws.region {} is not an AWS Region name: lower-case letters, digits and \
                 hyphens, like us-east-1, eu-west-3 or us-gov-west-1 (at most \
                 {MAX_REGION_LEN} characters)",
                shown(region)
            ));
        }
        if !is_account_id(account_id) {
            return Err(format!(
                "aws.account_id {} is not an AWS account id: exactly {ACCOUNT_ID_LEN} digits, \
                 like \"000000000000\" (a TOML string, so that leading zeros stay)",
                shown(account_id)
            ));
        }
        let partition = partition_of(region);
        let base = format!("arn:{partition}:kms:{region}:{account_id}:");
        Ok(Arns {
            key_prefix: format!("{base}{KEY_RESOURCE}"),
            base,
            partition,
            region: region.to_owned(),
            account_id: account_id.to_owned(),
        })
    }

    /// The partition (`aws`, `aws-cn`, `aws-us-gov`, ...).
    pub fn partition(&self) -> &str {
        self.partition
    }

    /// The region (`aws.region`).
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The account id (`aws.account_id`).
    pub fn account_id(&self) -> &str {
        &self.account_id
    }

    /// What every ARN of this kmsd starts with:
    /// `arn:<partition>:kms:<region>:<account>:`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// What every key ARN starts with: `<base>key/`.
    pub fn key_arn_prefix(&self) -> &str {
        &self.key_prefix
    }

    /// The ARN of a key: `arn:<partition>:kms:<region>:<account>:key/<key
    /// id>`. One allocation (this is on the data path: Encrypt's KeyId).
    pub fn key_arn(&self, id: &[u8; 16]) -> String {
        let mut arn = String::with_capacity(self.key_prefix.len() + KEY_ID_TEXT);
        arn.push_str(&self.key_prefix);
        let mut text = [0u8; KEY_ID_TEXT];
        arn.push_str(uuid::Uuid::from_bytes(*id).hyphenated().encode_lower(&mut text));
        arn
    }

    /// The ARN of an alias (`name` is the whole name, `alias/...`), as
    /// AWS's: `arn:<partition>:kms:<region>:<account>:alias/<name>`.
    pub fn alias_arn(&self, name: &str) -> String {
        format!("{}{name}", self.base)
    }

    /// Whether `arn` is a key ARN of this kmsd's partition, region and
    /// account, or of the legacy form (what a key policy's `Resource` may
    /// name when it is given).
    pub fn is_own_key_arn(&self, arn: &str) -> bool {
        let own = |base: &str| {
            arn.strip_prefix(base)
                .and_then(|r| r.strip_prefix(KEY_RESOURCE))
                .is_some_and(|id| key_id_text(id).is_some())
        };
        own(&self.base) || own(LEGACY_ARN_BASE)
    }

    /// Parses a key id, key ARN, alias name or alias ARN given in `field`.
    /// ARNs of this kmsd's form and of the legacy form are taken; an ARN
    /// of any other partition, region or account is NotFoundException.
    pub fn parse_key_name<'a>(&self, s: &'a str, field: &str) -> Result<KeyName<'a>, KmsError> {
        // AWS's KeyId is 1..=2048 characters; outside that is a
        // ValidationException (an absent KeyId is one too, in the codec).
        if s.is_empty() {
            return Err(KmsError::validation(format!("{field} must not be empty")));
        }
        if s.len() > MAX_KEY_ID_LEN {
            return Err(KmsError::validation(format!(
                "{field} is longer than {MAX_KEY_ID_LEN} characters"
            )));
        }
        if s.starts_with(ALIAS_PREFIX) {
            return Ok(KeyName::Alias(s));
        }
        if !s.starts_with("arn:") {
            return key_id_text(s).map(KeyName::Key).ok_or_else(|| {
                not_found(
                    field,
                    s,
                    "is not a key id (UUID), key ARN, alias name (alias/...) or alias ARN",
                )
            });
        }
        let Some(resource) = s
            .strip_prefix(self.base.as_str())
            .or_else(|| s.strip_prefix(LEGACY_ARN_BASE))
        else {
            // AWS: "Invalid arn <region>" (NotFoundException).
            return Err(not_found(
                field,
                s,
                &format!(
                    "is not an ARN of this kmsd's partition, region and account ({}...)",
                    self.base
                ),
            ));
        };
        if resource.starts_with(ALIAS_PREFIX) {
            return Ok(KeyName::Alias(resource));
        }
        match resource.strip_prefix(KEY_RESOURCE).and_then(key_id_text) {
            Some(id) => Ok(KeyName::Key(id)),
            None => Err(not_found(
                field,
                s,
                &format!(
                    "is neither a key ARN ({}key/<key id>) nor an alias ARN",
                    self.base
                ),
            )),
        }
    }

    /// Parses a key id or key ARN given in `field`, for the operations
    /// that take no alias (AWS: EnableKey, TagResource, ScheduleKeyDeletion,
    /// ...). An alias is NotFoundException saying so.
    pub fn parse_key_id_field(&self, s: &str, field: &str) -> Result<[u8; 16], KmsError> {
        match self.parse_key_name(s, field)? {
            KeyName::Key(id) => Ok(id),
            KeyName::Alias(_) => Err(not_found(
                field,
                s,
                "is an alias; this operation takes a key id or key ARN",
            )),
        }
    }

    /// Parses a key id or key ARN (the field is `KeyId`); see
    /// [`Arns::parse_key_id_field`].
    pub fn parse_key_id(&self, s: &str) -> Result<[u8; 16], KmsError> {
        self.parse_key_id_field(s, "KeyId")
    }
}

/// Formats a key id the way clients see it (a hyphenated UUID).
pub fn format_key_id(id: &[u8; 16]) -> String {
    uuid::Uuid::from_bytes(*id).hyphenated().to_string()
}

/// A key id's text (a hyphenated UUID, any case), if `s` is one.
fn key_id_text(s: &str) -> Option<[u8; 16]> {
    if s.len() != KEY_ID_TEXT {
        return None;
    }
    uuid::Uuid::try_parse(s).ok().map(|u| *u.as_bytes())
}

/// The alias name an identifier gives, if it names an alias: an alias
/// name, or an alias ARN's name part, whatever its partition, region and
/// account (`kms:RequestAlias` values are alias names, never ARNs). Only
/// its shape is read: resolution has refused an ARN that is not this
/// kmsd's before anything is authorized with it.
pub fn alias_named(key_id: &str) -> Option<&str> {
    if key_id.starts_with(ALIAS_PREFIX) {
        return Some(key_id);
    }
    let resource = match key_id.strip_prefix(LEGACY_ARN_BASE) {
        Some(r) => r,
        // arn:<partition>:kms:<region>:<account>:<resource>
        None => key_id.strip_prefix("arn:")?.splitn(5, ':').nth(4)?,
    };
    resource.starts_with(ALIAS_PREFIX).then_some(resource)
}

/// What a client-supplied identifier names, before any lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyName<'a> {
    /// A key, by id or key ARN.
    Key([u8; 16]),
    /// An alias, by name or alias ARN: the whole name (`alias/...`).
    Alias(&'a str),
}

/// Client text quoted in a message: at most 128 characters, Debug-escaped
/// (the answer bounds count on it: `wire::bound`).
pub(crate) fn shown(s: &str) -> String {
    let head: String = s.chars().take(128).collect();
    if head.len() < s.len() {
        format!("{head:?}...")
    } else {
        format!("{head:?}")
    }
}

fn not_found(field: &str, s: &str, what: &str) -> KmsError {
    KmsError::new(ErrorKind::NotFound, format!("{field} {} {what}", shown(s)))
}

/// NotFoundException for an alias no key has.
pub(crate) fn alias_not_found(name: &str, field: &str) -> KmsError {
    KmsError::new(
        ErrorKind::NotFound,
        format!("{field}: alias {} does not exist", shown(name)),
    )
}

impl Service {
    /// The ARN form of this kmsd (`[aws]`).
    pub fn arns(&self) -> &Arns {
        &self.core.arns
    }

    /// The key a key id, key ARN, alias name or alias ARN names: the one
    /// resolution every operation that accepts aliases uses (admission's
    /// key pass included). An alias is looked up in the in-memory alias
    /// table (one read lock, one hash lookup; never the store), so this
    /// runs on I/O threads. Whether the key exists is the caller's to find.
    pub fn resolve_key_id(&self, s: &str, field: &str) -> Result<[u8; 16], KmsError> {
        match self.arns().parse_key_name(s, field)? {
            KeyName::Key(id) => Ok(id),
            KeyName::Alias(name) => self
                .aliases
                .get(name)
                .ok_or_else(|| alias_not_found(name, field)),
        }
    }

    /// A key id or key ARN in `KeyId` (no alias): [`Arns::parse_key_id`].
    pub fn parse_key_id(&self, s: &str) -> Result<[u8; 16], KmsError> {
        self.arns().parse_key_id(s)
    }
}

/// The form with the longest ARNs (answer bounds' tests).
#[cfg(test)]
pub(crate) fn longest_arns() -> Arns {
    let region = format!("us-gov-{}-1", "w".repeat(MAX_REGION_LEN - 9));
    Arns::new(&region, "000000000000").expect("a valid region")
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0b4f36d6-3e4c-4a5e-9a3e-6f0e2a9b1c7d";

    fn kind(r: Result<impl std::fmt::Debug, KmsError>) -> ErrorKind {
        r.unwrap_err().kind
    }

    fn paris() -> Arns {
        Arns::new("eu-west-3", "123456789012").unwrap()
    }

    #[test]
    fn the_default_form_is_the_default_config_s() {
        let a = Arns::default();
        assert_eq!(a.base(), "arn:aws:kms:us-east-1:000000000000:");
        assert_eq!((a.partition(), a.region(), a.account_id()), ("aws", "us-east-1", "000000000000"));
        let id = a.parse_key_id(ID).unwrap();
        assert_eq!(a.key_arn(&id), format!("arn:aws:kms:us-east-1:000000000000:key/{ID}"));
        assert_eq!(a.alias_arn("alias/app"), "arn:aws:kms:us-east-1:000000000000:alias/app");
    }

    #[test]
    fn arns_carry_the_configured_partition_region_and_account() {
        let a = paris();
        let id = a.parse_key_id(ID).unwrap();
        assert_eq!(a.key_arn(&id), format!("arn:aws:kms:eu-west-3:123456789012:key/{ID}"));
        assert_eq!(a.key_arn_prefix(), "arn:aws:kms:eu-west-3:123456789012:key/");
        assert_eq!(a.alias_arn("alias/app/db"), "arn:aws:kms:eu-west-3:123456789012:alias/app/db");
        for (region, partition) in [
            ("us-east-1", "aws"),
            ("eu-west-3", "aws"),
            ("ap-southeast-5", "aws"),
            ("cn-north-1", "aws-cn"),
            ("cn-northwest-1", "aws-cn"),
            ("us-gov-west-1", "aws-us-gov"),
            ("us-iso-east-1", "aws-iso"),
            ("us-isob-east-1", "aws-iso-b"),
            ("eu-isoe-west-1", "aws-iso-e"),
            ("us-isof-south-1", "aws-iso-f"),
            ("eusc-de-east-1", "aws-eusc"),
        ] {
            let a = Arns::new(region, "000000000000").unwrap();
            assert_eq!(a.partition(), partition, "{region}");
            assert!(partition.len() <= MAX_PARTITION_LEN, "the answer bounds count on it");
            assert_eq!(
                a.key_arn(&[0; 16]),
                format!("arn:{partition}:kms:{region}:000000000000:key/00000000-0000-0000-0000-000000000000")
            );
        }
    }

    #[test]
    fn key_ids_and_key_arns_of_both_forms_parse_to_the_same_key() {
        let a = paris();
        let id = a.parse_key_id(ID).unwrap();
        assert_eq!(format_key_id(&id), ID);
        assert_eq!(a.parse_key_id(&a.key_arn(&id)).unwrap(), id);
        assert_eq!(a.parse_key_id(&format!("arn:kmsd:kms:local:key/{ID}")).unwrap(), id);
        assert_eq!(a.parse_key_name(ID, "KeyId").unwrap(), KeyName::Key(id));
        // Upper case is the same UUID, in an ARN too.
        assert_eq!(a.parse_key_id(&ID.to_uppercase()).unwrap(), id);
        let upper = format!("{}{}", a.key_arn_prefix(), ID.to_uppercase());
        assert_eq!(a.parse_key_id(&upper).unwrap(), id);
    }

    #[test]
    fn alias_names_and_alias_arns_of_both_forms_parse_to_the_name() {
        let a = paris();
        for given in [
            "alias/app/db",
            "arn:aws:kms:eu-west-3:123456789012:alias/app/db",
            "arn:kmsd:kms:local:alias/app/db",
        ] {
            assert_eq!(a.parse_key_name(given, "KeyId").unwrap(), KeyName::Alias("alias/app/db"), "{given}");
            assert_eq!(alias_named(given), Some("alias/app/db"), "{given}");
        }
        assert_eq!(alias_named(ID), None);
        assert_eq!(alias_named(&a.key_arn(&[1; 16])), None);
        assert_eq!(alias_named("arn:kmsd:kms:local:key/x"), None);
        // The shape only: another account's alias ARN still names an
        // alias (resolution refuses it before anything is authorized).
        assert_eq!(alias_named("arn:aws:kms:us-east-1:111122223333:alias/x"), Some("alias/x"));
        assert_eq!(alias_named("arn:aws:kms:alias/x"), None);
    }

    #[test]
    fn arns_of_another_partition_region_or_account_are_not_found() {
        let a = paris();
        for other in [
            format!("arn:aws:kms:us-east-1:123456789012:key/{ID}"),
            format!("arn:aws:kms:eu-west-3:111122223333:key/{ID}"),
            format!("arn:aws-cn:kms:eu-west-3:123456789012:key/{ID}"),
            format!("arn:kmsd:kms:other:key/{ID}"),
            "arn:aws:kms:us-east-1:000000000000:alias/app".to_owned(),
            "arn:aws:kms:eu-west-3:111122223333:alias/app".to_owned(),
            format!("arn:aws:s3:eu-west-3:123456789012:key/{ID}"),
        ] {
            let e = a.parse_key_name(&other, "DestinationKeyId").unwrap_err();
            assert_eq!(e.kind, ErrorKind::NotFound, "{other}");
            assert!(e.message.starts_with("DestinationKeyId "), "{e}");
            assert!(
                e.message.contains("arn:aws:kms:eu-west-3:123456789012:"),
                "says what this kmsd's ARNs are: {e}"
            );
        }
    }

    #[test]
    fn bad_identifiers_are_not_found_naming_the_field() {
        let a = Arns::default();
        for bad in [
            "nope",
            "0b4f36d6-3e4c-4a5e-9a3e-6f0e2a9b1c7",
            "arn:kmsd:kms:local:key/nope",
            "arn:aws:kms:us-east-1:000000000000:key/nope",
            "arn:aws:kms:us-east-1:000000000000:key/",
            "arn:aws:kms:us-east-1:000000000000:grant/x",
            "arn:aws:kms:us-east-1:000000000000:",
            "arn:kmsd:kms:local:grant/x",
            "arn:",
            // ARNs are case-sensitive but for the key id.
            "ARN:AWS:KMS:US-EAST-1:000000000000:KEY/0B4F36D6-3E4C-4A5E-9A3E-6F0E2A9B1C7D",
        ] {
            let e = a.parse_key_name(bad, "DestinationKeyId").unwrap_err();
            assert_eq!(e.kind, ErrorKind::NotFound, "{bad}");
            assert!(e.message.starts_with("DestinationKeyId "), "{e}");
        }
        let e = a.parse_key_id_field("alias/x", "TargetKeyId").unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert!(e.message.contains("TargetKeyId") && e.message.contains("alias"), "{e}");
        for alias_arn in ["arn:kmsd:kms:local:alias/x", "arn:aws:kms:us-east-1:000000000000:alias/x"] {
            assert_eq!(kind(a.parse_key_id(alias_arn)), ErrorKind::NotFound);
        }
    }

    #[test]
    fn empty_and_overlong_identifiers_are_validation_errors() {
        let a = Arns::default();
        assert_eq!(kind(a.parse_key_name("", "KeyId")), ErrorKind::Validation);
        let long = "a".repeat(MAX_KEY_ID_LEN + 1);
        let e = a.parse_key_name(&long, "KeyId").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Validation);
        assert!(e.message.contains("KeyId"), "{e}");
        let long_arn = format!("{}{}", a.key_arn_prefix(), "a".repeat(MAX_KEY_ID_LEN));
        assert_eq!(kind(a.parse_key_name(&long_arn, "KeyId")), ErrorKind::Validation);
        // At the limit it is merely unknown.
        let at = format!("alias/{}", "a".repeat(MAX_KEY_ID_LEN - 6));
        assert!(a.parse_key_name(&at, "KeyId").is_ok());
    }

    #[test]
    fn quoted_client_text_is_bounded_and_escaped() {
        // The longest ARN base, so the longest message: within the bound
        // `wire::bound` gives every error (1,536 bytes).
        let a = longest_arns();
        assert_eq!(a.base().len(), MAX_ARN_BASE_TEXT);
        assert_eq!(a.key_arn(&[0; 16]).len(), MAX_KEY_ARN_TEXT);
        for bad in [
            "\u{1}".repeat(2000),
            format!("arn:{}", "\u{1}".repeat(2000)),
            format!("{}{}", a.base(), "\u{1}".repeat(1900)),
        ] {
            let e = a.parse_key_name(&bad, "DestinationKeyId").unwrap_err();
            assert!(e.message.len() < 1536, "{}", e.message.len());
            assert!(e.message.contains("\\u{1}"), "{e}");
        }
    }

    #[test]
    fn regions_and_account_ids_have_aws_shapes() {
        for ok in ["us-east-1", "eu-west-3", "us-gov-west-1", "ap-southeast-5", "eusc-de-east-1", "il-central-1"] {
            assert!(is_region(ok), "{ok}");
        }
        for bad in [
            "", "local", "us-east", "us-east-1a", "US-EAST-1", "us_east_1", "us-east-1 ", "-east-1",
            "us--1", "u-east-1", "us-east-", "us-ëast-1", "1s-east-1",
        ] {
            assert!(!is_region(bad), "{bad:?}");
            let e = Arns::new(bad, "000000000000").unwrap_err();
            assert!(e.starts_with("aws.region "), "{e}");
        }
        assert!(!is_region(&format!("us-{}-1", "e".repeat(MAX_REGION_LEN))));
        for bad in ["", "00000000000", "0000000000000", "00000000000a", "１２３４５６７８９０１２", " 00000000000"] {
            assert!(!is_account_id(bad), "{bad:?}");
            let e = Arns::new("us-east-1", bad).unwrap_err();
            assert!(e.starts_with("aws.account_id "), "{e}");
        }
        assert!(is_account_id("000000000000") && is_account_id("123456789012"));
    }

    #[test]
    fn policy_resources_may_name_own_and_legacy_key_arns_only() {
        let a = paris();
        assert!(a.is_own_key_arn(&format!("arn:aws:kms:eu-west-3:123456789012:key/{ID}")));
        assert!(a.is_own_key_arn(&format!("arn:kmsd:kms:local:key/{ID}")));
        for other in [
            format!("arn:aws:kms:us-east-1:000000000000:key/{ID}"),
            format!("arn:aws:kms:eu-west-3:123456789012:key/{}", &ID[1..]),
            "arn:aws:kms:eu-west-3:123456789012:alias/x".to_owned(),
            "*".to_owned(),
        ] {
            assert!(!a.is_own_key_arn(&other), "{other}");
        }
    }
}
