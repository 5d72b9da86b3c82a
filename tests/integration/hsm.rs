//! The PKCS#11 root of trust and HSM layer against a real SoftHSM2 token:
//! one wrapped-key format for the file and HSM roots, Wycheproof KWP and
//! AES-GCM vectors through SoftHSM, start-up failures, a real daemon on the
//! HSM root across a restart, and fault recovery (a token that disappears
//! and comes back; injected session and device faults).
//!
//! **Token.** `scripts/test.sh` creates a throwaway token under a temporary
//! `SOFTHSM2_CONF` and exports `KMSD_TEST_PKCS11_MODULE`,
//! `KMSD_TEST_TOKEN_LABEL` and `KMSD_TEST_PIN`. Without them, these tests
//! make their own token under `CARGO_TARGET_TMPDIR` with `softhsm2-util`
//! and point `SOFTHSM2_CONF` at it (the module reads it at `C_Initialize`).
//! If no PKCS#11 module is installed (or `KMSD_TEST_PKCS11_MODULE=none`)
//! they print a note and pass, unless `KMSD_REQUIRE_HSM=1` (CI), where they
//! fail.
//!
//! **One module per process.** Every test binary shares one module
//! instance, and a context rebuild (`C_Finalize`) ends every session in the
//! process, so the tests here hold one lock for their whole run and use
//! distinct key labels.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use kmsd::config::Pkcs11Config;
use kmsd::crypto::KeyMaterial;
#[cfg(feature = "fault-injection")]
use kmsd::hsm::InjectedFault;
use kmsd::hsm::{FaultClass, HsmError, SetupError};
use kmsd::root::{FileRoot, Pkcs11Root, RootError, RootOfTrust};
use serde_json::Value;

use crate::support::{write_pkcs11_config, Daemon};
use kms_proto::{ErrorKind, Operation, Origin, Output, ReEncrypt};

// ---------------------------------------------------------------------------
// The test token

/// Where the module and the token are, for every test of this file (and
/// of import.rs and states.rs, which share the token and its lock).
pub(crate) struct Env {
    pub(crate) module: PathBuf,
    pub(crate) token_label: String,
    pin: String,
    /// A 0600 file holding `pin`.
    pub(crate) pin_file: PathBuf,
    /// SoftHSM's token directory (from SOFTHSM2_CONF), for the fault test.
    tokendir: Option<PathBuf>,
    /// A root key every test may use (created once per run).
    pub(crate) shared_key: String,
}

static LOCK: Mutex<()> = Mutex::new(());
static ENV: OnceLock<Option<Env>> = OnceLock::new();

/// The lock and the token, or `None` (after printing why) when no PKCS#11
/// module is installed and `KMSD_REQUIRE_HSM` is not set.
pub(crate) fn hsm_test(name: &str) -> Option<(MutexGuard<'static, ()>, &'static Env)> {
    let guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let env = ENV.get_or_init(setup).as_ref();
    match env {
        Some(env) => Some((guard, env)),
        None => {
            eprintln!(
                "NOTE: {name}: no PKCS#11 module (SoftHSM2) found; HSM test not run. Install \
                 softhsm2 (scripts/install-deps.sh) or set KMSD_TEST_PKCS11_MODULE; \
                 KMSD_REQUIRE_HSM=1 makes this a failure."
            );
            None
        }
    }
}

fn require_hsm() -> bool {
    matches!(
        std::env::var("KMSD_REQUIRE_HSM").as_deref(),
        Ok("1") | Ok("true")
    )
}

fn find_module() -> Option<PathBuf> {
    if let Some(m) = std::env::var_os("KMSD_TEST_PKCS11_MODULE") {
        // "none" pretends no module is installed (to check the note and
        // KMSD_REQUIRE_HSM on a machine that has one).
        return (m != "none").then(|| PathBuf::from(m));
    }
    [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/local/lib/softhsm/libsofthsm2.so",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

fn setup() -> Option<Env> {
    let Some(module) = find_module() else {
        assert!(
            !require_hsm(),
            "KMSD_REQUIRE_HSM=1 but no PKCS#11 module was found (install softhsm2 with \
             scripts/install-deps.sh, or set KMSD_TEST_PKCS11_MODULE)"
        );
        return None;
    };
    assert!(
        module.exists(),
        "KMSD_TEST_PKCS11_MODULE={} does not exist",
        module.display()
    );
    let pid = std::process::id();
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    remove_stale_dirs(&base);
    let dir = base.join(format!("kmsd-hsm-{pid}"));
    std::fs::create_dir_all(&dir).unwrap();

    let (token_label, pin) = match (
        std::env::var("KMSD_TEST_TOKEN_LABEL"),
        std::env::var("KMSD_TEST_PIN"),
    ) {
        (Ok(label), Ok(pin)) => (label, pin),
        _ => make_token(&dir, pid),
    };
    let pin_file = dir.join("pin");
    std::fs::write(&pin_file, format!("{pin}\n")).unwrap();
    std::fs::set_permissions(&pin_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let tokendir = softhsm_tokendir();

    let shared_key = format!("kmsd-test-root-{pid}");
    let env = Env {
        module,
        token_label,
        pin,
        pin_file,
        tokendir,
        shared_key,
    };
    kmsd::hsm::init_root_key(&config(&env, &env.shared_key))
        .unwrap_or_else(|e| panic!("creating the shared test root key: {e}"));
    Some(env)
}

/// A token of our own: a SOFTHSM2_CONF in `dir` whose tokendir is in `dir`.
fn make_token(dir: &Path, pid: u32) -> (String, String) {
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n\
             slots.removable = false\n",
            tokens.display()
        ),
    )
    .unwrap();
    // The module reads SOFTHSM2_CONF at C_Initialize; this runs once, under
    // the test lock, before any test in this process initialises it.
    std::env::set_var("SOFTHSM2_CONF", &conf);
    let label = format!("kmsd-test-{pid}");
    let pin = format!("test-pin-{pid}");
    let out = Command::new("softhsm2-util")
        .args([
            "--init-token",
            "--free",
            "--label",
            &label,
            "--so-pin",
            "so-pin-0",
        ])
        .args(["--pin", &pin])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .expect("running softhsm2-util (install softhsm2 or run scripts/test.sh)");
    assert!(
        out.status.success(),
        "softhsm2-util --init-token failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (label, pin)
}

/// Removes this file's directories left by earlier runs whose process is
/// gone.
fn remove_stale_dirs(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("kmsd-hsm-") {
            if !Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// `directories.tokendir` of the SoftHSM config in force.
fn softhsm_tokendir() -> Option<PathBuf> {
    let conf = std::env::var_os("SOFTHSM2_CONF")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/softhsm/softhsm2.conf"));
    let text = std::fs::read_to_string(conf).ok()?;
    text.lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == "directories.tokendir")
        .map(|(_, v)| PathBuf::from(v.trim()))
}

/// The config of a root with key `key_label` on the test token (pool of 1,
/// SoftHSM's KWP number, session copy on).
pub(crate) fn config(env: &Env, key_label: &str) -> Pkcs11Config {
    Pkcs11Config {
        module: env.module.clone(),
        token_label: env.token_label.clone(),
        key_label: key_label.to_owned(),
        pin_file: Some(env.pin_file.clone()),
        pin_env: None,
        pool_size: 1,
        kwp_mechanism: 0x210A,
        session_copy: true,
        private_unwrapped: false,
    }
}

/// A label unique to this run and call.
pub(crate) fn label(prefix: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

// ---------------------------------------------------------------------------
// Admin access with cryptoki directly (tests only): importing known keys,
// inspecting attributes, SoftHSM's raw unwrap.

/// A session of our own on the test token. It must not outlive an `Hsm`
/// opened after it (dropping it finalises the module it initialised).
pub(crate) struct Admin {
    ctx: Pkcs11,
    session: Option<Session>,
    owns: bool,
}

impl Admin {
    pub(crate) fn open(env: &Env) -> Admin {
        let ctx = Pkcs11::new(&env.module).unwrap();
        let owns = match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) => true,
            Err(cryptoki::error::Error::Pkcs11(
                cryptoki::error::RvError::CryptokiAlreadyInitialized,
                _,
            )) => false,
            Err(e) => panic!("C_Initialize: {e}"),
        };
        let slot = ctx
            .get_slots_with_token()
            .unwrap()
            .into_iter()
            .find(|s| {
                ctx.get_token_info(*s)
                    .map(|t| t.label().trim_end() == env.token_label)
                    .unwrap_or(false)
            })
            .expect("the test token");
        let session = ctx.open_rw_session(slot).unwrap();
        match session.login(UserType::User, Some(&AuthPin::new(env.pin.clone().into()))) {
            Ok(())
            | Err(cryptoki::error::Error::Pkcs11(
                cryptoki::error::RvError::UserAlreadyLoggedIn,
                _,
            )) => {}
            Err(e) => panic!("C_Login: {e}"),
        }
        Admin {
            ctx,
            session: Some(session),
            owns,
        }
    }

    pub(crate) fn session(&self) -> &Session {
        self.session.as_ref().unwrap()
    }

    /// Imports a known AES key as a token object (tests only: kmsd never
    /// imports root keys).
    fn import_root_key(&self, label: &str, value: &[u8]) -> ObjectHandle {
        self.session()
            .create_object(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Value(value.to_vec()),
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Wrap(true),
                Attribute::Unwrap(true),
                Attribute::Label(label.as_bytes().to_vec()),
            ])
            .unwrap()
    }

    /// Imports a known AES key for GCM with a CKA_ID.
    fn import_gcm_key(&self, label: &str, id: &[u8], value: &[u8]) -> ObjectHandle {
        self.session()
            .create_object(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Value(value.to_vec()),
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::Id(id.to_vec()),
            ])
            .unwrap()
    }

    /// Destroys every token object whose label starts with `prefix`.
    pub(crate) fn destroy_labelled(&self, labels: &[String]) {
        for l in labels {
            for h in self
                .session()
                .find_objects(&[
                    Attribute::Token(true),
                    Attribute::Label(l.as_bytes().to_vec()),
                ])
                .unwrap()
            {
                self.session().destroy_object(h).unwrap();
            }
        }
    }
}

