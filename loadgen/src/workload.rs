//! What the load consists of: the operation mix, key popularity, payload and
//! context sizes, and the pool of prepared request frames every target is
//! driven with.
//!
//! Frames are built once, before the measured window: the load generator
//! shares two cores with the daemon, so during the run it only copies a
//! prepared frame and patches its request id in place (`FramePool`).

use anyhow::{bail, Context as _};
use flatbuffers::FlatBufferBuilder;
use kms_proto::codec::DEFAULT_MAX_BATCH;
use kms_proto::*;
use rand::distr::Distribution;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A data-plane operation the load generator can offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum OpKind {
    /// GenerateDataKey, AES_256 (32 bytes).
    GenerateDataKey,
    /// GenerateDataKeyWithoutPlaintext, AES_256.
    GenerateDataKeyWithoutPlaintext,
    /// Encrypt of `payload_size` bytes.
    Encrypt,
    /// Decrypt of a data key made before the window.
    Decrypt,
    /// ReEncrypt of a data key to another key of the pool.
    ReEncrypt,
    /// GenerateRandom of 32 bytes.
    GenerateRandom,
}

impl OpKind {
    /// Every operation, in the order `--op` documents them.
    pub const ALL: [OpKind; 6] = [
        OpKind::GenerateDataKey,
        OpKind::GenerateDataKeyWithoutPlaintext,
        OpKind::Encrypt,
        OpKind::Decrypt,
        OpKind::ReEncrypt,
        OpKind::GenerateRandom,
    ];

    /// The command-line name (the AWS name in kebab case).
    pub fn cli_name(self) -> &'static str {
        match self {
            OpKind::GenerateDataKey => "generate-data-key",
            OpKind::GenerateDataKeyWithoutPlaintext => "generate-data-key-without-plaintext",
            OpKind::Encrypt => "encrypt",
            OpKind::Decrypt => "decrypt",
            OpKind::ReEncrypt => "re-encrypt",
            OpKind::GenerateRandom => "generate-random",
        }
    }

    fn needs_blob(self) -> bool {
        matches!(self, OpKind::Decrypt | OpKind::ReEncrypt)
    }
}

/// Weighted operations, e.g. `generate-data-key=70,decrypt=30`.
#[derive(Clone, Debug, PartialEq)]
pub struct Mix(pub Vec<(OpKind, u32)>);

impl Mix {
    /// Parses `name[=weight],...`; a name without a weight weighs 1.
    pub fn parse(s: &str) -> anyhow::Result<Mix> {
        let mut out: Vec<(OpKind, u32)> = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = match part.split_once('=') {
                Some((n, w)) => (
                    n.trim(),
                    w.trim()
                        .parse::<u32>()
                        .with_context(|| format!("weight of {n:?} must be a whole number"))?,
                ),
                None => (part, 1),
            };
            let Some(op) = OpKind::ALL.iter().find(|o| o.cli_name() == name) else {
                let names: Vec<_> = OpKind::ALL.iter().map(|o| o.cli_name()).collect();
                bail!("unknown operation {name:?}; known: {}", names.join(", "));
            };
            if out.iter().any(|(o, _)| o == op) {
                bail!("operation {name:?} is listed twice");
            }
            if weight > 0 {
                out.push((*op, weight));
            }
        }
        if out.is_empty() {
            bail!("the mix has no operation with a weight above 0");
        }
        Ok(Mix(out))
    }

    /// Whether any operation needs ciphertexts prepared before the window.
    pub fn needs_blobs(&self) -> bool {
        self.0.iter().any(|(o, _)| o.needs_blob())
    }

    fn pick(&self, rng: &mut StdRng) -> OpKind {
        let total: u32 = self.0.iter().map(|(_, w)| w).sum();
        let mut x = rng.random_range(0..total);
        for (op, w) in &self.0 {
            if x < *w {
                return *op;
            }
            x -= w;
        }
        unreachable!("x < total")
    }
}

