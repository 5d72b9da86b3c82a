//! WhoAmI (kmsd's own, no AWS counterpart): the identity the daemon sees
//! for the caller's connection, read from the kernel at accept
//! (SO_PEERCRED). Key policies and grants decide on this identity, so
//! operators and services can check what the daemon will see before they
//! write a policy (`kmsctl whoami`). Always answered: it reveals nothing
//! the caller does not already know about itself.

use crate::identity::Identity;
use crate::service::op::{Authz, Data, DataCtx, ExecError, Op, OutputSize};
use kms_proto::{Output, WhoAmI, WhoAmIOutput};

/// Most supplementary groups the kernel gives a process (NGROUPS_MAX).
const MAX_GROUPS: usize = 65_536;
/// The longest cgroup path and unit name `transport::peer` accepts.
const MAX_CGROUP: usize = 4096;
const MAX_UNIT: usize = 256;

impl Op for WhoAmI {
    const NAME: &'static str = "WhoAmI";
    const ACTION: &'static str = "kmsd:WhoAmI";
    type Plane = Data;

    fn authorization(&self) -> Authz<'_> {
        Authz::Anyone
    }

    fn output_size(&self) -> OutputSize {
        // Three scalars, the groups (the kernel's most: NGROUPS_MAX), the
        // unit and the cgroup path (their readers' limits).
        OutputSize {
            success: 16 + 4 * MAX_GROUPS + MAX_CGROUP + MAX_UNIT,
            ..OutputSize::default()
        }
    }

    fn apply(&self, _ctx: &DataCtx<'_>, caller: &Identity) -> Result<Output, ExecError> {
        Ok(Output::WhoAmI(WhoAmIOutput {
            uid: caller.uid,
            gid: caller.gid,
            pid: caller.pid,
            groups: caller.groups().to_vec(),
            unit: caller.unit().map(str::to_owned),
            cgroup: caller.cgroup().map(str::to_owned),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::ops::test_support::TestService;
    use kms_proto::Operation;

    #[test]
    fn answers_the_callers_identity() {
        let t = TestService::new();
        let caller = Identity::local(1234, 567, 89);
        let out = t.svc.call(&Operation::WhoAmI(WhoAmI), &caller).unwrap();
        assert_eq!(
            out,
            Output::WhoAmI(WhoAmIOutput {
                uid: 1234,
                gid: 567,
                pid: 89,
                ..Default::default()
            })
        );
    }
}
