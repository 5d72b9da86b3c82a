//! AWS KMS's HTTP API end to end, on its Unix socket: the real daemon, a
//! raw HTTP/1.1 client (what goes over the socket is exactly what the
//! test wrote), AWS's errors and statuses for bad calls, one ciphertext
//! format on both protocols, keep-alive and pipelining, bounds and
//! deadlines, and the audit record of every call.

use crate::support::Daemon;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// One answer as it came off the socket.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// The exception of an error answer.
    fn error_type(&self) -> String {
        self.json()["__type"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// A keep-alive connection to the HTTP socket.
struct Conn {
    s: UnixStream,
    buf: Vec<u8>,
}

impl Conn {
    fn open(d: &Daemon) -> Conn {
        let s = UnixStream::connect(http_socket(d)).expect("connecting to the HTTP socket");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Conn { s, buf: Vec::new() }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).unwrap();
    }

    /// Reads one answer (or None at the end of the stream).
    fn read(&mut self) -> Option<Answer> {
        loop {
            if let Some(a) = self.parse() {
                return Some(a);
            }
            let mut chunk = [0u8; 65536];
            let n = match self.s.read(&mut chunk) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
                Err(e) => panic!("reading an answer: {e}"),
            };
            if n == 0 {
                assert!(
                    self.buf.is_empty(),
                    "a partial answer: {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn parse(&mut self) -> Option<Answer> {
        let end = self.buf.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = std::str::from_utf8(&self.buf[..end]).expect("an ASCII head");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (n, v) = l.split_once(':').unwrap();
                (n.trim().to_owned(), v.trim().to_owned())
            })
            .collect();
        let len: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, v)| v.parse().unwrap());
        if self.buf.len() < end + 4 + len {
            return None;
        }
        let body = self.buf[end + 4..end + 4 + len].to_vec();
        self.buf.drain(..end + 4 + len);
        Some(Answer {
            status,
            headers,
            body,
        })
    }

    fn call(&mut self, target: &str, body: &str) -> Answer {
        self.send(&request(target, body));
        self.read().expect("an answer")
    }
}

fn http_socket(d: &Daemon) -> std::path::PathBuf {
    d.socket.with_file_name("kmsd-http.sock")
}

