//! The key-lifecycle operations on the wire: every request and output
//! survives encode -> frame -> decode, builders sized by the bounds never
//! grow, the decoder enforces AWS's limits with a ValidationException
//! naming the field, and golden frames pin the encoding.
//!
//! Golden frames of this file live in `proto/tests/golden/lifecycle/`
//! (the older ones in `proto/tests/golden/` are untouched by these
//! operations and must keep decoding). After an intended change of the
//! wire format, rewrite them with
//! `KMS_UPDATE_GOLDEN=1 cargo test -p kms-proto --test lifecycle golden`
//! and review the diff.

use bytes::BytesMut;
use flatbuffers::FlatBufferBuilder;
use kms_proto::frame::{FrameDecoder, DEFAULT_MAX_FRAME};
use kms_proto::generated as fb;
use kms_proto::types::limits;
use kms_proto::*;
use proptest::prelude::*;
use std::path::PathBuf;

// ------------------------------------------------------------------ helpers

fn single_frame(stream: &[u8]) -> Vec<u8> {
    let dec = FrameDecoder::default();
    let mut buf = BytesMut::from(stream);
    let frame = dec.decode(&mut buf).expect("framing").expect("a frame");
    assert!(buf.is_empty(), "one frame expected");
    frame.to_vec()
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

fn single(op: Operation<'_>) -> Request<'_> {
    Request {
        request_id: 3,
        body: RequestBody::Single(Ok(op)),
    }
}

/// Encodes `op` alone and decodes it again: the item's outcome.
fn decode_one<'a>(payload: &'a [u8]) -> Result<Operation<'a>, KmsError> {
    let req = decode_request(payload, &DecodeLimits::default()).expect("the frame decodes");
    match req.body {
        RequestBody::Single(op) => op,
        RequestBody::Batch(_) => panic!("not a single request"),
    }
}

/// The payload of a request holding `op` alone.
fn payload_of(op: Operation<'_>) -> Vec<u8> {
    single_frame(&encode_req(&single(op)))
}

/// Asserts that `op`, once encoded, decodes to a ValidationException whose
/// message contains `needle`.
fn assert_refused(op: Operation<'_>, needle: &str) {
    let payload = payload_of(op);
    match decode_one(&payload) {
        Err(e) => {
            assert_eq!(e.kind, ErrorKind::Validation, "{e}");
            assert!(e.message.contains(needle), "{needle:?} not in {e}");
        }
        Ok(op) => panic!("expected a ValidationException naming {needle}, got {op:?}"),
    }
}

/// Asserts that `op` survives the round trip unchanged.
fn assert_accepted(op: Operation<'_>) {
    let payload = payload_of(op.clone());
    assert_eq!(decode_one(&payload).expect("decodes"), op);
}

/// A finished request frame holding one operation built by hand (for
/// values the typed encoder cannot express: absent fields, unknown enums).
fn hand_built(
    build: impl FnOnce(
        &mut FlatBufferBuilder<'_>,
    ) -> (
        fb::Operation,
        flatbuffers::WIPOffset<flatbuffers::UnionWIPOffset>,
    ),
) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let (operation_type, op) = build(&mut fbb);
    let root = fb::Request::create(
        &mut fbb,
        &fb::RequestArgs {
            protocol_version: PROTOCOL_VERSION,
            request_id: 11,
            operation_type,
            operation: Some(op),
            batch: None,
        },
    );
    fbb.finish_minimal(root);
    fbb.finished_data().to_vec()
}

// ------------------------------------------------------ owned request model

/// Owned fields from which any lifecycle operation is borrowed ([`Bag::op`]
/// picks the operation by `which` and uses the fields it has).
#[derive(Debug, Clone)]
struct Bag {
    which: usize,
    key_id: String,
    alias: String,
    text: String,
    opt: Option<String>,
    limit: u32,
    days: Option<u32>,
    when: Option<i64>,
    tags: Vec<(String, String)>,
    tag_keys: Vec<String>,
    token: Vec<u8>,
    material: Vec<u8>,
    algorithm: WrappingAlgorithm,
    spec: WrappingKeySpec,
    expiration: ExpirationModel,
    origin: Origin,
}

/// Number of operations [`Bag::op`] makes.
const BAG_OPS: usize = 21;

