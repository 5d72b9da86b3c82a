//! Key states and what each operation may do in each: AWS KMS's "key state
//! effect" table as code, and the state transitions as a typed function.
//!
//! Every operation that names a key asks [`check`] with its [`Use`] before
//! it has any effect; a change of state goes through [`transition`], which
//! answers the AWS exception for a transition that is not allowed (never a
//! silent no-op). docs/lifecycle.md has the table as users read it, with
//! its source (AWS KMS Developer Guide, "Key states of AWS KMS keys").
//!
//! Unavailable is not stored: it is what an HSM-only key shows while its
//! HSM cannot be reached (the stored state is kept and returns with the
//! HSM).

use crate::errors::format_key_id;
use kms_proto::{ErrorKind, KeyState, KmsError, Origin};

/// How an operation uses a key: the rows of AWS's key-state table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Use {
    /// Encrypt, Decrypt, ReEncrypt, GenerateDataKey*: Enabled only.
    Crypto,
    /// DescribeKey, ListAliases, ListResourceTags, DeleteAlias,
    /// GetKeyRotationStatus, ListKeyRotations: every state.
    Read,
    /// CreateAlias, UpdateAlias (target), TagResource, UntagResource,
    /// UpdateKeyDescription: every state but PendingDeletion.
    Annotate,
    /// EnableKey, DisableKey: Enabled, Disabled, Unavailable.
    EnableDisable,
    /// EnableKeyRotation, DisableKeyRotation, RotateKeyOnDemand: Enabled
    /// only (Disabled: DisabledException).
    Rotation,
    /// ScheduleKeyDeletion: every state but PendingDeletion.
    ScheduleDeletion,
    /// CancelKeyDeletion: PendingDeletion only.
    CancelDeletion,
    /// GetParametersForImport, ImportKeyMaterial: Enabled, Disabled,
    /// PendingImport.
    Import,
    /// DeleteImportedKeyMaterial: every state but Unavailable.
    DeleteImported,
    /// CreateGrant: Enabled and Unavailable (Disabled: DisabledException;
    /// PendingDeletion, PendingImport: KMSInvalidStateException).
    Grant,
}

/// The message AWS gives for a key in `state`: "<key> is pending deletion".
fn is(id: &[u8; 16], what: &str) -> String {
    format!("{} is {what}", format_key_id(id))
}

/// KMSInvalidStateException for a key in `state`.
fn invalid_state(id: &[u8; 16], state: KeyState) -> KmsError {
    KmsError::new(ErrorKind::KmsInvalidState, is(id, state_words(state)))
}

/// DisabledException.
fn disabled(id: &[u8; 16]) -> KmsError {
    KmsError::new(ErrorKind::Disabled, is(id, "disabled"))
}

/// How AWS's messages name a state.
pub fn state_words(state: KeyState) -> &'static str {
    match state {
        KeyState::Enabled => "enabled",
        KeyState::Disabled => "disabled",
        KeyState::PendingDeletion => "pending deletion",
        KeyState::PendingImport => "pending import",
        KeyState::Unavailable => "unavailable",
    }
}

/// Whether a key `id` in `state` may be used as `use_`; the AWS exception
/// if not.
pub fn check(use_: Use, id: &[u8; 16], state: KeyState) -> Result<(), KmsError> {
    use KeyState::*;
    let ok = match (use_, state) {
        (Use::Read, _) => true,
        (Use::Crypto, Enabled) => true,
        (Use::Crypto, Disabled) => return Err(disabled(id)),
        (Use::Crypto, _) => false,
        (Use::Annotate | Use::ScheduleDeletion, PendingDeletion) => false,
        (Use::Annotate | Use::ScheduleDeletion, _) => true,
        (Use::EnableDisable, Enabled | Disabled | Unavailable) => true,
        (Use::EnableDisable, _) => false,
        (Use::Rotation, Enabled) => true,
        (Use::Rotation, Disabled) => return Err(disabled(id)),
        (Use::Rotation, _) => false,
        (Use::CancelDeletion, PendingDeletion) => true,
        (Use::CancelDeletion, _) => {
            return Err(KmsError::new(
                ErrorKind::KmsInvalidState,
                is(id, "not pending deletion"),
            ))
        }
        (Use::Import, Enabled | Disabled | PendingImport) => true,
        (Use::Import, _) => false,
        (Use::DeleteImported, Unavailable) => false,
        (Use::DeleteImported, _) => true,
        (Use::Grant, Enabled | Unavailable) => true,
        (Use::Grant, Disabled) => return Err(disabled(id)),
        (Use::Grant, _) => false,
    };
    if ok {
        Ok(())
    } else {
        Err(invalid_state(id, state))
    }
}

/// A change of a key's stored state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// EnableKey.
    Enable,
    /// DisableKey.
    Disable,
    /// ScheduleKeyDeletion.
    ScheduleDeletion,
    /// CancelKeyDeletion: the key returns Disabled (AWS).
    CancelDeletion,
    /// ImportKeyMaterial: a key waiting for material becomes Enabled; a key
    /// that had it keeps its state.
    Import,
    /// DeleteImportedKeyMaterial, or imported material expiring: the key
    /// waits for material again (a key pending deletion stays so).
    RemoveMaterial,
}

