//! The access-control operations on the wire (key policies and grants,
//! union tags 31 to 38) and the access-control fields of the older
//! requests (CreateKey's policy, grant tokens and dry run): every request
//! and output survives encode -> frame -> decode, builders sized by the
//! bounds never grow, the decoder enforces AWS's limits naming the field,
//! and golden frames pin the encoding.
//!
//! Golden frames of this file live in `proto/tests/golden/access/`. After
//! an intended change of the wire format, rewrite them with
//! `KMS_UPDATE_GOLDEN=1 cargo test -p kms-proto --test access golden`
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

/// The outcome of the one item of a request payload.
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

/// Asserts that `op`, once encoded, decodes to an error of `kind` whose
/// message contains `needle`.
fn assert_refused_as(op: Operation<'_>, kind: ErrorKind, needle: &str) {
    let payload = payload_of(op);
    match decode_one(&payload) {
        Err(e) => {
            assert_eq!(e.kind, kind, "{e}");
            assert!(e.message.contains(needle), "{needle:?} not in {e}");
        }
        Ok(op) => panic!("expected {kind} naming {needle}, got {op:?}"),
    }
}

/// Asserts that `op` decodes to a ValidationException naming `needle`.
fn assert_refused(op: Operation<'_>, needle: &str) {
    assert_refused_as(op, ErrorKind::Validation, needle);
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

fn pairs(p: &[(String, String)]) -> Context<'_> {
    p.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

// ------------------------------------------------------ owned request model

/// Owned encryption-context pairs.
type Pairs = Vec<(String, String)>;

/// Owned fields from which any access-control operation is borrowed
/// ([`Bag::op`] picks the operation by `which` and uses the fields it has).
#[derive(Debug, Clone)]
struct Bag {
    which: usize,
    key_id: String,
    opt: Option<String>,
    policy: String,
    name: Option<String>,
    principal: String,
    other: Option<String>,
    limit: u32,
    flag: bool,
    operations: Vec<GrantOperation>,
    constraints: Option<(Pairs, Pairs)>,
    tokens: Vec<String>,
}

/// Number of operations [`Bag::op`] makes.
const BAG_OPS: usize = 8;

impl Bag {
    fn tokens(&self) -> Vec<&str> {
        self.tokens.iter().map(String::as_str).collect()
    }

    fn op(&self) -> Operation<'_> {
        let key_id = self.key_id.as_str();
        match self.which % BAG_OPS {
            0 => Operation::PutKeyPolicy(PutKeyPolicy {
                key_id,
                policy_name: self.name.as_deref(),
                policy: &self.policy,
                bypass_policy_lockout_safety_check: self.flag,
            }),
            1 => Operation::GetKeyPolicy(GetKeyPolicy {
                key_id,
                policy_name: self.name.as_deref(),
            }),
            2 => Operation::ListKeyPolicies(ListKeyPolicies {
                key_id,
                limit: self.limit,
                marker: self.opt.as_deref(),
            }),
            3 => Operation::CreateGrant(CreateGrant {
                key_id,
                grantee_principal: &self.principal,
                retiring_principal: self.other.as_deref(),
                operations: self.operations.clone(),
                constraints: self.constraints.as_ref().map(|(s, e)| GrantConstraints {
                    encryption_context_subset: pairs(s),
                    encryption_context_equals: pairs(e),
                }),
                grant_tokens: self.tokens(),
                name: self.name.as_deref(),
                dry_run: self.flag,
            }),
            4 => Operation::ListGrants(ListGrants {
                key_id,
                limit: self.limit,
                marker: self.opt.as_deref(),
                grant_id: self.name.as_deref(),
                grantee_principal: self.other.as_deref(),
            }),
            5 => Operation::ListRetirableGrants(ListRetirableGrants {
                retiring_principal: &self.principal,
                limit: self.limit,
                marker: self.opt.as_deref(),
            }),
            6 => Operation::RetireGrant(RetireGrant {
                grant_token: self.other.as_deref(),
                key_id: self.opt.as_deref(),
                grant_id: self.name.as_deref(),
                dry_run: self.flag,
            }),
            _ => Operation::RevokeGrant(RevokeGrant {
                key_id,
                grant_id: &self.principal,
                dry_run: self.flag,
            }),
        }
    }
}

// ---------------------------------------------------------------- strategies

/// Text of `min..=max` characters, any Unicode (NUL included) or the
/// characters AWS allows in names and principals.
fn chars(min: usize, max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::string::string_regex(&format!("[a-zA-Z0-9:/_=,.@+-]{{{min},{max}}}"))
            .unwrap(),
        1 => proptest::collection::vec(any::<char>(), min..=max)
            .prop_map(|c| c.into_iter().collect::<String>()),
    ]
}

/// A constraint: at most 8 pairs of at most 384 characters in all.
fn constraint() -> impl Strategy<Value = Vec<(String, String)>> {
    proptest::collection::vec(
        (chars(0, 20), chars(0, 20)),
        0..=limits::MAX_GRANT_CONSTRAINT_PAIRS,
    )
}

fn operations() -> impl Strategy<Value = Vec<GrantOperation>> {
    proptest::collection::vec(
        proptest::sample::select(GrantOperation::ALL.to_vec()),
        1..=limits::MAX_GRANT_OPERATIONS,
    )
}

