//! KServe v2 over gRPC, with tonic's generated client over real TLS and HTTP/2 against
//! in-process sites with synthetic workers: health, metadata and configuration; a batch
//! of real images classified as the JSON API classifies them; Triton's classification
//! strings; statistics; and refusals with the codes Triton's clients expect.

use common::grpc::{Client, connect};
use common::{Harness, jpeg, metric, part, png};
use glimpse_wire::proto::infer_parameter::ParameterChoice;
use glimpse_wire::proto::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use glimpse_wire::proto::{
    DataType, InferParameter, InferTensorContents, ModelConfigRequest, ModelInferRequest,
    ModelInferResponse, ModelMetadataRequest, ModelReadyRequest, ModelStatisticsRequest,
    ServerLiveRequest, ServerMetadataRequest, ServerReadyRequest,
};
use serde_json::Value;
use tonic::Code;

use crate::common;

/// A BYTES tensor's raw form: each element's 4-byte little-endian length, then its bytes.
fn bytes_tensor(elements: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in elements {
        out.extend_from_slice(&(e.len() as u32).to_le_bytes());
        out.extend_from_slice(e);
    }
    out
}

fn read_bytes_tensor(mut raw: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    while !raw.is_empty() {
        let len = u32::from_le_bytes(raw[..4].try_into().unwrap()) as usize;
        out.push(String::from_utf8(raw[4..4 + len].to_vec()).unwrap());
        raw = &raw[4 + len..];
    }
    out
}

