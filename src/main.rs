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
}

fn main() -> ExitCode {
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
        return match Config::load(&path) {
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
    match kmsd::server::run(&config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kmsd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
