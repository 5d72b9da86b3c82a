//! The verifier against AWS's published SigV4 test suite
//! (tests/data/sigv4/aws-c-auth-v4/, from awslabs/aws-c-auth), against KMS
//! requests signed by botocore itself (tests/data/sigv4/botocore-kms/), and
//! every refusal: tampering, scope, time, keys, malformed headers.

use super::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const AKID: &str = "AKIDEXAMPLE";
const SUITE_SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

fn data(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/sigv4")
        .join(path)
}

fn at(amz_date: &str) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(parse_amz_date(amz_date).unwrap() as u64)
}

fn text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The request line's target, the headers and the body of a raw request as
/// AWS's suite and our botocore capture write them. `None` for the target
/// when `http` refuses it (a raw space or UTF-8: AWS's suite writes paths
/// as the signer holds them before sending) and for the parts when a header
/// is folded over lines (obs-fold, which hyper refuses).
struct RawRequest {
    method: String,
    target: String,
    parts: Option<Parts>,
    body: Vec<u8>,
}

fn parse_request(raw: &[u8]) -> RawRequest {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, i + 4))
        .or_else(|| {
            raw.windows(2)
                .position(|w| w == b"\n\n")
                .map(|i| (i, i + 2))
        })
        .unwrap_or((raw.len(), raw.len()));
    let head = std::str::from_utf8(&raw[..split.0]).unwrap();
    let body = raw[split.1..].to_vec();
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let first = lines.next().unwrap();
    let (method, rest) = first.split_once(' ').unwrap();
    let (target, _version) = rest.rsplit_once(' ').unwrap();
    let mut builder = http::Request::builder().method(method);
    let mut folded = false;
    for line in lines {
        if line.starts_with([' ', '\t']) {
            folded = true;
            continue;
        }
        // As hyper gives them: without the blanks around the value.
        let (name, value) = line.split_once(':').unwrap();
        let value = value.trim_matches([' ', '\t']);
        builder = builder.header(name, HeaderValue::from_bytes(value.as_bytes()).unwrap());
    }
    let parts = match http::Uri::try_from(target) {
        Ok(uri) if !folded => Some(builder.uri(uri).body(()).unwrap().into_parts().0),
        _ => None,
    };
    RawRequest {
        method: method.to_owned(),
        target: target.to_owned(),
        parts,
        body,
    }
}

fn suite_verifier(region: &str) -> Verifier {
    Verifier::new(
        Credentials::from_secrets(&[(AKID, SUITE_SECRET, 1000, 1000)]),
        region,
    )
    .for_service("service")
}

fn hex_string<const N: usize, const M: usize>(b: &[u8; N]) -> String {
    String::from_utf8(canonical::hex_lower::<N, M>(b).to_vec()).unwrap()
}

/// The vectors whose request `http` cannot carry, and why. (Raw UTF-8 in
/// the target, get-utf8 and get-vanilla-utf8-query, it takes.)
const NOT_AS_HTTP: &[&str] = &[
    // A header folded over three lines (obs-fold): hyper refuses it.
    "get-header-value-multiline",
    // A raw space in the request target: a client sends it as %20, and
    // encodes that once more to sign (the suite gives the unencoded path,
    // whose canonical URI is checked below).
    "get-space-normalized",
];

