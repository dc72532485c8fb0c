//! Corral's gRPC contract, generated from the `.proto` files in `proto/`.
//!
//! - [`plugin::v1`]: the service every plugin serves (`corral.plugin.v1`).
//! - [`supervisor::v1`]: the registry plugins call at start and the admin API
//!   (`corral.supervisor.v1`).
//!
//! [`FILE_DESCRIPTOR_SET`] holds both packages, for gRPC reflection.

/// The encoded `FileDescriptorSet` of every Corral `.proto` file.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/corral_descriptor.bin"));

/// The protocol version this crate speaks (`RegisterRequest.protocol_version`).
/// Version 2: a step ends the plugin's call and the gateway keeps the task's
/// state; version 1 (a step waiting inside the call, `SubmitStep`) is refused.
pub const PROTOCOL_VERSION: u32 = 2;

/// The largest state (JSON) a plugin may hand over with a step or checkpoint.
pub const MAX_STATE_BYTES: usize = 1024 * 1024;

/// The `bytes` crate of the generated types (`OutputChunk.data`), for SDKs that
/// send chunks without copying them.
pub use bytes;

/// The largest chunk of an output file a plugin may send in one event.
pub const MAX_OUTPUT_CHUNK: usize = 1024 * 1024;

pub mod admin;

/// `corral.plugin.*`
pub mod plugin {
    /// `corral.plugin.v1`: the service every plugin serves.
    #[allow(missing_docs, unreachable_pub, clippy::all)]
    pub mod v1 {
        tonic::include_proto!("corral.plugin.v1");
    }
}

/// `corral.supervisor.*`
pub mod supervisor {
    /// `corral.supervisor.v1`: the registry and the admin API.
    #[allow(missing_docs, unreachable_pub, clippy::all)]
    pub mod v1 {
        tonic::include_proto!("corral.supervisor.v1");
    }
}

/// The gRPC reflection services (v1 and v1alpha, so older grpcurl works) for a
/// server that serves `services` (full names, e.g. `corral.plugin.v1.Plugin`).
/// Health and both reflection services are always listed.
pub fn reflection_services(
    services: &[&str],
) -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    tonic_reflection::server::Error,
> {
    let builder = || {
        let mut builder = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            )
            .include_reflection_service(false)
            .with_service_name("grpc.health.v1.Health")
            .with_service_name("grpc.reflection.v1.ServerReflection")
            .with_service_name("grpc.reflection.v1alpha.ServerReflection");
        for service in services {
            builder = builder.with_service_name(*service);
        }
        builder
    };
    Ok((builder().build_v1()?, builder().build_v1alpha()?))
}

/// The error of [`reflection_services`].
pub use tonic_reflection::server::Error as ReflectionError;

/// Every descriptor an SDK needs to serve a plugin without generated code: the
/// Corral packages, `grpc.health.v1` and both reflection versions, as one
/// encoded `FileDescriptorSet` (sets concatenate: `file` is a repeated field).
/// The Python SDK carries a copy (`sdk-python/src/corral_plugin/descriptors.binpb`),
/// kept equal to this by a test.
pub fn sdk_descriptor_set() -> Vec<u8> {
    [
        FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ]
    .concat()
}

#[cfg(test)]
mod tests {
    /// The Python SDK's copy of the descriptors matches the `.proto` files. Run
    /// with `CORRAL_BLESS=1` to write it after changing them.
    #[test]
    fn the_python_sdk_carries_the_current_descriptors() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../sdk-python/src/corral_plugin/descriptors.binpb");
        let current = super::sdk_descriptor_set();
        if std::env::var_os("CORRAL_BLESS").is_some() {
            std::fs::write(&path, &current).expect("write the descriptors");
        }
        let carried = std::fs::read(&path).unwrap_or_default();
        assert!(
            carried == current,
            "{} is not current: run `CORRAL_BLESS=1 cargo test -p corral-proto`",
            path.display()
        );
    }
}