fn bag() -> impl Strategy<Value = Bag> {
    (
        (
            0..BAG_OPS,
            chars(1, 48),
            proptest::option::of(chars(1, 64)),
            chars(1, 200),
            proptest::option::of(chars(1, 64)),
            chars(1, 64),
        ),
        (
            proptest::option::of(chars(1, 64)),
            any::<u32>(),
            any::<bool>(),
            operations(),
            proptest::option::of((constraint(), constraint())),
            proptest::collection::vec(chars(1, 64), 0..=limits::MAX_GRANT_TOKENS),
        ),
    )
        .prop_map(
            |(
                (which, key_id, opt, policy, name, principal),
                (other, limit, flag, operations, constraints, tokens),
            )| Bag {
                which,
                key_id,
                opt,
                policy,
                name,
                principal,
                other,
                limit,
                flag,
                operations,
                constraints,
                tokens,
            },
        )
}

fn page<T: std::fmt::Debug>(
    entry: impl Strategy<Value = T>,
) -> impl Strategy<Value = (Vec<T>, Option<String>, bool)> {
    (
        proptest::collection::vec(entry, 0..5),
        proptest::option::of(chars(1, 32)),
        any::<bool>(),
    )
}

fn grant_entry() -> impl Strategy<Value = GrantListEntry> {
    (
        (
            chars(0, 80),
            chars(0, 64),
            proptest::option::of(chars(1, 40)),
            any::<i64>(),
            chars(0, 40),
        ),
        (
            proptest::option::of(chars(1, 40)),
            chars(0, 20),
            proptest::collection::vec(proptest::sample::select(GrantOperation::ALL.to_vec()), 0..6),
            proptest::option::of((constraint(), constraint())),
        ),
    )
        .prop_map(
            |(
                (key_id, grant_id, name, creation_date, grantee_principal),
                (retiring_principal, issuing_account, operations, constraints),
            )| GrantListEntry {
                key_id,
                grant_id,
                name,
                creation_date,
                grantee_principal,
                retiring_principal,
                issuing_account,
                operations,
                constraints: constraints.map(|(s, e)| OwnedGrantConstraints {
                    encryption_context_subset: s,
                    encryption_context_equals: e,
                }),
            },
        )
}

fn output() -> impl Strategy<Value = Output> {
    prop_oneof![
        proptest::sample::select(vec![
            Output::PutKeyPolicy,
            Output::RetireGrant,
            Output::RevokeGrant
        ]),
        (chars(0, 300), chars(0, 20)).prop_map(|(policy, policy_name)| {
            Output::GetKeyPolicy(GetKeyPolicyOutput {
                policy,
                policy_name,
            })
        }),
        page(chars(0, 20)).prop_map(|(policy_names, next_marker, truncated)| {
            Output::ListKeyPolicies(ListKeyPoliciesOutput {
                policy_names,
                next_marker,
                truncated,
            })
        }),
        (chars(0, 200), chars(0, 64)).prop_map(|(grant_token, grant_id)| {
            Output::CreateGrant(CreateGrantOutput {
                grant_token,
                grant_id,
            })
        }),
        (page(grant_entry()), any::<bool>()).prop_map(
            |((grants, next_marker, truncated), retirable)| {
                let l = ListGrantsOutput {
                    grants,
                    next_marker,
                    truncated,
                };
                if retirable {
                    Output::ListRetirableGrants(l)
                } else {
                    Output::ListGrants(l)
                }
            }
        ),
    ]
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        4 => output().prop_map(Ok),
        1 => (proptest::sample::select(ErrorKind::ALL.to_vec()), chars(0, 40))
            .prop_map(|(kind, message)| Err(KmsError::new(kind, message))),
    ]
}

fn response() -> impl Strategy<Value = Response> {
    let body = prop_oneof![
        outcome().prop_map(ResponseBody::Single),
        proptest::collection::vec(outcome(), 1..6).prop_map(ResponseBody::Batch),
    ];
    (any::<u64>(), body).prop_map(|(request_id, body)| Response { request_id, body })
}