#[test]
fn aws_test_suite() {
    let mut verified = Vec::new();
    let mut refused_for_token = Vec::new();
    let mut not_as_http = Vec::new();
    let mut dirs: Vec<_> = std::fs::read_dir(data("aws-c-auth-v4"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 30, "{} vectors", dirs.len());
    for dir in &dirs {
        let name = dir.file_name().unwrap().to_str().unwrap().to_owned();
        let context: serde_json::Value =
            serde_json::from_str(&text(&dir.join("context.json"))).unwrap();
        assert_eq!(
            context["normalize"], true,
            "{name}: S3-style vectors are not copied"
        );
        let secret = context["credentials"]["secret_access_key"]
            .as_str()
            .unwrap();
        let region = context["region"].as_str().unwrap();
        let service = context["service"].as_str().unwrap();
        assert_eq!(
            (secret, region, service),
            (SUITE_SECRET, "us-east-1", "service")
        );
        let amz_date = context["timestamp"]
            .as_str()
            .unwrap()
            .replace(['-', ':'], "");
        let canonical = text(&dir.join("header-canonical-request.txt"));
        let sts = text(&dir.join("header-string-to-sign.txt"));
        let signature = text(&dir.join("header-signature.txt"));

        // The string to sign of the published canonical request.
        let mut mine = Vec::new();
        let hash: [u8; 32] = Sha256::digest(canonical.as_bytes()).into();
        string_to_sign(&mut mine, &amz_date, &amz_date[..8], region, service, &hash);
        assert_eq!(
            String::from_utf8(mine).unwrap(),
            sts,
            "{name}: string to sign"
        );

        // Its signature: the key chain and the last HMAC.
        let key = derive_signing_key(
            format!("AWS4{secret}").as_bytes(),
            &amz_date[..8],
            region,
            service,
        );
        let sig: [u8; 32] = *hmac(&key[..], sts.as_bytes());
        assert_eq!(
            hex_string::<32, 64>(&sig),
            signature.trim(),
            "{name}: signature"
        );

        // The canonical URI and query of the request line's target.
        let raw = parse_request(text(&dir.join("header-signed-request.txt")).as_bytes());
        let lines: Vec<&str> = canonical.split('\n').collect();
        assert_eq!(lines[0], raw.method);
        let (path, query) = match raw.target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (raw.target.as_str(), None),
        };
        let mut uri = Vec::new();
        canonical::uri(&mut uri, path);
        assert_eq!(String::from_utf8(uri).unwrap(), lines[1], "{name}: URI");
        let mut q = Vec::new();
        canonical::query(&mut q, query);
        assert_eq!(String::from_utf8(q).unwrap(), lines[2], "{name}: query");

        // The whole request, as the server would receive it.
        let Some(parts) = raw.parts else {
            not_as_http.push(name);
            continue;
        };
        let auth =
            Authorization::parse(parts.headers[http::header::AUTHORIZATION].to_str().unwrap())
                .unwrap();
        let body_hex = canonical::hex_lower::<32, 64>(&Sha256::digest(&raw.body).into());
        let mut mine = Vec::new();
        canonical_request(&mut mine, &parts, auth.signed_headers, &body_hex).unwrap();
        assert_eq!(
            String::from_utf8(mine).unwrap(),
            canonical,
            "{name}: canonical request"
        );
        let verifier = suite_verifier(region);
        let result = verifier.verify(&parts, &raw.body, at(&amz_date));
        if parts.headers.contains_key("x-amz-security-token") {
            assert_eq!(result.unwrap_err(), SigV4Error::SessionToken, "{name}");
            refused_for_token.push(name);
        } else {
            let principal = result.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(principal.access_key_id(), AKID);
            assert_eq!(principal.uid(), 1000);
            verified.push(name);
        }
    }
    assert_eq!(not_as_http, NOT_AS_HTTP);
    assert_eq!(
        refused_for_token,
        [
            "get-vanilla-with-session-token",
            "post-sts-header-after",
            "post-sts-header-before"
        ]
    );
    assert_eq!(
        verified.len(),
        dirs.len() - NOT_AS_HTTP.len() - 3,
        "{verified:?}"
    );
}

#[test]
fn aws_presigned_request_is_refused() {
    let path = data("aws-c-auth-v4/post-vanilla/query-signed-request.txt");
    let raw = parse_request(text(&path).as_bytes());
    let err = suite_verifier("us-east-1")
        .verify(&raw.parts.unwrap(), b"", at("20150830T123600Z"))
        .unwrap_err();
    assert_eq!(err.aws_name(), "IncompleteSignatureException");
    assert!(err.to_string().contains("presigned"), "{err}");
}

// ---------------------------------------------------------------------------
// Requests signed by botocore.

const BOTO_AKID: &str = "AKIAKMSDTESTEXAMPLE";
const BOTO_SECRET: &str = "kmsdTestSecret/K7MDENG+bPxRfiCYEXAMPLEKEY";
const BOTO_DATE: &str = "20260314T150926Z";
const BOTO_REGION: &str = "eu-west-3";

fn botocore_context_matches() {
    let context: serde_json::Value =
        serde_json::from_str(&text(&data("botocore-kms/context.json"))).unwrap();
    assert_eq!(context["access_key_id"], BOTO_AKID);
    assert_eq!(context["secret_access_key"], BOTO_SECRET);
    assert_eq!(context["timestamp"], BOTO_DATE);
    assert_eq!(context["region"], BOTO_REGION);
    assert_eq!(context["service"], "kms");
}

fn botocore(name: &str) -> (Parts, Vec<u8>) {
    botocore_context_matches();
    let raw = parse_request(&std::fs::read(data(&format!("botocore-kms/{name}.http"))).unwrap());
    (raw.parts.unwrap(), raw.body)
}

fn kms_verifier() -> Verifier {
    Verifier::new(
        Credentials::from_secrets(&[(BOTO_AKID, BOTO_SECRET, 1000, 100)]),
        BOTO_REGION,
    )
}

fn set(parts: &mut Parts, name: &'static str, value: &str) {
    parts
        .headers
        .insert(name, HeaderValue::from_str(value).unwrap());
}

/// How [`sign`] signs: botocore's request by default.
#[derive(Clone, Copy)]
struct Signing<'a> {
    akid: &'a str,
    secret: &'a str,
    amz_date: &'a str,
    region: &'a str,
    service: &'a str,
    signed: &'a str,
}

const KMS_SIGNED: &str = "content-type;host;x-amz-date;x-amz-target";

const BOTO: Signing<'static> = Signing {
    akid: BOTO_AKID,
    secret: BOTO_SECRET,
    amz_date: BOTO_DATE,
    region: BOTO_REGION,
    service: "kms",
    signed: KMS_SIGNED,
};

