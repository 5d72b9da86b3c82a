//! Seeding: keys with fixed ids, made at start from a TOML file
//! (`kmsd serve --seed FILE`; docs/seeding.md has the format and a full
//! example), before the daemon serves.
//!
//! Every seeded key is made through the service the way the API makes
//! one: the key (CreateKey's record and first version, with the file's key
//! id instead of a random one: the only thing the API cannot do), then
//! ImportKeyMaterial of its material, TagResource, CreateAlias,
//! EnableKeyRotation and DisableKey, each run in-process as the
//! operation itself, with its validation, its store transaction and its
//! invalidation. So a seeded key is indistinguishable from one a client
//! made.
//!
//! Loading a file again changes nothing: a key that exists is checked
//! and left alone. What the API cannot change (origin, imported material)
//! must be the file's, or start-up fails with one line naming the key;
//! what the API can change (description, state, tags, aliases, rotation)
//! may have been changed by clients since, and is left as it is. A key is
//! marked in the store while it is being made (`Keystore::begin_seeding`),
//! so that a crash part-way is finished at the next start rather than
//! taken for a finished key.
//!
//! The whole file is parsed and checked before anything is made: a bad
//! file changes nothing.

use crate::crypto::KeyMaterial;
use crate::identity::Identity;
use crate::keystore::KeyRecord;
use crate::service::op::{execute, Site};
use crate::service::{format_key_id, ExecError, Service};
use kms_proto::types::limits::{MAX_ROTATION_PERIOD_IN_DAYS, MIN_ROTATION_PERIOD_IN_DAYS};
use kms_proto::{ErrorKind, KeyState, KmsError, Operation, Origin, Output};
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// A seed file: `[[key]]` tables.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedFile {
    /// The keys, in the order they are made.
    #[serde(rename = "key", default)]
    pub keys: Vec<SeedKey>,
}

/// Where a seeded key's material comes from (AWS's names).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize)]
pub enum SeedOrigin {
    /// kmsd makes the material (a random 256-bit key).
    #[default]
    #[serde(rename = "AWS_KMS")]
    AwsKms,
    /// Imported: from `material_hex_file`, or none yet (PendingImport).
    #[serde(rename = "EXTERNAL")]
    External,
}

/// The state a seeded key is left in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum SeedState {
    /// Usable.
    #[default]
    Enabled,
    /// Disabled (DisableKey after everything else).
    Disabled,
}

/// One `[[key]]` of a seed file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedKey {
    /// The key's id: a UUID (`1234abcd-12ab-34cd-56ef-1234567890ab`).
    pub key_id: String,
    /// Description (default empty).
    #[serde(default)]
    pub description: String,
    /// `AWS_KMS` (default) or `EXTERNAL`.
    #[serde(default)]
    pub origin: SeedOrigin,
    /// `Enabled` (default) or `Disabled`.
    #[serde(default)]
    pub state: SeedState,
    /// Aliases (`alias/...`).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Tags, key = value.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Automatic rotation (AWS_KMS keys only).
    #[serde(default)]
    pub rotation_enabled: bool,
    /// Its period, 90..=2560 days (default 365).
    pub rotation_period_days: Option<u32>,
    /// EXTERNAL keys: a file holding the 256-bit material as 64 hex digits
    /// (a trailing newline allowed), readable by kmsd's user only.
    pub material_hex_file: Option<PathBuf>,
}

/// Why seeding stopped: one line naming the file, the key and the problem.
#[derive(Debug, thiserror::Error)]
#[error("seed file {}: {}{problem}", path.display(), key.as_ref().map(|k| format!("key {k}: ")).unwrap_or_default())]
pub struct SeedError {
    /// The seed file.
    pub path: PathBuf,
    /// The key, when one is to blame.
    pub key: Option<String>,
    /// What is wrong.
    pub problem: String,
}

/// What seeding did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeedReport {
    /// Keys made (or finished after a crash) now.
    pub created: usize,
    /// Keys that were there already (checked, left alone).
    pub existing: usize,
}

/// A checked `[[key]]`.
struct Planned<'a> {
    def: &'a SeedKey,
    id: [u8; 16],
    rotation: Option<u32>,
}

impl SeedFile {
    /// Parses a seed file's text (no file is read: `material_hex_file`s
    /// are read when the key is made).
    pub fn parse(text: &str) -> Result<SeedFile, String> {
        toml::from_str(text).map_err(|e| one_line(&e.to_string()))
    }

