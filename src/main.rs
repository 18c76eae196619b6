//! The `keygate` binary: CLI parsing, logging, config loading; everything else is in
//! the library (`keygate::app`, and `keygate::cli` for `keygate keys|orgs|principals …`).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc malloc: glibc's malloc/free were about 7% of the data
/// plane's CPU per request (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Config used when `--config` is not given.
const DEFAULT_CONFIG: &str = "config/keygate.yaml";

#[derive(Parser)]
#[command(name = "keygate", version, about = "API-key authentication gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (data plane and admin port).
    Serve {
        /// YAML config file.
        #[arg(long, short, env = "KEYGATE_CONFIG", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Validate a config file: exit 0, or print FILE:LINE: FIELD: problem and exit 1.
    CheckConfig {
        /// YAML config file.
        #[arg(long, short, env = "KEYGATE_CONFIG", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Manage an org's API keys through the admin API (KEYGATE_ADMIN_URL,
    /// KEYGATE_ADMIN_TOKEN).
    Keys(Box<keygate::cli::KeysArgs>),
    /// Manage orgs through the admin API (KEYGATE_ADMIN_URL, KEYGATE_ADMIN_TOKEN).
    Orgs(Box<keygate::cli::OrgsArgs>),
    /// Manage admin principals and their tokens through the admin API
    /// (KEYGATE_ADMIN_URL, KEYGATE_ADMIN_TOKEN).
    Principals(Box<keygate::cli::PrincipalsArgs>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        // The keys client logs nothing: no logger, so no log level can ever show a
        // header holding the admin token.
        Command::Keys(args) => keygate::cli::run(*args),
        Command::Orgs(args) => keygate::cli::orgs::run(*args),
        Command::Principals(args) => keygate::cli::principals::run(*args),
        Command::CheckConfig { config } => {
            let _logs = init_logging();
            let loaded = match keygate::config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            if let Err(e) = keygate::app::check(&loaded) {
                eprintln!("{e:#}");
                return ExitCode::FAILURE;
            }
            println!(
                "{}: ok ({} routes, {} upstreams)",
                config.display(),
                loaded.routes.len(),
                loaded.upstreams.len()
            );
            ExitCode::SUCCESS
        }
        Command::Serve { config } => {
            // Dropped last: every buffered log line is written before the process exits.
            let _logs = init_logging();
            let loaded = match keygate::config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            // The main thread is the first of the data plane's workers (`proxy::workers`):
            // one single-threaded runtime per core, this one also running the admin port,
            // the store's connections and the background tasks.
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(keygate::app::run(loaded)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("keygate: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Human-readable logs on a terminal, JSON lines otherwise; level from `RUST_LOG`
/// (default `info`). JSON lines go through `keygate::logbuf` (one write per batch,
/// not per line); the returned guard writes out the rest when dropped.
fn init_logging() -> Option<keygate::logbuf::Guard> {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if std::io::stderr().is_terminal() {
        builder.with_writer(std::io::stderr).init();
        return None;
    }
    match keygate::logbuf::stderr() {
        Ok((writer, guard)) => {
            builder
                .with_writer(writer)
                .json()
                .flatten_event(true)
                .init();
            Some(guard)
        }
        Err(e) => {
            eprintln!("keygate: no log writer thread ({e}); logging unbuffered");
            builder
                .with_writer(std::io::stderr)
                .json()
                .flatten_event(true)
                .init();
            None
        }
    }
}