// ---------------------------------------------------------------- round trips

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn access_requests_round_trip(bags in proptest::collection::vec(bag(), 1..6), id: u64) {
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

    /// A builder sized at `request_size_bound` never grows.
    #[test]
    fn access_request_size_bound_is_never_exceeded(
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
    fn access_responses_round_trip(resp in response()) {
        let payload = single_frame(&encode_resp(&resp));
        let decoded = decode_response(&payload, DEFAULT_MAX_FRAME).expect("decodes");
        prop_assert_eq!(decoded, resp);
    }

    /// A builder sized at `response_size_hint` never grows.
    #[test]
    fn access_response_size_hint_is_never_exceeded(resp in response()) {
        let hint = kms_proto::codec::response_size_hint(&resp);
        let mut fbb = FlatBufferBuilder::with_capacity(hint);
        let mut out = Vec::new();
        encode_response(&mut fbb, &resp, &mut out);
        let (buf, _) = fbb.collapse();
        prop_assert_eq!(buf.len(), hint);
    }

    /// Access-control frames with bytes overwritten never panic the
    /// decoders.
    #[test]
    fn corrupted_access_frames_never_panic(
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

/// The largest answers the daemon may give fit their hints and the
/// client's verifier, strings at their longest: a full page of 100 grants
/// with every field at its limit (8 + 8 constraint pairs each), alone and
/// beside other items, a 32 KiB policy, an 8 KiB grant token.
#[test]
fn largest_answers_fit_their_hints() {
    let long = |n: usize| "\u{10348}".repeat(n);
    // 384 characters in all over 8 pairs: 24 each side.
    let constraint = || -> Vec<(String, String)> {
        (0..limits::MAX_GRANT_CONSTRAINT_PAIRS)
            .map(|i| (format!("{i}{}", long(23)), long(24)))
            .collect()
    };
    let grants = ListGrantsOutput {
        grants: (0..limits::MAX_LIST_GRANTS_LIMIT)
            .map(|i| GrantListEntry {
                key_id: format!("arn:aws:kms:us-east-1:000000000000:key/{}", "f".repeat(36)),
                grant_id: long(limits::MAX_GRANT_ID_LEN),
                name: (i % 3 != 0).then(|| long(limits::MAX_GRANT_NAME_LEN)),
                creation_date: i64::MAX,
                grantee_principal: long(limits::MAX_PRINCIPAL_LEN),
                retiring_principal: (i % 2 == 0).then(|| long(limits::MAX_PRINCIPAL_LEN)),
                issuing_account: long(limits::MAX_ISSUING_ACCOUNT_LEN),
                operations: GrantOperation::ALL.to_vec(),
                constraints: (i % 5 != 0).then(|| OwnedGrantConstraints {
                    encryption_context_subset: constraint(),
                    encryption_context_equals: if i % 7 == 0 { vec![] } else { constraint() },
                }),
            })
            .collect(),
        next_marker: Some(long(limits::MAX_MARKER_LEN)),
        truncated: true,
    };
    let outputs = [
        Output::ListGrants(grants.clone()),
        Output::ListRetirableGrants(grants),
        Output::GetKeyPolicy(GetKeyPolicyOutput {
            policy: "p".repeat(limits::MAX_POLICY_BYTES),
            policy_name: long(limits::MAX_POLICY_NAME_LEN),
        }),
        Output::CreateGrant(CreateGrantOutput {
            grant_token: "t".repeat(limits::MAX_GRANT_TOKEN_LEN),
            grant_id: long(limits::MAX_GRANT_ID_LEN),
        }),
        Output::ListKeyPolicies(ListKeyPoliciesOutput {
            policy_names: vec![long(limits::MAX_POLICY_NAME_LEN)],
            next_marker: Some(long(limits::MAX_MARKER_LEN)),
            truncated: true,
        }),
    ];
    for o in outputs {
        for body in [
            ResponseBody::Single(Ok(o.clone())),
            ResponseBody::Batch(vec![Ok(o.clone()), Ok(Output::RevokeGrant)]),
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
                "a full answer decodes within the client's verifier limits"
            );
        }
    }
}

/// The largest valid requests fit their size bound and the daemon's
/// verifier: a batch of the largest CreateGrant (17 operations, 8 + 8
/// constraint pairs, 10 tokens of 8 KiB) at the default batch limit would
/// be too large a frame, so 64 of them.
#[test]
fn largest_requests_fit_their_bounds_and_the_verifier() {
    let long = |n: usize| "\u{10348}".repeat(n);
    let subset: Vec<(String, String)> = (0..limits::MAX_GRANT_CONSTRAINT_PAIRS)
        .map(|i| (format!("{i}{}", long(23)), long(24)))
        .collect();
    let tokens = vec!["t".repeat(limits::MAX_GRANT_TOKEN_LEN); limits::MAX_GRANT_TOKENS];
    let principal = long(limits::MAX_PRINCIPAL_LEN);
    let name = long(limits::MAX_GRANT_NAME_LEN);
    let op = Operation::CreateGrant(CreateGrant {
        key_id: "k",
        grantee_principal: &principal,
        retiring_principal: Some(&principal),
        operations: GrantOperation::ALL.to_vec(),
        constraints: Some(GrantConstraints {
            encryption_context_subset: pairs(&subset),
            encryption_context_equals: pairs(&subset),
        }),
        grant_tokens: tokens.iter().map(String::as_str).collect(),
        name: Some(&name),
        dry_run: true,
    });
    let policy = "p".repeat(limits::MAX_POLICY_BYTES);
    let put = Operation::PutKeyPolicy(PutKeyPolicy {
        key_id: "k",
        policy_name: Some("default"),
        policy: &policy,
        bypass_policy_lockout_safety_check: true,
    });
    let req = Request {
        request_id: 1,
        body: RequestBody::Batch(
            std::iter::repeat_n(op, 64)
                .chain(std::iter::once(put))
                .map(Ok)
                .collect(),
        ),
    };
    let bound = kms_proto::codec::request_size_bound(&req);
    let mut fbb = FlatBufferBuilder::with_capacity(bound);
    kms_proto::codec::build_request(&mut fbb, &req);
    let payload = fbb.finished_data().to_vec();
    let (buf, _) = fbb.collapse();
    assert_eq!(buf.len(), bound, "the builder grew");
    assert!(payload.len() <= DEFAULT_MAX_FRAME, "{}", payload.len());
    assert_eq!(
        decode_request(&payload, &DecodeLimits::default()).unwrap(),
        req
    );
}

// ------------------------------------------------------------ decoding limits

/// Every request that takes grant tokens, with `tokens`.
fn token_ops<'a>(tokens: &[&'a str]) -> Vec<Operation<'a>> {
    let grant_tokens = tokens.to_vec();
    vec![
        Operation::DescribeKey(DescribeKey {
            key_id: "k",
            grant_tokens: grant_tokens.clone(),
        }),
        Operation::Encrypt(Encrypt {
            key_id: "k",
            plaintext: b"p",
            grant_tokens: grant_tokens.clone(),
            ..Encrypt::default()
        }),
        Operation::Decrypt(Decrypt {
            ciphertext_blob: b"c",
            grant_tokens: grant_tokens.clone(),
            ..Decrypt::default()
        }),
        Operation::ReEncrypt(ReEncrypt {
            ciphertext_blob: b"c",
            destination_key_id: "k",
            grant_tokens: grant_tokens.clone(),
            ..ReEncrypt::default()
        }),
        Operation::GenerateDataKey(GenerateDataKey {
            key_id: "k",
            number_of_bytes: Some(32),
            grant_tokens: grant_tokens.clone(),
            ..GenerateDataKey::default()
        }),
        Operation::GenerateDataKeyWithoutPlaintext(GenerateDataKey {
            key_id: "k",
            number_of_bytes: Some(32),
            grant_tokens: grant_tokens.clone(),
            ..GenerateDataKey::default()
        }),
        Operation::CreateGrant(CreateGrant {
            key_id: "k",
            grantee_principal: "uid:1000",
            operations: vec![GrantOperation::Decrypt],
            grant_tokens,
            ..CreateGrant::default()
        }),
    ]
}

