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

mod status;

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

mod audit;

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
    /// Made by kmsd, wrapped by the root of trust (AWS's AWS_KMS, also
    /// accepted under that name).
    #[value(alias = "aws-kms", alias = "aws_kms", alias = "AWS_KMS")]
    Kmsd,
    /// Generated inside the HSM.
    Hsm,
    /// None yet: the key waits (PendingImport) for import-key-material.
    External,
}

/// `kmsctl audit ...`.
#[derive(Subcommand)]
enum AuditCommand {
    /// Check the audit log: the hash chain across files (offline), then the
    /// seals and the chain's head with the daemon. Exit 0 whole, 1 not
    /// (the first bad record is named), 2 unreadable, 3 daemon unreachable,
    /// 5 whole but for a record torn by a crash.
    Verify {
        /// The audit directory [default: ~/.local/share/kmsd/audit, as the
        /// daemon's default data directory].
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Check the chain only, without asking the daemon (seals and head
        /// unchecked).
        #[arg(long)]
        offline: bool,
    },
    /// Print the last records (a summary line each; raw JSON with --json).
    Tail {
        /// The audit directory [default: as for verify].
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// How many records.
        #[arg(short = 'n', value_name = "N", default_value_t = 10)]
        n: usize,
        /// Keep printing new records as they are written, across rotations.
        #[arg(long, short = 'f')]
        follow: bool,
    },
}

#[derive(Subcommand)]
enum Command {
    /// The audit log: verify its chain and seals, or follow it.
    #[command(subcommand)]
    Audit(AuditCommand),
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
        /// Tag of the new key (repeatable, at most 50).
        #[arg(long = "tag", value_name = "K=V", value_parser = parse_pair)]
        tags: Vec<(String, String)>,
        /// The key policy, a JSON document read from FILE (`-`: stdin;
        /// `file://FILE` as the AWS CLI takes it); default: the default key
        /// policy.
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
        /// Skip the check that the policy lets you change it later.
        #[arg(long)]
        bypass_policy_lockout_safety_check: bool,
    },
    /// Show a key's metadata.
    DescribeKey {
        /// Key id or ARN.
        #[arg(long, value_name = "K")]
        key_id: String,
        /// A grant token (repeatable, at most 10).
        #[arg(long = "grant-tokens", alias = "grant-token", value_name = "TOKEN")]
        grant_tokens: Vec<String>,
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
        access: AccessArgs,
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
        access: AccessArgs,
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
        access: AccessArgs,
        #[command(flatten)]
        output: OutputArg,
    },
    /// The identity the daemon sees for this connection (uid, gid, pid from
    /// the kernel): what key policies and grants decide on.
    #[command(name = "whoami")]
    WhoAmI,
    /// The daemon's status (administrators only): uptime, version, requests
    /// and errors by operation and exception, latency percentiles, queues,
    /// key cache, key loader, HSM, connections and every other metric
    /// (docs/metrics.md). A summary; `--json` prints every series.
    Status,
    /// Random bytes from the daemon's CSPRNG.
    GenerateRandom {
        /// How many bytes (1..=1024).
        #[arg(long, value_name = "N")]
        number_of_bytes: u32,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Replace a key's description.
    UpdateKeyDescription {
        #[command(flatten)]
        key: KeyArg,
        /// The new description (at most 8192 characters; empty clears it).
        #[arg(long, value_name = "D")]
        description: String,
    },
    /// Add tags to a key, or change the value of tags it has.
    TagResource {
        /// Key id or ARN.
        #[arg(value_name = "KEY")]
        key_id: String,
        /// Tags (1 to 50).
        #[arg(value_name = "K=V", required = true, value_parser = parse_pair)]
        tags: Vec<(String, String)>,
    },
    /// Remove tags from a key.
    UntagResource {
        /// Key id or ARN.
        #[arg(value_name = "KEY")]
        key_id: String,
        /// Tag keys to remove (1 to 50).
        #[arg(value_name = "TAG_KEY", required = true)]
        tag_keys: Vec<String>,
    },
    /// List a key's tags, one page (or every page with --all).
    ListResourceTags {
        #[command(flatten)]
        key: KeyArg,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Create an alias (alias/NAME) for a key.
    CreateAlias {
        /// The alias: `alias/` and then letters, digits, `/`, `_`, `-`.
        #[arg(value_name = "ALIAS")]
        alias_name: String,
        /// Key id or ARN of the key it names.
        #[arg(value_name = "KEY")]
        target_key_id: String,
    },
    /// Point an alias at another key.
    UpdateAlias {
        /// The alias.
        #[arg(value_name = "ALIAS")]
        alias_name: String,
        /// Key id or ARN of the key it names from now on.
        #[arg(value_name = "KEY")]
        target_key_id: String,
    },
    /// Delete an alias (the key stays).
    DeleteAlias {
        /// The alias.
        #[arg(value_name = "ALIAS")]
        alias_name: String,
    },
    /// List aliases, one page (or every page with --all).
    ListAliases {
        /// Only the aliases of this key (id or ARN).
        #[arg(long, value_name = "KEY")]
        key_id: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Enable a key.
    EnableKey {
        #[command(flatten)]
        key: KeyArg,
    },
    /// Disable a key: it stays, but cannot be used until enabled again.
    DisableKey {
        #[command(flatten)]
        key: KeyArg,
    },
    /// Schedule a key's deletion after a waiting period.
    ScheduleKeyDeletion {
        #[command(flatten)]
        key: KeyArg,
        /// Waiting period in days (7..=30; default 30).
        #[arg(long, value_name = "DAYS")]
        pending_window_in_days: Option<u32>,
    },
    /// Cancel a scheduled deletion (the key is then Disabled).
    CancelKeyDeletion {
        #[command(flatten)]
        key: KeyArg,
    },
    /// Turn on automatic rotation of a key.
    EnableKeyRotation {
        #[command(flatten)]
        key: KeyArg,
        /// Days between rotations (90..=2560; default 365).
        #[arg(long, value_name = "DAYS")]
        rotation_period_in_days: Option<u32>,
    },
    /// Turn off automatic rotation of a key.
    DisableKeyRotation {
        #[command(flatten)]
        key: KeyArg,
    },
    /// Show whether a key rotates, and when next.
    GetKeyRotationStatus {
        #[command(flatten)]
        key: KeyArg,
    },
    /// Rotate a key now.
    RotateKeyOnDemand {
        #[command(flatten)]
        key: KeyArg,
    },
    /// List a key's rotations, one page (or every page with --all).
    ListKeyRotations {
        #[command(flatten)]
        key: KeyArg,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Get a wrapping public key and an import token for import-key-material.
    GetParametersForImport {
        #[command(flatten)]
        key: KeyArg,
        /// How the key material will be wrapped.
        #[arg(long, value_name = "ALG", value_parser = wrapping_algorithm_parser())]
        wrapping_algorithm: WrappingAlgorithm,
        /// The wrapping key's type.
        #[arg(long, value_name = "SPEC", value_parser = wrapping_key_spec_parser())]
        wrapping_key_spec: WrappingKeySpec,
        /// Write PublicKey.bin (DER) and ImportToken.bin (raw) in this
        /// directory (created if missing) instead of printing them in base64.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
    /// Import key material wrapped with get-parameters-for-import's key.
    ImportKeyMaterial {
        #[command(flatten)]
        key: KeyArg,
        /// The import token (raw, e.g. ImportToken.bin).
        #[arg(long, value_name = "FILE")]
        import_token: PathBuf,
        /// The wrapped key material (raw binary).
        #[arg(long, value_name = "FILE")]
        encrypted_key_material: PathBuf,
        /// When the material expires: RFC 3339 (2026-01-31T00:00:00Z) or
        /// seconds since the Unix epoch.
        #[arg(
            long,
            value_name = "TIME",
            value_parser = parse_time,
            required_unless_present = "no_expiry",
            conflicts_with = "no_expiry"
        )]
        valid_to: Option<i64>,
        /// The material does not expire (KEY_MATERIAL_DOES_NOT_EXPIRE).
        #[arg(long)]
        no_expiry: bool,
    },
    /// Delete a key's imported material (the key waits for a new import).
    DeleteImportedKeyMaterial {
        #[command(flatten)]
        key: KeyArg,
    },
    /// Replace a key's policy with a JSON document.
    PutKeyPolicy {
        #[command(flatten)]
        key: KeyArg,
        /// The key policy, a JSON document read from FILE (`-`: stdin;
        /// `file://FILE` as the AWS CLI takes it).
        #[arg(long, value_name = "FILE")]
        policy: PathBuf,
        /// The policy's name (AWS allows only `default`, the default).
        #[arg(long, value_name = "NAME")]
        policy_name: Option<String>,
        /// Skip the check that the policy lets you change it later.
        #[arg(long)]
        bypass_policy_lockout_safety_check: bool,
    },
    /// Print a key's policy: the JSON document itself (with --json, an
    /// object with Policy and PolicyName, as the AWS CLI prints it).
    GetKeyPolicy {
        #[command(flatten)]
        key: KeyArg,
        /// The policy's name (default: `default`).
        #[arg(long, value_name = "NAME")]
        policy_name: Option<String>,
        /// Write the policy document to FILE instead of printing it (`-`:
        /// stdout, and nothing else).
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// List the names of a key's policies (AWS: `default` only).
    ListKeyPolicies {
        #[command(flatten)]
        key: KeyArg,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Give a principal some operations on a key.
    CreateGrant {
        #[command(flatten)]
        key: KeyArg,
        /// Who gets the permissions (e.g. uid:1000, user:NAME, group:NAME).
        #[arg(long, value_name = "PRINCIPAL")]
        grantee_principal: String,
        /// The operations the grant allows: a comma-separated list, or the
        /// option repeated (e.g. --operations Decrypt,GenerateDataKey).
        #[arg(
            long,
            value_name = "OP",
            required = true,
            value_delimiter = ',',
            value_parser = grant_operation_parser()
        )]
        operations: Vec<GrantOperation>,
        /// Who may retire the grant besides its grantee.
        #[arg(long, value_name = "PRINCIPAL")]
        retiring_principal: Option<String>,
        /// Allow the operations only when the request's encryption context is
        /// exactly these pairs (repeatable).
        #[arg(
            long = "constraint-encryption-context-equals",
            value_name = "K=V",
            value_parser = parse_pair
        )]
        context_equals: Vec<(String, String)>,
        /// Allow the operations only when the request's encryption context
        /// includes these pairs (repeatable).
        #[arg(
            long = "constraint-encryption-context-subset",
            value_name = "K=V",
            value_parser = parse_pair
        )]
        context_subset: Vec<(String, String)>,
        /// A name: creating a grant of the same name and parameters again
        /// returns the same grant id.
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        #[command(flatten)]
        access: AccessArgs,
    },
    /// List a key's grants, one page (or every page with --all).
    ListGrants {
        #[command(flatten)]
        key: KeyArg,
        /// Only this grant.
        #[arg(long, value_name = "ID")]
        grant_id: Option<String>,
        /// Only the grants to this principal.
        #[arg(long, value_name = "PRINCIPAL")]
        grantee_principal: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// List the grants a principal may retire, over all keys.
    ListRetirableGrants {
        /// The retiring principal.
        #[arg(long, value_name = "PRINCIPAL")]
        retiring_principal: String,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Retire (delete) a grant, named by its token or by key and grant id.
    RetireGrant {
        /// The grant's token (from create-grant).
        #[arg(
            long,
            value_name = "TOKEN",
            required_unless_present_all = ["key_id", "grant_id"]
        )]
        grant_token: Option<String>,
        /// Key id or ARN of the grant's key (with --grant-id).
        #[arg(long, value_name = "KEY", requires = "grant_id")]
        key_id: Option<String>,
        /// The grant's id (with --key-id).
        #[arg(long, value_name = "ID", requires = "key_id")]
        grant_id: Option<String>,
        /// Only check that the request would succeed (DryRunOperationException
        /// if it would have).
        #[arg(long)]
        dry_run: bool,
    },
    /// Revoke (delete) a grant of a key.
    RevokeGrant {
        #[command(flatten)]
        key: KeyArg,
        /// The grant's id.
        #[arg(long, value_name = "ID")]
        grant_id: String,
        /// Only check that the request would succeed (DryRunOperationException
        /// if it would have).
        #[arg(long)]
        dry_run: bool,
    },
}

