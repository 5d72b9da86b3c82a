//! The credential store: access key ids, each with the secret read from its
//! file and the kmsd principal (uid, gid) its requests run as.
//!
//! A secret file follows the rules of the HSM's PIN file (src/hsm/pin.rs):
//! a regular file, checked through the open descriptor (so the checks
//! cover the bytes read), with no permission bits for group or others, read
//! into a fixed buffer that is zeroized (nothing grows, so no copy is left
//! in freed memory), one trailing newline removed. Stricter than the PIN
//! file in two ways: the file must be owned by the daemon's effective uid
//! (a file another account owns is a file another account can rewrite),
//! and the secret must be printable ASCII without spaces (what AWS secret
//! keys are, and what every client's configuration takes; a second line or
//! a stray blank is a mistake, reported as one).

use crate::identity::{Identity, PeerDetails};
use secrecy::{ExposeSecret, SecretBox};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Longest secret accepted (AWS's are 40 characters). The bound keeps a
/// wrong `secret_file` from being read whole.
pub const MAX_SECRET_LEN: usize = 128;

/// Longest access key id accepted (AWS's limit).
pub const MAX_ACCESS_KEY_ID_LEN: usize = 128;

/// One `[[http.credentials]]` entry: an access key id, the file holding its
/// secret, and whom its requests run as.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CredentialConfig {
    /// The access key id clients put in their `Credential=` scope: 1 to 128
    /// characters from `A-Z a-z 0-9 _ -`.
    pub access_key_id: String,
    /// The file holding the secret access key: a regular file owned by the
    /// daemon's uid, mode 0600 or stricter; one trailing newline is
    /// removed.
    pub secret_file: PathBuf,
    /// Who the requests run as: `uid:N` or `user:NAME` (resolved when the
    /// config is loaded). The gid is the primary group of that uid's passwd
    /// entry, or the uid itself when the uid has none.
    pub principal: String,
}

/// Why the credentials could not be loaded. Messages name the entry and the
/// file, never a secret.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// An access key id that clients could not send, or none.
    #[error("http.credentials: access key id {id:?}: {why}")]
    AccessKeyId {
        /// The id as configured.
        id: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// Two entries with one access key id.
    #[error("http.credentials: access key id {0:?} is configured twice")]
    Duplicate(String),
    /// A principal that is not `uid:N` or `user:NAME`, or that names no
    /// user.
    #[error("http.credentials {{ access_key_id = {id:?} }}: principal {message}")]
    Principal {
        /// The entry's access key id.
        id: String,
        /// What is wrong.
        message: String,
    },
    /// A secret file that group or others may read or write.
    #[error(
        "secret file {} has mode {mode:04o}: group and others must have no access (chmod 600 {})",
        path.display(),
        path.display()
    )]
    SecretFileInsecure {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A secret file owned by another account.
    #[error(
        "secret file {} is owned by uid {owner}, not by the daemon's uid {daemon} \
         (chown {daemon} {})",
        path.display(),
        path.display()
    )]
    SecretFileOwner {
        /// The file.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The daemon's effective uid.
        daemon: u32,
    },
    /// A secret file that cannot be read, is not a regular file, or whose
    /// contents are no secret (empty, too long, not printable ASCII).
    #[error("secret file {}: {message}", path.display())]
    SecretFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Whom a verified request runs as: the kmsd identity of its access key.
///
/// The identity is made once per credential when the store is loaded, with
/// a connection number of its own ([`Identity::accepted`]): the per-thread
/// decision cache is keyed by that number, and every request signed with
/// this access key is the same caller, so they share decisions, while two
/// access keys (even of one uid) never do. A reloaded store makes new
/// numbers, so nothing decided for an old mapping is found again. It has no
/// pid (0: no process is known on TCP), no supplementary groups, no cgroup
/// and no unit: key policies see the uid and its primary gid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    access_key_id: Box<str>,
    identity: Identity,
}

impl Principal {
    /// The access key id the request was signed with (for logs and audit;
    /// not a secret).
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    /// The identity the request runs as.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Its uid.
    pub fn uid(&self) -> u32 {
        self.identity.uid
    }

    /// Its gid.
    pub fn gid(&self) -> u32 {
        self.identity.gid
    }
}

