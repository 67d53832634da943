//! Links the `healthpull` binary at a fixed address on Linux: a position-independent
//! executable makes the dynamic loader patch some 60,000 addresses at every start,
//! which is a measurable part of a short command (docs/BENCHMARKS.md).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
