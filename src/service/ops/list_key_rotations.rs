//! ListKeyRotations: a key's completed rotations, oldest first, paged
//! (Limit 1..=1000, 100 when 0: AWS). The key's first version is not a
//! rotation. The marker is opaque to clients (the last version of the
//! page, in decimal); anything else is InvalidMarkerException. Every state
//! may be read (AWS's table).

use crate::errors;
use crate::identity::Identity;
use crate::service::lifecycle::{check, Use};
use crate::service::op::{Authz, Control, ControlCtx, ExecError, Op, OutputSize};
use crate::service::MAX_KEY_ARN_TEXT;
use kms_proto::types::limits::{DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT};
use kms_proto::{
    ErrorKind, KmsError, ListKeyRotations, ListKeyRotationsOutput, Output, RotationsListEntry,
};

/// Validates the page size and marker; returns (limit, version to start
/// after).
pub fn validate(req: &ListKeyRotations<'_>) -> Result<(u32, u32), KmsError> {
    let limit = match req.limit {
        0 => DEFAULT_LIST_LIMIT,
        n if n <= MAX_LIST_LIMIT => n,
        n => {
            return Err(KmsError::validation(format!(
                "Limit {n} is out of range 1..={MAX_LIST_LIMIT}"
            )))
        }
    };
    let after = match req.marker {
        None => 0,
        Some(m) => m
            .parse::<u32>()
            .ok()
            .filter(|v| *v >= 1 && m.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| {
                KmsError::new(
                    ErrorKind::InvalidMarker,
                    "the Marker is not one ListKeyRotations returned",
                )
            })?,
    };
    Ok((limit, after))
}

/// The page size a request asks for, as it will be served (for bounds).
fn page_size(req: &ListKeyRotations<'_>) -> usize {
    (match req.limit {
        0 => DEFAULT_LIST_LIMIT,
        n => n.min(MAX_LIST_LIMIT),
    }) as usize
}

impl Op for ListKeyRotations<'_> {
    const NAME: &'static str = "ListKeyRotations";
    const ACTION: &'static str = "kms:ListKeyRotations";
    type Plane = Control;

    fn validate(&self, _svc: &crate::service::Service) -> Result<(), KmsError> {
        validate(self).map(drop)
    }

    fn authorization(&self) -> Authz<'_> {
        Authz::key(self.key_id)
    }

    fn output_size(&self) -> OutputSize {
        let n = page_size(self);
        OutputSize {
            // Each entry: the key ARN and the rotation type's name; the
            // marker: a u32 in decimal.
            success: 10 + n * (MAX_KEY_ARN_TEXT + "ON_DEMAND".len()),
            error_text: 0,
            entries: n,
        }
    }

    /// Reads one page from the store.
    fn apply(&self, ctx: &ControlCtx<'_>, _caller: &Identity) -> Result<Output, ExecError> {
        let (limit, after) = validate(self)?;
        let id = ctx.service().parse_key_id(self.key_id)?;
        let svc = ctx.service();
        let record = svc.read_key(&id)?;
        check(Use::Read, &id, svc.effective_state(&record))?;
        // One more than asked tells whether another page exists.
        let mut rotations = ctx
            .store()
            .list_rotations(&id, after, limit + 1)
            .map_err(|e| errors::store("listing rotations", e))?;
        let truncated = rotations.len() > limit as usize;
        rotations.truncate(limit as usize);
        let next_marker = truncated.then(|| rotations.last().expect("non-empty").version.to_string());
        let arn = svc.arns().key_arn(&id);
        Ok(Output::ListKeyRotations(ListKeyRotationsOutput {
            rotations: rotations
                .iter()
                .map(|r| RotationsListEntry {
                    key_id: arn.clone(),
                    rotation_date: r.date,
                    rotation_type: r.rotation_type,
                })
                .collect(),
            next_marker,
            truncated,
        }))
    }
}
