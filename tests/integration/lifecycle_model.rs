//! A model-based property test of the key lifecycle: random sequences of
//! lifecycle operations (enable, disable, schedule and cancel deletion,
//! enable and disable automatic rotation, rotate on demand, delete and
//! re-import material, encrypt and decrypt, moving the clock) applied to an
//! in-process service on a manual clock and to a small reference model
//! written here from AWS's documentation. After every step the outcome (OK
//! or the exception's name) must agree, and so must every key's
//! DescribeKey and GetKeyRotationStatus (or NotFoundException for a key
//! whose deletion came due).
//!
//! The scheduler's due work runs after every step (the daemon's scheduler
//! thread runs it every `lifecycle.scheduler_interval_ms`, between
//! requests): deletions whose date has come, automatic rotations whose
//! date has come for Enabled keys.
//!
//! Where AWS's documents leave a choice, the model follows the one
//! docs/lifecycle.md records (each marked "kmsd:" below).

use kms_proto::*;
use kmsd::clock::ManualClock;
use kmsd::crypto::KeyMaterial;
use kmsd::identity::Identity;
use kmsd::keystore::Keystore;
use kmsd::root::FileRoot;
use kmsd::service::{Service, ServiceOptions};
use proptest::prelude::*;
use std::sync::Arc;

const PEER: Identity = Identity::local(0, 0, 1);

const DAY: i64 = 86_400;
/// Where the clock starts (2025-01-01).
const START: i64 = 1_735_689_600;
/// On-demand rotations allowed per key in these tests (AWS: 25), low so
/// that sequences reach the limit.
const MAX_ON_DEMAND: u32 = 3;

/// The keys every sequence works on: one made by kmsd, one with imported
/// material (few keys, so that steps meet on the same key often).
const ORIGINS: [Origin; 2] = [Origin::Kmsd, Origin::External];

/// One step of a sequence (`k`: which key).
#[derive(Clone, Debug)]
enum Step {
    Enable(usize),
    Disable(usize),
    Schedule(usize, Option<u32>),
    Cancel(usize),
    EnableRotation(usize, Option<u32>),
    DisableRotation(usize),
    RotateOnDemand(usize),
    DeleteMaterial(usize),
    /// GetParametersForImport, then ImportKeyMaterial of the key's
    /// material (the same as before: AWS allows no other).
    Import(usize),
    Encrypt(usize),
    /// Decrypt of the `i`th (mod count) ciphertext made under the key.
    Decrypt(usize, usize),
    /// Moves the clock forward (then the scheduler's pass).
    Advance(i64),
}

fn step() -> impl Strategy<Value = Step> {
    let k = 0..ORIGINS.len();
    // Mostly valid arguments, sometimes AWS's limits' neighbours.
    let window = prop_oneof![
        3 => Just(None),
        6 => (7u32..=30).prop_map(Some),
        1 => prop_oneof![Just(Some(6u32)), Just(Some(31u32)), Just(Some(0u32))],
    ];
    let period = prop_oneof![
        3 => Just(None),
        6 => (90u32..=400).prop_map(Some),
        1 => prop_oneof![Just(Some(89u32)), Just(Some(2561u32)), Just(Some(2560u32))],
    ];
    // Steps of the lifecycle's scales: an hour, a deletion window, a
    // rotation period, and anything up to more than a year.
    let advance = prop_oneof![
        Just(3_600i64),
        Just(DAY),
        Just(7 * DAY),
        Just(30 * DAY),
        Just(90 * DAY),
        Just(180 * DAY),
        Just(365 * DAY),
        (0i64..400 * DAY),
    ];
    prop_oneof![
        3 => k.clone().prop_map(Step::Enable),
        3 => k.clone().prop_map(Step::Disable),
        2 => (k.clone(), window).prop_map(|(k, w)| Step::Schedule(k, w)),
        3 => k.clone().prop_map(Step::Cancel),
        4 => (k.clone(), period).prop_map(|(k, p)| Step::EnableRotation(k, p)),
        1 => k.clone().prop_map(Step::DisableRotation),
        2 => k.clone().prop_map(Step::RotateOnDemand),
        1 => k.clone().prop_map(Step::DeleteMaterial),
        1 => k.clone().prop_map(Step::Import),
        2 => k.clone().prop_map(Step::Encrypt),
        2 => (k.clone(), 0usize..8).prop_map(|(k, i)| Step::Decrypt(k, i)),
        5 => advance.prop_map(Step::Advance),
    ]
}