impl std::fmt::Display for Mix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(o, w)| format!("{}={w}", o.cli_name()))
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// How often each key is used.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Popularity {
    /// Every key equally.
    Uniform,
    /// Key k (1-based rank) with probability proportional to 1/k^s.
    Zipf(f64),
}

/// The whole description of a workload. The same spec (and seed) gives the
/// same frames' shape on every target, so their figures compare.
#[derive(Clone, Debug)]
pub struct WorkloadSpec {
    /// Operation mix.
    pub mix: Mix,
    /// Plaintext bytes per Encrypt (1..=4096).
    pub payload_size: usize,
    /// Number of distinct KMS keys.
    pub keys: usize,
    /// Key popularity.
    pub popularity: Popularity,
    /// Encryption-context pairs per operation (0..=64); each pair is about
    /// 24 bytes.
    pub context_pairs: usize,
    /// Operations per request frame (1 sends single-operation frames).
    pub batch: usize,
    /// Prepared ciphertexts per key for Decrypt and ReEncrypt.
    pub blobs_per_key: usize,
    /// Seed of the frame pool's random choices.
    pub seed: u64,
    /// Keys made by kmsd (false) or HSM-only keys (true: `--origin hsm`).
    pub hsm_keys: bool,
    /// Operations name their keys by alias (`--by-alias`): an alias is
    /// created for each key before the run, and frames carry alias names.
    pub by_alias: bool,
}

impl WorkloadSpec {
    /// Checks the sizes against the protocol's limits.
    pub fn validate(&self) -> anyhow::Result<()> {
        if !(1..=limits::MAX_PLAINTEXT).contains(&self.payload_size) {
            bail!(
                "--payload-size must be 1..={} bytes (the Encrypt limit)",
                limits::MAX_PLAINTEXT
            );
        }
        if self.keys == 0 {
            bail!("--keys must be at least 1");
        }
        if self.context_pairs > limits::MAX_CONTEXT_ENTRIES {
            bail!(
                "--context-size must be at most {} pairs",
                limits::MAX_CONTEXT_ENTRIES
            );
        }
        if !(1..=DEFAULT_MAX_BATCH).contains(&self.batch) {
            bail!("--batch must be 1..={DEFAULT_MAX_BATCH}");
        }
        if let Popularity::Zipf(s) = self.popularity {
            if !(s.is_finite() && s > 0.0) {
                bail!("--zipf exponent must be above 0");
            }
        }
        Ok(())
    }

    /// A short description for outputs.
    pub fn describe(&self) -> String {
        let pop = match self.popularity {
            Popularity::Uniform => "uniform".to_owned(),
            Popularity::Zipf(s) => format!("zipf({s})"),
        };
        let payload = if self.mix.0.iter().any(|(o, _)| *o == OpKind::Encrypt) {
            format!(" payload={}B", self.payload_size)
        } else {
            String::new()
        };
        let alias = if self.by_alias { " by-alias" } else { "" };
        format!(
            "{} batch={}{payload} keys={} {pop} context={}{alias}",
            self.mix, self.batch, self.keys, self.context_pairs
        )
    }

    /// The encryption context every operation carries.
    pub fn context(&self) -> Vec<(String, String)> {
        (0..self.context_pairs)
            .map(|i| (format!("context-key-{i:03}"), format!("value-{i:05}")))
            .collect()
    }
}

/// Keys and ciphertexts a pool is built from, made on the target before the
/// measured window (or synthetic ones, for the echo baseline, which never
/// looks inside a frame).
pub struct Prepared {
    /// How operations name the keys, most popular first: key ids, or alias
    /// names with `by_alias`.
    pub key_ids: Vec<String>,
    /// Per key: data-key ciphertext blobs under the workload's context.
    pub blobs: Vec<Vec<Vec<u8>>>,
}

