//! An HTTP/3 client for the tests: `h3`'s client on quinn, trusting any certificate
//! ([`AnyCert`]: the test site's is self-signed).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use h3::client::SendRequest;
use hyper::http;

use super::AnyCert;

/// One HTTP/3 connection to a test site.
pub(crate) struct H3Client {
    send: SendRequest<h3_quinn::OpenStreams, Bytes>,
    /// Kept so the connection lives as long as the client.
    _endpoint: quinn::Endpoint,
    pub(crate) quic: quinn::Connection,
}

/// A response: status, headers and the whole body.
pub(crate) struct H3Response {
    pub(crate) status: u16,
    pub(crate) headers: http::HeaderMap,
    pub(crate) body: Bytes,
}

impl H3Response {
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// A QUIC client endpoint on 127.0.0.1 that offers ALPN `h3` and trusts any certificate.
pub(crate) fn client_endpoint() -> quinn::Endpoint {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert::new(provider)))
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("a QUIC client config");
    let mut endpoint =
        quinn::Endpoint::client("127.0.0.1:0".parse().expect("address")).expect("UDP socket");
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    endpoint
}

impl H3Client {
    /// Connects to `addr` with ALPN `h3`.
    pub(crate) async fn connect(addr: SocketAddr) -> H3Client {
        H3Client::try_connect(addr)
            .await
            .expect("an HTTP/3 connection")
    }

    /// Connects to `addr` with ALPN `h3`, or says why not.
    pub(crate) async fn try_connect(addr: SocketAddr) -> Result<H3Client, String> {
        let endpoint = client_endpoint();
        let quic = endpoint
            .connect(addr, "localhost")
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(quic.clone()))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
        });
        Ok(H3Client {
            send,
            _endpoint: endpoint,
            quic,
        })
    }

    /// Opens a request stream with `request`'s head, for a test that sends the body itself.
    pub(crate) async fn start(
        &self,
        request: http::Request<()>,
    ) -> h3::client::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes> {
        let mut send = self.send.clone();
        send.send_request(request).await.expect("request sent")
    }

    /// Sends `request` with `body` and reads the whole response.
    ///
    /// A server may answer before the body is all there (a body longer than its
    /// Content-Length, say) and stop reading the request (RFC 9114 §4.1.2: STOP_SENDING),
    /// so a refused body or finish is not a failure here: the response is what counts. If no
    /// response comes either, the panic names both.
    pub(crate) async fn send(&self, request: http::Request<()>, body: Bytes) -> H3Response {
        let mut send = self.send.clone();
        let mut stream = send.send_request(request).await.expect("request sent");
        let mut sending = Ok(());
        if !body.is_empty() {
            sending = stream.send_data(body).await;
        }
        if sending.is_ok() {
            sending = stream.finish().await;
        }
        let response = match stream.recv_response().await {
            Ok(response) => response,
            Err(e) => panic!("no response ({e}); sending the request: {sending:?}"),
        };
        let mut body = BytesMut::new();
        while let Some(mut chunk) = stream.recv_data().await.expect("response body") {
            body.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
        }
        H3Response {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: body.freeze(),
        }
    }

    /// `GET path`.
    pub(crate) async fn get(&self, path: &str) -> H3Response {
        let request = http::Request::get(format!("https://localhost{path}"))
            .body(())
            .expect("request");
        self.send(request, Bytes::new()).await
    }

    /// `POST path` of a multipart form with one `file` part per image, with extra headers.
    pub(crate) async fn upload(
        &self,
        path: &str,
        images: &[Vec<u8>],
        headers: &[(&str, &str)],
    ) -> H3Response {
        let boundary = "glimpse-h3-test-boundary";
        let mut body = Vec::new();
        for (i, image) in images.iter().enumerate() {
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; \
                     filename=\"{i}.png\"\r\nContent-Type: image/png\r\n\r\n"
                )
                .as_bytes(),
            );
            body.extend_from_slice(image);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        let mut request = http::Request::post(format!("https://localhost{path}"))
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .header("content-length", body.len());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request.body(()).expect("request"), Bytes::from(body))
            .await
    }
}
