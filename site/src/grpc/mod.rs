//! KServe v2 over gRPC: Triton's `inference.GRPCInferenceService`.

pub mod proto;
