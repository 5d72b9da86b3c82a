//! kms-proto's own tests: typed messages survive encode -> frame -> decode,
//! the wire format is pinned by golden frames, and the request decoder turns
//! every malformed input into the right error instead of a panic.
//!
//! Golden frames live in `proto/tests/golden/`. After an intended change of
//! the wire format, rewrite them with
//! `KMS_UPDATE_GOLDEN=1 cargo test -p kms-proto --test roundtrip golden`
//! and review the diff.

use bytes::BytesMut;
use flatbuffers::FlatBufferBuilder;
use kms_proto::codec::{encode_error_response, DEFAULT_MAX_BATCH};
use kms_proto::frame::{FrameDecoder, FrameError, DEFAULT_MAX_FRAME, LEN_PREFIX};
use kms_proto::generated as fb;
use kms_proto::*;
use proptest::prelude::*;
use std::path::PathBuf;

// ------------------------------------------------------------------ helpers

/// Splits a byte stream that must hold exactly whole frames.
fn frames_of(stream: &[u8]) -> Vec<Vec<u8>> {
    let dec = FrameDecoder::default();
    let mut buf = BytesMut::from(stream);
    let mut out = Vec::new();
    while let Some(frame) = dec.decode(&mut buf).expect("valid framing") {
        out.push(frame.to_vec());
    }
    assert!(
        buf.is_empty(),
        "{} trailing bytes after the frames",
        buf.len()
    );
    out
}

/// The one frame of `stream`, without its length prefix.
fn single_frame(stream: &[u8]) -> Vec<u8> {
    let mut frames = frames_of(stream);
    assert_eq!(frames.len(), 1, "expected exactly one frame");
    frames.pop().unwrap()
}

fn encode_req(req: &Request<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    encode_request(&mut FlatBufferBuilder::new(), req, &mut out);
    out
}

fn encode_resp(resp: &Response) -> Vec<u8> {
    let mut out = Vec::new();
    encode_response(&mut FlatBufferBuilder::new(), resp, &mut out);
    out
}

fn limits() -> DecodeLimits {
    DecodeLimits::default()
}

/// Decodes a request payload that must fail as a whole, returning the error.
fn request_error(payload: &[u8], limits: &DecodeLimits) -> RequestError {
    match decode_request(payload, limits) {
        Ok(req) => panic!("expected a decode error, got {req:?}"),
        Err(e) => e,
    }
}

/// Finishes a hand-built request and returns its payload (no length prefix).
fn finish_request(fbb: &mut FlatBufferBuilder<'_>, args: &fb::RequestArgs<'_>) -> Vec<u8> {
    let root = fb::Request::create(fbb, args);
    fbb.finish_minimal(root);
    fbb.finished_data().to_vec()
}

fn generate_random_union(
    fbb: &mut FlatBufferBuilder<'_>,
    n: u32,
) -> flatbuffers::WIPOffset<flatbuffers::UnionWIPOffset> {
    fb::GenerateRandomRequest::create(fbb, &fb::GenerateRandomRequestArgs { number_of_bytes: n })
        .as_union_value()
}

// ------------------------------------------------------ owned request model

/// Owned data for one operation; [`OwnedOp::borrow`] makes the borrowed
/// [`Operation`] the codec works with.
#[derive(Debug, Clone)]
enum OwnedOp {
    CreateKey {
        description: String,
        hsm: bool,
        policy: Option<String>,
        bypass_policy_lockout_safety_check: bool,
    },
    DescribeKey {
        key_id: String,
        grant_tokens: Vec<String>,
    },
    ListKeys {
        limit: u32,
        marker: Option<String>,
    },
    GenerateDataKey {
        without_plaintext: bool,
        key_id: String,
        number_of_bytes: Option<u32>,
        key_spec: Option<DataKeySpec>,
        context: Vec<(String, String)>,
        access: Access,
    },
    Encrypt {
        key_id: String,
        plaintext: Vec<u8>,
        context: Vec<(String, String)>,
        access: Access,
    },
    Decrypt {
        ciphertext_blob: Vec<u8>,
        key_id: Option<String>,
        context: Vec<(String, String)>,
        access: Access,
    },
    ReEncrypt {
        ciphertext_blob: Vec<u8>,
        source_key_id: Option<String>,
        source_context: Vec<(String, String)>,
        destination_key_id: String,
        destination_context: Vec<(String, String)>,
        access: Access,
    },
    GenerateRandom {
        number_of_bytes: u32,
    },
    WhoAmI,
}

/// The access-control fields of the data-key operations: grant tokens and
/// dry run.
#[derive(Debug, Clone)]
struct Access {
    grant_tokens: Vec<String>,
    dry_run: bool,
}

fn ctx(c: &[(String, String)]) -> Context<'_> {
    c.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

impl OwnedOp {
    fn borrow(&self) -> Operation<'_> {
        match self {
            OwnedOp::CreateKey {
                description,
                hsm,
                policy,
                bypass_policy_lockout_safety_check,
            } => Operation::CreateKey(CreateKey {
                description,
                key_usage: KeyUsage::EncryptDecrypt,
                key_spec: KeySpec::SymmetricDefault,
                origin: if *hsm { Origin::Hsm } else { Origin::Kmsd },
                tags: vec![],
                policy: policy.as_deref(),
                bypass_policy_lockout_safety_check: *bypass_policy_lockout_safety_check,
            }),
            OwnedOp::DescribeKey {
                key_id,
                grant_tokens,
            } => Operation::DescribeKey(DescribeKey {
                key_id,
                grant_tokens: strs(grant_tokens),
            }),
            OwnedOp::ListKeys { limit, marker } => Operation::ListKeys(ListKeys {
                limit: *limit,
                marker: marker.as_deref(),
            }),
            OwnedOp::GenerateDataKey {
                without_plaintext,
                key_id,
                number_of_bytes,
                key_spec,
                context,
                access,
            } => {
                let g = GenerateDataKey {
                    key_id,
                    number_of_bytes: *number_of_bytes,
                    key_spec: *key_spec,
                    context: ctx(context),
                    grant_tokens: strs(&access.grant_tokens),
                    dry_run: access.dry_run,
                };
                if *without_plaintext {
                    Operation::GenerateDataKeyWithoutPlaintext(g)
                } else {
                    Operation::GenerateDataKey(g)
                }
            }
            OwnedOp::Encrypt {
                key_id,
                plaintext,
                context,
                access,
            } => Operation::Encrypt(Encrypt {
                key_id,
                plaintext,
                context: ctx(context),
                grant_tokens: strs(&access.grant_tokens),
                dry_run: access.dry_run,
            }),
            OwnedOp::Decrypt {
                ciphertext_blob,
                key_id,
                context,
                access,
            } => Operation::Decrypt(Decrypt {
                ciphertext_blob,
                key_id: key_id.as_deref(),
                context: ctx(context),
                grant_tokens: strs(&access.grant_tokens),
                dry_run: access.dry_run,
            }),
            OwnedOp::ReEncrypt {
                ciphertext_blob,
                source_key_id,
                source_context,
                destination_key_id,
                destination_context,
                access,
            } => Operation::ReEncrypt(ReEncrypt {
                ciphertext_blob,
                source_key_id: source_key_id.as_deref(),
                source_context: ctx(source_context),
                destination_key_id,
                destination_context: ctx(destination_context),
                grant_tokens: strs(&access.grant_tokens),
                dry_run: access.dry_run,
            }),
            OwnedOp::GenerateRandom { number_of_bytes } => {
                Operation::GenerateRandom(GenerateRandom {
                    number_of_bytes: *number_of_bytes,
                })
            }
            OwnedOp::WhoAmI => Operation::WhoAmI(WhoAmI),
        }
    }
}

