//! The `inference.GRPCInferenceService` methods. Each answers from
//! [`crate::kserve::model`], as the HTTP endpoints do, so both protocols describe and run
//! the same model. Callers are admitted (API key, rate limit) per request by the listener
//! before a request's message is read (see [`super::server`]); `ModelInfer` finds its
//! [`Caller`] in the request's extensions.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::body::PaidBytes;
use super::infer;
use crate::access::caller::Caller;
use crate::http::health::is_serving;
use crate::kserve::model::{
    self, CONFIG_INPUT_DIMS, CONFIG_OUTPUT_DIMS, EXTENSIONS, INPUT_CONFIG_TYPE, INPUT_DATATYPE,
    INPUT_NAME, INPUT_SHAPE, MODEL_NAME, MODEL_VERSION, OUTPUT_SHAPE, OutputName, PLATFORM,
    SERVER_NAME,
};
use crate::observe::stats::StageTotal;
use crate::site::Site;
use glimpse_wire::budget::Held;
use glimpse_wire::proto::grpc_inference_service_server::GrpcInferenceService;
use glimpse_wire::proto::model_metadata_response::TensorMetadata;
use glimpse_wire::proto::{
    DataType, InferStatistics, ModelConfig, ModelConfigRequest, ModelConfigResponse,
    ModelInferRequest, ModelInferResponse, ModelInput, ModelMetadataRequest, ModelMetadataResponse,
    ModelOutput, ModelReadyRequest, ModelReadyResponse, ModelStatistics, ModelStatisticsRequest,
    ModelStatisticsResponse, ServerLiveRequest, ServerLiveResponse, ServerMetadataRequest,
    ServerMetadataResponse, ServerReadyRequest, ServerReadyResponse, StatisticDuration,
};

/// The service behind the gRPC listener.
pub(crate) struct Inference {
    site: Arc<Site>,
}

impl Inference {
    /// The service for `site`.
    pub(crate) fn new(site: Arc<Site>) -> Inference {
        Inference { site }
    }

    fn ready(&self) -> bool {
        is_serving(&self.site)
    }
}

/// The caller the listener admitted for this request.
fn caller_of<T>(request: &Request<T>) -> Result<Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::internal("the request reached the service without admission"))
}

/// Triton's `TYPE_*` name as the enum (`TYPE_INVALID` for a name it does not know, which
/// the constants in `model` never are).
fn data_type(name: &str) -> i32 {
    DataType::from_str_name(name).unwrap_or(DataType::TypeInvalid) as i32
}

fn duration(t: StageTotal) -> Option<StatisticDuration> {
    Some(StatisticDuration {
        count: t.count,
        ns: t.ns,
    })
}

#[tonic::async_trait]
impl GrpcInferenceService for Inference {
    async fn server_live(
        &self,
        _request: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _request: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        Ok(Response::new(ServerReadyResponse {
            ready: self.ready(),
        }))
    }

    async fn model_ready(
        &self,
        request: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        let r = request.get_ref();
        model::check_model(&r.name, Some(&r.version))?;
        Ok(Response::new(ModelReadyResponse {
            ready: self.ready(),
        }))
    }

    async fn server_metadata(
        &self,
        _request: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(ServerMetadataResponse {
            name: SERVER_NAME.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            extensions: EXTENSIONS.map(String::from).to_vec(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let r = request.get_ref();
        model::check_model(&r.name, Some(&r.version))?;
        Ok(Response::new(ModelMetadataResponse {
            name: MODEL_NAME.to_string(),
            versions: vec![MODEL_VERSION.to_string()],
            platform: PLATFORM.to_string(),
            inputs: vec![TensorMetadata {
                name: INPUT_NAME.to_string(),
                datatype: INPUT_DATATYPE.to_string(),
                shape: INPUT_SHAPE.to_vec(),
            }],
            outputs: OutputName::ALL
                .map(|o| TensorMetadata {
                    name: o.as_str().to_string(),
                    datatype: o.datatype().to_string(),
                    shape: OUTPUT_SHAPE.to_vec(),
                })
                .to_vec(),
        }))
    }

    async fn model_infer(
        &self,
        request: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let caller = caller_of(&request)?;
        // What the message paid as it arrived; its images are slices of it (see `body`).
        let paid = request
            .extensions()
            .get::<PaidBytes>()
            .map_or_else(Held::none, PaidBytes::take);
        let site = &self.site;
        // No copying and no blocking: the message was checked on the wire before it was
        // decoded, its images are slices of it, and the checks here are a few comparisons.
        let batch = infer::read_request(request.into_inner(), site, paid)?;
        let answer = model::classify_batch(site, &caller, batch.uploads, batch.k).await?;
        Ok(Response::new(infer::response(
            batch.id,
            &batch.outputs,
            &answer,
        )))
    }

    async fn model_config(
        &self,
        request: Request<ModelConfigRequest>,
    ) -> Result<Response<ModelConfigResponse>, Status> {
        let r = request.get_ref();
        model::check_model(&r.name, Some(&r.version))?;
        let config = ModelConfig {
            name: MODEL_NAME.to_string(),
            platform: PLATFORM.to_string(),
            backend: PLATFORM.to_string(),
            max_batch_size: i32::try_from(model::max_batch_size(&self.site)).unwrap_or(i32::MAX),
            input: vec![ModelInput {
                name: INPUT_NAME.to_string(),
                data_type: data_type(INPUT_CONFIG_TYPE),
                dims: CONFIG_INPUT_DIMS.to_vec(),
            }],
            output: OutputName::ALL
                .map(|o| ModelOutput {
                    name: o.as_str().to_string(),
                    data_type: data_type(o.config_type()),
                    dims: CONFIG_OUTPUT_DIMS.to_vec(),
                })
                .to_vec(),
        };
        Ok(Response::new(ModelConfigResponse {
            config: Some(config),
        }))
    }

    async fn model_statistics(
        &self,
        request: Request<ModelStatisticsRequest>,
    ) -> Result<Response<ModelStatisticsResponse>, Status> {
        let r = request.get_ref();
        // An empty name asks for every model: the one there is.
        if !r.name.is_empty() {
            model::check_model(&r.name, Some(&r.version))?;
        }
        let s = self.site.stats.snapshot();
        Ok(Response::new(ModelStatisticsResponse {
            model_stats: vec![ModelStatistics {
                name: MODEL_NAME.to_string(),
                version: MODEL_VERSION.to_string(),
                last_inference: s.last_inference,
                inference_count: s.inference_count,
                execution_count: s.execution_count,
                inference_stats: Some(InferStatistics {
                    success: duration(s.success),
                    fail: duration(s.fail),
                    queue: duration(s.queue),
                    compute_input: duration(s.compute_input),
                    compute_infer: duration(s.compute_infer),
                    compute_output: duration(s.compute_output),
                    cache_hit: duration(StageTotal::default()),
                    cache_miss: duration(StageTotal::default()),
                }),
                batch_stats: Vec::new(),
            }],
        }))
    }
}