impl Drop for Admin {
    fn drop(&mut self) {
        drop(self.session.take());
        if self.owns {
            let _ = self.ctx.clone().finalize();
        }
    }
}

// ---------------------------------------------------------------------------
// Wycheproof helpers (as in vectors.rs)

fn wycheproof(relative: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/wycheproof")
        .join(relative);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn wycheproof_tests(doc: &Value) -> Vec<(&Value, &Value)> {
    doc["testGroups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["tests"].as_array().unwrap().iter().map(move |t| (g, t)))
        .collect()
}

fn field(test: &Value, name: &str) -> Vec<u8> {
    hex::decode(test[name].as_str().unwrap()).unwrap()
}

fn tc_id(test: &Value) -> u64 {
    test["tcId"].as_u64().unwrap()
}

fn is_valid(test: &Value) -> bool {
    match test["result"].as_str() {
        Some("valid") => true,
        Some("invalid") => false,
        other => panic!("tcId {}: unexpected result {other:?}", tc_id(test)),
    }
}

// ---------------------------------------------------------------------------
// (a) One key format for both roots

#[test]
fn hsm_root_and_file_root_produce_the_same_wrapped_keys() {
    let Some((_lock, env)) = hsm_test("hsm_root_and_file_root_produce_the_same_wrapped_keys")
    else {
        return;
    };
    let root_key: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(37) ^ 0x5c);
    let key_label = label("format");
    {
        let admin = Admin::open(env);
        admin.import_root_key(&key_label, &root_key);
    }
    let file = FileRoot::from_key(KeyMaterial::from_bytes(root_key));
    // Both ways of unwrapping too: into a public and a private session
    // object (`private_unwrapped`).
    for (session_copy, private) in [(true, false), (false, false), (true, true)] {
        let mut cfg = config(env, &key_label);
        cfg.session_copy = session_copy;
        cfg.private_unwrapped = private;
        let hsm = Pkcs11Root::open(&cfg).unwrap();
        assert_eq!(hsm.kind(), "pkcs11");
        // The key check value the keystore binds (wrap of an all-zero key).
        let zero = KeyMaterial::from_bytes([0; 32]);
        assert_eq!(hsm.wrap(&zero).unwrap(), file.wrap(&zero).unwrap());
        for i in 0..32u8 {
            let backing = KeyMaterial::from_bytes(std::array::from_fn(|j| {
                (j as u8).wrapping_mul(i).wrapping_add(i)
            }));
            let by_hsm = hsm.wrap(&backing).unwrap();
            let by_file = file.wrap(&backing).unwrap();
            assert_eq!(by_hsm.len(), 40);
            assert_eq!(
                by_hsm, by_file,
                "byte-identical wrapping (copy={session_copy}, private={private}, {i})"
            );
            assert_eq!(file.unwrap(&by_hsm).unwrap().expose(), backing.expose());
            assert_eq!(hsm.unwrap(&by_file).unwrap().expose(), backing.expose());
        }
        // Random keys too, both directions.
        for _ in 0..16 {
            let backing = KeyMaterial::generate();
            let by_file = file.wrap(&backing).unwrap();
            assert_eq!(hsm.unwrap(&by_file).unwrap().expose(), backing.expose());
            assert_eq!(
                file.unwrap(&hsm.wrap(&backing).unwrap()).unwrap().expose(),
                backing.expose()
            );
        }
        // Secrets stay out of Debug.
        let debug = format!("{hsm:?}");
        assert!(
            debug.contains("<redacted>") && !debug.contains(&env.pin),
            "{debug}"
        );
    }
    Admin::open(env).destroy_labelled(&[key_label]);
}

// ---------------------------------------------------------------------------
// (b) Wycheproof KWP through SoftHSM's unwrap and through Pkcs11Root

/// SoftHSM's own C_UnwrapKey (mechanism 0x210A) on every vector, KEKs of
/// all sizes as session objects; then kmsd's Pkcs11Root on the 256-bit ones.
#[test]
fn wycheproof_kwp_through_softhsm() {
    let Some((_lock, env)) = hsm_test("wycheproof_kwp_through_softhsm") else {
        return;
    };
    let doc = wycheproof("aes_kwp_test.json");
    let tests = wycheproof_tests(&doc);
    assert_eq!(tests.len() as u64, doc["numberOfTests"].as_u64().unwrap());

    // Raw SoftHSM.
    let mut accepted_invalid = Vec::new();
    let mut rejected_valid = Vec::new();
    let (mut valid, mut invalid) = (0, 0);
    let mut keks: BTreeMap<Vec<u8>, String> = BTreeMap::new();
    {
        let admin = Admin::open(env);
        let s = admin.session();
        for (group, test) in &tests {
            let kek = field(test, "key");
            let (msg, ct) = (field(test, "msg"), field(test, "ct"));
            let kek_handle = s
                .create_object(&[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::Value(kek.clone()),
                    Attribute::Token(false),
                    Attribute::Wrap(true),
                    Attribute::Unwrap(true),
                ])
                .unwrap();
            let unwrapped = s.unwrap_key(
                &Mechanism::AesKeyWrapPad,
                kek_handle,
                &ct,
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::GENERIC_SECRET),
                    Attribute::Token(false),
                    Attribute::Sensitive(false),
                    Attribute::Extractable(true),
                ],
            );
            let value = unwrapped.as_ref().ok().map(|h| {
                let attrs = s.get_attributes(*h, &[AttributeType::Value]).unwrap();
                s.destroy_object(*h).unwrap();
                match attrs.as_slice() {
                    [Attribute::Value(v)] => v.clone(),
                    other => panic!("tcId {}: CKA_VALUE not returned: {other:?}", tc_id(test)),
                }
            });
            s.destroy_object(kek_handle).unwrap();
            if is_valid(test) {
                valid += 1;
                match value {
                    Some(v) => assert_eq!(v, msg, "tcId {}: unwrapped value", tc_id(test)),
                    None => rejected_valid.push(tc_id(test)),
                }
            } else {
                invalid += 1;
                if value.is_some() {
                    accepted_invalid.push(tc_id(test));
                }
            }
            if group["keySize"] == 256 {
                let n = keks.len();
                keks.entry(kek)
                    .or_insert_with(|| label(&format!("kwp-kek{n}")));
            }
        }
        // Keep the 256-bit KEKs as token keys for Pkcs11Root below.
        for (kek, l) in &keks {
            admin.import_root_key(l, kek);
        }
    }
    eprintln!(
        "wycheproof kwp via SoftHSM: {valid} valid, {invalid} invalid; SoftHSM accepted invalid \
         tcIds {accepted_invalid:?}, rejected valid tcIds {rejected_valid:?}"
    );
    assert_eq!((valid, invalid), (77, 177));
    assert_eq!(
        rejected_valid,
        Vec::<u64>::new(),
        "SoftHSM unwraps every valid vector"
    );
    assert_eq!(
        accepted_invalid,
        Vec::<u64>::new(),
        "SoftHSM rejects every invalid vector"
    );

    // kmsd's root: only a verified wrapping of exactly 32 bytes is a key.
    assert_eq!(keks.len(), 13);
    let (mut ok, mut refused, mut softhsm_would_accept) = (0, 0, 0);
    for (kek, key_label) in &keks {
        let root = Pkcs11Root::open(&config(env, key_label)).unwrap();
        for (group, test) in &tests {
            if group["keySize"] != 256 || field(test, "key") != *kek {
                continue;
            }
            let (msg, ct) = (field(test, "msg"), field(test, "ct"));
            let what = format!("tcId {}", tc_id(test));
            if is_valid(test) && msg.len() == 32 {
                assert_eq!(root.unwrap(&ct).unwrap().expose(), msg.as_slice(), "{what}");
                // And our wrap gives the vector's bytes.
                let key = KeyMaterial::from_slice(&msg).unwrap();
                assert_eq!(root.wrap(&key).unwrap(), ct, "{what}: wrap");
                ok += 1;
            } else {
                assert!(
                    matches!(root.unwrap(&ct), Err(RootError::Unwrap)),
                    "{what}: Pkcs11Root must refuse it"
                );
                refused += 1;
                if is_valid(test) {
                    // SoftHSM unwraps it (a valid wrapping of another
                    // length); the HSM layer itself refuses the length.
                    softhsm_would_accept += 1;
                    match root.hsm().unwrap_key(&ct) {
                        Err(HsmError::Invalid(m)) => assert!(m.contains("bytes"), "{what}: {m}"),
                        other => panic!("{what}: expected a length refusal, got {other:?}"),
                    }
                }
            }
        }
        assert!(
            root.hsm().is_available(),
            "bad wrapped keys never take the HSM down"
        );
        assert_eq!(root.hsm().stats().rebuilds, 0);
    }
    eprintln!(
        "wycheproof kwp via Pkcs11Root: {ok} unwrapped, {refused} refused ({softhsm_would_accept} \
         valid wrappings of other lengths)"
    );
    assert_eq!((ok, refused), (3, 91));
    assert_eq!(softhsm_would_accept, 22);
    Admin::open(env).destroy_labelled(&keks.into_values().collect::<Vec<_>>());
}

