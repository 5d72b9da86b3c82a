//! Request-rate quotas: per (caller, operation class) and per key, checked
//! for every request item before anything else about it, with the generic
//! cell rate algorithm on atomics ([`gcra`]): no lock, no background
//! thread, a few nanoseconds per check.
//!
//! The caller is its uid (SO_PEERCRED): what one process or service
//! account may spend. Classes come from the profile (`[quotas] profile`,
//! [`profiles`]); `[[quotas.limit]]` entries change a class's rate for
//! everyone (`principal = "*"`) or for one uid or user. Limits are held
//! behind an `ArcSwap`, so SIGHUP replaces them without stopping a request
//! (buckets keep their state). A refused item is ThrottlingException with
//! AWS's message and a retry hint; a batch's items count one each.

pub mod gcra;
pub mod profiles;
#[cfg(test)]
mod tests;

use crate::config::{AwsConfig, QuotaProfile, QuotasConfig};
use arc_swap::ArcSwap;
use gcra::Rate;
pub use profiles::{op_index, OPERATION_COUNT};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// The limits in force: the profile's classes with `[[quotas.limit]]`
/// applied. Replaced whole on reload.
#[derive(Debug)]
pub struct Limits {
    /// Class names, by class number.
    class_names: Vec<String>,
    /// Each class's rate for callers without an override (`None`:
    /// unlimited), by class number.
    defaults: Vec<Option<Rate>>,
    /// The class number of each operation, by [`op_index`].
    op_class: [u16; OPERATION_COUNT],
    /// Rates of single uids, by (uid, class number).
    overrides: HashMap<(u32, u16), Option<Rate>>,
    /// The per-key rate of the cryptographic operations, if any.
    per_key: Option<Rate>,
    /// `profile = "off"`: nothing is limited (not even per key).
    off: bool,
}

impl Limits {
    /// The limits `config` describes (the `aws` profile's Region:
    /// `quotas.aws_region`, else `aws.region`); an error names the bad
    /// entry.
    pub fn from_config(config: &QuotasConfig, aws: &AwsConfig) -> Result<Limits, String> {
        let profile = match config.profile {
            QuotaProfile::Off => profiles::kmsd(),
            QuotaProfile::Kmsd => profiles::kmsd(),
            QuotaProfile::Aws => profiles::aws(Some(
                config.aws_region.as_deref().unwrap_or(&aws.region),
            )),
        };
        let class_names: Vec<String> = profile.classes.iter().map(|c| c.name.clone()).collect();
        let mut defaults: Vec<Option<Rate>> = profile
            .classes
            .iter()
            .map(|c| Some(Rate::new(c.rate, c.burst)))
            .collect();
        let mut overrides = HashMap::new();
        // "*" first, so that a uid's own entry wins whatever the order.
        let mut entries: Vec<_> = config.limit.iter().collect();
        entries.sort_by_key(|e| e.principal != "*");
        for e in entries {
            let where_ = format!("quotas.limit {{ principal = {:?}, class = {:?} }}", e.principal, e.class);
            let class = class_names
                .iter()
                .position(|n| n == &e.class)
                .ok_or_else(|| {
                    format!(
                        "{where_}: no class {:?} in profile {:?} (its classes: {})",
                        e.class,
                        config.profile.name(),
                        class_names.join(", ")
                    )
                })? as u16;
            let rate = match (e.unlimited, e.rate) {
                (true, None) => None,
                (false, Some(r)) if r > 0.0 && r.is_finite() && r <= 1e9 => {
                    let burst = e.burst.unwrap_or(r.max(1.0));
                    if !(burst >= 1.0 && burst.is_finite() && burst <= 1e12) {
                        return Err(format!("{where_}: burst must be 1..=1e12"));
                    }
                    Some(Rate::new(r, burst))
                }
                (true, Some(_)) => return Err(format!("{where_}: give rate or unlimited, not both")),
                (false, _) => {
                    return Err(format!("{where_}: rate must be above 0 and at most 1e9 a second (or unlimited = true)"))
                }
            };
            match principal_uid(&e.principal).map_err(|m| format!("{where_}: {m}"))? {
                None => defaults[class as usize] = rate,
                Some(uid) => {
                    overrides.insert((uid, class), rate);
                }
            }
        }
        let per_key = match config.per_key_rate {
            0.0 => None,
            r if r > 0.0 && r.is_finite() && r <= 1e9 => {
                Some(Rate::new(r, config.per_key_burst.unwrap_or(r.max(1.0)).max(1.0)))
            }
            _ => return Err("quotas.per_key_rate must be 0 (off) or above 0 and at most 1e9".into()),
        };
        Ok(Limits {
            class_names,
            defaults,
            op_class: profile.op_class,
            overrides,
            per_key,
            off: config.profile == QuotaProfile::Off,
        })
    }

