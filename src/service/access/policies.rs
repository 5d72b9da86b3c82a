//! Key policies as the operations change and read them: PutKeyPolicy's
//! write (checked, committed, invalidated, then answered) and the stored
//! text GetKeyPolicy returns.

use super::Service;
use crate::errors;
use crate::identity::Identity;
use crate::keystore::access::{self as rows, StoredPolicy};
use crate::keystore::annotations;
use kms_proto::{ErrorKind, KmsError};

/// The only policy name AWS has, and so kmsd.
pub const POLICY_NAME: &str = rows::DEFAULT_POLICY_NAME;

/// NotFoundException for a policy name other than "default" (AWS: "The
/// only valid name is default").
pub fn check_policy_name(name: Option<&str>) -> Result<(), KmsError> {
    match name {
        None | Some(POLICY_NAME) => Ok(()),
        Some(other) => Err(KmsError::new(
            ErrorKind::NotFound,
            format!(
                "PolicyName {:?}: the only policy name is \"default\"",
                other.chars().take(64).collect::<String>()
            ),
        )),
    }
}

impl Service {
    /// Replaces key `id`'s policy with `text` (checked with
    /// [`Service::accept_policy`], lockout safety check unless `bypass`):
    /// committed, then the key invalidated (with every decision made on
    /// the old policy), then answered. AWS allows it in every key state.
    pub(crate) fn put_key_policy(
        &self,
        caller: &Identity,
        id: &[u8; 16],
        text: &str,
        bypass: bool,
    ) -> Result<(), KmsError> {
        let policy = self.accept_policy(caller, id, text, bypass)?;
        let now = self.now();
        self.store()
            .in_transaction(|tx| {
                annotations::key(tx, id)?.ok_or_else(|| errors::key_not_found(id))?;
                rows::write_policy(tx, id, &policy, now)?;
                Ok(())
            })
            .map_err(|e| e.into_client("storing a key policy"))?;
        self.invalidate(id);
        tracing::info!(
            key_id = %crate::service::format_key_id(id),
            caller = %caller.principal(),
            bypass,
            "key policy changed"
        );
        Ok(())
    }

    /// Key `id`'s policy document as stored (the default policy of the
    /// administrators for a key stored before kmsd had policies, which
    /// start-up gives one).
    pub(crate) fn key_policy_text(&self, id: &[u8; 16]) -> Result<String, KmsError> {
        let store = self.store();
        store
            .get_key(id)
            .map_err(|e| errors::store("reading key", e))?
            .ok_or_else(|| errors::key_not_found(id))?;
        let stored: Option<StoredPolicy> = store
            .key_policy(id)
            .map_err(|e| errors::store("reading key policy", e))?;
        Ok(stored.unwrap_or_else(|| self.core.administrators.clone()).text)
    }
}
