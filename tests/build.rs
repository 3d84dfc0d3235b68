//! Compiles the vendored SPIFFE Workload API definition (`proto/workload.proto`) into the tonic
//! server and client used by the Workload API test double (`src/spiffe_workload.rs`).
//!
//! The compiler is `protox` (pure Rust), so no `protoc` has to be installed on a developer's
//! machine or in CI.
//!
//! Only with the `spiffe-double` feature; without it there is nothing to generate.

#[cfg(feature = "spiffe-double")]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/workload.proto");
    let files = protox::compile(["proto/workload.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(files)?;
    Ok(())
}

#[cfg(not(feature = "spiffe-double"))]
fn main() {}