/// Signs `parts` and `body` as a client would, with this module's
/// functions (the suite and botocore check those functions; this makes
/// requests for the refusals that need a fresh signature).
fn sign(parts: &mut Parts, body: &[u8], s: Signing<'_>) {
    let day = &s.amz_date[..8];
    set(parts, "x-amz-date", s.amz_date);
    let body_hex = canonical::hex_lower::<32, 64>(&Sha256::digest(body).into());
    let mut creq = Vec::new();
    canonical_request(&mut creq, parts, s.signed, &body_hex).unwrap();
    let mut sts = Vec::new();
    let hash: [u8; 32] = Sha256::digest(&creq).into();
    string_to_sign(&mut sts, s.amz_date, day, s.region, s.service, &hash);
    let key = derive_signing_key(
        format!("AWS4{}", s.secret).as_bytes(),
        day,
        s.region,
        s.service,
    );
    let sig = hex_string::<32, 64>(&hmac(&key[..], &sts));
    let value = format!(
        "AWS4-HMAC-SHA256 Credential={}/{day}/{}/{}/aws4_request, \
         SignedHeaders={}, Signature={sig}",
        s.akid, s.region, s.service, s.signed
    );
    set(parts, "authorization", &value);
}

/// A fresh KMS Encrypt request signed at `amz_date`.
fn encrypt_at(amz_date: &str) -> (Parts, Vec<u8>) {
    let (mut parts, body) = botocore("encrypt");
    sign(&mut parts, &body, Signing { amz_date, ..BOTO });
    (parts, body)
}

/// Every refusal's message is free of the secret and of the request's
/// signature (no Authorization header is echoed).
fn refused(v: &Verifier, parts: &Parts, body: &[u8], now: SystemTime) -> SigV4Error {
    let e = v.verify(parts, body, now).expect_err("refused");
    let msg = e.to_string();
    assert!(
        !msg.contains(BOTO_SECRET) && !msg.contains("kmsdTestSecret"),
        "{msg}"
    );
    if let Some(a) = parts.headers.get("authorization") {
        if let Some((_, sig)) = a.to_str().unwrap().split_once("Signature=") {
            if sig.len() >= 16 {
                assert!(!msg.contains(&sig[..16]), "{msg}");
            }
        }
    }
    assert_eq!(e.status(), StatusCode::BAD_REQUEST);
    e
}

#[test]
fn botocore_signed_kms_requests_verify() {
    let v = kms_verifier();
    for name in ["encrypt", "list-keys"] {
        let (parts, body) = botocore(name);
        let p = v.verify(&parts, &body, at(BOTO_DATE)).unwrap();
        assert_eq!(
            (p.access_key_id(), p.uid(), p.gid()),
            (BOTO_AKID, 1000, 100)
        );
        assert_eq!(p.identity().uid, 1000);
        // Again, from the signing-key cache, and without it.
        assert!(v.verify(&parts, &body, at(BOTO_DATE)).is_ok());
        let uncached = kms_verifier().with_signing_key_cache(false);
        assert!(uncached.verify(&parts, &body, at(BOTO_DATE)).is_ok());
    }
    // Our signer agrees with botocore's signature, byte for byte.
    let (parts, _) = botocore("encrypt");
    let (mine, _) = encrypt_at(BOTO_DATE);
    assert_eq!(
        parts.headers["authorization"],
        mine.headers["authorization"]
    );
}

#[test]
fn tampering_is_refused() {
    let v = kms_verifier();
    let now = at(BOTO_DATE);
    let (parts, body) = botocore("encrypt");

    let mut b = body.clone();
    b[20] ^= 1;
    assert_eq!(refused(&v, &parts, &b, now), SigV4Error::SignatureMismatch);
    let mut b = body.clone();
    b.push(b' ');
    assert_eq!(refused(&v, &parts, &b, now), SigV4Error::SignatureMismatch);
    assert_eq!(refused(&v, &parts, b"", now), SigV4Error::SignatureMismatch);

    // A signed header changed: the operation.
    let mut p = parts.clone();
    set(&mut p, "x-amz-target", "TrentService.Decrypt");
    assert_eq!(refused(&v, &p, &body, now), SigV4Error::SignatureMismatch);
    let mut p = parts.clone();
    set(&mut p, "host", "127.0.0.1:4600");
    assert_eq!(refused(&v, &p, &body, now), SigV4Error::SignatureMismatch);
    // A signed header given twice.
    let mut p = parts.clone();
    p.headers
        .append("content-type", HeaderValue::from_static("text/plain"));
    assert_eq!(refused(&v, &p, &body, now), SigV4Error::SignatureMismatch);
    // The method and the path are signed.
    let mut p = parts.clone();
    p.method = http::Method::PUT;
    assert_eq!(refused(&v, &p, &body, now), SigV4Error::SignatureMismatch);
    let mut p = parts.clone();
    p.uri = "/other".parse().unwrap();
    assert_eq!(refused(&v, &p, &body, now), SigV4Error::SignatureMismatch);
    let mut p = parts.clone();
    p.uri = "/?a=b".parse().unwrap();
    assert_eq!(refused(&v, &p, &body, now), SigV4Error::SignatureMismatch);
    // The signature itself.
    let mut p = parts.clone();
    let auth = p.headers["authorization"].to_str().unwrap().to_owned();
    let last = auth.chars().last().unwrap();
    let flipped = format!(
        "{}{}",
        &auth[..auth.len() - 1],
        if last == '0' { '1' } else { '0' }
    );
    set(&mut p, "authorization", &flipped);
    assert_eq!(refused(&v, &p, &body, now), SigV4Error::SignatureMismatch);
    for bad in [
        auth.replace("Signature=f5", "Signature=F5"),
        format!("{auth}00"),
        auth[..auth.len() - 2].to_owned(),
        auth.replace("Signature=f5", "Signature=g5"),
    ] {
        set(&mut p, "authorization", &bad);
        assert_eq!(
            refused(&v, &p, &body, now),
            SigV4Error::SignatureMismatch,
            "{bad}"
        );
    }

    // Unsigned headers may change (botocore adds these after signing).
    let mut p = parts.clone();
    set(&mut p, "user-agent", "something else");
    set(&mut p, "amz-sdk-request", "attempt=2");
    p.headers.remove("content-length");
    assert!(v.verify(&p, &body, now).is_ok());
}

