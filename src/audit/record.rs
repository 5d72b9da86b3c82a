//! Audit records of request frames, built on the data path: one record per
//! frame, CloudTrail's field names where one exists (docs/audit.md lists
//! them with their sources). A record is handed to the writer without its
//! closing brace: the writer appends the chain fields (`eventID`,
//! `sequenceNumber`, `previousHash`) and hashes the line.
//!
//! What a record never holds: plaintext, ciphertext, key material, grant
//! tokens, import tokens or wrapped material, key policies' text. What it
//! holds in clear, as CloudTrail does: key ids as the caller gave them and
//! encryption contexts (AWS warns that they "may be displayed in plaintext
//! in CloudTrail logs").

use super::json::{self, field_str, field_u64, key};
use super::note::Note;
use crate::identity::Identity;
use crate::service::Arns;
use kms_proto::{KmsError, Operation, Output, Request, RequestBody, ResponseBody};
use std::time::SystemTime;

/// CloudTrail's current event version (its record format).
const EVENT_VERSION: &str = "1.08";
/// Where a record says it comes from: KMS's, so that tools that filter
/// CloudTrail on KMS's events read kmsd's (kmsd's own fields are in
/// `additionalEventData`).
pub const EVENT_SOURCE: &str = "kms.amazonaws.com";

/// Most distinct entries a batch's record lists; items past them that
/// match none are counted in an overflow entry (a 1,024-item batch of
/// distinct contexts still gets a bounded record).
const MAX_ENTRIES: usize = 64;

/// The common head: `{"eventVersion":...,"userIdentity":{...}`.
fn head(out: &mut Vec<u8>, caller: &Identity, request_id: u64, event_name: &str, read_only: bool) {
    out.extend_from_slice(b"{\"eventVersion\":\"");
    out.extend_from_slice(EVENT_VERSION.as_bytes());
    out.extend_from_slice(b"\",\"eventTime\":");
    json::time(out, SystemTime::now());
    out.extend_from_slice(b",\"eventSource\":\"");
    out.extend_from_slice(EVENT_SOURCE.as_bytes());
    out.extend_from_slice(b"\",\"eventType\":\"AwsApiCall\"");
    field_str(out, "eventName", event_name);
    out.extend_from_slice(if read_only {
        b",\"readOnly\":true"
    } else {
        b",\"readOnly\":false"
    });
    out.extend_from_slice(b",\"requestID\":\"");
    json::uint(out, request_id);
    out.extend_from_slice(b"\",\"userIdentity\":{\"type\":\"UnixProcess\",\"principalId\":\"uid:");
    json::uint(out, u64::from(caller.uid));
    out.push(b'"');
    field_u64(out, "uid", u64::from(caller.uid));
    field_u64(out, "gid", u64::from(caller.gid));
    out.extend_from_slice(b",\"pid\":");
    json::int(out, i64::from(caller.pid));
    if let Some(unit) = caller.details.as_deref().and_then(|d| d.unit.as_deref()) {
        field_str(out, "unit", unit);
    }
    out.push(b'}');
}

/// Whether `op` changes nothing (CloudTrail's `readOnly`: the
/// cryptographic operations, descriptions and lists are read-only).
pub fn read_only(op: &Operation<'_>) -> bool {
    use Operation as O;
    !matches!(
        op,
        O::CreateKey(_)
            | O::UpdateKeyDescription(_)
            | O::TagResource(_)
            | O::UntagResource(_)
            | O::CreateAlias(_)
            | O::UpdateAlias(_)
            | O::DeleteAlias(_)
            | O::EnableKey(_)
            | O::DisableKey(_)
            | O::ScheduleKeyDeletion(_)
            | O::CancelKeyDeletion(_)
            | O::EnableKeyRotation(_)
            | O::DisableKeyRotation(_)
            | O::RotateKeyOnDemand(_)
            | O::GetParametersForImport(_)
            | O::ImportKeyMaterial(_)
            | O::DeleteImportedKeyMaterial(_)
            | O::PutKeyPolicy(_)
            | O::CreateGrant(_)
            | O::RetireGrant(_)
            | O::RevokeGrant(_)
    )
}

