//! GetStatus (kmsd's own, no AWS counterpart): the daemon's uptime,
//! version and every metric it keeps, read from the metrics recorder
//! (`crate::metrics`: the same series a Prometheus scrape shows). For the
//! administrators only: operation counts, exception counts per operation
//! and per-principal throttling say who does what.
//!
//! Data plane: it reads the recorder's atomics and the samplers' gauges
//! (brief locks of the queues they read, no store, no PKCS#11), so it
//! runs on an I/O thread like any small data-plane request.

use crate::identity::Identity;
use crate::service::op::{Authz, Data, DataCtx, ExecError, Op, OutputSize};
use kms_proto::types::limits::{
    MAX_METRIC_LABELS, MAX_METRIC_LABEL_BYTES, MAX_METRIC_NAME_LEN, MAX_STATUS_METRICS,
};
use kms_proto::{GetStatus, GetStatusOutput, Output};

impl Op for GetStatus {
    const NAME: &'static str = "GetStatus";
    const ACTION: &'static str = "kmsd:GetStatus";
    type Plane = Data;

    fn authorization(&self) -> Authz<'_> {
        Authz::Administrators
    }

    fn output_size(&self) -> OutputSize {
        // Every series at its limits: name, labels (each string with its
        // vector slot), four quantiles and their values, the table.
        let series = MAX_METRIC_NAME_LEN
            + MAX_METRIC_LABEL_BYTES
            + 2 * 8 * MAX_METRIC_LABELS
            + 2 * 8 * crate::metrics::QUANTILES.len()
            + kms_proto::codec::METRIC_ENTRY_FIXED;
        OutputSize {
            success: 64 + MAX_STATUS_METRICS * series,
            entries: MAX_STATUS_METRICS,
            ..OutputSize::default()
        }
    }

    fn apply(&self, _ctx: &DataCtx<'_>, _caller: &Identity) -> Result<Output, ExecError> {
        // The daemon installs the recorder at start; an in-process service
        // (tests) gets it on first use.
        let m = crate::metrics::get().unwrap_or_else(crate::metrics::install);
        let text = m.render();
        Ok(Output::GetStatus(GetStatusOutput {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_ms: u64::try_from(m.uptime().as_millis()).unwrap_or(u64::MAX),
            metrics: crate::metrics::snapshot::samples(&text),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::ops::test_support::TestService;
    use kms_proto::{ErrorKind, Operation};

    #[test]
    fn administrators_get_the_metrics_and_others_are_refused() {
        let t = TestService::new();
        crate::metrics::install();
        let admin = Identity::local(0, 0, 1);
        let Output::GetStatus(st) = t
            .svc
            .call(&Operation::GetStatus(GetStatus), &admin)
            .unwrap()
        else {
            panic!("a status")
        };
        assert_eq!(st.version, env!("CARGO_PKG_VERSION"));
        assert!(st
            .metrics
            .iter()
            .any(|m| m.name == "kmsd_requests_total" && m.label("operation") == Some("GetStatus")));
        assert!(st.metrics.iter().any(|m| m.name == "kmsd_uptime_seconds"));
        let e = t
            .svc
            .call(&Operation::GetStatus(GetStatus), &Identity::local(4242, 4242, 1))
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::AccessDenied, "{e}");
    }
}