// ---------------------------------------------------------------------------
// (c) Wycheproof AES-GCM through SoftHSM, and the HSM-only key primitives

#[test]
fn wycheproof_aes_gcm_through_softhsm() {
    let Some((_lock, env)) = hsm_test("wycheproof_aes_gcm_through_softhsm") else {
        return;
    };
    let doc = wycheproof("aes_gcm_test.json");
    let tests: Vec<_> = wycheproof_tests(&doc)
        .into_iter()
        .filter(|(g, _)| g["keySize"] == 256 && g["tagSize"] == 128)
        .collect();
    // Import each vector's key as an HSM key (tests only: kmsd generates
    // its HSM keys inside the token).
    let mut labels = Vec::new();
    {
        let admin = Admin::open(env);
        for (_, test) in &tests {
            let l = label("gcm");
            admin.import_gcm_key(&l, l.as_bytes(), &field(test, "key"));
            labels.push(l);
        }
    }
    let root = Pkcs11Root::open(&config(env, &env.shared_key)).unwrap();
    let hsm = root.hsm();
    let (mut valid, mut invalid, mut refused_iv) = (0, 0, 0);
    for ((group, test), l) in tests.iter().zip(&labels) {
        let what = format!("tcId {}", tc_id(test));
        let key = hsm.find_key(l.as_bytes()).unwrap().expect("imported key");
        let (iv, aad, msg) = (field(test, "iv"), field(test, "aad"), field(test, "msg"));
        let mut sealed = field(test, "ct");
        sealed.extend_from_slice(&field(test, "tag"));
        if group["ivSize"] != 96 {
            // Our layer refuses any IV but 12 bytes before the HSM sees it.
            let calls = hsm.stats().calls;
            for r in [
                hsm.gcm_encrypt(&key, &iv, &aad, &msg).map(|_| ()),
                hsm.gcm_decrypt(&key, &iv, &aad, &sealed).map(|_| ()),
            ] {
                match r {
                    Err(HsmError::Invalid(m)) => assert!(m.contains("12 bytes"), "{what}: {m}"),
                    other => panic!("{what}: IV of {} bytes accepted: {other:?}", iv.len()),
                }
            }
            assert_eq!(
                hsm.stats().calls,
                calls,
                "{what}: refused without an HSM call"
            );
            refused_iv += 1;
            continue;
        }
        if is_valid(test) {
            assert_eq!(
                hsm.gcm_encrypt(&key, &iv, &aad, &msg).unwrap(),
                sealed,
                "{what}: seal"
            );
            assert_eq!(
                hsm.gcm_decrypt(&key, &iv, &aad, &sealed)
                    .unwrap()
                    .as_slice(),
                msg.as_slice(),
                "{what}: open"
            );
            valid += 1;
        } else {
            match hsm.gcm_decrypt(&key, &iv, &aad, &sealed) {
                Ok(plaintext) => panic!("{what}: invalid vector gave {} bytes", plaintext.len()),
                Err(e) => assert_eq!(e.class(), FaultClass::Permanent, "{what}: {e}"),
            }
            invalid += 1;
        }
    }
    eprintln!(
        "wycheproof aes_gcm via SoftHSM (256-bit keys): {valid} valid, {invalid} invalid, \
         {refused_iv} refused for their IV length"
    );
    assert_eq!((valid, invalid, refused_iv), (39, 27, 39));
    assert!(hsm.is_available());
    assert_eq!(hsm.stats().rebuilds, 0, "bad tags never take the HSM down");
    drop(root);
    Admin::open(env).destroy_labelled(&labels);
}

#[test]
fn hsm_only_keys_never_leave_the_token() {
    let Some((_lock, env)) = hsm_test("hsm_only_keys_never_leave_the_token") else {
        return;
    };
    let key_label = label("hsm-only");
    let id = key_label.as_bytes().to_vec();
    {
        let root = Pkcs11Root::open(&config(env, &env.shared_key)).unwrap();
        let hsm = root.hsm();
        assert!(hsm.find_key(&id).unwrap().is_none());
        let key = hsm.generate_key(&key_label, &id).unwrap();
        assert_eq!(key.id(), id.as_slice());
        assert!(matches!(
            hsm.generate_key(&key_label, &id),
            Err(HsmError::Invalid(_))
        ));
        assert!(matches!(
            hsm.generate_key("x", b""),
            Err(HsmError::Invalid(_))
        ));

        let found = hsm.find_key(&id).unwrap().expect("found by CKA_ID");
        let iv = [7u8; 12];
        let sealed = hsm
            .gcm_encrypt(&key, &iv, b"aad", b"attack at dawn")
            .unwrap();
        assert_eq!(sealed.len(), 14 + 16);
        assert_eq!(
            hsm.gcm_decrypt(&found, &iv, b"aad", &sealed)
                .unwrap()
                .as_slice(),
            b"attack at dawn"
        );
        // Any change is an error with no plaintext.
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            let r = hsm.gcm_decrypt(&found, &iv, b"aad", &bad);
            assert!(
                matches!(&r, Err(e) if e.class() == FaultClass::Permanent),
                "byte {i}"
            );
        }
        assert!(hsm.gcm_decrypt(&found, &iv, b"aaD", &sealed).is_err());
        assert!(hsm
            .gcm_decrypt(&found, &[8u8; 12], b"aad", &sealed)
            .is_err());
        assert!(matches!(
            hsm.gcm_decrypt(&found, &iv, b"aad", &sealed[..15]),
            Err(HsmError::Invalid(_))
        ));
        for len in [0, 8, 11, 13, 16] {
            assert!(matches!(
                hsm.gcm_encrypt(&key, &vec![0; len], b"", b"x"),
                Err(HsmError::Invalid(_))
            ));
        }
        assert!(hsm.is_available());
        assert_eq!(hsm.stats().rebuilds, 0);
    }
    // What the token says about it.
    {
        let admin = Admin::open(env);
        let s = admin.session();
        let h = s
            .find_objects(&[Attribute::Token(true), Attribute::Id(id.clone())])
            .unwrap();
        assert_eq!(h.len(), 1);
        let attrs = s
            .get_attributes(
                h[0],
                &[
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::NeverExtractable,
                    AttributeType::Token,
                    AttributeType::Encrypt,
                    AttributeType::Decrypt,
                    AttributeType::Wrap,
                    AttributeType::Unwrap,
                    AttributeType::ValueLen,
                ],
            )
            .unwrap();
        let expected = [
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::NeverExtractable(true),
            Attribute::Token(true),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::ValueLen(32.into()),
        ];
        assert_eq!(attrs, expected);
        // The value is refused (get_attributes drops refused attributes).
        assert!(s
            .get_attributes(h[0], &[AttributeType::Value])
            .unwrap()
            .is_empty());
    }
    let root = Pkcs11Root::open(&config(env, &env.shared_key)).unwrap();
    let key = root.hsm().find_key(&id).unwrap().unwrap();
    root.hsm().destroy_key(&key).unwrap();
    assert!(root.hsm().find_key(&id).unwrap().is_none());
}

// ---------------------------------------------------------------------------
// (d) Start-up failures: one line that says what to do

