//! The in-process baseline: a `Service` in this process over a temporary
//! data directory (file root, SQLite store, as the spawned daemon has),
//! prepared like the daemon and driven with a frame pool of the same shape,
//! with no socket, queue or framing in between.

use crate::driver::{self, RunOptions, Target};
use crate::run::RunResult;
use crate::workload::{FramePool, Prepared, Setup, WorkloadSpec};
use kms_proto::{Operation, Outcome};
use kmsd::config::Config;
use kmsd::identity::Identity;
use kmsd::root::FileRoot;
use kmsd::service::Service;
use std::sync::Arc;

struct InProcessSetup<'a> {
    svc: &'a Service,
    peer: Identity,
}

impl Setup for InProcessSetup<'_> {
    fn batch(&mut self, ops: Vec<Operation<'_>>) -> anyhow::Result<Vec<Outcome>> {
        Ok(ops.iter().map(|op| self.svc.call(op, &self.peer)).collect())
    }
}

/// Opens a service with the daemon's default configuration in a temporary
/// directory.
pub fn open_service() -> anyhow::Result<(Service, tempfile::TempDir)> {
    let dir = tempfile::Builder::new().prefix("kms-inproc-").tempdir()?;
    let config = Config::default();
    let root = Arc::new(FileRoot::open_or_create(dir.path())?);
    let svc = Service::open(
        dir.path(),
        root,
        config.decode_limits(),
        config.limits.max_keys,
    )?;
    Ok((svc, dir))
}

/// Prepares `spec` on a fresh in-process service and runs it.
pub fn run(spec: &WorkloadSpec, opts: &RunOptions, name: &str) -> anyhow::Result<RunResult> {
    let (svc, _dir) = open_service()?;
    let peer = Identity::local(
        rustix::process::getuid().as_raw(),
        rustix::process::getgid().as_raw(),
        std::process::id() as i32,
    );
    let prepared = Prepared::create(&mut InProcessSetup { svc: &svc, peer }, spec)?;
    let pool = FramePool::build(spec, &prepared)?;
    let mut opts = opts.clone();
    opts.target_pid = None;
    driver::run(Target::InProcess(&svc), &pool, name, &opts)
}
