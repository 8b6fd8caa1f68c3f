//! The messages' round trips, versioning and error mapping.

use super::message::encode_body;
use super::*;
use crate::types::{InferenceAnswer, Label, LoadReport, NodeInfo, Timings};
use serde::{Deserialize, Serialize};

fn answer() -> InferenceAnswer {
    InferenceAnswer {
        top: vec![Label {
            index: 7,
            label: "cock".into(),
            probability: 0.5,
        }],
        timings: Timings {
            queue_ms: 1.0,
            ..Default::default()
        },
        synthetic: true,
    }
}

fn body(frame: &[u8]) -> &[u8] {
    let (b, used) = decode_frame(frame, MAX_FRAME_BYTES).unwrap().unwrap();
    assert_eq!(used, frame.len());
    b
}

#[test]
fn request_header_round_trips() {
    let h = RequestHeader::new(42, 2, Some(1500), 5, 123_456);
    let f = encode_request_header(&h).unwrap();
    assert_eq!(decode_request_header(body(&f)).unwrap(), h);
}

/// A header from a front-end that predates `ack` (the field absent) decodes as not
/// asking; a new header without `ack` puts nothing on the wire, so old nodes see exactly
/// the old format; with `ack` it round-trips.
#[test]
fn request_header_ack_is_optional_on_the_wire() {
    #[derive(Serialize, Deserialize)]
    struct OldHeader {
        v: u16,
        request_id: u64,
        attempt: u32,
        deadline_ms: Option<u64>,
        top_k: u32,
        image_len: u64,
    }
    let old = encode_body(&OldHeader {
        v: PROTOCOL_VERSION,
        request_id: 7,
        attempt: 1,
        deadline_ms: None,
        top_k: 5,
        image_len: 10,
    })
    .unwrap();
    let h = decode_request_header(body(&old)).unwrap();
    assert_eq!(h, RequestHeader::new(7, 1, None, 5, 10));
    assert!(!h.ack);
    let plain = encode_request_header(&RequestHeader::new(7, 1, None, 5, 10)).unwrap();
    assert_eq!(plain, old, "ack=false must encode exactly as before");
    let asking = RequestHeader::new(7, 1, None, 5, 10).with_ack(true);
    let f = encode_request_header(&asking).unwrap();
    assert!(f.windows(3).any(|w| w == b"ack"));
    assert!(decode_request_header(body(&f)).unwrap().ack);
    // A node that predates `ack` ignores it (serde skips unknown fields).
    let seen_by_old: OldHeader = serde_cbor::from_slice(body(&f)).unwrap();
    assert_eq!((seen_by_old.request_id, seen_by_old.image_len), (7, 10));
}

/// `traceparent` is optional on the wire both ways: a header from a front-end that predates
/// it (or does not trace) decodes with `None` and encodes exactly as before, and a node that
/// predates it skips it.
#[test]
fn request_header_traceparent_is_optional_on_the_wire() {
    #[derive(Serialize, Deserialize)]
    struct OldHeader {
        v: u16,
        request_id: u64,
        attempt: u32,
        deadline_ms: Option<u64>,
        top_k: u32,
        image_len: u64,
        #[serde(default)]
        ack: bool,
    }
    let old = OldHeader {
        v: PROTOCOL_VERSION,
        request_id: 7,
        attempt: 2,
        deadline_ms: Some(900),
        top_k: 5,
        image_len: 10,
        ack: true,
    };
    let from_old = decode_request_header(body(&encode_body(&old).unwrap())).unwrap();
    assert_eq!(from_old.traceparent, None);
    let untraced = RequestHeader::new(7, 2, Some(900), 5, 10).with_ack(true);
    assert_eq!(
        encode_request_header(&untraced).unwrap(),
        encode_body(&old).unwrap(),
        "no trace context must encode exactly as before"
    );
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let traced = untraced.with_traceparent(Some(tp.into()));
    let f = encode_request_header(&traced).unwrap();
    let back = decode_request_header(body(&f)).unwrap();
    assert_eq!(back.traceparent.as_deref(), Some(tp));
    assert_eq!(back, traced);
    let seen_by_old: OldHeader = serde_cbor::from_slice(body(&f)).unwrap();
    assert_eq!(
        (seen_by_old.request_id, seen_by_old.attempt, seen_by_old.ack),
        (7, 2, true)
    );
}

#[test]
fn started_frame_round_trips_and_is_not_final() {
    for expect_ms in [0, 1, 3000, u32::MAX] {
        let r = Reply::Started { expect_ms };
        let f = encode_reply(&r).unwrap();
        let back = decode_reply(body(&f)).unwrap();
        assert_eq!(back, r);
        assert!(!back.is_final());
    }
    assert!(Reply::Answer(answer()).is_final());
    assert!(
        Reply::Error(ErrorReply {
            kind: ErrorKind::BadImage,
            message: String::new()
        })
        .is_final()
    );
}

