//! The `healthpull` binary: parses the command line and runs it.
//!
//! It allocates through mimalloc: mapping a large answer makes and frees many small
//! objects, which glibc's `malloc` serves markedly slower (docs/BENCHMARKS.md).
//! mimalloc asks for transparent huge pages; `healthpull::pages` keeps them for the
//! memory of large answers in one-shot commands, and off in the server.

use clap::Parser;

mod cli;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    match cli.command {
        cli::Command::Serve { .. } => healthpull::pages::small_only(),
        _ => healthpull::pages::small_until_large(),
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HEALTHPULL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(|| healthpull::secret::log_writer())
        .init();
    // The server answers many requests at once on worker threads; every other command
    // is one task, which the main thread runs without starting workers.
    let mut builder = match cli.command {
        cli::Command::Serve { .. } => tokio::runtime::Builder::new_multi_thread(),
        _ => tokio::runtime::Builder::new_current_thread(),
    };
    // Blocking work is the embedded store's one connection (one operation at a time) and
    // lock files: more threads than this mostly wait, each with its own stack and heap.
    let runtime = match builder.enable_all().max_blocking_threads(8).build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(0) => std::process::ExitCode::SUCCESS,
        Ok(code) => std::process::ExitCode::from(code.clamp(1, 255) as u8),
        Err(e) => {
            eprintln!("error: {}", healthpull::secret::redact(&format!("{e:#}")));
            // Input that can never work (a refused setting) is a usage error, as clap's are.
            if e.downcast_ref::<healthpull::settings::SettingError>()
                .is_some()
            {
                std::process::ExitCode::from(2)
            } else {
                std::process::ExitCode::FAILURE
            }
        }
    }
}