impl Bag {
    fn tags(&self) -> Vec<Tag<'_>> {
        self.tags
            .iter()
            .map(|(key, value)| Tag { key, value })
            .collect()
    }

    fn op(&self) -> Operation<'_> {
        let key_id = self.key_id.as_str();
        match self.which % BAG_OPS {
            0 => Operation::CreateKey(CreateKey {
                description: &self.text,
                origin: self.origin,
                // CreateKey may have no tags at all.
                tags: if self.limit.is_multiple_of(2) {
                    self.tags()
                } else {
                    vec![]
                },
                ..CreateKey::default()
            }),
            1 => Operation::UpdateKeyDescription(UpdateKeyDescription {
                key_id,
                description: &self.text,
            }),
            2 => Operation::TagResource(TagResource {
                key_id,
                tags: self.tags(),
            }),
            3 => Operation::UntagResource(UntagResource {
                key_id,
                tag_keys: self.tag_keys.iter().map(String::as_str).collect(),
            }),
            4 => Operation::ListResourceTags(ListResourceTags {
                key_id,
                limit: self.limit,
                marker: self.opt.as_deref(),
            }),
            5 => Operation::CreateAlias(CreateAlias {
                alias_name: &self.alias,
                target_key_id: key_id,
            }),
            6 => Operation::UpdateAlias(UpdateAlias {
                alias_name: &self.alias,
                target_key_id: key_id,
            }),
            7 => Operation::DeleteAlias(DeleteAlias {
                alias_name: &self.alias,
            }),
            8 => Operation::ListAliases(ListAliases {
                key_id: self.opt.as_deref(),
                limit: self.limit,
                marker: self.limit.is_multiple_of(3).then_some(self.text.as_str()),
            }),
            9 => Operation::EnableKey(EnableKey { key_id }),
            10 => Operation::DisableKey(DisableKey { key_id }),
            11 => Operation::ScheduleKeyDeletion(ScheduleKeyDeletion {
                key_id,
                pending_window_in_days: self.days,
            }),
            12 => Operation::CancelKeyDeletion(CancelKeyDeletion { key_id }),
            13 => Operation::EnableKeyRotation(EnableKeyRotation {
                key_id,
                rotation_period_in_days: self.days,
            }),
            14 => Operation::DisableKeyRotation(DisableKeyRotation { key_id }),
            15 => Operation::GetKeyRotationStatus(GetKeyRotationStatus { key_id }),
            16 => Operation::RotateKeyOnDemand(RotateKeyOnDemand { key_id }),
            17 => Operation::ListKeyRotations(ListKeyRotations {
                key_id,
                limit: self.limit,
                marker: self.opt.as_deref(),
            }),
            18 => Operation::GetParametersForImport(GetParametersForImport {
                key_id,
                wrapping_algorithm: self.algorithm,
                wrapping_key_spec: self.spec,
            }),
            19 => Operation::ImportKeyMaterial(ImportKeyMaterial {
                key_id,
                import_token: &self.token,
                encrypted_key_material: &self.material,
                valid_to: self.when,
                expiration_model: self.expiration,
            }),
            _ => Operation::DeleteImportedKeyMaterial(DeleteImportedKeyMaterial { key_id }),
        }
    }
}

// ---------------------------------------------------------------- strategies

/// Text of `min..=max` characters, any Unicode (NUL included) or the
/// characters AWS allows in names.
fn chars(min: usize, max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::string::string_regex(&format!("[a-zA-Z0-9:/_-]{{{min},{max}}}")).unwrap(),
        1 => proptest::collection::vec(any::<char>(), min..=max)
            .prop_map(|c| c.into_iter().collect::<String>()),
    ]
}

fn blob(min: usize, max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), min..=max)
}

fn tags(min: usize, max: usize) -> impl Strategy<Value = Vec<(String, String)>> {
    proptest::collection::vec((chars(1, 40), chars(0, 40)), min..=max)
}

fn bag() -> impl Strategy<Value = Bag> {
    (
        (
            0..BAG_OPS,
            chars(1, 48),
            chars(1, 64),
            chars(0, 64),
            proptest::option::of(chars(1, 32)),
            any::<u32>(),
            // Some(0) is a value (AWS refuses it); it must not read as absent.
            proptest::option::of(any::<u32>()),
            proptest::option::of(any::<i64>()),
        ),
        (
            tags(1, 6),
            proptest::collection::vec(chars(1, 40), 1..6),
            blob(1, 96),
            blob(1, 96),
            proptest::sample::select(WrappingAlgorithm::ALL.to_vec()),
            proptest::sample::select(WrappingKeySpec::ALL.to_vec()),
            proptest::sample::select(ExpirationModel::ALL.to_vec()),
            proptest::sample::select(vec![Origin::Kmsd, Origin::External, Origin::Hsm]),
        ),
    )
        .prop_map(
            |(
                (which, key_id, alias, text, opt, limit, days, when),
                (tags, tag_keys, token, material, algorithm, spec, expiration, origin),
            )| Bag {
                which,
                key_id,
                alias,
                text,
                opt,
                limit,
                days,
                when,
                tags,
                tag_keys,
                token,
                material,
                algorithm,
                spec,
                expiration,
                origin,
            },
        )
}

fn opt_i64() -> impl Strategy<Value = Option<i64>> {
    proptest::option::of(any::<i64>())
}

fn key_metadata() -> impl Strategy<Value = KeyMetadata> {
    (
        (chars(0, 40), any::<i64>(), any::<bool>(), chars(0, 40)),
        (
            proptest::sample::select(vec![
                KeyState::Enabled,
                KeyState::Disabled,
                KeyState::PendingDeletion,
                KeyState::PendingImport,
                KeyState::Unavailable,
            ]),
            proptest::sample::select(vec![Origin::Kmsd, Origin::External, Origin::Hsm]),
            any::<u32>(),
        ),
        (
            opt_i64(),
            proptest::option::of(any::<u32>()),
            opt_i64(),
            proptest::option::of(proptest::sample::select(ExpirationModel::ALL.to_vec())),
        ),
    )
        .prop_map(
            |(
                (key_id, creation_date, enabled, description),
                (key_state, origin, current_version),
                (deletion_date, pending_deletion_window_in_days, valid_to, expiration_model),
            )| KeyMetadata {
                arn: format!("arn:aws:kms:us-east-1:000000000000:key/{key_id}"),
                key_id,
                creation_date,
                enabled,
                description,
                key_state,
                key_usage: KeyUsage::EncryptDecrypt,
                key_spec: KeySpec::SymmetricDefault,
                origin,
                current_version,
                deletion_date,
                pending_deletion_window_in_days,
                valid_to,
                expiration_model,
            },
        )
}

fn page<T: std::fmt::Debug>(
    entry: impl Strategy<Value = T>,
) -> impl Strategy<Value = (Vec<T>, Option<String>, bool)> {
    (
        proptest::collection::vec(entry, 0..6),
        proptest::option::of(chars(1, 32)),
        any::<bool>(),
    )
}

