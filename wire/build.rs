//! Compiles the KServe v2 gRPC definitions (`proto/`) into Rust at build time, with the
//! `protoc` that `protoc-bin-vendored` ships inside the crate: no network and no system
//! protobuf compiler needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/grpc_service.proto", "proto/model_config.proto"];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    // The images of a request as `Bytes`: decoded as slices of the received buffer, not
    // copies, so a decoded request costs about its wire size (see src/scan.rs).
    config.bytes([
        ".inference.ModelInferRequest.raw_input_contents",
        ".inference.InferTensorContents.bytes_contents",
    ]);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // prost's codec with every message's cost checked before it is decoded.
        .codec_path("crate::codec::BoundedCodec")
        .compile_with_config(config, &protos, &["proto"])?;
    Ok(())
}