#[test]
fn replies_and_control_round_trip() {
    for r in [
        Reply::Answer(answer()),
        Reply::Error(ErrorReply {
            kind: ErrorKind::Overloaded,
            message: "busy".into(),
        }),
    ] {
        let f = encode_reply(&r).unwrap();
        assert_eq!(decode_reply(body(&f)).unwrap(), r);
    }
    let m = ControlMessage::Load(LoadReport {
        in_flight: 3,
        queued: 1,
        recent_latency_ms: 2.5,
        ..LoadReport::default()
    });
    let f = encode_control(&m).unwrap();
    assert_eq!(decode_control(body(&f)).unwrap(), m);
    let m = ControlMessage::Load(LoadReport {
        in_flight: 3,
        queued: 1,
        recent_latency_ms: 2.5,
        service_ms: Some(51.5),
        lanes: Some(2),
    });
    let f = encode_control(&m).unwrap();
    assert_eq!(decode_control(body(&f)).unwrap(), m);
    let f = encode_control(&ControlMessage::Draining).unwrap();
    assert_eq!(decode_control(body(&f)).unwrap(), ControlMessage::Draining);
}

/// A Hello from a node that predates `load_interval_ms` (the field absent) still decodes,
/// and a new one carries the interval the front-end's silence timeout is based on.
#[test]
fn hello_with_and_without_load_interval_decodes() {
    let mut info = NodeInfo {
        node_id: "n1".into(),
        model: "synthetic".into(),
        weights: "none".into(),
        trained: false,
        synthetic: true,
        backend: "none".into(),
        capacity: 4,
        max_batch: 1,
        max_batch_wait_ms: 0,
        version: "0.1.0".into(),
        load_interval_ms: None,
        acks: false,
    };
    let old = encode_control(&ControlMessage::Hello(info.clone())).unwrap();
    assert!(
        !old.windows(b"load_interval_ms".len())
            .any(|w| w == b"load_interval_ms"),
        "an absent interval must not be on the wire (older nodes never send it)"
    );
    assert!(
        !old.windows(b"acks".len()).any(|w| w == b"acks"),
        "acks=false must not be on the wire (older nodes never send it)"
    );
    assert_eq!(
        decode_control(body(&old)).unwrap(),
        ControlMessage::Hello(info.clone())
    );
    info.load_interval_ms = Some(100);
    let new = encode_control(&ControlMessage::Hello(info.clone())).unwrap();
    assert_eq!(
        decode_control(body(&new)).unwrap(),
        ControlMessage::Hello(info.clone())
    );
    // A node that sends Started frames says so; an old Hello (no `acks`) reads as false.
    info.acks = true;
    let acking = encode_control(&ControlMessage::Hello(info.clone())).unwrap();
    assert_eq!(
        decode_control(body(&acking)).unwrap(),
        ControlMessage::Hello(info)
    );
    match decode_control(body(&old)).unwrap() {
        ControlMessage::Hello(i) => assert!(!i.acks),
        other => panic!("{other:?}"),
    }
}

#[test]
fn unknown_version_is_reported_as_such() {
    let mut h = RequestHeader::new(1, 1, None, 5, 10);
    h.v = 99;
    let f = encode_body(&h).unwrap();
    let err = decode_request_header(body(&f)).unwrap_err();
    assert_eq!(
        err,
        CodecError::UnknownVersion {
            got: 99,
            supported: PROTOCOL_VERSION
        }
    );
    assert_eq!(err.to_reply().kind, ErrorKind::UnsupportedVersion);
}

#[test]
fn wrong_message_type_is_malformed() {
    let f = encode_control(&ControlMessage::Draining).unwrap();
    assert!(matches!(
        decode_request_header(body(&f)),
        Err(CodecError::Malformed(_))
    ));
}

/// Deterministic garbage (xorshift), so failures reproduce: no input may panic, and
/// nothing that is not a valid header may decode as one.
#[test]
fn garbage_never_panics() {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let valid = encode_request_header(&RequestHeader::new(9, 1, Some(10), 5, 100)).unwrap();
    for round in 0..5000 {
        let len = (next() % 96) as usize;
        let mut buf: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if round % 3 == 0 && !valid.is_empty() {
            // Mutate a valid frame: flips and truncations exercise the decoder's edges.
            buf = valid.to_vec();
            let i = (next() as usize) % buf.len();
            buf[i] ^= (next() as u8) | 1;
            let keep = (next() as usize) % (buf.len() + 1);
            buf.truncate(keep);
        }
        let _ = decode_request_header(&buf);
        let _ = decode_reply(&buf);
        let _ = decode_control(&buf);
        if let Ok(Some((b, used))) = decode_frame(&buf, MAX_FRAME_BYTES) {
            assert!(used <= buf.len());
            let _ = decode_request_header(b);
        }
    }
}