/// The key of a command: positional, or `--key-id` as in the AWS CLI.
#[derive(Args)]
#[group(id = "key_arg", required = true, multiple = false)]
struct KeyArg {
    /// Key id or ARN.
    #[arg(value_name = "KEY")]
    key: Option<String>,
    /// Key id or ARN (the AWS CLI's spelling; same as KEY).
    #[arg(long = "key-id", value_name = "KEY")]
    key_id: Option<String>,
}

impl KeyArg {
    fn get(&self) -> &str {
        // clap requires exactly one of the two.
        self.key
            .as_deref()
            .or(self.key_id.as_deref())
            .unwrap_or_default()
    }
}

/// Paging options of the list commands.
#[derive(Args)]
struct PageArgs {
    /// Page size (default: the daemon's: 50 for list-resource-tags,
    /// list-grants and list-retirable-grants, else 100).
    #[arg(long, value_name = "N")]
    limit: Option<u32>,
    /// Continue after this marker (NextMarker of the previous page).
    #[arg(long, value_name = "M")]
    marker: Option<String>,
    /// Follow NextMarker until the last page; print everything at once.
    #[arg(long)]
    all: bool,
}

/// Grant tokens and dry run, of the commands that take them.
#[derive(Args)]
struct AccessArgs {
    /// A grant token (repeatable, at most 10): use a grant before it is
    /// known everywhere.
    #[arg(long = "grant-tokens", alias = "grant-token", value_name = "TOKEN")]
    grant_tokens: Vec<String>,
    /// Only check that the request would succeed: the daemon answers
    /// DryRunOperationException (exit 1) when it would have, else the error
    /// it would have had.
    #[arg(long)]
    dry_run: bool,
}

impl AccessArgs {
    fn tokens(&self) -> Vec<&str> {
        self.grant_tokens.iter().map(String::as_str).collect()
    }
}

fn grant_operation_parser() -> impl clap::builder::TypedValueParser<Value = GrantOperation> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(GrantOperation::ALL.iter().map(|o| o.name()))
        .map(|s| GrantOperation::from_name(&s).expect("a possible value"))
}

fn wrapping_algorithm_parser() -> impl clap::builder::TypedValueParser<Value = WrappingAlgorithm> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(WrappingAlgorithm::ALL.iter().map(|a| a.name()))
        .map(|s| WrappingAlgorithm::from_name(&s).expect("a possible value"))
}

fn wrapping_key_spec_parser() -> impl clap::builder::TypedValueParser<Value = WrappingKeySpec> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(WrappingKeySpec::ALL.iter().map(|a| a.name()))
        .map(|s| WrappingKeySpec::from_name(&s).expect("a possible value"))
}

/// A time given as RFC 3339 (`2026-01-31T00:00:00Z`, `...+02:00`, with
/// optional fractions of a second, which are dropped) or as seconds since
/// the Unix epoch; seconds since the epoch.
fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(secs) = s.parse::<i64>() {
        return Ok(secs);
    }
    let bad =
        || format!("expected RFC 3339 (e.g. 2026-01-31T00:00:00Z) or epoch seconds, found {s:?}");
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Result<i64, String> {
        let t = s.get(r).ok_or_else(bad)?;
        if t.bytes().all(|c| c.is_ascii_digit()) {
            t.parse().map_err(|_| bad())
        } else {
            Err(bad())
        }
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err(bad());
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let rb = rest.as_bytes();
            if rb.len() != 6 || !matches!(rb[0], b'+' | b'-') || rb[3] != b':' {
                return Err(bad());
            }
            let num = |t: &str| -> Result<i64, String> {
                if t.bytes().all(|c| c.is_ascii_digit()) {
                    t.parse().map_err(|_| bad())
                } else {
                    Err(bad())
                }
            };
            let (h, m) = (num(&rest[1..3])?, num(&rest[4..6])?);
            if h > 23 || m > 59 {
                return Err(bad());
            }
            let o = h * 3600 + m * 60;
            if rb[0] == b'-' {
                -o
            } else {
                o
            }
        }
    };
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&month)
        || day < 1
        || day > month_days[(month - 1) as usize]
        || hour > 23
        || min > 59
        || sec > 60
    {
        return Err(bad());
    }
    Ok(days_from_civil(year, month, day) * 86_400 + hour * 3600 + min * 60 + sec - offset)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// days_from_civil; the inverse of [`rfc3339`]'s).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
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
    access: AccessArgs,
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
    /// A map with the client's own keys (an encryption context), in order.
    Map(&'a [(String, String)]),
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
            Val::Map(pairs) => {
                let mut m = ser.serialize_map(Some(pairs.len()))?;
                for (k, v) in pairs.iter() {
                    m.serialize_entry(k, v)?;
                }
                m.end()
            }
        }
    }
}

/// Text for human output, control characters escaped so that a description
/// cannot forge extra lines.
fn human_text(t: &str) -> String {
    if t.chars().any(char::is_control) {
        t.escape_debug().to_string()
    } else {
        t.to_string()
    }
}

