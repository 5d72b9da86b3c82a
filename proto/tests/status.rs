//! GetStatus on the wire: request and answer round trip, and a client
//! refuses an answer over the status limits.

use flatbuffers::FlatBufferBuilder;
use kms_proto::codec::{decode_response, encode_request, encode_response};
use kms_proto::types::limits::MAX_METRIC_NAME_LEN;
use kms_proto::*;

fn sample(name: &str) -> MetricSample {
    MetricSample {
        name: name.into(),
        kind: MetricKind::Histogram,
        labels: vec![
            ("operation".into(), "Encrypt".into()),
            ("q".into(), "\"x\"".into()),
        ],
        value: 0.25,
        count: 7,
        quantiles: vec![(0.5, 1e-5), (0.999, f64::INFINITY)],
    }
}

fn round_trip(out: Output) -> Result<Response, KmsError> {
    let resp = Response {
        request_id: 9,
        body: ResponseBody::Single(Ok(out)),
    };
    let mut wire = Vec::new();
    encode_response(&mut FlatBufferBuilder::new(), &resp, &mut wire);
    decode_response(&wire[4..], 1 << 24)
}

#[test]
fn get_status_round_trips() {
    let req = Request {
        request_id: 3,
        body: RequestBody::Single(Ok(Operation::GetStatus(GetStatus))),
    };
    let mut wire = Vec::new();
    encode_request(&mut FlatBufferBuilder::new(), &req, &mut wire);
    assert_eq!(
        decode_request(&wire[4..], &DecodeLimits::default()).unwrap(),
        req
    );
    let st = GetStatusOutput {
        version: "0.1.0".into(),
        uptime_ms: 12_345,
        metrics: vec![
            sample("kmsd_request_duration_seconds"),
            MetricSample {
                name: "kmsd_uptime_seconds".into(),
                kind: MetricKind::Gauge,
                value: 12.3,
                ..MetricSample::default()
            },
        ],
    };
    let r = round_trip(Output::GetStatus(st.clone())).unwrap();
    assert_eq!(r.body, ResponseBody::Single(Ok(Output::GetStatus(st))));
}

#[test]
fn answers_over_the_status_limits_are_refused() {
    let long = "m".repeat(MAX_METRIC_NAME_LEN + 1);
    let r = round_trip(Output::GetStatus(GetStatusOutput {
        metrics: vec![sample(&long)],
        ..GetStatusOutput::default()
    }))
    .unwrap();
    // The item is refused (its neighbours would still be read).
    let ResponseBody::Single(Err(e)) = r.body else {
        panic!("{r:?}")
    };
    assert_eq!(e.kind, ErrorKind::Serialization, "{e}");
    assert!(e.message.contains("metric name"), "{e}");
}
