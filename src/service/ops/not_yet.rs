//! TEMPORARY: the key-lifecycle operations whose service side is not
//! written yet. Each is answered UnsupportedOperationException "not
//! implemented yet", on the control plane, before any key is loaded, so
//! that the wire (schema, codec, clients, kmsctl) can ship ahead of the
//! service.
//!
//! To implement an operation: write `ops/<operation>.rs` with its
//! `impl Op`, and delete its line below. Its arm in `with_op!` already
//! names the request type, so it needs no change. Delete this file with
//! the last line.

use crate::identity::Identity;
use crate::service::op::{Control, ControlCtx, ExecError, Op, OutputSize};
use kms_proto::{ErrorKind, KmsError, Output};

/// The answer of every operation listed here.
fn not_yet(name: &str) -> ExecError {
    ExecError::Kms(KmsError::new(
        ErrorKind::UnsupportedOperation,
        format!("{name} is not implemented yet"),
    ))
}

/// `impl Op` for one request type that is answered [`not_yet`].
macro_rules! not_yet {
    ($ty:ident) => {
        impl Op for kms_proto::$ty<'_> {
            const NAME: &'static str = stringify!($ty);
            const ACTION: &'static str = concat!("kms:", stringify!($ty));
            type Plane = Control;

            fn output_size(&self) -> OutputSize {
                OutputSize::default()
            }

            fn apply(&self, _ctx: &ControlCtx<'_>, _caller: &Identity) -> Result<Output, ExecError> {
                Err(not_yet(Self::NAME))
            }
        }
    };
}

not_yet!(EnableKey);
not_yet!(DisableKey);
not_yet!(ScheduleKeyDeletion);
not_yet!(CancelKeyDeletion);
not_yet!(EnableKeyRotation);
not_yet!(DisableKeyRotation);
not_yet!(GetKeyRotationStatus);
not_yet!(RotateKeyOnDemand);
not_yet!(ListKeyRotations);
not_yet!(GetParametersForImport);
not_yet!(ImportKeyMaterial);
not_yet!(DeleteImportedKeyMaterial);
