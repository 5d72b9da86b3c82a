//! The token's user PIN: read from a file or an environment variable, held
//! in a type with no `Debug`, zeroized on drop, never logged and never on a
//! command line or in the config file.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

use super::error::SetupError;
use crate::config::Pkcs11Config;

/// Longest PIN accepted (PKCS#11 tokens use far shorter ones; the bound
/// keeps a wrong `pin_file` from being read whole).
const MAX_PIN_LEN: usize = 256;

/// A user PIN. Wraps cryptoki's `AuthPin` (a `secrecy::SecretString`,
/// zeroized on drop) and deliberately implements neither `Debug` nor
/// `Display` nor `Clone`.
pub struct Pin(AuthPin);

impl Pin {
    /// Reads the PIN named by the config: `pin_file` or `pin_env` (the config
    /// validation guarantees exactly one). A `pin_env` variable is removed
    /// from the process environment once read, so that nothing started
    /// later (a child process, a module reading the environment) sees it.
    ///
    /// Removing a variable races with other threads reading the
    /// environment from C (`getenv` is not synchronised with `unsetenv`), so
    /// this must run while the process has one thread: kmsd opens the HSM
    /// at start-up before it starts any thread (`server::run` opens the root
    /// of trust before the loader, worker, I/O and signal threads; `kmsd hsm`
    /// and `kmsd migrate-root` are single-threaded), and before the PKCS#11
    /// module is loaded. (The variable's original bytes stay in the
    /// process's initial stack, which `/proc/<pid>/environ` shows only to
    /// the process's owner and root; kmsd makes itself non-dumpable,
    /// `memlock.rs`, which restricts that file to root.)
    ///
    /// # Errors
    ///
    /// [`SetupError::PinFileInsecure`] for a file readable by group or
    /// others, [`SetupError::Pin`] for anything else.
    pub fn from_config(config: &Pkcs11Config) -> Result<Pin, SetupError> {
        match (&config.pin_file, &config.pin_env) {
            (Some(path), None) => Pin::from_file(path),
            (None, Some(var)) => {
                let pin = Pin::from_env(var)?;
                std::env::remove_var(var);
                Ok(pin)
            }
            _ => Err(SetupError::Config(
                "root.pkcs11 needs exactly one of pin_file and pin_env".to_owned(),
            )),
        }
    }

    /// Reads a PIN file: a regular file with no permission bits for group or
    /// others; its contents without one trailing newline are the PIN.
    ///
    /// # Errors
    ///
    /// As [`Pin::from_config`].
    pub fn from_file(path: &Path) -> Result<Pin, SetupError> {
        let what = |e: std::io::Error| SetupError::Pin(format!("reading {}: {e}", path.display()));
        let file = File::open(path).map_err(what)?;
        // Check the open file, not the path, so the checks cover the bytes
        // read.
        let meta = file.metadata().map_err(what)?;
        if !meta.is_file() {
            return Err(SetupError::Pin(format!(
                "{} is not a regular file",
                path.display()
            )));
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(SetupError::PinFileInsecure {
                path: path.to_owned(),
                mode,
            });
        }
        // A fixed buffer one byte longer than the longest accepted contents
        // (PIN, CR, LF), filled by plain reads: nothing grows, so no copy of
        // the contents is left behind in freed memory (a growing Vec would
        // leave the old allocation unzeroized), and a longer file is known
        // to be too long without reading it whole.
        let mut buf = Zeroizing::new([0u8; MAX_PIN_LEN + 3]);
        let len = read_full(file, &mut buf[..]).map_err(what)?;
        Pin::from_bytes(&buf[..len], &format!("PIN file {}", path.display()))
    }

    /// Reads the PIN from environment variable `var` (no newline stripping:
    /// the value is the PIN).
    ///
    /// # Errors
    ///
    /// [`SetupError::Pin`] if the variable is unset, empty or not UTF-8.
    pub fn from_env(var: &str) -> Result<Pin, SetupError> {
        let value = std::env::var_os(var).ok_or_else(|| {
            SetupError::Pin(format!(
                "environment variable {var} (root.pkcs11.pin_env) is not set"
            ))
        })?;
        let bytes = Zeroizing::new(value.into_encoded_bytes());
        Pin::from_bytes_exact(&bytes, &format!("environment variable {var}"))
    }