/// An AWS SDK-shaped request for `TrentService.<target>`.
fn request(target: &str, body: &str) -> Vec<u8> {
    format!(
        "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-amz-json-1.1\r\n\
         X-Amz-Target: TrentService.{target}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(v: &Value) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().expect("a base64 string"))
        .expect("valid base64")
}

#[test]
fn calls_run_with_aws_shapes_and_ciphertexts_are_one_format_on_both_protocols() {
    let d = Daemon::start(&[]);
    let mut h = Conn::open(&d);
    let created = h.call(
        "CreateKey",
        r#"{"Description":"over http","Tags":[{"TagKey":"team","TagValue":"a"}]}"#,
    );
    assert_eq!(created.status, 200, "{:?}", created);
    assert_eq!(
        created.header("content-type"),
        Some("application/x-amz-json-1.1")
    );
    let meta = &created.json()["KeyMetadata"];
    let key = meta["KeyId"].as_str().unwrap().to_owned();
    assert_eq!(meta["KeyState"], "Enabled");
    assert_eq!(meta["Description"], "over http");
    assert!(meta["Arn"]
        .as_str()
        .unwrap()
        .ends_with(&format!("key/{key}")));
    assert!(meta["CreationDate"].is_number(), "{meta}");

    // Encrypt over HTTP, decrypt over the binary protocol.
    let secret = b"a secret carried as base64";
    let enc = h.call(
        "Encrypt",
        &json!({"KeyId": key, "Plaintext": b64(secret), "EncryptionContext": {"app": "t"}})
            .to_string(),
    );
    assert_eq!(enc.status, 200, "{:?}", enc);
    let blob = unb64(&enc.json()["CiphertextBlob"]);
    assert!(enc.json()["KeyId"].as_str().unwrap().ends_with(&key));
    assert_eq!(enc.json()["EncryptionAlgorithm"], "SYMMETRIC_DEFAULT");
    let mut c = d.client();
    let dec = c.decrypt(&blob, None, &[("app", "t")]).unwrap();
    assert_eq!(dec.plaintext.expose(), secret);

    // And the other way round.
    let e2 = c.encrypt(&key, b"from the binary side", &[]).unwrap();
    let dec = h.call(
        "Decrypt",
        &json!({"CiphertextBlob": b64(&e2.ciphertext_blob)}).to_string(),
    );
    assert_eq!(dec.status, 200, "{:?}", dec);
    assert_eq!(unb64(&dec.json()["Plaintext"]), b"from the binary side");

    // A data key: its plaintext decrypts back from its blob.
    let dk = h.call(
        "GenerateDataKey",
        &json!({"KeyId": key, "KeySpec": "AES_256"}).to_string(),
    );
    assert_eq!(dk.status, 200, "{:?}", dk);
    let plain = unb64(&dk.json()["Plaintext"]);
    assert_eq!(plain.len(), 32);
    let back = h.call(
        "Decrypt",
        &json!({"CiphertextBlob": dk.json()["CiphertextBlob"]}).to_string(),
    );
    assert_eq!(unb64(&back.json()["Plaintext"]), plain);

    // The kernel's identity of the caller, as on the binary socket.
    let who = h.call("WhoAmI", "{}");
    assert_eq!(who.status, 200, "{:?}", who);
    assert_eq!(
        who.json()["Uid"],
        rustix::process::geteuid().as_raw(),
        "{}",
        who.json()
    );

    // Errors: the typed exception and AWS's status.
    let missing = h.call("DescribeKey", r#"{"KeyId":"alias/none-such"}"#);
    assert_eq!(missing.status, 404);
    assert_eq!(missing.error_type(), "NotFoundException");
    assert!(missing.json()["message"].is_string());
    let bad_ctx = h.call(
        "Decrypt",
        &json!({"CiphertextBlob": b64(&blob), "EncryptionContext": {"app": "other"}}).to_string(),
    );
    assert_eq!(bad_ctx.status, 400);
    assert_eq!(bad_ctx.error_type(), "InvalidCiphertextException");
    let disabled = h.call("DisableKey", &json!({"KeyId": key}).to_string());
    assert_eq!(disabled.status, 200, "{:?}", disabled);
    let refused = h.call(
        "Encrypt",
        &json!({"KeyId": key, "Plaintext": b64(b"x")}).to_string(),
    );
    assert_eq!(refused.status, 409);
    assert_eq!(refused.error_type(), "DisabledException");
}

#[test]
fn bad_calls_get_aws_errors_and_the_connection_and_daemon_carry_on() {
    let d = Daemon::start(&[]);
    let mut h = Conn::open(&d);
    let key = h.call("CreateKey", "{}").json()["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        // No target.
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: 2\r\n\r\n{}".to_vec(),
            400,
            "UnknownOperationException",
        ),
        // A target of another service, and an operation kmsd does not have.
        (request("NoSuchOperation", "{}"), 400, "UnknownOperationException"),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-amz-json-1.1\r\nX-Amz-Target: DynamoDB_20120810.GetItem\r\nContent-Length: 2\r\n\r\n{}".to_vec(),
            400,
            "UnknownOperationException",
        ),
        // A wrong content type.
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Amz-Target: TrentService.GenerateRandom\r\nContent-Length: 2\r\n\r\n{}".to_vec(),
            400,
            "UnknownOperationException",
        ),
        // Not JSON, the wrong type, invalid base64.
        (request("GenerateRandom", "{not json"), 400, "SerializationException"),
        (request("GenerateRandom", r#"{"NumberOfBytes":"sixteen"}"#), 400, "SerializationException"),
        (
            request("Decrypt", r#"{"CiphertextBlob":"***not base64***"}"#),
            400,
            "SerializationException",
        ),
        // Out of AWS's bounds, and a missing required field.
        (request("GenerateRandom", r#"{"NumberOfBytes":0}"#), 400, "ValidationException"),
        (request("Encrypt", r#"{"Plaintext":"eA=="}"#), 400, "ValidationException"),
    ];
    for (req, status, name) in cases {
        h.send(&req);
        let a = h.read().expect("an answer on the same connection");
        assert_eq!(
            (a.status, a.error_type().as_str()),
            (status, name),
            "{:?} for {:?}",
            a,
            String::from_utf8_lossy(&req)
        );
        assert!(a.header("x-amzn-requestid").is_some());
    }
    // Unknown fields are ignored, as AWS does.
    let ok = h.call(
        "Encrypt",
        &json!({"KeyId": key, "Plaintext": b64(b"x"), "SomeFieldAwsMayAdd": {"x": [1, 2]}})
            .to_string(),
    );
    assert_eq!(ok.status, 200, "{:?}", ok);
    // An empty body is `{}`.
    let empty = h.call("ListKeys", "");
    assert_eq!(empty.status, 200, "{:?}", empty);
    assert_eq!(empty.json()["Keys"].as_array().unwrap().len(), 1);
    // Garbage that is not HTTP: that connection closes, the daemon and the
    // other connections carry on.
    let mut junk = UnixStream::connect(http_socket(&d)).unwrap();
    junk.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    junk.write_all(b"\x00\x01\x02 not http at all\r\n\r\n")
        .unwrap();
    let mut rest = Vec::new();
    let _ = junk.read_to_end(&mut rest);
    let after = h.call("GenerateRandom", r#"{"NumberOfBytes":8}"#);
    assert_eq!(after.status, 200);
    assert_eq!(unb64(&after.json()["Plaintext"]).len(), 8);
    d.client().describe_key(&key).unwrap();
}

#[test]
fn pipelined_calls_are_answered_in_order_on_one_connection() {
    let d = Daemon::start(&[]);
    let mut h = Conn::open(&d);
    let mut all = Vec::new();
    for n in 1..=20 {
        all.extend(request(
            "GenerateRandom",
            &format!(r#"{{"NumberOfBytes":{n}}}"#),
        ));
    }
    h.send(&all);
    let mut ids = Vec::new();
    for n in 1..=20 {
        let a = h.read().expect("an answer");
        assert_eq!(a.status, 200);
        assert_eq!(unb64(&a.json()["Plaintext"]).len(), n);
        ids.push(a.header("x-amzn-requestid").unwrap().to_owned());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 20, "every answer has its own request id");
}

fn daemon_with(config: &str) -> (Daemon, tempfile::TempDir) {
    let dir = tempfile::Builder::new()
        .prefix("kmsd-http-")
        .tempdir()
        .unwrap();
    let path = dir.path().join("kmsd.toml");
    std::fs::write(&path, config).unwrap();
    (Daemon::start(&["--config", path.to_str().unwrap()]), dir)
}

#[test]
fn bodies_and_heads_are_bounded_and_slow_bodies_are_cut_off() {
    let (d, _cfg) =
        daemon_with("[http]\nmax_body_bytes = 4096\nrequest_timeout_ms = 400\nmax_headers = 16\n");
    // Too large, as announced: answered, then the connection closes.
    let mut h = Conn::open(&d);
    h.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-amz-json-1.1\r\nX-Amz-Target: TrentService.Encrypt\r\nContent-Length: 100000\r\n\r\n{");
    let a = h.read().expect("an answer");
    assert_eq!(
        (a.status, a.error_type().as_str()),
        (400, "ValidationException"),
        "{a:?}"
    );
    assert!(h.read().is_none(), "the connection is closed");
    // Too large, chunked (no length announced).
    let mut h = Conn::open(&d);
    let big = format!(r#"{{"Plaintext":"{}"}}"#, "A".repeat(8000));
    h.send(
        format!(
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-amz-json-1.1\r\nX-Amz-Target: TrentService.Encrypt\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{big}\r\n0\r\n\r\n",
            big.len()
        )
        .as_bytes(),
    );
    let a = h.read().expect("an answer");
    assert_eq!(
        (a.status, a.error_type().as_str()),
        (400, "ValidationException"),
        "{a:?}"
    );
    // Too many headers.
    let mut h = Conn::open(&d);
    let mut req = String::from("POST / HTTP/1.1\r\nHost: x\r\n");
    for i in 0..40 {
        req.push_str(&format!("X-Filler-{i}: {i}\r\n"));
    }
    req.push_str("Content-Length: 0\r\n\r\n");
    h.send(req.as_bytes());
    // hyper answers 431 when it can write before it closes; either way the
    // call is not run and the connection ends.
    if let Some(a) = h.read() {
        assert_eq!(a.status, 431, "{a:?}");
        assert!(h.read().is_none(), "the connection is closed");
    }
    // A body that never completes: cut off after the timeout.
    let mut h = Conn::open(&d);
    let started = Instant::now();
    h.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-amz-json-1.1\r\nX-Amz-Target: TrentService.GenerateRandom\r\nContent-Length: 50\r\n\r\n{\"Num");
    let a = h.read().expect("an answer");
    assert_eq!(a.status, 408, "{a:?}");
    assert_eq!(a.error_type(), "RequestTimeoutException");
    assert!(
        started.elapsed() >= Duration::from_millis(350),
        "{:?}",
        started.elapsed()
    );
    assert!(h.read().is_none(), "the connection is closed");
    // The daemon is fine.
    let mut h = Conn::open(&d);
    assert_eq!(
        h.call("GenerateRandom", r#"{"NumberOfBytes":8}"#).status,
        200
    );
}

#[test]
fn every_call_is_audited_with_its_request_id_refusals_included() {
    let (d, _cfg) = daemon_with("[audit]\nenabled = true\n");
    let mut h = Conn::open(&d);
    let created = h.call("CreateKey", "{}");
    let id = created.header("x-amzn-requestid").unwrap().to_owned();
    let bad = h.call("GenerateRandom", "{oops");
    let bad_id = bad.header("x-amzn-requestid").unwrap().to_owned();
    let dir = d.data_dir.join("audit");
    let deadline = Instant::now() + Duration::from_secs(20);
    let records = loop {
        let mut all = Vec::new();
        for e in std::fs::read_dir(&dir).unwrap() {
            let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
            all.extend(
                text.lines()
                    .map(|l| serde_json::from_str::<Value>(l).unwrap()),
            );
        }
        let has = |rid: &str| all.iter().any(|r| r["requestID"].as_str() == Some(rid));
        if (has(&id) && has(&bad_id)) || Instant::now() > deadline {
            break all;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let find = |rid: &str| {
        records
            .iter()
            .find(|r| r["requestID"].as_str() == Some(rid))
            .unwrap_or_else(|| panic!("no record with requestID {rid}"))
    };
    let r = find(&id);
    assert_eq!(r["eventName"], "CreateKey");
    assert_eq!(
        r["userIdentity"]["uid"],
        rustix::process::geteuid().as_raw()
    );
    let r = find(&bad_id);
    assert_eq!(r["errorCode"], "SerializationException");
    assert_eq!(r["eventName"], "GenerateRandom");
}

#[test]
fn the_tcp_listener_wants_a_signature_and_loopback() {
    let dir = tempfile::Builder::new()
        .prefix("kmsd-http-tcp-")
        .tempdir()
        .unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "not-a-real-secret-0123\n").unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let creds = format!(
        "[[http.credentials]]\naccess_key_id = \"AKIDKMSDTEST\"\nsecret_file = {:?}\nprincipal = \"uid:{}\"\n",
        secret,
        rustix::process::geteuid().as_raw()
    );
    let (d, _cfg) = daemon_with(&format!("[http]\ntcp = \"127.0.0.1:{port}\"\n{creds}"));
    // No signature: refused with AWS's exception, nothing runs, and the
    // connection and the daemon carry on.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(&request("CreateKey", "{}")).unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("}") {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("MissingAuthenticationToken"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("x-amzn-requestid"),
        "{text}"
    );
    assert!(
        d.client().list_keys(100, None).unwrap().keys.is_empty(),
        "nothing ran"
    );
    drop(d);

    // A non-loopback address is refused at start-up unless the config
    // says so, and so is a TCP listener without credentials.
    for (config, says) in [
        (
            format!("[http]\ntcp = \"0.0.0.0:{port}\"\n{creds}"),
            "not a loopback address",
        ),
        (
            format!("[http]\ntcp = \"127.0.0.1:{port}\"\n"),
            "needs [[http.credentials]]",
        ),
    ] {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, config).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kmsd"))
            .args(["serve", "--socket"])
            .arg(dir.path().join("k.sock"))
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{err}");
        assert!(
            !dir.path().join("kmsd-http.sock").exists(),
            "a refused start leaves no socket"
        );
    }

    // A secret file others may read: `--check-config` refuses it as start-up
    // does, and start-up leaves no socket behind.
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let path = dir.path().join("readable.toml");
    std::fs::write(
        &path,
        format!("[http]\ntcp = \"127.0.0.1:{port}\"\n{creds}"),
    )
    .unwrap();
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_kmsd"))
        .arg("--check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!check.status.success());
    assert!(
        String::from_utf8_lossy(&check.stderr).contains("0644"),
        "{check:?}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kmsd"))
        .args(["serve", "--socket"])
        .arg(dir.path().join("k.sock"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        !dir.path().join("kmsd-http.sock").exists(),
        "a refused start leaves no socket"
    );
}

/// The request ids of the log's records.
fn logged_ids(dir: &std::path::Path) -> std::collections::HashSet<String> {
    crate::audit::records(dir)
        .iter()
        .filter_map(|r| r["requestID"].as_str().map(str::to_owned))
        .collect()
}

/// HTTP answers are made before their records are written (hyper answers
/// a whole pipeline in one turn), but no byte of an answer reaches the
/// socket before the record of its request, refusals included: each
/// answer's record is in the file when the answer arrives.
#[test]
fn every_answer_arrives_after_its_record_pipelined_or_not() {
    let (d, _cfg) = daemon_with("[audit]\nenabled = true\n");
    let dir = d.data_dir.join("audit");
    let mut h = Conn::open(&d);
    let created = h.call("CreateKey", "{}");
    assert_eq!(created.status, 200, "{created:?}");
    let key = created.json()["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    let gdk = format!(r#"{{"KeyId":"{key}","NumberOfBytes":32}}"#);
    for round in 0..4 {
        let mut all = Vec::new();
        for i in 0..24 {
            // Every sixth a body that does not decode: refused before it
            // becomes a frame.
            let body = if i % 6 == 5 { "{oops" } else { gdk.as_str() };
            all.extend(request("GenerateDataKey", body));
        }
        h.send(&all);
        for i in 0..24 {
            let a = h.read().expect("an answer");
            let want = if i % 6 == 5 { 400 } else { 200 };
            assert_eq!(a.status, want, "round {round} call {i}: {a:?}");
            let id = a.header("x-amzn-requestid").unwrap().to_owned();
            assert!(
                logged_ids(&dir).contains(&id),
                "round {round} call {i}: answer {id} arrived before its record"
            );
        }
    }
    // One at a time too.
    let a = h.call("GenerateDataKey", &gdk);
    let id = a.header("x-amzn-requestid").unwrap().to_owned();
    assert!(
        logged_ids(&dir).contains(&id),
        "{id} answered before its record"
    );
}

/// Fail-closed over HTTP: when the log cannot be written, a call whose
/// answer was already made has its connection closed instead (the answer
/// cannot be taken back from the connection), every call after it is
/// refused ServiceUnavailableException unrun, no 200 ever arrives without
/// its record, and calls are answered again once the disk has room.
#[test]
fn fail_closed_over_http_answers_nothing_unrecorded_and_recovers() {
    let fs = crate::audit::Tmpfs::mount("1m");
    let audit = fs.0.path().join("audit");
    let (d, _cfg) = daemon_with(&format!("[audit]\ndirectory = \"{}\"\n", audit.display()));
    let mut h = Conn::open(&d);
    let created = h.call("CreateKey", "{}");
    let key = created.json()["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    let gdk = format!(r#"{{"KeyId":"{key}","NumberOfBytes":32}}"#);
    let filler = fs.fill();
    // Pipelines of 8 until a refusal: the file's last page may still have
    // room for a few records.
    let (mut answered, mut closed) = (0, 0);
    let refusal = 'outer: loop {
        assert!(answered < 2000, "never refused on a full file system");
        let mut all = Vec::new();
        for _ in 0..8 {
            all.extend(request("GenerateDataKey", &gdk));
        }
        h.send(&all);
        for _ in 0..8 {
            let Some(a) = h.read() else {
                // Closed with answers whose records failed.
                closed += 1;
                h = Conn::open(&d);
                continue 'outer;
            };
            if a.status != 200 {
                break 'outer a;
            }
            let id = a.header("x-amzn-requestid").unwrap().to_owned();
            assert!(
                logged_ids(&audit).contains(&id),
                "{id} answered without its record"
            );
            answered += 1;
        }
    };
    assert_eq!(refusal.status, 503, "{refusal:?}");
    assert_eq!(refusal.error_type(), "ServiceUnavailableException");
    assert!(
        closed <= 1,
        "closed {closed} times: refused up front after the first failure"
    );
    // Refused at once while it stays full, on a new connection too.
    let mut h = Conn::open(&d);
    let a = h.call("CreateKey", "{}");
    assert_eq!(
        (a.status, a.error_type().as_str()),
        (503, "ServiceUnavailableException")
    );
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let a = h.call("GenerateDataKey", &gdk);
        if a.status == 200 {
            let id = a.header("x-amzn-requestid").unwrap().to_owned();
            assert!(logged_ids(&audit).contains(&id));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not recovered: {a:?}\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = crate::audit::verify(&d, &audit, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", crate::audit::text(&o));
}

/// An HTTP call's latency is in the metrics once, when its answer may
/// leave (its record written), pipelined or not.
#[test]
fn http_calls_are_timed_once_each() {
    use std::os::unix::fs::PermissionsExt as _;
    let sock_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(sock_dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let sock = sock_dir.path().join("metrics.sock");
    let (d, _cfg) = daemon_with(&format!("[metrics]\nlisten = \"{}\"\n", sock.display()));
    let mut h = Conn::open(&d);
    let mut all = Vec::new();
    for _ in 0..7 {
        all.extend(request("GenerateRandom", r#"{"NumberOfBytes":8}"#));
    }
    h.send(&all);
    for _ in 0..7 {
        assert_eq!(h.read().expect("an answer").status, 200);
    }
    assert_eq!(
        h.call("GenerateRandom", r#"{"NumberOfBytes":8}"#).status,
        200
    );
    let (_, _, body) = crate::metrics::get(UnixStream::connect(&sock).unwrap());
    let timed = crate::metrics::parse(&body)
        .samples
        .into_iter()
        .find(|x| {
            x.metric == "kmsd_request_duration_seconds_count"
                && x.labels.get("operation") == Some("GenerateRandom")
        })
        .map(|x| match x.value {
            prometheus_parse::Value::Untyped(v) | prometheus_parse::Value::Counter(v) => v,
            ref other => panic!("{other:?}"),
        });
    assert_eq!(timed, Some(8.0), "{body}");
}