fn context(out: &mut Vec<u8>, name: &str, pairs: &[(&str, &str)]) {
    if pairs.is_empty() {
        return;
    }
    out.push(b',');
    key(out, name);
    out.push(b'{');
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json::string(out, k);
        out.push(b':');
        json::string(out, v);
    }
    out.push(b'}');
}

/// `op`'s non-secret parameters as CloudTrail's `requestParameters`
/// object (AWS's names, first letter lower case). `keyId`, when the
/// operation has one, comes first; `with_key` false leaves it out (a
/// batch's shared parameters, see `batch`).
fn params(out: &mut Vec<u8>, op: &Operation<'_>, with_key: bool) {
    use Operation as O;
    out.push(b'{');
    let start = out.len();
    if let Some(k) = key_param(op).filter(|_| with_key) {
        field_str(out, "keyId", k);
    }
    let data_key = |out: &mut Vec<u8>, g: &kms_proto::GenerateDataKey<'_>| {
        if let Some(n) = g.number_of_bytes {
            field_u64(out, "numberOfBytes", u64::from(n));
        }
        if let Some(s) = g.key_spec {
            field_str(out, "keySpec", if s.num_bytes() == 16 { "AES_128" } else { "AES_256" });
        }
        context(out, "encryptionContext", &g.context);
        if g.dry_run {
            out.extend_from_slice(b",\"dryRun\":true");
        }
    };
    match op {
        O::GenerateDataKey(g) | O::GenerateDataKeyWithoutPlaintext(g) => data_key(out, g),
        O::Encrypt(e) => {
            out.extend_from_slice(b",\"encryptionAlgorithm\":\"SYMMETRIC_DEFAULT\"");
            context(out, "encryptionContext", &e.context);
            if e.dry_run {
                out.extend_from_slice(b",\"dryRun\":true");
            }
        }
        O::Decrypt(d) => {
            out.extend_from_slice(b",\"encryptionAlgorithm\":\"SYMMETRIC_DEFAULT\"");
            context(out, "encryptionContext", &d.context);
            if d.dry_run {
                out.extend_from_slice(b",\"dryRun\":true");
            }
        }
        O::ReEncrypt(r) => {
            if let Some(k) = r.source_key_id {
                field_str(out, "sourceKeyId", k);
            }
            field_str(out, "destinationKeyId", r.destination_key_id);
            context(out, "sourceEncryptionContext", &r.source_context);
            context(out, "destinationEncryptionContext", &r.destination_context);
            if r.dry_run {
                out.extend_from_slice(b",\"dryRun\":true");
            }
        }
        O::GenerateRandom(g) => field_u64(out, "numberOfBytes", u64::from(g.number_of_bytes)),
        O::CreateKey(c) => {
            field_str(out, "description", c.description);
            field_str(
                out,
                "origin",
                match c.origin {
                    kms_proto::Origin::Kmsd => "AWS_KMS",
                    kms_proto::Origin::External => "EXTERNAL",
                    kms_proto::Origin::Hsm => "AWS_CLOUDHSM",
                },
            );
            if c.policy.is_some() {
                // The document itself is not recorded (its size is
                // bounded, but a record per CreateKey need not carry it).
                out.extend_from_slice(b",\"policyGiven\":true");
            }
        }
        O::CreateAlias(a) => {
            field_str(out, "aliasName", a.alias_name);
            field_str(out, "targetKeyId", a.target_key_id);
        }
        O::UpdateAlias(a) => {
            field_str(out, "aliasName", a.alias_name);
            field_str(out, "targetKeyId", a.target_key_id);
        }
        O::DeleteAlias(a) => field_str(out, "aliasName", a.alias_name),
        O::ScheduleKeyDeletion(s) => {
            if let Some(d) = s.pending_window_in_days {
                field_u64(out, "pendingWindowInDays", u64::from(d));
            }
        }
        O::CreateGrant(g) => {
            field_str(out, "granteePrincipal", g.grantee_principal);
            if let Some(r) = g.retiring_principal {
                field_str(out, "retiringPrincipal", r);
            }
            out.extend_from_slice(b",\"operations\":[");
            for (i, o) in g.operations.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                json::string(out, o.name());
            }
            out.push(b']');
            if let Some(n) = g.name {
                field_str(out, "name", n);
            }
        }
        // Never RetireGrant's token: it is a bearer credential.
        O::RetireGrant(r) => {
            if let Some(g) = r.grant_id {
                field_str(out, "grantId", g);
            }
        }
        O::RevokeGrant(r) => field_str(out, "grantId", r.grant_id),
        O::ListRetirableGrants(l) => field_str(out, "retiringPrincipal", l.retiring_principal),
        _ => {}
    }
    // The fields above each start with a comma: drop the first.
    if out.len() > start && out[start] == b',' {
        out.remove(start);
    }
    out.push(b'}');
}