/// Text of a scalar for human output; control characters are escaped so that
/// a description cannot forge extra lines. An object's values are separated
/// by two spaces; an object or map inside one shows its field name
/// (`EncryptionContextSubset:{k=v,k2=v2}`).
fn human_scalar(v: &Val<'_>) -> Zeroizing<String> {
    Zeroizing::new(match v {
        Val::Str(t) => human_text(t),
        Val::Bool(b) => b.to_string(),
        Val::Int(i) => i.to_string(),
        Val::Bin(b) => return b64(b),
        Val::Obj(fields) => fields
            .iter()
            .map(|(k, v)| match v {
                Val::Obj(inner) => inner
                    .iter()
                    .map(|(k, v)| format!("{k}:{}", &*human_scalar(v)))
                    .collect::<Vec<_>>()
                    .join(" "),
                Val::Map(_) => format!("{k}:{}", &*human_scalar(v)),
                _ => human_scalar(v).to_string(),
            })
            .collect::<Vec<_>>()
            .join("  "),
        Val::Map(pairs) => format!(
            "{{{}}}",
            pairs
                .iter()
                .map(|(k, v)| format!("{}={}", human_text(k), human_text(v)))
                .collect::<Vec<_>>()
                .join(",")
        ),
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
        if !self.json {
            humanize_times(&mut fields);
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

/// The FILE of `--policy`: `-` is stdin, and `file://FILE` (the AWS CLI's
/// spelling) is FILE.
fn policy_source(arg: &Path) -> Option<&Path> {
    let path = arg
        .to_str()
        .and_then(|s| s.strip_prefix("file://"))
        .map_or(arg, Path::new);
    (path != Path::new("-")).then_some(path)
}

/// A key policy document (JSON text) from `--policy`.
fn read_policy(arg: &Path) -> Result<String, Failure> {
    let source = policy_source(arg);
    let bytes = read_input(source, "the key policy (JSON)")?;
    String::from_utf8(bytes.to_vec()).map_err(|_| {
        Failure::Usage(format!(
            "the key policy in {} is not UTF-8 text",
            source.map_or("stdin".into(), |p| p.display().to_string())
        ))
    })
}

/// Writes `text` to stdout as it is, with a final newline if it has none.
fn print_raw(text: &str) -> Result<(), Failure> {
    let mut stdout = io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| {
            if text.ends_with('\n') {
                Ok(())
            } else {
                stdout.write_all(b"\n")
            }
        })
        .and_then(|()| stdout.flush())
        .map_err(|e| Failure::Output(format!("writing to stdout: {e}")))
}

// ------------------------------------------------------------------ commands

fn metadata(m: &KeyMetadata) -> Val<'_> {
    let mut fields = vec![
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
    ];
    // As AWS, fields that do not apply to the key are left out.
    if let Some(d) = m.deletion_date {
        fields.push(("DeletionDate", Val::Int(d)));
    }
    if let Some(w) = m.pending_deletion_window_in_days {
        fields.push(("PendingDeletionWindowInDays", Val::Int(w.into())));
    }
    if let Some(v) = m.valid_to {
        fields.push(("ValidTo", Val::Int(v)));
    }
    if let Some(e) = m.expiration_model {
        fields.push(("ExpirationModel", s(e.name())));
    }
    Val::Obj(fields)
}

/// Whether a field holds a time (seconds since the epoch in JSON, as AWS).
fn is_time(name: &str) -> bool {
    name.ends_with("Date") || name.ends_with("ValidTo")
}

/// Human times: RFC 3339 UTC instead of epoch seconds, at any depth.
fn humanize_times(fields: &mut [(&'static str, Val<'_>)]) {
    for (k, f) in fields.iter_mut() {
        match f {
            Val::Int(secs) if is_time(k) => *f = Val::Str(Cow::Owned(rfc3339(*secs))),
            Val::Obj(inner) => humanize_times(inner),
            Val::List(items) => {
                for item in items {
                    if let Val::Obj(inner) = item {
                        humanize_times(inner);
                    }
                }
            }
            _ => {}
        }
    }
}

fn key_entry(k: &KeyListEntry) -> Val<'_> {
    Val::Obj(vec![("KeyId", s(&k.key_id)), ("KeyArn", s(&k.arn))])
}

fn tag_entry(t: &OwnedTag) -> Val<'_> {
    Val::Obj(vec![("TagKey", s(&t.key)), ("TagValue", s(&t.value))])
}

fn alias_entry(a: &AliasListEntry) -> Val<'_> {
    let mut fields = vec![
        ("AliasName", s(&a.alias_name)),
        ("AliasArn", s(&a.alias_arn)),
    ];
    if let Some(k) = &a.target_key_id {
        fields.push(("TargetKeyId", s(k)));
    }
    fields.push(("CreationDate", Val::Int(a.creation_date)));
    fields.push(("LastUpdatedDate", Val::Int(a.last_updated_date)));
    Val::Obj(fields)
}

/// A grant's constraints, as the AWS CLI shows them (absent lists left
/// out).
fn constraints(c: &OwnedGrantConstraints) -> Val<'_> {
    let mut fields = Vec::new();
    if !c.encryption_context_subset.is_empty() {
        fields.push((
            "EncryptionContextSubset",
            Val::Map(&c.encryption_context_subset),
        ));
    }
    if !c.encryption_context_equals.is_empty() {
        fields.push((
            "EncryptionContextEquals",
            Val::Map(&c.encryption_context_equals),
        ));
    }
    Val::Obj(fields)
}

fn grant_entry(g: &GrantListEntry) -> Val<'_> {
    let mut fields = vec![("KeyId", s(&g.key_id)), ("GrantId", s(&g.grant_id))];
    if let Some(n) = &g.name {
        fields.push(("Name", s(n)));
    }
    fields.push(("CreationDate", Val::Int(g.creation_date)));
    fields.push(("GranteePrincipal", s(&g.grantee_principal)));
    if let Some(r) = &g.retiring_principal {
        fields.push(("RetiringPrincipal", s(r)));
    }
    fields.push(("IssuingAccount", s(&g.issuing_account)));
    fields.push((
        "Operations",
        Val::List(g.operations.iter().map(|o| s(o.name())).collect()),
    ));
    if let Some(c) = &g.constraints {
        fields.push(("Constraints", constraints(c)));
    }
    Val::Obj(fields)
}

fn rotation_entry(r: &RotationsListEntry) -> Val<'_> {
    Val::Obj(vec![
        ("KeyId", s(&r.key_id)),
        ("RotationDate", Val::Int(r.rotation_date)),
        ("RotationType", s(r.rotation_type.name())),
    ])
}

/// The fields of a list command's output: `name` (the entries), then
/// NextMarker when there is one, then Truncated.
fn page_fields<'a>(
    name: &'static str,
    entries: Vec<Val<'a>>,
    next_marker: Option<&'a str>,
    truncated: bool,
) -> Vec<(&'static str, Val<'a>)> {
    let mut fields = vec![(name, Val::List(entries))];
    if let Some(m) = next_marker {
        fields.push(("NextMarker", s(m)));
    }
    fields.push(("Truncated", Val::Bool(truncated)));
    fields
}

/// The fields of the outputs that carry no secret and no main binary field
/// (everything but the data-key, encrypt and decrypt family); `None` for
/// those.
fn output_fields(o: &Output) -> Option<Vec<(&'static str, Val<'_>)>> {
    let opt_int = |name, v: Option<i64>| v.map(|v| (name, Val::Int(v)));
    Some(match o {
        Output::CreateKey(m) | Output::DescribeKey(m) => vec![("KeyMetadata", metadata(m))],
        Output::ListKeys(l) => page_fields(
            "Keys",
            l.keys.iter().map(key_entry).collect(),
            l.next_marker.as_deref(),
            l.truncated,
        ),
        Output::ListResourceTags(l) => page_fields(
            "Tags",
            l.tags.iter().map(tag_entry).collect(),
            l.next_marker.as_deref(),
            l.truncated,
        ),
        Output::ListAliases(l) => page_fields(
            "Aliases",
            l.aliases.iter().map(alias_entry).collect(),
            l.next_marker.as_deref(),
            l.truncated,
        ),
        Output::ListKeyRotations(l) => page_fields(
            "Rotations",
            l.rotations.iter().map(rotation_entry).collect(),
            l.next_marker.as_deref(),
            l.truncated,
        ),
        Output::ScheduleKeyDeletion(o) => vec![
            ("KeyId", s(&o.key_id)),
            ("DeletionDate", Val::Int(o.deletion_date)),
            ("KeyState", s(o.key_state.name())),
            (
                "PendingWindowInDays",
                Val::Int(o.pending_window_in_days.into()),
            ),
        ],
        Output::CancelKeyDeletion(o) => vec![("KeyId", s(&o.key_id))],
        Output::RotateKeyOnDemand(o) => vec![("KeyId", s(&o.key_id))],
        Output::GetKeyRotationStatus(o) => {
            let mut fields = vec![
                ("KeyRotationEnabled", Val::Bool(o.key_rotation_enabled)),
                ("KeyId", s(&o.key_id)),
            ];
            fields.extend(
                o.rotation_period_in_days
                    .map(|d| ("RotationPeriodInDays", Val::Int(d.into()))),
            );
            fields.extend(opt_int("NextRotationDate", o.next_rotation_date));
            fields.extend(opt_int(
                "OnDemandRotationStartDate",
                o.on_demand_rotation_start_date,
            ));
            fields
        }
        Output::GetParametersForImport(o) => vec![
            ("KeyId", s(&o.key_id)),
            ("ImportToken", Val::Bin(&o.import_token)),
            ("PublicKey", Val::Bin(&o.public_key)),
            ("ParametersValidTo", Val::Int(o.parameters_valid_to)),
        ],
        Output::GetKeyPolicy(o) => {
            vec![("Policy", s(&o.policy)), ("PolicyName", s(&o.policy_name))]
        }
        Output::ListKeyPolicies(l) => page_fields(
            "PolicyNames",
            l.policy_names.iter().map(|n| s(n)).collect(),
            l.next_marker.as_deref(),
            l.truncated,
        ),
        Output::CreateGrant(o) => vec![
            ("GrantToken", s(&o.grant_token)),
            ("GrantId", s(&o.grant_id)),
        ],
        Output::ListGrants(l) | Output::ListRetirableGrants(l) => page_fields(
            "Grants",
            l.grants.iter().map(grant_entry).collect(),
            l.next_marker.as_deref(),
            l.truncated,
        ),
        // AWS answers these with no fields: an empty object in JSON,
        // nothing in human output.
        Output::UpdateKeyDescription
        | Output::TagResource
        | Output::UntagResource
        | Output::CreateAlias
        | Output::UpdateAlias
        | Output::DeleteAlias
        | Output::EnableKey
        | Output::DisableKey
        | Output::EnableKeyRotation
        | Output::DisableKeyRotation
        | Output::ImportKeyMaterial
        | Output::DeleteImportedKeyMaterial
        | Output::PutKeyPolicy
        | Output::RetireGrant
        | Output::RevokeGrant => vec![],
        // Printed by `kmsctl status` itself (status.rs).
        Output::GetStatus(_) => return None,
        Output::VerifyAuditSeals(v) => vec![
            (
                "Valid",
                Val::List(v.valid.iter().map(|b| Val::Bool(*b)).collect()),
            ),
            ("HeadSequenceNumber", Val::Int(v.head_seq as i64)),
        ],
        Output::WhoAmI(w) => {
            let mut fields = vec![
                ("Uid", Val::Int(i64::from(w.uid))),
                ("Gid", Val::Int(i64::from(w.gid))),
                ("Pid", Val::Int(i64::from(w.pid))),
                (
                    "Groups",
                    Val::List(w.groups.iter().map(|g| Val::Int(i64::from(*g))).collect()),
                ),
            ];
            if let Some(u) = &w.unit {
                fields.push(("Unit", s(u)));
            }
            if let Some(c) = &w.cgroup {
                fields.push(("Cgroup", s(c)));
            }
            fields
        }
        Output::GenerateDataKey(_)
        | Output::GenerateDataKeyWithoutPlaintext(_)
        | Output::Encrypt(_)
        | Output::Decrypt(_)
        | Output::ReEncrypt(_)
        | Output::GenerateRandom(_) => return None,
    })
}