    /// Checks what can be checked without the store: ids, duplicates,
    /// fields that do not fit the origin. Returns each key's id.
    fn plan(&self) -> Result<Vec<Planned<'_>>, (Option<String>, String)> {
        let mut ids = HashSet::new();
        let mut aliases = HashSet::new();
        let mut out = Vec::new();
        for def in &self.keys {
            let named = |p: String| (Some(def.key_id.clone()), p);
            let id = uuid::Uuid::try_parse(&def.key_id)
                .map_err(|_| {
                    named("key_id is not a UUID (e.g. 1234abcd-12ab-34cd-56ef-1234567890ab)".into())
                })?
                .into_bytes();
            if !ids.insert(id) {
                return Err(named("defined twice".into()));
            }
            for a in &def.aliases {
                if !aliases.insert(a.as_str()) {
                    return Err(named(format!("alias {a} is given twice")));
                }
            }
            let external = def.origin == SeedOrigin::External;
            if def.material_hex_file.is_some() && !external {
                return Err(named(
                    "material_hex_file is for origin = \"EXTERNAL\" keys only (kmsd makes an \
                     AWS_KMS key's material)"
                        .into(),
                ));
            }
            if external && def.material_hex_file.is_none() && def.state == SeedState::Disabled {
                return Err(named(
                    "an EXTERNAL key without material_hex_file waits for its material \
                     (PendingImport) and cannot be Disabled"
                        .into(),
                ));
            }
            if def.rotation_period_days.is_some() && !def.rotation_enabled {
                return Err(named(
                    "rotation_period_days needs rotation_enabled = true".into(),
                ));
            }
            if def.rotation_enabled && external {
                return Err(named(
                    "automatic rotation is for AWS_KMS keys only (AWS: not for imported \
                     material)"
                        .into(),
                ));
            }
            let rotation = if def.rotation_enabled {
                let days = def.rotation_period_days.unwrap_or(365);
                if !(MIN_ROTATION_PERIOD_IN_DAYS..=MAX_ROTATION_PERIOD_IN_DAYS).contains(&days) {
                    return Err(named(format!(
                        "rotation_period_days {days} is out of range \
                         {MIN_ROTATION_PERIOD_IN_DAYS}..={MAX_ROTATION_PERIOD_IN_DAYS}"
                    )));
                }
                Some(days)
            } else {
                None
            };
            out.push(Planned { def, id, rotation });
        }
        Ok(out)
    }
}

/// `s` on one line.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Reads a material file: a regular file with no permission bits for group
/// or others, 64 hex digits and at most one trailing newline.
fn read_material(path: &Path) -> Result<KeyMaterial, String> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let what = |e: std::io::Error| format!("material_hex_file {}: {e}", path.display());
    let mut file = std::fs::File::open(path).map_err(what)?;
    // The open file's metadata, so that the checks cover the bytes read.
    let meta = file.metadata().map_err(what)?;
    if !meta.is_file() {
        return Err(format!(
            "material_hex_file {} is not a regular file",
            path.display()
        ));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "material_hex_file {} has mode {mode:04o}: key material must be readable by kmsd's \
             user only (chmod 600 it)",
            path.display()
        ));
    }
    // A fixed buffer one byte longer than the longest accepted contents:
    // nothing grows, so no copy is left in freed memory.
    let mut buf = Zeroizing::new([0u8; 67]);
    let mut len = 0;
    loop {
        let n = file.read(&mut buf[len..]).map_err(what)?;
        if n == 0 {
            break;
        }
        len += n;
        if len == buf.len() {
            break;
        }
    }
    let text = &buf[..len];
    let text = text
        .strip_suffix(b"\r\n")
        .or_else(|| text.strip_suffix(b"\n"))
        .unwrap_or(text);
    let bad = || {
        format!(
            "material_hex_file {} must hold 64 hex digits (256 bits), nothing else",
            path.display()
        )
    };
    if text.len() != 64 {
        return Err(bad());
    }
    let mut key = Zeroizing::new([0u8; 32]);
    for (i, pair) in text.chunks(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        match (digit(pair[0]), digit(pair[1])) {
            (Some(h), Some(l)) => key[i] = h << 4 | l,
            _ => return Err(bad()),
        }
    }
    Ok(KeyMaterial::from_bytes(*key))
}

/// Who seeding acts as: the daemon itself.
fn daemon_identity() -> Identity {
    Identity::local(rustix::process::getuid().as_raw(), rustix::process::getgid().as_raw(), rustix::process::getpid().as_raw_nonzero().get())
}