/// The request's `keyId` parameter as the caller gave it, if it has one.
fn key_param<'a>(op: &Operation<'a>) -> Option<&'a str> {
    use Operation as O;
    match op {
        O::GenerateDataKey(g) | O::GenerateDataKeyWithoutPlaintext(g) => Some(g.key_id),
        O::Encrypt(e) => Some(e.key_id),
        O::Decrypt(d) => d.key_id,
        O::ScheduleKeyDeletion(s) => Some(s.key_id),
        O::CreateGrant(g) => Some(g.key_id),
        O::RetireGrant(r) => r.key_id,
        O::RevokeGrant(r) => Some(r.key_id),
        O::ListAliases(l) => l.key_id,
        op => named_key(op),
    }
}

/// The KeyId an operation's request names, for those whose only recorded
/// parameter it is.
fn named_key<'a>(op: &Operation<'a>) -> Option<&'a str> {
    use Operation as O;
    Some(match op {
        O::DescribeKey(r) => r.key_id,
        O::UpdateKeyDescription(r) => r.key_id,
        O::TagResource(r) => r.key_id,
        O::UntagResource(r) => r.key_id,
        O::ListResourceTags(r) => r.key_id,
        O::EnableKey(r) => r.key_id,
        O::DisableKey(r) => r.key_id,
        O::CancelKeyDeletion(r) => r.key_id,
        O::EnableKeyRotation(r) => r.key_id,
        O::DisableKeyRotation(r) => r.key_id,
        O::GetKeyRotationStatus(r) => r.key_id,
        O::RotateKeyOnDemand(r) => r.key_id,
        O::ListKeyRotations(r) => r.key_id,
        O::GetParametersForImport(r) => r.key_id,
        O::ImportKeyMaterial(r) => r.key_id,
        O::DeleteImportedKeyMaterial(r) => r.key_id,
        O::PutKeyPolicy(r) => r.key_id,
        O::GetKeyPolicy(r) => r.key_id,
        O::ListKeyPolicies(r) => r.key_id,
        O::ListGrants(r) => r.key_id,
        _ => return None,
    })
}

/// The key identifier a request gave (a key id, key ARN, alias name or
/// alias ARN), if it gave one (ReEncrypt: its destination).
fn given_key<'a>(op: &Operation<'a>) -> Option<&'a str> {
    use Operation as O;
    match op {
        O::GenerateDataKey(g) | O::GenerateDataKeyWithoutPlaintext(g) => Some(g.key_id),
        O::Encrypt(e) => Some(e.key_id),
        O::Decrypt(d) => d.key_id,
        O::ReEncrypt(r) => Some(r.destination_key_id),
        op => named_key(op),
    }
}

/// The alias name a request's key identifier used, if any.
fn alias_used<'a>(op: &Operation<'a>) -> Option<&'a str> {
    crate::service::access::request_alias(given_key(op)?)
}

/// Whether the item named its key (the note's) by the key id itself.
fn named_by_id(op: Option<&Operation<'_>>, note: &Note) -> bool {
    let (Some(named), Some(id)) = (op.and_then(given_key), note.key) else {
        return false;
    };
    let mut text = [0u8; 36];
    named.as_bytes() == uuid::Uuid::from_bytes(id).hyphenated().encode_lower(&mut text).as_bytes()
}