/// Anything that can answer operations before the run: the daemon through a
/// client, or the service in-process.
pub trait Setup {
    /// Runs `ops` and returns their outcomes in order.
    fn batch(&mut self, ops: Vec<Operation<'_>>) -> anyhow::Result<Vec<Outcome>>;
}

impl Setup for kms_proto::client::Client {
    fn batch(&mut self, ops: Vec<Operation<'_>>) -> anyhow::Result<Vec<Outcome>> {
        Ok(kms_proto::client::Client::batch(self, ops)?)
    }
}

impl Prepared {
    /// Creates `spec.keys` keys on the target and, when the mix needs them,
    /// `blobs_per_key` data-key ciphertexts per key.
    pub fn create(target: &mut dyn Setup, spec: &WorkloadSpec) -> anyhow::Result<Prepared> {
        const CHUNK: usize = 512;
        let mut key_ids = Vec::with_capacity(spec.keys);
        while key_ids.len() < spec.keys {
            let n = CHUNK.min(spec.keys - key_ids.len());
            let ops = (0..n)
                .map(|_| {
                    Operation::CreateKey(CreateKey {
                        description: "kms-loadgen",
                        origin: if spec.hsm_keys {
                            Origin::Hsm
                        } else {
                            Origin::Kmsd
                        },
                        ..CreateKey::default()
                    })
                })
                .collect();
            for outcome in target.batch(ops)? {
                match outcome.context("CreateKey failed while preparing the workload")? {
                    Output::CreateKey(m) => key_ids.push(m.key_id),
                    _ => bail!("CreateKey answered with another operation's output"),
                }
            }
        }
        if spec.by_alias {
            key_ids = create_aliases(target, &key_ids)?;
        }
        let mut blobs = vec![Vec::new(); spec.keys];
        if spec.mix.needs_blobs() {
            let context = spec.context();
            let ctx: Vec<(&str, &str)> = context
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let wanted: Vec<usize> = (0..spec.keys)
                .flat_map(|k| std::iter::repeat_n(k, spec.blobs_per_key.max(1)))
                .collect();
            for chunk in wanted.chunks(CHUNK) {
                let ops = chunk
                    .iter()
                    .map(|&k| {
                        Operation::GenerateDataKeyWithoutPlaintext(GenerateDataKey {
                            key_id: &key_ids[k],
                            number_of_bytes: None,
                            key_spec: Some(DataKeySpec::Aes256),
                            context: ctx.clone(),
                            ..Default::default()
                        })
                    })
                    .collect();
                for (&k, outcome) in chunk.iter().zip(target.batch(ops)?) {
                    match outcome.context("GenerateDataKey failed while preparing Decrypt")? {
                        Output::GenerateDataKeyWithoutPlaintext(o) => {
                            blobs[k].push(o.ciphertext_blob)
                        }
                        _ => bail!("GenerateDataKey answered with another operation's output"),
                    }
                }
            }
        }
        Ok(Prepared { key_ids, blobs })
    }

    /// Stand-in keys and blobs of the real sizes, for the echo baseline.
    pub fn synthetic(spec: &WorkloadSpec) -> Prepared {
        let mut p = Prepared::synthetic_ids(spec);
        if spec.by_alias {
            // Alias names of the real length.
            p.key_ids = (0..p.key_ids.len()).map(|i| alias_name(0, i)).collect();
        }
        p
    }

