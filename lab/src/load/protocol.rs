//! The three ways `glimpse-lab load` asks Glimpse to classify a batch of images, each request
//! built by a pure function (unit-tested byte for byte) and its answer checked:
//!
//! * `json` — `POST /api/v1/classify?wait=true`, the raw image (one per request) or a
//!   multipart form of `file` parts (a batch); every result must say `"status":"ok"`.
//! * `v2` — KServe v2 HTTP with Triton's binary tensor data extension:
//!   `POST /v2/models/googlenet/infer`, a JSON header of `Inference-Header-Content-Length`
//!   bytes followed by the BYTES tensor (each image a 4-byte little-endian length, then its
//!   bytes); the answer must be 200 with a JSON header that parses and has outputs.
//! * `grpc` — KServe v2 gRPC `inference.GRPCInferenceService/ModelInfer`, the same BYTES
//!   tensor in `raw_input_contents`; the answer must have outputs.
//!
//! `json` and `v2` go over the HTTP version of `--http`: HTTP/1.1 (a pool, one connection per
//! request in flight), HTTP/2 (one TCP connection, a stream per request) or HTTP/3 (one QUIC
//! connection, a stream per request; [`super::h3`]). gRPC always rides HTTP/2.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use glimpse_transport::CongestionControl;
use glimpse_wire::binary::encode_bytes_tensor;
use glimpse_wire::names::{INPUT_NAME, MODEL_NAME};
use glimpse_wire::proto;
use glimpse_wire::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use super::error::LoadError;
use super::h3::H3Connection;
use super::tls::{GrpcConnector, Trust, client_config};

/// Triton's header: how many bytes of a binary-extension body are its JSON header.
pub const HEADER_LENGTH: &str = "Inference-Header-Content-Length";
/// The outputs a v2 or gRPC request asks for.
pub const OUTPUTS: [&str; 2] = ["labels", "probabilities"];

/// Which API the load goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// `POST /api/v1/classify?wait=true`: the raw image, or a multipart form of `file`
    /// parts when --batch > 1.
    Json,
    /// KServe v2 HTTP, binary tensor data extension: `POST /v2/models/googlenet/infer`.
    V2,
    /// KServe v2 gRPC: `inference.GRPCInferenceService/ModelInfer` (the front-end's gRPC
    /// listener).
    Grpc,
}

/// Which HTTP carries `json` and `v2` requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
pub enum HttpVersion {
    /// HTTP/1.1 over TLS: a pool of connections, one per request in flight.
    #[value(name = "1.1")]
    #[serde(rename = "http/1.1")]
    Http1,
    /// HTTP/2 over TLS: every request a stream of one TCP connection.
    #[value(name = "2")]
    #[serde(rename = "h2")]
    Http2,
    /// HTTP/3: every request a stream of one QUIC connection, to the UDP port of the URL.
    #[value(name = "3")]
    #[serde(rename = "h3")]
    Http3,
}

impl fmt::Display for HttpVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HttpVersion::Http1 => "HTTP/1.1",
            HttpVersion::Http2 => "HTTP/2",
            HttpVersion::Http3 => "HTTP/3",
        })
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Json => "json",
            Protocol::V2 => "v2",
            Protocol::Grpc => "grpc",
        })
    }
}

/// Why one request failed, coarse enough to count: the report groups errors by it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// The server answered with this non-success HTTP status.
    Http(u16),
    /// The gRPC call ended with this status code (by name, e.g. `Unavailable`); connection
    /// failures of the gRPC channel show up as `Unavailable` too.
    Grpc(String),
    /// No answer: the connection could not be made or broke (HTTP).
    Transport,
    /// No answer within `--timeout`.
    Timeout,
    /// A success status, but an answer that does not parse or has no outputs.
    BadReply,
    /// A success status, but an image in the answer failed (`json`: a result whose status is
    /// not `ok`).
    ImageFailed,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::Http(s) => write!(f, "http {s}"),
            ErrorKind::Grpc(code) => write!(f, "grpc {code}"),
            ErrorKind::Transport => f.write_str("transport"),
            ErrorKind::Timeout => f.write_str("timeout"),
            ErrorKind::BadReply => f.write_str("bad reply"),
            ErrorKind::ImageFailed => f.write_str("image failed"),
        }
    }
}

/// A failed request: its kind, and a message for the report's error samples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// What went wrong, for counting.
    pub kind: ErrorKind,
    /// The details (status text, server message, error chain).
    pub detail: String,
}