fn empty_output() -> impl Strategy<Value = Output> {
    proptest::sample::select(vec![
        Output::UpdateKeyDescription,
        Output::TagResource,
        Output::UntagResource,
        Output::CreateAlias,
        Output::UpdateAlias,
        Output::DeleteAlias,
        Output::EnableKey,
        Output::DisableKey,
        Output::EnableKeyRotation,
        Output::DisableKeyRotation,
        Output::ImportKeyMaterial,
        Output::DeleteImportedKeyMaterial,
    ])
}

fn list_output() -> impl Strategy<Value = Output> {
    prop_oneof![
        page((chars(1, 40), chars(0, 40)).prop_map(|(key, value)| OwnedTag { key, value }))
            .prop_map(|(tags, next_marker, truncated)| {
                Output::ListResourceTags(ListResourceTagsOutput {
                    tags,
                    next_marker,
                    truncated,
                })
            }),
        page(
            (
                chars(1, 64),
                proptest::option::of(chars(1, 40)),
                any::<i64>(),
                any::<i64>()
            )
                .prop_map(
                    |(alias_name, target_key_id, creation_date, last_updated_date)| {
                        AliasListEntry {
                            alias_arn: format!("arn:aws:kms:us-east-1:000000000000:{alias_name}"),
                            alias_name,
                            target_key_id,
                            creation_date,
                            last_updated_date,
                        }
                    }
                )
        )
        .prop_map(|(aliases, next_marker, truncated)| {
            Output::ListAliases(ListAliasesOutput {
                aliases,
                next_marker,
                truncated,
            })
        }),
        page(
            (
                chars(1, 40),
                any::<i64>(),
                proptest::sample::select(RotationType::ALL.to_vec())
            )
                .prop_map(|(key_id, rotation_date, rotation_type)| {
                    RotationsListEntry {
                        key_id,
                        rotation_date,
                        rotation_type,
                    }
                })
        )
        .prop_map(|(rotations, next_marker, truncated)| {
            Output::ListKeyRotations(ListKeyRotationsOutput {
                rotations,
                next_marker,
                truncated,
            })
        }),
    ]
}

fn key_output() -> impl Strategy<Value = Output> {
    prop_oneof![
        key_metadata().prop_map(Output::CreateKey),
        key_metadata().prop_map(Output::DescribeKey),
        (
            chars(0, 40),
            any::<i64>(),
            proptest::sample::select(vec![KeyState::PendingDeletion, KeyState::Unavailable]),
            any::<u32>()
        )
            .prop_map(
                |(key_id, deletion_date, key_state, pending_window_in_days)| {
                    Output::ScheduleKeyDeletion(ScheduleKeyDeletionOutput {
                        key_id,
                        deletion_date,
                        key_state,
                        pending_window_in_days,
                    })
                }
            ),
        chars(0, 40)
            .prop_map(|key_id| Output::CancelKeyDeletion(CancelKeyDeletionOutput { key_id })),
        (
            chars(0, 40),
            any::<bool>(),
            proptest::option::of(any::<u32>()),
            opt_i64(),
            opt_i64()
        )
            .prop_map(|(key_id, enabled, period, next, on_demand)| {
                Output::GetKeyRotationStatus(GetKeyRotationStatusOutput {
                    key_id,
                    key_rotation_enabled: enabled,
                    rotation_period_in_days: period,
                    next_rotation_date: next,
                    on_demand_rotation_start_date: on_demand,
                })
            }),
        chars(0, 40)
            .prop_map(|key_id| Output::RotateKeyOnDemand(RotateKeyOnDemandOutput { key_id })),
        (chars(0, 40), blob(0, 96), blob(0, 600), any::<i64>()).prop_map(
            |(key_id, import_token, public_key, parameters_valid_to)| {
                Output::GetParametersForImport(GetParametersForImportOutput {
                    key_id,
                    import_token,
                    public_key,
                    parameters_valid_to,
                })
            }
        ),
    ]
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        2 => empty_output().prop_map(Ok),
        2 => list_output().prop_map(Ok),
        3 => key_output().prop_map(Ok),
        1 => (proptest::sample::select(ErrorKind::ALL.to_vec()), chars(0, 40))
            .prop_map(|(kind, message)| Err(KmsError::new(kind, message))),
    ]
}

fn response() -> impl Strategy<Value = Response> {
    let body = prop_oneof![
        outcome().prop_map(ResponseBody::Single),
        proptest::collection::vec(outcome(), 1..8).prop_map(ResponseBody::Batch),
    ];
    (any::<u64>(), body).prop_map(|(request_id, body)| Response { request_id, body })
}