#[test]
fn startup_failures_are_one_clear_line() {
    let Some((_lock, env)) = hsm_test("startup_failures_are_one_clear_line") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let open_err = |cfg: &Pkcs11Config| match Pkcs11Root::open(cfg) {
        Err(HsmError::Setup(e)) => e,
        Err(other) => panic!("expected a setup error, got {other}"),
        Ok(_) => panic!("opened"),
    };

    let mut cfg = config(env, &env.shared_key);
    cfg.token_label = "no-such-token".into();
    let e = open_err(&cfg);
    assert!(matches!(e, SetupError::TokenNotFound { .. }), "{e}");
    assert!(e.to_string().contains("softhsm2-util --init-token"), "{e}");
    assert!(
        e.to_string().contains(&env.token_label),
        "lists the tokens found: {e}"
    );

    let wrong_pin = dir.path().join("wrong-pin");
    std::fs::write(&wrong_pin, "not-the-pin\n").unwrap();
    std::fs::set_permissions(&wrong_pin, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut cfg = config(env, &env.shared_key);
    cfg.pin_file = Some(wrong_pin.clone());
    let e = open_err(&cfg);
    assert!(matches!(e, SetupError::PinRejected { .. }), "{e}");
    assert!(e.to_string().contains("CKR_PIN_INCORRECT"), "{e}");
    assert!(
        !e.to_string().contains("not-the-pin"),
        "no PIN in messages: {e}"
    );

    let e = open_err(&config(env, "no-such-key"));
    assert!(matches!(e, SetupError::RootKeyMissing { .. }), "{e}");
    assert!(
        e.to_string().contains("run `kmsd hsm init --config FILE`"),
        "{e}"
    );

    let open_pin = dir.path().join("open-pin");
    std::fs::write(&open_pin, format!("{}\n", env.pin)).unwrap();
    std::fs::set_permissions(&open_pin, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut cfg = config(env, &env.shared_key);
    cfg.pin_file = Some(open_pin.clone());
    let e = open_err(&cfg);
    assert!(
        matches!(e, SetupError::PinFileInsecure { mode: 0o644, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("chmod 600"), "{e}");

    let mut cfg = config(env, &env.shared_key);
    cfg.module = "/nonexistent/libpkcs11.so".into();
    let e = open_err(&cfg);
    assert!(matches!(e, SetupError::ModuleNotFound { .. }), "{e}");
    assert!(e.to_string().contains("install softhsm2"), "{e}");

    let mut cfg = config(env, &env.shared_key);
    cfg.pin_file = None;
    cfg.pin_env = Some("KMSD_TEST_UNSET_PIN_VARIABLE".into());
    let e = open_err(&cfg);
    assert!(
        e.to_string().contains("KMSD_TEST_UNSET_PIN_VARIABLE"),
        "{e}"
    );

    // The same through the real binary: exit 1 and one `kmsd:` line, for
    // `kmsd hsm check` and for `kmsd serve`.
    let cases: [(&str, &str, &Path, &str); 4] = [
        (
            "no-such-token",
            env.shared_key.as_str(),
            &env.pin_file,
            "softhsm2-util --init-token",
        ),
        (
            env.token_label.as_str(),
            env.shared_key.as_str(),
            &wrong_pin,
            "was rejected",
        ),
        (
            env.token_label.as_str(),
            "no-such-key",
            &env.pin_file,
            "kmsd hsm init --config FILE",
        ),
        (
            env.token_label.as_str(),
            env.shared_key.as_str(),
            &open_pin,
            "chmod 600",
        ),
    ];
    // Its own socket and data directories: serve checks and locks them
    // before opening the token.
    let data = dir.path().join("data");
    let socket = dir.path().join("kmsd.sock");
    for (token, key, pin, hint) in cases {
        let cfg = write_pkcs11_config(dir.path(), &env.module, token, key, pin);
        for args in [
            vec!["hsm", "check", "--config"],
            vec![
                "serve",
                "--socket",
                socket.to_str().unwrap(),
                "--data-dir",
                data.to_str().unwrap(),
                "--config",
            ],
        ] {
            let out = Command::new(env!("CARGO_BIN_EXE_kmsd"))
                .args(&args)
                .arg(&cfg)
                .env("KMSD_LOG", "off")
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{args:?} {hint}: {stderr}");
            let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("kmsd:")).collect();
            assert_eq!(lines.len(), 1, "{args:?}: one line: {stderr}");
            assert!(lines[0].contains(hint), "{args:?}: {stderr}");
            assert_eq!(
                stderr.trim_end().lines().count(),
                1,
                "{args:?}: only that line: {stderr}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// (e) A real daemon on the HSM root

#[test]
fn daemon_on_the_hsm_root_serves_and_survives_a_restart() {
    let Some((_lock, env)) = hsm_test("daemon_on_the_hsm_root_serves_and_survives_a_restart")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let key_label = label("daemon-root");
    let cfg = write_pkcs11_config(
        dir.path(),
        &env.module,
        &env.token_label,
        &key_label,
        &env.pin_file,
    );
    let kmsd = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_kmsd"))
            .args(args)
            .arg(&cfg)
            .env("KMSD_LOG", "warn")
            .output()
            .unwrap()
    };

    let out = kmsd(&["hsm", "init", "--config"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        stdout.contains(&key_label) && stdout.contains("never extractable"),
        "{stdout}"
    );

    let out = kmsd(&["hsm", "init", "--config"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));

    let out = kmsd(&["hsm", "check", "--config"]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        env.module.display().to_string(),
        format!("{:?}", env.token_label),
        format!("{key_label:?}"),
        "CKA_SENSITIVE=true".into(),
        "CKA_EXTRACTABLE=false".into(),
        "mechanism: 0x210a".into(),
        "ok".into(),
    ] {
        assert!(
            stdout.contains(&expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    assert!(!stdout.contains(&env.pin), "no PIN in the output");

    let cfg_arg = cfg.to_str().unwrap();
    let mut d = Daemon::start(&["--config", cfg_arg]);
    let (key, data_key, blob) = {
        let mut c = d.client();
        let key = c.create_key("on the hsm").unwrap().key_id;
        let dk = c.generate_data_key(&key, 32, &[("app", "hsm")]).unwrap();
        let pt = c
            .decrypt(&dk.ciphertext_blob, None, &[("app", "hsm")])
            .unwrap()
            .plaintext;
        assert_eq!(pt.expose(), dk.plaintext.expose());
        (key, dk.plaintext.expose().to_vec(), dk.ciphertext_blob)
    };
    d.restart();
    {
        let mut c = d.client();
        let pt = c.decrypt(&blob, None, &[("app", "hsm")]).unwrap().plaintext;
        assert_eq!(pt.expose(), data_key.as_slice(), "decrypts after a restart");
        assert_eq!(c.describe_key(&key).unwrap().key_id, key);
    }
    d.stop();
    assert!(!d.log().contains(&env.pin), "the PIN never reaches the log");

    // The store is bound to this root: the file root is refused on it.
    let out = Command::new(env!("CARGO_BIN_EXE_kmsd"))
        .args(["serve", "--socket"])
        .arg(dir.path().join("other.sock"))
        .arg("--data-dir")
        .arg(&d.data_dir)
        .env("KMSD_LOG", "off")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pkcs11"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Admin::open(env).destroy_labelled(&[key_label]);
}

// ---------------------------------------------------------------------------
// (f) Faults

/// The token's directory under SoftHSM's tokendir (the one whose
/// token.object names our label).
fn token_directory(env: &Env) -> Option<PathBuf> {
    let tokendir = env.tokendir.as_ref()?;
    std::fs::read_dir(tokendir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            std::fs::read(p.join("token.object"))
                .map(|b| {
                    b.windows(env.token_label.len())
                        .any(|w| w == env.token_label.as_bytes())
                })
                .unwrap_or(false)
        })
}

/// Restores a moved token directory even if the test fails.
struct MovedAway {
    from: PathBuf,
    to: PathBuf,
}

impl MovedAway {
    fn restore(&mut self) {
        if self.to.exists() {
            std::fs::rename(&self.to, &self.from).unwrap();
        }
    }
}

impl Drop for MovedAway {
    fn drop(&mut self) {
        self.restore();
    }
}

#[test]
fn token_that_disappears_fails_fast_then_recovers_by_itself() {
    let Some((_lock, env)) = hsm_test("token_that_disappears_fails_fast_then_recovers_by_itself")
    else {
        return;
    };
    let token_dir = token_directory(env).unwrap_or_else(|| {
        panic!(
            "cannot find the SoftHSM token directory (SOFTHSM2_CONF tokendir {:?})",
            env.tokendir
        )
    });
    for session_copy in [false, true] {
        let mut cfg = config(env, &env.shared_key);
        cfg.session_copy = session_copy;
        let root = Pkcs11Root::open(&cfg).unwrap();
        let hsm = root.hsm();
        let backing = KeyMaterial::generate();
        let wrapped = root.wrap(&backing).unwrap();
        let key_label = label("moved-token-key");
        let key = hsm.generate_key(&key_label, key_label.as_bytes()).unwrap();
        let sealed = hsm.gcm_encrypt(&key, &[3; 12], b"", b"x").unwrap();
        // A key not used yet: its first use copies the token object into the
        // session, which needs the token's files.
        let fresh_label = format!("{key_label}-fresh");
        let fresh = hsm
            .generate_key(&fresh_label, fresh_label.as_bytes())
            .unwrap();

        // Root can move it: chmod would not stop us.
        let mut moved = MovedAway {
            // Out of the tokendir: SoftHSM would find it in any subdirectory.
            to: token_dir
                .parent()
                .and_then(Path::parent)
                .expect("tokendir has a parent")
                .join(format!("kmsd-token-moved-away-{}", std::process::id())),
            from: token_dir.clone(),
        };
        std::fs::rename(&moved.from, &moved.to).unwrap();

        // Calls fail as Unavailable until the token is back. With the
        // session copy, the root key and the HSM-only keys already used live
        // in the session's memory and SoftHSM keeps using them; a token
        // object (a key not copied yet) fails at once, and takes the whole
        // HSM down.
        let unwrapped = root.unwrap(&wrapped);
        if session_copy {
            assert_eq!(
                unwrapped.unwrap().expose(),
                backing.expose(),
                "in-memory copy"
            );
            assert_eq!(
                hsm.gcm_decrypt(&key, &[3; 12], b"", &sealed)
                    .unwrap()
                    .as_slice(),
                b"x",
                "session copy of an HSM-only key"
            );
            let failed = hsm.gcm_encrypt(&fresh, &[3; 12], b"", b"x").unwrap_err();
            assert!(failed.is_transient(), "{failed}");
        } else {
            assert!(
                matches!(unwrapped, Err(RootError::Unavailable(_))),
                "{unwrapped:?}"
            );
        }
        assert!(!hsm.is_available(), "copy={session_copy}: down");

        // While down: fast failures that do not reach the module.
        let before = hsm.stats();
        for _ in 0..20 {
            assert!(matches!(
                root.unwrap(&wrapped),
                Err(RootError::Unavailable(_))
            ));
        }
        let after = hsm.stats();
        assert_eq!(after.calls, before.calls, "no PKCS#11 call while down");
        assert!(
            after.fast_failures >= before.fast_failures + 15,
            "{before:?} {after:?}"
        );

        // Let a few backoff periods pass with the token still gone.
        std::thread::sleep(Duration::from_millis(300));
        let _ = root.unwrap(&wrapped);
        assert!(!hsm.is_available());
        assert!(hsm.stats().failed_rebuilds >= 1);

        moved.restore();
        let deadline = Instant::now() + Duration::from_secs(15);
        let unwrapped = loop {
            match root.unwrap(&wrapped) {
                Ok(k) => break k,
                Err(RootError::Unavailable(_)) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!("copy={session_copy}: no recovery: {e}"),
            }
        };
        assert_eq!(unwrapped.expose(), backing.expose());
        assert!(hsm.is_available());
        assert!(hsm.stats().rebuilds >= 1);
        assert_eq!(root.wrap(&backing).unwrap(), wrapped);
        assert_eq!(
            hsm.gcm_decrypt(&key, &[3; 12], b"", &sealed)
                .unwrap()
                .as_slice(),
            b"x"
        );
        hsm.destroy_key(&key).unwrap();
        hsm.destroy_key(&fresh).unwrap();
    }
}

// Injects faults: needs the hook (scripts/test.sh turns every feature on).
#[cfg(feature = "fault-injection")]
#[test]
fn lost_sessions_are_reopened_and_the_call_retried() {
    let Some((_lock, env)) = hsm_test("lost_sessions_are_reopened_and_the_call_retried") else {
        return;
    };
    let root = Pkcs11Root::open(&config(env, &env.shared_key)).unwrap();
    let hsm = root.hsm();
    let backing = KeyMaterial::generate();
    let wrapped = root.wrap(&backing).unwrap();
    let base = hsm.stats();

    // Genuine SoftHSM answers: the session closed underneath, the session
    // copy of the root key destroyed, then synthetic lost-session codes.
    let faults = [
        InjectedFault::CloseSession,
        InjectedFault::DestroyRootCopy,
        InjectedFault::ReturnCode(cryptoki_sys::CKR_SESSION_HANDLE_INVALID),
        InjectedFault::ReturnCode(cryptoki_sys::CKR_SESSION_CLOSED),
        InjectedFault::ReturnCode(cryptoki_sys::CKR_USER_NOT_LOGGED_IN),
        InjectedFault::ReturnCode(cryptoki_sys::CKR_OBJECT_HANDLE_INVALID),
    ];
    for (i, fault) in faults.iter().enumerate() {
        hsm.inject_fault(*fault);
        if i % 2 == 0 {
            assert_eq!(
                root.unwrap(&wrapped).unwrap().expose(),
                backing.expose(),
                "{fault:?}"
            );
        } else {
            assert_eq!(root.wrap(&backing).unwrap(), wrapped, "{fault:?}");
        }
        let s = hsm.stats();
        assert_eq!(
            s.session_recoveries,
            base.session_recoveries + i as u64 + 1,
            "{fault:?}"
        );
        assert_eq!(
            s.sessions_opened,
            base.sessions_opened + i as u64 + 1,
            "{fault:?}"
        );
        assert_eq!(s.rebuilds, 0, "{fault:?}: no rebuild for a lost session");
        assert!(hsm.is_available());
    }

    // Lost twice in a row: one retry only, then a transient error; the next
    // call works.
    hsm.inject_fault(InjectedFault::CloseSession);
    hsm.inject_fault(InjectedFault::ReturnCode(
        cryptoki_sys::CKR_SESSION_HANDLE_INVALID,
    ));
    assert!(matches!(
        root.unwrap(&wrapped),
        Err(RootError::Unavailable(_))
    ));
    assert_eq!(root.unwrap(&wrapped).unwrap().expose(), backing.expose());

    // Retryable codes are returned as Unavailable without recovery.
    let s = hsm.stats();
    hsm.inject_fault(InjectedFault::ReturnCode(cryptoki_sys::CKR_DEVICE_MEMORY));
    assert!(matches!(
        root.unwrap(&wrapped),
        Err(RootError::Unavailable(_))
    ));
    hsm.inject_fault(InjectedFault::ReturnCode(cryptoki_sys::CKR_SESSION_COUNT));
    assert!(matches!(
        root.wrap(&backing),
        Err(RootError::Unavailable(_))
    ));
    assert_eq!(hsm.stats().session_recoveries, s.session_recoveries);
    assert_eq!(hsm.stats().rebuilds, 0);

    // Permanent codes are the caller's problem.
    hsm.inject_fault(InjectedFault::ReturnCode(
        cryptoki_sys::CKR_WRAPPED_KEY_INVALID,
    ));
    assert!(matches!(root.unwrap(&wrapped), Err(RootError::Unwrap)));

    // A corrupt wrapped key: SoftHSM says CKR_GENERAL_ERROR, which the
    // layer checks against the token and reports as the input's fault.
    let mut corrupt = wrapped.clone();
    corrupt[20] ^= 0x80;
    assert!(matches!(root.unwrap(&corrupt), Err(RootError::Unwrap)));
    assert!(
        hsm.is_available(),
        "a corrupt blob does not take the HSM down"
    );
    assert_eq!(hsm.stats().rebuilds, 0);

    // HSM-only keys survive a lost session too (their handles are re-found).
    let key_label = label("lost-session-key");
    let key = hsm.generate_key(&key_label, key_label.as_bytes()).unwrap();
    let sealed = hsm.gcm_encrypt(&key, &[1; 12], b"", b"data").unwrap();
    hsm.inject_fault(InjectedFault::CloseSession);
    assert_eq!(
        hsm.gcm_decrypt(&key, &[1; 12], b"", &sealed)
            .unwrap()
            .as_slice(),
        b"data"
    );
    hsm.destroy_key(&key).unwrap();
}

// Injects faults: needs the hook (scripts/test.sh turns every feature on).
#[cfg(feature = "fault-injection")]
#[test]
fn device_failures_rebuild_the_context_with_backoff() {
    let Some((_lock, env)) = hsm_test("device_failures_rebuild_the_context_with_backoff") else {
        return;
    };
    let mut cfg = config(env, &env.shared_key);
    cfg.pool_size = 3;
    let root = Pkcs11Root::open(&cfg).unwrap();
    let hsm = root.hsm();
    let backing = KeyMaterial::generate();
    let wrapped = root.wrap(&backing).unwrap();
    let key_label = label("rebuild-key");
    let key = hsm.generate_key(&key_label, key_label.as_bytes()).unwrap();
    let sealed = hsm.gcm_encrypt(&key, &[2; 12], b"", b"data").unwrap();

    // A real C_Finalize underneath (CKR_CRYPTOKI_NOT_INITIALIZED), then
    // synthetic device-fatal codes: each rebuilds at once and the call
    // succeeds.
    let faults = [
        InjectedFault::Finalize,
        InjectedFault::ReturnCode(cryptoki_sys::CKR_DEVICE_ERROR),
        InjectedFault::ReturnCode(cryptoki_sys::CKR_DEVICE_REMOVED),
        InjectedFault::ReturnCode(cryptoki_sys::CKR_TOKEN_NOT_PRESENT),
        InjectedFault::ReturnCode(cryptoki_sys::CKR_GENERAL_ERROR),
    ];
    for (i, fault) in faults.iter().enumerate() {
        hsm.inject_fault(*fault);
        assert_eq!(
            root.unwrap(&wrapped).unwrap().expose(),
            backing.expose(),
            "{fault:?}"
        );
        assert_eq!(hsm.stats().rebuilds, i as u64 + 1, "{fault:?}");
        assert!(hsm.is_available());
        // The HSM-only key is re-found in the new context.
        assert_eq!(
            hsm.gcm_decrypt(&key, &[2; 12], b"", &sealed)
                .unwrap()
                .as_slice(),
            b"data"
        );
    }

    // Fatal again on the retry after the rebuild: down, with backoff.
    hsm.inject_fault(InjectedFault::ReturnCode(cryptoki_sys::CKR_DEVICE_ERROR));
    hsm.inject_fault(InjectedFault::ReturnCode(cryptoki_sys::CKR_DEVICE_ERROR));
    assert!(matches!(
        root.unwrap(&wrapped),
        Err(RootError::Unavailable(_))
    ));
    assert!(!hsm.is_available());
    let before = hsm.stats();
    assert!(matches!(
        root.wrap(&backing),
        Err(RootError::Unavailable(_))
    ));
    assert_eq!(hsm.stats().calls, before.calls, "fail fast while down");
    assert_eq!(hsm.stats().fast_failures, before.fast_failures + 1);
    std::thread::sleep(kmsd::hsm::BACKOFF_START + Duration::from_millis(20));
    assert_eq!(root.unwrap(&wrapped).unwrap().expose(), backing.expose());
    assert!(hsm.is_available(), "recovered after the backoff");

    // Concurrent callers while sessions are lost and the context rebuilt.
    std::thread::scope(|s| {
        for t in 0..3 {
            let (root, wrapped, backing) = (&root, &wrapped, &backing);
            s.spawn(move || {
                for i in 0..40 {
                    if t == 0 && i % 10 == 5 {
                        root.hsm().inject_fault(if i == 25 {
                            InjectedFault::Finalize
                        } else {
                            InjectedFault::CloseSession
                        });
                    }
                    match root.unwrap(wrapped) {
                        Ok(k) => assert_eq!(k.expose(), backing.expose()),
                        // A caller racing a rebuild may be told to retry.
                        Err(RootError::Unavailable(_)) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
            });
        }
    });
    std::thread::sleep(kmsd::hsm::BACKOFF_START * 2);
    assert_eq!(root.unwrap(&wrapped).unwrap().expose(), backing.expose());
    hsm.destroy_key(&key).unwrap();
}

/// Runs `f` on a thread marked as an I/O thread; returns the panic message
/// if it panicked.
fn on_io_thread(f: impl FnOnce() + Send) -> Option<String> {
    std::thread::scope(|s| {
        s.spawn(|| {
            kmsd::thread_role::enter_io();
            f();
        })
        .join()
    })
    .err()
    .map(|payload| match payload.downcast::<String>() {
        Ok(message) => *message,
        Err(payload) => payload
            .downcast::<&str>()
            .map(|m| (*m).to_owned())
            .unwrap_or_default(),
    })
}

/// The thread rule (ARCHITECTURE.md): a PKCS#11 call blocks, so it never
/// runs on an I/O thread. Debug builds assert it at every way into the
/// module (a pool call, opening the HSM, `kmsd hsm init`), before the
/// module is reached; the HSM keeps serving other threads.
#[test]
fn a_pkcs11_call_on_an_io_thread_panics_in_debug_builds() {
    let Some((_lock, env)) = hsm_test("a_pkcs11_call_on_an_io_thread_panics_in_debug_builds")
    else {
        return;
    };
    let cfg = config(env, &env.shared_key);
    let root = Pkcs11Root::open(&cfg).unwrap();
    let backing = KeyMaterial::generate();
    let wrapped = root.wrap(&backing).unwrap();
    let before = root.hsm().stats();
    let broken = |panic: Option<String>, what: &str| {
        if cfg!(debug_assertions) {
            let message = panic.unwrap_or_else(|| panic!("{what} on an I/O thread did not panic"));
            assert!(
                message.contains("thread rule broken: a PKCS#11 call on an I/O thread"),
                "{what}: {message}"
            );
        } else {
            assert_eq!(panic, None, "{what}: release builds do not check");
        }
    };

    broken(
        on_io_thread(|| {
            let _ = root.unwrap(&wrapped);
        }),
        "a pool call",
    );
    if cfg!(debug_assertions) {
        assert_eq!(
            root.hsm().stats().calls,
            before.calls,
            "the module was not reached"
        );
    }
    broken(
        on_io_thread(|| {
            let _ = Pkcs11Root::open(&cfg);
        }),
        "opening the HSM",
    );
    // The shared root key exists, so in a release build this only fails.
    broken(
        on_io_thread(|| {
            let _ = kmsd::hsm::init_root_key(&cfg);
        }),
        "kmsd hsm init",
    );

    // Other threads are unaffected.
    assert_eq!(root.unwrap(&wrapped).unwrap().expose(), backing.expose());
    assert!(root.hsm().is_available());
}

/// The HSM-only key primitives as the service sees them (`HsmOnlyKeys`).
#[test]
fn pkcs11_root_is_a_key_vault() {
    let Some((_lock, env)) = hsm_test("pkcs11_root_is_a_key_vault") else {
        return;
    };
    let root = Pkcs11Root::open(&config(env, &env.shared_key)).unwrap();
    let vault = root.hsm_only_keys().expect("the PKCS#11 root has a vault");
    let mut id = [0u8; 20];
    id[..16].copy_from_slice(&(std::process::id() as u128).to_be_bytes());
    id[19] = 1;
    vault.generate(&id).unwrap();
    assert!(
        matches!(vault.generate(&id), Err(RootError::Invalid(_))),
        "duplicate id"
    );
    let sealed = vault.seal(&id, &[5; 12], b"hdr", b"payload").unwrap();
    assert_eq!(sealed.len(), 7 + 16);
    let opened = vault.open(&id, &[5; 12], b"hdr", &sealed).unwrap().unwrap();
    assert_eq!(opened.as_slice(), b"payload");
    let mut bad = sealed.clone();
    bad[3] ^= 1;
    assert!(vault.open(&id, &[5; 12], b"hdr", &bad).unwrap().is_none());
    assert!(vault
        .open(&id, &[5; 12], b"HDR", &sealed)
        .unwrap()
        .is_none());
    assert!(vault
        .open(&id, &[5; 12], b"hdr", &sealed[..10])
        .unwrap()
        .is_none());
    let mut other = id;
    other[19] = 2;
    assert!(matches!(
        vault.seal(&other, &[5; 12], b"", b"x"),
        Err(RootError::Invalid(_))
    ));
    // The service's other root has none.
    assert!(FileRoot::from_key(KeyMaterial::generate())
        .hsm_only_keys()
        .is_none());
    let key = root.hsm().find_key(&id).unwrap().unwrap();
    root.hsm().destroy_key(&key).unwrap();
}

// ---------------------------------------------------------------------------
// Moving to the HSM, and HSM-only keys, through the real daemon

#[test]
fn file_root_data_moves_to_the_hsm_and_hsm_only_keys_work_end_to_end() {
    let Some((_lock, env)) =
        hsm_test("file_root_data_moves_to_the_hsm_and_hsm_only_keys_work_end_to_end")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let key_label = label("migrated-root");
    let cfg = write_pkcs11_config(
        dir.path(),
        &env.module,
        &env.token_label,
        &key_label,
        &env.pin_file,
    );
    let kmsd = |args: &[&std::ffi::OsStr]| {
        Command::new(env!("CARGO_BIN_EXE_kmsd"))
            .args(args)
            .env("KMSD_LOG", "warn")
            .output()
            .unwrap()
    };
    let out = kmsd(&[
        "hsm".as_ref(),
        "init".as_ref(),
        "--config".as_ref(),
        cfg.as_os_str(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A daemon on the file root, with keys and ciphertexts.
    let mut d = Daemon::start(&[]);
    let blobs: Vec<(String, Vec<u8>)> = {
        let mut c = d.client();
        // The file root has no vault: HSM-only keys are refused clearly.
        let e = c
            .create_key_with_origin("no vault", Origin::Hsm)
            .unwrap_err();
        assert_eq!(e.kind(), Some(ErrorKind::UnsupportedOperation));
        (0..3)
            .map(|i| {
                let key = c.create_key(&format!("moving {i}")).unwrap().key_id;
                let blob = c
                    .encrypt(&key, key.as_bytes(), &[("i", "x")])
                    .unwrap()
                    .ciphertext_blob;
                (key, blob)
            })
            .collect()
    };
    d.stop();
    let out = kmsd(&[
        "migrate-root".as_ref(),
        "--data-dir".as_ref(),
        d.data_dir.as_os_str(),
        "--config".as_ref(),
        cfg.as_os_str(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("moved 3 backing keys"), "{stdout}");
    // Again: the store is no longer under the file root, nothing changes.
    let out = kmsd(&[
        "migrate-root".as_ref(),
        "--data-dir".as_ref(),
        d.data_dir.as_os_str(),
        "--config".as_ref(),
        cfg.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(1));

    // The same data directory on the HSM root: every old ciphertext opens.
    d.restart_with(&["--config", cfg.to_str().unwrap()]);
    let mut c = d.client();
    for (key, blob) in &blobs {
        let pt = c.decrypt(blob, None, &[("i", "x")]).unwrap().plaintext;
        assert_eq!(pt.expose(), key.as_bytes());
    }

    // HSM-only keys: generated in the token, every operation an HSM call,
    // blob format 2; they survive a restart.
    let hsm_key = c
        .create_key_with_origin("in the token", Origin::Hsm)
        .unwrap();
    assert_eq!(hsm_key.origin, Origin::Hsm);
    let dk = c
        .generate_data_key(&hsm_key.key_id, 32, &[("app", "vault")])
        .unwrap();
    assert_eq!(dk.ciphertext_blob[0], 2, "format 2 blob");
    let sealed = c
        .encrypt(&hsm_key.key_id, b"hsm only", &[("app", "vault")])
        .unwrap()
        .ciphertext_blob;
    d.restart();
    let mut c = d.client();
    assert_eq!(
        c.decrypt(&dk.ciphertext_blob, None, &[("app", "vault")])
            .unwrap()
            .plaintext
            .expose(),
        dk.plaintext.expose()
    );
    assert_eq!(
        c.decrypt(&sealed, None, &[("app", "vault")])
            .unwrap()
            .plaintext
            .expose(),
        b"hsm only"
    );
    let e = c.decrypt(&sealed, None, &[("app", "other")]).unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::InvalidCiphertext));
    let mut forged = sealed.clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    assert_eq!(
        c.decrypt(&forged, None, &[("app", "vault")])
            .unwrap_err()
            .kind(),
        Some(ErrorKind::InvalidCiphertext)
    );
    // ReEncrypt from an HSM-only key to a migrated one and back.
    let re = c
        .call(Operation::ReEncrypt(ReEncrypt {
            ciphertext_blob: &sealed,
            source_key_id: None,
            source_context: vec![("app", "vault")],
            destination_key_id: &blobs[0].0,
            destination_context: vec![],
            ..Default::default()
        }))
        .unwrap();
    let Output::ReEncrypt(re) = re else { panic!() };
    assert_eq!(re.ciphertext_blob[0], 1);
    assert_eq!(
        c.decrypt(&re.ciphertext_blob, None, &[])
            .unwrap()
            .plaintext
            .expose(),
        b"hsm only"
    );
    d.stop();
    // The token keeps the HSM-only key (label kmsd-key-<key id><version>);
    // this test's token objects go away with it.
    let id = kmsd::service::Arns::default()
        .parse_key_id(&hsm_key.key_id)
        .unwrap();
    let vault_label: String = kmsd::service::backing::object_id(&id, 1)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Admin::open(env).destroy_labelled(&[key_label, format!("kmsd-key-{vault_label}")]);
}

// ---------------------------------------------------------------------------
// HSM-only keys interrupted by a crash; the PIN from the environment

/// Set (to anything) in the child process of
/// `a_crash_between_generating_an_hsm_key_and_storing_it_leaves_no_orphan`.
const CRASH_CHILD: &str = "KMSD_TEST_CRASH_CHILD";
/// Set (to the PIN variable's name) in the child process of
/// `pin_env_is_removed_from_the_environment_once_read`.
const PIN_CHILD: &str = "KMSD_TEST_PIN_CHILD";

/// Runs one test of this binary alone in a child process, with `vars` and
/// the token's whereabouts (`KMSD_TEST_CHILD_*`) in its environment.
fn run_child(env: &Env, test: &str, vars: &[(&str, &std::ffi::OsStr)]) -> std::process::Output {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", test, "--test-threads=1", "--nocapture"])
        .env("KMSD_TEST_CHILD_MODULE", &env.module)
        .env("KMSD_TEST_CHILD_TOKEN", &env.token_label)
        .env("KMSD_TEST_CHILD_PIN_FILE", &env.pin_file)
        .env("KMSD_LOG", "off");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// The root config a child process builds from `KMSD_TEST_CHILD_*`.
fn child_config(key_label: &str) -> Pkcs11Config {
    let var = |n: &str| std::env::var_os(n).unwrap_or_else(|| panic!("{n} is not set"));
    Pkcs11Config {
        module: var("KMSD_TEST_CHILD_MODULE").into(),
        token_label: var("KMSD_TEST_CHILD_TOKEN").into_string().unwrap(),
        key_label: key_label.to_owned(),
        pin_file: Some(var("KMSD_TEST_CHILD_PIN_FILE").into()),
        pin_env: None,
        pool_size: 1,
        kwp_mechanism: 0x210A,
        session_copy: true,
        private_unwrapped: false,
    }
}

/// The PKCS#11 root whose vault dies (abort: no unwinding, no destructors,
/// as a kill or a power cut) right after generating a token key, before
/// the service can store the key.
struct DiesAfterGenerating(Pkcs11Root);

impl RootOfTrust for DiesAfterGenerating {
    fn kind(&self) -> &'static str {
        self.0.kind()
    }
    fn wrap(&self, key: &KeyMaterial) -> Result<Vec<u8>, RootError> {
        self.0.wrap(key)
    }
    fn unwrap(&self, wrapped: &[u8]) -> Result<KeyMaterial, RootError> {
        self.0.unwrap(wrapped)
    }
    fn hsm_only_keys(&self) -> Option<&dyn kmsd::root::HsmOnlyKeys> {
        Some(self)
    }
}

impl kmsd::root::HsmOnlyKeys for DiesAfterGenerating {
    fn generate(&self, id: &[u8; 20]) -> Result<(), RootError> {
        self.0.hsm_only_keys().unwrap().generate(id)?;
        use std::io::Write as _;
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let mut out = std::io::stdout().lock();
        writeln!(out, "generated {hex}").unwrap();
        out.flush().unwrap();
        std::process::abort();
    }
    fn destroy(&self, id: &[u8; 20]) -> Result<bool, RootError> {
        self.0.hsm_only_keys().unwrap().destroy(id)
    }
    fn seal(
        &self,
        id: &[u8; 20],
        iv: &[u8; 12],
        aad: &[u8],
        pt: &[u8],
    ) -> Result<Vec<u8>, RootError> {
        self.0.hsm_only_keys().unwrap().seal(id, iv, aad, pt)
    }
    fn open(
        &self,
        id: &[u8; 20],
        iv: &[u8; 12],
        aad: &[u8],
        ct: &[u8],
    ) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>, RootError> {
        self.0.hsm_only_keys().unwrap().open(id, iv, aad, ct)
    }
}

/// The child: CreateKey with origin HSM in the service over the daemon's
/// data directory, dying between the token key and the store.
fn crash_child() {
    let var = |n: &str| std::env::var_os(n).unwrap_or_else(|| panic!("{n} is not set"));
    let root_label = var("KMSD_TEST_CHILD_ROOT_KEY").into_string().unwrap();
    let data_dir = PathBuf::from(var("KMSD_TEST_CHILD_DATA_DIR"));
    let root = Pkcs11Root::open(&child_config(&root_label)).unwrap();
    let svc = kmsd::service::Service::with_options(
        kmsd::keystore::Keystore::open(&data_dir).unwrap(),
        std::sync::Arc::new(DiesAfterGenerating(root)),
        kmsd::service::ServiceOptions {
            access: Default::default(),
            limits: Default::default(),
            max_keys: 100,
            cache: Default::default(),
            loader_threads: 1,
            queue_capacity: 64,
            clock: std::sync::Arc::new(kmsd::clock::SystemClock),
            lifecycle_limits: Default::default(),
            hsm_invocation_limit: kmsd::service::backing::HSM_INVOCATION_LIMIT,
            arns: Default::default(),
        },
    )
    .unwrap();
    let peer = kmsd::identity::Identity::local(0, 0, 0);
    let r = svc.call(
        &Operation::CreateKey(kms_proto::CreateKey {
            origin: Origin::Hsm,
            ..Default::default()
        }),
        &peer,
    );
    panic!("the child should have died after generating the key: {r:?}");
}

/// Objects in the test token with `CKA_ID` = `id`.
pub(crate) fn token_objects_with_id(env: &Env, id: &[u8]) -> usize {
    let admin = Admin::open(env);
    let n = admin
        .session()
        .find_objects(&[Attribute::Token(true), Attribute::Id(id.to_vec())])
        .unwrap()
        .len();
    n
}

#[test]
fn a_crash_between_generating_an_hsm_key_and_storing_it_leaves_no_orphan() {
    if std::env::var_os(CRASH_CHILD).is_some() {
        return crash_child();
    }
    let Some((_lock, env)) =
        hsm_test("a_crash_between_generating_an_hsm_key_and_storing_it_leaves_no_orphan")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root_label = label("crash-root");
    let cfg = write_pkcs11_config(
        dir.path(),
        &env.module,
        &env.token_label,
        &root_label,
        &env.pin_file,
    );
    kmsd::hsm::init_root_key(&config(env, &root_label)).unwrap();
    // A daemon makes the data directory (bound to this root), then stops.
    let mut d = Daemon::start(&["--config", cfg.to_str().unwrap()]);
    d.stop();
    // A real process generates the token key and dies before storing it.
    let out = run_child(
        env,
        "hsm::a_crash_between_generating_an_hsm_key_and_storing_it_leaves_no_orphan",
        &[
            (CRASH_CHILD, "1".as_ref()),
            ("KMSD_TEST_CHILD_ROOT_KEY", root_label.as_ref()),
            ("KMSD_TEST_CHILD_DATA_DIR", d.data_dir.as_os_str()),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "the child must die: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hex = stdout
        .lines()
        // libtest's "test NAME ... " may precede it on the line.
        .find_map(|l| l.split_once("generated ").map(|(_, hex)| hex))
        .unwrap_or_else(|| panic!("no key generated: {stdout}"))
        .trim();
    let object_id: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    assert_eq!(object_id.len(), 20);
    // The crash left the token key with no stored key naming it.
    assert_eq!(token_objects_with_id(env, &object_id), 1, "the orphan");
    // The daemon's start settles it before serving: destroyed, and no half
    // key is usable.
    d.restart();
    assert_eq!(token_objects_with_id(env, &object_id), 0, "orphan left");
    let key_id = uuid::Uuid::from_slice(&object_id[..16])
        .unwrap()
        .hyphenated()
        .to_string();
    let after = {
        let mut c = d.client();
        let e = c.describe_key(&key_id).unwrap_err();
        assert_eq!(e.kind(), Some(ErrorKind::NotFound), "{e}");
        let e = c.generate_data_key(&key_id, 32, &[]).unwrap_err();
        assert_eq!(e.kind(), Some(ErrorKind::NotFound), "{e}");
        assert!(c.list_keys(100, None).unwrap().keys.is_empty());
        // And HSM-only keys are still created whole.
        let k = c.create_key_with_origin("after", Origin::Hsm).unwrap();
        c.generate_data_key(&k.key_id, 32, &[]).unwrap();
        k.key_id
    };
    d.restart();
    let log = d.log();
    assert_eq!(
        log.matches("settled an HSM-only key").count(),
        1,
        "settled once: {log}"
    );
    d.stop();
    let after = kmsd::service::Arns::default().parse_key_id(&after).unwrap();
    let after_label: String = kmsd::service::backing::object_id(&after, 1)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Admin::open(env).destroy_labelled(&[root_label, format!("kmsd-key-{after_label}")]);
}

#[test]
fn pin_env_is_removed_from_the_environment_once_read() {
    if let Some(var) = std::env::var_os(PIN_CHILD) {
        // The child: the only test in its process, so nothing else reads
        // the environment while the PIN's variable is removed.
        let var = var.into_string().unwrap();
        let mut cfg = child_config(&std::env::var("KMSD_TEST_CHILD_ROOT_KEY").unwrap());
        cfg.pin_file = None;
        cfg.pin_env = Some(var.clone());
        assert!(std::env::var_os(&var).is_some());
        let root = Pkcs11Root::open(&cfg).expect("logged in with the PIN from the environment");
        assert!(std::env::var_os(&var).is_none(), "{var} is still set");
        // The PIN it keeps still works (a rebuild logs in again with it;
        // forcing one needs the fault hook).
        #[cfg(feature = "fault-injection")]
        root.hsm()
            .inject_fault(InjectedFault::ReturnCode(cryptoki_sys::CKR_DEVICE_ERROR));
        let wrapped = root.wrap(&KeyMaterial::from_bytes([3; 32])).unwrap();
        #[cfg(feature = "fault-injection")]
        assert_eq!(root.hsm().stats().rebuilds, 1);
        assert_eq!(root.unwrap(&wrapped).unwrap().expose(), &[3; 32]);
        return;
    }
    let Some((_lock, env)) = hsm_test("pin_env_is_removed_from_the_environment_once_read") else {
        return;
    };
    let var = "KMSD_TEST_PIN_FROM_THE_ENVIRONMENT";
    let out = run_child(
        env,
        "hsm::pin_env_is_removed_from_the_environment_once_read",
        &[
            (PIN_CHILD, var.as_ref()),
            (var, env.pin.as_ref()),
            ("KMSD_TEST_CHILD_ROOT_KEY", env.shared_key.as_ref()),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// Injects faults: needs the hook (scripts/test.sh turns every feature on).
#[cfg(feature = "fault-injection")]
#[test]
fn gcm_encryption_fails_hard_when_the_hsm_used_an_iv_of_its_own() {
    let Some((_lock, env)) =
        hsm_test("gcm_encryption_fails_hard_when_the_hsm_used_an_iv_of_its_own")
    else {
        return;
    };
    let root = Pkcs11Root::open(&config(env, &env.shared_key)).unwrap();
    let hsm = root.hsm();
    let key_label = label("foreign-iv");
    let key = hsm.generate_key(&key_label, key_label.as_bytes()).unwrap();
    // An HSM that writes its own IV into the parameters (FIPS mode): no
    // ciphertext comes back, and the error is permanent (not retried).
    hsm.inject_fault(InjectedFault::ForeignGcmIv);
    let e = hsm.gcm_encrypt(&key, &[4; 12], b"", b"secret").unwrap_err();
    assert!(
        matches!(&e, HsmError::Invalid(m) if m.contains("IV")),
        "{e}"
    );
    assert_eq!(e.class(), FaultClass::Permanent);
    assert!(hsm.is_available());
    // The same through the vault the service uses: KMSInternalException.
    let mut id = [0u8; 20];
    id[..16].copy_from_slice(&(std::process::id() as u128 + 7).to_be_bytes());
    let vault = root.hsm_only_keys().unwrap();
    vault.generate(&id).unwrap();
    hsm.inject_fault(InjectedFault::ForeignGcmIv);
    assert!(matches!(
        vault.seal(&id, &[5; 12], b"", b"x"),
        Err(RootError::Invalid(_))
    ));
    // An HSM that keeps the given IV: encryptions work as before.
    let sealed = hsm.gcm_encrypt(&key, &[4; 12], b"", b"secret").unwrap();
    assert_eq!(
        hsm.gcm_decrypt(&key, &[4; 12], b"", &sealed)
            .unwrap()
            .as_slice(),
        b"secret"
    );
    hsm.destroy_key(&key).unwrap();
    assert!(vault.destroy(&id).unwrap());
    assert!(!vault.destroy(&id).unwrap(), "already gone");
}

// ---------------------------------------------------------------------------
// The PIN file leaves no copy in freed memory

/// An allocator that, on the threads that ask it to, looks for a marker in
/// every block they free or move: a secret left behind in freed memory.
/// (Test code: it reads freed blocks, which no library code may do.)
struct FreedMemoryScanner;

thread_local! {
    static SCAN_FOR: std::cell::Cell<Option<&'static [u8]>> = const { std::cell::Cell::new(None) };
    static FOUND_IN_FREED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

#[global_allocator]
static ALLOCATOR: FreedMemoryScanner = FreedMemoryScanner;

impl FreedMemoryScanner {
    /// Counts `ptr..ptr+size` if it holds the marker this thread looks for.
    ///
    /// # Safety
    ///
    /// `ptr` is a live block of `size` bytes.
    unsafe fn scan(ptr: *mut u8, size: usize) {
        // try_with: thread-local storage may be gone when a thread exits.
        let marker = SCAN_FOR.try_with(|m| m.get()).ok().flatten();
        let Some(marker) = marker else { return };
        // Volatile reads: the block may hold bytes never written (unused
        // capacity); they are compared as they are, never used otherwise.
        let byte = |i: usize| unsafe { std::ptr::read_volatile(ptr.add(i)) };
        let found = (0..size.saturating_sub(marker.len() - 1)).any(|start| {
            marker
                .iter()
                .enumerate()
                .all(|(j, m)| byte(start + j) == *m)
        });
        if found {
            FOUND_IN_FREED.with(|f| f.set(f.get() + 1));
        }
    }
}

// SAFETY: every call goes to the system allocator with the caller's
// arguments; `scan` only reads the block being freed or moved, before it is.
unsafe impl std::alloc::GlobalAlloc for FreedMemoryScanner {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        unsafe { std::alloc::System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        unsafe {
            Self::scan(ptr, layout.size());
            std::alloc::System.dealloc(ptr, layout)
        }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        unsafe {
            Self::scan(ptr, layout.size());
            std::alloc::System.realloc(ptr, layout, new)
        }
    }
}

#[test]
fn reading_a_pin_file_leaves_no_copy_in_freed_memory() {
    const MARKER: &[u8] = b"pin-marker-5b2e9";
    let dir = tempfile::tempdir().unwrap();
    // A PIN of 200 bytes (read), 256 bytes with CRLF (the longest read),
    // and files too long (refused): none may leave a copy behind.
    for (len, ok) in [(200, true), (256, true), (300, false), (5000, false)] {
        let mut contents: Vec<u8> = MARKER.iter().copied().cycle().take(len).collect();
        if len == 256 {
            contents.extend_from_slice(b"\r\n");
        }
        let path = dir.path().join(format!("pin-{len}"));
        std::fs::write(&path, &contents).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        contents.iter_mut().for_each(|b| *b = 0);
        drop(contents);
        SCAN_FOR.set(Some(MARKER));
        FOUND_IN_FREED.set(0);
        let pin = kmsd::hsm::Pin::from_file(&path);
        assert_eq!(pin.is_ok(), ok, "{len} bytes");
        drop(pin);
        SCAN_FOR.set(None);
        assert_eq!(
            FOUND_IN_FREED.get(),
            0,
            "{len} bytes: a copy was freed unzeroized"
        );
    }
}