/// One access key: who it is and its secret, held as the key of SigV4's
/// first HMAC (`"AWS4"` followed by the secret), zeroized on drop and never
/// printed.
pub(super) struct Credential {
    pub(super) principal: Principal,
    k_secret: SecretBox<[u8]>,
    secret_file: PathBuf,
}

impl Credential {
    /// `"AWS4" || secret`.
    pub(super) fn k_secret(&self) -> &[u8] {
        self.k_secret.expose_secret()
    }
}

/// The access keys the HTTP endpoint accepts.
pub struct Credentials {
    entries: Box<[Credential]>,
    by_id: HashMap<Box<str>, usize>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Entry<'a>(&'a Credential);
        impl fmt::Debug for Entry<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct("Credential")
                    .field("access_key_id", &self.0.principal.access_key_id)
                    .field("uid", &self.0.principal.uid())
                    .field("gid", &self.0.principal.gid())
                    .field("secret_file", &self.0.secret_file)
                    .field("secret", &"<redacted>")
                    .finish()
            }
        }
        f.debug_list()
            .entries(self.entries.iter().map(Entry))
            .finish()
    }
}

impl Credentials {
    /// Reads every entry's secret file and resolves its principal.
    ///
    /// # Errors
    ///
    /// The first bad entry: an access key id clients could not send, one
    /// configured twice, a principal that is not `uid:N` or `user:NAME` (or
    /// names no user), a secret file that is missing, not a regular file,
    /// not owned by the daemon's uid, open to group or others, empty, longer
    /// than [`MAX_SECRET_LEN`] or not printable ASCII.
    pub fn load(configs: &[CredentialConfig]) -> Result<Credentials, CredentialError> {
        let daemon = rustix::process::geteuid().as_raw();
        let mut entries = Vec::with_capacity(configs.len());
        let mut by_id = HashMap::with_capacity(configs.len());
        for c in configs {
            check_access_key_id(&c.access_key_id)?;
            if by_id.contains_key(c.access_key_id.as_str()) {
                return Err(CredentialError::Duplicate(c.access_key_id.clone()));
            }
            let (uid, gid) =
                principal_ids(&c.principal).map_err(|message| CredentialError::Principal {
                    id: c.access_key_id.clone(),
                    message,
                })?;
            let k_secret = read_secret(&c.secret_file, daemon)?;
            by_id.insert(c.access_key_id.clone().into_boxed_str(), entries.len());
            entries.push(Credential {
                principal: Principal {
                    access_key_id: c.access_key_id.clone().into_boxed_str(),
                    identity: Identity::accepted(uid, gid, 0, PeerDetails::default()),
                },
                k_secret,
                secret_file: c.secret_file.clone(),
            });
        }
        Ok(Credentials {
            entries: entries.into_boxed_slice(),
            by_id,
        })
    }

    /// A store from secrets in memory (tests and benches; the daemon reads
    /// files with [`Credentials::load`]). Each entry is (access key id,
    /// secret, uid, gid).
    #[doc(hidden)]
    pub fn from_secrets(entries: &[(&str, &str, u32, u32)]) -> Credentials {
        let mut by_id = HashMap::new();
        let entries: Vec<Credential> = entries
            .iter()
            .enumerate()
            .map(|(i, &(id, secret, uid, gid))| {
                by_id.insert(Box::from(id), i);
                Credential {
                    principal: Principal {
                        access_key_id: id.into(),
                        identity: Identity::accepted(uid, gid, 0, PeerDetails::default()),
                    },
                    k_secret: k_secret(secret.as_bytes()),
                    secret_file: PathBuf::new(),
                }
            })
            .collect();
        Credentials {
            entries: entries.into_boxed_slice(),
            by_id,
        }
    }

    /// How many access keys there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The index of an access key id.
    pub(super) fn index(&self, access_key_id: &str) -> Option<usize> {
        self.by_id.get(access_key_id).copied()
    }

    /// The credential at `index`.
    pub(super) fn get(&self, index: usize) -> &Credential {
        &self.entries[index]
    }
}

fn check_access_key_id(id: &str) -> Result<(), CredentialError> {
    let why = if id.is_empty() {
        "is empty"
    } else if id.len() > MAX_ACCESS_KEY_ID_LEN {
        "is longer than 128 characters"
    } else if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        "may hold only A-Z, a-z, 0-9, '_' and '-'"
    } else {
        return Ok(());
    };
    Err(CredentialError::AccessKeyId {
        id: id.to_owned(),
        why,
    })
}