// ---------------------------------------------------------------- round trips

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn lifecycle_requests_round_trip(bags in proptest::collection::vec(bag(), 1..6), id: u64) {
        let single = Request { request_id: id, body: RequestBody::Single(Ok(bags[0].op())) };
        let batch = Request {
            request_id: id,
            body: RequestBody::Batch(bags.iter().map(|b| Ok(b.op())).collect()),
        };
        for req in [single, batch] {
            let payload = single_frame(&encode_req(&req));
            let decoded = decode_request(&payload, &DecodeLimits::default()).expect("decodes");
            prop_assert_eq!(decoded, req);
        }
    }

    /// A builder sized at `request_size_bound` never grows (growing would
    /// free a copy of the request, wrapped key material included, unzeroed).
    #[test]
    fn lifecycle_request_size_bound_is_never_exceeded(
        bags in proptest::collection::vec(bag(), 1..6),
    ) {
        let req = Request {
            request_id: 1,
            body: RequestBody::Batch(bags.iter().map(|b| Ok(b.op())).collect()),
        };
        let bound = kms_proto::codec::request_size_bound(&req);
        let mut fbb = FlatBufferBuilder::with_capacity(bound);
        kms_proto::codec::build_request(&mut fbb, &req);
        let (buf, _) = fbb.collapse();
        prop_assert_eq!(buf.len(), bound);
    }

    #[test]
    fn lifecycle_responses_round_trip(resp in response()) {
        let payload = single_frame(&encode_resp(&resp));
        let decoded = decode_response(&payload, DEFAULT_MAX_FRAME).expect("decodes");
        prop_assert_eq!(decoded, resp);
    }

    /// A builder sized at `response_size_hint` never grows.
    #[test]
    fn lifecycle_response_size_hint_is_never_exceeded(resp in response()) {
        let hint = kms_proto::codec::response_size_hint(&resp);
        let mut fbb = FlatBufferBuilder::with_capacity(hint);
        let mut out = Vec::new();
        encode_response(&mut fbb, &resp, &mut out);
        let (buf, _) = fbb.collapse();
        prop_assert_eq!(buf.len(), hint);
    }

    /// Lifecycle frames with bytes overwritten never panic the decoders.
    #[test]
    fn corrupted_lifecycle_frames_never_panic(
        b in bag(),
        resp in response(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut req = payload_of(b.op());
        let mut res = single_frame(&encode_resp(&resp));
        for (at, byte) in &edits {
            let i = at.index(req.len());
            req[i] = *byte;
            let j = at.index(res.len());
            res[j] = *byte;
        }
        if let Err(e) = decode_request(&req, &DecodeLimits::default()) {
            prop_assert!(matches!(e.error.kind, ErrorKind::Serialization | ErrorKind::Validation));
        }
        if let Err(e) = decode_response(&res, DEFAULT_MAX_FRAME) {
            prop_assert_eq!(e.kind, ErrorKind::Serialization);
        }
    }
}

/// The largest pages the daemon may answer fit their hints, strings at
/// their longest: a full ListAliases (1000 aliases of 256 characters),
/// ListKeyRotations (1000) and ListResourceTags (50 tags of 128 + 256
/// characters of 4 bytes each).
#[test]
fn largest_pages_fit_their_hints() {
    let long = |n: usize| "\u{10348}".repeat(n);
    let outputs = [
        Output::ListAliases(ListAliasesOutput {
            aliases: (0..limits::MAX_LIST_LIMIT)
                .map(|i| AliasListEntry {
                    alias_name: long(limits::MAX_ALIAS_NAME_LEN),
                    alias_arn: format!(
                        "arn:aws:kms:us-east-1:000000000000:{}",
                        long(limits::MAX_ALIAS_NAME_LEN)
                    ),
                    target_key_id: (i % 2 == 0).then(|| long(36)),
                    creation_date: i64::MAX,
                    last_updated_date: i64::MIN,
                })
                .collect(),
            next_marker: Some(long(limits::MAX_ALIAS_NAME_LEN)),
            truncated: true,
        }),
        Output::ListKeyRotations(ListKeyRotationsOutput {
            rotations: (0..limits::MAX_LIST_LIMIT)
                .map(|i| RotationsListEntry {
                    key_id: long(if i % 2 == 0 { 75 } else { 1 }),
                    rotation_date: i64::MAX,
                    rotation_type: RotationType::OnDemand,
                })
                .collect(),
            next_marker: Some("9".repeat(20)),
            truncated: true,
        }),
        Output::ListResourceTags(ListResourceTagsOutput {
            tags: (0..limits::MAX_LIST_TAGS_LIMIT)
                .map(|i| OwnedTag {
                    key: long(limits::MAX_TAG_KEY_LEN),
                    value: long(if i % 2 == 0 {
                        limits::MAX_TAG_VALUE_LEN
                    } else {
                        0
                    }),
                })
                .collect(),
            next_marker: Some(long(limits::MAX_TAG_KEY_LEN)),
            truncated: true,
        }),
    ];
    for o in outputs {
        for body in [
            ResponseBody::Single(Ok(o.clone())),
            ResponseBody::Batch(vec![Ok(o.clone()), Ok(Output::EnableKey)]),
        ] {
            let resp = Response {
                request_id: u64::MAX,
                body,
            };
            let hint = kms_proto::codec::response_size_hint(&resp);
            let mut fbb = FlatBufferBuilder::with_capacity(hint);
            let mut out = Vec::new();
            encode_response(&mut fbb, &resp, &mut out);
            let (buf, _) = fbb.collapse();
            assert_eq!(buf.len(), hint, "the builder grew");
            let payload = single_frame(&out);
            assert_eq!(
                decode_response(&payload, DEFAULT_MAX_FRAME).unwrap(),
                resp,
                "a full page decodes within the client's verifier limits"
            );
        }
    }
}

// ------------------------------------------------------------ decoding limits

