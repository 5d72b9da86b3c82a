//! Access control end to end, with callers of other uids for real: the test
//! process is root (as CI is), the daemon is the real binary, and every
//! caller is a real process (kmsctl started through `Command` after fork +
//! setgroups/setgid/setuid) or a thread of this process that dropped its own
//! credentials before it connected. The kernel records the caller's
//! credentials at `connect()` (SO_PEERCRED, SO_PEERGROUPS), so each of them
//! is an identity the daemon cannot tell from another user's process.
//!
//! The daemon's socket is made reachable for other uids without loosening
//! what kmsd checks: its directory (the daemon's temporary directory, owned
//! by root) is chmod 0711 once the daemon has accepted it (kmsd refuses a
//! socket directory that group or others may *write*; search permission is
//! allowed), and the socket itself gets `transport.socket_mode = 0o666`
//! from a config file. kmsctl is copied next to the socket (mode 0755): the
//! build's target directory may be 0700.

use crate::support::{kmsctl_bin, run_with_stdin, Daemon};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use kms_proto::client::{Client, ClientError, ServerUid};
use kms_proto::ErrorKind;
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the load tests wait for the hammering thread to make progress.
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(60);

/// A caller's credentials: uid, primary gid, supplementary gids.
#[derive(Clone, Debug)]
struct Who {
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
}

impl Who {
    /// A caller whose primary gid is its uid, without supplementary groups.
    fn uid(uid: u32) -> Who {
        Who {
            uid,
            gid: uid,
            groups: Vec::new(),
        }
    }

    fn gid(mut self, gid: u32) -> Who {
        self.gid = gid;
        self
    }

    fn groups(mut self, groups: &[u32]) -> Who {
        self.groups = groups.to_vec();
        self
    }

    /// `uid:N`, the principal the daemon names this caller by.
    fn principal(&self) -> String {
        format!("uid:{}", self.uid)
    }
}

const ROOT: u32 = 0;

fn root() -> Who {
    Who::uid(ROOT)
}

/// Makes `cmd`'s child run as `who`. Without supplementary groups through
/// std's `CommandExt::uid`/`gid` (setgroups(0), setgid, setuid in the
/// child). With them (std's `CommandExt::groups` is unstable, and
/// `pre_exec` closures run after std's setuid) the child does all three
/// itself before exec: setgroups, setresgid, setresuid, as raw syscalls
/// (the forked child has one thread, so the thread's credentials are the
/// process's, and exec keeps them).
fn run_as(cmd: &mut Command, who: &Who) {
    if who.groups.is_empty() {
        cmd.uid(who.uid).gid(who.gid);
        return;
    }
    let groups: Vec<rustix::process::Gid> = who
        .groups
        .iter()
        .map(|&g| rustix::process::Gid::from_raw(g))
        .collect();
    let gid = rustix::process::Gid::from_raw(who.gid);
    let uid = rustix::process::Uid::from_raw(who.uid);
    // SAFETY: the closure only makes raw system calls (no allocation, no
    // locks), which is what may run between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            rustix::thread::set_thread_groups(&groups)?;
            rustix::thread::set_thread_res_gid(gid, gid, gid)?;
            rustix::thread::set_thread_res_uid(uid, uid, uid)?;
            Ok(())
        });
    }
}

/// Runs `f` on a new thread that first drops its own credentials to `who`
/// (groups, gid, then uid: raw syscalls change this thread only), so that
/// a connection it makes is `who`'s. Returns what `f` returned.
fn on_thread_as<T: Send + 'static>(who: &Who, f: impl FnOnce() -> T + Send + 'static) -> T {
    let who = who.clone();
    std::thread::spawn(move || {
        become_on_this_thread(&who);
        f()
    })
    .join()
    .expect("the thread of another uid panicked")
}

/// Drops this thread's credentials to `who` (for good: the saved ids go
/// too).
fn become_on_this_thread(who: &Who) {
    let groups: Vec<rustix::process::Gid> = who
        .groups
        .iter()
        .map(|&g| rustix::process::Gid::from_raw(g))
        .collect();
    rustix::thread::set_thread_groups(&groups).expect("setgroups on this thread");
    let gid = rustix::process::Gid::from_raw(who.gid);
    rustix::thread::set_thread_res_gid(gid, gid, gid).expect("setresgid on this thread");
    let uid = rustix::process::Uid::from_raw(who.uid);
    rustix::thread::set_thread_res_uid(uid, uid, uid).expect("setresuid on this thread");
}

/// A daemon other uids can reach, and a kmsctl they can run.
struct Shared {
    d: Daemon,
    /// The config file's directory (kept for the daemon's life).
    _config: tempfile::TempDir,
    /// A copy of kmsctl in the daemon's directory, mode 0755.
    kmsctl: PathBuf,
}

/// A key: its id and ARN.
#[derive(Clone, Debug)]
struct Key {
    id: String,
    arn: String,
}

impl Shared {
    /// A daemon whose `[access] key_creators` are `key_creators`, its
    /// socket mode 0666 in a directory of mode 0711.
    fn start(key_creators: &[&str]) -> Shared {
        let config = tempfile::Builder::new()
            .prefix("kmsd-access-config-")
            .tempdir()
            .expect("a directory for the config");
        let path = config.path().join("kmsd.toml");
        let text = format!(
            "[transport]\nsocket_mode = 0o666\n\n[access]\nkey_creators = {}\n",
            serde_json::to_string(key_creators).unwrap()
        );
        std::fs::write(&path, text).expect("writing the config");
        let d = Daemon::start(&["--config", path.to_str().expect("a UTF-8 path")]);
        // kmsd has checked (and accepted) its socket directory at start: it
        // refuses one that group or others may write to. Search permission
        // for others is all a caller needs to reach the socket by its path.
        std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o711))
            .expect("chmod 0711 the daemon's directory");
        assert_eq!(
            std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777,
            0o666,
            "transport.socket_mode applied"
        );
        let kmsctl = d.dir.path().join("kmsctl");
        std::fs::copy(kmsctl_bin(), &kmsctl).expect("copying kmsctl");
        std::fs::set_permissions(&kmsctl, std::fs::Permissions::from_mode(0o755)).unwrap();
        wait_until_executable(&kmsctl);
        Shared {
            d,
            _config: config,
            kmsctl,
        }
    }

    /// Runs kmsctl as `who` (`--socket`, `--expect-uid 0` prepended), with
    /// `stdin` as its standard input.
    fn kmsctl(&self, who: &Who, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut cmd = Command::new(&self.kmsctl);
        cmd.arg("--socket")
            .arg(&self.d.socket)
            .args(["--expect-uid", "0"])
            .args(args)
            .current_dir("/")
            .env_remove("XDG_RUNTIME_DIR");
        run_as(&mut cmd, who);
        run_with_stdin(cmd, stdin)
    }

    /// A Rust client of root's (this thread's credentials).
    fn root_client(&self) -> Client {
        self.d.client()
    }

    /// Creates a key as root through kmsctl, with `policy`.
    fn create_key(&self, policy: &str) -> Key {
        let v = json_ok(self.kmsctl(
            &root(),
            &["--json", "create-key", "--policy", "-"],
            Some(policy.as_bytes()),
        ));
        key_of(&v)
    }

    /// Encrypts a fixed plaintext as `who` under `key` with `context`
    /// pairs (`k=v`) and `extra` arguments (`--dry-run`).
    fn encrypt(&self, who: &Who, key: &Key, context: &[&str], extra: &[&str]) -> Output {
        let mut args = vec!["--json", "encrypt", "--key-id", &key.id];
        for c in context {
            args.extend(["--context", c]);
        }
        args.extend(extra);
        self.kmsctl(who, &args, Some(b"a secret of the test"))
    }

    /// A blob of `key` with `context`, made by root (an administrator).
    fn blob(&self, key: &Key, context: &[&str]) -> String {
        let v = json_ok(self.encrypt(&root(), key, context, &[]));
        v["CiphertextBlob"].as_str().unwrap().to_owned()
    }

    /// Decrypts the base64 `blob` as `who` with `context`.
    fn decrypt(&self, who: &Who, blob: &str, context: &[&str], extra: &[&str]) -> Output {
        let mut args = vec!["--json", "decrypt"];
        for c in context {
            args.extend(["--context", c]);
        }
        args.extend(extra);
        self.kmsctl(who, &args, Some(blob.as_bytes()))
    }
}

