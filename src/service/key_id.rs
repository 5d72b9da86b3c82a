//! How clients name keys: key ids (hyphenated UUIDs), key ARNs, alias names
//! (`alias/...`) and alias ARNs, and how kmsd formats them.
//!
//! Parsing is pure ([`parse_key_name`]); turning an alias into a key id
//! needs the service's alias table ([`Service::resolve_key_id`]), which is
//! the one resolution function every operation that accepts aliases uses
//! (the data path's `Op::keys` and `apply`, DescribeKey). Operations that
//! take a key id or key ARN only (AWS: EnableKey, TagResource, ...) use
//! [`parse_key_id_field`].
//!
//! Identifiers that cannot name anything are NotFoundException, as AWS
//! answers for identifiers it cannot resolve; an empty identifier or one
//! over 2048 characters is ValidationException (AWS's KeyId shape). Every
//! message names the request field.

use super::Service;
use kms_proto::types::limits::MAX_KEY_ID_LEN;
use kms_proto::{ErrorKind, KmsError};

/// What every kmsd ARN starts with. There is no account or region on a
/// host; the ARN form is kept so that tools that pass ARNs around keep
/// working.
pub const ARN_BASE: &str = "arn:kmsd:kms:local:";

/// Prefix of key ARNs (`arn:kmsd:kms:local:key/<key id>`).
pub const ARN_PREFIX: &str = "arn:kmsd:kms:local:key/";

/// What every alias name starts with.
pub const ALIAS_PREFIX: &str = "alias/";

/// Prefix of alias ARNs (`arn:kmsd:kms:local:alias/<name>`): the ARN base
/// followed by the whole alias name, as in AWS
/// (`arn:aws:kms:<region>:<account>:alias/<name>`).
pub const ALIAS_ARN_PREFIX: &str = "arn:kmsd:kms:local:alias/";

/// A key id as clients see it (a hyphenated UUID).
pub(crate) const KEY_ID_TEXT: usize = 36;
/// A key ARN.
pub(crate) const ARN_TEXT: usize = ARN_PREFIX.len() + KEY_ID_TEXT;

/// Formats a key id the way clients see it (a hyphenated UUID).
pub fn format_key_id(id: &[u8; 16]) -> String {
    uuid::Uuid::from_bytes(*id).hyphenated().to_string()
}

/// The ARN of a key.
pub fn key_arn(id: &[u8; 16]) -> String {
    format!("{ARN_PREFIX}{}", format_key_id(id))
}

/// The ARN of an alias (`name` is the whole name, `alias/...`).
pub fn alias_arn(name: &str) -> String {
    format!("{ARN_BASE}{name}")
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

/// Parses a key id, key ARN, alias name or alias ARN given in `field`.
pub fn parse_key_name<'a>(s: &'a str, field: &str) -> Result<KeyName<'a>, KmsError> {
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
    if s.starts_with(ALIAS_ARN_PREFIX) {
        return Ok(KeyName::Alias(&s[ARN_BASE.len()..]));
    }
    let (bare, what) = match s.strip_prefix(ARN_PREFIX) {
        Some(bare) => (bare, "is not a valid key ARN (arn:kmsd:kms:local:key/<key id>)"),
        None if s.starts_with("arn:") => {
            return Err(not_found(
                field,
                s,
                "is not a kmsd key or alias ARN (arn:kmsd:kms:local:key/<key id> or \
                 arn:kmsd:kms:local:alias/<name>)",
            ))
        }
        None => (
            s,
            "is not a key id (UUID), key ARN, alias name (alias/...) or alias ARN",
        ),
    };
    if bare.len() == KEY_ID_TEXT {
        if let Ok(u) = uuid::Uuid::try_parse(bare) {
            return Ok(KeyName::Key(*u.as_bytes()));
        }
    }
    Err(not_found(field, s, what))
}

/// Parses a key id or key ARN given in `field`, for the operations that
/// take no alias (AWS: EnableKey, TagResource, ScheduleKeyDeletion, ...).
/// An alias is NotFoundException saying so.
pub fn parse_key_id_field(s: &str, field: &str) -> Result<[u8; 16], KmsError> {
    match parse_key_name(s, field)? {
        KeyName::Key(id) => Ok(id),
        KeyName::Alias(_) => Err(not_found(
            field,
            s,
            "is an alias; this operation takes a key id or key ARN",
        )),
    }
}

