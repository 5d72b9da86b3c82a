//! The default key policy: AWS's shape, adapted to local principals.

use serde_json::json;

use crate::action::Action;
use crate::document::Policy;
use crate::error::PolicyError;
use crate::principal::{AnyName, Principal};

/// The actions the key's creator gets in the default policy: the use of
/// the key, as AWS's console gives key users, without its management.
pub const CREATOR_ACTIONS: &[&str] = &[
    "kms:Encrypt",
    "kms:Decrypt",
    "kms:ReEncrypt*",
    "kms:GenerateDataKey*",
    "kms:DescribeKey",
];

/// The default key policy for a key made without one, as JSON text (what
/// GetKeyPolicy returns). `administrators` (principal texts such as
/// `uid:0` or `group:kmsadmin`) get `kms:*`, as AWS's default policy
/// gives its account; `creator_uid`, if given, gets [`CREATOR_ACTIONS`]
/// (unless it is one of the administrators, who have them already). With
/// no administrators the first statement is left out.
///
/// The principals' syntax is checked here; `user:` and `group:` names are
/// resolved when the text is parsed with [`crate::Policy::parse`] to be
/// stored, like any other policy.
pub fn default_key_policy(
    administrators: &[&str],
    creator_uid: Option<u32>,
) -> Result<String, PolicyError> {
    for (i, a) in administrators.iter().enumerate() {
        Principal::parse(a, &format!("administrators[{i}]"), &AnyName)?;
    }
    let mut statements = Vec::new();
    if !administrators.is_empty() {
        statements.push(json!({
            "Sid": "Enable key administrators",
            "Effect": "Allow",
            "Principal": {"AWS": administrators},
            "Action": "kms:*",
            "Resource": "*",
        }));
    }
    if let Some(uid) =
        creator_uid.filter(|u| !administrators.contains(&format!("uid:{u}").as_str()))
    {
        statements.push(json!({
            "Sid": "Allow use of the key by its creator",
            "Effect": "Allow",
            "Principal": {"AWS": format!("uid:{uid}")},
            "Action": CREATOR_ACTIONS,
            "Resource": "*",
        }));
    }
    let doc = json!({
        "Version": "2012-10-17",
        "Id": "key-default-1",
        "Statement": statements,
    });
    let text = serde_json::to_string_pretty(&doc)
        .map_err(|e| PolicyError::new(format!("the default policy did not serialize: {e}")))?;
    // The builder's output must be a policy this crate accepts (too many
    // administrators would exceed the limits, for one).
    Policy::parse(&text, &AnyName)?;
    debug_assert!(CREATOR_ACTIONS
        .iter()
        .all(|a| a.ends_with('*') || Action::from_name(a).is_some()));
    Ok(text)
}
