//! ListRetirableGrants: the grants a principal may retire, over all keys,
//! paged (Limit 1..=100, default 50). No key: the grants of every key.
//! A caller may list the grants it may retire itself; the administrators
//! and key creators anyone's.

use crate::identity::Identity;
use crate::service::op::{Authz, Control, ControlCtx, ExecError, Op, OutputSize};
use crate::errors;
use crate::service::access::grants;
use kms_policy::Action;
use kms_proto::{ListGrantsOutput, ListRetirableGrants, Output};

impl Op for ListRetirableGrants<'_> {
    const NAME: &'static str = "ListRetirableGrants";
    const ACTION: &'static str = "kms:ListRetirableGrants";
    type Plane = Control;

    fn authorization(&self) -> Authz<'_> {
        Authz::InApply
    }

    fn output_size(&self) -> OutputSize {
        // As ListGrants: AWS answers with the same shape.
        super::list_grants::page_output_size(self.limit)
    }

    /// One page of the grants, on every key, that `RetiringPrincipal` may
    /// retire, in grant-id order. A caller may list its own; the
    /// administrators and key creators anyone's.
    fn apply(&self, ctx: &ControlCtx<'_>, caller: &Identity) -> Result<Output, ExecError> {
        let svc = ctx.service();
        let limit = grants::page_limit(self.limit)?;
        let (retiring, principal) =
            grants::principal_as_stored(self.retiring_principal, "RetiringPrincipal")?;
        if !principal.is_grantee(&caller.caller()) {
            svc.authorize_account(caller, Action::ListRetirableGrants)?;
        }
        let after = self
            .marker
            .map(|m| super::marker::decode(m, "ListRetirableGrants"))
            .transpose()?;
        let mut rows = svc
            .store()
            .grants_retirable_by(&retiring, after.as_deref(), limit + 1)
            .map_err(|e| errors::store("listing grants", e))?;
        let truncated = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next_marker =
            truncated.then(|| super::marker::encode(&rows.last().expect("non-empty").grant_id));
        Ok(Output::ListRetirableGrants(ListGrantsOutput {
            grants: rows.iter().map(|r| grants::grant_entry(ctx.service().arns(), r)).collect::<Result<_, _>>()?,
            next_marker,
            truncated,
        }))
    }
}
