//! Answers: each [`Output`] written by hand as AWS's output shape (AWS's
//! service model for KMS, 2014-11-01), straight into the caller's buffer:
//! no intermediate value, no serde. Blobs are base64 (standard alphabet,
//! padded), timestamps epoch seconds (integers), enums AWS's names. Members
//! AWS has that kmsd does not know are left out, as AWS leaves out what does
//! not apply; those kmsd's keys always have are written as AWS would
//! (`KeyManager` CUSTOMER, `EncryptionAlgorithms` [SYMMETRIC_DEFAULT],
//! ...). Operations without output answer `{}`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use kms_proto::{
    AliasListEntry, GrantListEntry, KeyMetadata, KeySpec, KeyState, KeyUsage, MetricKind,
    MetricSample, Origin, Output, OwnedGrantConstraints,
};

/// Appends the JSON body of a successful `output` to `out`.
///
/// An answer that carries plaintext (GenerateDataKey, Decrypt,
/// GenerateRandom) is written after `out` has reserved
/// [`output_len_bound`] bytes, so `out` never grows (copying the plaintext
/// and freeing the old buffer unzeroed) while it holds it; `out` is the
/// caller's to zero. Other answers may grow `out`.
pub fn encode_output(output: &Output, out: &mut Vec<u8>) {
    out.reserve(output_len_bound(output));
    match output {
        Output::CreateKey(m) | Output::DescribeKey(m) => {
            let mut o = Obj::new(out);
            o.key("KeyMetadata");
            key_metadata(o.out, m);
            o.end();
        }
        Output::ListKeys(l) => {
            let mut o = Obj::new(out);
            o.list("Keys", &l.keys, |out, k| {
                let mut o = Obj::new(out);
                o.str("KeyId", &k.key_id);
                o.str("KeyArn", &k.arn);
                o.end();
            });
            o.page(l.next_marker.as_deref(), l.truncated);
            o.end();
        }
        Output::GenerateDataKey(g) => {
            let mut o = Obj::new(out);
            o.blob("CiphertextBlob", &g.ciphertext_blob);
            o.blob("Plaintext", g.plaintext.expose());
            o.str("KeyId", &g.key_id);
            o.end();
        }
        Output::GenerateDataKeyWithoutPlaintext(g) => {
            let mut o = Obj::new(out);
            o.blob("CiphertextBlob", &g.ciphertext_blob);
            o.str("KeyId", &g.key_id);
            o.end();
        }
        Output::Encrypt(e) => {
            let mut o = Obj::new(out);
            o.blob("CiphertextBlob", &e.ciphertext_blob);
            o.str("KeyId", &e.key_id);
            o.str("EncryptionAlgorithm", SYMMETRIC_DEFAULT);
            o.end();
        }
        Output::Decrypt(d) => {
            let mut o = Obj::new(out);
            o.str("KeyId", &d.key_id);
            o.blob("Plaintext", d.plaintext.expose());
            o.str("EncryptionAlgorithm", SYMMETRIC_DEFAULT);
            o.end();
        }
        Output::ReEncrypt(r) => {
            let mut o = Obj::new(out);
            o.blob("CiphertextBlob", &r.ciphertext_blob);
            o.str("SourceKeyId", &r.source_key_id);
            o.str("KeyId", &r.key_id);
            o.str("SourceEncryptionAlgorithm", SYMMETRIC_DEFAULT);
            o.str("DestinationEncryptionAlgorithm", SYMMETRIC_DEFAULT);
            o.end();
        }
        Output::GenerateRandom(g) => {
            let mut o = Obj::new(out);
            o.blob("Plaintext", g.plaintext.expose());
            o.end();
        }
        Output::UpdateKeyDescription
        | Output::TagResource
        | Output::UntagResource
        | Output::CreateAlias
        | Output::UpdateAlias
        | Output::DeleteAlias
        | Output::EnableKey
        | Output::DisableKey
        | Output::EnableKeyRotation
        | Output::DisableKeyRotation
        | Output::ImportKeyMaterial
        | Output::DeleteImportedKeyMaterial
        | Output::PutKeyPolicy
        | Output::RetireGrant
        | Output::RevokeGrant => out.extend_from_slice(b"{}"),
        Output::ListResourceTags(l) => {
            let mut o = Obj::new(out);
            o.list("Tags", &l.tags, |out, t| {
                let mut o = Obj::new(out);
                o.str("TagKey", &t.key);
                o.str("TagValue", &t.value);
                o.end();
            });
            o.page(l.next_marker.as_deref(), l.truncated);
            o.end();
        }
        Output::ListAliases(l) => {
            let mut o = Obj::new(out);
            o.list("Aliases", &l.aliases, alias_entry);
            o.page(l.next_marker.as_deref(), l.truncated);
            o.end();
        }
        Output::ScheduleKeyDeletion(s) => {
            let mut o = Obj::new(out);
            o.str("KeyId", &s.key_id);
            o.int("DeletionDate", s.deletion_date);
            o.str("KeyState", key_state(s.key_state));
            o.int("PendingWindowInDays", s.pending_window_in_days.into());
            o.end();
        }
        Output::CancelKeyDeletion(c) => {
            let mut o = Obj::new(out);
            o.str("KeyId", &c.key_id);
            o.end();
        }
        Output::GetKeyRotationStatus(g) => {
            let mut o = Obj::new(out);
            o.bool("KeyRotationEnabled", g.key_rotation_enabled);
            o.str("KeyId", &g.key_id);
            if let Some(d) = g.rotation_period_in_days {
                o.int("RotationPeriodInDays", d.into());
            }
            if let Some(t) = g.next_rotation_date {
                o.int("NextRotationDate", t);
            }
            if let Some(t) = g.on_demand_rotation_start_date {
                o.int("OnDemandRotationStartDate", t);
            }
            o.end();
        }
        Output::RotateKeyOnDemand(r) => {
            let mut o = Obj::new(out);
            o.str("KeyId", &r.key_id);
            o.end();
        }
        Output::ListKeyRotations(l) => {
            let mut o = Obj::new(out);
            o.list("Rotations", &l.rotations, |out, r| {
                let mut o = Obj::new(out);
                o.str("KeyId", &r.key_id);
                o.int("RotationDate", r.rotation_date);
                o.str("RotationType", r.rotation_type.name());
                o.end();
            });
            o.page(l.next_marker.as_deref(), l.truncated);
            o.end();
        }
        Output::GetParametersForImport(g) => {
            let mut o = Obj::new(out);
            o.str("KeyId", &g.key_id);
            o.blob("ImportToken", &g.import_token);
            o.blob("PublicKey", &g.public_key);
            o.int("ParametersValidTo", g.parameters_valid_to);
            o.end();
        }
        Output::WhoAmI(w) => {
            let mut o = Obj::new(out);
            o.int("Uid", w.uid.into());
            o.int("Gid", w.gid.into());
            o.int("Pid", w.pid.into());
            o.list("Groups", &w.groups, |out, g| integer(out, i64::from(*g)));
            if let Some(u) = &w.unit {
                o.str("Unit", u);
            }
            if let Some(c) = &w.cgroup {
                o.str("Cgroup", c);
            }
            o.end();
        }
        Output::GetKeyPolicy(g) => {
            let mut o = Obj::new(out);
            o.str("Policy", &g.policy);
            o.str("PolicyName", &g.policy_name);
            o.end();
        }
        Output::ListKeyPolicies(l) => {
            let mut o = Obj::new(out);
            o.list("PolicyNames", &l.policy_names, |out, n| json_string(out, n));
            o.page(l.next_marker.as_deref(), l.truncated);
            o.end();
        }
        Output::CreateGrant(c) => {
            let mut o = Obj::new(out);
            o.str("GrantToken", &c.grant_token);
            o.str("GrantId", &c.grant_id);
            o.end();
        }
        Output::ListGrants(l) | Output::ListRetirableGrants(l) => {
            let mut o = Obj::new(out);
            o.list("Grants", &l.grants, grant_entry);
            o.page(l.next_marker.as_deref(), l.truncated);
            o.end();
        }
        Output::GetStatus(s) => {
            let mut o = Obj::new(out);
            o.str("Version", &s.version);
            o.uint("UptimeMs", s.uptime_ms);
            o.list("Metrics", &s.metrics, metric);
            o.end();
        }
        Output::VerifyAuditSeals(v) => {
            let mut o = Obj::new(out);
            o.list("Valid", &v.valid, |out, b| {
                out.extend_from_slice(if *b { b"true" } else { b"false" })
            });
            o.uint("HeadSeq", v.head_seq);
            o.blob("HeadHash", &v.head_hash);
            o.end();
        }
    }
}

