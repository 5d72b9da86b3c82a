//! kmsctl end to end: the real `kmsctl` binary against the real `kmsd`, every
//! command in human and `--json` output, files and stdin, exit codes.

use crate::support::Daemon;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::process::Output;

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts success; returns stdout as text.
#[track_caller]
fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "kmsctl failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// Asserts success and parses stdout as one JSON object.
#[track_caller]
fn json(out: Output) -> Value {
    let text = ok(out);
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert!(v.is_object(), "{text}");
    v
}

/// Asserts the exit code and that stderr is `kmsctl: <exception>: ...`.
#[track_caller]
fn fails_with(out: Output, exception: &str) {
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected exit 1 ({exception});\nstdout: {}\nstderr: {}",
        stdout(&out),
        stderr(&out)
    );
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!("kmsctl: {exception}: ")),
        "expected {exception}, stderr: {err}"
    );
    assert!(out.stdout.is_empty(), "nothing on stdout on failure");
}

#[track_caller]
fn usage_error(out: Output) {
    assert_eq!(
        out.status.code(),
        Some(2),
        "expected a usage error;\nstdout: {}\nstderr: {}",
        stdout(&out),
        stderr(&out)
    );
}

fn b64(v: &Value) -> Vec<u8> {
    B64.decode(v.as_str().unwrap_or_else(|| panic!("not a string: {v}")))
        .unwrap_or_else(|e| panic!("not base64 ({e}): {v}"))
}

/// The value of a `Name: value` line of human output.
#[track_caller]
fn field(text: &str, name: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} line in:\n{text}"))
        .trim()
        .to_owned()
}