/// `uid:N` or `user:NAME` to (uid, gid), through the quotas' principal
/// parser; the gid is the primary group of the uid's passwd entry, or the
/// uid when it has none.
fn principal_ids(principal: &str) -> Result<(u32, u32), String> {
    if !(principal.starts_with("uid:") || principal.starts_with("user:")) {
        return Err(format!(
            "{principal:?}: a credential runs as one user: give \"uid:N\" or \"user:NAME\""
        ));
    }
    let uid = crate::quota::principal_uid(principal)?
        .ok_or_else(|| format!("{principal:?}: give \"uid:N\" or \"user:NAME\""))?;
    let gid = match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(user)) => user.gid.as_raw(),
        Ok(None) => uid,
        Err(e) => return Err(format!("{principal:?}: looking up uid {uid}: {e}")),
    };
    Ok((uid, gid))
}

/// `"AWS4" || secret`, allocated once at its final size (no reallocation
/// leaves an unzeroized copy behind).
fn k_secret(secret: &[u8]) -> SecretBox<[u8]> {
    let mut k = vec![0u8; 4 + secret.len()].into_boxed_slice();
    k[..4].copy_from_slice(b"AWS4");
    k[4..].copy_from_slice(secret);
    SecretBox::new(k)
}

/// The owner and mode rules for a secret file, on its metadata.
fn check_owner_and_mode(
    path: &Path,
    owner: u32,
    mode: u32,
    daemon: u32,
) -> Result<(), CredentialError> {
    if owner != daemon {
        return Err(CredentialError::SecretFileOwner {
            path: path.to_owned(),
            owner,
            daemon,
        });
    }
    if mode & 0o077 != 0 {
        return Err(CredentialError::SecretFileInsecure {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

/// Reads a secret file (the module's rules above) into SigV4's first key.
fn read_secret(path: &Path, daemon: u32) -> Result<SecretBox<[u8]>, CredentialError> {
    let fail = |message: String| CredentialError::SecretFile {
        path: path.to_owned(),
        message,
    };
    // Non-blocking, so that a FIFO put in the file's place does not hang the
    // daemon's start (it is refused as not a regular file below).
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| fail(format!("cannot open it: {e}")))?;
    let meta = file
        .metadata()
        .map_err(|e| fail(format!("cannot stat it: {e}")))?;
    if !meta.is_file() {
        return Err(fail("is not a regular file".to_owned()));
    }
    check_owner_and_mode(path, meta.uid(), meta.permissions().mode() & 0o7777, daemon)?;
    // Room for the longest secret, CR and LF, and one byte more to know a
    // longer file is too long without reading it whole.
    let mut buf = Zeroizing::new([0u8; MAX_SECRET_LEN + 3]);
    let mut len = 0;
    while len < buf.len() {
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(fail(format!("cannot read it: {e}"))),
        }
    }
    let bytes = &buf[..len];
    let secret = bytes
        .strip_suffix(b"\r\n")
        .or_else(|| bytes.strip_suffix(b"\n"))
        .unwrap_or(bytes);
    if secret.is_empty() {
        return Err(fail("is empty".to_owned()));
    }
    if secret.len() > MAX_SECRET_LEN {
        return Err(fail(format!(
            "is longer than {MAX_SECRET_LEN} bytes (one secret, one optional newline)"
        )));
    }
    if !secret.iter().all(|b| b.is_ascii_graphic()) {
        return Err(fail(
            "holds more than one line, a blank or a byte that is not printable ASCII: \
             it must hold the secret access key alone"
                .to_owned(),
        ));
    }
    Ok(k_secret(secret))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    fn secret_file(dir: &Path, name: &str, contents: &[u8], mode: u32) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, contents).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    fn config(id: &str, path: &Path, principal: &str) -> CredentialConfig {
        CredentialConfig {
            access_key_id: id.to_owned(),
            secret_file: path.to_owned(),
            principal: principal.to_owned(),
        }
    }

    #[test]
    fn a_0600_file_is_read_with_one_newline_removed() {
        let dir = tempfile::tempdir().unwrap();
        for (i, (contents, mode)) in [
            (format!("{SECRET}\n"), 0o600),
            (SECRET.to_owned(), 0o400),
            (format!("{SECRET}\r\n"), 0o600),
        ]
        .iter()
        .enumerate()
        {
            let path = secret_file(dir.path(), &format!("s{i}"), contents.as_bytes(), *mode);
            let creds = Credentials::load(&[config("AKIDEXAMPLE", &path, "uid:1000")]).unwrap();
            let c = creds.get(creds.index("AKIDEXAMPLE").unwrap());
            assert_eq!(c.k_secret(), format!("AWS4{SECRET}").as_bytes());
            assert_eq!(c.principal.uid(), 1000);
            assert_eq!(c.principal.access_key_id(), "AKIDEXAMPLE");
        }
    }

    #[test]
    fn files_open_to_group_or_others_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o644, 0o640, 0o604, 0o660, 0o620, 0o602, 0o610, 0o601] {
            let path = secret_file(dir.path(), "s", format!("{SECRET}\n").as_bytes(), mode);
            match Credentials::load(&[config("AKIDEXAMPLE", &path, "uid:1000")]) {
                Err(e @ CredentialError::SecretFileInsecure { .. }) => {
                    let msg = e.to_string();
                    assert!(msg.contains(&format!("{mode:04o}")), "{msg}");
                    assert!(msg.contains("chmod 600"), "{msg}");
                    assert!(msg.contains(&path.display().to_string()), "{msg}");
                    assert!(!msg.contains(SECRET), "{msg}");
                }
                other => panic!("mode {mode:o}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_file_of_another_owner_is_refused() {
        let path = Path::new("/etc/kmsd/http/AKIDEXAMPLE.secret");
        let e = check_owner_and_mode(path, 1000, 0o600, 0).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("owned by uid 1000, not by the daemon's uid 0"),
            "{msg}"
        );
        assert!(
            msg.contains("chown 0 /etc/kmsd/http/AKIDEXAMPLE.secret"),
            "{msg}"
        );
        assert!(check_owner_and_mode(path, 0, 0o600, 0).is_ok());
        assert!(check_owner_and_mode(path, 0, 0o400, 0).is_ok());
        // The real thing, where the test may give a file away.
        if rustix::process::geteuid().is_root() {
            let dir = tempfile::tempdir().unwrap();
            let path = secret_file(dir.path(), "s", SECRET.as_bytes(), 0o600);
            std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
            assert!(matches!(
                Credentials::load(&[config("AKIDEXAMPLE", &path, "uid:1000")]),
                Err(CredentialError::SecretFileOwner { owner: 65534, .. })
            ));
        }
    }

    #[test]
    fn bad_contents_and_missing_files_are_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let long = "a".repeat(MAX_SECRET_LEN + 1);
        let at_limit = "a".repeat(MAX_SECRET_LEN);
        for (contents, why) in [
            (&b""[..], "is empty"),
            (b"\n", "is empty"),
            (b"\r\n", "is empty"),
            (long.as_bytes(), "longer than"),
            (b"abc\n\n", "not printable ASCII"),
            (b"abc\ndef\n", "not printable ASCII"),
            (b" abc", "not printable ASCII"),
            (b"abc def", "not printable ASCII"),
            (b"abc\t", "not printable ASCII"),
            (&[b'a', 0xc3, 0xa9], "not printable ASCII"),
        ] {
            let path = secret_file(dir.path(), "s", contents, 0o600);
            match Credentials::load(&[config("AKIDEXAMPLE", &path, "uid:1000")]) {
                Err(e @ CredentialError::SecretFile { .. }) => {
                    let msg = e.to_string();
                    assert!(msg.contains(why), "{contents:?}: {msg}");
                    assert!(msg.contains(&path.display().to_string()), "{msg}");
                }
                other => panic!("{contents:?}: {other:?}"),
            }
        }
        let path = secret_file(dir.path(), "s", at_limit.as_bytes(), 0o600);
        assert!(Credentials::load(&[config("AKIDEXAMPLE", &path, "uid:1000")]).is_ok());
        let missing = dir.path().join("missing");
        let e = Credentials::load(&[config("AKIDEXAMPLE", &missing, "uid:1000")]).unwrap_err();
        assert!(e.to_string().contains("cannot open it"), "{e}");
        let e = Credentials::load(&[config("AKIDEXAMPLE", dir.path(), "uid:1000")]).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        // A FIFO is refused at once, not waited on.
        let fifo = dir.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let e = Credentials::load(&[config("AKIDEXAMPLE", &fifo, "uid:1000")]).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }

    #[test]
    fn ids_principals_and_duplicates_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = secret_file(dir.path(), "s", SECRET.as_bytes(), 0o600);
        let too_long = "A".repeat(MAX_ACCESS_KEY_ID_LEN + 1);
        for id in [
            "",
            "AKID/1",
            "AKID EXAMPLE",
            "AKID,",
            "AKID=",
            too_long.as_str(),
        ] {
            assert!(
                matches!(
                    Credentials::load(&[config(id, &path, "uid:1000")]),
                    Err(CredentialError::AccessKeyId { .. })
                ),
                "{id:?}"
            );
        }
        for (principal, why) in [
            ("*", "runs as one user"),
            ("gid:4", "runs as one user"),
            ("group:adm", "runs as one user"),
            ("1000", "runs as one user"),
            ("uid:x", "needs a number"),
            ("user:no-such-user-kmsd", "no such user"),
        ] {
            match Credentials::load(&[config("AKIDEXAMPLE", &path, principal)]) {
                Err(e @ CredentialError::Principal { .. }) => {
                    let msg = e.to_string();
                    assert!(msg.contains(why), "{principal}: {msg}");
                    assert!(msg.contains("AKIDEXAMPLE"), "{msg}");
                }
                other => panic!("{principal}: {other:?}"),
            }
        }
        let e = Credentials::load(&[
            config("AKIDEXAMPLE", &path, "uid:1000"),
            config("AKIDEXAMPLE", &path, "uid:1001"),
        ])
        .unwrap_err();
        assert!(matches!(e, CredentialError::Duplicate(_)), "{e}");
        assert!(e.to_string().contains("configured twice"), "{e}");
    }

    #[test]
    fn principals_resolve_to_uid_and_primary_gid() {
        // root is in every passwd; uid 4000000000 is in none.
        assert_eq!(principal_ids("user:root").unwrap(), (0, 0));
        assert_eq!(principal_ids("uid:0").unwrap(), (0, 0));
        assert_eq!(
            principal_ids("uid:4000000000").unwrap(),
            (4_000_000_000, 4_000_000_000)
        );
        let dir = tempfile::tempdir().unwrap();
        let path = secret_file(dir.path(), "s", SECRET.as_bytes(), 0o600);
        let creds = Credentials::load(&[
            config("AKIDA", &path, "user:root"),
            config("AKIDB", &path, "uid:0"),
        ])
        .unwrap();
        let (a, b) = (
            &creds.get(creds.index("AKIDA").unwrap()).principal,
            &creds.get(creds.index("AKIDB").unwrap()).principal,
        );
        assert_eq!((a.uid(), a.gid(), b.uid(), b.gid()), (0, 0, 0, 0));
        // Two access keys of one uid are two callers to the decision cache.
        assert_ne!(a.identity().conn, b.identity().conn);
        assert_ne!(a.identity().conn, 0);
        assert_eq!(a.identity().pid, 0);
        assert!(a.identity().groups().is_empty());
    }

    #[test]
    fn debug_shows_no_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = secret_file(dir.path(), "s", SECRET.as_bytes(), 0o600);
        let creds = Credentials::load(&[config("AKIDEXAMPLE", &path, "uid:1000")]).unwrap();
        let debug = format!("{creds:?} {creds:#?}");
        assert!(debug.contains("AKIDEXAMPLE"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
        assert!(!debug.contains(SECRET), "{debug}");
        assert!(!debug.contains("wJalr"), "{debug}");
        let memory = Credentials::from_secrets(&[("AKIDEXAMPLE", SECRET, 1, 1)]);
        assert!(!format!("{memory:?}").contains("wJalr"));
    }

    #[test]
    fn the_config_rejects_unknown_fields() {
        let ok: CredentialConfig = toml::from_str(
            "access_key_id = \"AKIDEXAMPLE\"\n\
             secret_file = \"/etc/kmsd/http/a.secret\"\n\
             principal = \"user:alice\"\n",
        )
        .unwrap();
        assert_eq!(ok.principal, "user:alice");
        assert!(toml::from_str::<CredentialConfig>(
            "access_key_id = \"A\"\nsecret_file = \"/x\"\nprincipal = \"uid:1\"\n\
             secret = \"inline\"\n"
        )
        .is_err());
    }
}