/// An upper bound on the bytes [`encode_output`] appends for `output`,
/// computed without writing, for the answers that carry plaintext
/// (GenerateDataKey, Decrypt, GenerateRandom); 0 for the others, whose
/// size the encoder does not bound ahead.
pub fn output_len_bound(output: &Output) -> usize {
    // Member names, punctuation and the algorithm's name, generously.
    const FIXED: usize = 128;
    match output {
        Output::GenerateDataKey(g) => {
            FIXED
                + string_bound(&g.key_id)
                + base64_len(g.ciphertext_blob.len())
                + base64_len(g.plaintext.len())
        }
        Output::Decrypt(d) => FIXED + string_bound(&d.key_id) + base64_len(d.plaintext.len()),
        Output::GenerateRandom(g) => FIXED + base64_len(g.plaintext.len()),
        _ => 0,
    }
}

const SYMMETRIC_DEFAULT: &str = "SYMMETRIC_DEFAULT";

/// A string's longest JSON form: every byte a `\u00XX` escape, and quotes.
fn string_bound(s: &str) -> usize {
    6 * s.len() + 2
}

/// The length of `n` bytes in padded base64, and quotes.
fn base64_len(n: usize) -> usize {
    n.div_ceil(3) * 4 + 2
}

/// An object being written: members are separated as they come.
struct Obj<'o> {
    out: &'o mut Vec<u8>,
    first: bool,
}