#[derive(Debug, Clone)]
enum OwnedBody {
    Single(OwnedOp),
    Batch(Vec<OwnedOp>),
}

#[derive(Debug, Clone)]
struct OwnedRequest {
    request_id: u64,
    body: OwnedBody,
}

impl OwnedRequest {
    fn borrow(&self) -> Request<'_> {
        Request {
            request_id: self.request_id,
            body: match &self.body {
                OwnedBody::Single(op) => RequestBody::Single(Ok(op.borrow())),
                OwnedBody::Batch(ops) => {
                    RequestBody::Batch(ops.iter().map(|op| Ok(op.borrow())).collect())
                }
            },
        }
    }
}

// ---------------------------------------------------------------- strategies

/// Any UTF-8 text, including NULs and non-ASCII characters.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-zA-Z0-9:/_-]{0,24}",
        1 => any::<String>(),
    ]
}

fn blob() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..96)
}

fn context() -> impl Strategy<Value = Vec<(String, String)>> {
    proptest::collection::vec((text(), text()), 0..5)
}

/// Non-empty text (grant tokens and policies have at least one byte).
fn nonempty_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[A-Za-z0-9+/=]{1,48}",
        1 => any::<String>().prop_filter("not empty", |s| !s.is_empty()),
    ]
}

/// Grant tokens (at most 10 on the wire) and dry run.
fn access() -> impl Strategy<Value = Access> {
    (
        proptest::collection::vec(nonempty_text(), 0..4),
        any::<bool>(),
    )
        .prop_map(|(grant_tokens, dry_run)| Access {
            grant_tokens,
            dry_run,
        })
}

fn data_key_spec() -> impl Strategy<Value = Option<DataKeySpec>> {
    prop_oneof![
        Just(None),
        Just(Some(DataKeySpec::Aes128)),
        Just(Some(DataKeySpec::Aes256)),
    ]
}

fn owned_op() -> impl Strategy<Value = OwnedOp> {
    prop_oneof![
        (
            text(),
            any::<bool>(),
            proptest::option::of(nonempty_text()),
            any::<bool>()
        )
            .prop_map(|(description, hsm, policy, bypass)| OwnedOp::CreateKey {
                description,
                hsm,
                policy,
                bypass_policy_lockout_safety_check: bypass,
            }),
        (text(), proptest::collection::vec(nonempty_text(), 0..4)).prop_map(
            |(key_id, grant_tokens)| OwnedOp::DescribeKey {
                key_id,
                grant_tokens
            }
        ),
        (any::<u32>(), proptest::option::of(text()))
            .prop_map(|(limit, marker)| OwnedOp::ListKeys { limit, marker }),
        (
            any::<bool>(),
            text(),
            // 0 on the wire means "not set", so Some(0) is not a value.
            proptest::option::of(1..=u32::MAX),
            data_key_spec(),
            context(),
            access(),
        )
            .prop_map(
                |(without_plaintext, key_id, number_of_bytes, key_spec, context, access)| {
                    OwnedOp::GenerateDataKey {
                        without_plaintext,
                        key_id,
                        number_of_bytes,
                        key_spec,
                        context,
                        access,
                    }
                }
            ),
        (text(), blob(), context(), access()).prop_map(|(key_id, plaintext, context, access)| {
            OwnedOp::Encrypt {
                key_id,
                plaintext,
                context,
                access,
            }
        }),
        (blob(), proptest::option::of(text()), context(), access()).prop_map(
            |(ciphertext_blob, key_id, context, access)| OwnedOp::Decrypt {
                ciphertext_blob,
                key_id,
                context,
                access,
            }
        ),
        (
            blob(),
            proptest::option::of(text()),
            context(),
            text(),
            context(),
            access(),
        )
            .prop_map(
                |(
                    ciphertext_blob,
                    source_key_id,
                    source_context,
                    destination_key_id,
                    destination_context,
                    access,
                )| OwnedOp::ReEncrypt {
                    ciphertext_blob,
                    source_key_id,
                    source_context,
                    destination_key_id,
                    destination_context,
                    access,
                }
            ),
        any::<u32>().prop_map(|number_of_bytes| OwnedOp::GenerateRandom { number_of_bytes }),
        Just(OwnedOp::WhoAmI),
    ]
}

fn owned_request() -> impl Strategy<Value = OwnedRequest> {
    let body = prop_oneof![
        owned_op().prop_map(OwnedBody::Single),
        proptest::collection::vec(owned_op(), 1..8).prop_map(OwnedBody::Batch),
    ];
    (any::<u64>(), body).prop_map(|(request_id, body)| OwnedRequest { request_id, body })
}

fn kms_error() -> impl Strategy<Value = KmsError> {
    (proptest::sample::select(ErrorKind::ALL.to_vec()), text())
        .prop_map(|(kind, message)| KmsError::new(kind, message))
}