impl Failure {
    fn new(kind: ErrorKind, detail: impl Into<String>) -> Failure {
        Failure {
            kind,
            detail: detail.into(),
        }
    }
}

/// How to reach the deployment.
#[derive(Debug, Clone)]
pub struct TargetOptions {
    /// `https://HOST:PORT` of the API `protocol` speaks to (a trailing `/` is ignored).
    pub url: String,
    /// Which API.
    pub protocol: Protocol,
    /// Which HTTP carries it (gRPC: only HTTP/2).
    pub http: HttpVersion,
    /// HTTP/3: the congestion controller of the client's QUIC connection (the TCP of HTTP/1.1
    /// and HTTP/2 uses the kernel's).
    pub congestion: CongestionControl,
    /// Whom to trust.
    pub trust: Trust,
    /// Sent as `Authorization: Bearer KEY` on every request, whatever the protocol.
    pub api_key: Option<String>,
    /// Longest wait for one answer.
    pub timeout: Duration,
}

/// A connected client for one protocol; cheap to share between tasks.
pub(crate) struct Target {
    protocol: Protocol,
    http: Http,
    /// The request path of `json` / `v2` (empty for gRPC).
    path: String,
    /// `Authorization`, when there is a key (every HTTP request carries these).
    headers: HeaderMap,
    grpc: Option<GrpcInferenceServiceClient<Channel>>,
    bearer: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    timeout: Duration,
}

/// The HTTP client of `json` and `v2` requests.
enum Http {
    /// HTTP/1.1 or HTTP/2 (reqwest over TCP), with the deployment's `https://HOST:PORT`.
    Tcp(reqwest::Client, String),
    /// HTTP/3 (one QUIC connection).
    Quic(Box<H3Connection>),
}

/// An HTTP answer: status, headers and the whole body.
type Answer = (u16, HeaderMap, Bytes);

