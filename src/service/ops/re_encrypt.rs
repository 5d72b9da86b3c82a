//! ReEncrypt: decrypt under the source key and encrypt under the destination
//! key inside the daemon; the plaintext never leaves it.

use crate::identity::Identity;
use crate::service::{format_key_id, ExecError, ExecMode, Service};
use kms_proto::{Output, ReEncrypt, ReEncryptOutput};

/// Opens the source blob and seals its plaintext for the destination.
pub fn apply(
    svc: &Service,
    req: &ReEncrypt<'_>,
    _peer: &Identity,
    mode: ExecMode,
) -> Result<Output, ExecError> {
    // Before the destination key is loaded: a bad blob costs nothing.
    super::decrypt::validate_blob(req.ciphertext_blob)?;
    let source_context = super::context(&req.source_context)?;
    let destination_context = super::context(&req.destination_context)?;
    let destination = svc.load_key_by_name(req.destination_key_id, mode)?;
    destination.check_usable()?;
    let (source, plaintext) = super::decrypt::open(
        svc,
        req.ciphertext_blob,
        req.source_key_id,
        &source_context,
        mode,
    )?;
    let ciphertext_blob = svc.seal(&destination, &destination_context, plaintext.expose(), mode)?;
    Ok(Output::ReEncrypt(ReEncryptOutput {
        source_key_id: format_key_id(source.id()),
        key_id: format_key_id(destination.id()),
        ciphertext_blob,
    }))
}
