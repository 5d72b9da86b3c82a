//! The development root of trust: a random AES-256 key in a file.
//!
//! With no HSM configured, kmsd keeps its root key in `<data_dir>/root.key`:
//! 32 raw bytes, mode 0600, owned by the daemon's user. This protects
//! nothing against anyone who can read that file (or the disk), which is why
//! the daemon logs a warning every time it loads one. It exists so the whole
//! service can run and be tested without an HSM, with the same wrapped-key
//! format an HSM produces (RFC 5649 KWP, see [`crate::root`]).
//!
//! The file is created once, atomically: the key is written to a temporary
//! file created with `O_CREAT|O_EXCL` and mode 0600, fsynced, then
//! hard-linked to `root.key`, which fails if the name already exists, so two
//! daemons starting at once on an empty data directory cannot end up with
//! different root keys (the loser reads the winner's file). Finally the
//! directory is fsynced so the name survives a crash. A crash before the
//! link leaves only a stray temporary file, never a half-written
//! `root.key`.
//!
//! On load the file must be a regular file of exactly 32 bytes, owned by
//! the effective user, with no permission bits for group or others;
//! anything else is refused rather than silently used.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aes_kw::{KeyInit, KwpAes256};
use zeroize::Zeroizing;

use super::{RootError, RootOfTrust};
use crate::crypto::{rng, KeyMaterial};

/// Length of an RFC 5649 wrapping of a 32-byte key: the 8-byte integrity
/// block plus the key (already a multiple of 8, so no padding).
const WRAPPED_LEN: usize = KeyMaterial::LEN + 8;

/// The development root of trust: an AES-256 key held in process, loaded
/// from (or created as) a 0600 file, wrapping with RFC 5649 KWP via the
/// aes-kw crate.
///
/// The key schedule is zeroized on drop (aes's `zeroize` feature) and
/// `Debug` shows only the file path.
pub struct FileRoot {
    kwp: KwpAes256,
    path: Option<PathBuf>,
}

impl FileRoot {
    /// Name of the root key file inside the data directory.
    pub const FILE_NAME: &'static str = "root.key";

    /// Loads `<data_dir>/root.key`, or creates it with a fresh random key if
    /// it does not exist (creating `data_dir` with mode 0700 first if
    /// needed). Logs a warning that this is a development setup.
    ///
    /// # Errors
    ///
    /// [`RootError::Insecure`] if the file is accessible by group or others
    /// or owned by another user, [`RootError::Invalid`] if it is not a
    /// regular file of exactly 32 bytes, and [`RootError::Io`] for failed
    /// system calls.
    pub fn open_or_create(data_dir: &Path) -> Result<FileRoot, RootError> {
        ensure_dir(data_dir)?;
        let path = data_dir.join(Self::FILE_NAME);
        let key = match read_key_file(&path)? {
            Some(key) => key,
            None => create_key_file(data_dir, &path)?,
        };
        tracing::warn!(
            path = %path.display(),
            "DEVELOPMENT SETUP: the root key is an unprotected file on disk; anyone who can \
             read it can unwrap every key. Configure an HSM root of trust for production."
        );
        let mut root = FileRoot::from_key(key);
        root.path = Some(path);
        Ok(root)
    }

    /// Opens the root key file in `data_dir`, which must exist (with the same
    /// checks as [`FileRoot::open_or_create`]); `kmsd migrate-root` uses it,
    /// where creating a new key would be a mistake.
    pub fn open_existing(data_dir: &Path) -> Result<FileRoot, RootError> {
        let path = data_dir.join(Self::FILE_NAME);
        let key = read_key_file(&path)?.ok_or_else(|| {
            RootError::Invalid(format!(
                "no root key file {}: this data directory is not under the file root",
                path.display()
            ))
        })?;
        let mut root = FileRoot::from_key(key);
        root.path = Some(path);
        Ok(root)
    }

    /// Builds a root from key material already in memory, with no file; for
    /// tests and benchmarks.
    pub fn from_key(key: KeyMaterial) -> FileRoot {
        FileRoot {
            kwp: KwpAes256::new(key.expose().into()),
            path: None,
        }
    }
}

impl RootOfTrust for FileRoot {
    fn kind(&self) -> &'static str {
        "file"
    }

    fn wrap(&self, key: &KeyMaterial) -> Result<Vec<u8>, RootError> {
        let mut wrapped = vec![0u8; WRAPPED_LEN];
        let len = self
            .kwp
            .wrap_key(key.expose(), &mut wrapped)
            .map_err(|err| RootError::Invalid(format!("key wrap failed: {err}")))?
            .len();
        debug_assert_eq!(len, WRAPPED_LEN);
        Ok(wrapped)
    }

    fn unwrap(&self, wrapped: &[u8]) -> Result<KeyMaterial, RootError> {
        // Anything but a wrapped 32-byte key is corrupt for us, even if it is
        // a valid wrapping of some other length.
        if wrapped.len() != WRAPPED_LEN {
            return Err(RootError::Unwrap);
        }
        let mut buf = Zeroizing::new([0u8; WRAPPED_LEN - 8]);
        let key = self
            .kwp
            .unwrap_key(wrapped, buf.as_mut_slice())
            .map_err(|_| RootError::Unwrap)?;
        KeyMaterial::from_slice(key).ok_or(RootError::Unwrap)
    }

    /// Import wrapping keys: OpenSSL key pairs whose private key is sealed
    /// under the root key (`root/import_file.rs`).
    fn import_wrapping(&self) -> Option<&dyn super::ImportWrapping> {
        Some(self)
    }
}