/// A key as the model sees it.
#[derive(Clone, Debug)]
struct MKey {
    origin: Origin,
    /// Deleted by the scheduler: NotFoundException from then on.
    gone: bool,
    state: KeyState,
    /// Versions made (the current one's number) for keys made by kmsd.
    versions: u32,
    on_demand: u32,
    /// Automatic rotation: (period in days, next date).
    rotation: Option<(u32, i64)>,
    /// Pending deletion: (date, window in days).
    deletion: Option<(i64, u32)>,
    /// Whether an EXTERNAL key has its material.
    material: bool,
}

/// The reference model: AWS KMS's lifecycle for these keys.
struct Model {
    now: i64,
    keys: Vec<MKey>,
}

use ErrorKind::{
    Disabled as DisabledE, KmsInvalidState, LimitExceeded, NotFound, UnsupportedOperation,
    Validation,
};

/// The model's answer to a step: Ok, or the exception.
type Outcome = Result<(), ErrorKind>;

impl Model {
    fn new(now: i64) -> Model {
        Model {
            now,
            keys: ORIGINS
                .iter()
                .map(|&origin| MKey {
                    origin,
                    gone: false,
                    state: KeyState::Enabled,
                    versions: 1,
                    on_demand: 0,
                    rotation: None,
                    deletion: None,
                    material: true,
                })
                .collect(),
        }
    }

    /// The refusal of a rotation-family request (origin first: kmsd's
    /// choice where AWS's table leaves it open; then AWS's table).
    fn rotation_refused(k: &MKey) -> Option<ErrorKind> {
        if k.origin == Origin::External {
            return Some(UnsupportedOperation);
        }
        match k.state {
            KeyState::Enabled => None,
            KeyState::Disabled => Some(DisabledE),
            _ => Some(KmsInvalidState),
        }
    }

    fn crypto_refused(k: &MKey) -> Option<ErrorKind> {
        match k.state {
            KeyState::Enabled => None,
            KeyState::Disabled => Some(DisabledE),
            _ => Some(KmsInvalidState),
        }
    }

    /// Applies `step`; its outcome.
    fn apply(&mut self, step: &Step) -> Outcome {
        let now = self.now;
        if let Step::Advance(secs) = step {
            self.now += secs;
            return Ok(());
        }
        // Request validation comes before the key is looked up (AWS
        // answers ValidationException for a malformed request).
        match step {
            Step::Schedule(_, Some(w)) if !(7..=30).contains(w) => return Err(Validation),
            Step::EnableRotation(_, Some(p)) if !(90..=2560).contains(p) => return Err(Validation),
            _ => {}
        }
        let i = match step {
            Step::Enable(i)
            | Step::Disable(i)
            | Step::Schedule(i, _)
            | Step::Cancel(i)
            | Step::EnableRotation(i, _)
            | Step::DisableRotation(i)
            | Step::RotateOnDemand(i)
            | Step::DeleteMaterial(i)
            | Step::Import(i)
            | Step::Encrypt(i)
            | Step::Decrypt(i, _) => *i,
            Step::Advance(_) => unreachable!(),
        };
        let k = &mut self.keys[i];
        if k.gone {
            return Err(NotFound);
        }
        use KeyState::*;
        match step {
            Step::Enable(_) | Step::Disable(_) => match k.state {
                Enabled | Disabled => {
                    k.state = if matches!(step, Step::Enable(_)) {
                        Enabled
                    } else {
                        Disabled
                    };
                    Ok(())
                }
                _ => Err(KmsInvalidState),
            },
            Step::Schedule(_, w) => match k.state {
                PendingDeletion => Err(KmsInvalidState),
                _ => {
                    let w = w.unwrap_or(30);
                    k.deletion = Some((now + i64::from(w) * DAY, w));
                    k.state = PendingDeletion;
                    Ok(())
                }
            },
            Step::Cancel(_) => match k.state {
                PendingDeletion => {
                    k.deletion = None;
                    // AWS: the key is Disabled afterwards; one whose
                    // imported material was deleted while pending
                    // deletion has none to enable: PendingImport.
                    k.state = if k.material { Disabled } else { PendingImport };
                    Ok(())
                }
                _ => Err(KmsInvalidState),
            },
            Step::EnableRotation(_, p) => {
                if let Some(e) = Self::rotation_refused(k) {
                    return Err(e);
                }
                let p = p.unwrap_or(365);
                let next = match k.rotation {
                    // kmsd: a new period counts from the last rotation
                    // (or the day rotation was enabled).
                    Some((old, next)) => next - i64::from(old) * DAY + i64::from(p) * DAY,
                    None => now + i64::from(p) * DAY,
                };
                k.rotation = Some((p, next));
                Ok(())
            }
            Step::DisableRotation(_) => {
                if let Some(e) = Self::rotation_refused(k) {
                    return Err(e);
                }
                k.rotation = None;
                Ok(())
            }
            Step::RotateOnDemand(_) => {
                if let Some(e) = Self::rotation_refused(k) {
                    return Err(e);
                }
                if k.on_demand >= MAX_ON_DEMAND {
                    return Err(LimitExceeded);
                }
                k.on_demand += 1;
                k.versions += 1;
                Ok(())
            }
            Step::DeleteMaterial(_) => {
                if k.origin != Origin::External {
                    return Err(UnsupportedOperation);
                }
                k.material = false;
                if matches!(k.state, Enabled | Disabled) {
                    k.state = PendingImport;
                }
                Ok(())
            }
            Step::Import(_) => {
                if k.origin != Origin::External {
                    return Err(UnsupportedOperation);
                }
                match k.state {
                    PendingDeletion => Err(KmsInvalidState),
                    PendingImport => {
                        k.material = true;
                        k.state = Enabled;
                        Ok(())
                    }
                    _ => Ok(()),
                }
            }
            Step::Encrypt(_) | Step::Decrypt(..) => match Self::crypto_refused(k) {
                Some(e) => Err(e),
                None => Ok(()),
            },
            Step::Advance(_) => unreachable!(),
        }
    }