fn read_fp32_tensor(raw: &[u8]) -> Vec<f32> {
    raw.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn int_param(n: i64) -> InferParameter {
    InferParameter {
        parameter_choice: Some(ParameterChoice::Int64Param(n)),
    }
}

fn image_input(shape: Vec<i64>, contents: Option<InferTensorContents>) -> InferInputTensor {
    InferInputTensor {
        name: "image".into(),
        datatype: "BYTES".into(),
        shape,
        parameters: Default::default(),
        contents,
    }
}

/// `ModelInfer` for googlenet with `images` in `raw_input_contents`, as Triton's clients send.
fn raw_request(images: &[&[u8]]) -> ModelInferRequest {
    ModelInferRequest {
        model_name: "googlenet".into(),
        inputs: vec![image_input(vec![images.len() as i64], None)],
        raw_input_contents: vec![bytes_tensor(images).into()],
        ..Default::default()
    }
}

fn output(name: &str, classification: Option<InferParameter>) -> InferRequestedOutputTensor {
    InferRequestedOutputTensor {
        name: name.into(),
        parameters: classification
            .map(|p| [("classification".to_string(), p)].into_iter().collect())
            .unwrap_or_default(),
    }
}

async fn infer(
    client: &mut Client,
    req: ModelInferRequest,
) -> Result<ModelInferResponse, tonic::Status> {
    client
        .model_infer(req)
        .await
        .map(tonic::Response::into_inner)
}

/// The labels the JSON API gives each image, top `k`, in order.
async fn json_labels(h: &Harness, images: &[(Vec<u8>, &str, &str)], k: u32) -> Vec<Vec<String>> {
    let mut form = reqwest::multipart::Form::new();
    for (bytes, name, mime) in images {
        form = form.part("file", part(bytes.clone(), name, mime));
    }
    let r = h
        .client
        .post(h.url(&format!("/api/v1/classify?wait=true&top_k={k}")))
        .multipart(form)
        .send()
        .await
        .expect("classify");
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.expect("JSON");
    body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|res| {
            res["top"]
                .as_array()
                .expect("top")
                .iter()
                .map(|t| t["label"].as_str().expect("label").to_string())
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metadata_and_config() {
    let h = Harness::ready(1, 1, &[]).await;
    let mut c = connect(h.grpc_addr()).await;

    assert!(
        c.server_live(ServerLiveRequest {})
            .await
            .unwrap()
            .into_inner()
            .live
    );
    assert!(
        c.server_ready(ServerReadyRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    let ready = |name: &str, version: &str| ModelReadyRequest {
        name: name.into(),
        version: version.into(),
    };
    assert!(
        c.model_ready(ready("googlenet", ""))
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    assert!(
        c.model_ready(ready("googlenet", "1"))
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    assert_eq!(
        c.model_ready(ready("resnet", "")).await.unwrap_err().code(),
        Code::NotFound
    );
    assert_eq!(
        c.model_ready(ready("googlenet", "2"))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );

    let server = c
        .server_metadata(ServerMetadataRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(server.name, "glimpse");
    assert!(!server.version.is_empty());
    for ext in ["classification", "statistics", "binary_tensor_data"] {
        assert!(
            server.extensions.iter().any(|e| e == ext),
            "{ext} in {:?}",
            server.extensions
        );
    }

    let meta = c
        .model_metadata(ModelMetadataRequest {
            name: "googlenet".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(meta.name, "googlenet");
    assert_eq!(meta.versions, ["1"]);
    assert_eq!(meta.inputs.len(), 1);
    assert_eq!(
        (
            meta.inputs[0].name.as_str(),
            meta.inputs[0].datatype.as_str()
        ),
        ("image", "BYTES")
    );
    let outs: Vec<(&str, &str)> = meta
        .outputs
        .iter()
        .map(|o| (o.name.as_str(), o.datatype.as_str()))
        .collect();
    assert_eq!(outs, [("labels", "BYTES"), ("probabilities", "FP32")]);
    let err = c
        .model_metadata(ModelMetadataRequest {
            name: "resnet".into(),
            version: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    let config = c
        .model_config(ModelConfigRequest {
            name: "googlenet".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .config
        .expect("config");
    assert_eq!(config.max_batch_size, 64, "--max-files");
    assert_eq!(config.input[0].name, "image");
    assert_eq!(config.input[0].data_type, DataType::TypeString as i32);
    assert_eq!(config.input[0].dims, [1]);
    assert_eq!(config.output.len(), 2);
    assert_eq!(config.output[0].data_type, DataType::TypeString as i32);
    assert_eq!(config.output[1].name, "probabilities");
    assert_eq!(config.output[1].data_type, DataType::TypeFp32 as i32);
    assert_eq!(config.output[1].dims, [-1]);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_classified_as_the_json_api_classifies_it() {
    let h = Harness::ready(2, 1, &[]).await;
    let mut c = connect(h.grpc_addr()).await;
    let (a, b) = (png(11), jpeg(12));
    let stats = |name: &str| ModelStatisticsRequest {
        name: name.into(),
        version: String::new(),
    };
    let before = c.model_statistics(stats("")).await.unwrap().into_inner();
    assert_eq!(before.model_stats.len(), 1);
    let before_count = before.model_stats[0].inference_count;

    let mut req = raw_request(&[&a, &b]);
    req.id = "batch-1".into();
    req.parameters.insert("top_k".into(), int_param(3));
    let r = infer(&mut c, req).await.expect("infer");
    assert_eq!(
        (
            r.id.as_str(),
            r.model_name.as_str(),
            r.model_version.as_str()
        ),
        ("batch-1", "googlenet", "1")
    );
    assert_eq!(r.outputs.len(), 2);
    assert_eq!(r.raw_output_contents.len(), 2);
    assert_eq!(
        (r.outputs[0].name.as_str(), r.outputs[0].datatype.as_str()),
        ("labels", "BYTES")
    );
    assert_eq!(r.outputs[0].shape, [2, 3]);
    assert_eq!(
        (r.outputs[1].name.as_str(), r.outputs[1].datatype.as_str()),
        ("probabilities", "FP32")
    );
    assert_eq!(r.outputs[1].shape, [2, 3]);
    let labels = read_bytes_tensor(&r.raw_output_contents[0]);
    let probs = read_fp32_tensor(&r.raw_output_contents[1]);
    assert_eq!((labels.len(), probs.len()), (6, 6));
    assert!(
        probs[0] >= probs[1] && probs[1] >= probs[2],
        "best first: {probs:?}"
    );

    // The synthetic model is deterministic: the JSON API gives the same classes.
    let json = json_labels(
        &h,
        &[
            (a.clone(), "a.png", "image/png"),
            (b.clone(), "b.jpg", "image/jpeg"),
        ],
        3,
    )
    .await;
    assert_eq!(labels[..3], json[0][..], "image 0");
    assert_eq!(labels[3..], json[1][..], "image 1");

    // The same images as bytes_contents, one output asked for.
    let req = ModelInferRequest {
        model_name: "googlenet".into(),
        inputs: vec![image_input(
            vec![2, 1],
            Some(InferTensorContents {
                bytes_contents: vec![a.clone().into(), b.clone().into()],
                ..Default::default()
            }),
        )],
        outputs: vec![output("labels", None)],
        parameters: [("top_k".to_string(), int_param(3))].into_iter().collect(),
        ..Default::default()
    };
    let r = infer(&mut c, req).await.expect("infer with bytes_contents");
    assert_eq!(r.outputs.len(), 1);
    assert_eq!(read_bytes_tensor(&r.raw_output_contents[0]), labels);

    // Triton's classification extension: "score:index:label", k per output.
    let mut req = raw_request(&[&a, &b]);
    req.outputs = vec![
        output("probabilities", None),
        output(
            "labels",
            Some(InferParameter {
                parameter_choice: Some(ParameterChoice::StringParam("2".into())),
            }),
        ),
    ];
    let r = infer(&mut c, req).await.expect("classification");
    assert_eq!(r.outputs[0].name, "probabilities");
    assert_eq!(r.outputs[1].datatype, "BYTES");
    assert_eq!(r.outputs[1].shape, [2, 2]);
    let strings = read_bytes_tensor(&r.raw_output_contents[1]);
    assert_eq!(strings.len(), 4);
    for (i, s) in strings.iter().enumerate() {
        let mut parts = s.splitn(3, ':');
        let score: f32 = parts.next().unwrap().parse().expect("score");
        let index: u32 = parts.next().unwrap().parse().expect("index");
        let label = parts.next().expect("label");
        assert!((0.0..=1.0).contains(&score) && index < 1000, "{s}");
        assert_eq!(label, json[i / 2][i % 2], "{s}");
    }

    let after = c
        .model_statistics(stats("googlenet"))
        .await
        .unwrap()
        .into_inner();
    let s = &after.model_stats[0];
    assert_eq!((s.name.as_str(), s.version.as_str()), ("googlenet", "1"));
    assert!(
        s.inference_count >= before_count + 6,
        "{} then {}",
        before_count,
        s.inference_count
    );
    let success = s
        .inference_stats
        .as_ref()
        .and_then(|i| i.success.as_ref())
        .expect("success");
    assert!(success.count >= 6 && success.ns > 0);
    assert!(s.last_inference > 0);
    assert_eq!(
        c.model_statistics(stats("resnet"))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_have_their_codes_and_the_server_keeps_serving() {
    let h = Harness::ready(1, 1, &["--max-files", "2", "--max-request-bytes", "100000"]).await;
    let mut c = connect(h.grpc_addr()).await;
    let good = png(3);

    // A length prefix that claims more than the tensor holds.
    let mut req = raw_request(&[&good]);
    req.raw_input_contents = vec![[&[0xff, 0xff, 0xff, 0x7f][..], b"abc"].concat().into()];
    let err = infer(&mut c, req).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("declares"), "{}", err.message());
    // Same connection, next call: served.
    infer(&mut c, raw_request(&[&good]))
        .await
        .expect("served after a bad request");

    let err = infer(&mut c, raw_request(&[b"hello, not an image"]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    let err = infer(&mut c, raw_request(&[&good, &good, &good]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    let mut req = raw_request(&[]);
    req.raw_input_contents.clear();
    req.inputs = vec![image_input(
        vec![3],
        Some(InferTensorContents {
            bytes_contents: vec![good.clone().into(); 3],
            ..Default::default()
        }),
    )];
    let err = infer(&mut c, req).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");

    // A message over the request limit is refused by its declared length.
    let big = vec![7u8; 200_000];
    let err = infer(&mut c, raw_request(&[&big])).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");

    let mut req = raw_request(&[&good]);
    req.model_name = "resnet".into();
    assert_eq!(infer(&mut c, req).await.unwrap_err().code(), Code::NotFound);
    let mut req = raw_request(&[&good]);
    req.inputs[0].name = "pixels".into();
    assert_eq!(
        infer(&mut c, req).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let mut req = raw_request(&[&good]);
    req.inputs[0].shape = vec![2];
    assert_eq!(
        infer(&mut c, req).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let mut req = raw_request(&[&good]);
    req.outputs = vec![output("labels", Some(int_param(0)))];
    assert_eq!(
        infer(&mut c, req).await.unwrap_err().code(),
        Code::InvalidArgument
    );

    let r = infer(&mut c, raw_request(&[&good, &good]))
        .await
        .expect("still serving");
    assert_eq!(r.outputs[0].shape, [2, 5]);
    // /metrics has the calls by method and gRPC status: answered (0) and refused (3).
    let text = h.get_text("/metrics").await;
    for series in [
        "glimpse_grpc_request_duration_seconds_count{method=\"ModelInfer\",code=\"0\"}",
        "glimpse_grpc_request_duration_seconds_count{method=\"ModelInfer\",code=\"3\"}",
    ] {
        assert!(
            metric(&text, series).is_some_and(|n| n >= 1.0),
            "{series} missing from\n{text}"
        );
    }
    h.stop().await;
}

/// `msg` with `authorization: Bearer KEY` metadata, as Triton's clients send keys.
fn with_key<T>(key: &str, msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    let value = format!("Bearer {key}").parse().expect("metadata value");
    req.metadata_mut().insert("authorization", value);
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_and_rate_limits_apply_to_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys");
    let key = glimpse_site::access::auth::add_new_key(&path, "alice", false).unwrap();
    let path = path.to_string_lossy().into_owned();
    let h = Harness::ready(1, 1, &["--api-keys", &path, "--rate-limit", "1:4"]).await;
    let mut c = connect(h.grpc_addr()).await;

    let err = c.server_live(ServerLiveRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    let err = c
        .model_infer(with_key("not-the-key", raw_request(&[&png(1)])))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    let r = c
        .model_infer(with_key(&key, raw_request(&[&png(1)])))
        .await
        .expect("with the key");
    assert_eq!(r.into_inner().outputs.len(), 2);

    // Past the caller's rate: RESOURCE_EXHAUSTED with retry-after.
    let mut refused = None;
    for _ in 0..10 {
        if let Err(e) = c.server_live(with_key(&key, ServerLiveRequest {})).await {
            refused = Some(e);
            break;
        }
    }
    let err = refused.expect("rate limited within 10 calls");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    let retry: u64 = err
        .metadata()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("retry-after");
    assert!(retry >= 1);
    h.stop().await;
}