/// `,"resources":[...]` for the key the item's note names, else the key
/// a CreateKey made.
fn resources(out: &mut Vec<u8>, arns: &Arns, note: &Note, outcome: &Result<Output, KmsError>) {
    let Some(id) = note.key.or_else(|| match outcome {
        Ok(Output::CreateKey(m)) => uuid::Uuid::parse_str(&m.key_id).ok().map(|u| *u.as_bytes()),
        _ => None,
    }) else {
        return;
    };
    out.extend_from_slice(b",\"resources\":[{\"ARN\":\"");
    out.extend_from_slice(arns.key_arn_prefix().as_bytes());
    let mut text = [0u8; 36];
    out.extend_from_slice(
        uuid::Uuid::from_bytes(id)
            .hyphenated()
            .encode_lower(&mut text)
            .as_bytes(),
    );
    out.extend_from_slice(b"\",\"type\":\"AWS::KMS::Key\",\"accountId\":\"");
    out.extend_from_slice(arns.account_id().as_bytes());
    out.extend_from_slice(b"\"}]");
}

fn error(out: &mut Vec<u8>, e: &KmsError) {
    field_str(out, "errorCode", e.kind.name());
    field_str(out, "errorMessage", &e.message);
}

/// kmsd's fields of one item (inside `additionalEventData` or a batch
/// entry): the key version, the alias used, the policy decision; those a
/// batch's entries all share are in its `common` instead.
fn kmsd_fields(out: &mut Vec<u8>, op: Option<&Operation<'_>>, note: &Note, shared: &Shared) {
    if note.version != 0 && !shared.version {
        field_u64(out, "keyVersion", u64::from(note.version));
    }
    if let Some(a) = op.and_then(alias_used) {
        field_str(out, "aliasUsed", a);
    }
    if let Some(d) = note.decision.name().filter(|_| !shared.decision) {
        field_str(out, "policyDecision", d);
    }
}

/// Which of an entry's fields every entry of a batch shares, written once
/// in the record's `common`: the request parameters but for keyId, the
/// key version, the policy decision. A single request shares nothing.
#[derive(Default)]
struct Shared {
    params: bool,
    version: bool,
    decision: bool,
}

impl Shared {
    /// What the entries' representative items (operation, note) share;
    /// nothing for fewer than two entries (`common` would only add bytes).
    fn of<'o, 'a: 'o>(
        mut reps: impl Iterator<Item = (&'o Result<Operation<'a>, KmsError>, &'o Note)>,
        scratch: &mut (Vec<u8>, Vec<u8>),
    ) -> Shared {
        let Some((op0, n0)) = reps.next() else {
            return Shared::default();
        };
        let mut s = Shared {
            params: op0.is_ok(),
            version: n0.version != 0,
            decision: n0.decision.name().is_some(),
        };
        let mut others = 0;
        for (op, n) in reps {
            others += 1;
            s.params &= match (op0, op) {
                (Ok(a), Ok(b)) => same_but_key(a, b, scratch),
                _ => false,
            };
            s.version &= n.version == n0.version;
            s.decision &= n.decision == n0.decision;
        }
        if others == 0 {
            return Shared::default();
        }
        s
    }

    fn any(&self) -> bool {
        self.params || self.version || self.decision
    }
}

/// A buffer for the record of a frame of `items` operations, sized for
/// the common record at once: a single operation's record is about 850
/// bytes with a short encryption context, a batch's about 700 plus 100 per
/// distinct entry when they differ only by key (`common`). Written records' buffers are reused (up to 64 a thread,
/// see `recycle`): a fresh 4 KiB buffer per batch, grown byte by byte,
/// cost more in malloc than the record's JSON (docs/perf/audit.md).
/// Records hold no secret, so a reused buffer needs no wiping.
pub fn buffer(items: usize) -> Vec<u8> {
    let want = if items <= 1 { 1024 } else { 768 + 112 * items.min(16) };
    match POOL.with_borrow_mut(Vec::pop) {
        Some(mut b) => {
            b.clear();
            b.reserve(want);
            b
        }
        None => Vec::with_capacity(want),
    }
}

/// Gives a written record's buffer back to this thread's pool.
pub(super) fn recycle(b: Vec<u8>) {
    if b.capacity() <= POOL_BUFFER_MOST {
        POOL.with_borrow_mut(|p| {
            if p.len() < POOL_MOST {
                p.push(b);
            }
        });
    }
}

/// Buffers a thread keeps, and the largest it keeps.
const POOL_MOST: usize = 64;
const POOL_BUFFER_MOST: usize = 64 * 1024;