    /// The rate `uid` has for operation `op`, and its class.
    #[inline]
    fn rate(&self, uid: u32, op: usize) -> (u16, Option<Rate>) {
        let class = self.op_class[op];
        let rate = if self.overrides.is_empty() {
            self.defaults[class as usize]
        } else {
            match self.overrides.get(&(uid, class)) {
                Some(r) => *r,
                None => self.defaults[class as usize],
            }
        };
        (class, rate)
    }
}

/// `*` (None), `uid:N` or `user:NAME` (resolved now) to a uid. Also the
/// parser of the HTTP endpoint's credentials (`http::sigv4`), which take
/// the `uid:N` and `user:NAME` forms.
pub(crate) fn principal_uid(p: &str) -> Result<Option<u32>, String> {
    if p == "*" {
        return Ok(None);
    }
    if let Some(n) = p.strip_prefix("uid:") {
        return n
            .parse::<u32>()
            .map(Some)
            .map_err(|_| format!("{p:?}: uid:N needs a number"));
    }
    if let Some(name) = p.strip_prefix("user:") {
        return match nix::unistd::User::from_name(name) {
            Ok(Some(u)) => Ok(Some(u.uid.as_raw())),
            Ok(None) => Err(format!("{p:?}: no such user")),
            Err(e) => Err(format!("{p:?}: looking the user up: {e}")),
        };
    }
    Err(format!(
        "{p:?}: quotas are per uid: give \"*\", \"uid:N\" or \"user:NAME\""
    ))
}

/// Where quotas read the time: the monotonic clock, or a hand-moved one
/// for tests.
#[derive(Clone, Debug)]
pub enum QuotaClock {
    /// Nanoseconds since this instant.
    Monotonic(Instant),
    /// Nanoseconds as set by the test.
    #[cfg(test)]
    Manual(Arc<AtomicU64>),
}

impl QuotaClock {
    #[inline]
    fn now(&self) -> u64 {
        match self {
            // Offset by a second so that no bucket's "now" is ever 0 (a new
            // bucket's TAT).
            QuotaClock::Monotonic(t) => t.elapsed().as_nanos() as u64 + 1_000_000_000,
            #[cfg(test)]
            QuotaClock::Manual(n) => n.load(Ordering::Relaxed),
        }
    }
}

/// One bucket: whose it is, its TAT, and how often it refused. On a cache
/// line of its own: two callers' buckets never share one.
#[repr(align(64))]
#[derive(Default)]
struct Slot {
    /// `(uid + 1) << 16 | class`, 0 while free. Set once (buckets are
    /// never given back: there are at most a few thousand callers).
    tag: AtomicU64,
    tat: AtomicU64,
    throttled: AtomicU64,
}

const SLOTS: usize = 8192;
const PROBE: usize = 32;

/// The daemon's quotas.
pub struct Quotas {
    limits: ArcSwap<Limits>,
    clock: QuotaClock,
    slots: Box<[Slot]>,
    /// Buckets of (uid, class) pairs that found no free slot, one per
    /// class number: shared, so that a host with more than ~8,000 busy
    /// (uid, class) pairs still limits them (together) instead of failing.
    overflow: Box<[Slot]>,
    /// Items refused by a key's own limit.
    key_throttled: AtomicU64,
}

impl std::fmt::Debug for Quotas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quotas").field("limits", &self.limits.load()).finish()
    }
}

/// The most classes a profile has (the `aws` profile: 33).
const MAX_CLASSES: usize = 64;

impl Quotas {
    /// Quotas with `limits`, reading `clock`.
    pub fn new(limits: Limits, clock: QuotaClock) -> Quotas {
        debug_assert!(limits.class_names.len() <= MAX_CLASSES);
        Quotas {
            limits: ArcSwap::from_pointee(limits),
            clock,
            slots: (0..SLOTS).map(|_| Slot::default()).collect(),
            overflow: (0..MAX_CLASSES).map(|_| Slot::default()).collect(),
            key_throttled: AtomicU64::new(0),
        }
    }