fn key_metadata() -> impl Strategy<Value = KeyMetadata> {
    (
        (text(), text(), any::<i64>(), any::<bool>(), text()),
        (
            proptest::sample::select(vec![
                KeyState::Enabled,
                KeyState::Disabled,
                KeyState::PendingDeletion,
                KeyState::PendingImport,
            ]),
            proptest::sample::select(vec![Origin::Kmsd, Origin::External]),
            any::<u32>(),
        ),
    )
        .prop_map(
            |((key_id, arn, creation_date, enabled, description), (key_state, origin, v))| {
                KeyMetadata {
                    key_id,
                    arn,
                    creation_date,
                    enabled,
                    description,
                    key_state,
                    key_usage: KeyUsage::EncryptDecrypt,
                    key_spec: KeySpec::SymmetricDefault,
                    origin,
                    current_version: v,
                    ..KeyMetadata::default()
                }
            },
        )
}

fn secret() -> impl Strategy<Value = SecretBytes> {
    blob().prop_map(SecretBytes::new)
}

fn output() -> impl Strategy<Value = Output> {
    prop_oneof![
        key_metadata().prop_map(Output::CreateKey),
        key_metadata().prop_map(Output::DescribeKey),
        (
            proptest::collection::vec(
                (text(), text()).prop_map(|(key_id, arn)| KeyListEntry { key_id, arn }),
                0..6
            ),
            proptest::option::of(text()),
            any::<bool>()
        )
            .prop_map(
                |(keys, next_marker, truncated)| Output::ListKeys(ListKeysOutput {
                    keys,
                    next_marker,
                    truncated
                })
            ),
        (text(), secret(), blob()).prop_map(|(key_id, plaintext, ciphertext_blob)| {
            Output::GenerateDataKey(GenerateDataKeyOutput {
                key_id,
                plaintext,
                ciphertext_blob,
            })
        }),
        (text(), blob()).prop_map(|(key_id, ciphertext_blob)| {
            Output::GenerateDataKeyWithoutPlaintext(GenerateDataKeyWithoutPlaintextOutput {
                key_id,
                ciphertext_blob,
            })
        }),
        (text(), blob()).prop_map(|(key_id, ciphertext_blob)| Output::Encrypt(EncryptOutput {
            key_id,
            ciphertext_blob
        })),
        (text(), secret())
            .prop_map(|(key_id, plaintext)| Output::Decrypt(DecryptOutput { key_id, plaintext })),
        (text(), text(), blob()).prop_map(|(source_key_id, key_id, ciphertext_blob)| {
            Output::ReEncrypt(ReEncryptOutput {
                source_key_id,
                key_id,
                ciphertext_blob,
            })
        }),
        secret().prop_map(|plaintext| Output::GenerateRandom(GenerateRandomOutput { plaintext })),
        (
            any::<u32>(),
            any::<u32>(),
            any::<i32>(),
            proptest::collection::vec(any::<u32>(), 0..40),
            proptest::option::of("[a-z@-]{1,20}\\.service"),
            proptest::option::of("/[a-z./-]{0,60}"),
        )
            .prop_map(|(uid, gid, pid, mut groups, unit, cgroup)| {
                groups.sort_unstable();
                groups.dedup();
                Output::WhoAmI(WhoAmIOutput {
                    uid,
                    gid,
                    pid,
                    groups,
                    unit,
                    cgroup,
                })
            }),
    ]
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        3 => output().prop_map(Ok),
        1 => kms_error().prop_map(Err),
    ]
}

fn response() -> impl Strategy<Value = Response> {
    let body = prop_oneof![
        kms_error().prop_map(ResponseBody::Error),
        outcome().prop_map(ResponseBody::Single),
        proptest::collection::vec(outcome(), 0..8).prop_map(ResponseBody::Batch),
    ];
    (any::<u64>(), body).prop_map(|(request_id, body)| Response { request_id, body })
}

