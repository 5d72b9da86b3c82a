//! `kmsctl`: a command-line client for kmsd, with AWS CLI command names.
//!
//! Output is human-readable `Name: value` lines by default and one JSON
//! object per command with `--json` (AWS KMS field names, binary values in
//! base64). Exit codes: 0 success, 1 the daemon answered with an exception,
//! 2 usage error (including an input file that cannot be read), 3 the daemon
//! cannot be reached (or the connection failed), 4 the output cannot be
//! written. See `docs/kmsctl.md`.
//!
//! Plaintext is never logged; buffers holding plaintext read from files or
//! stdin, and the base64 text of plaintext, are zeroized when dropped.
#![deny(missing_docs)]

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use kms_proto::client::{Client, ClientError, ServerUid, UnexpectedServer};
use kms_proto::*;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use std::borrow::Cow;
use std::fs::OpenOptions;
use std::io::{self, IsTerminal, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use zeroize::Zeroizing;

/// Largest input read from a file or stdin. Far above every API limit (the
/// daemon answers ValidationException for what is too large); the cap only
/// keeps a mistaken `kmsctl encrypt < big.iso` from reading gigabytes.
const MAX_INPUT: usize = 1 << 20;

/// Command-line client for kmsd (AWS KMS commands over the daemon's socket).
#[derive(Parser)]
#[command(name = "kmsctl", version, max_term_width = 100)]
struct Cli {
    /// The daemon's socket.
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        default_value_os_t = kms_proto::peer::default_socket_path()
    )]
    socket: PathBuf,
    /// Refuse a daemon that does not run as this uid (checked with
    /// SO_PEERCRED before anything is sent). Default: on the default socket
    /// path, your own uid or root; on any other path, no check.
    #[arg(long, global = true, value_name = "UID")]
    expect_uid: Option<u32>,
    /// Print one JSON object (AWS KMS field names, binary as base64).
    #[arg(long, global = true)]
    json: bool,
    /// Seconds to wait for the daemon's answer (0: forever).
    #[arg(long, global = true, value_name = "SECONDS", default_value_t = 30)]
    timeout: u64,
    #[command(subcommand)]
    command: Command,
}

/// `create-key --origin`.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum OriginArg {
    /// Made by kmsd, wrapped by the root of trust.
    Kmsd,
    /// Generated inside the HSM.
    Hsm,
}