/// One page (from `marker`), or with `all` that page and every page after
/// it: the entries, then the last page's NextMarker and Truncated.
fn pages<T>(
    all: bool,
    marker: Option<&str>,
    mut fetch: impl FnMut(Option<&str>) -> Result<(Vec<T>, Option<String>, bool), Failure>,
) -> Result<(Vec<T>, Option<String>, bool), Failure> {
    let (mut entries, mut next, mut truncated) = fetch(marker)?;
    while all && truncated {
        let Some(m) = next.take() else {
            break;
        };
        let (mut more, n, t) = fetch(Some(&m))?;
        if n.as_deref() == Some(m.as_str()) {
            return Err(Failure::Kms(KmsError::new(
                ErrorKind::KmsInternal,
                "the daemon returned the same marker twice",
            )));
        }
        entries.append(&mut more);
        (next, truncated) = (n, t);
    }
    Ok((entries, next, truncated))
}

/// Writes get-parameters-for-import's public key and token as the AWS CLI
/// documentation does (`PublicKey.bin`, `ImportToken.bin`, raw bytes) in
/// `dir`, created if missing; their paths.
fn write_import_parameters(
    dir: &Path,
    o: &GetParametersForImportOutput,
) -> Result<(PathBuf, PathBuf), Failure> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Failure::Output(format!("creating {}: {e}", dir.display())))?;
    let key = dir.join("PublicKey.bin");
    let token = dir.join("ImportToken.bin");
    write_file(&key, &o.public_key, false)
        .map_err(|e| Failure::Output(format!("writing {}: {e}", key.display())))?;
    // The token is bound to the key and its wrapping key: kept private.
    write_file(&token, &o.import_token, true)
        .map_err(|e| Failure::Output(format!("writing {}: {e}", token.display())))?;
    Ok((key, token))
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

/// A connection as `cli` says (uid check, timeouts).
fn connect(cli: &Cli) -> io::Result<Client> {
    let c = match cli.expect_uid {
        Some(uid) => Client::connect_expecting(&cli.socket, ServerUid::Exactly(uid)),
        None => Client::connect(&cli.socket),
    }?;
    let t = (cli.timeout > 0).then(|| Duration::from_secs(cli.timeout));
    c.stream().set_read_timeout(t)?;
    c.stream().set_write_timeout(t)?;
    Ok(c)
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
        Command::Status => {
            let st = connect()?.get_status()?;
            let text = if p.json {
                status::json(&st)
            } else {
                status::human(&st)
            };
            let mut stdout = io::stdout().lock();
            stdout
                .write_all(text.as_bytes())
                .and_then(|()| stdout.flush())
                .map_err(|e| Failure::Output(format!("writing to stdout: {e}")))
        }
        Command::CreateKey {
            description,
            origin,
            tags,
            policy,
            bypass_policy_lockout_safety_check,
        } => {
            let origin = match origin {
                OriginArg::Kmsd => Origin::Kmsd,
                OriginArg::Hsm => Origin::Hsm,
                OriginArg::External => Origin::External,
            };
            let policy = policy.as_deref().map(read_policy).transpose()?;
            let m = connect()?.create_key_with(CreateKey {
                description,
                origin,
                tags: tag_list(tags),
                policy: policy.as_deref(),
                bypass_policy_lockout_safety_check: *bypass_policy_lockout_safety_check,
                ..CreateKey::default()
            })?;
            p.emit(None, vec![("KeyMetadata", metadata(&m))], None)
        }
        Command::DescribeKey {
            key_id,
            grant_tokens,
        } => {
            let m = connect()?.describe_key_with(DescribeKey {
                key_id,
                grant_tokens: grant_tokens.iter().map(String::as_str).collect(),
            })?;
            p.emit(None, vec![("KeyMetadata", metadata(&m))], None)
        }
        Command::ListKeys { limit, marker, all } => {
            let mut c = connect()?;
            let (keys, next, truncated) = pages(*all, marker.as_deref(), |m| {
                let o = c.list_keys(limit.unwrap_or(0), m)?;
                Ok((o.keys, o.next_marker, o.truncated))
            })?;
            p.emit(
                None,
                page_fields(
                    "Keys",
                    keys.iter().map(key_entry).collect(),
                    next.as_deref(),
                    truncated,
                ),
                None,
            )
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
                grant_tokens: a.access.tokens(),
                dry_run: a.access.dry_run,
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
            access,
            output,
        } => {
            let plaintext = read_input(plaintext_file.as_deref(), "the plaintext")?;
            let o = connect()?.encrypt_with(Encrypt {
                key_id,
                plaintext: &plaintext,
                context: pairs(context),
                grant_tokens: access.tokens(),
                dry_run: access.dry_run,
            })?;
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
            access,
            output,
        } => {
            let blob = read_blob(ciphertext_file.as_deref())?;
            let o = connect()?.decrypt_with(Decrypt {
                ciphertext_blob: &blob,
                key_id: key_id.as_deref(),
                context: pairs(context),
                grant_tokens: access.tokens(),
                dry_run: access.dry_run,
            })?;
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
            access,
            output,
        } => {
            let blob = read_blob(ciphertext_file.as_deref())?;
            let o = connect()?.re_encrypt(ReEncrypt {
                ciphertext_blob: &blob,
                source_key_id: source_key_id.as_deref(),
                source_context: pairs(source_context),
                destination_key_id,
                destination_context: pairs(destination_context),
                grant_tokens: access.tokens(),
                dry_run: access.dry_run,
            })?;
            p.emit(
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
            )
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
        Command::ListResourceTags { key, page } => {
            let mut c = connect()?;
            let (tags, next, truncated) = pages(page.all, page.marker.as_deref(), |m| {
                let o = c.list_resource_tags(key.get(), page.limit.unwrap_or(0), m)?;
                Ok((o.tags, o.next_marker, o.truncated))
            })?;
            p.emit(
                None,
                page_fields(
                    "Tags",
                    tags.iter().map(tag_entry).collect(),
                    next.as_deref(),
                    truncated,
                ),
                None,
            )
        }
        Command::ListAliases { key_id, page } => {
            let mut c = connect()?;
            let (aliases, next, truncated) = pages(page.all, page.marker.as_deref(), |m| {
                let o = c.list_aliases(key_id.as_deref(), page.limit.unwrap_or(0), m)?;
                Ok((o.aliases, o.next_marker, o.truncated))
            })?;
            p.emit(
                None,
                page_fields(
                    "Aliases",
                    aliases.iter().map(alias_entry).collect(),
                    next.as_deref(),
                    truncated,
                ),
                None,
            )
        }
        Command::ListKeyRotations { key, page } => {
            let mut c = connect()?;
            let (rotations, next, truncated) = pages(page.all, page.marker.as_deref(), |m| {
                let o = c.list_key_rotations(key.get(), page.limit.unwrap_or(0), m)?;
                Ok((o.rotations, o.next_marker, o.truncated))
            })?;
            p.emit(
                None,
                page_fields(
                    "Rotations",
                    rotations.iter().map(rotation_entry).collect(),
                    next.as_deref(),
                    truncated,
                ),
                None,
            )
        }
        Command::GetParametersForImport {
            key,
            wrapping_algorithm,
            wrapping_key_spec,
            out_dir,
        } => {
            let o = connect()?.get_parameters_for_import(
                key.get(),
                *wrapping_algorithm,
                *wrapping_key_spec,
            )?;
            let Some(dir) = out_dir else {
                let out = Output::GetParametersForImport(o);
                return p.emit(None, output_fields(&out).ok_or_else(wrong_answer)?, None);
            };
            let (public_key, token) = write_import_parameters(dir, &o)?;
            let (public_key, token) = (
                public_key.display().to_string(),
                token.display().to_string(),
            );
            p.emit(
                None,
                vec![
                    ("KeyId", s(&o.key_id)),
                    ("PublicKeyFile", s(&public_key)),
                    ("ImportTokenFile", s(&token)),
                    ("ParametersValidTo", Val::Int(o.parameters_valid_to)),
                ],
                None,
            )
        }
        Command::ImportKeyMaterial {
            key,
            import_token,
            encrypted_key_material,
            valid_to,
            no_expiry: _,
        } => {
            // Both are raw binary files, as the AWS CLI's fileb://.
            let token = read_input(Some(import_token), "the import token")?;
            let material = read_input(Some(encrypted_key_material), "the key material")?;
            connect()?.import_key_material(ImportKeyMaterial {
                key_id: key.get(),
                import_token: &token,
                encrypted_key_material: &material,
                valid_to: *valid_to,
                // clap requires exactly one of --valid-to and --no-expiry.
                expiration_model: if valid_to.is_some() {
                    ExpirationModel::KeyMaterialExpires
                } else {
                    ExpirationModel::KeyMaterialDoesNotExpire
                },
            })?;
            p.emit(None, vec![], None)
        }
        Command::PutKeyPolicy {
            key,
            policy,
            policy_name,
            bypass_policy_lockout_safety_check,
        } => {
            let policy = read_policy(policy)?;
            connect()?.put_key_policy_with(PutKeyPolicy {
                key_id: key.get(),
                policy_name: policy_name.as_deref(),
                policy: &policy,
                bypass_policy_lockout_safety_check: *bypass_policy_lockout_safety_check,
            })?;
            p.emit(None, vec![], None)
        }
        Command::GetKeyPolicy {
            key,
            policy_name,
            output,
        } => {
            let o = connect()?.get_key_policy(key.get(), policy_name.as_deref())?;
            if !p.json && output.is_none() {
                // The document itself, as `aws kms get-key-policy --query
                // Policy --output text` prints it.
                return print_raw(&o.policy);
            }
            p.emit(
                output.as_deref(),
                vec![("Policy", s(&o.policy)), ("PolicyName", s(&o.policy_name))],
                Some(Main {
                    name: "Policy",
                    bytes: o.policy.as_bytes(),
                    secret: false,
                }),
            )
        }
        Command::ListKeyPolicies { key, page } => {
            let mut c = connect()?;
            let (names, next, truncated) = pages(page.all, page.marker.as_deref(), |m| {
                let o = c.list_key_policies(key.get(), page.limit.unwrap_or(0), m)?;
                Ok((o.policy_names, o.next_marker, o.truncated))
            })?;
            p.emit(
                None,
                page_fields(
                    "PolicyNames",
                    names.iter().map(|n| s(n)).collect(),
                    next.as_deref(),
                    truncated,
                ),
                None,
            )
        }
        Command::ListGrants {
            key,
            grant_id,
            grantee_principal,
            page,
        } => {
            let mut c = connect()?;
            let (grants, next, truncated) = pages(page.all, page.marker.as_deref(), |m| {
                let o = c.list_grants(ListGrants {
                    key_id: key.get(),
                    limit: page.limit.unwrap_or(0),
                    marker: m,
                    grant_id: grant_id.as_deref(),
                    grantee_principal: grantee_principal.as_deref(),
                })?;
                Ok((o.grants, o.next_marker, o.truncated))
            })?;
            p.emit(
                None,
                page_fields(
                    "Grants",
                    grants.iter().map(grant_entry).collect(),
                    next.as_deref(),
                    truncated,
                ),
                None,
            )
        }
        Command::ListRetirableGrants {
            retiring_principal,
            page,
        } => {
            let mut c = connect()?;
            let (grants, next, truncated) = pages(page.all, page.marker.as_deref(), |m| {
                let o = c.list_retirable_grants(retiring_principal, page.limit.unwrap_or(0), m)?;
                Ok((o.grants, o.next_marker, o.truncated))
            })?;
            p.emit(
                None,
                page_fields(
                    "Grants",
                    grants.iter().map(grant_entry).collect(),
                    next.as_deref(),
                    truncated,
                ),
                None,
            )
        }
        other => {
            let Some(op) = simple_operation(other) else {
                unreachable!("the commands simple_operation does not know are matched above")
            };
            let out = connect()?.call(op)?;
            let fields = output_fields(&out).ok_or_else(wrong_answer)?;
            p.emit(None, fields, None)
        }
    }
}