    /// The scheduler's pass at the model's now: deletions due, then
    /// automatic rotations due (Enabled keys only; a key disabled or
    /// pending deletion keeps its date and rotates once it is Enabled
    /// again, as AWS: "when the KMS key is re-enabled, if the key material
    /// is older than the period, it is rotated").
    fn run_due(&mut self) {
        let now = self.now;
        for k in &mut self.keys {
            if let Some((date, _)) = k.deletion {
                if !k.gone && k.state == KeyState::PendingDeletion && date <= now {
                    k.gone = true;
                }
            }
        }
        for k in &mut self.keys {
            if k.gone || k.state != KeyState::Enabled || k.origin == Origin::External {
                continue;
            }
            if let Some((p, next)) = k.rotation {
                if next <= now {
                    k.versions += 1;
                    let period = i64::from(p) * DAY;
                    // kmsd: one period after the due date, or after now if
                    // that has passed too (one rotation, not one per
                    // missed period).
                    let after = if next + period > now {
                        next + period
                    } else {
                        now + period
                    };
                    k.rotation = Some((p, after));
                }
            }
        }
    }
}

/// The service under test, its clock, and what the steps need.
struct Real {
    svc: Service,
    clock: Arc<ManualClock>,
    ids: Vec<String>,
    materials: Vec<[u8; 32]>,
    /// Ciphertexts made under each key (with the plaintext they hold).
    blobs: Vec<Vec<(Vec<u8>, Vec<u8>)>>,
}

fn kind(r: Result<Output, KmsError>) -> Outcome {
    r.map(|_| ()).map_err(|e| e.kind)
}

impl Real {
    fn new() -> Real {
        let clock = ManualClock::at(START);
        let mut config = kmsd::config::Config::default();
        config.limits.max_on_demand_rotations = MAX_ON_DEMAND;
        let mut options = ServiceOptions::from_config(&config);
        options.clock = clock.clone();
        let svc = Service::with_options(
            Keystore::open_in_memory().unwrap(),
            Arc::new(FileRoot::from_key(KeyMaterial::from_bytes([7; 32]))),
            options,
        )
        .unwrap();
        let mut r = Real {
            svc,
            clock,
            ids: Vec::new(),
            materials: Vec::new(),
            blobs: vec![Vec::new(); ORIGINS.len()],
        };
        for origin in ORIGINS {
            let id = match r
                .svc
                .call(
                    &Operation::CreateKey(CreateKey {
                        origin,
                        ..Default::default()
                    }),
                    &PEER,
                )
                .unwrap()
            {
                Output::CreateKey(m) => m.key_id,
                other => panic!("{other:?}"),
            };
            let mut material = [0u8; 32];
            kmsd::crypto::rng::fill(&mut material);
            r.ids.push(id);
            r.materials.push(material);
            if origin == Origin::External {
                let i = r.ids.len() - 1;
                assert_eq!(r.import(i), Ok(()), "the first import");
            }
        }
        r
    }

    fn call(&self, op: Operation<'_>) -> Result<Output, KmsError> {
        self.svc.call(&op, &PEER)
    }