/// Parses a key id or key ARN (the field is `KeyId`); see
/// [`parse_key_id_field`].
pub fn parse_key_id(s: &str) -> Result<[u8; 16], KmsError> {
    parse_key_id_field(s, "KeyId")
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
    /// The key a key id, key ARN, alias name or alias ARN names: the one
    /// resolution every operation that accepts aliases uses (admission's
    /// key pass included). An alias is looked up in the in-memory alias
    /// table (one read lock, one hash lookup; never the store), so this
    /// runs on I/O threads. Whether the key exists is the caller's to find.
    pub fn resolve_key_id(&self, s: &str, field: &str) -> Result<[u8; 16], KmsError> {
        match parse_key_name(s, field)? {
            KeyName::Key(id) => Ok(id),
            KeyName::Alias(name) => self
                .aliases
                .get(name)
                .ok_or_else(|| alias_not_found(name, field)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0b4f36d6-3e4c-4a5e-9a3e-6f0e2a9b1c7d";

    fn kind(r: Result<impl std::fmt::Debug, KmsError>) -> ErrorKind {
        r.unwrap_err().kind
    }

    #[test]
    fn key_ids_and_key_arns_parse_to_the_same_key() {
        let id = parse_key_id(ID).unwrap();
        assert_eq!(format_key_id(&id), ID);
        assert_eq!(parse_key_id(&key_arn(&id)).unwrap(), id);
        assert_eq!(parse_key_name(ID, "KeyId").unwrap(), KeyName::Key(id));
        // Upper case is the same UUID.
        assert_eq!(parse_key_id(&ID.to_uppercase()).unwrap(), id);
    }

    #[test]
    fn alias_names_and_alias_arns_parse_to_the_name() {
        assert_eq!(
            parse_key_name("alias/app/db", "KeyId").unwrap(),
            KeyName::Alias("alias/app/db")
        );
        assert_eq!(alias_arn("alias/app/db"), "arn:kmsd:kms:local:alias/app/db");
        assert_eq!(
            parse_key_name("arn:kmsd:kms:local:alias/app/db", "KeyId").unwrap(),
            KeyName::Alias("alias/app/db")
        );
    }

    #[test]
    fn bad_identifiers_are_not_found_naming_the_field() {
        for bad in [
            "nope",
            "0b4f36d6-3e4c-4a5e-9a3e-6f0e2a9b1c7",
            "arn:kmsd:kms:local:key/nope",
            "arn:aws:kms:us-east-1:111122223333:key/0b4f36d6-3e4c-4a5e-9a3e-6f0e2a9b1c7d",
            "arn:kmsd:kms:local:grant/x",
        ] {
            let e = parse_key_name(bad, "DestinationKeyId").unwrap_err();
            assert_eq!(e.kind, ErrorKind::NotFound, "{bad}");
            assert!(e.message.starts_with("DestinationKeyId "), "{e}");
        }
        let e = parse_key_id_field("alias/x", "TargetKeyId").unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert!(e.message.contains("TargetKeyId") && e.message.contains("alias"), "{e}");
        assert_eq!(
            kind(parse_key_id("arn:kmsd:kms:local:alias/x")),
            ErrorKind::NotFound
        );
    }

    #[test]
    fn empty_and_overlong_identifiers_are_validation_errors() {
        assert_eq!(kind(parse_key_name("", "KeyId")), ErrorKind::Validation);
        let long = "a".repeat(MAX_KEY_ID_LEN + 1);
        let e = parse_key_name(&long, "KeyId").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Validation);
        assert!(e.message.contains("KeyId"), "{e}");
        // At the limit it is merely unknown.
        let at = format!("alias/{}", "a".repeat(MAX_KEY_ID_LEN - 6));
        assert!(parse_key_name(&at, "KeyId").is_ok());
    }

    #[test]
    fn quoted_client_text_is_bounded_and_escaped() {
        let e = parse_key_name(&"\u{1}".repeat(2000), "KeyId").unwrap_err();
        // 128 characters, each escaped to at most 10 bytes, and the text.
        assert!(e.message.len() < 1536, "{}", e.message.len());
        assert!(e.message.contains("\\u{1}"), "{e}");
    }
}