impl Target {
    /// Builds the client and connects it (gRPC: the channel; HTTP/3: the QUIC connection), so
    /// that a wrong address or certificate fails here with a clear message rather than as
    /// every request's error. HTTP/1.1 and HTTP/2 connect on the first request.
    pub(crate) async fn connect(o: &TargetOptions) -> Result<Target, LoadError> {
        let base = o.url.trim_end_matches('/').to_string();
        if !base.starts_with("https://") {
            return Err(LoadError::Usage(format!(
                "--url {base}: Glimpse serves HTTPS only; give https://HOST:PORT"
            )));
        }
        if o.protocol == Protocol::Grpc && o.http != HttpVersion::Http2 {
            return Err(LoadError::Usage(format!(
                "--protocol grpc rides HTTP/2; --http {} applies to json and v2",
                o.http
            )));
        }
        let mut headers = HeaderMap::new();
        let mut bearer = None;
        if let Some(key) = &o.api_key {
            let mut v = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
                LoadError::Usage("--api-key has characters a header cannot carry".into())
            })?;
            v.set_sensitive(true);
            headers.insert(AUTHORIZATION, v);
            bearer = Some(
                format!("Bearer {key}")
                    .parse()
                    .map_err(|_| LoadError::Usage("--api-key is not printable ASCII".into()))?,
            );
        }
        let http = match o.http {
            HttpVersion::Http3 if o.protocol != Protocol::Grpc => Http::Quic(Box::new(
                H3Connection::connect(&base, &o.trust, o.congestion).await?,
            )),
            version => Http::Tcp(tcp_client(version, o)?, base.clone()),
        };
        let grpc = if o.protocol == Protocol::Grpc {
            let endpoint = Endpoint::from_shared(base.clone())
                .map_err(|e| LoadError::Usage(format!("--url {base}: {e}")))?
                .connect_timeout(o.timeout)
                .tcp_nodelay(true);
            let connector = GrpcConnector::new(client_config(&o.trust, &[b"h2"])?);
            let channel = endpoint
                .connect_with_connector(connector)
                .await
                .map_err(|e| {
                    LoadError::Client(format!("gRPC connection to {base}: {}", chain(&e)))
                })?;
            Some(
                GrpcInferenceServiceClient::new(channel)
                    .max_decoding_message_size(64 << 20)
                    .max_encoding_message_size(usize::MAX),
            )
        } else {
            None
        };
        let path = match o.protocol {
            Protocol::Json => "/api/v1/classify?wait=true".to_string(),
            Protocol::V2 => format!("/v2/models/{MODEL_NAME}/infer"),
            Protocol::Grpc => String::new(),
        };
        Ok(Target {
            protocol: o.protocol,
            http,
            path,
            headers,
            grpc,
            bearer,
            timeout: o.timeout,
        })
    }

    /// Sends one request carrying `images` and checks the answer.
    pub(crate) async fn send(&self, images: &[Bytes]) -> Result<(), Failure> {
        match self.protocol {
            Protocol::Json => self.send_json(images).await,
            Protocol::V2 => self.send_v2(images).await,
            Protocol::Grpc => self.send_grpc(images).await,
        }
    }

    async fn send_json(&self, images: &[Bytes]) -> Result<(), Failure> {
        let mut headers = self.headers.clone();
        let body = match images {
            [one] => {
                headers.insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static(image_content_type(one)),
                );
                one.clone()
            }
            _ => {
                let boundary = boundary_for(images);
                headers.insert(
                    CONTENT_TYPE,
                    HeaderValue::from_str(&format!("multipart/form-data; boundary={boundary}"))
                        .map_err(|e| Failure::new(ErrorKind::BadReply, e.to_string()))?,
                );
                Bytes::from(multipart_body(images, &boundary))
            }
        };
        let (status, _, body) = self.post(headers, body).await?;
        check_json_answer(status, &body, images.len())
    }

    async fn send_v2(&self, images: &[Bytes]) -> Result<(), Failure> {
        let (body, header_len) = v2_request_body(images);
        let mut headers = self.headers.clone();
        headers.insert(HEADER_LENGTH, HeaderValue::from(header_len));
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        let (status, answer_headers, body) = self.post(headers, Bytes::from(body)).await?;
        let header_len = answer_headers
            .get(HEADER_LENGTH)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().parse::<usize>());
        check_v2_answer(status, header_len, &body)
    }

    /// `POST` of `body` to the protocol's path over the chosen HTTP, within the timeout.
    async fn post(&self, headers: HeaderMap, body: Bytes) -> Result<Answer, Failure> {
        match &self.http {
            Http::Tcp(client, base) => {
                let resp = client
                    .post(format!("{base}{}", self.path))
                    .headers(headers)
                    .body(body)
                    .send()
                    .await
                    .map_err(http_failure)?;
                let status = resp.status().as_u16();
                let headers = resp.headers().clone();
                let body = resp.bytes().await.map_err(http_failure)?;
                Ok((status, headers, body))
            }
            Http::Quic(conn) => {
                match tokio::time::timeout(self.timeout, conn.post(&self.path, &headers, body))
                    .await
                {
                    Err(_) => Err(Failure::new(
                        ErrorKind::Timeout,
                        format!("no answer within {:?}", self.timeout),
                    )),
                    Ok(Err(e)) => Err(Failure::new(ErrorKind::Transport, e)),
                    Ok(Ok(a)) => Ok((a.status, a.headers, a.body)),
                }
            }
        }
    }

    async fn send_grpc(&self, images: &[Bytes]) -> Result<(), Failure> {
        let Some(client) = &self.grpc else {
            return Err(Failure::new(
                ErrorKind::Transport,
                "no gRPC channel (not connected)",
            ));
        };
        let mut request = tonic::Request::new(grpc_request(images));
        if let Some(b) = &self.bearer {
            request.metadata_mut().insert("authorization", b.clone());
        }
        request.set_timeout(self.timeout);
        let mut client = client.clone();
        match tokio::time::timeout(self.timeout, client.model_infer(request)).await {
            Err(_) => Err(Failure::new(
                ErrorKind::Timeout,
                format!("no answer within {:?}", self.timeout),
            )),
            Ok(Err(status)) => Err(Failure::new(
                ErrorKind::Grpc(format!("{:?}", status.code())),
                status.message().to_string(),
            )),
            Ok(Ok(reply)) => check_grpc_answer(reply.get_ref()),
        }
    }
}

/// The reqwest client of HTTP/1.1 (ALPN `http/1.1`, a pool of up to 1024 connections) or
/// HTTP/2 (ALPN `h2` only: every request a stream of one connection).
fn tcp_client(version: HttpVersion, o: &TargetOptions) -> Result<reqwest::Client, LoadError> {
    let builder = reqwest::Client::builder().timeout(o.timeout);
    let builder = match version {
        HttpVersion::Http2 => builder
            .use_preconfigured_tls(client_config(&o.trust, &[b"h2"])?)
            .http2_prior_knowledge(),
        _ => builder
            .use_preconfigured_tls(client_config(&o.trust, &[b"http/1.1"])?)
            .pool_max_idle_per_host(1024),
    };
    builder
        .build()
        .map_err(|e| LoadError::Client(format!("building the HTTPS client: {e}")))
}

