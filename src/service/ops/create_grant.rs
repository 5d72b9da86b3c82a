//! CreateGrant: gives a principal some operations on a key, optionally
//! under encryption-context constraints (docs/access.md, "Grants"). KeyId:
//! a key id, key ARN, alias name or alias ARN. The decoder bounds the
//! principals (1..=256 characters), the operations (1..=17 known values),
//! the constraints (8 pairs and 384 characters each, AWS's), the grant
//! tokens and the name; `service::access::grants` does the rest.

use crate::identity::Identity;
use crate::service::op::{Authz, Control, ControlCtx, ExecError, Op, OutputSize};
use kms_proto::types::limits::{MAX_GRANT_ID_LEN, MAX_GRANT_TOKEN_LEN};
use crate::service::access::grants;
use kms_policy::GrantSpec;
use kms_proto::{CreateGrant, CreateGrantOutput, Output};

impl Op for CreateGrant<'_> {
    const NAME: &'static str = "CreateGrant";
    const ACTION: &'static str = "kms:CreateGrant";
    type Plane = Control;


    fn heap_bytes(&self) -> usize {
        let constraints = self.constraints.as_ref().map_or(0, |c| {
            super::context_heap(&c.encryption_context_subset)
                + super::context_heap(&c.encryption_context_equals)
        });
        constraints
            + std::mem::size_of_val(self.operations.as_slice())
            + std::mem::size_of_val(self.grant_tokens.as_slice())
    }

    fn authorization(&self) -> Authz<'_> {
        // The key policy, or a grant of the caller's that allows
        // CreateGrant and that the new grant is at least as strict as.
        Authz::InApply
    }

    fn output_size(&self) -> OutputSize {
        // A grant token of at most 8192 bytes and a grant id of at most
        // 128 characters of up to 4 bytes; an error may quote the
        // constraints' keys as an encryption context's errors do.
        let error_text = self.constraints.as_ref().map_or(0, |c| {
            super::context_error_text(&c.encryption_context_subset)
                + super::context_error_text(&c.encryption_context_equals)
        });
        OutputSize {
            success: MAX_GRANT_TOKEN_LEN + 4 * MAX_GRANT_ID_LEN,
            error_text,
            entries: 0,
        }
    }

    /// Validated, authorized, the key's state checked, stored, the key
    /// invalidated, then answered (DryRun: DryRunOperationException once
    /// all of that but the storing would have succeeded).
    fn apply(&self, ctx: &ControlCtx<'_>, caller: &Identity) -> Result<Output, ExecError> {
        let svc = ctx.service();
        grants::check_grant_tokens(&self.grant_tokens)?;
        let id = svc.resolve_key_id(self.key_id, "KeyId")?;
        let operations: Vec<&str> = self.operations.iter().map(|o| o.name()).collect();
        // An empty list is no constraint of that kind.
        let equals = self
            .constraints
            .as_ref()
            .map(|c| c.encryption_context_equals.as_slice())
            .filter(|c| !c.is_empty());
        let subset = self
            .constraints
            .as_ref()
            .map(|c| c.encryption_context_subset.as_slice())
            .filter(|c| !c.is_empty());
        let (grant_id, grant_token) = svc.create_grant(
            caller,
            &id,
            &grants::NewGrant {
                spec: GrantSpec {
                    grantee_principal: self.grantee_principal,
                    retiring_principal: self.retiring_principal,
                    operations: &operations,
                    encryption_context_equals: equals,
                    encryption_context_subset: subset,
                    name: self.name,
                },
                dry_run: self.dry_run,
            },
        )?;
        Ok(Output::CreateGrant(CreateGrantOutput {
            grant_token,
            grant_id,
        }))
    }
}