/// Runs `op` in-process as a client's request would run.
fn run(svc: &Service, op: Operation<'_>) -> Result<Output, KmsError> {
    match execute(
        svc,
        &op,
        &daemon_identity(),
        Site::Blocking { prefetched: None },
        &[],
    ) {
        Ok(o) => Ok(o),
        Err(ExecError::Kms(e)) => Err(e),
        Err(ExecError::NotReady) => Err(KmsError::new(
            ErrorKind::KmsInternal,
            "a blocking call was told to wait",
        )),
    }
}

/// Reads and applies the seed file at `path` (see the module docs).
pub fn seed(svc: &Service, path: &Path) -> Result<SeedReport, SeedError> {
    let fail = |key: Option<String>, problem: String| SeedError {
        path: path.to_owned(),
        key,
        problem,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(None, format!("cannot read: {e}")))?;
    let file = SeedFile::parse(&text).map_err(|e| fail(None, e))?;
    let planned = file.plan().map_err(|(k, p)| fail(k, p))?;
    let mut report = SeedReport::default();
    for p in &planned {
        let named = |problem: String| fail(Some(p.def.key_id.clone()), problem);
        let unfinished = svc
            .store()
            .is_seeding(&p.id)
            .map_err(|e| named(format!("reading the store: {e}")))?;
        let existing = match run(
            svc,
            Operation::DescribeKey(kms_proto::DescribeKey {
                key_id: &p.def.key_id,
                ..Default::default()
            }),
        ) {
            Ok(Output::DescribeKey(m)) => Some(m),
            Ok(_) => None,
            Err(e) if e.kind == ErrorKind::NotFound => None,
            Err(e) => return Err(named(format!("DescribeKey: {e}"))),
        };
        match existing {
            Some(m) if !unfinished => {
                check_existing(svc, p, &m).map_err(named)?;
                tracing::info!(key_id = %p.def.key_id, "seed: key exists; checked and left as it is");
                report.existing += 1;
            }
            _ => {
                make(svc, p, existing.is_some()).map_err(named)?;
                tracing::info!(key_id = %p.def.key_id, "seed: key made");
                report.created += 1;
            }
        }
    }
    Ok(report)
}

fn origin_of(def: &SeedKey) -> Origin {
    match def.origin {
        SeedOrigin::AwsKms => Origin::Kmsd,
        SeedOrigin::External => Origin::External,
    }
}

/// A finished key that exists: what the API cannot change must be the
/// file's: its origin, and the material of an imported key (compared by
/// the digest the store keeps of the material last imported, which stays
/// when the material is deleted or expires; the material is not touched).
fn check_existing(svc: &Service, p: &Planned<'_>, m: &kms_proto::KeyMetadata) -> Result<(), String> {
    let want = origin_of(p.def);
    if m.origin != want {
        return Err(format!(
            "exists with origin {:?}, the seed file says {:?}: a key's origin cannot change; \
             give the seed key another key_id, or remove the key from the store",
            m.origin, want
        ));
    }
    if let Some(path) = &p.def.material_hex_file {
        let material = read_material(path)?;
        let stored = svc
            .store()
            .material_digest(&p.id)
            .map_err(|e| format!("reading the store: {e}"))?;
        let given = crate::service::imports::material_digest(&p.id, &material);
        match stored {
            Some(d) if crate::service::imports::same_digest(&d, &given) => {}
            Some(_) => {
                return Err(format!(
                    "exists with other imported material than {}: a key's material cannot \
                     change; give the seed key another key_id, or restore the material file",
                    path.display()
                ))
            }
            None => {
                return Err(format!(
                    "exists without imported material, and the seed file gives {}: import it \
                     through the API (ImportKeyMaterial), or remove material_hex_file",
                    path.display()
                ))
            }
        }
    }
    Ok(())
}