/// A request that got no (complete) answer.
fn http_failure(e: reqwest::Error) -> Failure {
    let kind = if e.is_timeout() {
        ErrorKind::Timeout
    } else {
        ErrorKind::Transport
    };
    Failure::new(kind, chain(&e))
}

/// An error and its sources, `: `-separated (reqwest's own message alone hides the cause).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// At most the first 200 characters of an answer body, for an error message.
fn excerpt(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned()
}

/// Checks a `/api/v1/classify?wait=true` answer: a 2xx status and `images` results, all ok.
pub(crate) fn check_json_answer(status: u16, body: &[u8], images: usize) -> Result<(), Failure> {
    if !(200..300).contains(&status) {
        return Err(Failure::new(ErrorKind::Http(status), excerpt(body)));
    }
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        Failure::new(
            ErrorKind::BadReply,
            format!("answer is not JSON ({e}): {}", excerpt(body)),
        )
    })?;
    let Some(results) = v["results"].as_array() else {
        return Err(Failure::new(
            ErrorKind::BadReply,
            format!("no results in {}", excerpt(body)),
        ));
    };
    if results.len() != images {
        return Err(Failure::new(
            ErrorKind::BadReply,
            format!("{} result(s) for {images} image(s)", results.len()),
        ));
    }
    for (i, r) in results.iter().enumerate() {
        if r["status"].as_str() != Some("ok") {
            return Err(Failure::new(
                ErrorKind::ImageFailed,
                format!(
                    "image {i}: {} ({})",
                    r["status"].as_str().unwrap_or("no status"),
                    r["error"].as_str().unwrap_or("no error message")
                ),
            ));
        }
    }
    Ok(())
}

/// Checks a v2 binary-extension answer: 200, and a JSON header (the first
/// `Inference-Header-Content-Length` bytes, or the whole body without that header) with an
/// `outputs` list.
pub(crate) fn check_v2_answer(
    status: u16,
    header_len: Option<Result<usize, std::num::ParseIntError>>,
    body: &[u8],
) -> Result<(), Failure> {
    if status != 200 {
        return Err(Failure::new(ErrorKind::Http(status), excerpt(body)));
    }
    let len = match header_len {
        None => body.len(),
        Some(Ok(n)) if n <= body.len() => n,
        Some(Ok(n)) => {
            return Err(Failure::new(
                ErrorKind::BadReply,
                format!(
                    "{HEADER_LENGTH}: {n}, but the body has {} bytes",
                    body.len()
                ),
            ));
        }
        Some(Err(e)) => {
            return Err(Failure::new(
                ErrorKind::BadReply,
                format!("{HEADER_LENGTH} is not a number: {e}"),
            ));
        }
    };
    let header: serde_json::Value = serde_json::from_slice(&body[..len]).map_err(|e| {
        Failure::new(
            ErrorKind::BadReply,
            format!(
                "the JSON header does not parse ({e}): {}",
                excerpt(&body[..len])
            ),
        )
    })?;
    match header["outputs"].as_array() {
        Some(outputs) if !outputs.is_empty() => Ok(()),
        _ => Err(Failure::new(
            ErrorKind::BadReply,
            format!("no outputs in the header: {}", excerpt(&body[..len])),
        )),
    }
}

/// Checks a gRPC `ModelInferResponse`: it has outputs.
fn check_grpc_answer(reply: &proto::ModelInferResponse) -> Result<(), Failure> {
    if reply.outputs.is_empty() {
        return Err(Failure::new(
            ErrorKind::BadReply,
            "no outputs in the answer",
        ));
    }
    Ok(())
}

/// `image/png` for a PNG, else `image/jpeg` (the front-end sniffs the bytes anyway; the type
/// only has to be an image type).
fn image_content_type(image: &[u8]) -> &'static str {
    if image.starts_with(b"\x89PNG\r\n\x1a\n") {
        "image/png"
    } else {
        "image/jpeg"
    }
}