/// Waits until the fresh copy `bin` runs (`--version`). While it was being
/// written, other tests' threads may have forked: each such child holds
/// the copy's write descriptor (close-on-exec) until it execs, and exec of
/// a file open for writing fails with ETXTBSY. No new writer can appear
/// once the copy is closed, so after one exec has succeeded none fails so
/// again.
fn wait_until_executable(bin: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match Command::new(bin).arg("--version").output() {
            Ok(out) => {
                assert!(out.status.success(), "{} --version: {out:?}", bin.display());
                return;
            }
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                assert!(Instant::now() < deadline, "{} stays busy", bin.display());
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("running {}: {e}", bin.display()),
        }
    }
}

fn key_of(create_key: &Value) -> Key {
    let m = &create_key["KeyMetadata"];
    Key {
        id: m["KeyId"].as_str().expect("KeyId").to_owned(),
        arn: m["Arn"].as_str().expect("Arn").to_owned(),
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Asserts exit 0; returns stdout.
#[track_caller]
fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "kmsctl failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Asserts exit 0 and parses stdout as JSON.
#[track_caller]
fn json_ok(out: Output) -> Value {
    let t = ok(out);
    serde_json::from_str(&t).unwrap_or_else(|e| panic!("{e}: {t}"))
}

/// Asserts exit 1 with `kmsctl: <exception>: ...` on stderr and nothing on
/// stdout; returns the message after the exception's name.
#[track_caller]
fn refused(out: Output, exception: &str) -> String {
    let err = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected exit 1 ({exception});\nstdout: {}\nstderr: {err}",
        text(&out.stdout)
    );
    assert!(out.stdout.is_empty(), "nothing on stdout on failure");
    let prefix = format!("kmsctl: {exception}: ");
    err.trim_end()
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("expected {exception}, stderr: {err}"))
        .to_owned()
}

/// Asserts an AccessDeniedException naming `who` (`uid:N`, perhaps with a
/// unit), `action` and `resource` (a key ARN, or `*` for the account).
#[track_caller]
fn denied(out: Output, who: &Who, action: &str, resource: &str) -> String {
    let msg = refused(out, "AccessDeniedException");
    check_denial(&msg, who, action, resource);
    msg
}

#[track_caller]
fn check_denial(msg: &str, who: &Who, action: &str, resource: &str) {
    // `uid:N is not ...` or `uid:N (unit:x.service) is not ...`.
    let rest = msg
        .strip_prefix(&who.principal())
        .unwrap_or_else(|| panic!("{} not named first: {msg}", who.principal()));
    assert!(rest.starts_with(' '), "{msg}");
    let what = format!(" is not authorized to perform {action} on resource {resource}: ");
    assert!(msg.contains(&what), "{what:?} not in {msg:?}");
}

/// A policy: the administrators' statement (root may do everything, so
/// that the lockout safety check passes and the test can change it again),
/// then `statements`.
fn policy(statements: &[Value]) -> String {
    let mut all = vec![allow("uid:0", &["kms:*"])];
    all.extend(statements.iter().cloned());
    json!({"Version": "2012-10-17", "Statement": all}).to_string()
}

fn allow(principal: &str, actions: &[&str]) -> Value {
    json!({"Effect": "Allow", "Principal": {"AWS": principal}, "Action": actions, "Resource": "*"})
}

fn deny(principal: &str, actions: &[&str]) -> Value {
    json!({"Effect": "Deny", "Principal": {"AWS": principal}, "Action": actions, "Resource": "*"})
}

/// The id field (third) of `name` in an /etc/passwd or /etc/group file:
/// `(id, primary gid)` (the primary gid is the fourth field of passwd, and
/// the id itself for a group).
fn etc_ids(file: &str, name: &str) -> (u32, u32) {
    let table = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{file}: {e}"));
    table
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&name) && f.len() >= 3).then(|| {
                let id = f[2].parse().expect("a numeric id");
                (id, f.get(3).and_then(|g| g.parse().ok()).unwrap_or(id))
            })
        })
        .unwrap_or_else(|| panic!("no {name} in {file}"))
}

#[test]
fn a_uid_principal_allows_that_uid_that_action_only() {
    let s = Shared::start(&[]);
    let key = s.create_key(&policy(&[allow("uid:4242", &["kms:Encrypt"])]));
    let (a, b) = (Who::uid(4242), Who::uid(4343));

    let blob = json_ok(s.encrypt(&a, &key, &[], &[]))["CiphertextBlob"]
        .as_str()
        .unwrap()
        .to_owned();
    denied(s.encrypt(&b, &key, &[], &[]), &b, "kms:Encrypt", &key.arn);
    // The same uid, an action its statement does not name.
    let msg = denied(s.decrypt(&a, &blob, &[], &[]), &a, "kms:Decrypt", &key.arn);
    assert!(
        msg.ends_with("no key policy statement or grant allows it"),
        "{msg}"
    );
    // The blob 4242 made is good: the administrator decrypts it.
    let v = json_ok(s.decrypt(&root(), &blob, &[], &[]));
    assert_eq!(
        B64.decode(v["Plaintext"].as_str().unwrap()).unwrap(),
        b"a secret of the test"
    );
    // Not a policy reader either, and not the account's (no key creator).
    denied(
        s.kmsctl(&a, &["get-key-policy", &key.id], None),
        &a,
        "kms:GetKeyPolicy",
        &key.arn,
    );
    denied(
        s.kmsctl(&a, &["list-key-policies", &key.id], None),
        &a,
        "kms:ListKeyPolicies",
        &key.arn,
    );
    denied(s.kmsctl(&a, &["list-keys"], None), &a, "kms:ListKeys", "*");
    let names = json_ok(s.kmsctl(&root(), &["--json", "list-key-policies", &key.id], None));
    assert_eq!(names["PolicyNames"], json!(["default"]));
}