fn tag_list(tags: &[(String, String)]) -> Vec<Tag<'_>> {
    tags.iter().map(|(key, value)| Tag { key, value }).collect()
}

/// The request of a command that takes only arguments (no input files, no
/// paging) and prints its output's fields; `None` for the others.
fn simple_operation(c: &Command) -> Option<Operation<'_>> {
    Some(match c {
        Command::UpdateKeyDescription { key, description } => {
            Operation::UpdateKeyDescription(UpdateKeyDescription {
                key_id: key.get(),
                description,
            })
        }
        Command::TagResource { key_id, tags } => Operation::TagResource(TagResource {
            key_id,
            tags: tag_list(tags),
        }),
        Command::UntagResource { key_id, tag_keys } => Operation::UntagResource(UntagResource {
            key_id,
            tag_keys: tag_keys.iter().map(String::as_str).collect(),
        }),
        Command::CreateAlias {
            alias_name,
            target_key_id,
        } => Operation::CreateAlias(CreateAlias {
            alias_name,
            target_key_id,
        }),
        Command::UpdateAlias {
            alias_name,
            target_key_id,
        } => Operation::UpdateAlias(UpdateAlias {
            alias_name,
            target_key_id,
        }),
        Command::DeleteAlias { alias_name } => Operation::DeleteAlias(DeleteAlias { alias_name }),
        Command::EnableKey { key } => Operation::EnableKey(EnableKey { key_id: key.get() }),
        Command::DisableKey { key } => Operation::DisableKey(DisableKey { key_id: key.get() }),
        Command::ScheduleKeyDeletion {
            key,
            pending_window_in_days,
        } => Operation::ScheduleKeyDeletion(ScheduleKeyDeletion {
            key_id: key.get(),
            pending_window_in_days: *pending_window_in_days,
        }),
        Command::CancelKeyDeletion { key } => {
            Operation::CancelKeyDeletion(CancelKeyDeletion { key_id: key.get() })
        }
        Command::EnableKeyRotation {
            key,
            rotation_period_in_days,
        } => Operation::EnableKeyRotation(EnableKeyRotation {
            key_id: key.get(),
            rotation_period_in_days: *rotation_period_in_days,
        }),
        Command::DisableKeyRotation { key } => {
            Operation::DisableKeyRotation(DisableKeyRotation { key_id: key.get() })
        }
        Command::GetKeyRotationStatus { key } => {
            Operation::GetKeyRotationStatus(GetKeyRotationStatus { key_id: key.get() })
        }
        Command::RotateKeyOnDemand { key } => {
            Operation::RotateKeyOnDemand(RotateKeyOnDemand { key_id: key.get() })
        }
        Command::DeleteImportedKeyMaterial { key } => {
            Operation::DeleteImportedKeyMaterial(DeleteImportedKeyMaterial { key_id: key.get() })
        }
        Command::WhoAmI => Operation::WhoAmI(WhoAmI),
        Command::CreateGrant {
            key,
            grantee_principal,
            operations,
            retiring_principal,
            context_equals,
            context_subset,
            name,
            access,
        } => Operation::CreateGrant(CreateGrant {
            key_id: key.get(),
            grantee_principal,
            retiring_principal: retiring_principal.as_deref(),
            operations: operations.clone(),
            constraints: (!context_subset.is_empty() || !context_equals.is_empty()).then(|| {
                GrantConstraints {
                    encryption_context_subset: pairs(context_subset),
                    encryption_context_equals: pairs(context_equals),
                }
            }),
            grant_tokens: access.tokens(),
            name: name.as_deref(),
            dry_run: access.dry_run,
        }),
        Command::RetireGrant {
            grant_token,
            key_id,
            grant_id,
            dry_run,
        } => Operation::RetireGrant(RetireGrant {
            grant_token: grant_token.as_deref(),
            key_id: key_id.as_deref(),
            grant_id: grant_id.as_deref(),
            dry_run: *dry_run,
        }),
        Command::RevokeGrant {
            key,
            grant_id,
            dry_run,
        } => Operation::RevokeGrant(RevokeGrant {
            key_id: key.get(),
            grant_id,
            dry_run: *dry_run,
        }),
        _ => return None,
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let socket = cli.socket.clone();
    if let Command::Audit(a) = &cli.command {
        return match a {
            AuditCommand::Verify { dir, offline } => {
                let dir = dir.clone().unwrap_or_else(audit::default_dir);
                audit::verify(&dir, *offline, || connect(&cli))
            }
            AuditCommand::Tail { dir, n, follow } => {
                let dir = dir.clone().unwrap_or_else(audit::default_dir);
                audit::tail(&dir, *n, cli.json, *follow)
            }
        };
    }
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
    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("kmsctl").chain(args.iter().copied()))
    }

    fn op_of(args: &[&str]) -> String {
        let cli = parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        format!(
            "{:?}",
            simple_operation(&cli.command).expect("a simple command")
        )
    }

    #[test]
    fn key_is_positional_or_key_id() {
        for args in [&["enable-key", "k1"][..], &["enable-key", "--key-id", "k1"]] {
            assert_eq!(op_of(args), r#"EnableKey(EnableKey { key_id: "k1" })"#);
        }
        // Both, or neither: a usage error.
        assert!(parse(&["enable-key", "k1", "--key-id", "k2"]).is_err());
        assert!(parse(&["disable-key"]).is_err());
    }

    #[test]
    fn lifecycle_commands_build_their_requests() {
        assert_eq!(
            op_of(&[
                "schedule-key-deletion",
                "k",
                "--pending-window-in-days",
                "7"
            ]),
            r#"ScheduleKeyDeletion(ScheduleKeyDeletion { key_id: "k", pending_window_in_days: Some(7) })"#
        );
        assert_eq!(
            op_of(&["schedule-key-deletion", "k"]),
            r#"ScheduleKeyDeletion(ScheduleKeyDeletion { key_id: "k", pending_window_in_days: None })"#
        );
        assert_eq!(
            op_of(&[
                "enable-key-rotation",
                "--key-id",
                "k",
                "--rotation-period-in-days",
                "90"
            ]),
            r#"EnableKeyRotation(EnableKeyRotation { key_id: "k", rotation_period_in_days: Some(90) })"#
        );
        assert_eq!(
            op_of(&["create-alias", "alias/x", "k"]),
            r#"CreateAlias(CreateAlias { alias_name: "alias/x", target_key_id: "k" })"#
        );
        assert_eq!(
            op_of(&["update-alias", "alias/x", "k2"]),
            r#"UpdateAlias(UpdateAlias { alias_name: "alias/x", target_key_id: "k2" })"#
        );
        assert_eq!(
            op_of(&["delete-alias", "alias/x"]),
            r#"DeleteAlias(DeleteAlias { alias_name: "alias/x" })"#
        );
        assert_eq!(
            op_of(&["tag-resource", "k", "team=pay", "note=a=b", "empty="]),
            r#"TagResource(TagResource { key_id: "k", tags: [Tag { key: "team", value: "pay" }, Tag { key: "note", value: "a=b" }, Tag { key: "empty", value: "" }] })"#
        );
        assert_eq!(
            op_of(&["untag-resource", "k", "team", "note"]),
            r#"UntagResource(UntagResource { key_id: "k", tag_keys: ["team", "note"] })"#
        );
        assert_eq!(
            op_of(&["update-key-description", "k", "--description", "d"]),
            r#"UpdateKeyDescription(UpdateKeyDescription { key_id: "k", description: "d" })"#
        );
        for (cmd, name) in [
            ("cancel-key-deletion", "CancelKeyDeletion"),
            ("disable-key-rotation", "DisableKeyRotation"),
            ("get-key-rotation-status", "GetKeyRotationStatus"),
            ("rotate-key-on-demand", "RotateKeyOnDemand"),
            ("delete-imported-key-material", "DeleteImportedKeyMaterial"),
        ] {
            assert_eq!(
                op_of(&[cmd, "k"]),
                format!(r#"{name}({name} {{ key_id: "k" }})"#)
            );
        }
        // Tags and tag keys are required; a tag needs its '='.
        assert!(parse(&["tag-resource", "k"]).is_err());
        assert!(parse(&["tag-resource", "k", "novalue"]).is_err());
        assert!(parse(&["untag-resource", "k"]).is_err());
        assert!(parse(&["create-alias", "alias/x"]).is_err());
    }

    #[test]
    fn create_key_takes_aws_kms_as_the_name_of_origin_kmsd() {
        for name in ["AWS_KMS", "aws-kms", "kmsd"] {
            let cli = Cli::try_parse_from(["kmsctl", "create-key", "--origin", name]).unwrap();
            let Command::CreateKey { origin, .. } = cli.command else {
                panic!("not create-key");
            };
            assert!(matches!(origin, OriginArg::Kmsd), "{name}");
        }
    }

    #[test]
    fn create_key_takes_tags_and_origin_external() {
        let cli = parse(&[
            "create-key",
            "--origin",
            "external",
            "--tag",
            "a=1",
            "--tag",
            "b=",
        ])
        .unwrap();
        let Command::CreateKey { origin, tags, .. } = cli.command else {
            panic!("not create-key")
        };
        assert!(matches!(origin, OriginArg::External));
        assert_eq!(
            tag_list(&tags),
            [
                Tag {
                    key: "a",
                    value: "1"
                },
                Tag {
                    key: "b",
                    value: ""
                }
            ]
        );
    }

    #[test]
    fn import_commands_parse() {
        let cli = parse(&[
            "get-parameters-for-import",
            "k",
            "--wrapping-algorithm",
            "RSAES_OAEP_SHA_256",
            "--wrapping-key-spec",
            "RSA_3072",
            "--out-dir",
            "d",
        ])
        .unwrap();
        let Command::GetParametersForImport {
            key,
            wrapping_algorithm,
            wrapping_key_spec,
            out_dir,
        } = cli.command
        else {
            panic!("not get-parameters-for-import")
        };
        assert_eq!(key.get(), "k");
        assert_eq!(wrapping_algorithm, WrappingAlgorithm::RsaesOaepSha256);
        assert_eq!(wrapping_key_spec, WrappingKeySpec::Rsa3072);
        assert_eq!(out_dir.as_deref(), Some(Path::new("d")));
        // Every AWS algorithm name parses (the daemon refuses what it does
        // not offer); other spellings do not.
        for a in WrappingAlgorithm::ALL {
            assert!(parse(&[
                "get-parameters-for-import",
                "k",
                "--wrapping-algorithm",
                a.name(),
                "--wrapping-key-spec",
                "RSA_2048",
            ])
            .is_ok());
        }
        assert!(parse(&[
            "get-parameters-for-import",
            "k",
            "--wrapping-algorithm",
            "rsaes_oaep_sha_256",
            "--wrapping-key-spec",
            "RSA_2048",
        ])
        .is_err());

        let import = |extra: &[&str]| {
            let mut args = vec![
                "import-key-material",
                "k",
                "--import-token",
                "t.bin",
                "--encrypted-key-material",
                "m.bin",
            ];
            args.extend_from_slice(extra);
            parse(&args)
        };
        let Command::ImportKeyMaterial { valid_to, .. } =
            import(&["--valid-to", "2026-01-31T00:00:00Z"])
                .unwrap()
                .command
        else {
            panic!("not import-key-material")
        };
        assert_eq!(valid_to, Some(1_769_817_600));
        let Command::ImportKeyMaterial {
            valid_to,
            no_expiry,
            ..
        } = import(&["--no-expiry"]).unwrap().command
        else {
            panic!("not import-key-material")
        };
        assert_eq!((valid_to, no_expiry), (None, true));
        // Exactly one of --valid-to and --no-expiry.
        assert!(import(&[]).is_err());
        assert!(import(&["--no-expiry", "--valid-to", "5"]).is_err());
        assert!(import(&["--valid-to", "next week"]).is_err());
    }

    #[test]
    fn times_parse_as_rfc3339_or_epoch_seconds() {
        for secs in [0, 951_782_400, 1_700_000_000, 4_102_444_800, -86_400] {
            assert_eq!(parse_time(&rfc3339(secs)), Ok(secs), "{}", rfc3339(secs));
        }
        assert_eq!(parse_time("1700000000"), Ok(1_700_000_000));
        assert_eq!(parse_time("2023-11-14T22:13:20.999Z"), Ok(1_700_000_000));
        assert_eq!(parse_time("2023-11-15T00:13:20+02:00"), Ok(1_700_000_000));
        assert_eq!(parse_time("2023-11-14t21:13:20-01:00"), Ok(1_700_000_000));
        for bad in [
            "",
            "2023-11-14",
            "2023-11-14T22:13:20",
            "2023-02-29T00:00:00Z",
            "2023-13-01T00:00:00Z",
            "2023-11-14T24:00:00Z",
            "2023-11-14T22:13:20.Z",
            "2023-11-14T22:13:20+2:00",
            "+023-11-14T22:13:20Z",
        ] {
            assert!(parse_time(bad).is_err(), "{bad:?} parsed");
        }
        assert_eq!(parse_time("2024-02-29T00:00:00Z"), Ok(1_709_164_800));
    }

    fn json_of(o: &Output) -> serde_json::Value {
        serde_json::to_value(Val::Obj(output_fields(o).expect("fields"))).unwrap()
    }

    #[test]
    fn lifecycle_outputs_use_aws_field_names() {
        use serde_json::json;
        let m = KeyMetadata {
            key_id: "k".into(),
            arn: "arn:aws:kms:us-east-1:000000000000:key/k".into(),
            creation_date: 1,
            key_state: KeyState::PendingDeletion,
            origin: Origin::External,
            deletion_date: Some(2),
            pending_deletion_window_in_days: Some(7),
            valid_to: Some(3),
            expiration_model: Some(ExpirationModel::KeyMaterialExpires),
            ..KeyMetadata::default()
        };
        assert_eq!(
            json_of(&Output::DescribeKey(m)),
            json!({"KeyMetadata": {
                "KeyId": "k", "Arn": "arn:aws:kms:us-east-1:000000000000:key/k", "CreationDate": 1,
                "Enabled": false, "Description": "", "KeyState": "PendingDeletion",
                "KeyUsage": "ENCRYPT_DECRYPT", "KeySpec": "SYMMETRIC_DEFAULT",
                "Origin": "EXTERNAL", "DeletionDate": 2, "PendingDeletionWindowInDays": 7,
                "ValidTo": 3, "ExpirationModel": "KEY_MATERIAL_EXPIRES"}})
        );
        assert_eq!(
            json_of(&Output::ScheduleKeyDeletion(ScheduleKeyDeletionOutput {
                key_id: "arn".into(),
                deletion_date: 9,
                key_state: KeyState::PendingDeletion,
                pending_window_in_days: 30,
            })),
            json!({"KeyId": "arn", "DeletionDate": 9, "KeyState": "PendingDeletion",
                   "PendingWindowInDays": 30})
        );
        assert_eq!(
            json_of(&Output::GetKeyRotationStatus(GetKeyRotationStatusOutput {
                key_id: "arn".into(),
                key_rotation_enabled: true,
                rotation_period_in_days: Some(365),
                next_rotation_date: Some(5),
                on_demand_rotation_start_date: None,
            })),
            json!({"KeyRotationEnabled": true, "KeyId": "arn", "RotationPeriodInDays": 365,
                   "NextRotationDate": 5})
        );
        assert_eq!(
            json_of(&Output::ListAliases(ListAliasesOutput {
                aliases: vec![AliasListEntry {
                    alias_name: "alias/a".into(),
                    alias_arn: "arn:aws:kms:us-east-1:000000000000:alias/a".into(),
                    target_key_id: Some("k".into()),
                    creation_date: 1,
                    last_updated_date: 2,
                }],
                next_marker: Some("m".into()),
                truncated: true,
            })),
            json!({"Aliases": [{"AliasName": "alias/a", "AliasArn": "arn:aws:kms:us-east-1:000000000000:alias/a",
                                "TargetKeyId": "k", "CreationDate": 1, "LastUpdatedDate": 2}],
                   "NextMarker": "m", "Truncated": true})
        );
        assert_eq!(
            json_of(&Output::ListResourceTags(ListResourceTagsOutput {
                tags: vec![OwnedTag {
                    key: "a".into(),
                    value: "1".into(),
                }],
                next_marker: None,
                truncated: false,
            })),
            json!({"Tags": [{"TagKey": "a", "TagValue": "1"}], "Truncated": false})
        );
        assert_eq!(
            json_of(&Output::ListKeyRotations(ListKeyRotationsOutput {
                rotations: vec![RotationsListEntry {
                    key_id: "arn".into(),
                    rotation_date: 4,
                    rotation_type: RotationType::OnDemand,
                }],
                next_marker: None,
                truncated: false,
            })),
            json!({"Rotations": [{"KeyId": "arn", "RotationDate": 4, "RotationType": "ON_DEMAND"}],
                   "Truncated": false})
        );
        assert_eq!(
            json_of(&Output::GetParametersForImport(
                GetParametersForImportOutput {
                    key_id: "arn".into(),
                    import_token: vec![1, 2, 3],
                    public_key: vec![0x30],
                    parameters_valid_to: 6,
                }
            )),
            json!({"KeyId": "arn", "ImportToken": "AQID", "PublicKey": "MA==",
                   "ParametersValidTo": 6})
        );
        assert_eq!(
            json_of(&Output::CancelKeyDeletion(CancelKeyDeletionOutput {
                key_id: "arn".into()
            })),
            json!({"KeyId": "arn"})
        );
        assert_eq!(json_of(&Output::EnableKey), json!({}));
        assert!(output_fields(&Output::GenerateRandom(GenerateRandomOutput {
            plaintext: SecretBytes::new(vec![1])
        }))
        .is_none());
    }

    #[test]
    fn human_output_shows_times_in_rfc3339_at_any_depth() {
        let o = Output::ListAliases(ListAliasesOutput {
            aliases: vec![AliasListEntry {
                alias_name: "alias/a".into(),
                alias_arn: "arn".into(),
                target_key_id: None,
                creation_date: 0,
                last_updated_date: 1_700_000_000,
            }],
            next_marker: None,
            truncated: false,
        });
        let mut fields = output_fields(&o).unwrap();
        humanize_times(&mut fields);
        let mut out = Vec::new();
        write_human(&mut out, &fields).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "alias/a  arn  1970-01-01T00:00:00Z  2023-11-14T22:13:20Z\nTruncated: false\n"
        );
        let mut fields = vec![
            ("ValidTo", Val::Int(0)),
            ("PendingWindowInDays", Val::Int(7)),
        ];
        humanize_times(&mut fields);
        assert!(matches!(&fields[0].1, Val::Str(t) if t == "1970-01-01T00:00:00Z"));
        assert!(matches!(fields[1].1, Val::Int(7)));
    }

    #[test]
    fn pages_follow_markers_and_refuse_a_repeated_one() {
        // Three pages: a, b | c, d | e.
        let book = |m: Option<&str>| -> Result<(Vec<&str>, Option<String>, bool), Failure> {
            Ok(match m {
                None => (vec!["a", "b"], Some("1".into()), true),
                Some("1") => (vec!["c", "d"], Some("2".into()), true),
                Some("2") => (vec!["e"], None, false),
                Some(other) => panic!("unexpected marker {other}"),
            })
        };
        let (all, next, truncated) = pages(true, None, book).ok().unwrap();
        assert_eq!(
            (all, next, truncated),
            (vec!["a", "b", "c", "d", "e"], None, false)
        );
        let (one, next, truncated) = pages(false, Some("1"), book).ok().unwrap();
        assert_eq!(
            (one, next, truncated),
            (vec!["c", "d"], Some("2".into()), true)
        );
        let stuck = |_: Option<&str>| -> Result<(Vec<u8>, Option<String>, bool), Failure> {
            Ok((vec![1], Some("same".into()), true))
        };
        match pages(true, Some("same"), stuck) {
            Err(Failure::Kms(e)) => assert_eq!(e.kind, ErrorKind::KmsInternal),
            _ => panic!("a repeated marker must stop the walk"),
        }
    }

    #[test]
    fn import_parameters_are_written_as_the_aws_cli_names_them() {
        let dir = std::env::temp_dir().join(format!("kmsctl-test-{}", std::process::id()));
        let out_dir = dir.join("new");
        let o = GetParametersForImportOutput {
            key_id: "k".into(),
            import_token: vec![1, 2, 3],
            public_key: vec![0x30, 0x82],
            parameters_valid_to: 0,
        };
        let (key, token) = write_import_parameters(&out_dir, &o).ok().unwrap();
        assert_eq!(key, out_dir.join("PublicKey.bin"));
        assert_eq!(token, out_dir.join("ImportToken.bin"));
        assert_eq!(std::fs::read(&key).unwrap(), [0x30, 0x82]);
        assert_eq!(std::fs::read(&token).unwrap(), [1, 2, 3]);
        let mode = std::fs::metadata(&token).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Asserts that `args` parse into a command whose request is `want`.
    fn assert_op(args: &[&str], want: Operation<'_>) {
        let cli = parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        assert_eq!(
            simple_operation(&cli.command).expect("a simple command"),
            want,
            "{args:?}"
        );
    }

    #[test]
    fn grant_commands_build_their_requests() {
        let grant = |operations: Vec<GrantOperation>| CreateGrant {
            key_id: "k",
            grantee_principal: "uid:1000",
            operations,
            ..CreateGrant::default()
        };
        // Operations: a comma-separated list, or the option repeated.
        let both = vec![GrantOperation::Decrypt, GrantOperation::GenerateDataKey];
        for args in [
            &[
                "create-grant",
                "k",
                "--grantee-principal",
                "uid:1000",
                "--operations",
                "Decrypt,GenerateDataKey",
            ][..],
            &[
                "create-grant",
                "--key-id",
                "k",
                "--grantee-principal",
                "uid:1000",
                "--operations",
                "Decrypt",
                "--operations",
                "GenerateDataKey",
            ],
        ] {
            assert_op(args, Operation::CreateGrant(grant(both.clone())));
        }
        assert_op(
            &[
                "create-grant",
                "k",
                "--grantee-principal",
                "uid:1000",
                "--operations",
                "Encrypt",
                "--retiring-principal",
                "uid:0",
                "--constraint-encryption-context-equals",
                "tenant=acme",
                "--constraint-encryption-context-equals",
                "app=a=b",
                "--constraint-encryption-context-subset",
                "team=pay",
                "--name",
                "g1",
                "--grant-tokens",
                "t1",
                "--grant-tokens",
                "t2",
                "--dry-run",
            ],
            Operation::CreateGrant(CreateGrant {
                retiring_principal: Some("uid:0"),
                constraints: Some(GrantConstraints {
                    encryption_context_subset: vec![("team", "pay")],
                    encryption_context_equals: vec![("tenant", "acme"), ("app", "a=b")],
                }),
                grant_tokens: vec!["t1", "t2"],
                name: Some("g1"),
                dry_run: true,
                ..grant(vec![GrantOperation::Encrypt])
            }),
        );
        // Every AWS grant operation parses, by AWS's name only.
        for o in GrantOperation::ALL {
            assert!(parse(&[
                "create-grant",
                "k",
                "--grantee-principal",
                "p",
                "--operations",
                o.name()
            ])
            .is_ok());
        }
        for bad in [
            &["create-grant", "k", "--grantee-principal", "p"][..],
            &["create-grant", "k", "--operations", "Decrypt"],
            &[
                "create-grant",
                "k",
                "--grantee-principal",
                "p",
                "--operations",
                "decrypt",
            ],
            &[
                "create-grant",
                "k",
                "--grantee-principal",
                "p",
                "--operations",
                "Decrypt",
                "--constraint-encryption-context-equals",
                "novalue",
            ],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }

        assert_op(
            &["retire-grant", "--grant-token", "t", "--dry-run"],
            Operation::RetireGrant(RetireGrant {
                grant_token: Some("t"),
                dry_run: true,
                ..RetireGrant::default()
            }),
        );
        assert_op(
            &["retire-grant", "--key-id", "k", "--grant-id", "g"],
            Operation::RetireGrant(RetireGrant {
                key_id: Some("k"),
                grant_id: Some("g"),
                ..RetireGrant::default()
            }),
        );
        // A token, or both the key and the grant id.
        for bad in [
            &["retire-grant"][..],
            &["retire-grant", "--key-id", "k"],
            &["retire-grant", "--grant-id", "g"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
        assert_op(
            &["revoke-grant", "k", "--grant-id", "g"],
            Operation::RevokeGrant(RevokeGrant {
                key_id: "k",
                grant_id: "g",
                dry_run: false,
            }),
        );
        assert_op(
            &[
                "revoke-grant",
                "--key-id",
                "k",
                "--grant-id",
                "g",
                "--dry-run",
            ],
            Operation::RevokeGrant(RevokeGrant {
                key_id: "k",
                grant_id: "g",
                dry_run: true,
            }),
        );
        assert!(parse(&["revoke-grant", "k"]).is_err());
    }

    #[test]
    fn grant_lists_and_policy_commands_parse() {
        let Command::ListGrants {
            key,
            grant_id,
            grantee_principal,
            page,
        } = parse(&[
            "list-grants",
            "--key-id",
            "k",
            "--grant-id",
            "g",
            "--grantee-principal",
            "uid:7",
            "--limit",
            "10",
            "--marker",
            "m",
            "--all",
        ])
        .unwrap()
        .command
        else {
            panic!("not list-grants")
        };
        assert_eq!(key.get(), "k");
        assert_eq!(grant_id.as_deref(), Some("g"));
        assert_eq!(grantee_principal.as_deref(), Some("uid:7"));
        assert_eq!(
            (page.limit, page.marker.as_deref(), page.all),
            (Some(10), Some("m"), true)
        );
        let Command::ListRetirableGrants {
            retiring_principal,
            page,
        } = parse(&["list-retirable-grants", "--retiring-principal", "uid:0"])
            .unwrap()
            .command
        else {
            panic!("not list-retirable-grants")
        };
        assert_eq!(retiring_principal, "uid:0");
        assert_eq!((page.limit, page.all), (None, false));
        assert!(parse(&["list-retirable-grants"]).is_err());
        assert!(matches!(
            parse(&["list-key-policies", "k"]).unwrap().command,
            Command::ListKeyPolicies { .. }
        ));

        let Command::PutKeyPolicy {
            key,
            policy,
            policy_name,
            bypass_policy_lockout_safety_check,
        } = parse(&[
            "put-key-policy",
            "--key-id",
            "k",
            "--policy",
            "file://p.json",
            "--policy-name",
            "default",
            "--bypass-policy-lockout-safety-check",
        ])
        .unwrap()
        .command
        else {
            panic!("not put-key-policy")
        };
        assert_eq!(key.get(), "k");
        assert_eq!(policy_source(&policy), Some(Path::new("p.json")));
        assert_eq!(policy_name.as_deref(), Some("default"));
        assert!(bypass_policy_lockout_safety_check);
        assert!(
            parse(&["put-key-policy", "k"]).is_err(),
            "--policy is required"
        );
        assert_eq!(policy_source(Path::new("-")), None);
        assert_eq!(policy_source(Path::new("file://-")), None);
        assert_eq!(
            policy_source(Path::new("dir/p.json")),
            Some(Path::new("dir/p.json"))
        );

        let Command::GetKeyPolicy {
            key,
            policy_name,
            output,
        } = parse(&["get-key-policy", "k", "--output", "-"])
            .unwrap()
            .command
        else {
            panic!("not get-key-policy")
        };
        assert_eq!(
            (key.get(), policy_name, output.as_deref()),
            ("k", None, Some(Path::new("-")))
        );

        let Command::CreateKey {
            policy,
            bypass_policy_lockout_safety_check,
            ..
        } = parse(&[
            "create-key",
            "--policy",
            "-",
            "--bypass-policy-lockout-safety-check",
        ])
        .unwrap()
        .command
        else {
            panic!("not create-key")
        };
        assert_eq!(policy.as_deref(), Some(Path::new("-")));
        assert!(bypass_policy_lockout_safety_check);
        let Command::CreateKey {
            policy,
            bypass_policy_lockout_safety_check,
            ..
        } = parse(&["create-key"]).unwrap().command
        else {
            panic!("not create-key")
        };
        assert!(policy.is_none() && !bypass_policy_lockout_safety_check);
    }

    #[test]
    fn cryptographic_commands_take_grant_tokens_and_dry_run() {
        let tokens = ["--grant-tokens", "t1", "--grant-token", "t2", "--dry-run"];
        let with = |args: &[&str]| {
            let mut v = args.to_vec();
            v.extend_from_slice(&tokens);
            parse(&v).unwrap_or_else(|e| panic!("{v:?}: {e}")).command
        };
        let access = |c: &Command| -> (Vec<String>, bool) {
            let a = match c {
                Command::Encrypt { access, .. }
                | Command::Decrypt { access, .. }
                | Command::ReEncrypt { access, .. } => access,
                Command::GenerateDataKey(a) | Command::GenerateDataKeyWithoutPlaintext(a) => {
                    &a.access
                }
                _ => panic!("not a cryptographic command"),
            };
            (a.grant_tokens.clone(), a.dry_run)
        };
        for c in [
            with(&["encrypt", "--key-id", "k"]),
            with(&["decrypt"]),
            with(&["re-encrypt", "--destination-key-id", "k"]),
            with(&[
                "generate-data-key",
                "--key-id",
                "k",
                "--number-of-bytes",
                "32",
            ]),
            with(&[
                "generate-data-key-without-plaintext",
                "--key-id",
                "k",
                "--key-spec",
                "AES_256",
            ]),
        ] {
            assert_eq!(access(&c), (vec!["t1".to_string(), "t2".to_string()], true));
        }
        let plain = parse(&["encrypt", "--key-id", "k"]).unwrap().command;
        assert_eq!(access(&plain), (vec![], false));
        let Command::DescribeKey { grant_tokens, .. } =
            parse(&["describe-key", "--key-id", "k", "--grant-tokens", "t"])
                .unwrap()
                .command
        else {
            panic!("not describe-key")
        };
        assert_eq!(grant_tokens, ["t"]);
    }

    #[test]
    fn policies_are_read_from_files_as_utf8() {
        let dir = std::env::temp_dir().join(format!("kmsctl-policy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("p.json");
        std::fs::write(&good, "{\"Version\":\"2012-10-17\"}").unwrap();
        assert_eq!(
            read_policy(&good).ok().unwrap(),
            "{\"Version\":\"2012-10-17\"}"
        );
        let uri = PathBuf::from(format!("file://{}", good.display()));
        assert_eq!(
            read_policy(&uri).ok().unwrap(),
            "{\"Version\":\"2012-10-17\"}"
        );
        let bad = dir.join("bad.json");
        std::fs::write(&bad, [0xff, 0xfe]).unwrap();
        match read_policy(&bad) {
            Err(Failure::Usage(m)) => assert!(m.contains("not UTF-8"), "{m}"),
            _ => panic!("non-UTF-8 policy accepted"),
        }
        match read_policy(&dir.join("missing.json")) {
            Err(Failure::Usage(m)) => assert!(m.contains("cannot open"), "{m}"),
            _ => panic!("missing policy file accepted"),
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn access_outputs_use_aws_field_names() {
        use serde_json::json;
        let grant = GrantListEntry {
            key_id: "arn:aws:kms:us-east-1:000000000000:key/k".into(),
            grant_id: "g1".into(),
            name: Some("n".into()),
            creation_date: 1_700_000_000,
            grantee_principal: "uid:1000".into(),
            retiring_principal: Some("uid:0".into()),
            issuing_account: "local".into(),
            operations: vec![GrantOperation::Decrypt, GrantOperation::Encrypt],
            constraints: Some(OwnedGrantConstraints {
                encryption_context_subset: vec![],
                encryption_context_equals: vec![
                    ("tenant".into(), "acme".into()),
                    ("app".into(), "x".into()),
                ],
            }),
        };
        let bare = GrantListEntry {
            grant_id: "g2".into(),
            name: None,
            retiring_principal: None,
            constraints: None,
            operations: vec![GrantOperation::RetireGrant],
            ..grant.clone()
        };
        let list = ListGrantsOutput {
            grants: vec![grant, bare],
            next_marker: Some("m".into()),
            truncated: true,
        };
        let want = json!({"Grants": [
            {"KeyId": "arn:aws:kms:us-east-1:000000000000:key/k", "GrantId": "g1", "Name": "n",
             "CreationDate": 1_700_000_000, "GranteePrincipal": "uid:1000",
             "RetiringPrincipal": "uid:0", "IssuingAccount": "local",
             "Operations": ["Decrypt", "Encrypt"],
             "Constraints": {"EncryptionContextEquals": {"tenant": "acme", "app": "x"}}},
            {"KeyId": "arn:aws:kms:us-east-1:000000000000:key/k", "GrantId": "g2",
             "CreationDate": 1_700_000_000, "GranteePrincipal": "uid:1000",
             "IssuingAccount": "local", "Operations": ["RetireGrant"]}],
            "NextMarker": "m", "Truncated": true});
        assert_eq!(json_of(&Output::ListGrants(list.clone())), want);
        assert_eq!(json_of(&Output::ListRetirableGrants(list.clone())), want);
        // JSON keeps the constraint pairs in order.
        let text = serde_json::to_string(&Val::Obj(
            output_fields(&Output::ListGrants(list.clone())).unwrap(),
        ))
        .unwrap();
        assert!(text.contains(r#"{"tenant":"acme","app":"x"}"#), "{text}");
        assert_eq!(
            json_of(&Output::GetKeyPolicy(GetKeyPolicyOutput {
                policy: "{\n  \"Version\": \"2012-10-17\"\n}".into(),
                policy_name: "default".into(),
            })),
            json!({"Policy": "{\n  \"Version\": \"2012-10-17\"\n}", "PolicyName": "default"})
        );
        assert_eq!(
            json_of(&Output::ListKeyPolicies(ListKeyPoliciesOutput {
                policy_names: vec!["default".into()],
                next_marker: None,
                truncated: false,
            })),
            json!({"PolicyNames": ["default"], "Truncated": false})
        );
        assert_eq!(
            json_of(&Output::CreateGrant(CreateGrantOutput {
                grant_token: "tok".into(),
                grant_id: "g1".into(),
            })),
            json!({"GrantToken": "tok", "GrantId": "g1"})
        );
        for empty in [
            Output::PutKeyPolicy,
            Output::RetireGrant,
            Output::RevokeGrant,
        ] {
            assert_eq!(json_of(&empty), json!({}));
        }

        // Human: one grant a line, times in RFC 3339, constraints named.
        let o = Output::ListGrants(list);
        let mut fields = output_fields(&o).unwrap();
        humanize_times(&mut fields);
        let mut out = Vec::new();
        write_human(&mut out, &fields).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "arn:aws:kms:us-east-1:000000000000:key/k  g1  n  2023-11-14T22:13:20Z  uid:1000  uid:0  local  \
             Decrypt Encrypt  EncryptionContextEquals:{tenant=acme,app=x}\n\
             arn:aws:kms:us-east-1:000000000000:key/k  g2  2023-11-14T22:13:20Z  uid:1000  local  RetireGrant\n\
             NextMarker: m\n\
             Truncated:  true\n"
        );
    }
}
