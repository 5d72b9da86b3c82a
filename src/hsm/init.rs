//! `kmsd hsm init`: creating the root key in the token, once, before any
//! daemon runs. Kept apart from [`super::Hsm`] because it runs without a
//! root key to find (the pool cannot open without one) and on one session
//! of its own.

use cryptoki::object::Attribute;

use super::device::{self, close_session, Device, Settings};
use super::error::{CallFailure, HsmError, SetupError};
use super::pin::Pin;
use crate::config::Pkcs11Config;

/// What `kmsd hsm init` created.
#[derive(Clone, Debug)]
pub struct InitReport {
    /// Token label.
    pub token_label: String,
    /// Slot id.
    pub slot_id: u64,
    /// Key label.
    pub key_label: String,
}

/// Creates the root key in the token (`kmsd hsm init`): AES-256,
/// `CKA_TOKEN`, `CKA_SENSITIVE`, never extractable, wrap/unwrap only,
/// labelled `key_label`.
///
/// # Errors
///
/// [`SetupError::RootKeyExists`] if an object with that label exists, and
/// the start-up errors of [`Hsm::open`](super::Hsm::open).
pub fn init_root_key(config: &Pkcs11Config) -> Result<InitReport, SetupError> {
    let settings = Settings::from_config(config)?;
    let pin = Pin::from_config(config)?;
    let device = Device::open(&settings)?;
    let result = (|| {
        let session = device
            .open_session(&pin, &settings.token_label)
            .map_err(|e| match e {
                HsmError::Setup(s) => s,
                other => SetupError::Config(other.to_string()),
            })?;
        let created = (|| {
            let existing = session
                .find_objects(&[
                    Attribute::Token(true),
                    Attribute::Label(settings.key_label.as_bytes().to_vec()),
                ])
                .map_err(|e| SetupError::Call {
                    what: "looking for an existing root key".to_owned(),
                    failure: CallFailure::from_cryptoki("C_FindObjects", &e),
                })?;
            if !existing.is_empty() {
                return Err(SetupError::RootKeyExists {
                    key_label: settings.key_label.clone(),
                    token_label: settings.token_label.clone(),
                });
            }
            session
                .generate_key(
                    &device::AES_KEY_GEN,
                    &device::root_key_template(&settings.key_label),
                )
                .map_err(|e| SetupError::Call {
                    what: "generating the root key".to_owned(),
                    failure: CallFailure::from_cryptoki("C_GenerateKey", &e),
                })?;
            Ok(InitReport {
                token_label: settings.token_label.clone(),
                slot_id: device.slot.id(),
                key_label: settings.key_label.clone(),
            })
        })();
        close_session(session);
        created
    })();
    device.close();
    result
}