#[test]
fn stream_codes_round_trip_and_retryability() {
    for c in [
        StreamCode::Cancelled,
        StreamCode::Draining,
        StreamCode::Overloaded,
        StreamCode::BadRequest,
        StreamCode::Internal,
        StreamCode::Unknown(0x99),
    ] {
        assert_eq!(StreamCode::from_code(c.code()), c);
    }
    assert!(StreamCode::Draining.is_retryable());
    assert!(StreamCode::Overloaded.is_retryable());
    assert!(!StreamCode::BadRequest.is_retryable());
    // 0 is what a dropped stream sends: never confused with a meaningful code.
    assert_eq!(StreamCode::from_code(0), StreamCode::Unknown(0));
}

#[test]
fn error_replies_map_to_inference_errors() {
    for e in [
        InferenceError::BadImage("x".into()),
        InferenceError::TooLarge("y".into()),
        InferenceError::Overloaded,
        InferenceError::Draining,
        InferenceError::Internal("z".into()),
        InferenceError::Protocol("p".into()),
    ] {
        let back: InferenceError = ErrorReply::from(&e).into();
        assert_eq!(back, e);
    }
    assert!(!InferenceError::BadImage(String::new()).is_retryable());
    assert!(InferenceError::Overloaded.is_retryable());
}

/// `batch_size` is optional on the wire both ways: an answer from a node that predates it
/// decodes with `None`, and a new answer carries it and still decodes for an old peer.
#[test]
fn timings_batch_size_is_optional_on_the_wire() {
    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct OldTimings {
        queue_ms: f32,
        decode_ms: f32,
        preprocess_ms: f32,
        infer_ms: f32,
    }
    let old = OldTimings {
        queue_ms: 1.0,
        decode_ms: 2.0,
        preprocess_ms: 3.0,
        infer_ms: 4.0,
    };
    let from_old: Timings = serde_cbor::from_slice(&serde_cbor::to_vec(&old).unwrap()).unwrap();
    assert_eq!(from_old.batch_size, None);
    assert_eq!(from_old.infer_ms, 4.0);
    let plain = Timings {
        queue_ms: 1.0,
        decode_ms: 2.0,
        preprocess_ms: 3.0,
        infer_ms: 4.0,
        batch_size: None,
    };
    assert_eq!(
        serde_cbor::to_vec(&plain).unwrap(),
        serde_cbor::to_vec(&old).unwrap(),
        "no batch size must encode exactly as before"
    );
    let mut a = answer();
    a.timings.batch_size = Some(8);
    let f = encode_reply(&Reply::Answer(a.clone())).unwrap();
    assert_eq!(decode_reply(body(&f)).unwrap(), Reply::Answer(a));
    let new = serde_cbor::to_vec(&Timings {
        batch_size: Some(8),
        ..plain
    })
    .unwrap();
    let seen_by_old: OldTimings = serde_cbor::from_slice(&new).unwrap();
    assert_eq!(seen_by_old, old);
}

/// The load report's `service_ms` and `lanes` are optional on the wire, both ways: a report
/// from a node that predates them decodes with both absent, a new report without them is
/// byte for byte the old format, and an old front-end reads a new report with them (serde
/// skips the fields it does not know).
#[test]
fn load_report_service_time_is_optional_on_the_wire() {
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct OldLoad {
        in_flight: u32,
        queued: u32,
        recent_latency_ms: f32,
    }
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum OldControl {
        Hello(NodeInfo),
        Load(OldLoad),
        Draining,
    }
    #[derive(Serialize, Deserialize)]
    struct OldFrame {
        v: u16,
        msg: OldControl,
    }
    let old_load = OldLoad {
        in_flight: 2,
        queued: 1,
        recent_latency_ms: 9.0,
    };
    let old = encode_body(&OldFrame {
        v: PROTOCOL_VERSION,
        msg: OldControl::Load(old_load),
    })
    .unwrap();
    let plain = LoadReport {
        in_flight: 2,
        queued: 1,
        recent_latency_ms: 9.0,
        ..LoadReport::default()
    };
    assert_eq!(
        decode_control(body(&old)).unwrap(),
        ControlMessage::Load(plain.clone())
    );
    let new_plain = encode_control(&ControlMessage::Load(plain.clone())).unwrap();
    assert_eq!(
        new_plain, old,
        "absent fields must encode exactly as before"
    );
    let rich = LoadReport {
        service_ms: Some(260.0),
        lanes: Some(4),
        ..plain
    };
    let f = encode_control(&ControlMessage::Load(rich)).unwrap();
    let seen_by_old: OldFrame = serde_cbor::from_slice(body(&f)).unwrap();
    assert_eq!(
        seen_by_old.msg,
        OldControl::Load(OldLoad {
            in_flight: 2,
            queued: 1,
            recent_latency_ms: 9.0,
        })
    );
}