#[test]
fn required_headers_must_be_signed() {
    let v = kms_verifier();
    let now = at(BOTO_DATE);
    let (base, body) = botocore("encrypt");
    for (signed, what) in [
        (
            "content-type;x-amz-date;x-amz-target",
            "'Host' must be a 'SignedHeader'",
        ),
        (
            "content-type;host;x-amz-target",
            "'X-Amz-Date' must be a 'SignedHeader'",
        ),
        (
            "content-type;host;x-amz-date",
            "'X-Amz-Target' must be a 'SignedHeader'",
        ),
    ] {
        let mut p = base.clone();
        sign(&mut p, &body, Signing { signed, ..BOTO });
        let e = refused(&v, &p, &body, now);
        assert_eq!(e.aws_name(), "IncompleteSignatureException", "{e}");
        assert!(e.to_string().contains(what), "{e}");
    }
    // host and x-amz-date suffice when there is no X-Amz-Target.
    let mut p = base.clone();
    p.headers.remove("x-amz-target");
    sign(
        &mut p,
        &body,
        Signing {
            signed: "host;x-amz-date",
            ..BOTO
        },
    );
    assert!(v.verify(&p, &body, now).is_ok());
    // A header named in SignedHeaders but absent.
    let mut p = base.clone();
    sign(&mut p, &body, BOTO);
    p.headers.remove("content-type");
    let e = refused(&v, &p, &body, now);
    assert!(
        e.to_string()
            .contains("'content-type', which the request does not carry"),
        "{e}"
    );
    // HTTP/2: the host in the URI (:authority), no Host header.
    let mut p = base.clone();
    p.uri = "http://127.0.0.1:4599/".parse().unwrap();
    p.headers.remove("host");
    assert!(v.verify(&p, &body, now).is_ok());
}

#[test]
fn scope_region_service_and_date_are_checked() {
    let now = at(BOTO_DATE);
    let (parts, body) = botocore("encrypt");
    // Another region configured.
    let other = Verifier::new(
        Credentials::from_secrets(&[(BOTO_AKID, BOTO_SECRET, 1000, 100)]),
        "us-east-1",
    );
    let e = refused(&other, &parts, &body, now);
    assert_eq!(e, SigV4Error::WrongRegion("eu-west-3".into()));
    assert_eq!(e.aws_name(), "InvalidSignatureException");
    assert_eq!(
        e.to_string(),
        "Credential should be scoped to a valid region, not 'eu-west-3'. "
    );

    let v = kms_verifier();
    for service in ["s3", "KMS", "dynamodb"] {
        let mut p = parts.clone();
        sign(&mut p, &body, Signing { service, ..BOTO });
        let e = refused(&v, &p, &body, now);
        assert_eq!(e.aws_name(), "InvalidSignatureException");
        assert_eq!(
            e.to_string(),
            "Credential should be scoped to correct service: 'kms'. "
        );
    }
    let auth = parts.headers["authorization"].to_str().unwrap().to_owned();
    let mut p = parts.clone();
    set(
        &mut p,
        "authorization",
        &auth.replace("/aws4_request", "/aws5_request"),
    );
    let e = refused(&v, &p, &body, now);
    assert_eq!(e, SigV4Error::WrongTerminator("aws5_request".into()));
    set(
        &mut p,
        "authorization",
        &auth.replace("/20260314/", "/20260313/"),
    );
    let e = refused(&v, &p, &body, now);
    assert_eq!(e.aws_name(), "InvalidSignatureException");
    assert_eq!(
        e.to_string(),
        "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date \
         from HTTP: '20260313' != '20260314', from '20260314T150926Z'."
    );
}