/// Makes (or finishes) a seeded key, step by step, each through the
/// operation that does it for clients.
fn make(svc: &Service, p: &Planned<'_>, exists: bool) -> Result<(), String> {
    let def = p.def;
    let id = &def.key_id;
    let err = |step: &str, e: KmsError| format!("{step}: {} {}", e.kind.name(), e.message);
    // Read before anything is marked: a bad file is found before any
    // change.
    let material = def
        .material_hex_file
        .as_deref()
        .map(read_material)
        .transpose()?;
    svc.store()
        .begin_seeding(&p.id)
        .map_err(|e| format!("marking the key: {e}"))?;
    if !exists {
        create(svc, p)?;
    }
    if let Some(m) = &material {
        import(svc, id, m)?;
    }
    // Tags come with the key (CreateKey's Tags); a key made before a
    // crash gets them again (TagResource sets, never duplicates).
    if exists && !def.tags.is_empty() {
        let tags = def
            .tags
            .iter()
            .map(|(k, v)| kms_proto::Tag { key: k, value: v })
            .collect();
        run(
            svc,
            Operation::TagResource(kms_proto::TagResource { key_id: id, tags }),
        )
        .map_err(|e| err("TagResource", e))?;
    }
    for alias in &def.aliases {
        match run(
            svc,
            Operation::CreateAlias(kms_proto::CreateAlias {
                alias_name: alias,
                target_key_id: id,
            }),
        ) {
            Ok(_) => {}
            // Made before a crash: fine if it names this key.
            Err(e) if e.kind == ErrorKind::AlreadyExists && names_this_key(svc, alias, id)? => {}
            Err(e) => return Err(err(&format!("CreateAlias {alias}"), e)),
        }
    }
    if let Some(days) = p.rotation {
        run(
            svc,
            Operation::EnableKeyRotation(kms_proto::EnableKeyRotation {
                key_id: id,
                rotation_period_in_days: Some(days),
            }),
        )
        .map_err(|e| err("EnableKeyRotation", e))?;
    }
    if def.state == SeedState::Disabled {
        run(
            svc,
            Operation::DisableKey(kms_proto::DisableKey { key_id: id }),
        )
        .map_err(|e| err("DisableKey", e))?;
    }
    svc.store()
        .end_seeding(&p.id)
        .map_err(|e| format!("unmarking the key: {e}"))?;
    Ok(())
}

/// Whether `alias` names key `id` (ListAliases of the key).
fn names_this_key(svc: &Service, alias: &str, id: &str) -> Result<bool, String> {
    match run(
        svc,
        Operation::ListAliases(kms_proto::ListAliases {
            key_id: Some(id),
            limit: 1000,
            marker: None,
        }),
    ) {
        Ok(Output::ListAliases(l)) => Ok(l.aliases.iter().any(|a| a.alias_name == alias)),
        Ok(_) => Ok(false),
        Err(e) => Err(format!("ListAliases: {e}")),
    }
}

/// The key itself, as CreateKey makes it (with its tags, in one
/// transaction), with the file's id.
fn create(svc: &Service, p: &Planned<'_>) -> Result<(), String> {
    let origin = origin_of(p.def);
    let tags: Vec<kms_proto::Tag<'_>> = p
        .def
        .tags
        .iter()
        .map(|(k, v)| kms_proto::Tag { key: k, value: v })
        .collect();
    let request = kms_proto::CreateKey {
        description: &p.def.description,
        origin,
        tags: tags.clone(),
        ..Default::default()
    };
    crate::service::ops::create_key::validate(&request, svc.lifecycle_limits())
        .map_err(|e| format!("{} {}", e.kind.name(), e.message))?;
    let external = origin == Origin::External;
    let record = KeyRecord {
        key_id: p.id,
        created_at: svc.now(),
        description: p.def.description.clone(),
        // As CreateKey: an EXTERNAL key waits for its material, with no
        // version.
        state: if external {
            KeyState::PendingImport
        } else {
            KeyState::Enabled
        },
        origin,
        current_version: if external { 0 } else { 1 },
        ..Default::default()
    };
    let material = (!external).then(KeyMaterial::generate);
    let policy = svc
        .new_key_policy(&daemon_identity(), &p.id, None, false)
        .map_err(|e| format!("{} {}", e.kind.name(), e.message))?;
    svc.store_new_key(record, material.as_ref(), &tags, &policy)
        .map_err(|e| format!("{} {}", e.kind.name(), e.message))?;
    tracing::info!(key_id = %format_key_id(&p.id), "seed: created key");
    Ok(())
}

