//! Compiles `proto/` with protox (no `protoc` needed) and generates the tonic code.

use std::{env, fs, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &[
    "corral/plugin/v1/plugin.proto",
    "corral/supervisor/v1/supervisor.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let file_descriptors = protox::compile(PROTOS, ["proto"])?;
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);
    fs::write(
        out_dir.join("corral_descriptor.bin"),
        file_descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .emit_rerun_if_changed(false)
        // Output chunks stay reference-counted from the wire to the file store.
        .bytes(".corral.plugin.v1.OutputChunk.data")
        .compile_fds(file_descriptors)?;
    Ok(())
}