thread_local! {
    static POOL: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The record of a decoded request frame that ran (each item to its
/// outcome): a single request's record is flat, CloudTrail-shaped; a
/// batch's lists its distinct items with a count each. `notes` has one
/// note per item.
pub fn request(
    out: &mut Vec<u8>,
    caller: &Identity,
    arns: &Arns,
    request: &Request<'_>,
    body: &ResponseBody,
    notes: &[Note],
) {
    match (&request.body, body) {
        (RequestBody::Single(op), ResponseBody::Single(outcome)) => {
            let note = notes.first().copied().unwrap_or_default();
            single(out, caller, arns, request.request_id, op.as_ref().ok(), outcome, &note)
        }
        (RequestBody::Batch(ops), ResponseBody::Batch(outcomes)) => {
            batch(out, caller, arns, request.request_id, ops, outcomes, notes)
        }
        _ => unreachable!("an answer has the shape of its request"),
    }
}

fn single(
    out: &mut Vec<u8>,
    caller: &Identity,
    arns: &Arns,
    request_id: u64,
    op: Option<&Operation<'_>>,
    outcome: &Result<Output, KmsError>,
    note: &Note,
) {
    let name = op.map_or("Unknown", Operation::name);
    head(out, caller, request_id, name, op.is_none_or(read_only));
    out.push(b',');
    key(out, "requestParameters");
    match op {
        Some(op) => params(out, op, true),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"responseElements\":null");
    resources(out, arns, note, outcome);
    if let Err(e) = outcome {
        error(out, e);
    }
    out.extend_from_slice(b",\"additionalEventData\":{\"connection\":");
    json::uint(out, caller.conn);
    kmsd_fields(out, op, note, &Shared::default());
    out.push(b'}');
}

/// Whether two items of a batch make the same entry: same operation, key
/// as given, parameters, key and version, decision and outcome.
fn same_entry(
    a: (&Result<Operation<'_>, KmsError>, &Result<Output, KmsError>, &Note),
    b: (&Result<Operation<'_>, KmsError>, &Result<Output, KmsError>, &Note),
    scratch: &mut (Vec<u8>, Vec<u8>),
) -> bool {
    if a.2 != b.2 {
        return false;
    }
    match (a.1, b.1) {
        (Ok(_), Ok(_)) => {}
        (Err(x), Err(y)) if x == y => {}
        _ => return false,
    }
    match (a.0, b.0) {
        (Err(x), Err(y)) => x == y,
        (Ok(x), Ok(y)) => key_param(x) == key_param(y) && same_but_key(x, y, scratch),
        _ => false,
    }
}

/// Whether two operations have the same recorded parameters but for
/// keyId. The hot operations compare field by field (a 1,024-item batch
/// compares in a few microseconds); the others compare their serialized
/// parameters.
fn same_but_key(a: &Operation<'_>, b: &Operation<'_>, scratch: &mut (Vec<u8>, Vec<u8>)) -> bool {
    use Operation as O;
    match (a, b) {
        (O::GenerateDataKey(x), O::GenerateDataKey(y))
        | (O::GenerateDataKeyWithoutPlaintext(x), O::GenerateDataKeyWithoutPlaintext(y)) => {
            x.number_of_bytes == y.number_of_bytes
                && x.key_spec == y.key_spec
                && x.context == y.context
                && x.dry_run == y.dry_run
        }
        (O::Encrypt(x), O::Encrypt(y)) => x.context == y.context && x.dry_run == y.dry_run,
        (O::Decrypt(x), O::Decrypt(y)) => x.context == y.context && x.dry_run == y.dry_run,
        (x, y) if std::mem::discriminant(x) == std::mem::discriminant(y) => {
            scratch.0.clear();
            scratch.1.clear();
            params(&mut scratch.0, x, false);
            params(&mut scratch.1, y, false);
            scratch.0 == scratch.1
        }
        _ => false,
    }
}

/// What alike items share for sure (so alike items land in one slot of
/// the batch's table): their note and their operation.
fn entry_hash(op: &Result<Operation<'_>, KmsError>, note: &Note) -> u64 {
    // A multiplicative mix is enough: the table is tiny and every hit is
    // confirmed by `same_entry` (SipHash cost more than the comparisons).
    let k = note.key.unwrap_or_default();
    let k0 = u64::from_le_bytes(k[..8].try_into().expect("8 bytes"));
    let k1 = u64::from_le_bytes(k[8..].try_into().expect("8 bytes"));
    let op = op.as_ref().map_or(u64::MAX, |o| o.index() as u64);
    let x = k0 ^ k1.rotate_left(29) ^ (u64::from(note.version) << 40) ^ ((note.decision as u64) << 56) ^ op;
    x.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32
}

fn batch(
    out: &mut Vec<u8>,
    caller: &Identity,
    arns: &Arns,
    request_id: u64,
    ops: &[Result<Operation<'_>, KmsError>],
    outcomes: &[Result<Output, KmsError>],
    notes: &[Note],
) {
    let first = ops.iter().find_map(|o| o.as_ref().ok());
    let common = first
        .filter(|f| {
            ops.iter().all(|o| {
                o.as_ref()
                    .is_ok_and(|o| std::mem::discriminant(o) == std::mem::discriminant(*f))
            })
        })
        .map_or("Batch", Operation::name);
    let read_only = ops.iter().all(|o| o.as_ref().is_ok_and(read_only));
    head(out, caller, request_id, common, read_only);
    out.extend_from_slice(
        b",\"requestParameters\":null,\"responseElements\":null,\"additionalEventData\":{\"connection\":",
    );
    json::uint(out, caller.conn);
    field_u64(out, "items", ops.len() as u64);
    // Entries: (representative item, count). Items join the entry of the
    // item before them when they can (the common case: a batch of alike
    // items is one comparison each), else the matching entry found through
    // a small table keyed by the item's note (key, version, decision) and
    // operation: a batch over many keys costs one comparison per item,
    // not one per entry (this ran at ~5% of batched GenerateDataKey's
    // time over 16 keys with a linear search).
    let mut entries: Vec<(usize, u64)> = Vec::new();
    let mut overflow = 0u64;
    let mut scratch = (Vec::new(), Vec::new());
    let none = Note::default();
    let item = |i: usize| (&ops[i], &outcomes[i], notes.get(i).unwrap_or(&none));
    // Open addressing over entry numbers (+1; 0 is free): twice
    // MAX_ENTRIES slots, so a probe always ends.
    let mut table = [0u8; 2 * MAX_ENTRIES];
    let mut last: Option<usize> = None;
    for i in 0..ops.len().min(outcomes.len()) {
        let (op, oc, note) = item(i);
        if let Some(l) = last {
            let (rep, _) = entries[l];
            if same_entry((op, oc, note), item(rep), &mut scratch) {
                entries[l].1 += 1;
                continue;
            }
        }
        let mut slot = entry_hash(op, note) as usize % table.len();
        let found = loop {
            match table[slot] {
                0 => break None,
                e => {
                    let e = e as usize - 1;
                    if same_entry((op, oc, note), item(entries[e].0), &mut scratch) {
                        break Some(e);
                    }
                }
            }
            slot = (slot + 1) % table.len();
        };
        match found {
            Some(e) => {
                entries[e].1 += 1;
                last = Some(e);
            }
            None if entries.len() < MAX_ENTRIES => {
                entries.push((i, 1));
                table[slot] = entries.len() as u8;
                last = Some(entries.len() - 1);
            }
            None => overflow += 1,
        }
    }
    // What every entry shares is written once, in `common`: the
    // parameters but for keyId, the key version, the policy decision. A
    // batch over 16 keys repeated ~110 of each entry's ~200 bytes, and
    // the log's cost grows with its bytes (docs/perf/audit.md).
    let shared = Shared::of(
        entries.iter().map(|&(rep, _)| {
            let (op, _, note) = item(rep);
            (op, note)
        }),
        &mut scratch,
    );
    if shared.any() {
        let (op, _, note) = item(entries[0].0);
        out.extend_from_slice(b",\"common\":{");
        let start = out.len();
        if let (true, Ok(op)) = (shared.params, op) {
            out.extend_from_slice(b",\"requestParameters\":");
            params(out, op, false);
        }
        if shared.version {
            field_u64(out, "keyVersion", u64::from(note.version));
        }
        if let (true, Some(d)) = (shared.decision, note.decision.name()) {
            field_str(out, "policyDecision", d);
        }
        out.remove(start);
        out.push(b'}');
    }
    out.extend_from_slice(b",\"entries\":[");
    for (n, &(rep, count)) in entries.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        let (op, oc, note) = item(rep);
        out.extend_from_slice(b"{\"count\":");
        json::uint(out, count);
        field_u64(out, "firstItem", rep as u64);
        let op = op.as_ref().ok();
        // The record's eventName says it when every item shares it.
        if common == "Batch" {
            field_str(out, "eventName", op.map_or("Unknown", Operation::name));
        }
        match op {
            Some(op) if shared.params => {
                if let Some(k) = key_param(op) {
                    out.extend_from_slice(b",\"requestParameters\":{");
                    key(out, "keyId");
                    json::string(out, k);
                    out.push(b'}');
                }
            }
            Some(op) => {
                out.extend_from_slice(b",\"requestParameters\":");
                params(out, op, true);
            }
            None => out.extend_from_slice(b",\"requestParameters\":null"),
        }
        // The key's ARN only when the item did not name the key by its id
        // (an alias or an ARN): else it is the id's ARN, and a batch over
        // many keys would carry each id twice (the log's bytes are what
        // auditing costs: docs/perf/audit.md).
        if !named_by_id(op, note) {
            resources(out, arns, note, oc);
        }
        if let Err(e) = oc {
            error(out, e);
        }
        kmsd_fields(out, op, note, &shared);
        out.push(b'}');
    }
    out.push(b']');
    if overflow > 0 {
        field_u64(out, "itemsInNoEntry", overflow);
    }
    out.push(b'}');
}

/// The record of a frame answered with one error and not run (undecodable,
/// refused for overload, quota or a failed key load), or of a framing
/// error (`request_id` 0).
pub fn refusal(
    out: &mut Vec<u8>,
    caller: &Identity,
    request_id: u64,
    event_name: &str,
    items: usize,
    e: &KmsError,
) {
    head(out, caller, request_id, event_name, true);
    out.extend_from_slice(b",\"requestParameters\":null,\"responseElements\":null");
    error(out, e);
    out.extend_from_slice(b",\"additionalEventData\":{\"connection\":");
    json::uint(out, caller.conn);
    field_u64(out, "items", items as u64);
    out.extend_from_slice(b",\"run\":false}");
}

/// The event name of a request that was not run: its operation's (a
/// batch's when all its items are one operation), else "Batch".
pub fn event_name(request: &Request<'_>) -> &'static str {
    match &request.body {
        RequestBody::Single(Ok(op)) => op.name(),
        RequestBody::Single(Err(_)) => "Unknown",
        RequestBody::Batch(items) => {
            let mut names = items.iter().map(|o| o.as_ref().map_or("Unknown", Operation::name));
            match names.next() {
                Some(n) if names.all(|m| m == n) => n,
                _ => "Batch",
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use super::super::note::Decision;
    use kms_proto::GenerateDataKey;
    use serde_json::{Value, json};

    const KEYS: [&str; 4] = [
        "9bae6554-0138-494c-8c99-c052b437f442",
        "fe8cd8a1-57e2-4676-b78d-9c3d5a77559f",
        "771d42b1-2caa-493b-861c-2aa7a11d9cb7",
        "8739f1c7-83b5-4a26-a87a-02f26ca1d37e",
    ];

    fn caller() -> Identity {
        Identity { uid: 1000, gid: 1000, pid: 42, conn: 7, details: None }
    }

    fn arns() -> Arns {
        Arns::new("us-east-1", "000000000000").unwrap()
    }

    fn gdk<'a>(key_id: &'a str, context: &[(&'a str, &'a str)]) -> Result<Operation<'a>, KmsError> {
        Ok(Operation::GenerateDataKey(GenerateDataKey {
            key_id,
            number_of_bytes: Some(32),
            context: context.to_vec(),
            ..Default::default()
        }))
    }

    fn note(key: &str, version: u32) -> Note {
        Note {
            decision: Decision::Allow,
            key: Some(*uuid::Uuid::parse_str(key).unwrap().as_bytes()),
            version,
        }
    }

    /// The record as a reader sees it (the writer closes it after the
    /// chain fields).
    fn parse(mut out: Vec<u8>) -> Value {
        out.push(b'}');
        serde_json::from_slice(&out).unwrap()
    }

    fn batch_record(ops: &[Result<Operation<'_>, KmsError>], notes: &[Note]) -> Value {
        let outcomes: Vec<_> = ops.iter().map(|_| Ok(Output::EnableKey)).collect();
        let mut out = Vec::new();
        batch(&mut out, &caller(), &arns(), 9, ops, &outcomes, notes);
        parse(out)
    }

    /// An entry as if nothing were shared: `common` laid under it, its
    /// requestParameters merged one level down.
    fn expand(common: &Value, entry: &Value) -> Value {
        let mut e = entry.clone();
        let Some(c) = common.as_object() else { return e };
        for (k, v) in c {
            if k == "requestParameters" {
                let mut p = v.as_object().unwrap().clone();
                if let Some(own) = entry.get(k) {
                    p.extend(own.as_object().unwrap().clone());
                }
                e[k] = Value::Object(p);
            } else {
                e[k] = v.clone();
            }
        }
        e
    }

    /// What a single request's record says of one item (its
    /// requestParameters and kmsd's fields).
    fn alone(op: &Result<Operation<'_>, KmsError>, note: &Note) -> (Value, Value) {
        let mut out = Vec::new();
        single(&mut out, &caller(), &arns(), 1, op.as_ref().ok(), &Ok(Output::EnableKey), note);
        let v = parse(out);
        (v["requestParameters"].clone(), v["additionalEventData"].clone())
    }

    #[test]
    fn a_batch_over_many_keys_writes_what_its_entries_share_once() {
        let ctx = [("tenant", "a")];
        let ops: Vec<_> = (0..64).map(|i| gdk(KEYS[i % 4], &ctx)).collect();
        let notes: Vec<_> = (0..64).map(|i| note(KEYS[i % 4], 1)).collect();
        let r = batch_record(&ops, &notes);
        let data = &r["additionalEventData"];
        assert_eq!(
            data["common"],
            json!({
                "requestParameters": {"numberOfBytes": 32, "encryptionContext": {"tenant": "a"}},
                "keyVersion": 1,
                "policyDecision": "Allow",
            })
        );
        let entries = data["entries"].as_array().unwrap();
        assert_eq!(entries.len(), 4);
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(e, &json!({"count": 16, "firstItem": i, "requestParameters": {"keyId": KEYS[i]}}));
            // Expanded, an entry says what the item's own record says.
            let (params, fields) = alone(&ops[i], &notes[i]);
            let full = expand(&data["common"], e);
            assert_eq!(full["requestParameters"], params);
            assert_eq!(full["keyVersion"], fields["keyVersion"]);
            assert_eq!(full["policyDecision"], fields["policyDecision"]);
        }
    }

    #[test]
    fn what_differs_between_entries_stays_in_each() {
        let (a, b) = ([("tenant", "a")], [("tenant", "b")]);
        let ops = [gdk(KEYS[0], &a), gdk(KEYS[1], &b), gdk(KEYS[0], &a)];
        let notes = [note(KEYS[0], 1), note(KEYS[1], 2), note(KEYS[0], 1)];
        let r = batch_record(&ops, &notes);
        // Contexts and versions differ; the decision is shared.
        assert_eq!(r["additionalEventData"]["common"], json!({"policyDecision": "Allow"}));
        let entries = r["additionalEventData"]["entries"].as_array().unwrap();
        assert_eq!(entries.len(), 2);
        for (e, i) in entries.iter().zip([0, 1]) {
            let (params, fields) = alone(&ops[i], &notes[i]);
            assert_eq!(e["requestParameters"], params);
            assert_eq!(e["keyVersion"], fields["keyVersion"]);
            assert!(e.get("policyDecision").is_none(), "{e}");
        }
        assert_eq!(entries[0]["count"], 2);
    }

    #[test]
    fn a_batch_of_one_entry_has_no_common_part() {
        let ops: Vec<_> = (0..8).map(|_| gdk(KEYS[0], &[])).collect();
        let notes = vec![note(KEYS[0], 3); 8];
        let r = batch_record(&ops, &notes);
        assert!(r["additionalEventData"].get("common").is_none(), "{r}");
        let (params, fields) = alone(&ops[0], &notes[0]);
        let e = &r["additionalEventData"]["entries"][0];
        assert_eq!(e["count"], 8);
        assert_eq!(e["requestParameters"], params);
        assert_eq!(e["keyVersion"], fields["keyVersion"]);
        assert_eq!(e["policyDecision"], "Allow");
    }
}