#[test]
fn a_gid_principal_matches_the_primary_or_a_supplementary_group() {
    let s = Shared::start(&[]);
    let key = s.create_key(&policy(&[
        allow("gid:5100", &["kms:Encrypt"]),
        allow("gid:5200", &["kms:Encrypt"]),
    ]));
    let cases = [
        (Who::uid(4242).gid(5100), true, "primary gid 5100"),
        (Who::uid(4242).groups(&[5200]), true, "supplementary 5200"),
        (
            Who::uid(4242).groups(&[5000, 5200, 5300]),
            true,
            "5200 among others",
        ),
        (Who::uid(4242), false, "no group"),
        (Who::uid(4242).groups(&[5300]), false, "another group"),
        (Who::uid(5100).gid(4242), false, "uid 5100 is not gid 5100"),
        (Who::uid(4343).gid(5200), true, "another uid, primary 5200"),
    ];
    for (who, allowed, why) in &cases {
        let out = s.encrypt(who, &key, &[], &[]);
        if *allowed {
            assert!(out.status.success(), "{why}: {who:?}: {out:?}");
        } else {
            denied(out, who, "kms:Encrypt", &key.arn);
        }
    }
    // The same through threads of this process that dropped their
    // credentials before connecting (SO_PEERGROUPS reads the thread's).
    for (who, allowed, why) in cases {
        let socket = s.d.socket.clone();
        let key_id = key.id.clone();
        let got = on_thread_as(&who, move || {
            let mut c = Client::connect_expecting(&socket, ServerUid::Exactly(0))
                .expect("connecting as another uid");
            c.encrypt(&key_id, b"x", &[])
                .map(|_| ())
                .map_err(|e| match e {
                    ClientError::Kms(e) => (Some(e.kind), e.message),
                    e => (None, e.to_string()),
                })
        });
        match (allowed, got) {
            (true, Ok(())) => {}
            (false, Err((Some(ErrorKind::AccessDenied), msg))) => {
                check_denial(&msg, &who, "kms:Encrypt", &key.arn)
            }
            (_, got) => panic!("{why}: {who:?}: {got:?}"),
        }
    }
}

#[test]
fn user_and_group_names_are_their_ids() {
    // Names every Linux has; their ids from the files NSS reads here.
    let (nobody, nobody_gid) = etc_ids("/etc/passwd", "nobody");
    let (daemon_gid, _) = etc_ids("/etc/group", "daemon");
    assert_ne!(nobody_gid, daemon_gid);
    let s = Shared::start(&[]);
    let key = s.create_key(&policy(&[
        allow("user:nobody", &["kms:Encrypt"]),
        allow("group:daemon", &["kms:Decrypt"]),
    ]));
    let blob = s.blob(&key, &[]);
    let user = Who::uid(nobody).gid(nobody_gid);
    let in_group = Who::uid(4242).gid(daemon_gid);
    let in_group_too = Who::uid(4242).groups(&[daemon_gid]);
    let neither = Who::uid(4242);

    ok(s.encrypt(&user, &key, &[], &[]));
    denied(
        s.decrypt(&user, &blob, &[], &[]),
        &user,
        "kms:Decrypt",
        &key.arn,
    );
    for who in [&in_group, &in_group_too] {
        ok(s.decrypt(who, &blob, &[], &[]));
        denied(s.encrypt(who, &key, &[], &[]), who, "kms:Encrypt", &key.arn);
    }
    denied(
        s.encrypt(&neither, &key, &[], &[]),
        &neither,
        "kms:Encrypt",
        &key.arn,
    );
    denied(
        s.decrypt(&neither, &blob, &[], &[]),
        &neither,
        "kms:Decrypt",
        &key.arn,
    );
    // The stored policy keeps the names as written.
    let got = ok(s.kmsctl(&root(), &["get-key-policy", &key.id, "--output", "-"], None));
    assert!(
        got.contains("\"user:nobody\"") && got.contains("\"group:daemon\""),
        "{got}"
    );
}

/// The README's example policy, as README.md has it.
fn readme_policy() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("reading README.md");
    let start = readme
        .find("cat > policy.json <<'EOF'\n")
        .expect("the README's policy example")
        + "cat > policy.json <<'EOF'\n".len();
    let len = readme[start..].find("\nEOF\n").expect("its end");
    readme[start..start + len].to_owned()
}

#[test]
fn the_readme_example_service_b_decrypts_tenant_b_only() {
    let s = Shared::start(&[]);
    let key = s.create_key(&readme_policy());
    // "service B (uid 1002) may only decrypt, and only with the encryption
    // context tenant=B".
    let b = Who::uid(1002);
    let tenant_b = s.blob(&key, &["tenant=B"]);
    let tenant_a = s.blob(&key, &["tenant=A"]);
    let both = s.blob(&key, &["tenant=B", "app=billing"]);

    let v = json_ok(s.decrypt(&b, &tenant_b, &["tenant=B"], &[]));
    assert!(v["KeyId"].as_str().unwrap().contains(&key.id), "{v}");
    ok(s.decrypt(&b, &both, &["tenant=B", "app=billing"], &[]));
    denied(
        s.decrypt(&b, &tenant_a, &["tenant=A"], &[]),
        &b,
        "kms:Decrypt",
        &key.arn,
    );
    // No context at all: the condition's key is absent, so it does not hold.
    let none = s.blob(&key, &[]);
    denied(s.decrypt(&b, &none, &[], &[]), &b, "kms:Decrypt", &key.arn);
    denied(
        s.encrypt(&b, &key, &["tenant=B"], &[]),
        &b,
        "kms:Encrypt",
        &key.arn,
    );
    // Service A is a unit (unit:a.service); uid 1002 outside it gets
    // nothing of A's either, and neither does anyone else.
    let other = Who::uid(1003);
    denied(
        s.decrypt(&other, &tenant_b, &["tenant=B"], &[]),
        &other,
        "kms:Decrypt",
        &key.arn,
    );
}

#[test]
fn an_explicit_deny_beats_an_allow_of_everyone() {
    let s = Shared::start(&[]);
    let key = s.create_key(&policy(&[
        json!({"Effect": "Allow", "Principal": "*", "Action": "kms:Encrypt", "Resource": "*"}),
        deny("uid:4343", &["kms:Encrypt"]),
        deny("gid:5200", &["kms:*"]),
    ]));
    ok(s.encrypt(&Who::uid(4242), &key, &[], &[]));
    ok(s.encrypt(&Who::uid(4444).groups(&[5100]), &key, &[], &[]));
    for who in [
        Who::uid(4343),
        Who::uid(4242).groups(&[5200]),
        Who::uid(4242).gid(5200),
    ] {
        let msg = denied(
            s.encrypt(&who, &key, &[], &[]),
            &who,
            "kms:Encrypt",
            &key.arn,
        );
        assert!(msg.ends_with("an explicit deny in its key policy"), "{msg}");
    }
    // Allow `*` names Encrypt only: a Decrypt is refused for want of an
    // allow, not by a deny.
    let blob = s.blob(&key, &[]);
    let who = Who::uid(4242);
    let msg = denied(
        s.decrypt(&who, &blob, &[], &[]),
        &who,
        "kms:Decrypt",
        &key.arn,
    );
    assert!(
        msg.ends_with("no key policy statement or grant allows it"),
        "{msg}"
    );
}