#[derive(Subcommand)]
enum Command {
    /// Create a KMS key (SYMMETRIC_DEFAULT, ENCRYPT_DECRYPT).
    CreateKey {
        /// Free-text description.
        #[arg(long, value_name = "D", default_value = "")]
        description: String,
        /// Where the key material is made: kmsd (wrapped by the root of
        /// trust) or hsm (generated in the HSM, never leaves it; needs the
        /// PKCS#11 root).
        #[arg(long, value_enum, default_value = "kmsd")]
        origin: OriginArg,
    },
    /// Show a key's metadata.
    DescribeKey {
        /// Key id or ARN.
        #[arg(long, value_name = "K")]
        key_id: String,
    },
    /// List keys, one page (or every page with --all).
    ListKeys {
        /// Page size (1..=1000; default: the daemon's, 100).
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
        /// Continue after this marker (NextMarker of the previous page).
        #[arg(long, value_name = "M")]
        marker: Option<String>,
        /// Follow NextMarker until the last page; print all keys at once.
        #[arg(long)]
        all: bool,
    },
    /// Generate a data key: returns it in plaintext and encrypted.
    GenerateDataKey(DataKeyArgs),
    /// Generate a data key: returns it encrypted only.
    GenerateDataKeyWithoutPlaintext(DataKeyArgs),
    /// Encrypt up to 4096 bytes read from a file or stdin.
    Encrypt {
        /// Key id or ARN.
        #[arg(long, value_name = "K")]
        key_id: String,
        /// Read the plaintext from this file (raw bytes) instead of stdin.
        #[arg(long, value_name = "F")]
        plaintext_file: Option<PathBuf>,
        /// Encryption context pair (repeatable).
        #[arg(long = "context", value_name = "K=V", value_parser = parse_pair)]
        context: Vec<(String, String)>,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Decrypt a ciphertext blob read from a file (raw) or stdin (base64 or
    /// raw).
    Decrypt {
        /// Read the blob from this file (raw binary) instead of stdin.
        #[arg(long, value_name = "F")]
        ciphertext_file: Option<PathBuf>,
        /// Require the blob to be under this key.
        #[arg(long, value_name = "K")]
        key_id: Option<String>,
        /// Encryption context pair (repeatable); must equal the one used to
        /// encrypt.
        #[arg(long = "context", value_name = "K=V", value_parser = parse_pair)]
        context: Vec<(String, String)>,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Decrypt a blob and encrypt its plaintext under another key (the
    /// plaintext never leaves the daemon).
    ReEncrypt {
        /// Key id or ARN for the new blob.
        #[arg(long, value_name = "K")]
        destination_key_id: String,
        /// Require the blob to be under this key.
        #[arg(long, value_name = "K")]
        source_key_id: Option<String>,
        /// Read the blob from this file (raw binary) instead of stdin.
        #[arg(long, value_name = "F")]
        ciphertext_file: Option<PathBuf>,
        /// Context the blob was encrypted under (repeatable).
        #[arg(long = "source-context", value_name = "K=V", value_parser = parse_pair)]
        source_context: Vec<(String, String)>,
        /// Context for the new blob (repeatable).
        #[arg(long = "destination-context", value_name = "K=V", value_parser = parse_pair)]
        destination_context: Vec<(String, String)>,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Random bytes from the daemon's CSPRNG.
    GenerateRandom {
        /// How many bytes (1..=1024).
        #[arg(long, value_name = "N")]
        number_of_bytes: u32,
        #[command(flatten)]
        output: OutputArg,
    },
}

/// Options of generate-data-key and generate-data-key-without-plaintext.
#[derive(Args)]
#[group(id = "size", required = true, multiple = false, args = ["number_of_bytes", "key_spec"])]
struct DataKeyArgs {
    /// Key id or ARN of the KMS key that encrypts the data key.
    #[arg(long, value_name = "K")]
    key_id: String,
    /// Length of the data key in bytes (1..=1024).
    #[arg(long, value_name = "N")]
    number_of_bytes: Option<u32>,
    /// Length of the data key as a spec.
    #[arg(long, value_enum, value_name = "SPEC")]
    key_spec: Option<KeySpecArg>,
    /// Encryption context pair (repeatable).
    #[arg(long = "context", value_name = "K=V", value_parser = parse_pair)]
    context: Vec<(String, String)>,
    #[command(flatten)]
    output: OutputArg,
}

#[derive(Args)]
struct OutputArg {
    /// Write the raw bytes of the main binary field (Plaintext for decrypt,
    /// generate-data-key and generate-random, CiphertextBlob otherwise) to
    /// FILE instead of printing it; `-` writes them to stdout and prints
    /// nothing else. A plaintext file is created with mode 0600.
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum KeySpecArg {
    #[value(name = "AES_128")]
    Aes128,
    #[value(name = "AES_256")]
    Aes256,
}

/// `k=v`, split at the first `=`.
fn parse_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) => Ok((k.to_owned(), v.to_owned())),
        None => Err(format!("expected KEY=VALUE, found {s:?} (no '=')")),
    }
}

fn pairs(v: &[(String, String)]) -> Context<'_> {
    v.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

// ------------------------------------------------------------------ failures

/// Why a command failed; decides the message and the exit code.
enum Failure {
    /// The daemon answered with an exception (exit 1).
    Kms(KmsError),
    /// A bad argument found after parsing, e.g. an unreadable input (exit 2).
    Usage(String),
    /// The daemon could not be reached, or the connection failed (exit 3).
    Connect(io::Error),
    /// Stdout or the --output file could not be written (exit 4).
    Output(String),
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Kms(e) => Failure::Kms(e),
            ClientError::Io(e) => Failure::Connect(e),
        }
    }
}

fn wrong_answer() -> Failure {
    Failure::Kms(KmsError::new(
        ErrorKind::Serialization,
        "the daemon answered with the output of another operation",
    ))
}

fn connect_hint(socket: &Path, e: &io::Error) -> String {
    let default = kms_proto::peer::default_socket_path();
    if let Some(u) = e
        .get_ref()
        .and_then(|e| e.downcast_ref::<UnexpectedServer>())
    {
        let dir = socket.parent().unwrap_or(Path::new("/"));
        return format!(
            "kmsctl: hint: nothing was sent. Find who owns {} and the process listening as uid \
             {} and stop it, then restart kmsd; if kmsd really runs as that user, pass \
             --expect-uid {}",
            dir.display(),
            u.uid,
            u.uid
        );
    }
    let reason = match e.kind() {
        io::ErrorKind::NotFound => {
            "there is no socket at this path: is kmsd running, and on this socket?"
        }
        io::ErrorKind::ConnectionRefused => {
            "the socket file exists but nobody listens on it: kmsd has stopped or crashed"
        }
        io::ErrorKind::PermissionDenied => {
            "permission denied: the socket's mode or group does not include you"
        }
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            "the daemon did not answer in time (see --timeout)"
        }
        _ => "is kmsd running, and on this socket?",
    };
    format!(
        "kmsctl: hint: {reason}\nkmsctl: hint: start it with `kmsd serve --socket {}`, \
         or pass --socket PATH (default: {})",
        socket.display(),
        default.display()
    )
}