    fn synthetic_ids(spec: &WorkloadSpec) -> Prepared {
        // A data key's blob: version, key id, key version, nonce, 32 bytes, tag.
        const BLOB_LEN: usize = 1 + 16 + 4 + 24 + 32 + 16;
        let mut rng = StdRng::seed_from_u64(spec.seed ^ 0xec40);
        let key_ids = (0..spec.keys)
            .map(|_| {
                let b: [u8; 16] = rng.random();
                let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
                format!(
                    "{}-{}-{}-{}-{}",
                    &h[0..8],
                    &h[8..12],
                    &h[12..16],
                    &h[16..20],
                    &h[20..32]
                )
            })
            .collect();
        let per_key = if spec.mix.needs_blobs() {
            spec.blobs_per_key.max(1)
        } else {
            0
        };
        let blobs = (0..spec.keys)
            .map(|_| {
                (0..per_key)
                    .map(|_| (0..BLOB_LEN).map(|_| rng.random()).collect())
                    .collect()
            })
            .collect();
        Prepared { key_ids, blobs }
    }
}

/// The name of the alias of the `i`th key of a run: the run's random tag
/// keeps names apart across runs against one daemon.
fn alias_name(run: u32, i: usize) -> String {
    format!("alias/kms-loadgen/{run:08x}/{i:06}")
}

/// Creates an alias for each key of `key_ids` (in order); returns the
/// alias names.
fn create_aliases(target: &mut dyn Setup, key_ids: &[String]) -> anyhow::Result<Vec<String>> {
    const CHUNK: usize = 512;
    let run: u32 = rand::rng().random();
    let names: Vec<String> = (0..key_ids.len()).map(|i| alias_name(run, i)).collect();
    for (keys, chunk) in key_ids.chunks(CHUNK).zip(names.chunks(CHUNK)) {
        let ops = keys
            .iter()
            .zip(chunk)
            .map(|(key, name)| {
                Operation::CreateAlias(CreateAlias {
                    alias_name: name,
                    target_key_id: key,
                })
            })
            .collect();
        for outcome in target.batch(ops)? {
            match outcome.context("CreateAlias failed while preparing the workload")? {
                Output::CreateAlias => {}
                _ => bail!("CreateAlias answered with another operation's output"),
            }
        }
    }
    Ok(names)
}

/// Prepared request frames (length prefix included), each with the offset
/// of its request id, used round-robin during the run.
pub struct FramePool {
    frames: Vec<Vec<u8>>,
    id_offsets: Vec<usize>,
    /// Operations per frame.
    pub items: usize,
}

/// Request id the pool is built with, found again in each frame to learn
/// where to patch real ids. Any value whose eight bytes appear nowhere else
/// in a frame works; a collision is detected (see `find_id`).
const SENTINEL_ID: u64 = 0x5a17_c0de_d15e_a5e5;

/// Memory the pool may take.
const POOL_BYTES: usize = 32 << 20;

impl FramePool {
    /// Builds a pool for `spec` from `prepared`: enough frames that every
    /// key appears about twice (at least 256 frames), within 32 MiB.
    pub fn build(spec: &WorkloadSpec, prepared: &Prepared) -> anyhow::Result<FramePool> {
        let mut fbb = FlatBufferBuilder::new();
        let mut frames = Vec::new();
        let mut id_offsets = Vec::new();
        plan(spec, prepared, |mut ops| {
            let body = if spec.batch == 1 {
                RequestBody::Single(Ok(ops.pop().expect("one op")))
            } else {
                RequestBody::Batch(ops.into_iter().map(Ok).collect())
            };
            let mut frame = Vec::new();
            encode_request(
                &mut fbb,
                &Request {
                    request_id: SENTINEL_ID,
                    body,
                },
                &mut frame,
            );
            let offset = find_id(&frame)?;
            let len = frame.len();
            frames.push(frame);
            id_offsets.push(offset);
            Ok(len)
        })?;
        Ok(FramePool {
            frames,
            id_offsets,
            items: spec.batch,
        })
    }

    /// Number of frames.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether the pool is empty (never, once built).
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Appends frame `i` (mod the pool size) to `out` with `request_id`.
    pub fn put(&self, i: usize, request_id: u64, out: &mut Vec<u8>) {
        let i = i % self.frames.len();
        let start = out.len();
        out.extend_from_slice(&self.frames[i]);
        let at = start + self.id_offsets[i];
        out[at..at + 8].copy_from_slice(&request_id.to_le_bytes());
    }

