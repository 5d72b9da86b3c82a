//! Framing and verification: the per-frame cost every request pays before any
//! work, for a single GenerateDataKey and for a batch of 64.

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use flatbuffers::FlatBufferBuilder;
use kms_proto::codec::{encode_response, response_size_hint};
use kms_proto::frame::FrameDecoder;
use kms_proto::*;

const KEY: &str = "1b4e28ba-2fa1-41d2-883f-0016d3cca427";

fn gdk<'a>() -> Operation<'a> {
    Operation::GenerateDataKey(GenerateDataKey {
        key_id: KEY,
        number_of_bytes: Some(32),
        key_spec: None,
        context: vec![("tenant", "acme"), ("purpose", "bench")],
        ..Default::default()
    })
}

fn request_frame(items: usize) -> Vec<u8> {
    let body = if items == 1 {
        RequestBody::Single(Ok(gdk()))
    } else {
        RequestBody::Batch((0..items).map(|_| Ok(gdk())).collect())
    };
    let mut out = Vec::new();
    encode_request(
        &mut FlatBufferBuilder::new(),
        &Request {
            request_id: 1,
            body,
        },
        &mut out,
    );
    out
}

fn gdk_output() -> Outcome {
    Ok(Output::GenerateDataKey(GenerateDataKeyOutput {
        key_id: KEY.into(),
        plaintext: SecretBytes::new(vec![7; 32]),
        ciphertext_blob: vec![1; 93],
    }))
}

fn bench(c: &mut Criterion) {
    let limits = DecodeLimits::default();
    for items in [1usize, 64] {
        let frame = request_frame(items);
        let mut g = c.benchmark_group(format!("request/{items}"));
        g.throughput(Throughput::Elements(items as u64));
        g.bench_function("split_frame", |b| {
            let dec = FrameDecoder::default();
            b.iter_batched_ref(
                || BytesMut::from(&frame[..]),
                |buf| dec.decode(buf).unwrap().unwrap(),
                BatchSize::SmallInput,
            )
        });
        g.bench_function("verify_only", |b| {
            let opts = limits.verifier_options();
            b.iter(|| {
                flatbuffers::root_with_opts::<generated::Request>(&opts, &frame[4..]).unwrap()
            })
        });
        g.bench_function("verify_and_decode", |b| {
            b.iter(|| decode_request(&frame[4..], &limits).unwrap())
        });
        g.finish();

        let resp = Response {
            request_id: 1,
            body: if items == 1 {
                ResponseBody::Single(gdk_output())
            } else {
                ResponseBody::Batch((0..items).map(|_| gdk_output()).collect())
            },
        };
        let mut g = c.benchmark_group(format!("response/{items}"));
        g.throughput(Throughput::Elements(items as u64));
        let mut fbb = FlatBufferBuilder::with_capacity(response_size_hint(&resp));
        let mut out = Vec::with_capacity(response_size_hint(&resp) + 4);
        g.bench_function("encode", |b| {
            b.iter(|| {
                out.clear();
                encode_response(&mut fbb, &resp, &mut out);
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
