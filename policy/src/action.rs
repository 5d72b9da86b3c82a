//! The actions a key policy can name: AWS's `kms:` names of the operations
//! kmsd serves, and the sets a statement's patterns compile to.

use crate::glob::Glob;

macro_rules! actions {
    ($($variant:ident),* $(,)?) => {
        /// An operation a request asks for, by AWS's action name.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        #[allow(missing_docs)] // Each variant is the AWS operation of that name.
        pub enum Action {
            $($variant),*
        }

        impl Action {
            /// Every action kmsd knows, in declaration order.
            pub const ALL: &'static [Action] = &[$(Action::$variant),*];

            /// AWS's action name, e.g. `kms:Encrypt`.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Action::$variant => concat!("kms:", stringify!($variant))),*
                }
            }
        }
    };
}

actions! {
    // Cryptographic operations.
    Encrypt,
    Decrypt,
    ReEncryptFrom,
    ReEncryptTo,
    GenerateDataKey,
    GenerateDataKeyWithoutPlaintext,
    GenerateRandom,
    // Keys and their lifecycle.
    CreateKey,
    DescribeKey,
    ListKeys,
    EnableKey,
    DisableKey,
    ScheduleKeyDeletion,
    CancelKeyDeletion,
    EnableKeyRotation,
    DisableKeyRotation,
    GetKeyRotationStatus,
    RotateKeyOnDemand,
    ListKeyRotations,
    UpdateKeyDescription,
    // Tags and aliases.
    TagResource,
    UntagResource,
    ListResourceTags,
    CreateAlias,
    UpdateAlias,
    DeleteAlias,
    ListAliases,
    // Imported key material.
    GetParametersForImport,
    ImportKeyMaterial,
    DeleteImportedKeyMaterial,
    // Key policies.
    PutKeyPolicy,
    GetKeyPolicy,
    ListKeyPolicies,
    // Grants.
    CreateGrant,
    ListGrants,
    ListRetirableGrants,
    RetireGrant,
    RevokeGrant,
}

// The set is a u64 bitmask.
const _: () = assert!(Action::ALL.len() <= 64);

impl Action {
    /// The action whose AWS name is `name`, in any case (`kms:encrypt`
    /// too, as AWS matches action names case-insensitively).
    pub fn from_name(name: &str) -> Option<Action> {
        Action::ALL
            .iter()
            .copied()
            .find(|a| a.name().eq_ignore_ascii_case(name))
    }
}

/// A set of actions: what a statement's `Action` patterns match, computed
/// once when the policy is parsed so that evaluation is one bit test.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ActionSet(u64);

impl ActionSet {
    /// The actions `pattern` matches, case-insensitively, with `*` and `?`.
    pub(crate) fn matching(pattern: &str) -> ActionSet {
        // Action names are ASCII; folding both sides to lower case makes
        // the match case-insensitive without a second matcher.
        let glob = Glob::new(&pattern.to_ascii_lowercase());
        let mut bits = 0u64;
        for a in Action::ALL {
            if glob.matches(&a.name().to_ascii_lowercase()) {
                bits |= 1 << (*a as u8);
            }
        }
        ActionSet(bits)
    }

    pub(crate) fn union(self, other: ActionSet) -> ActionSet {
        ActionSet(self.0 | other.0)
    }

    pub(crate) fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub(crate) fn contains(self, a: Action) -> bool {
        self.0 & (1 << (a as u8)) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::{Action, ActionSet};

    #[test]
    fn names_and_lookup() {
        for a in Action::ALL {
            assert!(a.name().starts_with("kms:"));
            assert_eq!(Action::from_name(a.name()), Some(*a));
            assert_eq!(Action::from_name(&a.name().to_uppercase()), Some(*a));
        }
        assert_eq!(Action::from_name("kms:Nope"), None);
        assert_eq!(Action::ALL.len(), 38);
    }

    #[test]
    fn patterns() {
        let set = ActionSet::matching("kms:GenerateDataKey*");
        assert!(set.contains(Action::GenerateDataKey));
        assert!(set.contains(Action::GenerateDataKeyWithoutPlaintext));
        assert!(!set.contains(Action::Encrypt));
        let set = ActionSet::matching("KMS:reencrypt*");
        assert!(set.contains(Action::ReEncryptFrom) && set.contains(Action::ReEncryptTo));
        let all = ActionSet::matching("kms:*");
        assert!(Action::ALL.iter().all(|a| all.contains(*a)));
        assert!(ActionSet::matching("kms:Nothing*").is_empty());
        let one = ActionSet::matching("kms:?ncrypt");
        assert!(one.contains(Action::Encrypt) && !one.contains(Action::Decrypt));
    }
}