#[test]
fn the_window_is_five_minutes_either_way() {
    let v = kms_verifier();
    let (parts, body) = botocore("encrypt");
    let t = at(BOTO_DATE);
    let minutes = |m: u64| Duration::from_secs(60 * m);
    let second = Duration::from_secs(1);
    // The request is 5:00 old, 5:00 early: accepted; a second more: not.
    assert!(v.verify(&parts, &body, t + minutes(5)).is_ok());
    assert!(v.verify(&parts, &body, t - minutes(5)).is_ok());
    assert!(v
        .verify(&parts, &body, t + minutes(5) + Duration::from_millis(999))
        .is_ok());
    let e = refused(&v, &parts, &body, t + minutes(5) + second);
    assert_eq!(e.aws_name(), "InvalidSignatureException");
    assert_eq!(
        e.to_string(),
        "Signature expired: 20260314T150926Z is now earlier than 20260314T150927Z \
         (20260314T151427Z - 5 min.)"
    );
    let e = refused(&v, &parts, &body, t - minutes(5) - second);
    assert_eq!(
        e.to_string(),
        "Signature not yet current: 20260314T150926Z is still later than 20260314T150925Z \
         (20260314T150425Z + 5 min.)"
    );
    assert!(matches!(
        refused(&v, &parts, &body, UNIX_EPOCH),
        SigV4Error::NotYetCurrent { .. }
    ));
    assert!(matches!(
        refused(&v, &parts, &body, UNIX_EPOCH - minutes(1)),
        SigV4Error::NotYetCurrent { .. }
    ));

    // AWS's widest, 15 minutes, when configured; never wider.
    let wide = kms_verifier().with_max_skew(minutes(15));
    assert_eq!(wide.max_skew(), minutes(15));
    assert!(wide.verify(&parts, &body, t + minutes(15)).is_ok());
    assert!(wide.verify(&parts, &body, t - minutes(15)).is_ok());
    let e = refused(&wide, &parts, &body, t + minutes(15) + second);
    assert!(e.to_string().contains("- 15 min.)"), "{e}");
    let e = refused(&wide, &parts, &body, t - minutes(15) - second);
    assert!(matches!(e, SigV4Error::NotYetCurrent { .. }));
    let clamped = kms_verifier().with_max_skew(minutes(60));
    assert_eq!(clamped.max_skew(), minutes(15));
    assert!(clamped.verify(&parts, &body, t + minutes(16)).is_err());
    let odd = kms_verifier().with_max_skew(Duration::from_secs(90));
    assert!(refused(&odd, &parts, &body, t + minutes(2))
        .to_string()
        .contains("- 90 s.)"));
}

#[test]
fn signing_keys_of_two_days_are_cached_and_both_verify() {
    let v = kms_verifier();
    // Either side of midnight, within the window of a clock at 00:02.
    let (before, body) = encrypt_at("20260314T235800Z");
    let (after, _) = encrypt_at("20260315T000100Z");
    let now = at("20260315T000200Z");
    for _ in 0..3 {
        assert!(v.verify(&before, &body, now).is_ok());
        assert!(v.verify(&after, &body, now).is_ok());
    }
    {
        let keys = v.signing_keys[0].lock();
        let mut days: Vec<u32> = keys.slots.iter().flatten().map(|(d, _)| *d).collect();
        days.sort();
        assert_eq!(days, [20_260_314, 20_260_315]);
    }
    // A third day replaces one of them; each still verifies.
    let (later, _) = encrypt_at("20260316T000100Z");
    assert!(v.verify(&later, &body, at("20260316T000200Z")).is_ok());
    assert!(v.verify(&after, &body, now).is_ok());
    // A wrong secret gives a wrong key: nothing cached makes it pass.
    let (mut wrong, _) = botocore("encrypt");
    sign(
        &mut wrong,
        &body,
        Signing {
            secret: "not the secret",
            ..BOTO
        },
    );
    assert_eq!(
        refused(&v, &wrong, &body, at(BOTO_DATE)),
        SigV4Error::SignatureMismatch
    );
}

#[test]
fn unknown_keys_and_session_tokens_are_unrecognized() {
    let now = at(BOTO_DATE);
    let (parts, body) = botocore("encrypt");
    let other = Verifier::new(
        Credentials::from_secrets(&[("AKIAOTHER", BOTO_SECRET, 1000, 100)]),
        BOTO_REGION,
    );
    let e = refused(&other, &parts, &body, now);
    assert_eq!(e, SigV4Error::UnknownAccessKey);
    assert_eq!(e.aws_name(), "UnrecognizedClientException");
    assert_eq!(
        e.to_string(),
        "The security token included in the request is invalid."
    );
    let empty = Verifier::new(Credentials::from_secrets(&[]), BOTO_REGION);
    assert_eq!(
        refused(&empty, &parts, &body, now),
        SigV4Error::UnknownAccessKey
    );

    let v = kms_verifier();
    let mut p = parts.clone();
    set(&mut p, "x-amz-security-token", "FwoGZXIvYXdzEXAMPLE");
    let e = refused(&v, &p, &body, now);
    assert_eq!(e, SigV4Error::SessionToken);
    assert_eq!(e.aws_name(), "UnrecognizedClientException");
}