#[test]
fn tags_are_bounded_in_count_and_length() {
    let k = |n: usize| "k".repeat(n);
    let v = |n: usize| "€".repeat(n); // 3 bytes, 1 character
    let many: Vec<(String, String)> = (0..=limits::MAX_TAGS_PER_REQUEST)
        .map(|i| (format!("key{i}"), String::new()))
        .collect();
    let tags = |n: usize| -> Vec<Tag<'_>> {
        many[..n]
            .iter()
            .map(|(key, value)| Tag { key, value })
            .collect()
    };
    // 50 tags are fine, 51 are not; CreateKey may have none, TagResource not.
    assert_accepted(Operation::CreateKey(CreateKey {
        tags: tags(50),
        ..CreateKey::default()
    }));
    assert_accepted(Operation::CreateKey(CreateKey::default()));
    assert_refused(
        Operation::CreateKey(CreateKey {
            tags: tags(51),
            ..CreateKey::default()
        }),
        "Tags has 51 entries; at most 50",
    );
    assert_accepted(Operation::TagResource(TagResource {
        key_id: "k",
        tags: tags(50),
    }));
    assert_refused(
        Operation::TagResource(TagResource {
            key_id: "k",
            tags: tags(51),
        }),
        "Tags has 51 entries",
    );
    assert_refused(
        Operation::TagResource(TagResource {
            key_id: "k",
            tags: vec![],
        }),
        "Tags is required",
    );

    // Lengths count characters, not bytes: 128 three-byte characters are a
    // valid key, 129 ASCII ones are not; an empty key is refused, an empty
    // value is fine.
    let key128 = v(128);
    let key129 = k(129);
    let value256 = v(256);
    let value257 = k(257);
    let tag = |key: &'static str, value: &'static str| {
        Operation::TagResource(TagResource {
            key_id: "k",
            tags: vec![
                Tag {
                    key: "ok",
                    value: "",
                },
                Tag { key, value },
            ],
        })
    };
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    assert_accepted(tag(leak(key128), leak(value256)));
    assert_refused(tag(leak(key129), ""), "Tags[1].TagKey has 129 characters");
    assert_refused(tag("", "v"), "Tags[1].TagKey has 0 characters");
    assert_refused(
        tag("k", leak(value257)),
        "Tags[1].TagValue has 257 characters",
    );

    // UntagResource: 1..=50 keys of 1..=128 characters.
    let keys: Vec<String> = (0..=50).map(|i| format!("key{i}")).collect();
    let untag = |n: usize| {
        Operation::UntagResource(UntagResource {
            key_id: "k",
            tag_keys: keys[..n].iter().map(String::as_str).collect(),
        })
    };
    assert_accepted(untag(50));
    assert_refused(untag(51), "TagKeys has 51 entries");
    assert_refused(untag(0), "TagKeys is required");
    let long_key = k(129);
    assert_refused(
        Operation::UntagResource(UntagResource {
            key_id: "k",
            tag_keys: vec!["a", &long_key],
        }),
        "TagKeys[1] has 129 characters",
    );
}

#[test]
fn alias_names_are_bounded() {
    let ok = format!("alias/{}", "a".repeat(250));
    let long = format!("alias/{}", "a".repeat(251));
    for name in [ok.as_str(), "a"] {
        assert_accepted(Operation::CreateAlias(CreateAlias {
            alias_name: name,
            target_key_id: "k",
        }));
    }
    let ops = |alias_name| {
        [
            Operation::CreateAlias(CreateAlias {
                alias_name,
                target_key_id: "k",
            }),
            Operation::UpdateAlias(UpdateAlias {
                alias_name,
                target_key_id: "k",
            }),
            Operation::DeleteAlias(DeleteAlias { alias_name }),
        ]
    };
    for op in ops(&long) {
        assert_refused(op, "AliasName has 257 characters; it must have 1 to 256");
    }
    for op in ops("") {
        assert_refused(op, "AliasName has 0 characters");
    }
}

#[test]
fn import_blobs_are_bounded() {
    let max = vec![7u8; limits::MAX_IMPORT_TOKEN];
    let over = vec![7u8; limits::MAX_IMPORT_TOKEN + 1];
    let import = |import_token, encrypted_key_material| {
        Operation::ImportKeyMaterial(ImportKeyMaterial {
            key_id: "k",
            import_token,
            encrypted_key_material,
            valid_to: Some(1),
            expiration_model: ExpirationModel::KeyMaterialExpires,
        })
    };
    assert_accepted(import(&max, &max));
    assert_refused(
        import(&over, b"m"),
        "ImportToken has 6145 bytes; at most 6144",
    );
    assert_refused(
        import(b"t", &over),
        "EncryptedKeyMaterial has 6145 bytes; at most 6144",
    );
    assert_refused(import(b"", b"m"), "ImportToken is required");
    assert_refused(import(b"t", b""), "EncryptedKeyMaterial is required");
}

#[test]
fn description_is_bounded() {
    let max = "€".repeat(limits::MAX_DESCRIPTION_LEN);
    let over = "d".repeat(limits::MAX_DESCRIPTION_LEN + 1);
    assert_accepted(Operation::UpdateKeyDescription(UpdateKeyDescription {
        key_id: "k",
        description: &max,
    }));
    // An empty description clears it.
    assert_accepted(Operation::UpdateKeyDescription(UpdateKeyDescription {
        key_id: "k",
        description: "",
    }));
    assert_refused(
        Operation::UpdateKeyDescription(UpdateKeyDescription {
            key_id: "k",
            description: &over,
        }),
        "Description has 8193 characters",
    );
}

/// Absent optional numbers stay absent and 0 stays 0 (AWS refuses a
/// PendingWindowInDays of 0; it must not read as "use the default").
#[test]
fn optional_numbers_keep_absent_and_zero_apart() {
    for days in [None, Some(0), Some(7), Some(u32::MAX)] {
        assert_accepted(Operation::ScheduleKeyDeletion(ScheduleKeyDeletion {
            key_id: "k",
            pending_window_in_days: days,
        }));
        assert_accepted(Operation::EnableKeyRotation(EnableKeyRotation {
            key_id: "k",
            rotation_period_in_days: days,
        }));
    }
    for valid_to in [None, Some(0), Some(-1), Some(i64::MAX)] {
        assert_accepted(Operation::ImportKeyMaterial(ImportKeyMaterial {
            key_id: "k",
            import_token: b"t",
            encrypted_key_material: b"m",
            valid_to,
            expiration_model: ExpirationModel::KeyMaterialDoesNotExpire,
        }));
    }
}