#[test]
fn grant_tokens_are_bounded_on_every_request_that_takes_them() {
    let ok = "t".repeat(limits::MAX_GRANT_TOKEN_LEN);
    let long = "t".repeat(limits::MAX_GRANT_TOKEN_LEN + 1);
    for op in token_ops(&[ok.as_str(); limits::MAX_GRANT_TOKENS]) {
        assert_accepted(op);
    }
    for op in token_ops(&["t"; limits::MAX_GRANT_TOKENS + 1]) {
        assert_refused(op, "GrantTokens has 11 entries; at most 10");
    }
    for op in token_ops(&["t", long.as_str()]) {
        assert_refused(op, "GrantTokens[1] has 8193 bytes");
    }
    for op in token_ops(&[""]) {
        assert_refused(op, "GrantTokens[0] has 0 bytes");
    }
}

#[test]
fn policies_are_bounded_and_too_long_is_limit_exceeded() {
    let most = "{".repeat(limits::MAX_POLICY_BYTES);
    let over = "{".repeat(limits::MAX_POLICY_BYTES + 1);
    let put = |policy| {
        Operation::PutKeyPolicy(PutKeyPolicy {
            key_id: "k",
            policy,
            ..PutKeyPolicy::default()
        })
    };
    let create = |policy| {
        Operation::CreateKey(CreateKey {
            policy: Some(policy),
            bypass_policy_lockout_safety_check: true,
            ..CreateKey::default()
        })
    };
    assert_accepted(put(&most));
    assert_accepted(create(&most));
    // A policy document is refused with MalformedPolicyDocumentException
    // and its reason, its size included (issue 12).
    assert_refused_as(
        put(&over),
        ErrorKind::MalformedPolicyDocument,
        "32769 bytes",
    );
    assert_refused_as(
        create(&over),
        ErrorKind::MalformedPolicyDocument,
        "32769 bytes",
    );
    assert_refused(put(""), "Policy has 0 bytes");
    assert_refused(create(""), "Policy has 0 bytes");
    // CreateKey without a policy: the default one.
    assert_accepted(Operation::CreateKey(CreateKey::default()));
    // PutKeyPolicy needs one.
    let payload = hand_built(|fbb| {
        let key_id = Some(fbb.create_string("k"));
        let t = fb::PutKeyPolicyRequest::create(
            fbb,
            &fb::PutKeyPolicyRequestArgs {
                key_id,
                ..Default::default()
            },
        );
        (fb::Operation::PutKeyPolicyRequest, t.as_union_value())
    });
    let e = decode_one(&payload).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Validation);
    assert!(e.message.contains("Policy is required"), "{e}");
    // Names: 1..=128 characters.
    let name = "n".repeat(limits::MAX_POLICY_NAME_LEN + 1);
    assert_refused(
        Operation::GetKeyPolicy(GetKeyPolicy {
            key_id: "k",
            policy_name: Some(&name),
        }),
        "PolicyName has 129 characters",
    );
    assert_refused(
        Operation::PutKeyPolicy(PutKeyPolicy {
            key_id: "k",
            policy_name: Some(""),
            policy: "{}",
            ..PutKeyPolicy::default()
        }),
        "PolicyName has 0 characters",
    );
    assert_accepted(Operation::GetKeyPolicy(GetKeyPolicy {
        key_id: "k",
        policy_name: Some(&"é".repeat(limits::MAX_POLICY_NAME_LEN)),
    }));
}

fn grant<'a>(f: impl FnOnce(&mut CreateGrant<'a>)) -> Operation<'a> {
    let mut g = CreateGrant {
        key_id: "k",
        grantee_principal: "uid:1000",
        operations: vec![GrantOperation::Encrypt, GrantOperation::Decrypt],
        ..CreateGrant::default()
    };
    f(&mut g);
    Operation::CreateGrant(g)
}