    /// Quotas from the config, on the monotonic clock.
    pub fn from_config(config: &QuotasConfig, aws: &AwsConfig) -> Result<Quotas, String> {
        Ok(Quotas::new(
            Limits::from_config(config, aws)?,
            QuotaClock::Monotonic(Instant::now()),
        ))
    }

    /// Replaces the limits (SIGHUP). Buckets keep their state: a caller
    /// who just spent its burst does not get a new one by a reload.
    pub fn reload(&self, limits: Limits) {
        self.limits.store(Arc::new(limits));
    }

    /// Takes one request of operation `op` ([`op_index`]) for `uid`, or
    /// answers ThrottlingException with the time to wait.
    #[inline]
    pub fn admit(&self, uid: u32, op: usize) -> Result<(), kms_proto::KmsError> {
        let limits = self.limits.load();
        if limits.off {
            return Ok(());
        }
        let (class, rate) = limits.rate(uid, op);
        let Some(rate) = rate else {
            return Ok(());
        };
        let slot = self.slot(uid, class);
        gcra::take(&slot.tat, self.clock.now(), rate, 1).map_err(|wait| {
            slot.throttled.fetch_add(1, Ordering::Relaxed);
            throttled(wait)
        })
    }

    /// Takes one request from a key's own bucket (`tat`, held by the
    /// cached key) when a per-key rate is set.
    #[inline]
    pub fn admit_key(&self, tat: &AtomicU64) -> Result<(), kms_proto::KmsError> {
        let limits = self.limits.load();
        let Some(rate) = limits.per_key.filter(|_| !limits.off) else {
            return Ok(());
        };
        gcra::take(tat, self.clock.now(), rate, 1).map_err(|wait| {
            self.key_throttled.fetch_add(1, Ordering::Relaxed);
            throttled(wait)
        })
    }

    /// The bucket of (uid, class), claimed on first use.
    #[inline]
    fn slot(&self, uid: u32, class: u16) -> &Slot {
        let tag = ((uid as u64 + 1) << 16) | class as u64;
        // Fibonacci hashing: uids are small and dense.
        let start = (tag.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 51) as usize;
        for i in 0..PROBE {
            let slot = &self.slots[(start + i) & (SLOTS - 1)];
            let seen = slot.tag.load(Ordering::Acquire);
            if seen == tag {
                return slot;
            }
            if seen == 0 {
                match slot
                    .tag
                    .compare_exchange(0, tag, Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) => return slot,
                    Err(t) if t == tag => return slot,
                    Err(_) => continue,
                }
            }
        }
        &self.overflow[class as usize % MAX_CLASSES]
    }

    /// Refusals so far by (principal, class): for metrics and status.
    /// Callers that shared an overflow bucket show as `uid:?`; refusals by
    /// a key's own limit as `key:*` in class `per-key`.
    pub fn throttled(&self) -> Vec<(String, String, u64)> {
        let limits = self.limits.load();
        let name = |class: u64| {
            limits
                .class_names
                .get(class as usize)
                .cloned()
                .unwrap_or_else(|| format!("class-{class}"))
        };
        let mut out = Vec::new();
        for s in self.slots.iter() {
            let tag = s.tag.load(Ordering::Acquire);
            let n = s.throttled.load(Ordering::Relaxed);
            if tag != 0 && n > 0 {
                out.push((format!("uid:{}", (tag >> 16) - 1), name(tag & 0xffff), n));
            }
        }
        for (class, s) in self.overflow.iter().enumerate() {
            let n = s.throttled.load(Ordering::Relaxed);
            if n > 0 {
                out.push(("uid:?".into(), name(class as u64), n));
            }
        }
        let k = self.key_throttled.load(Ordering::Relaxed);
        if k > 0 {
            out.push(("key:*".into(), "per-key".into(), k));
        }
        out.sort();
        out
    }
}

/// AWS's throttling message, with how long to wait (rounded up to the
/// millisecond).
pub fn throttled(wait_ns: u64) -> kms_proto::KmsError {
    let ms = wait_ns.div_ceil(1_000_000).max(1);
    kms_proto::KmsError::new(
        kms_proto::ErrorKind::Throttling,
        format!(
            "You have exceeded the rate at which you may call KMS. Reduce the frequency of your \
             calls. Retry after {ms} ms."
        ),
    )
}