fn create_key(d: &Daemon, description: &str) -> String {
    let v = json(d.kmsctl(
        &["--json", "create-key", "--description", description],
        None,
    ));
    v["KeyMetadata"]["KeyId"].as_str().unwrap().to_owned()
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn create_key_and_describe_key() {
    let d = Daemon::start(&[]);

    let v = json(d.kmsctl(&["--json", "create-key", "--description", "json key"], None));
    let m = &v["KeyMetadata"];
    let key = m["KeyId"].as_str().unwrap().to_owned();
    assert!(!key.is_empty());
    assert!(m["Arn"].as_str().unwrap().ends_with(&key), "{v}");
    assert_eq!(m["Description"], "json key");
    assert_eq!(m["Enabled"], true);
    assert_eq!(m["KeyState"], "Enabled");
    assert_eq!(m["KeyUsage"], "ENCRYPT_DECRYPT");
    assert_eq!(m["KeySpec"], "SYMMETRIC_DEFAULT");
    assert!(m["CreationDate"].as_i64().unwrap() > 1_600_000_000, "{v}");

    let text = ok(d.kmsctl(&["create-key", "--description", "human key"], None));
    let key2 = field(&text, "KeyId");
    assert_ne!(key2, key);
    assert_eq!(field(&text, "Description"), "human key");
    assert_eq!(field(&text, "KeyState"), "Enabled");
    assert!(field(&text, "Arn").ends_with(&key2));
    assert!(field(&text, "CreationDate").ends_with('Z'), "{text}");

    let v = json(d.kmsctl(&["describe-key", "--json", "--key-id", &key], None));
    assert_eq!(v["KeyMetadata"]["KeyId"], key.as_str());
    assert_eq!(v["KeyMetadata"]["Description"], "json key");
    // By ARN as well as by id.
    let arn = v["KeyMetadata"]["Arn"].as_str().unwrap().to_owned();
    let text = ok(d.kmsctl(&["describe-key", "--key-id", &arn], None));
    assert_eq!(field(&text, "KeyId"), key);
    assert_eq!(field(&text, "Enabled"), "true");

    // No description at all is fine.
    let v = json(d.kmsctl(&["--json", "create-key"], None));
    assert_eq!(v["KeyMetadata"]["Description"], "");
}

#[test]
fn list_keys_pages_with_limit_and_all() {
    let d = Daemon::start(&[]);
    let mut created: Vec<String> = (0..5).map(|i| create_key(&d, &format!("k{i}"))).collect();
    created.sort();

    // Page by page with --limit 2, following NextMarker by hand.
    let mut seen = Vec::new();
    let mut marker: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut args = vec!["--json", "list-keys", "--limit", "2"];
        if let Some(m) = &marker {
            args.extend(["--marker", m.as_str()]);
        }
        let v = json(d.kmsctl(&args, None));
        pages += 1;
        let keys = v["Keys"].as_array().unwrap();
        assert!(keys.len() <= 2, "{v}");
        for k in keys {
            let id = k["KeyId"].as_str().unwrap().to_owned();
            assert!(k["KeyArn"].as_str().unwrap().ends_with(&id), "{v}");
            seen.push(id);
        }
        if v["Truncated"] == true {
            marker = Some(
                v["NextMarker"]
                    .as_str()
                    .expect("NextMarker when truncated")
                    .into(),
            );
        } else {
            assert!(v.get("NextMarker").is_none(), "{v}");
            break;
        }
        assert!(pages < 10, "too many pages");
    }
    assert_eq!(pages, 3);
    seen.sort();
    assert_eq!(seen, created);

    // --all follows the markers itself.
    let v = json(d.kmsctl(&["--json", "list-keys", "--all", "--limit", "2"], None));
    assert_eq!(v["Truncated"], false);
    let mut all: Vec<String> = v["Keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["KeyId"].as_str().unwrap().to_owned())
        .collect();
    all.sort();
    assert_eq!(all, created);

    // Human: one key per line, then the paging fields.
    let text = ok(d.kmsctl(&["list-keys", "--limit", "2"], None));
    let key_lines = |t: &str| {
        t.lines()
            .filter(|l| !l.starts_with("Truncated:") && !l.starts_with("NextMarker:"))
            .count()
    };
    assert_eq!(key_lines(&text), 2, "{text}");
    assert_eq!(field(&text, "Truncated"), "true");
    assert!(!field(&text, "NextMarker").is_empty());
    let text = ok(d.kmsctl(&["list-keys"], None));
    for k in &created {
        assert!(
            text.lines().any(|l| l.starts_with(k.as_str())),
            "{k} in {text}"
        );
    }
    assert_eq!(field(&text, "Truncated"), "false");

    // A marker the daemon never issued.
    let out = d.kmsctl(&["list-keys", "--marker", "not-a-marker"], None);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}

#[test]
fn encrypt_decrypt_round_trip_through_files_and_stdin() {
    let d = Daemon::start(&[]);
    let key = create_key(&d, "files");
    let dir = d.dir.path();
    let pt_file = dir.join("plain.bin");
    let plaintext: Vec<u8> = (0..=255u8).chain([0, 10, 13]).collect();
    std::fs::write(&pt_file, &plaintext).unwrap();
    let pt_arg = pt_file.to_str().unwrap();

    // File in, raw blob file out.
    let blob_file = dir.join("blob");
    let blob_arg = blob_file.to_str().unwrap();
    let text = ok(d.kmsctl(
        &[
            "encrypt",
            "--key-id",
            &key,
            "--plaintext-file",
            pt_arg,
            "--context",
            "app=demo",
            "--output",
            blob_arg,
        ],
        None,
    ));
    assert!(field(&text, "KeyId").contains(&key), "{text}");
    assert!(!text.contains("CiphertextBlob"), "{text}");
    let blob = std::fs::read(&blob_file).unwrap();
    assert!(blob.len() > plaintext.len());

    // Raw blob file in: human output shows Plaintext as base64.
    let text = ok(d.kmsctl(
        &[
            "decrypt",
            "--ciphertext-file",
            blob_arg,
            "--context",
            "app=demo",
        ],
        None,
    ));
    assert_eq!(B64.decode(field(&text, "Plaintext")).unwrap(), plaintext);
    assert!(field(&text, "KeyId").contains(&key));

    // --output FILE for plaintext: raw bytes, mode 0600.
    let out_file = dir.join("decrypted.bin");
    let out_arg = out_file.to_str().unwrap();
    let text = ok(d.kmsctl(
        &[
            "decrypt",
            "--ciphertext-file",
            blob_arg,
            "--context",
            "app=demo",
            "--output",
            out_arg,
        ],
        None,
    ));
    assert!(!text.contains("Plaintext"), "{text}");
    assert_eq!(std::fs::read(&out_file).unwrap(), plaintext);
    assert_eq!(mode(&out_file), 0o600);
    // Also when the file existed with a wider mode.
    std::fs::set_permissions(&out_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    ok(d.kmsctl(
        &[
            "decrypt",
            "--ciphertext-file",
            blob_arg,
            "--context",
            "app=demo",
            "--output",
            out_arg,
        ],
        None,
    ));
    assert_eq!(mode(&out_file), 0o600);

    // --output - : the raw plaintext alone on stdout.
    let out = d.kmsctl(
        &[
            "decrypt",
            "--ciphertext-file",
            blob_arg,
            "--context",
            "app=demo",
            "--output",
            "-",
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, plaintext);

    // Stdin in, JSON out; base64 text on stdin back in.
    let v = json(d.kmsctl(
        &["--json", "encrypt", "--key-id", &key, "--context", "k=v"],
        Some(b"from stdin"),
    ));
    assert!(v["KeyId"].as_str().unwrap().contains(&key));
    let blob_b64 = v["CiphertextBlob"].as_str().unwrap().to_owned();
    let v = json(d.kmsctl(
        &["--json", "decrypt", "--context", "k=v"],
        Some(format!("{blob_b64}\n").as_bytes()),
    ));
    assert_eq!(b64(&v["Plaintext"]), b"from stdin");
    assert!(v["KeyId"].as_str().unwrap().contains(&key));

    // Raw binary on stdin works too, and so does --key-id.
    let raw = B64.decode(&blob_b64).unwrap();
    let v = json(d.kmsctl(
        &["--json", "decrypt", "--key-id", &key, "--context", "k=v"],
        Some(&raw),
    ));
    assert_eq!(b64(&v["Plaintext"]), b"from stdin");

    // encrypt --output - | decrypt (raw blob through a pipe).
    let out = d.kmsctl(
        &["encrypt", "--key-id", &key, "--output", "-"],
        Some(b"piped"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = d.kmsctl(&["decrypt", "--output", "-"], Some(&out.stdout));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, b"piped");

    // Ciphertext written with --output keeps the default file mode (it is
    // not secret); only plaintext files are forced to 0600.
    assert_eq!(std::fs::read(&blob_file).unwrap(), blob);
}

#[test]
fn generate_data_key_and_decrypt_its_blob() {
    let d = Daemon::start(&[]);
    let key = create_key(&d, "data keys");

    for (args, len) in [
        (vec!["--key-spec", "AES_256"], 32),
        (vec!["--key-spec", "AES_128"], 16),
        (vec!["--number-of-bytes", "48"], 48),
    ] {
        let mut cmd = vec![
            "--json",
            "generate-data-key",
            "--key-id",
            &key,
            "--context",
            "app=demo",
        ];
        cmd.extend(args.iter().copied());
        let v = json(d.kmsctl(&cmd, None));
        let plaintext = b64(&v["Plaintext"]);
        assert_eq!(plaintext.len(), len, "{args:?}");
        assert!(v["KeyId"].as_str().unwrap().contains(&key));
        let blob = b64(&v["CiphertextBlob"]);
        let v = json(d.kmsctl(
            &["--json", "decrypt", "--context", "app=demo"],
            Some(B64.encode(&blob).as_bytes()),
        ));
        assert_eq!(b64(&v["Plaintext"]), plaintext);
    }

    // Human output, and --output for the plaintext (0600).
    let text = ok(d.kmsctl(
        &[
            "generate-data-key",
            "--key-id",
            &key,
            "--key-spec",
            "AES_256",
        ],
        None,
    ));
    let plaintext = B64.decode(field(&text, "Plaintext")).unwrap();
    assert_eq!(plaintext.len(), 32);
    let blob = B64.decode(field(&text, "CiphertextBlob")).unwrap();
    let v = json(d.kmsctl(&["--json", "decrypt"], Some(&blob)));
    assert_eq!(b64(&v["Plaintext"]), plaintext);

    let key_file = d.dir.path().join("data.key");
    let v = json(d.kmsctl(
        &[
            "--json",
            "generate-data-key",
            "--key-id",
            &key,
            "--number-of-bytes",
            "32",
            "--output",
            key_file.to_str().unwrap(),
        ],
        None,
    ));
    assert!(v.get("Plaintext").is_none(), "{v}");
    assert_eq!(mode(&key_file), 0o600);
    let v2 = json(d.kmsctl(&["--json", "decrypt"], Some(&b64(&v["CiphertextBlob"]))));
    assert_eq!(b64(&v2["Plaintext"]), std::fs::read(&key_file).unwrap());

    // Without plaintext: only the blob, which decrypts to a key of the size.
    let v = json(d.kmsctl(
        &[
            "--json",
            "generate-data-key-without-plaintext",
            "--key-id",
            &key,
            "--key-spec",
            "AES_128",
            "--context",
            "a=b",
        ],
        None,
    ));
    assert!(v.get("Plaintext").is_none(), "{v}");
    let blob = b64(&v["CiphertextBlob"]);
    let v = json(d.kmsctl(&["--json", "decrypt", "--context", "a=b"], Some(&blob)));
    assert_eq!(b64(&v["Plaintext"]).len(), 16);
    let text = ok(d.kmsctl(
        &[
            "generate-data-key-without-plaintext",
            "--key-id",
            &key,
            "--number-of-bytes",
            "24",
        ],
        None,
    ));
    assert!(!text.contains("Plaintext"), "{text}");
    assert!(!field(&text, "CiphertextBlob").is_empty());

    // Exactly one of --key-spec and --number-of-bytes.
    usage_error(d.kmsctl(&["generate-data-key", "--key-id", &key], None));
    usage_error(d.kmsctl(
        &[
            "generate-data-key",
            "--key-id",
            &key,
            "--key-spec",
            "AES_256",
            "--number-of-bytes",
            "32",
        ],
        None,
    ));
    usage_error(d.kmsctl(
        &[
            "generate-data-key",
            "--key-id",
            &key,
            "--key-spec",
            "AES_512",
        ],
        None,
    ));
    // Out of range: the daemon's ValidationException.
    fails_with(
        d.kmsctl(
            &[
                "generate-data-key",
                "--key-id",
                &key,
                "--number-of-bytes",
                "0",
            ],
            None,
        ),
        "ValidationException",
    );
}

#[test]
fn encryption_context_must_match() {
    let d = Daemon::start(&[]);
    let key = create_key(&d, "contexts");
    let v = json(d.kmsctl(
        &[
            "--json",
            "encrypt",
            "--key-id",
            &key,
            "--context",
            "app=demo",
            "--context",
            "expr=a=b",
        ],
        Some(b"secret"),
    ));
    let blob = b64(&v["CiphertextBlob"]);

    // Same pairs in another order: fine ('=' splits at the first '=').
    let v = json(d.kmsctl(
        &[
            "--json",
            "decrypt",
            "--context",
            "expr=a=b",
            "--context",
            "app=demo",
        ],
        Some(&blob),
    ));
    assert_eq!(b64(&v["Plaintext"]), b"secret");

    for wrong in [
        vec!["--context", "app=other", "--context", "expr=a=b"],
        vec!["--context", "app=demo"],
        vec!["--context", "app=demo", "--context", "expr=a"],
        vec![],
    ] {
        let mut args = vec!["decrypt"];
        args.extend(wrong.iter().copied());
        fails_with(d.kmsctl(&args, Some(&blob)), "InvalidCiphertextException");
    }

    // A pair without '=' is a usage error, before anything is sent.
    usage_error(d.kmsctl(
        &["encrypt", "--key-id", &key, "--context", "novalue"],
        Some(b"x"),
    ));
    usage_error(d.kmsctl(&["decrypt", "--context", "novalue"], Some(&blob)));

    // Garbage is not a ciphertext.
    fails_with(
        d.kmsctl(&["decrypt"], Some(b"\x00\x01 not a blob")),
        "InvalidCiphertextException",
    );
}

#[test]
fn re_encrypt_moves_a_blob_to_another_key() {
    let d = Daemon::start(&[]);
    let a = create_key(&d, "source");
    let b = create_key(&d, "destination");
    let blob_file = d.dir.path().join("blob-a");
    ok(d.kmsctl(
        &[
            "encrypt",
            "--key-id",
            &a,
            "--context",
            "v=1",
            "--output",
            blob_file.to_str().unwrap(),
        ],
        Some(b"moving"),
    ));

    let v = json(d.kmsctl(
        &[
            "--json",
            "re-encrypt",
            "--destination-key-id",
            &b,
            "--source-key-id",
            &a,
            "--ciphertext-file",
            blob_file.to_str().unwrap(),
            "--source-context",
            "v=1",
            "--destination-context",
            "v=2",
        ],
        None,
    ));
    assert!(v["SourceKeyId"].as_str().unwrap().contains(&a), "{v}");
    assert!(v["KeyId"].as_str().unwrap().contains(&b), "{v}");
    let new_blob = b64(&v["CiphertextBlob"]);
    let v = json(d.kmsctl(&["--json", "decrypt", "--context", "v=2"], Some(&new_blob)));
    assert_eq!(b64(&v["Plaintext"]), b"moving");
    assert!(v["KeyId"].as_str().unwrap().contains(&b));
    fails_with(
        d.kmsctl(&["decrypt", "--context", "v=1"], Some(&new_blob)),
        "InvalidCiphertextException",
    );

    // Human output, blob from stdin (base64), no contexts needed for none.
    let blob_none =
        b64(&json(d.kmsctl(&["--json", "encrypt", "--key-id", &a], Some(b"x")))["CiphertextBlob"]);
    let text = ok(d.kmsctl(
        &["re-encrypt", "--destination-key-id", &b],
        Some(B64.encode(&blob_none).as_bytes()),
    ));
    assert!(field(&text, "SourceKeyId").contains(&a));
    assert!(field(&text, "KeyId").contains(&b));
    let again = B64.decode(field(&text, "CiphertextBlob")).unwrap();
    let v = json(d.kmsctl(&["--json", "decrypt"], Some(&again)));
    assert_eq!(b64(&v["Plaintext"]), b"x");

    // Wrong source context, wrong source key.
    fails_with(
        d.kmsctl(
            &[
                "re-encrypt",
                "--destination-key-id",
                &b,
                "--ciphertext-file",
                blob_file.to_str().unwrap(),
                "--source-context",
                "v=9",
            ],
            None,
        ),
        "InvalidCiphertextException",
    );
    fails_with(
        d.kmsctl(
            &[
                "re-encrypt",
                "--destination-key-id",
                &b,
                "--source-key-id",
                &b,
                "--ciphertext-file",
                blob_file.to_str().unwrap(),
                "--source-context",
                "v=1",
            ],
            None,
        ),
        "IncorrectKeyException",
    );
    fails_with(
        d.kmsctl(
            &["decrypt", "--key-id", &b, "--context", "v=1"],
            Some(&std::fs::read(&blob_file).unwrap()),
        ),
        "IncorrectKeyException",
    );
}

#[test]
fn generate_random_in_every_output_form() {
    let d = Daemon::start(&[]);
    let v = json(d.kmsctl(
        &["--json", "generate-random", "--number-of-bytes", "32"],
        None,
    ));
    assert_eq!(b64(&v["Plaintext"]).len(), 32);
    let text = ok(d.kmsctl(&["generate-random", "--number-of-bytes", "7"], None));
    assert_eq!(B64.decode(field(&text, "Plaintext")).unwrap().len(), 7);
    let out = d.kmsctl(
        &[
            "generate-random",
            "--number-of-bytes",
            "1024",
            "--output",
            "-",
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout.len(), 1024);
    let file = d.dir.path().join("random.bin");
    let text = ok(d.kmsctl(
        &[
            "generate-random",
            "--number-of-bytes",
            "16",
            "--output",
            file.to_str().unwrap(),
        ],
        None,
    ));
    assert!(text.trim().is_empty(), "{text}");
    assert_eq!(std::fs::read(&file).unwrap().len(), 16);
    assert_eq!(mode(&file), 0o600);
    fails_with(
        d.kmsctl(&["generate-random", "--number-of-bytes", "1025"], None),
        "ValidationException",
    );
    usage_error(d.kmsctl(&["generate-random"], None));
    usage_error(d.kmsctl(&["generate-random", "--number-of-bytes", "-1"], None));
}

#[test]
fn whoami_shows_the_identity_the_daemon_sees() {
    let d = Daemon::start(&[]);
    let v = json(d.kmsctl(&["--json", "whoami"], None));
    assert_eq!(v["Uid"], u64::from(rustix::process::getuid().as_raw()));
    assert_eq!(v["Gid"], u64::from(rustix::process::getgid().as_raw()));
    // kmsctl's own pid, which this test does not know; a real process.
    assert!(v["Pid"].as_i64().is_some_and(|p| p > 0), "{v}");
    let text = ok(d.kmsctl(&["whoami"], None));
    assert_eq!(
        field(&text, "Uid"),
        rustix::process::getuid().as_raw().to_string()
    );
}

#[test]
fn unknown_key_is_not_found_with_exit_1() {
    let d = Daemon::start(&[]);
    let missing = "00000000-0000-4000-8000-000000000000";
    fails_with(
        d.kmsctl(&["describe-key", "--key-id", missing], None),
        "NotFoundException",
    );
    fails_with(
        d.kmsctl(&["--json", "encrypt", "--key-id", missing], Some(b"x")),
        "NotFoundException",
    );
    fails_with(
        d.kmsctl(
            &[
                "generate-data-key",
                "--key-id",
                missing,
                "--key-spec",
                "AES_256",
            ],
            None,
        ),
        "NotFoundException",
    );
}

#[test]
fn usage_errors_exit_2() {
    let d = Daemon::start(&[]);
    usage_error(d.kmsctl(&["no-such-command"], None));
    usage_error(d.kmsctl(&["describe-key"], None));
    usage_error(d.kmsctl(&["list-keys", "--limit", "many"], None));
    // An input file that cannot be read.
    let out = d.kmsctl(
        &[
            "encrypt",
            "--key-id",
            "k",
            "--plaintext-file",
            "/nonexistent/plain",
        ],
        None,
    );
    usage_error(out);
    let out = d.kmsctl(&["decrypt"], Some(b""));
    usage_error(out);
    // --help is not an error.
    assert!(d.kmsctl(&["--help"], None).status.success());
    assert!(d.kmsctl(&["encrypt", "--help"], None).status.success());
}

#[test]
fn a_missing_daemon_exits_3_with_a_hint() {
    let mut d = Daemon::start(&[]);
    d.stop();
    for (args, stdin) in [
        (vec!["list-keys"], None),
        (vec!["encrypt", "--key-id", "k"], Some(&b"x"[..])),
    ] {
        let out = d.kmsctl(&args, stdin);
        assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(d.socket.to_str().unwrap()), "{err}");
        assert!(err.contains("kmsd"), "{err}");
        assert!(err.contains("hint"), "{err}");
        assert!(out.stdout.is_empty());
    }
    // A crash leaves a stale socket file: still exit 3.
    d.restart();
    d.kill();
    let out = d.kmsctl(&["describe-key", "--key-id", "k"], None);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
}

#[test]
fn restart_keeps_keys_and_old_ciphertexts_decrypt() {
    let mut d = Daemon::start(&[]);
    let key = create_key(&d, "durable");
    let blob = b64(&json(d.kmsctl(
        &["--json", "encrypt", "--key-id", &key, "--context", "v=1"],
        Some(b"survives"),
    ))["CiphertextBlob"]);
    let data_key = json(d.kmsctl(
        &[
            "--json",
            "generate-data-key",
            "--key-id",
            &key,
            "--key-spec",
            "AES_256",
        ],
        None,
    ));

    let check = |d: &Daemon| {
        let v = json(d.kmsctl(&["--json", "describe-key", "--key-id", &key], None));
        assert_eq!(v["KeyMetadata"]["Description"], "durable");
        let v = json(d.kmsctl(&["--json", "decrypt", "--context", "v=1"], Some(&blob)));
        assert_eq!(b64(&v["Plaintext"]), b"survives");
        let v = json(d.kmsctl(
            &["--json", "decrypt"],
            Some(data_key["CiphertextBlob"].as_str().unwrap().as_bytes()),
        ));
        assert_eq!(v["Plaintext"], data_key["Plaintext"]);
        let v = json(d.kmsctl(&["--json", "list-keys", "--all"], None));
        assert!(v["Keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["KeyId"] == key.as_str()));
    };

    d.stop();
    d.restart();
    check(&d);
    // After a crash too.
    d.kill();
    d.restart();
    check(&d);
    // New ciphertexts still work after the restarts.
    let v = json(d.kmsctl(&["--json", "encrypt", "--key-id", &key], Some(b"later")));
    let v = json(d.kmsctl(&["--json", "decrypt"], Some(&b64(&v["CiphertextBlob"]))));
    assert_eq!(b64(&v["Plaintext"]), b"later");
}