#[test]
fn create_grant_fields_are_bounded() {
    let p256 = "p".repeat(limits::MAX_PRINCIPAL_LEN);
    let p257 = "€".repeat(limits::MAX_PRINCIPAL_LEN + 1);
    assert_accepted(grant(|g| {
        g.grantee_principal = &p256;
        g.retiring_principal = Some(&p256);
        g.name = Some(&p256);
        g.operations = GrantOperation::ALL.to_vec();
    }));
    assert_refused(
        grant(|g| g.grantee_principal = &p257),
        "GranteePrincipal has 257 characters",
    );
    assert_refused(
        grant(|g| g.grantee_principal = ""),
        "GranteePrincipal has 0",
    );
    assert_refused(
        grant(|g| g.retiring_principal = Some(&p257)),
        "RetiringPrincipal has 257 characters",
    );
    assert_refused(grant(|g| g.name = Some(&p257)), "Name has 257 characters");
    assert_refused(grant(|g| g.name = Some("")), "Name has 0 characters");
    // Operations: 1 to 17.
    assert_refused(grant(|g| g.operations = vec![]), "Operations is required");
    assert_refused(
        grant(|g| g.operations = vec![GrantOperation::Decrypt; 18]),
        "Operations has 18 entries; at most 17",
    );
    // Flags keep their values.
    assert_accepted(grant(|g| g.dry_run = true));
}

/// A CreateGrant with these constraints.
fn with<'a>(s: &'a [(String, String)], e: &'a [(String, String)]) -> Operation<'a> {
    Operation::CreateGrant(CreateGrant {
        key_id: "k",
        grantee_principal: "uid:1",
        operations: vec![GrantOperation::Decrypt],
        constraints: Some(GrantConstraints {
            encryption_context_subset: pairs(s),
            encryption_context_equals: pairs(e),
        }),
        ..CreateGrant::default()
    })
}

#[test]
fn grant_constraints_are_bounded_in_pairs_and_characters() {
    let eight: Vec<(String, String)> = (0..8).map(|i| (format!("k{i}"), "v".into())).collect();
    let nine: Vec<(String, String)> = (0..9).map(|i| (format!("k{i}"), "v".into())).collect();
    // 384 characters in all (keys and values), of 3 bytes each.
    let full = vec![("€".repeat(184), "€".repeat(200))];
    let over = vec![("€".repeat(185), "€".repeat(200))];
    assert_accepted(with(&eight, &eight));
    assert_accepted(with(&full, &full));
    assert_accepted(with(&[], &[]));
    assert_refused(
        with(&nine, &[]),
        "Constraints.EncryptionContextSubset has 9 pairs; at most 8",
    );
    assert_refused(
        with(&[], &nine),
        "Constraints.EncryptionContextEquals has 9 pairs; at most 8",
    );
    assert_refused(
        with(&over, &[]),
        "Constraints.EncryptionContextSubset has 385 characters",
    );
    assert_refused(
        with(&[], &over),
        "Constraints.EncryptionContextEquals has 385 characters",
    );
}

#[test]
fn unknown_grant_operations_are_validation_errors() {
    let payload = hand_built(|fbb| {
        let key_id = Some(fbb.create_string("k"));
        let grantee_principal = Some(fbb.create_string("uid:1"));
        let operations =
            Some(fbb.create_vector(&[fb::GrantOperation::Decrypt, fb::GrantOperation(17)]));
        let t = fb::CreateGrantRequest::create(
            fbb,
            &fb::CreateGrantRequestArgs {
                key_id,
                grantee_principal,
                operations,
                ..Default::default()
            },
        );
        (fb::Operation::CreateGrantRequest, t.as_union_value())
    });
    let e = decode_one(&payload).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Validation);
    assert!(
        e.message
            .contains("Operations[1]: unknown GrantOperation 17"),
        "{e}"
    );
}

#[test]
fn grant_ids_markers_and_principals_are_bounded() {
    let id128 = "i".repeat(limits::MAX_GRANT_ID_LEN);
    let id129 = "i".repeat(limits::MAX_GRANT_ID_LEN + 1);
    let m1024 = "m".repeat(limits::MAX_MARKER_LEN);
    let m1025 = "m".repeat(limits::MAX_MARKER_LEN + 1);
    let p257 = "p".repeat(limits::MAX_PRINCIPAL_LEN + 1);
    let t8193 = "t".repeat(limits::MAX_GRANT_TOKEN_LEN + 1);
    assert_accepted(Operation::RevokeGrant(RevokeGrant {
        key_id: "k",
        grant_id: &id128,
        dry_run: true,
    }));
    assert_refused(
        Operation::RevokeGrant(RevokeGrant {
            key_id: "k",
            grant_id: &id129,
            dry_run: false,
        }),
        "GrantId has 129 characters",
    );
    assert_refused(
        Operation::RevokeGrant(RevokeGrant {
            key_id: "k",
            grant_id: "",
            dry_run: false,
        }),
        "GrantId has 0 characters",
    );
    assert_accepted(Operation::RetireGrant(RetireGrant {
        grant_token: Some(&"t".repeat(limits::MAX_GRANT_TOKEN_LEN)),
        key_id: Some("k"),
        grant_id: Some(&id128),
        dry_run: true,
    }));
    // Which of them name the grant is the daemon's to check.
    assert_accepted(Operation::RetireGrant(RetireGrant::default()));
    assert_refused(
        Operation::RetireGrant(RetireGrant {
            grant_token: Some(&t8193),
            ..RetireGrant::default()
        }),
        "GrantToken has 8193 bytes",
    );
    assert_refused(
        Operation::RetireGrant(RetireGrant {
            grant_id: Some(&id129),
            ..RetireGrant::default()
        }),
        "GrantId has 129 characters",
    );
    let list = |marker, grant_id, grantee_principal| {
        Operation::ListGrants(ListGrants {
            key_id: "k",
            limit: 100,
            marker,
            grant_id,
            grantee_principal,
        })
    };
    assert_accepted(list(Some(&m1024), Some(&id128), Some("uid:0")));
    assert_refused(list(Some(&m1025), None, None), "Marker has 1025 characters");
    assert_refused(list(Some(""), None, None), "Marker has 0 characters");
    assert_refused(list(None, Some(&id129), None), "GrantId has 129");
    assert_refused(list(None, None, Some(&p257)), "GranteePrincipal has 257");
    assert_refused(
        Operation::ListRetirableGrants(ListRetirableGrants {
            retiring_principal: &p257,
            ..ListRetirableGrants::default()
        }),
        "RetiringPrincipal has 257",
    );
    assert_refused(
        Operation::ListKeyPolicies(ListKeyPolicies {
            key_id: "k",
            limit: 0,
            marker: Some(&m1025),
        }),
        "Marker has 1025 characters",
    );
}