    fn import(&self, i: usize) -> Outcome {
        let id = self.ids[i].as_str();
        let params = match self.call(Operation::GetParametersForImport(GetParametersForImport {
            key_id: id,
            wrapping_algorithm: WrappingAlgorithm::RsaesOaepSha256,
            wrapping_key_spec: WrappingKeySpec::Rsa2048,
        })) {
            Ok(Output::GetParametersForImport(p)) => p,
            Ok(other) => panic!("{other:?}"),
            Err(e) => return Err(e.kind),
        };
        let wrapped = crate::life::wrap_for_import(&params.public_key, &self.materials[i]);
        kind(self.call(Operation::ImportKeyMaterial(ImportKeyMaterial {
            key_id: id,
            import_token: &params.import_token,
            encrypted_key_material: &wrapped,
            valid_to: None,
            expiration_model: ExpirationModel::KeyMaterialDoesNotExpire,
        })))
    }

    fn apply(&mut self, step: &Step) -> Outcome {
        let id = |i: usize| self.ids[i].as_str();
        match *step {
            Step::Enable(i) => kind(self.call(Operation::EnableKey(EnableKey { key_id: id(i) }))),
            Step::Disable(i) => {
                kind(self.call(Operation::DisableKey(DisableKey { key_id: id(i) })))
            }
            Step::Schedule(i, w) => kind(self.call(Operation::ScheduleKeyDeletion(
                ScheduleKeyDeletion {
                    key_id: id(i),
                    pending_window_in_days: w,
                },
            ))),
            Step::Cancel(i) => kind(self.call(Operation::CancelKeyDeletion(CancelKeyDeletion {
                key_id: id(i),
            }))),
            Step::EnableRotation(i, p) => {
                kind(self.call(Operation::EnableKeyRotation(EnableKeyRotation {
                    key_id: id(i),
                    rotation_period_in_days: p,
                })))
            }
            Step::DisableRotation(i) => {
                kind(self.call(Operation::DisableKeyRotation(DisableKeyRotation {
                    key_id: id(i),
                })))
            }
            Step::RotateOnDemand(i) => {
                kind(self.call(Operation::RotateKeyOnDemand(RotateKeyOnDemand {
                    key_id: id(i),
                })))
            }
            Step::DeleteMaterial(i) => kind(self.call(Operation::DeleteImportedKeyMaterial(
                DeleteImportedKeyMaterial { key_id: id(i) },
            ))),
            Step::Import(i) => self.import(i),
            Step::Encrypt(i) => {
                let mut pt = vec![0u8; 24];
                kmsd::crypto::rng::fill(&mut pt);
                match self.call(Operation::Encrypt(Encrypt {
                    key_id: id(i),
                    plaintext: &pt,
                    context: vec![("step", "encrypt")],
                    ..Default::default()
                })) {
                    Ok(Output::Encrypt(o)) => {
                        self.blobs[i].push((o.ciphertext_blob, pt));
                        Ok(())
                    }
                    Ok(other) => panic!("{other:?}"),
                    Err(e) => Err(e.kind),
                }
            }
            Step::Decrypt(i, n) => {
                // Every key has one at least (`run` makes it first).
                let (blob, pt) = &self.blobs[i][n % self.blobs[i].len()];
                match self.call(Operation::Decrypt(Decrypt {
                    ciphertext_blob: blob,
                    key_id: None,
                    context: vec![("step", "encrypt")],
                    ..Default::default()
                })) {
                    Ok(Output::Decrypt(o)) => {
                        assert_eq!(o.plaintext.expose(), &pt[..], "Decrypt's plaintext");
                        Ok(())
                    }
                    Ok(other) => panic!("{other:?}"),
                    Err(e) => Err(e.kind),
                }
            }
            Step::Advance(secs) => {
                self.clock.advance(secs);
                Ok(())
            }
        }
    }
}

/// What DescribeKey and GetKeyRotationStatus show of a key, in the
/// model's terms.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Gone,
    Key {
        state: KeyState,
        enabled: bool,
        /// Current version (keys made by kmsd; None for EXTERNAL keys,
        /// whose numbering the model does not follow).
        version: Option<u32>,
        deletion_date: Option<i64>,
        window: Option<u32>,
        rotation_enabled: bool,
        period: Option<u32>,
        next_rotation: Option<i64>,
    },
}

fn seen_in_model(k: &MKey) -> Seen {
    if k.gone {
        return Seen::Gone;
    }
    // AWS: a key pending deletion shows rotation off; its schedule comes
    // back if the deletion is cancelled. Imported material never rotates
    // automatically.
    let on = k.state != KeyState::PendingDeletion && k.origin != Origin::External;
    let rotation = k.rotation.filter(|_| on);
    Seen::Key {
        state: k.state,
        enabled: k.state == KeyState::Enabled,
        version: (k.origin != Origin::External).then_some(k.versions),
        deletion_date: k.deletion.map(|(d, _)| d),
        window: k.deletion.map(|(_, w)| w),
        rotation_enabled: rotation.is_some(),
        period: rotation.map(|(p, _)| p),
        next_rotation: rotation.map(|(_, n)| n),
    }
}