#[test]
fn the_default_policy_lets_the_creator_use_its_key_and_the_administrators_manage_it() {
    let s = Shared::start(&["uid:4242"]);
    let creator = Who::uid(4242);
    let stranger = Who::uid(4343);

    let v = json_ok(s.kmsctl(
        &creator,
        &["--json", "create-key", "--description", "mine"],
        None,
    ));
    let key = key_of(&v);
    // Its creator uses it.
    let blob = json_ok(s.encrypt(&creator, &key, &["app=x"], &[]))["CiphertextBlob"]
        .as_str()
        .unwrap()
        .to_owned();
    let v = json_ok(s.decrypt(&creator, &blob, &["app=x"], &[]));
    assert_eq!(
        B64.decode(v["Plaintext"].as_str().unwrap()).unwrap(),
        b"a secret of the test"
    );
    ok(s.kmsctl(&creator, &["describe-key", "--key-id", &key.id], None));
    ok(s.kmsctl(
        &creator,
        &[
            "generate-data-key",
            "--key-id",
            &key.id,
            "--key-spec",
            "AES_256",
        ],
        None,
    ));
    // ... and lists keys, as a key creator.
    ok(s.kmsctl(&creator, &["list-keys"], None));
    // ... but does not manage it.
    for (args, action) in [
        (vec!["disable-key", key.id.as_str()], "kms:DisableKey"),
        (
            vec!["schedule-key-deletion", key.id.as_str()],
            "kms:ScheduleKeyDeletion",
        ),
        (vec!["get-key-policy", key.id.as_str()], "kms:GetKeyPolicy"),
        (
            vec![
                "create-grant",
                key.id.as_str(),
                "--grantee-principal",
                "uid:4343",
                "--operations",
                "Decrypt",
            ],
            "kms:CreateGrant",
        ),
    ] {
        denied(s.kmsctl(&creator, &args, None), &creator, action, &key.arn);
    }
    denied(
        s.kmsctl(
            &creator,
            &["put-key-policy", &key.id, "--policy", "-"],
            Some(policy(&[allow("uid:4242", &["kms:*"])]).as_bytes()),
        ),
        &creator,
        "kms:PutKeyPolicy",
        &key.arn,
    );
    // The administrator (root) manages it ...
    ok(s.kmsctl(&root(), &["disable-key", &key.id], None));
    refused(s.encrypt(&creator, &key, &[], &[]), "DisabledException");
    ok(s.kmsctl(&root(), &["enable-key", &key.id], None));
    ok(s.encrypt(&creator, &key, &[], &[]));
    // ... and its default policy names the creator's uid.
    let doc: Value = serde_json::from_str(&ok(s.kmsctl(
        &root(),
        &["get-key-policy", &key.id, "--output", "-"],
        None,
    )))
    .unwrap();
    assert!(doc.to_string().contains("\"uid:4242\""), "{doc}");

    // Someone who is neither may not make keys, list them, or use this one.
    denied(
        s.kmsctl(&stranger, &["create-key"], None),
        &stranger,
        "kms:CreateKey",
        "*",
    );
    denied(
        s.kmsctl(&stranger, &["list-keys"], None),
        &stranger,
        "kms:ListKeys",
        "*",
    );
    denied(
        s.encrypt(&stranger, &key, &[], &[]),
        &stranger,
        "kms:Encrypt",
        &key.arn,
    );
    denied(
        s.decrypt(&stranger, &blob, &["app=x"], &[]),
        &stranger,
        "kms:Decrypt",
        &key.arn,
    );
    // Root, an administrator, may make keys; anyone may ask who they are.
    ok(s.kmsctl(&root(), &["create-key"], None));
    ok(s.kmsctl(&stranger, &["whoami"], None));
}