#[test]
fn missing_key_ids_are_validation_errors() {
    macro_rules! without_key_id {
        ($($table:ident),+) => {
            [$(
                hand_built(|fbb| {
                    let t = fb::$table::create(fbb, &Default::default());
                    (fb::Operation::$table, t.as_union_value())
                }),
            )+]
        };
    }
    let payloads = without_key_id!(
        UpdateKeyDescriptionRequest,
        TagResourceRequest,
        UntagResourceRequest,
        ListResourceTagsRequest,
        EnableKeyRequest,
        DisableKeyRequest,
        ScheduleKeyDeletionRequest,
        CancelKeyDeletionRequest,
        EnableKeyRotationRequest,
        DisableKeyRotationRequest,
        GetKeyRotationStatusRequest,
        RotateKeyOnDemandRequest,
        ListKeyRotationsRequest,
        GetParametersForImportRequest,
        ImportKeyMaterialRequest,
        DeleteImportedKeyMaterialRequest
    );
    for payload in &payloads {
        let e = decode_one(payload).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Validation);
        assert_eq!(e.message, "KeyId is required");
    }
    // An alias operation without its names.
    let p = hand_built(|fbb| {
        let t = fb::CreateAliasRequest::create(fbb, &Default::default());
        (fb::Operation::CreateAliasRequest, t.as_union_value())
    });
    assert_eq!(decode_one(&p).unwrap_err().message, "AliasName is required");
    let p = hand_built(|fbb| {
        let alias_name = Some(fbb.create_string("alias/a"));
        let t = fb::UpdateAliasRequest::create(
            fbb,
            &fb::UpdateAliasRequestArgs {
                alias_name,
                target_key_id: None,
            },
        );
        (fb::Operation::UpdateAliasRequest, t.as_union_value())
    });
    assert_eq!(
        decode_one(&p).unwrap_err().message,
        "TargetKeyId is required"
    );
    // ListAliases needs nothing.
    let p = hand_built(|fbb| {
        let t = fb::ListAliasesRequest::create(fbb, &Default::default());
        (fb::Operation::ListAliasesRequest, t.as_union_value())
    });
    assert_eq!(
        decode_one(&p).unwrap(),
        Operation::ListAliases(ListAliases::default())
    );
}

#[test]
fn import_enums_absent_or_unknown_are_validation_errors() {
    let params = |algorithm: fb::WrappingAlgorithm, spec: fb::WrappingKeySpec| {
        hand_built(|fbb| {
            let key_id = Some(fbb.create_string("k"));
            let t = fb::GetParametersForImportRequest::create(
                fbb,
                &fb::GetParametersForImportRequestArgs {
                    key_id,
                    wrapping_algorithm: algorithm,
                    wrapping_key_spec: spec,
                },
            );
            (
                fb::Operation::GetParametersForImportRequest,
                t.as_union_value(),
            )
        })
    };
    let message = |p: Vec<u8>| decode_one(&p).unwrap_err().message;
    assert_eq!(
        message(params(
            fb::WrappingAlgorithm::NONE,
            fb::WrappingKeySpec::RSA_2048
        )),
        "WrappingAlgorithm is required"
    );
    assert_eq!(
        message(params(
            fb::WrappingAlgorithm::RSAES_OAEP_SHA_256,
            fb::WrappingKeySpec::NONE
        )),
        "WrappingKeySpec is required"
    );
    assert_eq!(
        message(params(
            fb::WrappingAlgorithm(99),
            fb::WrappingKeySpec::RSA_2048
        )),
        "unknown WrappingAlgorithm 99"
    );
    assert_eq!(
        message(params(
            fb::WrappingAlgorithm::RSAES_OAEP_SHA_256,
            fb::WrappingKeySpec(9)
        )),
        "unknown WrappingKeySpec 9"
    );
    // Every algorithm AWS names decodes, so that the daemon can refuse the
    // ones it does not offer with its own clear error.
    for a in WrappingAlgorithm::ALL {
        assert_accepted(Operation::GetParametersForImport(GetParametersForImport {
            key_id: "k",
            wrapping_algorithm: *a,
            wrapping_key_spec: WrappingKeySpec::Rsa4096,
        }));
    }
    let p = hand_built(|fbb| {
        let key_id = Some(fbb.create_string("k"));
        let import_token = Some(fbb.create_vector(&[1u8]));
        let encrypted_key_material = Some(fbb.create_vector(&[2u8]));
        let t = fb::ImportKeyMaterialRequest::create(
            fbb,
            &fb::ImportKeyMaterialRequestArgs {
                key_id,
                import_token,
                encrypted_key_material,
                valid_to: None,
                expiration_model: fb::ExpirationModel(5),
            },
        );
        (fb::Operation::ImportKeyMaterialRequest, t.as_union_value())
    });
    assert_eq!(message(p), "unknown ExpirationModel 5");
}

/// An ImportKeyMaterial request that leaves the expiration model out gets
/// AWS's default, KEY_MATERIAL_EXPIRES.
#[test]
fn expiration_model_defaults_to_expires() {
    let p = hand_built(|fbb| {
        let key_id = Some(fbb.create_string("k"));
        let import_token = Some(fbb.create_vector(&[1u8]));
        let encrypted_key_material = Some(fbb.create_vector(&[2u8]));
        let t = fb::ImportKeyMaterialRequest::create(
            fbb,
            &fb::ImportKeyMaterialRequestArgs {
                key_id,
                import_token,
                encrypted_key_material,
                valid_to: Some(5),
                ..Default::default()
            },
        );
        (fb::Operation::ImportKeyMaterialRequest, t.as_union_value())
    });
    let Operation::ImportKeyMaterial(r) = decode_one(&p).unwrap() else {
        panic!("not an import")
    };
    assert_eq!(r.expiration_model, ExpirationModel::KeyMaterialExpires);
    assert_eq!(r.valid_to, Some(5));
}

