//! A gRPC client for the tests: tonic's generated client over one hyper HTTP/2 connection on
//! real TLS (ALPN h2, the test certificate accepted). tonic's own transport is not used, as
//! in the server.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use glimpse_wire::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::tls_connector_for;

/// One HTTP/2 connection as the tower service tonic's client sends through.
#[derive(Clone)]
pub(crate) struct H2(hyper::client::conn::http2::SendRequest<tonic::body::Body>);

type ResponseFuture = Pin<
    Box<dyn Future<Output = Result<hyper::Response<hyper::body::Incoming>, hyper::Error>> + Send>,
>;

impl tower_service::Service<hyper::Request<tonic::body::Body>> for H2 {
    type Response = hyper::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), hyper::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: hyper::Request<tonic::body::Body>) -> ResponseFuture {
        Box::pin(self.0.send_request(req))
    }
}

/// Triton's gRPC service client on one connection.
pub(crate) type Client = GrpcInferenceServiceClient<H2>;

/// A client on a new TLS connection (ALPN h2, the test certificate accepted) to `addr`.
pub(crate) async fn connect(addr: SocketAddr) -> Client {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let tls = tls_connector_for(b"h2")
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("HTTP/2 handshake");
    tokio::spawn(conn);
    GrpcInferenceServiceClient::with_origin(H2(send), "https://localhost".parse().expect("uri"))
        .max_decoding_message_size(64 << 20)
}