#[test]
fn required_fields_are_validation_errors() {
    type Build = fn(
        &mut FlatBufferBuilder<'_>,
    ) -> (
        fb::Operation,
        flatbuffers::WIPOffset<flatbuffers::UnionWIPOffset>,
    );
    let cases: [(Build, &str); 8] = [
        (
            |fbb| {
                let policy = Some(fbb.create_string("{}"));
                let t = fb::PutKeyPolicyRequest::create(
                    fbb,
                    &fb::PutKeyPolicyRequestArgs {
                        policy,
                        ..Default::default()
                    },
                );
                (fb::Operation::PutKeyPolicyRequest, t.as_union_value())
            },
            "KeyId is required",
        ),
        (
            |fbb| {
                let t = fb::GetKeyPolicyRequest::create(fbb, &Default::default());
                (fb::Operation::GetKeyPolicyRequest, t.as_union_value())
            },
            "KeyId is required",
        ),
        (
            |fbb| {
                let t = fb::ListKeyPoliciesRequest::create(fbb, &Default::default());
                (fb::Operation::ListKeyPoliciesRequest, t.as_union_value())
            },
            "KeyId is required",
        ),
        (
            |fbb| {
                let key_id = Some(fbb.create_string("k"));
                let operations = Some(fbb.create_vector(&[fb::GrantOperation::Decrypt]));
                let t = fb::CreateGrantRequest::create(
                    fbb,
                    &fb::CreateGrantRequestArgs {
                        key_id,
                        operations,
                        ..Default::default()
                    },
                );
                (fb::Operation::CreateGrantRequest, t.as_union_value())
            },
            "GranteePrincipal is required",
        ),
        (
            |fbb| {
                let t = fb::ListGrantsRequest::create(fbb, &Default::default());
                (fb::Operation::ListGrantsRequest, t.as_union_value())
            },
            "KeyId is required",
        ),
        (
            |fbb| {
                let t = fb::ListRetirableGrantsRequest::create(fbb, &Default::default());
                (
                    fb::Operation::ListRetirableGrantsRequest,
                    t.as_union_value(),
                )
            },
            "RetiringPrincipal is required",
        ),
        (
            |fbb| {
                let key_id = Some(fbb.create_string("k"));
                let t = fb::RevokeGrantRequest::create(
                    fbb,
                    &fb::RevokeGrantRequestArgs {
                        key_id,
                        ..Default::default()
                    },
                );
                (fb::Operation::RevokeGrantRequest, t.as_union_value())
            },
            "GrantId is required",
        ),
        (
            |fbb| {
                let grant_id = Some(fbb.create_string("g"));
                let t = fb::RevokeGrantRequest::create(
                    fbb,
                    &fb::RevokeGrantRequestArgs {
                        grant_id,
                        ..Default::default()
                    },
                );
                (fb::Operation::RevokeGrantRequest, t.as_union_value())
            },
            "KeyId is required",
        ),
    ];
    for (build, needle) in cases {
        let payload = hand_built(build);
        let e = decode_one(&payload).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Validation, "{e}");
        assert!(e.message.contains(needle), "{needle:?} not in {e}");
    }
}

#[test]
fn access_fields_default_to_absent_and_keep_their_values() {
    // An older client's Encrypt (no access fields) reads as no tokens and
    // no dry run; set, they survive.
    let plain = Operation::Encrypt(Encrypt {
        key_id: "k",
        plaintext: b"p",
        ..Encrypt::default()
    });
    let payload = payload_of(plain);
    let Operation::Encrypt(e) = decode_one(&payload).unwrap() else {
        panic!("not Encrypt")
    };
    assert!(e.grant_tokens.is_empty() && !e.dry_run);
    assert_accepted(Operation::Encrypt(Encrypt {
        key_id: "k",
        plaintext: b"p",
        grant_tokens: vec!["a", "b"],
        dry_run: true,
        ..Encrypt::default()
    }));
    assert_accepted(Operation::CreateKey(CreateKey {
        policy: Some("{}"),
        bypass_policy_lockout_safety_check: true,
        ..CreateKey::default()
    }));
    // Absent constraints stay absent; empty ones stay present.
    assert_accepted(grant(|g| g.constraints = None));
    assert_accepted(grant(|g| g.constraints = Some(GrantConstraints::default())));
}