#[test]
fn import_debug_output_never_shows_the_material() {
    let material = b"wrapped but still secret";
    let op = Operation::ImportKeyMaterial(ImportKeyMaterial {
        key_id: "k",
        import_token: b"token",
        encrypted_key_material: material,
        valid_to: None,
        expiration_model: ExpirationModel::KeyMaterialDoesNotExpire,
    });
    let shown = format!("{op:?}");
    assert!(shown.contains("<24 bytes redacted>"), "{shown}");
    assert!(!shown.contains("119"), "{shown}"); // b'w' as a number
    assert!(!shown.contains("secret"), "{shown}");
}

#[test]
fn operation_names_are_aws_names() {
    let b = Bag {
        which: 0,
        key_id: "k".into(),
        alias: "alias/a".into(),
        text: String::new(),
        opt: None,
        limit: 0,
        days: None,
        when: None,
        tags: vec![],
        tag_keys: vec![],
        token: vec![1],
        material: vec![1],
        algorithm: WrappingAlgorithm::RsaesOaepSha256,
        spec: WrappingKeySpec::Rsa2048,
        expiration: ExpirationModel::KeyMaterialExpires,
        origin: Origin::External,
    };
    let names: Vec<&str> = (0..BAG_OPS)
        .map(|which| Bag { which, ..b.clone() }.op().name())
        .collect();
    assert_eq!(
        names,
        [
            "CreateKey",
            "UpdateKeyDescription",
            "TagResource",
            "UntagResource",
            "ListResourceTags",
            "CreateAlias",
            "UpdateAlias",
            "DeleteAlias",
            "ListAliases",
            "EnableKey",
            "DisableKey",
            "ScheduleKeyDeletion",
            "CancelKeyDeletion",
            "EnableKeyRotation",
            "DisableKeyRotation",
            "GetKeyRotationStatus",
            "RotateKeyOnDemand",
            "ListKeyRotations",
            "GetParametersForImport",
            "ImportKeyMaterial",
            "DeleteImportedKeyMaterial",
        ]
    );
    for a in WrappingAlgorithm::ALL {
        assert_eq!(WrappingAlgorithm::from_name(a.name()), Some(*a));
    }
    assert_eq!(
        WrappingKeySpec::from_name("RSA_3072"),
        Some(WrappingKeySpec::Rsa3072)
    );
    assert_eq!(WrappingKeySpec::from_name("rsa_3072"), None);
    assert_eq!(KeyState::Unavailable.name(), "Unavailable");
}

// ------------------------------------------------------------- golden frames

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/lifecycle")
}

fn check_golden(name: &str, wire: &[u8]) {
    let path = golden_dir().join(name);
    if std::env::var_os("KMS_UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(golden_dir()).unwrap();
        std::fs::write(&path, wire).unwrap();
        return;
    }
    let want = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; write it with KMS_UPDATE_GOLDEN=1 cargo test -p kms-proto --test lifecycle golden",
            path.display()
        )
    });
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    assert!(
        want == wire,
        "{name}: the encoding changed (the wire format is pinned).\n\
         committed: {}\n\
         now:       {}",
        hex(&want),
        hex(wire)
    );
}