#[test]
fn the_payload_is_always_hashed() {
    let v = kms_verifier();
    let now = at(BOTO_DATE);
    let (parts, body) = botocore("encrypt");
    let body_hex =
        String::from_utf8(canonical::hex_lower::<32, 64>(&Sha256::digest(&body).into()).to_vec())
            .unwrap();
    // The body's own hash: the same canonical request.
    let mut p = parts.clone();
    set(&mut p, "x-amz-content-sha256", &body_hex);
    assert!(v.verify(&p, &body, now).is_ok());
    // In capitals it is still the body's hash, but not what was signed.
    set(&mut p, "x-amz-content-sha256", &body_hex.to_uppercase());
    assert_eq!(refused(&v, &p, &body, now), SigV4Error::SignatureMismatch);
    for unsigned in ["UNSIGNED-PAYLOAD", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", ""] {
        set(&mut p, "x-amz-content-sha256", unsigned);
        let e = refused(&v, &p, &body, now);
        assert_eq!(e, SigV4Error::UnsignedPayload(unsigned.into()));
        assert_eq!(e.aws_name(), "InvalidSignatureException");
    }
    set(&mut p, "x-amz-content-sha256", &"0".repeat(64));
    assert_eq!(refused(&v, &p, &body, now), SigV4Error::PayloadHashMismatch);
    // A request signed over an x-amz-content-sha256 header verifies.
    let mut p = parts.clone();
    set(&mut p, "x-amz-content-sha256", &body_hex);
    let signed = "content-type;host;x-amz-content-sha256;x-amz-date;x-amz-target";
    sign(&mut p, &body, Signing { signed, ..BOTO });
    assert!(v.verify(&p, &body, now).is_ok());
}

#[test]
fn missing_and_malformed_authorization_is_refused() {
    let v = kms_verifier();
    let now = at(BOTO_DATE);
    let (parts, body) = botocore("encrypt");
    let auth = parts.headers["authorization"].to_str().unwrap().to_owned();
    let (_, params) = auth.split_once(' ').unwrap();
    let credential = "Credential=AKIAKMSDTESTEXAMPLE/20260314/eu-west-3/kms/aws4_request";
    let signed = "SignedHeaders=content-type;host;x-amz-date;x-amz-target";
    let signature = params.split(", ").nth(2).unwrap();

    // No header, an empty one.
    let mut p = parts.clone();
    p.headers.remove("authorization");
    let e = refused(&v, &p, &body, now);
    assert_eq!(e, SigV4Error::MissingAuthenticationToken);
    assert_eq!(e.aws_name(), "MissingAuthenticationTokenException");
    assert_eq!(e.to_string(), "Request is missing Authentication Token");
    for empty in ["", "   "] {
        set(&mut p, "authorization", empty);
        assert_eq!(
            refused(&v, &p, &body, now),
            SigV4Error::MissingAuthenticationToken
        );
    }
    // Two.
    let mut p = parts.clone();
    p.headers
        .append("authorization", HeaderValue::from_str(&auth).unwrap());
    assert!(refused(&v, &p, &body, now)
        .to_string()
        .contains("more than one 'Authorization'"));

    let incomplete = |value: &str, expected: &str| {
        let mut p = parts.clone();
        set(&mut p, "authorization", value);
        let e = refused(&v, &p, &body, now);
        assert_eq!(e.aws_name(), "IncompleteSignatureException", "{value}: {e}");
        assert!(e.to_string().contains(expected), "{value}: {e}");
    };
    incomplete(
        "AWS4-HMAC-SHA256",
        "Authorization header requires 'Credential' parameter. \
         Authorization header requires 'Signature' parameter. \
         Authorization header requires 'SignedHeaders' parameter.",
    );
    incomplete(
        &format!("AWS4-HMAC-SHA256 {signed}, {signature}"),
        "Authorization header requires 'Credential' parameter.",
    );
    incomplete(
        &format!("AWS4-HMAC-SHA256 {credential}, {signature}"),
        "requires 'SignedHeaders' parameter",
    );
    incomplete(
        &format!("AWS4-HMAC-SHA256 {credential}, {signed}"),
        "requires 'Signature' parameter",
    );
    incomplete(
        "AWS AKIAKMSDTESTEXAMPLE:c2lnbmF0dXJl",
        "Signature Version 4 only",
    );
    incomplete(
        &format!("AWS4-ECDSA-P256-SHA256 {params}"),
        "not 'AWS4-ECDSA-P256-SHA256'",
    );
    incomplete(&format!("Bearer {params}"), "not 'Bearer'");
    incomplete(
        &format!("AWS4-HMAC-SHA256{params}"),
        "Signature Version 4 only",
    );
    incomplete(
        &format!(
            "AWS4-HMAC-SHA256 Credential=AKIAKMSDTESTEXAMPLE/20260314/eu-west-3/kms, \
                  {signed}, {signature}"
        ),
        "Credential must have exactly 5 slash-delimited elements",
    );
    incomplete(
        &format!(
            "AWS4-HMAC-SHA256 \
                  Credential=AKIAKMSDTESTEXAMPLE/2026-03-14/eu-west-3/kms/aws4_request, {signed}, \
                  {signature}"
        ),
        "date must be YYYYMMDD",
    );
    incomplete(
        &format!(
            "AWS4-HMAC-SHA256 {credential}, \
                  SignedHeaders=host;content-type;x-amz-date;x-amz-target, {signature}"
        ),
        "sorted",
    );
    incomplete(
        &format!(
            "AWS4-HMAC-SHA256 {credential}, \
                  SignedHeaders=Content-Type;Host;X-Amz-Date;X-Amz-Target, {signature}"
        ),
        "lowercase",
    );
    incomplete(
        &format!("AWS4-HMAC-SHA256 {credential}, SignedHeaders=host;host;x-amz-date, {signature}"),
        "without repeats",
    );
    incomplete(
        &format!("AWS4-HMAC-SHA256 {credential}, SignedHeaders=, {signature}"),
        "SignedHeaders must",
    );
    incomplete(
        &format!("AWS4-HMAC-SHA256 {credential}, {credential}, {signed}, {signature}"),
        "gives 'Credential' more than once",
    );
    incomplete(
        &format!("AWS4-HMAC-SHA256 {credential}, {signed}, {signature}, Extra=1"),
        "'Extra' is not a parameter",
    );
    incomplete(
        &format!("AWS4-HMAC-SHA256 {credential} {signed}, {signature}"),
        "requires 'SignedHeaders' parameter",
    );
    incomplete(
        &format!("AWS4-HMAC-SHA256 {credential}, {signed}, {signature},"),
        "not a valid key=value pair (missing equal-sign)",
    );
    // Separators without blanks, as some signers write them.
    let mut p = parts.clone();
    set(
        &mut p,
        "authorization",
        &format!("AWS4-HMAC-SHA256 {credential},{signed},{signature}"),
    );
    assert!(v.verify(&p, &body, now).is_ok());
    let mut p = parts.clone();
    set(
        &mut p,
        "authorization",
        &format!("AWS4-HMAC-SHA256 {signature}, {credential}, {signed}"),
    );
    assert!(v.verify(&p, &body, now).is_ok(), "any order");
    // A very long value is clipped in the message.
    let long = format!(
        "AWS4-HMAC-SHA256 Credential={}, {signed}, {signature}",
        "A".repeat(5000)
    );
    let mut p = parts.clone();
    set(&mut p, "authorization", &long);
    assert!(refused(&v, &p, &body, now).to_string().len() < 300);
}