impl fmt::Debug for FileRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileRoot")
            .field("path", &self.path)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Creates `dir` (and missing parents) with mode 0700 if it does not exist,
/// and makes the new directory entry durable.
fn ensure_dir(dir: &Path) -> Result<(), RootError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(RootError::io("creating data directory", dir))?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Reads and checks an existing key file; `Ok(None)` if there is none.
fn read_key_file(path: &Path) -> Result<Option<KeyMaterial>, RootError> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(RootError::io("opening root key", path)(err)),
    };
    // fstat the open file, not the path, so the checks apply to exactly the
    // bytes that are read.
    let meta = file
        .metadata()
        .map_err(RootError::io("inspecting root key", path))?;
    if !meta.is_file() {
        return Err(RootError::Invalid(format!(
            "root key {} is not a regular file",
            path.display()
        )));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(RootError::Insecure(format!(
            "root key {} has mode {mode:04o}, which lets group or others access it; \
             refusing to use it (chmod 600 it only if you are sure nobody copied it)",
            path.display()
        )));
    }
    let euid = rustix::process::geteuid().as_raw();
    if meta.uid() != euid {
        return Err(RootError::Insecure(format!(
            "root key {} is owned by uid {}, not by the daemon's uid {euid}",
            path.display(),
            meta.uid()
        )));
    }
    if meta.len() != KeyMaterial::LEN as u64 {
        return Err(RootError::Invalid(format!(
            "root key {} is {} bytes long; it must be exactly {} bytes",
            path.display(),
            meta.len(),
            KeyMaterial::LEN
        )));
    }
    let mut bytes = Zeroizing::new([0u8; KeyMaterial::LEN]);
    file.read_exact(bytes.as_mut_slice())
        .map_err(RootError::io("reading root key", path))?;
    Ok(Some(KeyMaterial::from_bytes(*bytes)))
}

/// Creates the key file with a fresh key, atomically (see the module docs).
/// If another process creates it first, returns that process's key instead.
fn create_key_file(dir: &Path, path: &Path) -> Result<KeyMaterial, RootError> {
    let key = KeyMaterial::generate();

    let mut suffix = [0u8; 8];
    rng::fill(&mut suffix);
    let suffix: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = dir.join(format!(
        ".{}.tmp.{}.{suffix}",
        FileRoot::FILE_NAME,
        std::process::id()
    ));

    let written = write_new_file(&tmp, key.expose());
    let linked = written.and_then(|()| fs::hard_link(&tmp, path));
    // The temporary name goes whether or not the link worked; failing to
    // remove it leaves a stray file but no harm, so that error is ignored.
    let _ = fs::remove_file(&tmp);

    match linked {
        Ok(()) => {
            sync_dir(dir)?;
            tracing::info!(path = %path.display(), "created a new development root key");
            Ok(key)
        }
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
            // Lost a race with another process: use its key, checked as usual.
            read_key_file(path)?.ok_or_else(|| {
                RootError::Invalid(format!(
                    "root key {} appeared and vanished while being created",
                    path.display()
                ))
            })
        }
        Err(err) => Err(RootError::io("creating root key", path)(err)),
    }
}