#[test]
fn encrypt_debug_output_never_shows_the_plaintext_but_shows_the_new_fields() {
    let e = Encrypt {
        key_id: "k",
        plaintext: b"very secret",
        grant_tokens: vec!["tok"],
        dry_run: true,
        ..Encrypt::default()
    };
    let shown = format!("{e:?}");
    assert!(!shown.contains("very secret"), "{shown}");
    assert!(
        shown.contains("grant_tokens: [\"tok\"]") && shown.contains("dry_run: true"),
        "{shown}"
    );
}

#[test]
fn operation_names_are_aws_names() {
    let b = Bag {
        which: 0,
        key_id: "k".into(),
        opt: None,
        policy: "{}".into(),
        name: None,
        principal: "uid:1".into(),
        other: None,
        limit: 0,
        flag: false,
        operations: vec![GrantOperation::Decrypt],
        constraints: None,
        tokens: vec![],
    };
    let names: Vec<&str> = (0..BAG_OPS)
        .map(|which| Bag { which, ..b.clone() }.op().name())
        .collect();
    assert_eq!(
        names,
        [
            "PutKeyPolicy",
            "GetKeyPolicy",
            "ListKeyPolicies",
            "CreateGrant",
            "ListGrants",
            "ListRetirableGrants",
            "RetireGrant",
            "RevokeGrant",
        ]
    );
    let ops: Vec<&str> = GrantOperation::ALL.iter().map(|o| o.name()).collect();
    assert_eq!(
        ops,
        [
            "Decrypt",
            "Encrypt",
            "GenerateDataKey",
            "GenerateDataKeyWithoutPlaintext",
            "ReEncryptFrom",
            "ReEncryptTo",
            "Sign",
            "Verify",
            "GetPublicKey",
            "CreateGrant",
            "RetireGrant",
            "DescribeKey",
            "GenerateDataKeyPair",
            "GenerateDataKeyPairWithoutPlaintext",
            "GenerateMac",
            "VerifyMac",
            "DeriveSharedSecret",
        ]
    );
    assert_eq!(
        GrantOperation::from_name("ReEncryptFrom"),
        Some(GrantOperation::ReEncryptFrom)
    );
    assert_eq!(GrantOperation::from_name("decrypt"), None);
    for (kind, name) in [
        (
            ErrorKind::MalformedPolicyDocument,
            "MalformedPolicyDocumentException",
        ),
        (ErrorKind::DryRunOperation, "DryRunOperationException"),
        (ErrorKind::InvalidGrantToken, "InvalidGrantTokenException"),
        (ErrorKind::InvalidGrantId, "InvalidGrantIdException"),
    ] {
        assert_eq!(kind.name(), name);
        assert_eq!(ErrorKind::from_name(name), kind);
        assert!(!kind.is_retryable());
    }
}

// ------------------------------------------------------------- golden frames

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/access")
}

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
            "{}: {e}; write it with KMS_UPDATE_GOLDEN=1 cargo test -p kms-proto --test access golden",
            path.display()
        )
    });
    assert!(
        want == wire,
        "{name}: the encoding changed (the wire format is pinned). If the change is \
         intended (and compatible), rewrite with KMS_UPDATE_GOLDEN=1."
    );
}

const GOLDEN_KEY: &str = "1234abcd-12ab-34cd-56ef-1234567890ab";