// ---------------------------------------------------------------- round trips

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn request_round_trips(owned in owned_request()) {
        let req = owned.borrow();
        let wire = encode_req(&req);
        let payload = single_frame(&wire);
        let decoded = decode_request(&payload, &limits()).expect("decodes");
        prop_assert_eq!(kms_proto::codec::request_id_of(&payload), Some(req.request_id));
        prop_assert_eq!(decoded, req);
    }

    /// A builder sized at `request_size_bound` never grows (growing would
    /// free a copy of the request, plaintext included, unzeroed).
    #[test]
    fn request_size_bound_is_never_exceeded(owned in owned_request()) {
        let req = owned.borrow();
        let bound = kms_proto::codec::request_size_bound(&req);
        let mut fbb = FlatBufferBuilder::with_capacity(bound);
        kms_proto::codec::build_request(&mut fbb, &req);
        let (buf, _) = fbb.collapse();
        prop_assert_eq!(buf.len(), bound);
    }

    #[test]
    fn response_round_trips(resp in response()) {
        let wire = encode_resp(&resp);
        let payload = single_frame(&wire);
        let decoded = decode_response(&payload, DEFAULT_MAX_FRAME).expect("decodes");
        prop_assert_eq!(decoded, resp);
    }

    /// Several frames on one stream, delivered in arbitrary pieces: the frame
    /// decoder yields each frame whole and in order, whatever the split.
    #[test]
    fn stream_of_frames_in_any_pieces(
        reqs in proptest::collection::vec(owned_request(), 1..5),
        cuts in proptest::collection::vec(1usize..64, 0..64),
    ) {
        let mut wire = Vec::new();
        let mut fbb = FlatBufferBuilder::new();
        for r in &reqs {
            encode_request(&mut fbb, &r.borrow(), &mut wire);
        }
        let dec = FrameDecoder::new(1 << 20);
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        let mut rest = &wire[..];
        let mut cuts = cuts.into_iter();
        while !rest.is_empty() {
            let n = cuts.next().unwrap_or(rest.len()).min(rest.len());
            buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            while let Some(f) = dec.decode(&mut buf).expect("valid framing") {
                frames.push(f);
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(frames.len(), reqs.len());
        for (f, r) in frames.iter().zip(&reqs) {
            prop_assert_eq!(decode_request(f, &limits()).expect("decodes"), r.borrow());
        }
    }

    /// Garbage never panics the decoders; a request fails with one of the
    /// decoder's own kinds, a response with SerializationException.
    #[test]
    fn garbage_is_an_error_not_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        check_request_bytes(&bytes);
        if let Err(e) = decode_response(&bytes, DEFAULT_MAX_FRAME) {
            prop_assert_eq!(e.kind, ErrorKind::Serialization);
        }
        // The same bytes as a stream: framing errors or frames, no panic.
        let dec = FrameDecoder::new(1 << 16);
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(frame)) = dec.decode(&mut buf) {
            check_request_bytes(&frame);
        }
    }

    /// A valid request with bytes overwritten: no panic; anything that still
    /// decodes re-encodes and decodes to the same request.
    #[test]
    fn corrupted_requests_never_panic(
        owned in owned_request(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut payload = single_frame(&encode_req(&owned.borrow()));
        for (at, byte) in edits {
            let i = at.index(payload.len());
            payload[i] = byte;
        }
        check_request_bytes(&payload);
    }

    /// The same for responses.
    #[test]
    fn corrupted_responses_never_panic(
        resp in response(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut payload = single_frame(&encode_resp(&resp));
        for (at, byte) in edits {
            let i = at.index(payload.len());
            payload[i] = byte;
        }
        if let Ok(decoded) = decode_response(&payload, DEFAULT_MAX_FRAME) {
            // Whatever decoded must survive its own round trip when it has
            // no errors that the encoder would rename.
            let again = encode_resp(&decoded);
            decode_response(&single_frame(&again), DEFAULT_MAX_FRAME)
                .expect("a re-encoded response decodes");
        }
    }
}

/// Decodes `bytes` as a request: an error must be one of the decoder's kinds;
/// a success whose items all decoded must re-encode to the same request.
fn check_request_bytes(bytes: &[u8]) {
    // The id probe reads unverified bytes: it must never panic either.
    let _ = kms_proto::codec::request_id_of(bytes);
    match decode_request(bytes, &limits()) {
        Err(e) => assert!(
            matches!(
                e.error.kind,
                ErrorKind::Serialization | ErrorKind::Validation
            ),
            "unexpected kind {:?}",
            e.error
        ),
        Ok(req) => {
            let items: Vec<&Result<Operation<'_>, KmsError>> = match &req.body {
                RequestBody::Single(op) => vec![op],
                RequestBody::Batch(ops) => ops.iter().collect(),
            };
            for item in &items {
                if let Err(e) = item {
                    assert!(
                        matches!(
                            e.kind,
                            ErrorKind::Validation
                                | ErrorKind::UnsupportedOperation
                                // A key policy over AWS's size quota.
                                | ErrorKind::LimitExceeded
                        ),
                        "unexpected item kind {e:?}"
                    );
                }
            }
            if items.iter().all(|i| i.is_ok()) {
                let wire = encode_req(&req);
                let again = single_frame(&wire);
                assert_eq!(decode_request(&again, &limits()).expect("re-decodes"), req);
            }
        }
    }
}

// ------------------------------------------------------------- golden frames

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Compares `wire` with the committed golden file `name` (or rewrites the
/// file when KMS_UPDATE_GOLDEN=1).
fn updating_golden() -> bool {
    std::env::var_os("KMS_UPDATE_GOLDEN").is_some_and(|v| v == "1")
}

fn check_golden(name: &str, wire: &[u8]) {
    let path = golden_dir().join(name);
    if updating_golden() {
        std::fs::create_dir_all(golden_dir()).unwrap();
        std::fs::write(&path, wire).unwrap();
        return;
    }
    let want = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; write it with KMS_UPDATE_GOLDEN=1 cargo test -p kms-proto --test roundtrip golden",
            path.display()
        )
    });
    assert!(
        want == wire,
        "{name}: the encoding changed (the wire format is pinned).\n\
         committed: {}\n\
         now:       {}\n\
         If the change is intended (and compatible), rewrite with KMS_UPDATE_GOLDEN=1.",
        hex(&want),
        hex(wire)
    );
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A fixed encryption context used by the golden requests.
const GOLDEN_CONTEXT: &[(&str, &str)] = &[("tenant", "acme"), ("purpose", "backup")];

fn golden_single_request() -> Request<'static> {
    Request {
        request_id: 7,
        body: RequestBody::Single(Ok(Operation::Encrypt(Encrypt {
            key_id: "alias/golden",
            plaintext: b"attack at dawn",
            context: GOLDEN_CONTEXT.to_vec(),
            ..Default::default()
        }))),
    }
}

/// Every operation once, in union order.
fn golden_batch_request() -> Request<'static> {
    let ops = vec![
        Operation::CreateKey(CreateKey {
            description: "golden key",
            key_usage: KeyUsage::EncryptDecrypt,
            key_spec: KeySpec::SymmetricDefault,
            origin: Origin::Kmsd,
            tags: vec![],
            ..Default::default()
        }),
        Operation::DescribeKey(DescribeKey {
            key_id: "1234abcd-12ab-34cd-56ef-1234567890ab",
            ..Default::default()
        }),
        Operation::ListKeys(ListKeys {
            limit: 10,
            marker: Some("m1"),
        }),
        Operation::GenerateDataKey(GenerateDataKey {
            key_id: "alias/golden",
            number_of_bytes: None,
            key_spec: Some(DataKeySpec::Aes256),
            context: GOLDEN_CONTEXT.to_vec(),
            ..Default::default()
        }),
        Operation::GenerateDataKeyWithoutPlaintext(GenerateDataKey {
            key_id: "alias/golden",
            number_of_bytes: Some(24),
            key_spec: None,
            context: Vec::new(),
            ..Default::default()
        }),
        Operation::Encrypt(Encrypt {
            key_id: "alias/golden",
            plaintext: &[0, 1, 2, 3, 0xff],
            context: vec![("a", "b")],
            ..Default::default()
        }),
        Operation::Decrypt(Decrypt {
            ciphertext_blob: &[0xc1, 0xc2, 0xc3],
            key_id: None,
            context: vec![("a", "b")],
            ..Default::default()
        }),
        Operation::ReEncrypt(ReEncrypt {
            ciphertext_blob: &[0xc1, 0xc2, 0xc3],
            source_key_id: Some("alias/old"),
            source_context: vec![("a", "b")],
            destination_key_id: "alias/new",
            destination_context: vec![("c", "d")],
            ..Default::default()
        }),
        Operation::GenerateRandom(GenerateRandom {
            number_of_bytes: 32,
        }),
    ];
    Request {
        request_id: 0x0102_0304_0506_0708,
        body: RequestBody::Batch(ops.into_iter().map(Ok).collect()),
    }
}