/// Every lifecycle operation once, in union order (CreateKey with tags and
/// Origin EXTERNAL first).
fn golden_request() -> Request<'static> {
    let key_id = "1234abcd-12ab-34cd-56ef-1234567890ab";
    let ops = vec![
        Operation::CreateKey(CreateKey {
            description: "imported",
            origin: Origin::External,
            tags: vec![
                Tag {
                    key: "team",
                    value: "payments",
                },
                Tag {
                    key: "empty",
                    value: "",
                },
            ],
            ..CreateKey::default()
        }),
        Operation::UpdateKeyDescription(UpdateKeyDescription {
            key_id,
            description: "new text",
        }),
        Operation::TagResource(TagResource {
            key_id,
            tags: vec![Tag {
                key: "env",
                value: "prod",
            }],
        }),
        Operation::UntagResource(UntagResource {
            key_id,
            tag_keys: vec!["env", "team"],
        }),
        Operation::ListResourceTags(ListResourceTags {
            key_id,
            limit: 10,
            marker: Some("m"),
        }),
        Operation::CreateAlias(CreateAlias {
            alias_name: "alias/golden",
            target_key_id: key_id,
        }),
        Operation::UpdateAlias(UpdateAlias {
            alias_name: "alias/golden",
            target_key_id:
                "arn:aws:kms:us-east-1:000000000000:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        }),
        Operation::DeleteAlias(DeleteAlias {
            alias_name: "alias/golden",
        }),
        Operation::ListAliases(ListAliases {
            key_id: Some(key_id),
            limit: 0,
            marker: None,
        }),
        Operation::EnableKey(EnableKey { key_id }),
        Operation::DisableKey(DisableKey { key_id }),
        Operation::ScheduleKeyDeletion(ScheduleKeyDeletion {
            key_id,
            pending_window_in_days: Some(7),
        }),
        Operation::CancelKeyDeletion(CancelKeyDeletion { key_id }),
        Operation::EnableKeyRotation(EnableKeyRotation {
            key_id,
            rotation_period_in_days: None,
        }),
        Operation::DisableKeyRotation(DisableKeyRotation { key_id }),
        Operation::GetKeyRotationStatus(GetKeyRotationStatus { key_id }),
        Operation::RotateKeyOnDemand(RotateKeyOnDemand { key_id }),
        Operation::ListKeyRotations(ListKeyRotations {
            key_id,
            limit: 5,
            marker: Some("2"),
        }),
        Operation::GetParametersForImport(GetParametersForImport {
            key_id,
            wrapping_algorithm: WrappingAlgorithm::RsaAesKeyWrapSha256,
            wrapping_key_spec: WrappingKeySpec::Rsa3072,
        }),
        Operation::ImportKeyMaterial(ImportKeyMaterial {
            key_id,
            import_token: &[0x10, 0x11, 0x12],
            encrypted_key_material: &[0xe0, 0xe1, 0xe2, 0xe3],
            valid_to: Some(1_800_000_000),
            expiration_model: ExpirationModel::KeyMaterialExpires,
        }),
        Operation::DeleteImportedKeyMaterial(DeleteImportedKeyMaterial { key_id }),
    ];
    Request {
        request_id: 0x1122_3344_5566_7788,
        body: RequestBody::Batch(ops.into_iter().map(Ok).collect()),
    }
}

/// Every lifecycle output once, in union order, after a DescribeKey of a
/// key pending deletion with imported material.
fn golden_response() -> Response {
    let arn = || {
        "arn:aws:kms:us-east-1:000000000000:key/1234abcd-12ab-34cd-56ef-1234567890ab".to_string()
    };
    let items = vec![
        Ok(Output::DescribeKey(KeyMetadata {
            key_id: "1234abcd-12ab-34cd-56ef-1234567890ab".into(),
            arn: arn(),
            creation_date: 1_700_000_000,
            enabled: false,
            description: "imported".into(),
            key_state: KeyState::PendingDeletion,
            origin: Origin::External,
            current_version: 1,
            deletion_date: Some(1_700_604_800),
            pending_deletion_window_in_days: Some(7),
            valid_to: Some(1_800_000_000),
            expiration_model: Some(ExpirationModel::KeyMaterialExpires),
            ..KeyMetadata::default()
        })),
        Ok(Output::UpdateKeyDescription),
        Ok(Output::TagResource),
        Ok(Output::UntagResource),
        Ok(Output::ListResourceTags(ListResourceTagsOutput {
            tags: vec![OwnedTag {
                key: "team".into(),
                value: "payments".into(),
            }],
            next_marker: Some("team".into()),
            truncated: true,
        })),
        Ok(Output::CreateAlias),
        Ok(Output::UpdateAlias),
        Ok(Output::DeleteAlias),
        Ok(Output::ListAliases(ListAliasesOutput {
            aliases: vec![AliasListEntry {
                alias_name: "alias/golden".into(),
                alias_arn: "arn:aws:kms:us-east-1:000000000000:alias/golden".into(),
                target_key_id: Some("1234abcd-12ab-34cd-56ef-1234567890ab".into()),
                creation_date: 1_700_000_001,
                last_updated_date: 1_700_000_002,
            }],
            next_marker: None,
            truncated: false,
        })),
        Ok(Output::EnableKey),
        Ok(Output::DisableKey),
        Ok(Output::ScheduleKeyDeletion(ScheduleKeyDeletionOutput {
            key_id: arn(),
            deletion_date: 1_700_604_800,
            key_state: KeyState::PendingDeletion,
            pending_window_in_days: 7,
        })),
        Ok(Output::CancelKeyDeletion(CancelKeyDeletionOutput {
            key_id: arn(),
        })),
        Ok(Output::EnableKeyRotation),
        Ok(Output::DisableKeyRotation),
        Ok(Output::GetKeyRotationStatus(GetKeyRotationStatusOutput {
            key_id: arn(),
            key_rotation_enabled: true,
            rotation_period_in_days: Some(365),
            next_rotation_date: Some(1_731_536_000),
            on_demand_rotation_start_date: None,
        })),
        Ok(Output::RotateKeyOnDemand(RotateKeyOnDemandOutput {
            key_id: arn(),
        })),
        Ok(Output::ListKeyRotations(ListKeyRotationsOutput {
            rotations: vec![
                RotationsListEntry {
                    key_id: arn(),
                    rotation_date: 1_710_000_000,
                    rotation_type: RotationType::Automatic,
                },
                RotationsListEntry {
                    key_id: arn(),
                    rotation_date: 1_720_000_000,
                    rotation_type: RotationType::OnDemand,
                },
            ],
            next_marker: None,
            truncated: false,
        })),
        Ok(Output::GetParametersForImport(
            GetParametersForImportOutput {
                key_id: arn(),
                import_token: vec![0x10, 0x11, 0x12],
                public_key: vec![0x30, 0x82, 0x01, 0xa2],
                parameters_valid_to: 1_700_086_400,
            },
        )),
        Ok(Output::ImportKeyMaterial),
        Ok(Output::DeleteImportedKeyMaterial),
        Err(KmsError::new(
            ErrorKind::AlreadyExists,
            "alias/golden already exists",
        )),
    ];
    Response {
        request_id: 0x1122_3344_5566_7788,
        body: ResponseBody::Batch(items),
    }
}

#[test]
fn golden_lifecycle_request() {
    let req = golden_request();
    let wire = encode_req(&req);
    check_golden("request_batch.bin", &wire);
    assert_eq!(
        decode_request(&single_frame(&wire), &DecodeLimits::default()).unwrap(),
        req
    );
}

#[test]
fn golden_lifecycle_response() {
    let resp = golden_response();
    let wire = encode_resp(&resp);
    check_golden("response_batch.bin", &wire);
    assert_eq!(
        decode_response(&single_frame(&wire), DEFAULT_MAX_FRAME).unwrap(),
        resp
    );
}

/// The committed lifecycle golden files are exactly the ones checked here.
#[test]
fn golden_lifecycle_files_are_all_checked() {
    if std::env::var_os("KMS_UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        return;
    }
    let mut names: Vec<String> = std::fs::read_dir(golden_dir())
        .expect("proto/tests/golden/lifecycle exists")
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["request_batch.bin", "response_batch.bin"]);
}