/// The state a key in `from` goes to by `t`, or the AWS exception when the
/// transition is not allowed. Enabling an Enabled key (or disabling a
/// Disabled one) is allowed and changes nothing, as in AWS.
pub fn transition(id: &[u8; 16], from: KeyState, t: Transition) -> Result<KeyState, KmsError> {
    use KeyState::*;
    let use_ = match t {
        Transition::Enable | Transition::Disable => Use::EnableDisable,
        Transition::ScheduleDeletion => Use::ScheduleDeletion,
        Transition::CancelDeletion => Use::CancelDeletion,
        Transition::Import => Use::Import,
        Transition::RemoveMaterial => Use::DeleteImported,
    };
    check(use_, id, from)?;
    Ok(match (t, from) {
        (Transition::Enable, _) => Enabled,
        (Transition::Disable, _) => Disabled,
        (Transition::ScheduleDeletion, _) => PendingDeletion,
        (Transition::CancelDeletion, _) => Disabled,
        (Transition::Import, PendingImport) => Enabled,
        (Transition::Import, s) => s,
        (Transition::RemoveMaterial, PendingDeletion) => PendingDeletion,
        (Transition::RemoveMaterial, _) => PendingImport,
    })
}

/// UnsupportedOperationException for an operation that needs another
/// origin (e.g. GetParametersForImport on a key kmsd made).
pub fn wrong_origin(id: &[u8; 16], origin: Origin, operation: &str) -> KmsError {
    let origin = match origin {
        Origin::Kmsd => "AWS_KMS",
        Origin::External => "EXTERNAL",
        Origin::Hsm => "HSM",
    };
    KmsError::new(
        ErrorKind::UnsupportedOperation,
        format!(
            "{operation} is not supported for {} (origin {origin})",
            format_key_id(id)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use KeyState::*;

    const ALL: [KeyState; 5] = [Enabled, Disabled, PendingDeletion, PendingImport, Unavailable];

    fn kind(r: Result<(), KmsError>) -> Option<ErrorKind> {
        r.err().map(|e| e.kind)
    }

    #[test]
    fn crypto_needs_an_enabled_key_with_aws_exceptions() {
        let id = [3; 16];
        assert_eq!(kind(check(Use::Crypto, &id, Enabled)), None);
        assert_eq!(
            kind(check(Use::Crypto, &id, Disabled)),
            Some(ErrorKind::Disabled)
        );
        for s in [PendingDeletion, PendingImport, Unavailable] {
            let e = check(Use::Crypto, &id, s).unwrap_err();
            assert_eq!(e.kind, ErrorKind::KmsInvalidState);
            assert!(e.message.contains(state_words(s)), "{e}");
            assert!(e.message.contains("03030303-"), "{e}");
        }
    }

    #[test]
    fn the_table_matches_aws() {
        // (use, states where it succeeds), from AWS's key-state table.
        let table: &[(Use, &[KeyState])] = &[
            (Use::Read, &ALL),
            (Use::Crypto, &[Enabled]),
            (
                Use::Annotate,
                &[Enabled, Disabled, PendingImport, Unavailable],
            ),
            (Use::EnableDisable, &[Enabled, Disabled, Unavailable]),
            (Use::Rotation, &[Enabled]),
            (
                Use::ScheduleDeletion,
                &[Enabled, Disabled, PendingImport, Unavailable],
            ),
            (Use::CancelDeletion, &[PendingDeletion]),
            (Use::Import, &[Enabled, Disabled, PendingImport]),
            (
                Use::DeleteImported,
                &[Enabled, Disabled, PendingDeletion, PendingImport],
            ),
        ];
        for (use_, ok) in table {
            for s in ALL {
                assert_eq!(
                    check(*use_, &[0; 16], s).is_ok(),
                    ok.contains(&s),
                    "{use_:?} in {s:?}"
                );
            }
        }
    }

    #[test]
    fn transitions_follow_aws_and_refusals_are_typed() {
        let id = [1; 16];
        assert_eq!(
            transition(&id, PendingDeletion, Transition::CancelDeletion),
            Ok(Disabled)
        );
        assert_eq!(
            transition(&id, Enabled, Transition::ScheduleDeletion),
            Ok(PendingDeletion)
        );
        assert_eq!(transition(&id, Enabled, Transition::Enable), Ok(Enabled));
        assert_eq!(
            transition(&id, PendingImport, Transition::Import),
            Ok(Enabled)
        );
        assert_eq!(transition(&id, Disabled, Transition::Import), Ok(Disabled));
        assert_eq!(
            transition(&id, PendingDeletion, Transition::RemoveMaterial),
            Ok(PendingDeletion)
        );
        assert_eq!(
            transition(&id, Enabled, Transition::RemoveMaterial),
            Ok(PendingImport)
        );
        let e = transition(&id, PendingDeletion, Transition::Enable).unwrap_err();
        assert_eq!(e.kind, ErrorKind::KmsInvalidState);
        let e = transition(&id, Enabled, Transition::CancelDeletion).unwrap_err();
        assert!(e.message.contains("not pending deletion"), "{e}");
        let e = transition(&id, PendingDeletion, Transition::ScheduleDeletion).unwrap_err();
        assert_eq!(e.kind, ErrorKind::KmsInvalidState);
    }
}