    /// Frame `i` (mod the pool size) as built, with the sentinel id.
    pub fn frame(&self, i: usize) -> &[u8] {
        &self.frames[i % self.frames.len()]
    }
}

/// Chooses the operations of a pool: `spec.batch` operations per request,
/// each handed to `encode`, which returns the bytes the request took; stops
/// when every key appears about twice (at least 256 requests) or the pool
/// reaches 32 MiB. The same spec and seed make the same choices, in the
/// same order, whatever the encoding: the binary frames and the HTTP
/// requests of a workload carry the same operations.
pub(crate) fn plan(
    spec: &WorkloadSpec,
    prepared: &Prepared,
    mut encode: impl FnMut(Vec<Operation<'_>>) -> anyhow::Result<usize>,
) -> anyhow::Result<()> {
    spec.validate()?;
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let ranks = KeyPicker::new(spec.keys, spec.popularity)?;
    let context = spec.context();
    let ctx: Vec<(&str, &str)> = context
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let payload: Vec<u8> = (0..spec.payload_size).map(|i| i as u8).collect();
    let want = (spec.keys * 2).div_ceil(spec.batch).max(256);
    let (mut requests, mut bytes) = (0, 0);
    while requests < want && (bytes < POOL_BYTES || requests == 0) {
        let mut ops = Vec::with_capacity(spec.batch);
        for _ in 0..spec.batch {
            let op = spec.mix.pick(&mut rng);
            let k = ranks.pick(&mut rng);
            let key_id = prepared.key_ids[k].as_str();
            let pick: u32 = rng.random();
            let blob = || -> anyhow::Result<&[u8]> {
                let blobs = &prepared.blobs[k];
                if blobs.is_empty() {
                    bail!("no ciphertext prepared for Decrypt");
                }
                Ok(&blobs[pick as usize % blobs.len()])
            };
            ops.push(match op {
                OpKind::GenerateDataKey | OpKind::GenerateDataKeyWithoutPlaintext => {
                    let g = GenerateDataKey {
                        key_id,
                        number_of_bytes: None,
                        key_spec: Some(DataKeySpec::Aes256),
                        context: ctx.clone(),
                        ..Default::default()
                    };
                    if op == OpKind::GenerateDataKey {
                        Operation::GenerateDataKey(g)
                    } else {
                        Operation::GenerateDataKeyWithoutPlaintext(g)
                    }
                }
                OpKind::Encrypt => Operation::Encrypt(Encrypt {
                    key_id,
                    plaintext: &payload,
                    context: ctx.clone(),
                    ..Default::default()
                }),
                OpKind::Decrypt => Operation::Decrypt(Decrypt {
                    ciphertext_blob: blob()?,
                    key_id: None,
                    context: ctx.clone(),
                    ..Default::default()
                }),
                OpKind::ReEncrypt => {
                    let dest = prepared.key_ids[ranks.pick(&mut rng)].as_str();
                    Operation::ReEncrypt(ReEncrypt {
                        ciphertext_blob: blob()?,
                        source_key_id: None,
                        source_context: ctx.clone(),
                        destination_key_id: dest,
                        destination_context: ctx.clone(),
                        ..Default::default()
                    })
                }
                OpKind::GenerateRandom => Operation::GenerateRandom(GenerateRandom {
                    number_of_bytes: 32,
                }),
            });
        }
        bytes += encode(ops)?;
        requests += 1;
    }
    Ok(())
}

/// Where the sentinel request id sits in `frame`; exactly one occurrence is
/// required, so patching can never corrupt another field.
fn find_id(frame: &[u8]) -> anyhow::Result<usize> {
    let needle = SENTINEL_ID.to_le_bytes();
    let mut hits = frame
        .windows(8)
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i);
    match (hits.next(), hits.next()) {
        (Some(i), None) => Ok(i),
        _ => bail!("request id not found exactly once in a prepared frame"),
    }
}

/// Picks key indexes by popularity (index 0 is the most popular).
pub struct KeyPicker {
    n: usize,
    zipf: Option<rand_distr::Zipf<f64>>,
}

impl KeyPicker {
    /// A picker over `n` keys.
    pub fn new(n: usize, popularity: Popularity) -> anyhow::Result<KeyPicker> {
        let zipf = match popularity {
            Popularity::Uniform => None,
            Popularity::Zipf(s) => Some(
                rand_distr::Zipf::new(n as f64, s)
                    .map_err(|e| anyhow::anyhow!("zipf distribution: {e}"))?,
            ),
        };
        Ok(KeyPicker { n, zipf })
    }