impl<'o> Obj<'o> {
    fn new(out: &'o mut Vec<u8>) -> Self {
        out.push(b'{');
        Obj { out, first: true }
    }

    /// A member's name (ASCII letters, written as they are).
    fn key(&mut self, name: &str) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    fn str(&mut self, name: &str, v: &str) {
        self.key(name);
        json_string(self.out, v);
    }

    fn blob(&mut self, name: &str, v: &[u8]) {
        self.key(name);
        base64(self.out, v);
    }

    fn int(&mut self, name: &str, v: i64) {
        self.key(name);
        integer(self.out, v);
    }

    fn uint(&mut self, name: &str, v: u64) {
        self.key(name);
        self.out
            .extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
    }

    fn bool(&mut self, name: &str, v: bool) {
        self.key(name);
        self.out
            .extend_from_slice(if v { b"true" } else { b"false" });
    }

    fn list<T>(&mut self, name: &str, items: &[T], mut item: impl FnMut(&mut Vec<u8>, &T)) {
        self.key(name);
        self.out.push(b'[');
        for (i, t) in items.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            item(self.out, t);
        }
        self.out.push(b']');
    }

    /// A page's end: NextMarker when there is one, and Truncated.
    fn page(&mut self, next_marker: Option<&str>, truncated: bool) {
        if let Some(m) = next_marker {
            self.str("NextMarker", m);
        }
        self.bool("Truncated", truncated);
    }

    fn end(self) {
        self.out.push(b'}');
    }
}

fn integer(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// `v` in padded base64 (standard alphabet), quoted, encoded in place.
fn base64(out: &mut Vec<u8>, v: &[u8]) {
    out.push(b'"');
    let at = out.len();
    let n = base64_len(v.len()) - 2;
    out.resize(at + n, 0);
    let written = STANDARD
        .encode_slice(v, &mut out[at..])
        .expect("the buffer has base64's length");
    debug_assert_eq!(written, n);
    out.push(b'"');
}

/// `s` as a JSON string: `"` and `\` escaped, control characters as
/// `\n`, `\t`... or `\u00XX`; everything else (UTF-8 included) as it is.
pub(super) fn json_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if short.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(short);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

fn key_state(s: KeyState) -> &'static str {
    s.name()
}

/// The account of an ARN (`arn:partition:service:region:account:resource`),
/// when it names one.
fn account_of(arn: &str) -> Option<&str> {
    let mut parts = arn.splitn(6, ':');
    let account = parts.nth(4)?;
    (parts.next().is_some() && !account.is_empty()).then_some(account)
}