    /// Strips one trailing newline (`\n` or `\r\n`), then as
    /// [`Pin::from_bytes_exact`].
    fn from_bytes(bytes: &[u8], source: &str) -> Result<Pin, SetupError> {
        let bytes = bytes
            .strip_suffix(b"\r\n")
            .or_else(|| bytes.strip_suffix(b"\n"))
            .unwrap_or(bytes);
        Pin::from_bytes_exact(bytes, source)
    }

    fn from_bytes_exact(bytes: &[u8], source: &str) -> Result<Pin, SetupError> {
        if bytes.is_empty() {
            return Err(SetupError::Pin(format!("{source} is empty")));
        }
        if bytes.len() > MAX_PIN_LEN {
            return Err(SetupError::Pin(format!(
                "{source} is longer than {MAX_PIN_LEN} bytes"
            )));
        }
        let text = std::str::from_utf8(bytes)
            .map_err(|_| SetupError::Pin(format!("{source} is not UTF-8")))?;
        // Build the boxed str with exact capacity so no reallocation leaves
        // an unzeroized copy behind.
        let mut owned = String::with_capacity(text.len());
        owned.push_str(text);
        Ok(Pin(AuthPin::new(owned.into_boxed_str())))
    }

    /// The PIN for cryptoki's `login`.
    pub(crate) fn auth(&self) -> &AuthPin {
        &self.0
    }

    /// The PIN's bytes, for tests of this module only.
    #[cfg(test)]
    fn expose(&self) -> &str {
        use secrecy::ExposeSecret;
        self.0.expose_secret()
    }
}

/// Reads until `buf` is full or the end of the input; returns the length
/// read.
fn read_full(mut input: impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut len = 0;
    while len < buf.len() {
        match input.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn pin_file(dir: &Path, contents: &[u8], mode: u32) -> std::path::PathBuf {
        let path = dir.join("pin");
        fs::write(&path, contents).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn one_trailing_newline_is_stripped() {
        let dir = tempfile::tempdir().unwrap();
        for (contents, expected) in [
            (&b"1234\n"[..], "1234"),
            (b"1234", "1234"),
            (b"1234\r\n", "1234"),
            (b"1234\n\n", "1234\n"),
            (b" 12 34 \n", " 12 34 "),
        ] {
            let path = pin_file(dir.path(), contents, 0o600);
            assert_eq!(Pin::from_file(&path).unwrap().expose(), expected);
        }
    }

    #[test]
    fn open_files_and_bad_contents_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o644, 0o640, 0o604, 0o660] {
            let path = pin_file(dir.path(), b"1234\n", mode);
            match Pin::from_file(&path) {
                Err(e @ SetupError::PinFileInsecure { .. }) => {
                    let msg = e.to_string();
                    assert!(msg.contains("chmod 600"), "{msg}");
                    assert!(msg.contains(&format!("{mode:04o}")), "{msg}");
                    assert!(!msg.contains("1234"), "the PIN must not be in messages");
                }
                Err(other) => panic!("mode {mode:o}: {other}"),
                Ok(_) => panic!("mode {mode:o} accepted"),
            }
        }
        for contents in [&b"\n"[..], b"", &[0xff, 0xfe], &[b'1'; 300]] {
            let path = pin_file(dir.path(), contents, 0o600);
            assert!(matches!(Pin::from_file(&path), Err(SetupError::Pin(_))));
        }
        assert!(matches!(
            Pin::from_file(&dir.path().join("missing")),
            Err(SetupError::Pin(_))
        ));
        assert!(matches!(
            Pin::from_file(dir.path()),
            Err(SetupError::Pin(_))
        ));
    }

    #[test]
    fn environment_variable() {
        let var = "KMSD_PIN_UNIT_TEST_VAR_7F3A_NEVER_SET";
        assert!(matches!(Pin::from_env(var), Err(SetupError::Pin(m)) if m.contains(var)));
        // An existing variable, read as is (no newline stripping); reading
        // one avoids mutating the environment of a multi-threaded test run.
        let path = std::env::var("PATH").expect("PATH is set");
        assert_eq!(Pin::from_env("PATH").unwrap().expose(), path);
    }
}