    /// One key index in 0..n.
    pub fn pick(&self, rng: &mut StdRng) -> usize {
        match &self.zipf {
            None => rng.random_range(0..self.n),
            // Zipf yields ranks 1..=n as floats.
            Some(z) => (z.sample(rng) as usize).clamp(1, self.n) - 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(mix: &str, batch: usize) -> WorkloadSpec {
        WorkloadSpec {
            mix: Mix::parse(mix).unwrap(),
            payload_size: 64,
            keys: 10,
            popularity: Popularity::Uniform,
            context_pairs: 2,
            batch,
            blobs_per_key: 1,
            seed: 7,
            hsm_keys: false,
            by_alias: false,
        }
    }

    #[test]
    fn mix_parses_weights_and_refuses_nonsense() {
        let m = Mix::parse("generate-data-key=70, decrypt=30").unwrap();
        assert_eq!(
            m.0,
            vec![(OpKind::GenerateDataKey, 70), (OpKind::Decrypt, 30)]
        );
        assert_eq!(Mix::parse("encrypt").unwrap().0, vec![(OpKind::Encrypt, 1)]);
        assert!(Mix::parse("decrypt=x").is_err());
        assert!(Mix::parse("sign=1").is_err());
        assert!(Mix::parse("encrypt=1,encrypt=2").is_err());
        assert!(Mix::parse("encrypt=0").is_err());
        assert_eq!(m.to_string(), "generate-data-key=70,decrypt=30");
    }

    #[test]
    fn pool_frames_decode_with_the_patched_id_and_follow_the_mix() {
        let s = spec("generate-data-key=3,decrypt=1", 8);
        let pool = FramePool::build(&s, &Prepared::synthetic(&s)).unwrap();
        assert!(pool.len() >= 256);
        let (mut gdk, mut dec) = (0, 0);
        for i in 0..pool.len() {
            let mut out = Vec::new();
            pool.put(i, 1000 + i as u64, &mut out);
            let req = decode_request(&out[4..], &DecodeLimits::default()).unwrap();
            assert_eq!(req.request_id, 1000 + i as u64);
            let RequestBody::Batch(items) = req.body else {
                panic!("expected a batch")
            };
            assert_eq!(items.len(), 8);
            for item in items {
                match item.unwrap() {
                    Operation::GenerateDataKey(g) => {
                        assert_eq!(g.context.len(), 2);
                        gdk += 1
                    }
                    Operation::Decrypt(d) => {
                        assert_eq!(d.ciphertext_blob.len(), 93);
                        dec += 1
                    }
                    other => panic!("unexpected {}", other.name()),
                }
            }
        }
        let share = gdk as f64 / (gdk + dec) as f64;
        assert!((0.70..0.80).contains(&share), "GDK share {share}");
    }

    #[test]
    fn zipf_prefers_the_first_keys_and_uniform_does_not() {
        let mut rng = StdRng::seed_from_u64(1);
        let count_first = |p: Popularity, rng: &mut StdRng| {
            let k = KeyPicker::new(1000, p).unwrap();
            (0..10_000).filter(|_| k.pick(rng) < 10).count()
        };
        let zipf = count_first(Popularity::Zipf(1.1), &mut rng);
        let uniform = count_first(Popularity::Uniform, &mut rng);
        assert!(zipf > 4000, "zipf first-10 share {zipf}");
        assert!(uniform < 300, "uniform first-10 share {uniform}");
    }

    #[test]
    fn validation_names_the_flag() {
        let mut s = spec("encrypt", 1);
        s.payload_size = 5000;
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("--payload-size"));
        let mut s = spec("encrypt", 2000);
        s.batch = 2000;
        assert!(s.validate().unwrap_err().to_string().contains("--batch"));
    }
}
