//! The control-plane executor: frames with an operation that reads or
//! writes the store (CreateKey, DescribeKey, ListKeys; the key lifecycle
//! later) run on threads of their own.
//!
//! Not on an I/O thread (a store call blocks it, an fsync for
//! milliseconds), and not on the workers: a burst of CreateKey (an fsync
//! each) would otherwise hold up the cache-miss Decrypts queued behind it.
//! Like the workers it has two lanes, each bounded by
//! `dispatch.queue_capacity` (full => ThrottlingException, counted as
//! overload): frames within the budget's floor (a DescribeKey, a short
//! ListKeys page) are taken first and are run between the items of a large
//! batch, so a flood of large ListKeys batches cannot hold up another
//! client's DescribeKey. A data-plane item in a frame with a control-plane
//! item runs here too, loading its keys itself.

use super::{Executors, Job, Runner};
use crate::config::DispatchConfig;
use crossbeam_channel::{Receiver, Select, Sender, TrySendError};
use std::sync::Arc;

type Queued = (Arc<Executors>, Job);

/// The control-plane threads and their lanes. The threads end once the
/// dispatcher is gone and the lanes are empty.
pub(super) struct ControlPlane {
    small: Sender<Queued>,
    large: Sender<Queued>,
}

impl ControlPlane {
    /// Starts `config.control_threads` threads over two lanes of
    /// `config.queue_capacity` frames each.
    pub(super) fn new(config: &DispatchConfig) -> std::io::Result<ControlPlane> {
        let (small_tx, small_rx) = crossbeam_channel::bounded(config.queue_capacity);
        let (large_tx, large_rx) = crossbeam_channel::bounded(config.queue_capacity);
        for i in 0..config.control_threads.max(1) {
            let (small, large) = (small_rx.clone(), large_rx.clone());
            std::thread::Builder::new()
                .name(format!("kmsd-control-{i}"))
                .spawn(move || serve(&small, &large))?;
        }
        Ok(ControlPlane {
            small: small_tx,
            large: large_tx,
        })
    }

    /// Frames waiting in the small and the large lane.
    pub(super) fn depths(&self) -> (usize, usize) {
        (self.small.len(), self.large.len())
    }

    /// Queues `job` on its lane, or answers ThrottlingException if the lane
    /// is full.
    pub(super) fn submit(&self, inner: &Arc<Executors>, job: Job) {
        let lane = if job.small { &self.small } else { &self.large };
        match lane.try_send((Arc::clone(inner), job)) {
            Ok(()) => {}
            Err(TrySendError::Full((_, job)) | TrySendError::Disconnected((_, job))) => {
                inner.busy(job)
            }
        }
    }
}

/// A control-plane thread: small frames first; a large one runs the small
/// lane's frames between its items.
fn serve(small: &Receiver<Queued>, large: &Receiver<Queued>) {
    let serve_small = || {
        while let Ok((inner, job)) = small.try_recv() {
            Executors::run(&inner, job, Runner::Plain);
        }
    };
    let (mut small_open, mut large_open) = (true, true);
    loop {
        if let Ok((inner, job)) = small.try_recv() {
            Executors::run(&inner, job, Runner::Plain);
            continue;
        }
        let mut select = Select::new();
        let s = small_open.then(|| select.recv(small));
        let l = large_open.then(|| select.recv(large));
        if s.is_none() && l.is_none() {
            return;
        }
        let op = select.select();
        if Some(op.index()) == s {
            match op.recv(small) {
                Ok((inner, job)) => Executors::run(&inner, job, Runner::Plain),
                Err(_) => small_open = false,
            }
        } else {
            match op.recv(large) {
                Ok((inner, job)) => Executors::run(&inner, job, Runner::ServingSmall(&serve_small)),
                Err(_) => large_open = false,
            }
        }
    }
}