#[test]
fn grants_allow_from_the_next_request_until_revoked_or_retired() {
    let s = Shared::start(&[]);
    let key = s.create_key(&policy(&[]));
    let grantee = Who::uid(4343);
    let retirer = Who::uid(4444);
    let other = Who::uid(4545);
    let tenant_b = s.blob(&key, &["tenant=B"]);
    let tenant_b_more = s.blob(&key, &["tenant=B", "app=billing"]);
    let tenant_a = s.blob(&key, &["tenant=A"]);

    denied(
        s.decrypt(&grantee, &tenant_b, &["tenant=B"], &[]),
        &grantee,
        "kms:Decrypt",
        &key.arn,
    );
    let create = |name: &str| {
        let v = json_ok(s.kmsctl(
            &root(),
            &[
                "--json",
                "create-grant",
                &key.id,
                "--grantee-principal",
                "uid:4343",
                "--operations",
                "Decrypt",
                "--retiring-principal",
                "uid:4444",
                "--constraint-encryption-context-subset",
                "tenant=B",
                "--name",
                name,
            ],
            None,
        ));
        (
            v["GrantId"].as_str().unwrap().to_owned(),
            v["GrantToken"].as_str().unwrap().to_owned(),
        )
    };

    // Created, then at once: a matching context decrypts (the subset may
    // have more pairs), another is refused.
    let (first, _) = create("first");
    ok(s.decrypt(&grantee, &tenant_b, &["tenant=B"], &[]));
    ok(s.decrypt(&grantee, &tenant_b_more, &["tenant=B", "app=billing"], &[]));
    denied(
        s.decrypt(&grantee, &tenant_a, &["tenant=A"], &[]),
        &grantee,
        "kms:Decrypt",
        &key.arn,
    );
    denied(
        s.encrypt(&grantee, &key, &["tenant=B"], &[]),
        &grantee,
        "kms:Encrypt",
        &key.arn,
    );
    // list-grants shows it as created.
    let v = json_ok(s.kmsctl(&root(), &["--json", "list-grants", &key.id], None));
    let grants = v["Grants"].as_array().unwrap();
    assert_eq!(grants.len(), 1, "{v}");
    let g = &grants[0];
    assert_eq!(g["GrantId"], json!(first));
    assert_eq!(g["Name"], json!("first"));
    assert_eq!(g["GranteePrincipal"], json!("uid:4343"));
    assert_eq!(g["RetiringPrincipal"], json!("uid:4444"));
    assert_eq!(g["Operations"], json!(["Decrypt"]));
    assert_eq!(
        g["Constraints"],
        json!({"EncryptionContextSubset": {"tenant": "B"}})
    );
    assert!(g["KeyId"].as_str().unwrap().contains(&key.id), "{g}");
    // The grantee neither revokes nor lists it.
    denied(
        s.kmsctl(
            &grantee,
            &["revoke-grant", &key.id, "--grant-id", &first],
            None,
        ),
        &grantee,
        "kms:RevokeGrant",
        &key.arn,
    );
    denied(
        s.kmsctl(&grantee, &["list-grants", &key.id], None),
        &grantee,
        "kms:ListGrants",
        &key.arn,
    );

    // Revoked by the administrator: the very next decrypt is refused.
    ok(s.kmsctl(
        &root(),
        &["revoke-grant", &key.id, "--grant-id", &first],
        None,
    ));
    denied(
        s.decrypt(&grantee, &tenant_b, &["tenant=B"], &[]),
        &grantee,
        "kms:Decrypt",
        &key.arn,
    );
    let v = json_ok(s.kmsctl(&root(), &["--json", "list-grants", &key.id], None));
    assert_eq!(v["Grants"], json!([]), "{v}");

    // Another grant, retired by its retiring principal (another uid).
    let (second, token) = create("second");
    ok(s.decrypt(&grantee, &tenant_b, &["tenant=B"], &[]));
    let v = json_ok(s.kmsctl(
        &root(),
        &[
            "--json",
            "list-retirable-grants",
            "--retiring-principal",
            "uid:4444",
        ],
        None,
    ));
    let ids: Vec<&Value> = v["Grants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| &g["GrantId"])
        .collect();
    assert_eq!(ids, [&json!(second)], "{v}");
    // Neither its grantee (the grant does not allow RetireGrant) nor a
    // stranger may retire it.
    for who in [&grantee, &other] {
        denied(
            s.kmsctl(
                who,
                &["retire-grant", "--key-id", &key.id, "--grant-id", &second],
                None,
            ),
            who,
            "kms:RetireGrant",
            &key.arn,
        );
        denied(
            s.kmsctl(who, &["retire-grant", "--grant-token", &token], None),
            who,
            "kms:RetireGrant",
            &key.arn,
        );
    }
    ok(s.kmsctl(
        &retirer,
        &["retire-grant", "--key-id", &key.id, "--grant-id", &second],
        None,
    ));
    denied(
        s.decrypt(&grantee, &tenant_b, &["tenant=B"], &[]),
        &grantee,
        "kms:Decrypt",
        &key.arn,
    );
    let v = json_ok(s.kmsctl(&root(), &["--json", "list-grants", &key.id], None));
    assert_eq!(v["Grants"], json!([]), "{v}");

    // By its token, too.
    let (_, token) = create("third");
    ok(s.decrypt(&grantee, &tenant_b, &["tenant=B"], &[]));
    ok(s.kmsctl(&retirer, &["retire-grant", "--grant-token", &token], None));
    denied(
        s.decrypt(&grantee, &tenant_b, &["tenant=B"], &[]),
        &grantee,
        "kms:Decrypt",
        &key.arn,
    );

    // A grant that allows RetireGrant may be retired by its grantee; a
    // filter by grantee lists it alone.
    let v = json_ok(s.kmsctl(
        &root(),
        &[
            "--json",
            "create-grant",
            &key.id,
            "--grantee-principal",
            "uid:4343",
            "--operations",
            "Decrypt,RetireGrant",
        ],
        None,
    ));
    let own = v["GrantId"].as_str().unwrap().to_owned();
    let v = json_ok(s.kmsctl(
        &root(),
        &[
            "--json",
            "list-grants",
            &key.id,
            "--grantee-principal",
            "uid:4343",
        ],
        None,
    ));
    assert_eq!(v["Grants"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(v["Grants"][0]["GrantId"], json!(own), "{v}");
    assert_eq!(
        v["Grants"][0]["Operations"],
        json!(["Decrypt", "RetireGrant"]),
        "{v}"
    );
    let v = json_ok(s.kmsctl(
        &root(),
        &[
            "--json",
            "list-grants",
            &key.id,
            "--grantee-principal",
            "uid:4545",
        ],
        None,
    ));
    assert_eq!(v["Grants"], json!([]), "{v}");
    ok(s.decrypt(&grantee, &none_blob(&s, &key), &[], &[]));
    denied(
        s.kmsctl(
            &other,
            &["retire-grant", "--key-id", &key.id, "--grant-id", &own],
            None,
        ),
        &other,
        "kms:RetireGrant",
        &key.arn,
    );
    ok(s.kmsctl(
        &grantee,
        &["retire-grant", "--key-id", &key.id, "--grant-id", &own],
        None,
    ));
    denied(
        s.decrypt(&grantee, &none_blob(&s, &key), &[], &[]),
        &grantee,
        "kms:Decrypt",
        &key.arn,
    );
}

/// A blob of `key` without an encryption context, made by root.
fn none_blob(s: &Shared, key: &Key) -> String {
    s.blob(key, &[])
}

#[test]
fn whoami_prints_the_callers_uid_gid_and_groups() {
    let s = Shared::start(&[]);
    let who = Who::uid(4242).groups(&[5001, 5000]);
    let v = json_ok(s.kmsctl(&who, &["--json", "whoami"], None));
    assert_eq!(v["Uid"], json!(4242), "{v}");
    assert_eq!(v["Gid"], json!(4242), "{v}");
    assert!(v["Pid"].as_i64().unwrap() > 0, "{v}");
    // SO_PEERGROUPS: the supplementary groups, sorted.
    assert_eq!(v["Groups"], json!([5000, 5001]), "{v}");
    let human = ok(s.kmsctl(&Who::uid(4343).gid(5001), &["whoami"], None));
    assert!(
        human
            .lines()
            .any(|l| l.split_whitespace().eq(["Uid:", "4343"])),
        "{human}"
    );
    assert!(
        human
            .lines()
            .any(|l| l.split_whitespace().eq(["Gid:", "5001"])),
        "{human}"
    );

    // A thread of this process, after dropping its credentials.
    let socket = s.d.socket.clone();
    let got = on_thread_as(&who, move || {
        Client::connect_expecting(&socket, ServerUid::Exactly(0))
            .unwrap()
            .who_am_i()
            .unwrap()
    });
    assert_eq!((got.uid, got.gid), (4242, 4242));
    assert_eq!(got.groups, [5000, 5001]);
    assert_eq!(got.pid, std::process::id() as i32);
}

#[test]
fn dry_run_answers_as_the_request_would_have_been() {
    let s = Shared::start(&[]);
    let key = s.create_key(&policy(&[allow("uid:4242", &["kms:Encrypt"])]));
    let (a, b) = (Who::uid(4242), Who::uid(4343));
    refused(
        s.encrypt(&a, &key, &[], &["--dry-run"]),
        "DryRunOperationException",
    );
    denied(
        s.encrypt(&b, &key, &[], &["--dry-run"]),
        &b,
        "kms:Encrypt",
        &key.arn,
    );
    let blob = s.blob(&key, &[]);
    denied(
        s.decrypt(&a, &blob, &[], &["--dry-run"]),
        &a,
        "kms:Decrypt",
        &key.arn,
    );
    // A dry-run CreateGrant does nothing.
    refused(
        s.kmsctl(
            &root(),
            &[
                "create-grant",
                &key.id,
                "--grantee-principal",
                "uid:4343",
                "--operations",
                "Encrypt",
                "--dry-run",
            ],
            None,
        ),
        "DryRunOperationException",
    );
    let v = json_ok(s.kmsctl(&root(), &["--json", "list-grants", &key.id], None));
    assert_eq!(v["Grants"], json!([]), "{v}");
    denied(s.encrypt(&b, &key, &[], &[]), &b, "kms:Encrypt", &key.arn);
}

#[test]
fn the_lockout_safety_check_refuses_a_policy_that_shuts_the_caller_out() {
    let s = Shared::start(&[]);
    let admin_policy = policy(&[]);
    let key = s.create_key(&admin_policy);
    let theirs =
        json!({"Version": "2012-10-17", "Statement": [allow("uid:4242", &["kms:*"])]}).to_string();
    const LOCKOUT: &str =
        "The new key policy will not allow you to update the key policy in the future.";

    let put = |who: &Who, doc: &str, bypass: bool| {
        let mut args = vec!["put-key-policy", key.id.as_str(), "--policy", "-"];
        if bypass {
            args.push("--bypass-policy-lockout-safety-check");
        }
        s.kmsctl(who, &args, Some(doc.as_bytes()))
    };
    let get = |who: &Who| s.kmsctl(who, &["get-key-policy", &key.id, "--output", "-"], None);

    let msg = refused(
        put(&root(), &theirs, false),
        "MalformedPolicyDocumentException",
    );
    assert_eq!(msg, LOCKOUT);
    assert_eq!(ok(get(&root())), admin_policy, "unchanged");
    // With the bypass it is stored, and root is out, as it asked.
    ok(put(&root(), &theirs, true));
    assert_eq!(ok(get(&Who::uid(4242))), theirs);
    denied(get(&root()), &root(), "kms:GetKeyPolicy", &key.arn);
    denied(
        put(&root(), &admin_policy, false),
        &root(),
        "kms:PutKeyPolicy",
        &key.arn,
    );
    // 4242 holds the key now; handing it back to root alone would lock 4242
    // out, so that is refused too, and sharing it is not.
    let msg = refused(
        put(&Who::uid(4242), &admin_policy, false),
        "MalformedPolicyDocumentException",
    );
    assert_eq!(msg, LOCKOUT);
    let shared = policy(&[allow("uid:4242", &["kms:*"])]);
    ok(put(&Who::uid(4242), &shared, false));
    assert_eq!(ok(get(&root())), shared);

    // CreateKey checks it as well.
    let msg = refused(
        s.kmsctl(
            &root(),
            &["create-key", "--policy", "-"],
            Some(theirs.as_bytes()),
        ),
        "MalformedPolicyDocumentException",
    );
    assert_eq!(msg, LOCKOUT);
    let v = json_ok(s.kmsctl(
        &root(),
        &[
            "--json",
            "create-key",
            "--policy",
            "-",
            "--bypass-policy-lockout-safety-check",
        ],
        Some(theirs.as_bytes()),
    ));
    let k = key_of(&v);
    denied(
        s.kmsctl(&root(), &["describe-key", "--key-id", &k.id], None),
        &root(),
        "kms:DescribeKey",
        &k.arn,
    );
    ok(s.encrypt(&Who::uid(4242), &k, &[], &[]));
}

#[test]
fn get_key_policy_returns_the_document_put_byte_for_byte() {
    let s = Shared::start(&[]);
    // Whitespace, key order, an escape a re-serializer would undo, a
    // non-ASCII Sid, a "kmsd" principal key and a trailing newline: none of
    // it may change.
    let doc = "{\n  \"Statement\" : [\n\t{\"Sid\":\"admins \u{2713}\", \"Effect\":\"Allow\",\
               \"Principal\":{\"AWS\":[\"uid:0\"]},\"Action\":\"kms:*\",\"Resource\":\"*\"},\
               \n\t{ \"Resource\":[\"*\"], \"Action\":[\"kms:GetKeyPolicy\",\"kms:Encrypt\"],\
               \"Principal\" : {\"kmsd\":\"uid:4242\"}, \"Effect\":\"Allow\", \
               \"Sid\":\"reader \\u00e9\\/ \\\"quoted\\\"\"}\n  ],\n  \"Version\": \"2012-10-17\"\n}\n";
    let create_doc = doc.replace("reader", "first reader");
    let v = json_ok(s.kmsctl(
        &root(),
        &["--json", "create-key", "--policy", "-"],
        Some(create_doc.as_bytes()),
    ));
    let key = key_of(&v);
    let raw = |who: &Who| {
        s.kmsctl(who, &["get-key-policy", &key.id, "--output", "-"], None)
            .stdout
    };
    assert_eq!(text(&raw(&root())), create_doc);

    // put-key-policy from a file (file://, as the AWS CLI spells it).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.json");
    std::fs::write(&file, doc).unwrap();
    let arg = format!("file://{}", file.display());
    ok(s.kmsctl(
        &root(),
        &["put-key-policy", &key.id, "--policy", &arg],
        None,
    ));
    assert_eq!(raw(&root()), doc.as_bytes());
    // The same bytes for another uid the policy lets read it, and in the
    // JSON output.
    assert_eq!(raw(&Who::uid(4242)), doc.as_bytes());
    let v = json_ok(s.kmsctl(
        &Who::uid(4242),
        &["--json", "get-key-policy", &key.id],
        None,
    ));
    assert_eq!(v["Policy"].as_str(), Some(doc));
    assert_eq!(v["PolicyName"], json!("default"));
    let human = ok(s.kmsctl(&root(), &["get-key-policy", &key.id], None));
    assert!(human.starts_with(doc), "{human}");
    // And the Rust client's answer.
    let got = s.root_client().get_key_policy(&key.id, None).unwrap();
    assert_eq!(got.policy, doc);
}

/// One Encrypt of the hammering thread: when it was sent, when its answer
/// arrived, and what it was.
#[derive(Debug)]
struct Sent {
    sent: Instant,
    answered: Instant,
    outcome: Result<(), (Option<ErrorKind>, String)>,
}

/// Sets the flag when dropped (so the hammering thread stops even when the
/// main thread panics).
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Waits until `count` reaches `at_least` (panics after
/// [`PROGRESS_TIMEOUT`]).
fn wait_for(count: &AtomicUsize, at_least: usize) {
    let deadline = Instant::now() + PROGRESS_TIMEOUT;
    while count.load(Ordering::SeqCst) < at_least {
        assert!(
            Instant::now() < deadline,
            "the hammering thread made {} of {at_least} requests",
            count.load(Ordering::SeqCst)
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Requests before and after the change, at least.
const EACH_SIDE: usize = 200;

/// A thread of uid 4242 (dropped before it connects) sends Encrypt on `key`
/// over one connection, one at a time, recording each; once it has had
/// [`EACH_SIDE`] answers, `change` runs on this thread (root) and the
/// instants just before it is sent and just after its answer arrived are
/// recorded; once the thread has sent [`EACH_SIDE`] more, it stops. Then,
/// from the thread's own records: every request answered before the change
/// was sent had the old answer, every request sent after the change's
/// answer arrived (the very first included) has the new one, and there was
/// at least one of each. Allowed is success; refused is
/// AccessDeniedException naming uid:4242, kms:Encrypt and the key. Requests
/// in flight during the change may have either.
fn changed_under_load(s: &Shared, key: &Key, allowed_before: bool, change: impl FnOnce()) {
    let hammerer = Who::uid(4242);
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicUsize::new(0));
    let _stop_guard = StopOnDrop(stop.clone());
    let thread = {
        let (socket, key_id, stop, count) = (
            s.d.socket.clone(),
            key.id.clone(),
            stop.clone(),
            count.clone(),
        );
        let who = hammerer.clone();
        std::thread::spawn(move || {
            become_on_this_thread(&who);
            let mut c = Client::connect_expecting(&socket, ServerUid::Exactly(0))
                .expect("connecting as uid 4242");
            c.stream()
                .set_read_timeout(Some(Duration::from_secs(20)))
                .unwrap();
            let mut sent = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let t = Instant::now();
                let r = c.encrypt(&key_id, b"under load", &[]);
                let answered = Instant::now();
                let outcome = match r {
                    Ok(_) => Ok(()),
                    Err(ClientError::Kms(e)) => Err((Some(e.kind), e.message)),
                    Err(e) => Err((None, e.to_string())),
                };
                let broken = matches!(outcome, Err((None, _)));
                sent.push(Sent {
                    sent: t,
                    answered,
                    outcome,
                });
                count.fetch_add(1, Ordering::SeqCst);
                if broken {
                    break;
                }
            }
            sent
        })
    };

    wait_for(&count, EACH_SIDE);
    let change_sent = Instant::now();
    change();
    let change_answered = Instant::now();
    let at_change = count.load(Ordering::SeqCst);
    wait_for(&count, at_change + EACH_SIDE);
    stop.store(true, Ordering::SeqCst);
    let sent = thread.join().expect("the hammering thread");

    let check = |i: usize, r: &Sent, allowed: bool, when: &str| match (&r.outcome, allowed) {
        (Ok(()), true) => {}
        (Err((Some(ErrorKind::AccessDenied), msg)), false) => {
            check_denial(msg, &hammerer, "kms:Encrypt", &key.arn)
        }
        (other, _) => panic!(
            "request {i}, {when}, should have been {}: {other:?}",
            if allowed { "allowed" } else { "denied" }
        ),
    };
    let mut before = 0;
    let mut after = 0;
    for (i, r) in sent.iter().enumerate() {
        match &r.outcome {
            Ok(()) | Err((Some(ErrorKind::AccessDenied), _)) => {}
            other => panic!("request {i}: neither allowed nor denied: {other:?}"),
        }
        if r.answered < change_sent {
            before += 1;
            check(i, r, allowed_before, "answered before the change was sent");
        }
        if r.sent > change_answered {
            after += 1;
            let when = format!(
                "sent {:?} after the change was answered (number {after} of those)",
                r.sent - change_answered
            );
            check(i, r, !allowed_before, &when);
        }
    }
    eprintln!(
        "{} requests: {before} answered before the change was sent, {after} sent after its \
         answer, the change took {:?}",
        sent.len(),
        change_answered - change_sent
    );
    assert!(before >= 1, "no request was answered before the change");
    assert!(after >= 1, "no request was sent after the change");
    assert!(before + after <= sent.len());
}

#[test]
fn a_policy_change_under_load_refuses_from_the_next_request() {
    let s = Shared::start(&[]);
    let key = s.create_key(&policy(&[allow("uid:4242", &["kms:Encrypt"])]));
    let admins_only = policy(&[]);
    // Open the root connection before the change, so that the timed window
    // is the request alone.
    let mut admin = s.root_client();
    admin.who_am_i().unwrap();
    changed_under_load(&s, &key, true, || {
        admin
            .put_key_policy(&key.id, &admins_only)
            .expect("PutKeyPolicy");
    });
}

#[test]
fn a_grant_revoked_under_load_refuses_from_the_next_request() {
    let s = Shared::start(&[]);
    let key = s.create_key(&policy(&[]));
    let grant = s
        .root_client()
        .create_grant(kms_proto::CreateGrant {
            key_id: &key.id,
            grantee_principal: "uid:4242",
            operations: vec![kms_proto::GrantOperation::Encrypt],
            ..Default::default()
        })
        .expect("CreateGrant");
    // Open the root connection before the change, so that the timed window
    // is the request alone.
    let mut admin = s.root_client();
    admin.who_am_i().unwrap();
    changed_under_load(&s, &key, true, || {
        admin
            .revoke_grant(&key.id, &grant.grant_id)
            .expect("RevokeGrant");
    });
}

#[test]
fn a_grant_created_under_load_allows_from_the_next_request() {
    let s = Shared::start(&[]);
    let key = s.create_key(&policy(&[]));
    let mut admin = s.root_client();
    admin.who_am_i().unwrap();
    changed_under_load(&s, &key, false, || {
        admin
            .create_grant(kms_proto::CreateGrant {
                key_id: &key.id,
                grantee_principal: "uid:4242",
                operations: vec![kms_proto::GrantOperation::Encrypt],
                ..Default::default()
            })
            .expect("CreateGrant");
    });
}

#[test]
fn the_check_comes_before_the_keys_state() {
    // A refused caller learns whether the key exists, nothing about its
    // state; an allowed one gets the state's error (with --dry-run too).
    let s = Shared::start(&[]);
    let key = s.create_key(&policy(&[allow("uid:4242", &["kms:Encrypt"])]));
    let (a, b) = (Who::uid(4242), Who::uid(4343));
    ok(s.kmsctl(&root(), &["disable-key", &key.id], None));
    refused(s.encrypt(&a, &key, &[], &[]), "DisabledException");
    refused(
        s.encrypt(&a, &key, &[], &["--dry-run"]),
        "DisabledException",
    );
    denied(s.encrypt(&b, &key, &[], &[]), &b, "kms:Encrypt", &key.arn);
    denied(
        s.encrypt(&b, &key, &[], &["--dry-run"]),
        &b,
        "kms:Encrypt",
        &key.arn,
    );
    ok(s.kmsctl(
        &root(),
        &[
            "schedule-key-deletion",
            &key.id,
            "--pending-window-in-days",
            "7",
        ],
        None,
    ));
    refused(s.encrypt(&a, &key, &[], &[]), "KMSInvalidStateException");
    denied(s.encrypt(&b, &key, &[], &[]), &b, "kms:Encrypt", &key.arn);
    let missing = Key {
        id: "00000000-0000-4000-8000-000000000042".into(),
        arn: String::new(),
    };
    refused(s.encrypt(&b, &missing, &[], &[]), "NotFoundException");
}

#[test]
fn re_encrypt_aliases_and_batch_items_are_each_checked() {
    let s = Shared::start(&[]);
    let (a, b) = (Who::uid(4242), Who::uid(4343));
    let source = s.create_key(&policy(&[allow(
        "uid:4242",
        &["kms:Encrypt", "kms:ReEncryptFrom"],
    )]));
    let decrypt_only = s.create_key(&policy(&[allow("uid:4242", &["kms:Decrypt"])]));
    let destination = s.create_key(&policy(&[
        allow("uid:4242", &["kms:ReEncryptTo", "kms:Decrypt"]),
        allow("uid:4343", &["kms:ReEncryptTo"]),
    ]));
    let blob = json_ok(s.encrypt(&a, &source, &[], &[]))["CiphertextBlob"]
        .as_str()
        .unwrap()
        .to_owned();
    let re_encrypt = |who: &Who, to: &Key| {
        s.kmsctl(
            who,
            &["--json", "re-encrypt", "--destination-key-id", &to.id],
            Some(blob.as_bytes()),
        )
    };
    // ReEncryptTo is checked on the destination, ReEncryptFrom on the key
    // the blob names.
    denied(
        re_encrypt(&a, &decrypt_only),
        &a,
        "kms:ReEncryptTo",
        &decrypt_only.arn,
    );
    denied(
        re_encrypt(&b, &destination),
        &b,
        "kms:ReEncryptFrom",
        &source.arn,
    );
    let v = json_ok(re_encrypt(&a, &destination));
    let moved = v["CiphertextBlob"].as_str().unwrap();
    let v = json_ok(s.decrypt(&a, moved, &[], &[]));
    assert_eq!(
        B64.decode(v["Plaintext"].as_str().unwrap()).unwrap(),
        b"a secret of the test"
    );

    // kms:RequestAlias: only when the request names the key by that alias.
    let aliased = s.create_key(&policy(&[json!({
        "Effect": "Allow",
        "Principal": {"AWS": "uid:4242"},
        "Action": "kms:Encrypt",
        "Resource": "*",
        "Condition": {"StringEquals": {"kms:RequestAlias": "alias/e2e-app"}}
    })]));
    ok(s.kmsctl(
        &root(),
        &["create-alias", "alias/e2e-app", &aliased.id],
        None,
    ));
    let by_alias = Key {
        id: "alias/e2e-app".into(),
        arn: aliased.arn.clone(),
    };
    ok(s.encrypt(&a, &by_alias, &[], &[]));
    denied(
        s.encrypt(&a, &aliased, &[], &[]),
        &a,
        "kms:Encrypt",
        &aliased.arn,
    );
    denied(
        s.encrypt(&b, &by_alias, &[], &[]),
        &b,
        "kms:Encrypt",
        &aliased.arn,
    );

    // One batch of a thread of uid 4242: each item is decided on its own.
    let socket = s.d.socket.clone();
    let keys = [
        source.id.clone(),
        decrypt_only.id.clone(),
        by_alias.id.clone(),
    ];
    let outcomes = on_thread_as(&a, move || {
        let mut c = Client::connect_expecting(&socket, ServerUid::Exactly(0)).unwrap();
        let items = keys
            .iter()
            .map(|k| {
                kms_proto::Operation::Encrypt(kms_proto::Encrypt {
                    key_id: k,
                    plaintext: b"batch",
                    ..Default::default()
                })
            })
            .collect();
        c.batch(items)
            .unwrap()
            .into_iter()
            .map(|o| o.map(|_| ()).map_err(|e| (e.kind, e.message)))
            .collect::<Vec<_>>()
    });
    assert!(outcomes[0].is_ok(), "{outcomes:?}");
    match &outcomes[1] {
        Err((ErrorKind::AccessDenied, msg)) => {
            check_denial(msg, &a, "kms:Encrypt", &decrypt_only.arn)
        }
        other => panic!("{other:?}"),
    }
    assert!(outcomes[2].is_ok(), "{outcomes:?}");
}

#[test]
fn hostile_policies_are_refused_with_their_reason_while_others_are_served() {
    // Policy documents over the socket at and past every bound: each is
    // MalformedPolicyDocumentException (ValidationException when empty),
    // the key keeps its policy, and a client using another key meanwhile
    // never sees an error.
    let d = Daemon::start(&[]);
    let mut admin = d.client();
    let target = admin.create_key("target").unwrap().key_id;
    let other = admin.create_key("other").unwrap().key_id;
    let before = admin.get_key_policy(&target, None).unwrap().policy;
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let busy = {
        let (stop, served) = (Arc::clone(&stop), Arc::clone(&served));
        let mut c = d.client();
        std::thread::spawn(move || {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match c.encrypt(&other, b"meanwhile", &[]) {
                    Ok(_) => {
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => failures.push(e.to_string()),
                }
            }
            failures
        })
    };
    let wait_for = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while served.load(Ordering::Relaxed) < n {
            assert!(Instant::now() < deadline, "the other client was not served");
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    wait_for(1);
    let statement = |condition: Value| {
        json!({"Effect": "Allow", "Principal": {"AWS": "uid:0"}, "Action": "kms:*",
               "Resource": "*", "Condition": condition})
    };
    let deep = (0..40).fold(json!("x"), |v, _| json!({ "a": v }));
    let hostile: Vec<(String, &str)> = vec![
        (format!(r#"{{"Statement":[],"Pad":"{}"}}"#, "a".repeat(40_000)), "32768"),
        ("{".repeat(5000), ""),
        (json!({"Statement": [statement(json!({"StringLike": {"kms:RequestAlias": "*a".repeat(100)}}))]}).to_string(), "wildcards"),
        (json!({"Statement": vec![statement(json!({}));200]}).to_string(), "statements"),
        (json!({"Statement": [statement(json!({"StringEquals": {"kms:EncryptionContext:x": deep}}))]}).to_string(), ""),
        (json!({"Statement": [statement(json!({"DateGreaterThan": {"aws:CurrentTime": "2020"}}))]}).to_string(), "DateGreaterThan"),
        ("\u{0}\u{1}not json".to_owned(), ""),
    ];
    for (doc, reason) in &hostile {
        let e = admin.put_key_policy(&target, doc).unwrap_err();
        assert_eq!(e.kind(), Some(ErrorKind::MalformedPolicyDocument), "{e}");
        assert!(e.to_string().contains(reason), "{reason}: {e}");
        let e = admin
            .create_key_with(kms_proto::CreateKey {
                policy: Some(doc),
                ..Default::default()
            })
            .unwrap_err();
        assert_eq!(e.kind(), Some(ErrorKind::MalformedPolicyDocument), "{e}");
    }
    let empty = admin.put_key_policy(&target, "").unwrap_err();
    assert_eq!(empty.kind(), Some(ErrorKind::Validation), "{empty}");
    assert_eq!(admin.get_key_policy(&target, None).unwrap().policy, before);
    wait_for(served.load(Ordering::Relaxed) + 1);
    stop.store(true, Ordering::Relaxed);
    let failures = busy.join().unwrap();
    assert!(failures.is_empty(), "the other client saw {failures:?}");
    // And the daemon still answers.
    admin.encrypt(&target, b"after", &[]).unwrap();
}
