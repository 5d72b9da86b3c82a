//! The HSM baselines, `--baseline hsm-unwrap` and `--baseline hsm-gcm`: what
//! the token itself can do, measured in the same run as the daemon, so a
//! daemon workload bound by its HSM is read as a fraction of the token's
//! raw call rate rather than against a figure from another day.
//!
//! One thread on one session calls the token back to back through the
//! daemon's own HSM layer (`kmsd::hsm::Hsm`, the calls its key loader
//! makes): `hsm-unwrap` unwraps a backing key (C_UnwrapKey into a session
//! object, C_GetAttributeValue, C_DestroyObject: what a cache miss costs),
//! `hsm-gcm` runs AES-256-GCM on a temporary HSM-only key (decrypt for a
//! Decrypt workload, encrypt otherwise; 32 bytes, 12-byte IV). The daemon
//! under test keeps its own session open but idle meanwhile.

use crate::driver::RunOptions;
use crate::run::{RunResult, TargetKind};
use crate::target::proc_stat;
use crate::workload::{OpKind, WorkloadSpec};
use anyhow::{bail, Context as _};
use kmsd::crypto::KeyMaterial;
use kmsd::hsm::{Hsm, HsmOnlyKey};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

/// Which raw call to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HsmCall {
    /// Unwrap a backing key and read it out.
    Unwrap,
    /// AES-256-GCM of 32 bytes under an HSM-only key.
    Gcm,
}

/// Measures `call` on the token `config` (a kmsd config file with a
/// `[root.pkcs11]` section) for the run's warm-up and window.
pub fn run(
    config: Option<&Path>,
    call: HsmCall,
    spec: &WorkloadSpec,
    opts: &RunOptions,
    workload: &str,
) -> anyhow::Result<RunResult> {
    let Some(config) = config else {
        bail!("the HSM baselines need --config naming the daemon's [root.pkcs11] token");
    };
    let mut pkcs11 = kmsd::config::Config::load(config)
        .with_context(|| format!("reading {}", config.display()))?
        .root
        .pkcs11
        .with_context(|| format!("{} has no [root.pkcs11] section", config.display()))?;
    // A single session: the raw rate the issue compares against.
    pkcs11.pool_size = 1;
    let hsm = Hsm::open(&pkcs11).context("opening the HSM for the raw baseline")?;
    let (target, mut once): (TargetKind, Box<dyn FnMut() -> anyhow::Result<()>>) = match call {
        HsmCall::Unwrap => {
            let wrapped = hsm.wrap_key(&KeyMaterial::generate())?;
            let hsm = &hsm;
            (
                TargetKind::HsmUnwrap,
                Box::new(move || {
                    hsm.unwrap_key(&wrapped)?;
                    Ok(())
                }),
            )
        }
        HsmCall::Gcm => {
            let key = TempKey::generate(&hsm)?;
            let decrypt = spec.mix.0.iter().all(|(op, _)| *op == OpKind::Decrypt);
            let (iv, aad) = ([7u8; 12], vec![0x61u8; 24 * spec.context_pairs]);
            let sealed = hsm.gcm_encrypt(&key.key, &iv, &aad, &[0x42; 32])?;
            let hsm = &hsm;
            (
                TargetKind::HsmGcm,
                Box::new(move || {
                    if decrypt {
                        hsm.gcm_decrypt(&key.key, &iv, &aad, &sealed)?;
                    } else {
                        hsm.gcm_encrypt(&key.key, &iv, &aad, &[0x42; 32])?;
                    }
                    Ok(())
                }),
            )
        }
    };
    let start = Instant::now();
    while start.elapsed() < opts.warmup {
        once()?;
    }
    let mut latency = RunResult::new_histogram();
    let cpu_before = proc_stat(None).unwrap_or_default().cpu_secs;
    let begin = Instant::now();
    let mut calls = 0u64;
    loop {
        let t = Instant::now();
        if t - begin >= opts.duration {
            break;
        }
        once()?;
        latency.saturating_record(t.elapsed().as_nanos() as u64);
        calls += 1;
    }
    let elapsed = begin.elapsed().as_secs_f64();
    let cpu = proc_stat(None).unwrap_or_default().cpu_secs - cpu_before;
    Ok(RunResult {
        workload: workload.to_owned(),
        target,
        protocol: crate::run::Protocol::Binary,
        model: crate::run::LoadModel::Closed {
            connections: 1,
            pipeline: 1,
        },
        batch: 1,
        duration_secs: elapsed,
        requests: calls,
        operations: calls,
        errors: BTreeMap::new(),
        latency,
        loadgen_cpu_secs: cpu,
        target_cpu_secs: None,
        target_rss_bytes: None,
        target_peak_rss_bytes: None,
    })
}

/// An HSM-only key for the GCM baseline, destroyed when dropped.
struct TempKey<'a> {
    hsm: &'a Hsm,
    key: HsmOnlyKey,
}

impl<'a> TempKey<'a> {
    fn generate(hsm: &'a Hsm) -> anyhow::Result<TempKey<'a>> {
        let label = format!("kms-loadgen-raw-gcm-{}", std::process::id());
        let key = hsm
            .generate_key(&label, label.as_bytes())
            .context("creating a temporary HSM-only key for the GCM baseline")?;
        Ok(TempKey { hsm, key })
    }
}

impl Drop for TempKey<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.hsm.destroy_key(&self.key) {
            eprintln!("kms-loadgen: could not destroy the temporary HSM-only key: {e}");
        }
    }
}