#[test]
fn the_date_header_is_checked() {
    let v = kms_verifier();
    let now = at(BOTO_DATE);
    let (parts, body) = botocore("encrypt");
    let mut p = parts.clone();
    p.headers.remove("x-amz-date");
    let e = refused(&v, &p, &body, now);
    assert_eq!(e.aws_name(), "IncompleteSignatureException");
    assert!(
        e.to_string()
            .contains("requires existence of a 'X-Amz-Date' header"),
        "{e}"
    );
    set(&mut p, "date", "Sat, 14 Mar 2026 15:09:26 GMT");
    assert!(refused(&v, &p, &body, now)
        .to_string()
        .contains("does not take the 'Date' header"));
    for bad in [
        "2026-03-14T15:09:26Z",
        "20260314T150926",
        "20260230T150926Z",
        "20261314T150926Z",
        "20260314T240000Z",
        "20260314t150926z",
        "",
    ] {
        let mut p = parts.clone();
        set(&mut p, "x-amz-date", bad);
        let e = refused(&v, &p, &body, now);
        assert!(
            e.to_string().contains("ISO 8601 basic format"),
            "{bad}: {e}"
        );
    }
    let mut p = parts.clone();
    p.headers
        .append("x-amz-date", HeaderValue::from_static(BOTO_DATE));
    assert!(refused(&v, &p, &body, now)
        .to_string()
        .contains("more than one 'X-Amz-Date'"));
}

#[test]
fn query_string_authentication_is_refused() {
    let v = kms_verifier();
    let now = at(BOTO_DATE);
    let (parts, body) = botocore("encrypt");
    let mut p = parts.clone();
    p.uri = "/?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=00"
        .parse()
        .unwrap();
    let e = refused(&v, &p, &body, now);
    assert!(
        e.to_string()
            .contains("both an Authorization header and query-string"),
        "{e}"
    );
    p.headers.remove("authorization");
    for q in [
        "/?X-Amz-Signature=00",
        "/?x-amz-credential=a",
        "/?a=1&X-Amz-Algorithm",
    ] {
        p.uri = q.parse().unwrap();
        let e = refused(&v, &p, &body, now);
        assert_eq!(e.aws_name(), "IncompleteSignatureException");
        let msg = e.to_string();
        assert!(
            msg.contains("query-string (presigned) authentication is not supported"),
            "{e}"
        );
    }
}

#[test]
fn every_error_has_its_aws_name_and_status() {
    const INVALID: &str = "InvalidSignatureException";
    let s = String::new;
    for (e, name) in [
        (
            SigV4Error::MissingAuthenticationToken,
            "MissingAuthenticationTokenException",
        ),
        (SigV4Error::incomplete("x"), "IncompleteSignatureException"),
        (SigV4Error::UnknownAccessKey, "UnrecognizedClientException"),
        (SigV4Error::SessionToken, "UnrecognizedClientException"),
        (SigV4Error::WrongRegion(s()), INVALID),
        (
            SigV4Error::WrongService {
                found: s(),
                expected: "kms",
            },
            INVALID,
        ),
        (SigV4Error::WrongTerminator(s()), INVALID),
        (
            SigV4Error::DateMismatch {
                scope: s(),
                day: s(),
                amz_date: s(),
            },
            INVALID,
        ),
        (
            SigV4Error::Expired {
                amz_date: s(),
                limit: s(),
                now: s(),
                window: s(),
            },
            INVALID,
        ),
        (
            SigV4Error::NotYetCurrent {
                amz_date: s(),
                limit: s(),
                now: s(),
                window: s(),
            },
            INVALID,
        ),
        (SigV4Error::UnsignedPayload(s()), INVALID),
        (SigV4Error::PayloadHashMismatch, INVALID),
        (SigV4Error::SignatureMismatch, INVALID),
    ] {
        assert_eq!(e.aws_name(), name, "{e:?}");
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert!(!e.to_string().is_empty());
    }
}