/// AWS's KeyMetadata. kmsd's own `current_version` has no AWS member and
/// is left out.
fn key_metadata(out: &mut Vec<u8>, m: &KeyMetadata) {
    let mut o = Obj::new(out);
    if let Some(account) = account_of(&m.arn) {
        o.str("AWSAccountId", account);
    }
    o.str("KeyId", &m.key_id);
    o.str("Arn", &m.arn);
    o.int("CreationDate", m.creation_date);
    o.bool("Enabled", m.enabled);
    o.str("Description", &m.description);
    o.str(
        "KeyUsage",
        match m.key_usage {
            KeyUsage::EncryptDecrypt => "ENCRYPT_DECRYPT",
        },
    );
    o.str("KeyState", key_state(m.key_state));
    if let Some(d) = m.deletion_date {
        o.int("DeletionDate", d);
    }
    if let Some(v) = m.valid_to {
        o.int("ValidTo", v);
    }
    o.str(
        "Origin",
        match m.origin {
            Origin::Kmsd => "AWS_KMS",
            Origin::External => "EXTERNAL",
            Origin::Hsm => "AWS_CLOUDHSM",
        },
    );
    if let Some(e) = m.expiration_model {
        o.str("ExpirationModel", e.name());
    }
    o.str("KeyManager", "CUSTOMER");
    let spec = match m.key_spec {
        KeySpec::SymmetricDefault => SYMMETRIC_DEFAULT,
    };
    o.str("CustomerMasterKeySpec", spec);
    o.str("KeySpec", spec);
    o.list("EncryptionAlgorithms", &[SYMMETRIC_DEFAULT], |out, a| {
        json_string(out, a)
    });
    o.bool("MultiRegion", false);
    if let Some(w) = m.pending_deletion_window_in_days {
        o.int("PendingDeletionWindowInDays", w.into());
    }
    o.end();
}

fn alias_entry(out: &mut Vec<u8>, a: &AliasListEntry) {
    let mut o = Obj::new(out);
    o.str("AliasName", &a.alias_name);
    o.str("AliasArn", &a.alias_arn);
    if let Some(k) = &a.target_key_id {
        o.str("TargetKeyId", k);
    }
    o.int("CreationDate", a.creation_date);
    o.int("LastUpdatedDate", a.last_updated_date);
    o.end();
}

fn grant_entry(out: &mut Vec<u8>, g: &GrantListEntry) {
    let mut o = Obj::new(out);
    o.str("KeyId", &g.key_id);
    o.str("GrantId", &g.grant_id);
    if let Some(n) = &g.name {
        o.str("Name", n);
    }
    o.int("CreationDate", g.creation_date);
    o.str("GranteePrincipal", &g.grantee_principal);
    if let Some(r) = &g.retiring_principal {
        o.str("RetiringPrincipal", r);
    }
    o.str("IssuingAccount", &g.issuing_account);
    o.list("Operations", &g.operations, |out, op| {
        json_string(out, op.name())
    });
    if let Some(c) = &g.constraints {
        o.key("Constraints");
        constraints(o.out, c);
    }
    o.end();
}

/// A grant's constraints: each list that has pairs, as an object.
fn constraints(out: &mut Vec<u8>, c: &OwnedGrantConstraints) {
    let mut o = Obj::new(out);
    for (name, pairs) in [
        ("EncryptionContextSubset", &c.encryption_context_subset),
        ("EncryptionContextEquals", &c.encryption_context_equals),
    ] {
        if !pairs.is_empty() {
            o.key(name);
            string_map(o.out, pairs);
        }
    }
    o.end();
}

/// Pairs as an object of strings.
fn string_map(out: &mut Vec<u8>, pairs: &[(String, String)]) {
    out.push(b'{');
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json_string(out, k);
        out.push(b':');
        json_string(out, v);
    }
    out.push(b'}');
}

/// A number: JSON has no infinities or NaN, which are `null` (as `kmsctl
/// status --json` writes them).
fn float(out: &mut Vec<u8>, v: f64) {
    if v.is_finite() {
        // Rust writes the shortest digits that read back as `v` (`12.0`,
        // `0.001`, `1e300`): a valid JSON number, as serde_json writes it.
        out.extend_from_slice(format!("{v:?}").as_bytes());
    } else {
        out.extend_from_slice(b"null");
    }
}

/// One GetStatus series, as `kmsctl status --json` writes it: Count and
/// Quantiles (keyed by the quantile) for histograms only.
fn metric(out: &mut Vec<u8>, m: &MetricSample) {
    let mut o = Obj::new(out);
    o.str("Name", &m.name);
    o.str(
        "Kind",
        match m.kind {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        },
    );
    o.key("Labels");
    string_map(o.out, &m.labels);
    o.key("Value");
    float(o.out, m.value);
    if m.kind == MetricKind::Histogram {
        o.uint("Count", m.count);
        o.key("Quantiles");
        o.out.push(b'{');
        for (i, (q, v)) in m.quantiles.iter().enumerate() {
            if i > 0 {
                o.out.push(b',');
            }
            json_string(o.out, &format!("{q}"));
            o.out.push(b':');
            float(o.out, *v);
        }
        o.out.push(b'}');
    }
    o.end();
}