/// A multipart boundary that occurs in none of `images`.
pub(crate) fn boundary_for(images: &[Bytes]) -> String {
    (0u32..)
        .map(|i| format!("glimpse-lab-load-5d1f0c7a9e3b{i}"))
        .find(|b| {
            !images
                .iter()
                .any(|img| img.windows(b.len()).any(|w| w == b.as_bytes()))
        })
        .unwrap_or_default()
}

/// A `multipart/form-data` body with one `file` part per image.
pub(crate) fn multipart_body(images: &[Bytes], boundary: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(images.iter().map(|i| i.len() + 160).sum());
    for (i, img) in images.iter().enumerate() {
        let ty = image_content_type(img);
        let ext = if ty == "image/png" { "png" } else { "jpg" };
        out.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"image{i}.{ext}\"\r\nContent-Type: {ty}\r\n\r\n"
            )
            .as_bytes(),
        );
        out.extend_from_slice(img);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    out
}

/// The JSON header of a v2 binary-extension request for `batch` images whose BYTES tensor
/// is `tensor_bytes` long.
pub(crate) fn v2_header(batch: usize, tensor_bytes: usize) -> String {
    let outputs: Vec<String> = OUTPUTS
        .iter()
        .map(|o| format!(r#"{{"name":"{o}","parameters":{{"binary_data":true}}}}"#))
        .collect();
    format!(
        r#"{{"inputs":[{{"name":"{INPUT_NAME}","shape":[{batch}],"datatype":"BYTES","parameters":{{"binary_data_size":{tensor_bytes}}}}}],"outputs":[{}]}}"#,
        outputs.join(",")
    )
}

/// A v2 binary-extension request body for `images` and the length of its JSON header (the
/// value of `Inference-Header-Content-Length`).
pub(crate) fn v2_request_body(images: &[Bytes]) -> (Vec<u8>, usize) {
    let tensor = encode_bytes_tensor(images.iter().map(|i| i.as_ref()));
    let header = v2_header(images.len(), tensor.len());
    let mut body = Vec::with_capacity(header.len() + tensor.len());
    body.extend_from_slice(header.as_bytes());
    body.extend_from_slice(&tensor);
    (body, header.len())
}

/// A gRPC `ModelInferRequest` for `images`: one BYTES input of shape `[batch]` whose
/// contents are in `raw_input_contents`, and both outputs.
pub(crate) fn grpc_request(images: &[Bytes]) -> proto::ModelInferRequest {
    use proto::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
    proto::ModelInferRequest {
        model_name: MODEL_NAME.to_string(),
        inputs: vec![InferInputTensor {
            name: INPUT_NAME.to_string(),
            datatype: "BYTES".to_string(),
            shape: vec![images.len() as i64],
            ..Default::default()
        }],
        outputs: OUTPUTS
            .iter()
            .map(|o| InferRequestedOutputTensor {
                name: (*o).to_string(),
                ..Default::default()
            })
            .collect(),
        raw_input_contents: vec![encode_bytes_tensor(images.iter().map(|i| i.as_ref())).into()],
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_images() -> Vec<Bytes> {
        vec![
            Bytes::from_static(b"\xff\xd8abc"),
            Bytes::from_static(b"\x89PNG\r\n\x1a\nxy"),
        ]
    }

    #[test]
    fn v2_body_is_the_json_header_then_length_prefixed_images() {
        let (body, header_len) = v2_request_body(&two_images());
        // Images of 5 and 10 bytes: (4 + 5) + (4 + 10) = 23 bytes of tensor.
        let header = r#"{"inputs":[{"name":"image","shape":[2],"datatype":"BYTES","parameters":{"binary_data_size":23}}],"outputs":[{"name":"labels","parameters":{"binary_data":true}},{"name":"probabilities","parameters":{"binary_data":true}}]}"#;
        let mut expected = header.as_bytes().to_vec();
        expected.extend_from_slice(&[5, 0, 0, 0]);
        expected.extend_from_slice(b"\xff\xd8abc");
        expected.extend_from_slice(&[10, 0, 0, 0]);
        expected.extend_from_slice(b"\x89PNG\r\n\x1a\nxy");
        assert_eq!(header_len, header.len());
        assert_eq!(body, expected);
        // And the header is the JSON it claims to be.
        let v: serde_json::Value = serde_json::from_slice(&body[..header_len]).unwrap();
        assert_eq!(v["inputs"][0]["parameters"]["binary_data_size"], 23);
        assert_eq!(v["outputs"][1]["name"], "probabilities");
    }

    #[test]
    fn length_prefixes_are_little_endian() {
        let big = Bytes::from(vec![7u8; 0x01_0203]);
        let (body, header_len) = v2_request_body(std::slice::from_ref(&big));
        assert_eq!(&body[header_len..header_len + 4], &[0x03, 0x02, 0x01, 0x00]);
        assert_eq!(body.len(), header_len + 4 + big.len());
    }

    #[test]
    fn grpc_request_carries_the_same_tensor_raw() {
        let images = two_images();
        let r = grpc_request(&images);
        assert_eq!(r.model_name, "googlenet");
        assert_eq!(r.inputs.len(), 1);
        assert_eq!(r.inputs[0].name, "image");
        assert_eq!(r.inputs[0].datatype, "BYTES");
        assert_eq!(r.inputs[0].shape, vec![2]);
        assert!(r.inputs[0].contents.is_none(), "contents travel raw");
        let names: Vec<&str> = r.outputs.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["labels", "probabilities"]);
        let (body, header_len) = v2_request_body(&images);
        assert_eq!(r.raw_input_contents, vec![body[header_len..].to_vec()]);
    }

    #[test]
    fn multipart_body_has_one_file_part_per_image() {
        let images = two_images();
        let b = boundary_for(&images);
        let body = multipart_body(&images, &b);
        let text = String::from_utf8_lossy(&body);
        assert_eq!(text.matches("name=\"file\"").count(), 2);
        assert!(text.contains("filename=\"image0.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n"));
        assert!(text.contains("filename=\"image1.png\"\r\nContent-Type: image/png\r\n\r\n"));
        assert!(body.ends_with(format!("\r\n--{b}--\r\n").as_bytes()));
        assert!(body.starts_with(format!("--{b}\r\n").as_bytes()));
    }

    #[test]
    fn a_boundary_inside_an_image_is_avoided() {
        let first = boundary_for(&[Bytes::from_static(b"x")]);
        let tricky = Bytes::from(format!("..{first}.."));
        let b = boundary_for(std::slice::from_ref(&tricky));
        assert_ne!(b, first);
        assert!(!tricky.windows(b.len()).any(|w| w == b.as_bytes()));
    }

    #[test]
    fn json_answers_are_checked_image_by_image() {
        let ok = br#"{"results":[{"status":"ok"},{"status":"ok"}]}"#;
        assert_eq!(check_json_answer(200, ok, 2), Ok(()));
        assert_eq!(
            check_json_answer(200, ok, 3).unwrap_err().kind,
            ErrorKind::BadReply
        );
        let failed = br#"{"results":[{"status":"ok"},{"status":"error","error":"deadline"}]}"#;
        let f = check_json_answer(200, failed, 2).unwrap_err();
        assert_eq!(f.kind, ErrorKind::ImageFailed);
        assert!(f.detail.contains("deadline"), "{}", f.detail);
        let busy = check_json_answer(503, br#"{"error":"busy"}"#, 1).unwrap_err();
        assert_eq!(busy.kind, ErrorKind::Http(503));
        assert_eq!(busy.kind.to_string(), "http 503");
        assert_eq!(
            check_json_answer(200, b"<html>", 1).unwrap_err().kind,
            ErrorKind::BadReply
        );
    }

    #[test]
    fn v2_answers_need_200_and_a_header_that_parses() {
        let header = br#"{"model_name":"googlenet","outputs":[{"name":"labels"}]}"#;
        let mut body = header.to_vec();
        body.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(check_v2_answer(200, Some(Ok(header.len())), &body), Ok(()));
        assert_eq!(check_v2_answer(200, None, header), Ok(()));
        let kind = |r: Result<(), Failure>| r.unwrap_err().kind;
        assert_eq!(
            kind(check_v2_answer(200, None, &body)),
            ErrorKind::BadReply,
            "binary outputs without the header length"
        );
        assert_eq!(
            kind(check_v2_answer(200, Some(Ok(body.len() + 1)), &body)),
            ErrorKind::BadReply
        );
        assert_eq!(
            kind(check_v2_answer(200, Some("x".parse::<usize>()), &body)),
            ErrorKind::BadReply
        );
        assert_eq!(
            kind(check_v2_answer(200, None, br#"{"outputs":[]}"#)),
            ErrorKind::BadReply
        );
        assert_eq!(kind(check_v2_answer(404, None, b"")), ErrorKind::Http(404));
    }
}