fn golden_metadata() -> KeyMetadata {
    KeyMetadata {
        key_id: "1234abcd-12ab-34cd-56ef-1234567890ab".into(),
        arn: "arn:aws:kms:us-east-1:000000000000:key/1234abcd-12ab-34cd-56ef-1234567890ab".into(),
        creation_date: 1_700_000_000,
        enabled: true,
        description: "golden key".into(),
        key_state: KeyState::Enabled,
        key_usage: KeyUsage::EncryptDecrypt,
        key_spec: KeySpec::SymmetricDefault,
        origin: Origin::Kmsd,
        current_version: 1,
        ..KeyMetadata::default()
    }
}

fn golden_single_response() -> Response {
    Response {
        request_id: 7,
        body: ResponseBody::Single(Ok(Output::Encrypt(EncryptOutput {
            key_id: "1234abcd-12ab-34cd-56ef-1234567890ab".into(),
            ciphertext_blob: vec![0xc1, 0xc2, 0xc3, 0xc4],
        }))),
    }
}

/// Every output once, in union order, then an error item.
fn golden_batch_response() -> Response {
    let key_id = || "1234abcd-12ab-34cd-56ef-1234567890ab".to_string();
    let items = vec![
        Ok(Output::CreateKey(golden_metadata())),
        Ok(Output::DescribeKey(KeyMetadata {
            enabled: false,
            key_state: KeyState::PendingDeletion,
            origin: Origin::External,
            current_version: 3,
            ..golden_metadata()
        })),
        Ok(Output::ListKeys(ListKeysOutput {
            keys: vec![
                KeyListEntry {
                    key_id: "k1".into(),
                    arn: "arn:aws:kms:us-east-1:000000000000:key/k1".into(),
                },
                KeyListEntry {
                    key_id: "k2".into(),
                    arn: "arn:aws:kms:us-east-1:000000000000:key/k2".into(),
                },
            ],
            next_marker: Some("k2".into()),
            truncated: true,
        })),
        Ok(Output::GenerateDataKey(GenerateDataKeyOutput {
            key_id: key_id(),
            plaintext: SecretBytes::new((0..32).collect()),
            ciphertext_blob: vec![0xd0; 8],
        })),
        Ok(Output::GenerateDataKeyWithoutPlaintext(
            GenerateDataKeyWithoutPlaintextOutput {
                key_id: key_id(),
                ciphertext_blob: vec![0xd1; 8],
            },
        )),
        Ok(Output::Encrypt(EncryptOutput {
            key_id: key_id(),
            ciphertext_blob: vec![0xe0, 0xe1],
        })),
        Ok(Output::Decrypt(DecryptOutput {
            key_id: key_id(),
            plaintext: SecretBytes::from_slice(b"attack at dawn"),
        })),
        Ok(Output::ReEncrypt(ReEncryptOutput {
            source_key_id: "k1".into(),
            key_id: "k2".into(),
            ciphertext_blob: vec![0xe2, 0xe3],
        })),
        Ok(Output::GenerateRandom(GenerateRandomOutput {
            plaintext: SecretBytes::from_slice(&[9; 16]),
        })),
        Err(KmsError::new(ErrorKind::NotFound, "key k9 does not exist")),
    ];
    Response {
        request_id: 0x0102_0304_0506_0708,
        body: ResponseBody::Batch(items),
    }
}

fn golden_error_response() -> Response {
    Response {
        request_id: 0,
        body: ResponseBody::Error(KmsError::new(
            ErrorKind::Serialization,
            "request is not a valid kmsd flatbuffer",
        )),
    }
}

#[test]
fn golden_request_single() {
    let req = golden_single_request();
    let wire = encode_req(&req);
    check_golden("request_single.bin", &wire);
    assert_eq!(
        decode_request(&single_frame(&wire), &limits()).unwrap(),
        req
    );
}

#[test]
fn golden_request_batch() {
    let req = golden_batch_request();
    let wire = encode_req(&req);
    check_golden("request_batch.bin", &wire);
    assert_eq!(
        decode_request(&single_frame(&wire), &limits()).unwrap(),
        req
    );
}

#[test]
fn golden_response_single() {
    let resp = golden_single_response();
    let wire = encode_resp(&resp);
    check_golden("response_single.bin", &wire);
    assert_eq!(
        decode_response(&single_frame(&wire), DEFAULT_MAX_FRAME).unwrap(),
        resp
    );
}

#[test]
fn golden_response_batch() {
    let resp = golden_batch_response();
    let wire = encode_resp(&resp);
    check_golden("response_batch.bin", &wire);
    assert_eq!(
        decode_response(&single_frame(&wire), DEFAULT_MAX_FRAME).unwrap(),
        resp
    );
}

#[test]
fn golden_response_error() {
    let resp = golden_error_response();
    let wire = encode_resp(&resp);
    check_golden("response_error.bin", &wire);
    // The builder-less encoder used for overload answers writes the same.
    let mut other = Vec::new();
    let ResponseBody::Error(e) = &resp.body else {
        unreachable!()
    };
    encode_error_response(resp.request_id, e, &mut other);
    assert_eq!(other, wire);
    assert_eq!(
        decode_response(&single_frame(&wire), DEFAULT_MAX_FRAME).unwrap(),
        resp
    );
}

/// The committed golden files are exactly the ones these tests check: a stale
/// extra file would be a frame nobody pins any more.
#[test]
fn golden_files_are_all_checked() {
    if updating_golden() {
        // The other golden tests are writing the files right now.
        return;
    }
    let mut names: Vec<String> = std::fs::read_dir(golden_dir())
        .expect("proto/tests/golden exists")
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".bin"))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "request_batch.bin",
            "request_single.bin",
            "response_batch.bin",
            "response_error.bin",
            "response_single.bin",
        ]
    );
}

// ---------------------------------------------------------- decoder hardening