/// GetParametersForImport, then ImportKeyMaterial of `material` wrapped
/// under the answer's public key (RSAES_OAEP_SHA_256), as a client sends
/// it; the material does not expire.
fn import(svc: &Service, id: &str, material: &KeyMaterial) -> Result<(), String> {
    let err = |step: &str, e: KmsError| format!("{step}: {} {}", e.kind.name(), e.message);
    let params = match run(
        svc,
        Operation::GetParametersForImport(kms_proto::GetParametersForImport {
            key_id: id,
            wrapping_algorithm: kms_proto::WrappingAlgorithm::RsaesOaepSha256,
            wrapping_key_spec: kms_proto::WrappingKeySpec::Rsa2048,
        }),
    ) {
        Ok(Output::GetParametersForImport(p)) => p,
        Ok(_) => return Err("GetParametersForImport: an answer of another operation".into()),
        Err(e) => return Err(err("GetParametersForImport", e)),
    };
    let wrapped = crate::crypto::rsa::encrypt_oaep_sha256(&params.public_key, material.expose())
        .map_err(|e| format!("wrapping the material for import: {e}"))?;
    run(
        svc,
        Operation::ImportKeyMaterial(kms_proto::ImportKeyMaterial {
            key_id: id,
            import_token: &params.import_token,
            encrypted_key_material: &wrapped,
            valid_to: None,
            expiration_model: kms_proto::ExpirationModel::KeyMaterialDoesNotExpire,
        }),
    )
    .map_err(|e| err("ImportKeyMaterial", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first ```toml block of docs/seeding.md.
    fn doc_example() -> &'static str {
        const DOC: &str = include_str!("../docs/seeding.md");
        let start = DOC.find("```toml\n").expect("a toml block") + "```toml\n".len();
        let len = DOC[start..].find("```").unwrap();
        &DOC[start..start + len]
    }

    #[test]
    fn the_documented_example_parses_and_checks() {
        let file = SeedFile::parse(doc_example()).unwrap();
        let planned = file.plan().unwrap();
        assert!(planned.len() >= 3, "the example shows several keys");
        let origins: HashSet<_> = file.keys.iter().map(|k| k.origin).collect();
        assert_eq!(origins.len(), 2, "both origins are shown");
        assert!(file.keys.iter().any(|k| k.state == SeedState::Disabled));
        assert!(file.keys.iter().any(|k| k.rotation_enabled));
        assert!(file.keys.iter().any(|k| k.material_hex_file.is_some()));
        assert!(file.keys.iter().any(|k| !k.tags.is_empty()));
        assert!(file.keys.iter().any(|k| !k.aliases.is_empty()));
    }

    #[test]
    fn bad_definitions_are_refused_naming_the_key() {
        let id = "11111111-2222-4333-8444-555555555555";
        for (text, words) in [
            ("[[key]]\nkey_id = \"nope\"\n", "not a UUID"),
            (
                &format!("[[key]]\nkey_id = \"{id}\"\n[[key]]\nkey_id = \"{id}\"\n"),
                "defined twice",
            ),
            (
                &format!("[[key]]\nkey_id = \"{id}\"\nmaterial_hex_file = \"/m\"\n"),
                "EXTERNAL",
            ),
            (
                &format!("[[key]]\nkey_id = \"{id}\"\nrotation_enabled = true\nrotation_period_days = 30\n"),
                "out of range",
            ),
            (
                &format!("[[key]]\nkey_id = \"{id}\"\nrotation_period_days = 100\n"),
                "needs rotation_enabled",
            ),
            (
                &format!("[[key]]\nkey_id = \"{id}\"\norigin = \"EXTERNAL\"\nrotation_enabled = true\n"),
                "AWS_KMS keys only",
            ),
            (
                &format!("[[key]]\nkey_id = \"{id}\"\norigin = \"EXTERNAL\"\nstate = \"Disabled\"\n"),
                "PendingImport",
            ),
            (
                &format!("[[key]]\nkey_id = \"{id}\"\naliases = [\"alias/a\", \"alias/a\"]\n"),
                "given twice",
            ),
        ] {
            let (key, problem) = SeedFile::parse(text).unwrap().plan().err().unwrap();
            assert!(problem.contains(words), "{text}: {problem}");
            assert!(key.is_some(), "{text}");
        }
        for text in [
            "[[key]]\nkey_id = \"x\"\ncolour = \"red\"\n",
            "[[key]]\nkey_id = \"x\"\norigin = \"AWS_CLOUDHSM\"\n",
            "[[key]]\nkey_id = \"x\"\nstate = \"PendingDeletion\"\n",
        ] {
            let e = SeedFile::parse(text).unwrap_err();
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn material_files_must_be_private_and_exact() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str, mode: u32| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p
        };
        let hex = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
        let ok = read_material(&write("ok", &format!("{hex}\n"), 0o600)).unwrap();
        assert_eq!(ok.expose()[..4], [0x00, 0x11, 0x22, 0x33]);
        assert_eq!(ok.expose()[31], 0xFF);
        let e = read_material(&write("open", hex, 0o644)).err().unwrap();
        assert!(e.contains("0644") && e.contains("chmod 600"), "{e}");
        for bad in [&hex[..62], &format!("{hex}00"), &format!("{}zz", &hex[..62])] {
            let e = read_material(&write("bad", bad, 0o600)).err().unwrap();
            assert!(e.contains("64 hex digits"), "{e}");
        }
        assert!(read_material(dir.path()).is_err(), "a directory");
    }
}
