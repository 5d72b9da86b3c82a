//! DescribeKey: a key's metadata.

use crate::identity::Identity;
use crate::service::{format_key_id, internal, parse_key_id, ExecError, ExecMode, Service};
use kms_proto::{DescribeKey, ErrorKind, KmsError, Output};

/// Reads the key's record from the store (the source of truth for state).
pub fn apply(
    svc: &Service,
    req: &DescribeKey<'_>,
    _peer: &Identity,
    mode: ExecMode,
) -> Result<Output, ExecError> {
    let id = parse_key_id(req.key_id)?;
    if mode == ExecMode::NonBlocking {
        return Err(ExecError::WouldBlock);
    }
    let record = svc
        .store()
        .get_key(&id)
        .map_err(|e| internal("reading key", e))?
        .ok_or_else(|| {
            KmsError::new(
                ErrorKind::NotFound,
                format!("key {} does not exist", format_key_id(&id)),
            )
        })?;
    Ok(Output::DescribeKey(Service::metadata(&record)))
}