#[test]
fn truncated_requests_fail_cleanly_at_every_length() {
    for req in [golden_single_request(), golden_batch_request()] {
        let wire = encode_req(&req);
        let payload = single_frame(&wire);
        let mut failures = 0;
        for len in 0..payload.len() {
            match decode_request(&payload[..len], &limits()) {
                Err(e) => {
                    assert_eq!(e.error.kind, ErrorKind::Serialization, "at {len}: {e:?}");
                    failures += 1;
                }
                // Only trailing alignment padding may be cut without harm.
                Ok(r) => assert_eq!(r, req, "truncated to {len} bytes"),
            }
        }
        // At most 7 bytes of trailing padding.
        assert!(
            failures + 7 >= payload.len(),
            "{failures} of {} truncations failed",
            payload.len()
        );
        // As a stream, every proper prefix is "need more bytes".
        let dec = FrameDecoder::default();
        for len in 0..wire.len() {
            let mut buf = BytesMut::from(&wire[..len]);
            assert_eq!(dec.decode(&mut buf), Ok(None), "prefix of {len} bytes");
        }
    }
}

#[test]
fn truncated_responses_fail_cleanly_at_every_length() {
    for resp in [golden_single_response(), golden_batch_response()] {
        let payload = single_frame(&encode_resp(&resp));
        for len in 0..payload.len() {
            match decode_response(&payload[..len], DEFAULT_MAX_FRAME) {
                Err(e) => assert_eq!(e.kind, ErrorKind::Serialization, "at {len}: {e:?}"),
                Ok(r) => assert_eq!(r, resp, "truncated to {len} bytes"),
            }
        }
    }
}

#[test]
fn framing_errors() {
    let dec = FrameDecoder::new(64);
    let mut buf = BytesMut::from(&[0u8, 0, 0, 0, 1, 2, 3][..]);
    assert_eq!(dec.decode(&mut buf), Err(FrameError::Empty));
    let mut buf = BytesMut::from(&65u32.to_le_bytes()[..]);
    assert_eq!(
        dec.decode(&mut buf),
        Err(FrameError::TooLarge { len: 65, max: 64 })
    );
    // Exactly the maximum is fine.
    let mut buf = BytesMut::from(&64u32.to_le_bytes()[..]);
    buf.extend_from_slice(&[0; 64]);
    assert_eq!(dec.decode(&mut buf).unwrap().unwrap().len(), 64);
    assert_eq!(LEN_PREFIX, 4);
}

#[test]
fn request_with_operation_and_batch_is_a_validation_error() {
    let mut fbb = FlatBufferBuilder::new();
    let op = generate_random_union(&mut fbb, 8);
    let item_op = generate_random_union(&mut fbb, 8);
    let item = fb::BatchItem::create(
        &mut fbb,
        &fb::BatchItemArgs {
            operation_type: fb::Operation::GenerateRandomRequest,
            operation: Some(item_op),
        },
    );
    let batch = fbb.create_vector(&[item]);
    let payload = finish_request(
        &mut fbb,
        &fb::RequestArgs {
            protocol_version: PROTOCOL_VERSION,
            request_id: 42,
            operation_type: fb::Operation::GenerateRandomRequest,
            operation: Some(op),
            batch: Some(batch),
        },
    );
    let e = request_error(&payload, &limits());
    assert_eq!(e.request_id, 42);
    assert_eq!(e.error.kind, ErrorKind::Validation);
    assert!(e.error.message.contains("both"), "{}", e.error.message);
}

#[test]
fn request_with_neither_operation_nor_batch_is_a_validation_error() {
    let mut fbb = FlatBufferBuilder::new();
    let payload = finish_request(
        &mut fbb,
        &fb::RequestArgs {
            protocol_version: PROTOCOL_VERSION,
            request_id: 5,
            ..Default::default()
        },
    );
    let e = request_error(&payload, &limits());
    assert_eq!((e.request_id, e.error.kind), (5, ErrorKind::Validation));
}

fn batch_of_random(n: usize) -> Request<'static> {
    Request {
        request_id: 9,
        body: RequestBody::Batch(
            (0..n)
                .map(|_| {
                    Ok(Operation::GenerateRandom(GenerateRandom {
                        number_of_bytes: 16,
                    }))
                })
                .collect(),
        ),
    }
}

#[test]
fn batch_over_the_limit_is_a_validation_error() {
    let small = DecodeLimits {
        max_batch: 4,
        ..DecodeLimits::default()
    };
    let at_limit = single_frame(&encode_req(&batch_of_random(4)));
    assert!(decode_request(&at_limit, &small).is_ok());
    let over = single_frame(&encode_req(&batch_of_random(5)));
    let e = request_error(&over, &small);
    assert_eq!((e.request_id, e.error.kind), (9, ErrorKind::Validation));
    assert!(e.error.message.contains("exceeds"), "{}", e.error.message);

    // The default limit, at and over.
    let at_default = single_frame(&encode_req(&batch_of_random(DEFAULT_MAX_BATCH)));
    match decode_request(&at_default, &limits()).unwrap().body {
        RequestBody::Batch(items) => assert_eq!(items.len(), DEFAULT_MAX_BATCH),
        other => panic!("{other:?}"),
    }
    let over_default = single_frame(&encode_req(&batch_of_random(DEFAULT_MAX_BATCH + 1)));
    let e = request_error(&over_default, &limits());
    assert_eq!(e.error.kind, ErrorKind::Validation);
}

#[test]
fn empty_batch_is_a_validation_error() {
    let mut fbb = FlatBufferBuilder::new();
    let batch = fbb.create_vector::<flatbuffers::WIPOffset<fb::BatchItem>>(&[]);
    let payload = finish_request(
        &mut fbb,
        &fb::RequestArgs {
            protocol_version: PROTOCOL_VERSION,
            request_id: 3,
            batch: Some(batch),
            ..Default::default()
        },
    );
    let e = request_error(&payload, &limits());
    assert_eq!((e.request_id, e.error.kind), (3, ErrorKind::Validation));
}

