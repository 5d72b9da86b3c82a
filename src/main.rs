//! `kmsd`: the key-management daemon.

use clap::{Args, Parser, Subcommand};
use kmsd::config::{Config, IoMode};
use std::path::PathBuf;
use std::process::ExitCode;

/// A local key-management daemon: the AWS KMS data plane over a Unix socket.
#[derive(Parser)]
#[command(name = "kmsd", version)]
struct Cli {
    /// Validate a config file and exit (0 when valid).
    #[arg(long, value_name = "FILE")]
    check_config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve (the default when no command is given).
    Serve(ServeArgs),
    /// Set up and check the PKCS#11 root of trust ([root.pkcs11]).
    #[command(subcommand)]
    Hsm(HsmCommand),
    /// Move a data directory from the file root to the root the config
    /// names (rewrapping every backing key in one transaction). Refused
    /// while a daemon holds the directory; keep or destroy the old root.key
    /// afterwards.
    MigrateRoot {
        /// The data directory (holding keys.db and root.key).
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// Config file naming the new root (root.kind = "pkcs11").
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum HsmCommand {
    /// Create the root key in the token (once): AES-256, sensitive, never
    /// extractable, wrap/unwrap only, labelled root.pkcs11.key_label.
    Init {
        /// Config file with a [root.pkcs11] section.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Open the module, token and root key, wrap and unwrap a test key, and
    /// print what was found.
    Check {
        /// Config file with a [root.pkcs11] section.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

#[derive(Args, Default)]
struct ServeArgs {
    /// Socket path [default: $XDG_RUNTIME_DIR/kmsd/kmsd.sock or /tmp/kmsd-$UID/kmsd.sock].
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Data directory [default: $XDG_DATA_HOME/kmsd or ~/.local/share/kmsd].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Config file (TOML); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// I/O engine [default: from the config, else epoll].
    #[arg(long, value_enum)]
    io: Option<IoMode>,
    /// Seed file (TOML, docs/seeding.md): keys with fixed ids made at
    /// start if the store lacks them; keys it has are checked and left
    /// alone.
    #[arg(long, value_name = "FILE")]
    seed: Option<PathBuf>,
    /// Allow `access.benchmark_bypass_authorization` in the config: every
    /// request allowed without policies or grants. Only for measuring
    /// what authorization costs; never in production.
    #[arg(long)]
    benchmark_allow_unauthorized: bool,
}

/// Lets glibc's malloc give every thread an arena of its own (before any
/// thread starts). Its default bound, 8 per core, is 16 here, and kmsd runs
/// about 20 threads: threads past the bound share an arena, and when the
/// HTTP API's two I/O threads drew the same one they met on its lock for
/// every allocation (futex waits and wake-ups: 112k instead of 185k
/// requests/s, in about half the runs; docs/perf/http.md). An arena is
/// address space reserved, not memory: its pages are committed as used
/// (and so locked under `cache.mlock` only as used). A replacement
/// allocator (mimalloc) did as well, but it reserves its arenas 1 GiB at a
/// time, committed at once on Linux, which mlockall would then lock whole.
fn one_arena_per_thread() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets a malloc parameter; no other thread runs yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 256);
    }
}

fn main() -> ExitCode {
    // Everything kmsd creates (keys.db and its -wal and -shm, the lock
    // file, directories) is for its own user only.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    one_arena_per_thread();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KMSD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    if let Some(path) = cli.check_config {
        // What start-up reads besides the file: the TCP listener's
        // secret files (their modes, owner and content).
        let checked = Config::load(&path)
            .map_err(|e| e.to_string())
            .and_then(|c| {
                if c.http.tcp.is_some() {
                    kmsd::http_credentials_check(&c)
                        .map_err(|e| format!("http.credentials: {e}"))?;
                }
                Ok(c)
            });
        return match checked {
            Ok(_) => {
                println!("{}: ok", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("kmsd: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let args = match cli.command {
        Some(Command::Serve(args)) => args,
        Some(Command::Hsm(command)) => return hsm_command(command),
        Some(Command::MigrateRoot { data_dir, config }) => return migrate_root(&data_dir, &config),
        None => ServeArgs::default(),
    };
    let mut config = match &args.config {
        Some(path) => match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("kmsd: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => Config::default(),
    };
    if let Some(s) = args.socket {
        config.socket = s;
    }
    if let Some(d) = args.data_dir {
        config.data_dir = d;
    }
    if let Some(io) = args.io {
        config.transport.io = io;
    }
    if config.access.benchmark_bypass_authorization {
        if !args.benchmark_allow_unauthorized {
            eprintln!(
                "kmsd: access.benchmark_bypass_authorization is set: it allows every request \
                 to every caller, and is only for benchmarks; start with \
                 --benchmark-allow-unauthorized to use it"
            );
            return ExitCode::FAILURE;
        }
        tracing::warn!("authorization bypassed (benchmark mode): every caller may do everything");
    }
    match kmsd::server::run_from(&config, args.seed.as_deref(), args.config.as_deref()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kmsd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `kmsd migrate-root --data-dir DIR --config FILE`.
fn migrate_root(data_dir: &std::path::Path, path: &std::path::Path) -> ExitCode {
    let run = || -> anyhow::Result<usize> {
        let mut config = Config::load(path)?;
        config.data_dir = data_dir.to_owned();
        if config.root.kind == kmsd::config::RootKind::File {
            anyhow::bail!(
                "{} names the file root; migrate-root moves to the root the config names (root.kind = \"pkcs11\")",
                path.display()
            );
        }
        // Locked first: a daemon still running on this directory would keep
        // wrapping new keys with the old root after the migration.
        let dir = kmsd::data_dir::DataDir::open_existing(data_dir, "kmsd migrate-root")?;
        let from = kmsd::root::FileRoot::open_existing(data_dir)?;
        let to = kmsd::root::open(&config)?;
        Ok(kmsd::migrate::migrate_root(&dir, &from, &*to)?)
    };
    match run() {
        Ok(n) => {
            println!(
                "moved {n} backing keys of {} to the pkcs11 root; {} is no longer needed: keep \
                 it offline as a backup or destroy it (it still opens old copies of keys.db)",
                data_dir.display(),
                data_dir.join(kmsd::root::FileRoot::FILE_NAME).display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kmsd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `kmsd hsm init|check --config FILE`: one line on success (init) or a short
/// report (check); one line on stderr and exit 1 on failure.
fn hsm_command(command: HsmCommand) -> ExitCode {
    let path = match &command {
        HsmCommand::Init { config } | HsmCommand::Check { config } => config,
    };
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kmsd: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(pkcs11) = config.root.pkcs11.as_ref() else {
        eprintln!(
            "kmsd: {} has no [root.pkcs11] section (see docs/config.md)",
            path.display()
        );
        return ExitCode::FAILURE;
    };
    let result = match command {
        HsmCommand::Init { .. } => kmsd::hsm::init_root_key(pkcs11)
            .map(|r| {
                println!(
                    "created root key {:?} in token {:?} (slot {}): AES-256, sensitive, never \
                     extractable, wrap/unwrap only",
                    r.key_label, r.token_label, r.slot_id
                )
            })
            .map_err(|e| e.to_string()),
        HsmCommand::Check { .. } => hsm_check(pkcs11),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kmsd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Opens everything, wraps and unwraps a fresh test key, and prints what it
/// found. Never prints key material or the PIN.
fn hsm_check(pkcs11: &kmsd::config::Pkcs11Config) -> Result<(), String> {
    use kmsd::crypto::KeyMaterial;
    use kmsd::root::{Pkcs11Root, RootOfTrust};

    let root = Pkcs11Root::open(pkcs11).map_err(|e| e.to_string())?;
    let info = root.hsm().info().map_err(|e| e.to_string())?;
    let attrs: Vec<String> = info
        .key_attributes
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    println!("module:    {} ({})", info.module.display(), info.library);
    println!(
        "token:     {:?} (slot {}, model {}, serial {})",
        info.token_label, info.slot_id, info.token_model, info.token_serial
    );
    println!("root key:  {:?} ({})", info.key_label, attrs.join(" "));
    println!(
        "mechanism: {:#x} (RFC 5649 AES key wrap with padding)",
        info.kwp_mechanism
    );
    println!(
        "sessions:  {} ({})",
        info.pool_size,
        if info.session_copy {
            "each with a session copy of the root key"
        } else {
            "using the token key directly"
        }
    );
    let flag = |name: &str| {
        info.key_attributes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
    };
    if flag("CKA_EXTRACTABLE") != Some(false) || flag("CKA_SENSITIVE") != Some(true) {
        println!("WARNING:   the root key is extractable or not sensitive: it can leave the HSM");
    }
    let test_key = KeyMaterial::generate();
    let wrapped = root
        .wrap(&test_key)
        .map_err(|e| format!("test wrap failed: {e}"))?;
    let unwrapped = root
        .unwrap(&wrapped)
        .map_err(|e| format!("test unwrap failed: {e}"))?;
    if unwrapped.expose() != test_key.expose() {
        return Err("test unwrap returned a different key".to_owned());
    }
    println!(
        "check:     wrapped and unwrapped a test key ({} bytes wrapped): ok",
        wrapped.len()
    );
    Ok(())
}