/// Every access-control operation once, in union order, then the older
/// requests with their access-control fields set.
fn golden_request() -> Request<'static> {
    let ops = vec![
        Operation::PutKeyPolicy(PutKeyPolicy {
            key_id: GOLDEN_KEY,
            policy_name: Some("default"),
            policy: r#"{"Version":"2012-10-17","Statement":[]}"#,
            bypass_policy_lockout_safety_check: true,
        }),
        Operation::GetKeyPolicy(GetKeyPolicy {
            key_id: GOLDEN_KEY,
            policy_name: None,
        }),
        Operation::ListKeyPolicies(ListKeyPolicies {
            key_id: GOLDEN_KEY,
            limit: 10,
            marker: Some("m1"),
        }),
        Operation::CreateGrant(CreateGrant {
            key_id: GOLDEN_KEY,
            grantee_principal: "uid:1000",
            retiring_principal: Some("uid:0"),
            operations: vec![GrantOperation::Decrypt, GrantOperation::GenerateDataKey],
            constraints: Some(GrantConstraints {
                encryption_context_subset: vec![("tenant", "acme")],
                encryption_context_equals: vec![],
            }),
            grant_tokens: vec!["token-1"],
            name: Some("golden-grant"),
            dry_run: true,
        }),
        Operation::ListGrants(ListGrants {
            key_id: GOLDEN_KEY,
            limit: 50,
            marker: None,
            grant_id: Some("g1"),
            grantee_principal: Some("uid:1000"),
        }),
        Operation::ListRetirableGrants(ListRetirableGrants {
            retiring_principal: "uid:0",
            limit: 0,
            marker: Some("m2"),
        }),
        Operation::RetireGrant(RetireGrant {
            grant_token: Some("token-1"),
            key_id: None,
            grant_id: None,
            dry_run: false,
        }),
        Operation::RevokeGrant(RevokeGrant {
            key_id: GOLDEN_KEY,
            grant_id: "g1",
            dry_run: true,
        }),
        Operation::CreateKey(CreateKey {
            description: "golden key",
            policy: Some("{}"),
            bypass_policy_lockout_safety_check: true,
            ..CreateKey::default()
        }),
        Operation::DescribeKey(DescribeKey {
            key_id: GOLDEN_KEY,
            grant_tokens: vec!["token-1"],
        }),
        Operation::Encrypt(Encrypt {
            key_id: GOLDEN_KEY,
            plaintext: b"attack at dawn",
            context: vec![("a", "b")],
            grant_tokens: vec!["token-1", "token-2"],
            dry_run: true,
        }),
        Operation::Decrypt(Decrypt {
            ciphertext_blob: &[0xc1, 0xc2],
            key_id: None,
            context: vec![],
            grant_tokens: vec!["token-1"],
            dry_run: true,
        }),
        Operation::ReEncrypt(ReEncrypt {
            ciphertext_blob: &[0xc1, 0xc2],
            destination_key_id: GOLDEN_KEY,
            grant_tokens: vec!["token-1"],
            dry_run: true,
            ..ReEncrypt::default()
        }),
        Operation::GenerateDataKey(GenerateDataKey {
            key_id: GOLDEN_KEY,
            key_spec: Some(DataKeySpec::Aes256),
            grant_tokens: vec!["token-1"],
            dry_run: true,
            ..GenerateDataKey::default()
        }),
        Operation::GenerateDataKeyWithoutPlaintext(GenerateDataKey {
            key_id: GOLDEN_KEY,
            number_of_bytes: Some(24),
            grant_tokens: vec!["token-1"],
            dry_run: false,
            ..GenerateDataKey::default()
        }),
    ];
    Request {
        request_id: 0x3132_3334_3536_3738,
        body: RequestBody::Batch(ops.into_iter().map(Ok).collect()),
    }
}

/// Every access-control output once, in union order, then the new errors.
fn golden_response() -> Response {
    let grant = GrantListEntry {
        key_id: format!("arn:aws:kms:us-east-1:000000000000:key/{GOLDEN_KEY}"),
        grant_id: "g1".into(),
        name: Some("golden-grant".into()),
        creation_date: 1_700_000_000,
        grantee_principal: "uid:1000".into(),
        retiring_principal: Some("uid:0".into()),
        issuing_account: "local".into(),
        operations: vec![GrantOperation::Decrypt, GrantOperation::RetireGrant],
        constraints: Some(OwnedGrantConstraints {
            encryption_context_subset: vec![],
            encryption_context_equals: vec![("tenant".into(), "acme".into())],
        }),
    };
    let items = vec![
        Ok(Output::PutKeyPolicy),
        Ok(Output::GetKeyPolicy(GetKeyPolicyOutput {
            policy: r#"{"Version":"2012-10-17","Statement":[]}"#.into(),
            policy_name: "default".into(),
        })),
        Ok(Output::ListKeyPolicies(ListKeyPoliciesOutput {
            policy_names: vec!["default".into()],
            next_marker: None,
            truncated: false,
        })),
        Ok(Output::CreateGrant(CreateGrantOutput {
            grant_token: "token-1".into(),
            grant_id: "g1".into(),
        })),
        Ok(Output::ListGrants(ListGrantsOutput {
            grants: vec![
                grant.clone(),
                GrantListEntry {
                    grant_id: "g2".into(),
                    name: None,
                    retiring_principal: None,
                    constraints: None,
                    ..grant.clone()
                },
            ],
            next_marker: Some("g2".into()),
            truncated: true,
        })),
        Ok(Output::ListRetirableGrants(ListGrantsOutput {
            grants: vec![grant],
            next_marker: None,
            truncated: false,
        })),
        Ok(Output::RetireGrant),
        Ok(Output::RevokeGrant),
        Err(KmsError::new(
            ErrorKind::MalformedPolicyDocument,
            "Statement[0].Effect: expected Allow or Deny",
        )),
        Err(KmsError::new(
            ErrorKind::DryRunOperation,
            "the request would have succeeded",
        )),
        Err(KmsError::new(
            ErrorKind::InvalidGrantToken,
            "GrantTokens[0] is not a grant token",
        )),
        Err(KmsError::new(ErrorKind::InvalidGrantId, "no grant g9")),
    ];
    Response {
        request_id: 0x3132_3334_3536_3738,
        body: ResponseBody::Batch(items),
    }
}

#[test]
fn golden_access_request() {
    let req = golden_request();
    let wire = encode_req(&req);
    check_golden("request_batch.bin", &wire);
    assert_eq!(
        decode_request(&single_frame(&wire), &DecodeLimits::default()).unwrap(),
        req
    );
}

#[test]
fn golden_access_response() {
    let resp = golden_response();
    let wire = encode_resp(&resp);
    check_golden("response_batch.bin", &wire);
    assert_eq!(
        decode_response(&single_frame(&wire), DEFAULT_MAX_FRAME).unwrap(),
        resp
    );
}

/// The committed access golden files are exactly the ones checked here.
#[test]
fn golden_access_files_are_all_checked() {
    if updating_golden() {
        return;
    }
    let mut names: Vec<String> = std::fs::read_dir(golden_dir())
        .expect("proto/tests/golden/access exists")
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["request_batch.bin", "response_batch.bin"]);
}