#[test]
fn wrong_protocol_version_is_a_validation_error() {
    for version in [0, PROTOCOL_VERSION + 1, u16::MAX] {
        let mut fbb = FlatBufferBuilder::new();
        let op = generate_random_union(&mut fbb, 8);
        let payload = finish_request(
            &mut fbb,
            &fb::RequestArgs {
                protocol_version: version,
                request_id: 11,
                operation_type: fb::Operation::GenerateRandomRequest,
                operation: Some(op),
                batch: None,
            },
        );
        let e = request_error(&payload, &limits());
        assert_eq!(e.request_id, 11, "the id is still echoed");
        assert_eq!(e.error.kind, ErrorKind::Validation);
        assert!(e.error.message.contains("version"), "{}", e.error.message);
    }
}

#[test]
fn unknown_operation_is_unsupported_single_and_in_a_batch() {
    // Single: a union type this daemon does not know, with some table.
    let mut fbb = FlatBufferBuilder::new();
    let op = generate_random_union(&mut fbb, 8);
    let payload = finish_request(
        &mut fbb,
        &fb::RequestArgs {
            protocol_version: PROTOCOL_VERSION,
            request_id: 13,
            operation_type: fb::Operation(200),
            operation: Some(op),
            batch: None,
        },
    );
    let req = decode_request(&payload, &limits()).expect("the frame itself is fine");
    assert_eq!(req.request_id, 13);
    match req.body {
        RequestBody::Single(Err(e)) => assert_eq!(e.kind, ErrorKind::UnsupportedOperation),
        other => panic!("{other:?}"),
    }

    // Batch: the unknown item fails, its neighbours decode; an item without
    // an operation is a validation error.
    let mut fbb = FlatBufferBuilder::new();
    let mut items = Vec::new();
    for (ty, with_table) in [
        (fb::Operation::GenerateRandomRequest, true),
        (fb::Operation(ENUM_UNKNOWN), true),
        (fb::Operation::NONE, false),
        (fb::Operation::GenerateRandomRequest, true),
    ] {
        let operation = with_table.then(|| generate_random_union(&mut fbb, 4));
        items.push(fb::BatchItem::create(
            &mut fbb,
            &fb::BatchItemArgs {
                operation_type: ty,
                operation,
            },
        ));
    }
    let batch = fbb.create_vector(&items);
    let payload = finish_request(
        &mut fbb,
        &fb::RequestArgs {
            protocol_version: PROTOCOL_VERSION,
            request_id: 14,
            batch: Some(batch),
            ..Default::default()
        },
    );
    let req = decode_request(&payload, &limits()).expect("the frame itself is fine");
    let RequestBody::Batch(items) = req.body else {
        panic!("not a batch")
    };
    let random = Operation::GenerateRandom(GenerateRandom { number_of_bytes: 4 });
    assert_eq!(items[0].as_ref().unwrap(), &random);
    assert_eq!(
        items[1].as_ref().unwrap_err().kind,
        ErrorKind::UnsupportedOperation
    );
    assert_eq!(items[2].as_ref().unwrap_err().kind, ErrorKind::Validation);
    assert_eq!(items[3].as_ref().unwrap(), &random);
    assert_eq!(items.len(), 4);
}

#[test]
fn union_type_without_its_table_is_a_serialization_error() {
    // The verifier refuses an inconsistent union before the codec sees it.
    let mut fbb = FlatBufferBuilder::new();
    let payload = finish_request(
        &mut fbb,
        &fb::RequestArgs {
            protocol_version: PROTOCOL_VERSION,
            request_id: 16,
            operation_type: fb::Operation::EncryptRequest,
            operation: None,
            batch: None,
        },
    );
    let e = request_error(&payload, &limits());
    assert_eq!(e.error.kind, ErrorKind::Serialization);
    assert_eq!(e.request_id, 16, "the readable id is echoed");
}

#[test]
fn invalid_utf8_in_a_context_string_is_a_serialization_error_with_the_id() {
    // A pipelining client must learn which request failed verification.
    let context = [("tenant", "acme")];
    let wire = encode_req(&Request {
        request_id: 0x0102_0304_0506_0708,
        body: RequestBody::Single(Ok(Operation::Encrypt(Encrypt {
            key_id: "k",
            plaintext: b"x",
            context: context.to_vec(),
            ..Default::default()
        }))),
    });
    let mut payload = single_frame(&wire);
    let at = payload
        .windows(6)
        .position(|w| w == b"tenant")
        .expect("the context key is in the frame");
    payload[at] = 0xff;
    let e = request_error(&payload, &limits());
    assert_eq!(e.error.kind, ErrorKind::Serialization, "{:?}", e.error);
    assert_eq!(e.request_id, 0x0102_0304_0506_0708);
}

#[test]
fn request_id_probe_bounds() {
    use kms_proto::codec::request_id_of;
    // Too short for a root offset, a root offset past the end, a vtable
    // offset past the end: unreadable, never a panic.
    assert_eq!(request_id_of(&[]), None);
    assert_eq!(request_id_of(&[1, 0]), None);
    assert_eq!(request_id_of(&[0xff, 0xff, 0xff, 0xff]), None);
    assert_eq!(request_id_of(&[4, 0, 0, 0, 0x00, 0x00, 0x00, 0x80]), None);
    // A request without the field carries the schema default, 0.
    let mut fbb = FlatBufferBuilder::new();
    let payload = finish_request(
        &mut fbb,
        &fb::RequestArgs {
            protocol_version: PROTOCOL_VERSION,
            ..Default::default()
        },
    );
    assert_eq!(request_id_of(&payload), Some(0));
}

/// One past the last operation of the schema: what a newer client might send.
const ENUM_UNKNOWN: u8 = fb::Operation::ENUM_MAX + 1;