fn seen_in_service(r: &Real, i: usize) -> Seen {
    let key_id = r.ids[i].as_str();
    let m = match r.call(Operation::DescribeKey(DescribeKey {
        key_id,
        ..Default::default()
    })) {
        Ok(Output::DescribeKey(m)) => m,
        Err(e) if e.kind == NotFound => {
            let rot = r.call(Operation::GetKeyRotationStatus(GetKeyRotationStatus {
                key_id,
            }));
            assert_eq!(
                rot.map(|_| ()).map_err(|e| e.kind),
                Err(NotFound),
                "GetKeyRotationStatus of a deleted key"
            );
            return Seen::Gone;
        }
        other => panic!("DescribeKey: {other:?}"),
    };
    let rot = match r.call(Operation::GetKeyRotationStatus(GetKeyRotationStatus {
        key_id,
    })) {
        Ok(Output::GetKeyRotationStatus(o)) => o,
        other => panic!("GetKeyRotationStatus: {other:?}"),
    };
    Seen::Key {
        state: m.key_state,
        enabled: m.enabled,
        version: (m.origin != Origin::External).then_some(m.current_version),
        deletion_date: m.deletion_date,
        window: m.pending_deletion_window_in_days,
        rotation_enabled: rot.key_rotation_enabled,
        period: rot.rotation_period_in_days,
        next_rotation: rot.next_rotation_date,
    }
}

/// Runs `steps` on a fresh service and model; the first disagreement.
fn run(steps: &[Step]) -> Result<(), TestCaseError> {
    let mut real = Real::new();
    let mut model = Model::new(START);
    // One ciphertext per key, made while every key is Enabled, so that
    // Decrypt always has one.
    for i in 0..ORIGINS.len() {
        prop_assert_eq!(real.apply(&Step::Encrypt(i)), Ok(()));
    }
    for (n, step) in steps.iter().enumerate() {
        let want = model.apply(step);
        let got = real.apply(step);
        prop_assert_eq!(
            got,
            want,
            "step {} {:?}: the service answered {:?}, the model {:?}",
            n,
            step,
            got.err().map(ErrorKind::name),
            want.err().map(ErrorKind::name)
        );
        kmsd::service::scheduler::run_due(&real.svc);
        model.run_due();
        for (i, k) in model.keys.iter().enumerate() {
            let want = seen_in_model(k);
            let got = seen_in_service(&real, i);
            prop_assert_eq!(
                &got,
                &want,
                "after step {} {:?}: key {} ({:?}) differs",
                n,
                step,
                i,
                k.origin
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        // Failing sequences are printed (shrunk), not written to a file
        // in the source tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_lifecycle_agrees_with_the_model(steps in proptest::collection::vec(step(), 1..50)) {
        run(&steps)?;
    }
}

/// Sequences a random generator rarely makes, spelled out.
#[test]
fn known_sequences_agree_with_the_model() {
    use Step::*;
    let sequences: &[&[Step]] = &[
        // Deletion comes due exactly at its date, not before.
        &[
            Schedule(0, Some(7)),
            Advance(7 * DAY - 1),
            Advance(1),
            Encrypt(0),
        ],
        // A cancelled deletion leaves the key Disabled, its rotation
        // schedule back.
        &[
            EnableRotation(0, Some(90)),
            Schedule(0, None),
            Cancel(0),
            Enable(0),
            Advance(90 * DAY),
            Decrypt(0, 0),
        ],
        // A disabled key's rotation waits for it to be enabled again,
        // then happens once.
        &[
            EnableRotation(0, Some(90)),
            Disable(0),
            Advance(400 * DAY),
            Enable(0),
            Advance(1),
            RotateOnDemand(0),
            RotateOnDemand(0),
            RotateOnDemand(0),
            RotateOnDemand(0),
        ],
        // Imported material: deleted, the key pending deletion keeps its
        // state; cancelled, it waits for material; re-imported, Enabled,
        // and its old ciphertext decrypts again.
        &[
            Schedule(1, Some(7)),
            DeleteMaterial(1),
            Cancel(1),
            Decrypt(1, 0),
            Import(1),
            Decrypt(1, 0),
            EnableRotation(1, None),
            RotateOnDemand(1),
        ],
    ];
    for s in sequences {
        if let Err(e) = run(s) {
            panic!("{s:?}: {e}");
        }
    }
}
