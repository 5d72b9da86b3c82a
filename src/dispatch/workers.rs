//! The workers: data-plane frames that cannot run inline (large, or whose
//! keys were loaded first), on a rayon pool fed by two bounded lock-free
//! lanes.
//!
//! Frames whose request and answer bound fit the budget's floor (64 KiB)
//! take the small lane and are taken first, and a worker running a large
//! batch runs them between its items; so a flood of large batches
//! (whose answers the budgets admit, up to tens of MiB) cannot hold up a
//! normal client's one data key for longer than the items already running.

use super::{Executors, Job, Runner};
use crate::config::DispatchConfig;
use crossbeam_queue::ArrayQueue;
use std::sync::Arc;

/// The worker pool and its lanes.
pub(super) struct Workers {
    small: ArrayQueue<Job>,
    large: ArrayQueue<Job>,
    pool: rayon::ThreadPool,
}

impl Workers {
    /// Starts `config.workers` threads; each lane holds
    /// `config.queue_capacity` frames.
    pub(super) fn new(config: &DispatchConfig) -> std::io::Result<Workers> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(config.workers)
            .thread_name(|i| format!("kmsd-worker-{i}"))
            .build()
            .map_err(std::io::Error::other)?;
        Ok(Workers {
            small: ArrayQueue::new(config.queue_capacity),
            large: ArrayQueue::new(config.queue_capacity),
            pool,
        })
    }

    /// Frames waiting in the small and the large lane.
    pub(super) fn depths(&self) -> (usize, usize) {
        (self.small.len(), self.large.len())
    }

    /// Queues `job` on its lane, or answers ThrottlingException if the
    /// lane is full.
    pub(super) fn enqueue(&self, inner: &Arc<Executors>, job: Job) {
        let lane = if job.small { &self.small } else { &self.large };
        match lane.push(job) {
            Ok(()) => {
                let inner = Arc::clone(inner);
                // One spawn per queued job: the lanes bound admission and
                // keep arrival order; rayon only supplies the threads. Each
                // task takes one job, from the small lane first.
                self.pool.spawn(move || {
                    let w = &inner.workers;
                    if let Some(job) = w.small.pop().or_else(|| w.large.pop()) {
                        take(&inner, job);
                    }
                });
            }
            Err(job) => inner.busy(job),
        }
    }
}

/// A worker's job: dropped if its connection is gone, else run here; a
/// large one runs the small lane's frames between its items.
fn take(inner: &Arc<Executors>, job: Job) {
    if job.small {
        return Executors::run(inner, job, Runner::Plain);
    }
    let serve_small = || {
        while let Some(small) = inner.workers.small.pop() {
            // The small frame's own spawned task will find one job fewer;
            // no job is ever left without a task.
            Executors::run(inner, small, Runner::Plain);
        }
    };
    Executors::run(inner, job, Runner::ServingSmall(&serve_small));
}