#[test]
fn missing_required_fields_and_bad_enums_are_validation_errors() {
    let mut fbb = FlatBufferBuilder::new();
    let mut items = Vec::new();
    // Encrypt without KeyId.
    let pt = fbb.create_vector(&[1u8, 2, 3]);
    let enc = fb::EncryptRequest::create(
        &mut fbb,
        &fb::EncryptRequestArgs {
            plaintext: Some(pt),
            ..Default::default()
        },
    );
    items.push((fb::Operation::EncryptRequest, enc.as_union_value()));
    // ReEncrypt without DestinationKeyId.
    let re = fb::ReEncryptRequest::create(&mut fbb, &fb::ReEncryptRequestArgs::default());
    items.push((fb::Operation::ReEncryptRequest, re.as_union_value()));
    // CreateKey with an unknown KeyUsage.
    let ck = fb::CreateKeyRequest::create(
        &mut fbb,
        &fb::CreateKeyRequestArgs {
            key_usage: fb::KeyUsage(7),
            ..Default::default()
        },
    );
    items.push((fb::Operation::CreateKeyRequest, ck.as_union_value()));
    // GenerateDataKey with an unknown DataKeySpec.
    let kid = fbb.create_string("k");
    let gdk = fb::GenerateDataKeyRequest::create(
        &mut fbb,
        &fb::GenerateDataKeyRequestArgs {
            key_id: Some(kid),
            key_spec: fb::DataKeySpec(9),
            ..Default::default()
        },
    );
    items.push((fb::Operation::GenerateDataKeyRequest, gdk.as_union_value()));
    // Encrypt with 65 context pairs.
    let kid = fbb.create_string("k");
    let entries: Vec<_> = (0..65)
        .map(|i| {
            let key = Some(fbb.create_string(&format!("k{i}")));
            let value = Some(fbb.create_string("v"));
            fb::ContextEntry::create(&mut fbb, &fb::ContextEntryArgs { key, value })
        })
        .collect();
    let ctx = fbb.create_vector(&entries);
    let enc = fb::EncryptRequest::create(
        &mut fbb,
        &fb::EncryptRequestArgs {
            key_id: Some(kid),
            encryption_context: Some(ctx),
            ..Default::default()
        },
    );
    items.push((fb::Operation::EncryptRequest, enc.as_union_value()));

    let items: Vec<_> = items
        .into_iter()
        .map(|(operation_type, op)| {
            fb::BatchItem::create(
                &mut fbb,
                &fb::BatchItemArgs {
                    operation_type,
                    operation: Some(op),
                },
            )
        })
        .collect();
    let n = items.len();
    let batch = fbb.create_vector(&items);
    let payload = finish_request(
        &mut fbb,
        &fb::RequestArgs {
            protocol_version: PROTOCOL_VERSION,
            request_id: 15,
            batch: Some(batch),
            ..Default::default()
        },
    );
    let req = decode_request(&payload, &limits()).expect("the frame itself is fine");
    let RequestBody::Batch(items) = req.body else {
        panic!("not a batch")
    };
    assert_eq!(items.len(), n);
    for (i, item) in items.iter().enumerate() {
        match item {
            Err(e) => assert_eq!(e.kind, ErrorKind::Validation, "item {i}: {e:?}"),
            Ok(op) => panic!("item {i} decoded: {op:?}"),
        }
    }
}

#[test]
fn frame_over_the_verifier_size_limit_is_a_serialization_error() {
    let payload = single_frame(&encode_req(&golden_batch_request()));
    let tight = DecodeLimits {
        max_frame: payload.len() - 1,
        ..DecodeLimits::default()
    };
    let e = request_error(&payload, &tight);
    assert_eq!(e.error.kind, ErrorKind::Serialization);
}

#[test]
fn unknown_error_names_and_output_types_in_responses() {
    // An error name this client does not know keeps its text.
    let mut fbb = FlatBufferBuilder::new();
    let name = fbb.create_string("BrandNewException");
    let message = fbb.create_string("something new");
    let error = fb::Error::create(
        &mut fbb,
        &fb::ErrorArgs {
            name: Some(name),
            message: Some(message),
        },
    );
    let outcome_unknown = {
        let t = fb::GenerateRandomResponse::create(&mut fbb, &Default::default());
        fb::Outcome::create(
            &mut fbb,
            &fb::OutcomeArgs {
                output_type: fb::Output(77),
                output: Some(t.as_union_value()),
                error: None,
            },
        )
    };
    let outcome_error = fb::Outcome::create(
        &mut fbb,
        &fb::OutcomeArgs {
            error: Some(error),
            ..Default::default()
        },
    );
    let outcome_empty = fb::Outcome::create(&mut fbb, &Default::default());
    let batch = fbb.create_vector(&[outcome_unknown, outcome_error, outcome_empty]);
    let root = fb::Response::create(
        &mut fbb,
        &fb::ResponseArgs {
            protocol_version: PROTOCOL_VERSION,
            request_id: 21,
            batch: Some(batch),
            ..Default::default()
        },
    );
    fbb.finish_minimal(root);
    let resp = decode_response(fbb.finished_data(), DEFAULT_MAX_FRAME).unwrap();
    assert_eq!(resp.request_id, 21);
    let ResponseBody::Batch(items) = resp.body else {
        panic!("not a batch")
    };
    assert_eq!(
        items[0].as_ref().unwrap_err().kind,
        ErrorKind::Serialization
    );
    let e = items[1].as_ref().unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unrecognized);
    assert!(e.message.contains("BrandNewException") && e.message.contains("something new"));
    assert_eq!(
        items[2].as_ref().unwrap_err().kind,
        ErrorKind::Serialization
    );
}

#[test]
fn tally_counts_items_and_names_failures_without_decoding_outputs() {
    let mut out = Vec::new();
    encode_response(
        &mut FlatBufferBuilder::new(),
        &Response {
            request_id: 42,
            body: ResponseBody::Batch(vec![
                Ok(Output::GenerateRandom(GenerateRandomOutput {
                    plaintext: SecretBytes::from_slice(&[1; 32]),
                })),
                Err(KmsError::new(ErrorKind::NotFound, "no such key")),
                Err(KmsError::new(ErrorKind::Throttling, "slow down")),
            ]),
        },
        &mut out,
    );
    let mut names = Vec::new();
    let t = tally_response(&out[4..], DEFAULT_MAX_FRAME, |n| names.push(n.to_owned())).unwrap();
    assert_eq!(
        t,
        ResponseTally {
            request_id: 42,
            items: 3,
            failed: 2,
            frame_error: false
        }
    );
    assert_eq!(names, ["NotFoundException", "ThrottlingException"]);

    let mut out = Vec::new();
    encode_error_response(7, &KmsError::validation("batch too large"), &mut out);
    let t = tally_response(&out[4..], DEFAULT_MAX_FRAME, |n| {
        assert_eq!(n, "ValidationException")
    })
    .unwrap();
    assert!(t.frame_error && t.request_id == 7 && t.failed == 1);
    assert!(tally_response(b"not a flatbuffer", DEFAULT_MAX_FRAME, |_| {}).is_err());
}