// -------------------------------------------------------------------- output

/// A value of the output, rendered as JSON or as human text.
enum Val<'a> {
    Str(Cow<'a, str>),
    Bool(bool),
    Int(i64),
    /// Binary, printed as base64.
    Bin(&'a [u8]),
    /// Nested object (fields in order).
    Obj(Vec<(&'static str, Val<'a>)>),
    List(Vec<Val<'a>>),
}

fn s(v: &str) -> Val<'_> {
    Val::Str(Cow::Borrowed(v))
}

fn b64(bytes: &[u8]) -> Zeroizing<String> {
    // The text of plaintext is as secret as the plaintext.
    let mut out = Zeroizing::new(String::with_capacity(bytes.len().div_ceil(3) * 4));
    BASE64.encode_string(bytes, &mut out);
    out
}

impl Serialize for Val<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        match self {
            Val::Str(v) => ser.serialize_str(v),
            Val::Bool(v) => ser.serialize_bool(*v),
            Val::Int(v) => ser.serialize_i64(*v),
            Val::Bin(v) => ser.serialize_str(&b64(v)),
            Val::Obj(fields) => {
                let mut m = ser.serialize_map(Some(fields.len()))?;
                for (k, v) in fields {
                    m.serialize_entry(k, v)?;
                }
                m.end()
            }
            Val::List(items) => {
                let mut l = ser.serialize_seq(Some(items.len()))?;
                for v in items {
                    l.serialize_element(v)?;
                }
                l.end()
            }
        }
    }
}

/// Text of a scalar for human output; control characters are escaped so that
/// a description cannot forge extra lines.
fn human_scalar(v: &Val<'_>) -> Zeroizing<String> {
    Zeroizing::new(match v {
        Val::Str(t) if t.chars().any(char::is_control) => t.escape_debug().to_string(),
        Val::Str(t) => t.to_string(),
        Val::Bool(b) => b.to_string(),
        Val::Int(i) => i.to_string(),
        Val::Bin(b) => return b64(b),
        Val::Obj(fields) => fields
            .iter()
            .map(|(_, v)| human_scalar(v).to_string())
            .collect::<Vec<_>>()
            .join("  "),
        Val::List(items) => items
            .iter()
            .map(|v| human_scalar(v).to_string())
            .collect::<Vec<_>>()
            .join(" "),
    })
}

