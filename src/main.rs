//! The `healthpull` binary: parses the command line and runs it.
//!
//! It allocates through mimalloc: mapping a large answer makes and frees many small
//! objects, which glibc's `malloc` serves markedly slower (docs/BENCHMARKS.md).
//! mimalloc asks for transparent huge pages: a command that maps one large answer
//! touches its memory once, and a 2 MiB page costs one fault instead of 512. The server
//! turns them off for itself: it lives long, runs many threads with a heap each, and a
//! huge page per thread would double its resident memory.

use clap::Parser;

mod cli;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
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
        cli::Command::Serve { .. } => {
            small_pages_only();
            tokio::runtime::Builder::new_multi_thread()
        }
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

/// Turns transparent huge pages off for the rest of the process (what faults in from now
/// on; see the module's text). Where the kernel refuses, pages stay as they are: memory,
/// not correctness, is at stake.
fn small_pages_only() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        tracing::debug!("transparent huge pages stay on: {e}");
    }
}