#[test]
fn debug_output_holds_no_secret() {
    let v = kms_verifier();
    let (parts, body) = botocore("encrypt");
    let p = v.verify(&parts, &body, at(BOTO_DATE)).unwrap();
    let all = format!("{v:?} {v:#?} {p:?} {:?}", v.credentials());
    assert!(all.contains(BOTO_AKID), "{all}");
    for secret in [BOTO_SECRET, "kmsdTestSecret", "AWS4kmsd"] {
        assert!(!all.contains(secret), "{all}");
    }
    // Nor the derived signing key, in hex or as bytes.
    let k_secret = format!("AWS4{BOTO_SECRET}");
    let key = derive_signing_key(k_secret.as_bytes(), "20260314", BOTO_REGION, "kms");
    assert!(!all.contains(&hex_string::<32, 64>(&key)));
    assert!(!all.contains(&format!("{:?}", &key[..4])));
}

#[test]
fn dates_parse_and_format() {
    assert_eq!(parse_amz_date("20150830T123600Z"), Some(1_440_938_160));
    assert_eq!(parse_amz_date("20260314T150926Z"), Some(1_773_500_966));
    assert_eq!(parse_amz_date("19700101T000000Z"), Some(0));
    assert_eq!(parse_amz_date("20000229T000000Z"), Some(951_782_400));
    for bad in [
        "19000229T000000Z",
        "20230229T000000Z",
        "20230431T000000Z",
        "20230100T000000Z",
        "20230101T000060Z",
        "2023010 T000000Z",
        "+0230101T000000Z",
    ] {
        assert_eq!(parse_amz_date(bad), None, "{bad}");
    }
    for t in [
        0,
        1,
        86_399,
        86_400,
        951_782_400,
        1_440_938_160,
        4_102_444_799,
        -1,
        -86_401,
    ] {
        assert_eq!(parse_amz_date(&format_amz_date(t)), Some(t), "{t}");
    }
    assert_eq!(format_amz_date(1_440_938_160), "20150830T123600Z");
    assert_eq!(format_amz_date(-1), "19691231T235959Z");
    // Every day of four years, through a leap year, round-trips.
    for day in 19_000..19_000 + 4 * 366 {
        let t = day * 86_400 + 3_723;
        assert_eq!(parse_amz_date(&format_amz_date(t)), Some(t));
    }
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 512,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// Whatever a client puts in the headers the verifier reads, it
        /// answers (no panic), never with a principal, and never echoes
        /// more than a clipped piece of it.
        #[test]
        fn hostile_headers_are_answered_not_panicked_on(
            auth in "[ -~]{0,300}",
            prefix in prop::bool::ANY,
            date in "[0-9TZ]{0,20}",
            sha in "[ -~]{0,80}",
            query in "[A-Za-z0-9%=&_.~-]{0,40}",
            signed in "[a-z;-]{0,40}",
        ) {
            let v = kms_verifier();
            let (mut p, body) = botocore("encrypt");
            let auth = if prefix {
                format!(
                    "AWS4-HMAC-SHA256 Credential={BOTO_AKID}/20260314/eu-west-3/kms/aws4_request, \
                     SignedHeaders={signed}, {auth}"
                )
            } else {
                auth
            };
            set(&mut p, "authorization", &auth);
            set(&mut p, "x-amz-date", &date);
            set(&mut p, "x-amz-content-sha256", &sha);
            p.uri = format!("/?{query}").parse().unwrap();
            let e = v.verify(&p, &body, at(BOTO_DATE)).unwrap_err();
            prop_assert!(e.to_string().len() < 400, "{e}");
        }

        /// Any change to the body of a signed request is caught.
        #[test]
        fn any_body_change_is_refused(at_byte in 0usize..109, bit in 0u8..8) {
            let v = kms_verifier();
            let (p, mut body) = botocore("encrypt");
            body[at_byte] ^= 1 << bit;
            let e = v.verify(&p, &body, at(BOTO_DATE)).unwrap_err();
            prop_assert_eq!(e, SigV4Error::SignatureMismatch);
        }

        /// Any change to a hex digit of the signature is caught.
        #[test]
        fn any_signature_change_is_refused(digit in 0usize..64, to in "[0-9a-f]") {
            let v = kms_verifier();
            let (mut p, body) = botocore("encrypt");
            let auth = p.headers["authorization"].to_str().unwrap().to_owned();
            let start = auth.find("Signature=").unwrap() + "Signature=".len();
            let mut changed = auth.clone().into_bytes();
            changed[start + digit] = to.as_bytes()[0];
            let changed = String::from_utf8(changed).unwrap();
            set(&mut p, "authorization", &changed);
            let result = v.verify(&p, &body, at(BOTO_DATE));
            if changed == auth {
                prop_assert!(result.is_ok());
            } else {
                prop_assert_eq!(result.unwrap_err(), SigV4Error::SignatureMismatch);
            }
        }
    }
}