/// Human output: `Name: value` lines, names padded to one width; nested
/// objects are flattened; lists print one item per line (an object item as
/// its values separated by two spaces).
fn write_human(out: &mut dyn Write, fields: &[(&'static str, Val<'_>)]) -> io::Result<()> {
    fn width(fields: &[(&'static str, Val<'_>)]) -> usize {
        fields
            .iter()
            .map(|(k, v)| match v {
                Val::Obj(inner) => width(inner),
                Val::List(_) => 0,
                _ => k.len() + 1,
            })
            .max()
            .unwrap_or(0)
    }
    fn go(out: &mut dyn Write, fields: &[(&'static str, Val<'_>)], w: usize) -> io::Result<()> {
        for (k, v) in fields {
            match v {
                Val::Obj(inner) => go(out, inner, w)?,
                Val::List(items) => {
                    for item in items {
                        writeln!(out, "{}", &*human_scalar(item))?;
                    }
                }
                _ => writeln!(out, "{:<w$} {}", format!("{k}:"), &*human_scalar(v))?,
            }
        }
        Ok(())
    }
    go(out, fields, width(fields))
}

/// The main binary field of a command's output, which `--output` diverts.
struct Main<'a> {
    name: &'static str,
    bytes: &'a [u8],
    secret: bool,
}

struct Printer {
    json: bool,
}

impl Printer {
    /// Prints `fields` (or writes the main field to `output`, see
    /// [`OutputArg`]).
    fn emit(
        &self,
        output: Option<&Path>,
        mut fields: Vec<(&'static str, Val<'_>)>,
        main: Option<Main<'_>>,
    ) -> Result<(), Failure> {
        if let (Some(path), Some(main)) = (output, &main) {
            if path == Path::new("-") {
                let mut stdout = io::stdout().lock();
                return stdout
                    .write_all(main.bytes)
                    .and_then(|()| stdout.flush())
                    .map_err(|e| Failure::Output(format!("writing to stdout: {e}")));
            }
            write_file(path, main.bytes, main.secret).map_err(|e| {
                Failure::Output(format!("writing {} to {}: {e}", main.name, path.display()))
            })?;
            fields.retain(|(k, _)| *k != main.name);
        }
        let mut stdout = io::stdout().lock();
        let res = if self.json {
            serde_json::to_writer_pretty(&mut stdout, &Val::Obj(fields))
                .map_err(io::Error::other)
                .and_then(|()| writeln!(stdout))
        } else {
            write_human(&mut stdout, &fields)
        };
        res.and_then(|()| stdout.flush())
            .map_err(|e| Failure::Output(format!("writing to stdout: {e}")))
    }
}

