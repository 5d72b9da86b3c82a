//! VerifyAuditSeals (kmsd's own, administrators only): checks seals of the
//! audit log with the seal key only the daemon holds (unwrapped by the root
//! of trust at start), and reports the chain's head, so that `kmsctl audit
//! verify` also catches a log cut short or an unsealed tail edited after
//! the last seal. HMACs only: data plane, never the store or PKCS#11.

use crate::identity::Identity;
use crate::service::op::{Authz, Data, DataCtx, ExecError, Op, OutputSize};
use kms_proto::{ErrorKind, KmsError, Output, VerifyAuditSeals, VerifyAuditSealsOutput};

impl Op for VerifyAuditSeals {
    const NAME: &'static str = "VerifyAuditSeals";
    const ACTION: &'static str = "kmsd:VerifyAuditSeals";
    type Plane = Data;

    fn authorization(&self) -> Authz<'_> {
        Authz::Administrators
    }

    fn output_size(&self) -> OutputSize {
        // One bool per seal, the head's number and hash.
        OutputSize {
            success: self.seals.len() + 8 + 32,
            ..OutputSize::default()
        }
    }

    fn apply(&self, ctx: &DataCtx<'_>, _caller: &Identity) -> Result<Output, ExecError> {
        let Some(log) = ctx.service().audit() else {
            return Err(KmsError::new(
                ErrorKind::UnsupportedOperation,
                "the audit log is off (audit.enabled = false)",
            )
            .into());
        };
        let valid = self
            .seals
            .iter()
            .map(|s| log.verify_seal(s.seq, &s.prev_hash, &s.mac))
            .collect();
        let (head_seq, head_hash) = log.head();
        Ok(Output::VerifyAuditSeals(VerifyAuditSealsOutput {
            valid,
            head_seq,
            head_hash,
        }))
    }
}