/// Writes `bytes` to a new file (`O_CREAT|O_EXCL`, mode 0600) and fsyncs it.
fn write_new_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// fsyncs a directory so that entries created in it survive a crash.
fn sync_dir(dir: &Path) -> Result<(), RootError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(RootError::io("syncing directory", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn set_mode(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn creates_then_reopens_the_same_key() {
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = tmp.path().join("nested").join("data");

        let first = FileRoot::open_or_create(&data_dir).unwrap();
        let key_path = data_dir.join(FileRoot::FILE_NAME);
        assert_eq!(mode_of(&data_dir), 0o700);
        assert_eq!(mode_of(&key_path), 0o600);
        assert_eq!(fs::metadata(&key_path).unwrap().len(), 32);
        // Only root.key is left: the temporary file is gone.
        let names: Vec<_> = fs::read_dir(&data_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("root.key")]);

        let backing = KeyMaterial::generate();
        let wrapped = first.wrap(&backing).unwrap();
        assert_eq!(wrapped.len(), 40);

        let second = FileRoot::open_or_create(&data_dir).unwrap();
        assert_eq!(second.unwrap(&wrapped).unwrap().expose(), backing.expose());
        assert_eq!(
            second.wrap(&backing).unwrap(),
            wrapped,
            "KWP is deterministic"
        );
        assert_eq!(second.kind(), "file");

        // The file holds the raw key that from_key would use.
        let raw = fs::read(&key_path).unwrap();
        let from_raw = FileRoot::from_key(KeyMaterial::from_slice(&raw).unwrap());
        assert_eq!(from_raw.wrap(&backing).unwrap(), wrapped);
    }

    #[test]
    fn existing_data_dir_is_used_as_is() {
        let tmp = tempfile::tempdir().unwrap();
        let root = FileRoot::open_or_create(tmp.path()).unwrap();
        assert!(tmp.path().join("root.key").is_file());
        assert!(format!("{root:?}").contains("root.key"));
    }

    #[test]
    fn refuses_group_or_other_access() {
        let tmp = tempfile::tempdir().unwrap();
        FileRoot::open_or_create(tmp.path()).unwrap();
        let key_path = tmp.path().join(FileRoot::FILE_NAME);
        for mode in [0o640, 0o604, 0o660, 0o644, 0o610, 0o601, 0o700, 0o400] {
            set_mode(&key_path, mode);
            let result = FileRoot::open_or_create(tmp.path());
            if mode & 0o077 != 0 {
                match result {
                    Err(RootError::Insecure(msg)) => assert!(msg.contains("mode"), "{msg}"),
                    other => panic!("mode {mode:o} accepted: {other:?}"),
                }
            } else {
                // Owner-only modes (even odd ones) are acceptable.
                result.unwrap();
            }
        }
    }

    #[test]
    fn refuses_wrong_size() {
        for len in [0usize, 16, 31, 33, 64] {
            let tmp = tempfile::tempdir().unwrap();
            let key_path = tmp.path().join(FileRoot::FILE_NAME);
            fs::write(&key_path, vec![7u8; len]).unwrap();
            set_mode(&key_path, 0o600);
            match FileRoot::open_or_create(tmp.path()) {
                Err(RootError::Invalid(msg)) => assert!(msg.contains("exactly 32 bytes"), "{msg}"),
                other => panic!("{len}-byte file accepted: {other:?}"),
            }
            // It is refused, not replaced.
            assert_eq!(fs::read(&key_path).unwrap().len(), len);
        }
    }

    #[test]
    fn refuses_a_directory_in_place_of_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let key_path = tmp.path().join(FileRoot::FILE_NAME);
        fs::DirBuilder::new().mode(0o700).create(&key_path).unwrap();
        assert!(matches!(
            FileRoot::open_or_create(tmp.path()),
            Err(RootError::Invalid(_))
        ));
    }

    #[test]
    fn concurrent_first_starts_agree_on_one_key() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let backing = KeyMaterial::from_bytes([9; 32]);
        let wrapped: Vec<Vec<u8>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        FileRoot::open_or_create(&dir)
                            .unwrap()
                            .wrap(&backing)
                            .unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(wrapped.windows(2).all(|w| w[0] == w[1]));
        let names = fs::read_dir(&dir).unwrap().count();
        assert_eq!(names, 1, "no temporary files left behind");
    }

    #[test]
    fn unwrap_rejects_corruption_other_roots_and_wrong_lengths() {
        let root = FileRoot::from_key(KeyMaterial::from_bytes([1; 32]));
        let other = FileRoot::from_key(KeyMaterial::from_bytes([2; 32]));
        let backing = KeyMaterial::from_bytes([3; 32]);
        let wrapped = root.wrap(&backing).unwrap();

        assert!(matches!(other.unwrap(&wrapped), Err(RootError::Unwrap)));
        for i in 0..wrapped.len() {
            let mut bad = wrapped.clone();
            bad[i] ^= 0x01;
            assert!(
                matches!(root.unwrap(&bad), Err(RootError::Unwrap)),
                "byte {i}"
            );
        }
        for len in [0, 8, 16, 32, 39, 41, 48] {
            let bytes = vec![0u8; len];
            assert!(
                matches!(root.unwrap(&bytes), Err(RootError::Unwrap)),
                "len {len}"
            );
        }
        // A valid KWP wrapping of a 31-byte key is still not a backing key.
        let mut short = [0u8; 40];
        let short = root.kwp.wrap_key(&[5u8; 31], &mut short).unwrap().to_vec();
        assert_eq!(short.len(), 40);
        assert!(matches!(root.unwrap(&short), Err(RootError::Unwrap)));

        assert_eq!(root.unwrap(&wrapped).unwrap().expose(), backing.expose());
    }

    #[test]
    fn debug_is_redacted() {
        let root = FileRoot::from_key(KeyMaterial::from_bytes([0xC3; 32]));
        let debug = format!("{root:?}");
        assert_eq!(debug, "FileRoot { path: None, key: \"<redacted>\" }");
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            RootError::Unwrap.to_string(),
            "unwrap failed: the wrapped key is corrupt or was wrapped under another root key"
        );
        let err = io::Error::from(io::ErrorKind::PermissionDenied);
        let io = RootError::io("reading root key", Path::new("/x/root.key"))(err);
        assert_eq!(
            io.to_string(),
            "reading root key /x/root.key: permission denied"
        );
    }
}