/// Writes `bytes` to `path`: mode 0600 when `secret` (also when the file
/// already existed with a wider mode), else the umask's default.
fn write_file(path: &Path, bytes: &[u8], secret: bool) -> io::Result<()> {
    let mut opts = OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    if secret {
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    if secret && f.metadata()?.permissions().mode() & 0o077 != 0 {
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    f.write_all(bytes)?;
    f.flush()
}

// --------------------------------------------------------------------- input

/// Reads all of `r` (at most [`MAX_INPUT`] bytes) into a buffer that is
/// zeroized on drop, including the buffers left behind when it grows.
fn read_secret(mut r: impl Read, what: &str) -> Result<Zeroizing<Vec<u8>>, Failure> {
    let mut buf = Zeroizing::new(Vec::with_capacity(8192));
    let mut chunk = Zeroizing::new([0u8; 8192]);
    loop {
        let n = match r.read(&mut chunk[..]) {
            Ok(0) => return Ok(buf),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Failure::Usage(format!("cannot read {what}: {e}"))),
        };
        if buf.len() + n > MAX_INPUT {
            return Err(Failure::Usage(format!(
                "{what} is larger than {MAX_INPUT} bytes"
            )));
        }
        if buf.len() + n > buf.capacity() {
            // Grow by copying into a new zeroizing buffer, so that the old
            // allocation is zeroed rather than freed with its contents.
            let mut bigger = Zeroizing::new(Vec::with_capacity((buf.len() + n) * 2));
            bigger.extend_from_slice(&buf);
            buf = bigger;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Reads a file, or stdin when `file` is None.
fn read_input(file: Option<&Path>, what: &str) -> Result<Zeroizing<Vec<u8>>, Failure> {
    match file {
        Some(path) => {
            let f = std::fs::File::open(path)
                .map_err(|e| Failure::Usage(format!("cannot open {}: {e}", path.display())))?;
            read_secret(f, &path.display().to_string())
        }
        None => {
            let stdin = io::stdin();
            if stdin.is_terminal() {
                eprintln!("kmsctl: reading {what} from the terminal; end with Ctrl-D");
            }
            read_secret(stdin.lock(), "stdin")
        }
    }
}

/// The ciphertext blob from a file (raw) or stdin (base64 or raw).
///
/// Stdin rule: with all ASCII whitespace removed, if what is left is
/// non-empty, consists only of the standard base64 alphabet (`A-Z a-z 0-9 +
/// /` and `=` padding) and decodes as padded standard base64, the decoded
/// bytes are the blob; otherwise the input is taken as the raw blob. A raw
/// blob is never mistaken for base64: every blob format starts with a
/// version byte outside the base64 alphabet (format 1: 0x01).
fn read_blob(file: Option<&Path>) -> Result<Vec<u8>, Failure> {
    let input = read_input(file, "the ciphertext blob (base64 or raw)")?;
    if file.is_some() {
        return Ok(input.to_vec());
    }
    if input.is_empty() {
        return Err(Failure::Usage(
            "no ciphertext on stdin (pipe it in, or use --ciphertext-file)".into(),
        ));
    }
    Ok(decode_base64_or_raw(&input))
}

fn decode_base64_or_raw(input: &[u8]) -> Vec<u8> {
    let compact: Vec<u8> = input
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let alphabet = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=');
    if !compact.is_empty() && compact.iter().all(alphabet) {
        if let Ok(decoded) = BASE64.decode(&compact) {
            if !decoded.is_empty() {
                return decoded;
            }
        }
    }
    input.to_vec()
}

// ------------------------------------------------------------------ commands

fn metadata(m: &KeyMetadata) -> Val<'_> {
    Val::Obj(vec![
        ("KeyId", s(&m.key_id)),
        ("Arn", s(&m.arn)),
        ("CreationDate", Val::Int(m.creation_date)),
        ("Enabled", Val::Bool(m.enabled)),
        ("Description", s(&m.description)),
        ("KeyState", s(m.key_state.name())),
        (
            "KeyUsage",
            s(match m.key_usage {
                KeyUsage::EncryptDecrypt => "ENCRYPT_DECRYPT",
            }),
        ),
        (
            "KeySpec",
            s(match m.key_spec {
                KeySpec::SymmetricDefault => "SYMMETRIC_DEFAULT",
            }),
        ),
        (
            "Origin",
            s(match m.origin {
                Origin::Kmsd => "KMSD",
                Origin::External => "EXTERNAL",
                Origin::Hsm => "HSM",
            }),
        ),
    ])
}

/// Human CreationDate: RFC 3339 UTC instead of epoch seconds.
fn humanize_metadata(v: &mut Val<'_>) {
    if let Val::Obj(fields) = v {
        for (k, f) in fields.iter_mut() {
            if let (&"CreationDate", Val::Int(secs)) = (&*k, &*f) {
                *f = Val::Str(Cow::Owned(rfc3339(*secs)));
            }
        }
    }
}

/// Seconds since the epoch as `YYYY-MM-DDThh:mm:ssZ` (proleptic Gregorian).
fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        tod / 3600,
        tod / 60 % 60,
        tod % 60
    )
}

fn run(cli: Cli) -> Result<(), Failure> {
    let p = Printer { json: cli.json };
    // Read inputs before connecting: a usage error should not depend on the
    // daemon being up, and a slow stdin should not hold a connection.
    let connect = || -> Result<Client, Failure> {
        let c = match cli.expect_uid {
            Some(uid) => Client::connect_expecting(&cli.socket, ServerUid::Exactly(uid)),
            // The library checks the default path (own uid or root).
            None => Client::connect(&cli.socket),
        }
        .map_err(Failure::Connect)?;
        let t = (cli.timeout > 0).then(|| Duration::from_secs(cli.timeout));
        c.stream().set_read_timeout(t).map_err(Failure::Connect)?;
        c.stream().set_write_timeout(t).map_err(Failure::Connect)?;
        Ok(c)
    };
    match &cli.command {
        Command::CreateKey {
            description,
            origin,
        } => {
            let origin = match origin {
                OriginArg::Kmsd => Origin::Kmsd,
                OriginArg::Hsm => Origin::Hsm,
            };
            let m = connect()?.create_key_with_origin(description, origin)?;
            let mut md = metadata(&m);
            if !p.json {
                humanize_metadata(&mut md);
            }
            p.emit(None, vec![("KeyMetadata", md)], None)
        }
        Command::DescribeKey { key_id } => {
            let m = connect()?.describe_key(key_id)?;
            let mut md = metadata(&m);
            if !p.json {
                humanize_metadata(&mut md);
            }
            p.emit(None, vec![("KeyMetadata", md)], None)
        }
        Command::ListKeys { limit, marker, all } => {
            let mut c = connect()?;
            let limit = limit.unwrap_or(0);
            let mut page = c.list_keys(limit, marker.as_deref())?;
            let mut keys = std::mem::take(&mut page.keys);
            while *all && page.truncated {
                let Some(next) = page.next_marker.take() else {
                    break;
                };
                page = c.list_keys(limit, Some(&next))?;
                if page.next_marker.as_deref() == Some(next.as_str()) {
                    return Err(Failure::Kms(KmsError::new(
                        ErrorKind::KmsInternal,
                        "the daemon returned the same marker twice",
                    )));
                }
                keys.append(&mut page.keys);
            }
            let mut fields = vec![(
                "Keys",
                Val::List(
                    keys.iter()
                        .map(|k| Val::Obj(vec![("KeyId", s(&k.key_id)), ("KeyArn", s(&k.arn))]))
                        .collect(),
                ),
            )];
            if let Some(m) = &page.next_marker {
                fields.push(("NextMarker", s(m)));
            }
            fields.push(("Truncated", Val::Bool(page.truncated)));
            p.emit(None, fields, None)
        }
        Command::GenerateDataKey(a) | Command::GenerateDataKeyWithoutPlaintext(a) => {
            let with_plaintext = matches!(cli.command, Command::GenerateDataKey(_));
            let req = GenerateDataKey {
                key_id: &a.key_id,
                number_of_bytes: a.number_of_bytes,
                key_spec: a.key_spec.map(|k| match k {
                    KeySpecArg::Aes128 => DataKeySpec::Aes128,
                    KeySpecArg::Aes256 => DataKeySpec::Aes256,
                }),
                context: pairs(&a.context),
            };
            let op = if with_plaintext {
                Operation::GenerateDataKey(req)
            } else {
                Operation::GenerateDataKeyWithoutPlaintext(req)
            };
            let out = a.output.output.as_deref();
            match connect()?.call(op)? {
                Output::GenerateDataKey(o) => p.emit(
                    out,
                    vec![
                        ("KeyId", s(&o.key_id)),
                        ("Plaintext", Val::Bin(o.plaintext.expose())),
                        ("CiphertextBlob", Val::Bin(&o.ciphertext_blob)),
                    ],
                    Some(Main {
                        name: "Plaintext",
                        bytes: o.plaintext.expose(),
                        secret: true,
                    }),
                ),
                Output::GenerateDataKeyWithoutPlaintext(o) => p.emit(
                    out,
                    vec![
                        ("KeyId", s(&o.key_id)),
                        ("CiphertextBlob", Val::Bin(&o.ciphertext_blob)),
                    ],
                    Some(Main {
                        name: "CiphertextBlob",
                        bytes: &o.ciphertext_blob,
                        secret: false,
                    }),
                ),
                _ => Err(wrong_answer()),
            }
        }
        Command::Encrypt {
            key_id,
            plaintext_file,
            context,
            output,
        } => {
            let plaintext = read_input(plaintext_file.as_deref(), "the plaintext")?;
            let o = connect()?.encrypt(key_id, &plaintext, &pairs(context))?;
            drop(plaintext);
            p.emit(
                output.output.as_deref(),
                vec![
                    ("KeyId", s(&o.key_id)),
                    ("CiphertextBlob", Val::Bin(&o.ciphertext_blob)),
                    ("EncryptionAlgorithm", s("SYMMETRIC_DEFAULT")),
                ],
                Some(Main {
                    name: "CiphertextBlob",
                    bytes: &o.ciphertext_blob,
                    secret: false,
                }),
            )
        }
        Command::Decrypt {
            ciphertext_file,
            key_id,
            context,
            output,
        } => {
            let blob = read_blob(ciphertext_file.as_deref())?;
            let o = connect()?.decrypt(&blob, key_id.as_deref(), &pairs(context))?;
            p.emit(
                output.output.as_deref(),
                vec![
                    ("KeyId", s(&o.key_id)),
                    ("Plaintext", Val::Bin(o.plaintext.expose())),
                    ("EncryptionAlgorithm", s("SYMMETRIC_DEFAULT")),
                ],
                Some(Main {
                    name: "Plaintext",
                    bytes: o.plaintext.expose(),
                    secret: true,
                }),
            )
        }
        Command::ReEncrypt {
            destination_key_id,
            source_key_id,
            ciphertext_file,
            source_context,
            destination_context,
            output,
        } => {
            let blob = read_blob(ciphertext_file.as_deref())?;
            let op = Operation::ReEncrypt(ReEncrypt {
                ciphertext_blob: &blob,
                source_key_id: source_key_id.as_deref(),
                source_context: pairs(source_context),
                destination_key_id,
                destination_context: pairs(destination_context),
            });
            match connect()?.call(op)? {
                Output::ReEncrypt(o) => p.emit(
                    output.output.as_deref(),
                    vec![
                        ("CiphertextBlob", Val::Bin(&o.ciphertext_blob)),
                        ("SourceKeyId", s(&o.source_key_id)),
                        ("KeyId", s(&o.key_id)),
                        ("SourceEncryptionAlgorithm", s("SYMMETRIC_DEFAULT")),
                        ("DestinationEncryptionAlgorithm", s("SYMMETRIC_DEFAULT")),
                    ],
                    Some(Main {
                        name: "CiphertextBlob",
                        bytes: &o.ciphertext_blob,
                        secret: false,
                    }),
                ),
                _ => Err(wrong_answer()),
            }
        }
        Command::GenerateRandom {
            number_of_bytes,
            output,
        } => {
            let r = connect()?.generate_random(*number_of_bytes)?;
            p.emit(
                output.output.as_deref(),
                vec![("Plaintext", Val::Bin(r.expose()))],
                Some(Main {
                    name: "Plaintext",
                    bytes: r.expose(),
                    secret: true,
                }),
            )
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let socket = cli.socket.clone();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Kms(e)) => {
            eprintln!("kmsctl: {e}");
            ExitCode::from(1)
        }
        Err(Failure::Usage(msg)) => {
            eprintln!("kmsctl: {msg}");
            ExitCode::from(2)
        }
        Err(Failure::Connect(e)) => {
            eprintln!(
                "kmsctl: cannot talk to kmsd at {}: {e}\n{}",
                socket.display(),
                connect_hint(&socket, &e)
            );
            ExitCode::from(3)
        }
        Err(Failure::Output(msg)) => {
            eprintln!("kmsctl: {msg}");
            ExitCode::from(4)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_consistent() {
        <Cli as clap::CommandFactory>::command().debug_assert();
    }

    #[test]
    fn pairs_split_at_the_first_equals() {
        assert_eq!(parse_pair("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert_eq!(parse_pair("a=").unwrap(), ("a".into(), "".into()));
        assert!(parse_pair("novalue").is_err());
    }

    #[test]
    fn stdin_blob_rule() {
        let raw = [0x01u8, 0xff, 0x00, b'A'];
        assert_eq!(decode_base64_or_raw(&raw), raw);
        let text = format!("{}\n", BASE64.encode(raw));
        assert_eq!(decode_base64_or_raw(text.as_bytes()), raw);
        // Wrapped base64 (as `base64` prints it) still decodes.
        let long = [0xabu8; 100];
        let wrapped: String = BASE64
            .encode(long)
            .as_bytes()
            .chunks(76)
            .map(|c| format!("{}\n", std::str::from_utf8(c).unwrap()))
            .collect();
        assert_eq!(decode_base64_or_raw(wrapped.as_bytes()), long);
        // Not cleanly decodable (bad length): taken as raw.
        assert_eq!(decode_base64_or_raw(b"abc"), b"abc");
    }

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
