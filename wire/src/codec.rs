//! The codec of every `GRPCInferenceService` method (`build.rs` names it to the code
//! generator): prost's, with each message checked on the wire before it is decoded.
//!
//! tonic hands a decoder the whole received message; prost then allocates whatever the
//! message describes. [`WireBounds`] says what each message type may cost: a
//! `ModelInferRequest` goes through [`crate::scan`] (the tensor caps every protocol applies,
//! and a cap on fields), every other request is a few short strings and may be at most
//! [`SMALL_MESSAGE`] bytes. Responses are what this server sends, so a client (the tests,
//! the load tool) decodes them unchecked.

use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstDecoder, ProstEncoder};

use crate::parse::ParseError;
use crate::proto;
use crate::scan::{WireError, check_infer_request};

/// Largest request of any method but `ModelInfer`: they carry a model name and version.
pub const SMALL_MESSAGE: usize = 64 * 1024;

/// What decoding a message type may cost, checked on its encoded form.
pub trait WireBounds {
    /// `Err` refuses `message` before it is decoded.
    fn check_wire(message: &[u8]) -> Result<(), Status>;
}

impl WireBounds for proto::ModelInferRequest {
    fn check_wire(message: &[u8]) -> Result<(), Status> {
        check_infer_request(message).map_err(refusal)
    }
}

/// A refused `ModelInferRequest` as its client sees it: the words and status the HTTP
/// protocols use for the same fault.
fn refusal(e: WireError) -> Status {
    let parse = match e {
        WireError::Shape(shape) => ParseError::from(shape),
        WireError::Elements | WireError::Fields => ParseError::TooLarge(e.to_string()),
        WireError::Malformed(_) => ParseError::Invalid(e.to_string()),
    };
    // The codes the front-end gives the same faults on every protocol: 413 (more than this
    // server allows of a well-formed request) is RESOURCE_EXHAUSTED, 400 is INVALID_ARGUMENT.
    match parse {
        ParseError::TooLarge(_) => Status::resource_exhausted(parse.to_string()),
        _ => Status::invalid_argument(parse.to_string()),
    }
}

macro_rules! small_requests {
    ($($t:ident),* $(,)?) => {$(
        impl WireBounds for proto::$t {
            fn check_wire(message: &[u8]) -> Result<(), Status> {
                if message.len() > SMALL_MESSAGE {
                    return Err(Status::resource_exhausted(format!(
                        "the request message is {} bytes; the limit is {SMALL_MESSAGE} bytes",
                        message.len()
                    )));
                }
                Ok(())
            }
        }
    )*};
}

small_requests!(
    ServerLiveRequest,
    ServerReadyRequest,
    ModelReadyRequest,
    ServerMetadataRequest,
    ModelMetadataRequest,
    ModelConfigRequest,
    ModelStatisticsRequest,
);

macro_rules! responses {
    ($($t:ident),* $(,)?) => {$(
        impl WireBounds for proto::$t {
            fn check_wire(_: &[u8]) -> Result<(), Status> {
                Ok(())
            }
        }
    )*};
}

responses!(
    ServerLiveResponse,
    ServerReadyResponse,
    ModelReadyResponse,
    ServerMetadataResponse,
    ModelMetadataResponse,
    ModelInferResponse,
    ModelConfigResponse,
    ModelStatisticsResponse,
);

/// prost's codec, with [`WireBounds`] checked before decoding.
#[derive(Debug)]
pub struct BoundedCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for BoundedCodec<T, U> {
    fn default() -> Self {
        BoundedCodec(PhantomData)
    }
}

impl<T, U> Codec for BoundedCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + WireBounds + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = BoundedDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        BoundedDecoder(ProstDecoder::default())
    }
}

/// The decoder of [`BoundedCodec`].
#[derive(Debug)]
pub struct BoundedDecoder<U>(ProstDecoder<U>);

impl<U: Message + Default + WireBounds> Decoder for BoundedDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        // tonic buffers a whole message in one contiguous buffer before calling this.
        let message = bytes::Buf::chunk(buf);
        if message.len() != bytes::Buf::remaining(buf) {
            return Err(Status::internal("a gRPC message arrived in pieces"));
        }
        U::check_wire(message)?;
        self.0.decode(buf)
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn refusals_speak_like_the_http_protocols() {
        let wire = [5u8 << 3 | 2, 0].repeat(9);
        let status = proto::ModelInferRequest::check_wire(&wire).unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "invalid inference request: more than 8 inputs"
        );
        let status = refusal(WireError::Elements);
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(proto::ModelInferRequest::check_wire(&[]).is_ok());
    }

    #[test]
    fn other_requests_are_small() {
        assert!(proto::ModelMetadataRequest::check_wire(&[0; SMALL_MESSAGE]).is_ok());
        let big = proto::ModelMetadataRequest::check_wire(&[0; SMALL_MESSAGE + 1]);
        assert_eq!(big.unwrap_err().code(), Code::ResourceExhausted);
        assert!(proto::ModelInferResponse::check_wire(&[0; SMALL_MESSAGE + 1]).is_ok());
    }
}
