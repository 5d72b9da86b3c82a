//! Whom kmsd and its clients trust, with the real binaries: the socket's
//! directory must be the daemon's own, a client refuses a server of an
//! unexpected uid before it sends anything, and one data directory serves
//! one process at a time.

use crate::support::{kmsctl_bin, run_with_stdin, Daemon};
use kms_proto::client::{Client, ServerUid, UnexpectedServer};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long a kmsd that must refuse to start may take to exit.
const TIMEOUT: Duration = Duration::from_secs(20);

/// The uid of an unprivileged other user (nobody).
const OTHER_UID: u32 = 65534;

/// Runs `kmsd <args>` that is expected to exit on its own; a kmsd still
/// running after [`TIMEOUT`] (it started serving) is killed and fails the
/// test.
fn kmsd_exits(args: &[&std::ffi::OsStr]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kmsd"))
        .args(args)
        .env("KMSD_LOG", "off")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning kmsd");
    let deadline = Instant::now() + TIMEOUT;
    while child.try_wait().expect("waiting for kmsd").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "kmsd {args:?} kept running; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("collecting kmsd's output")
}

/// Asserts a failed start: exit 1 and exactly one stderr line, `kmsd: ...`
/// containing every one of `needles`.
fn one_line_failure(out: &Output, needles: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("kmsd: "), "{stderr}");
    for n in needles {
        assert!(stderr.contains(n), "{n:?} not in: {stderr}");
    }
    stderr
}

#[test]
fn kmsd_refuses_a_socket_directory_another_user_could_write_to() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    // Made first by someone else, world-writable (the /tmp/kmsd-$UID attack).
    let open = p.join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    // Owned by another user, however strict its mode.
    let theirs = p.join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&theirs, Some(OTHER_UID), Some(OTHER_UID))
        .expect("chown to nobody (the suite runs as root)");
    // A symlink (which its owner could re-point) to a good directory.
    let good = p.join("good");
    std::fs::create_dir(&good).unwrap();
    std::fs::set_permissions(&good, std::fs::Permissions::from_mode(0o700)).unwrap();
    let link = p.join("link");
    std::os::unix::fs::symlink(&good, &link).unwrap();

    for (i, (dir, needle)) in [
        (&open, "chmod 700"),
        (&theirs, "owned by uid 65534"),
        (&link, "symlink"),
    ]
    .into_iter()
    .enumerate()
    {
        let socket = dir.join("kmsd.sock");
        let data = p.join(format!("data{i}"));
        let out = kmsd_exits(&[
            "serve".as_ref(),
            "--socket".as_ref(),
            socket.as_os_str(),
            "--data-dir".as_ref(),
            data.as_os_str(),
        ]);
        one_line_failure(&out, &["refusing socket directory", needle]);
        assert!(!good.join("kmsd.sock").exists() && !socket.exists());
        assert!(!data.exists(), "refused before anything else was created");
    }
}

/// A listening socket at `path` whose server is `uid`: bound by us, then
/// `listen`ed on a thread that switched to `uid` (the kernel records the
/// listener's credentials at `listen`, and SO_PEERCRED reports them).
fn listener_as(uid: u32, path: &Path) -> UnixListener {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketType};
    let fd = rustix::net::socket(AddressFamily::UNIX, SocketType::STREAM, None).unwrap();
    rustix::net::bind(&fd, &SocketAddrUnix::new(path).unwrap()).unwrap();
    std::thread::spawn(move || {
        // Changes this thread only (a raw syscall, unlike libc's setresuid).
        let id = rustix::process::Uid::from_raw(uid);
        rustix::thread::set_thread_res_uid(id, id, id).expect("dropping this thread's uid");
        rustix::net::listen(&fd, 16).unwrap();
        fd
    })
    .join()
    .map(UnixListener::from)
    .unwrap()
}

/// Every connection queued on `l` (non-blocking) carried no byte at all.
fn nothing_was_sent(l: &UnixListener) -> usize {
    l.set_nonblocking(true).unwrap();
    let mut n = 0;
    while let Ok((mut s, _)) = l.accept() {
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).unwrap();
        assert!(buf.is_empty(), "the client sent {} bytes", buf.len());
        n += 1;
    }
    n
}

#[test]
fn clients_refuse_a_server_of_another_uid() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("kmsd.sock");
    let fake = listener_as(OTHER_UID, &path);

    // The client library, blocking and async.
    for expected in [ServerUid::Exactly(0), ServerUid::SelfOrRoot] {
        let err = Client::connect_expecting(&path, expected)
            .err()
            .expect("refused");
        assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
        let u = err
            .get_ref()
            .and_then(|e| e.downcast_ref::<UnexpectedServer>())
            .expect("an UnexpectedServer");
        assert_eq!(u.uid, OTHER_UID);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = rt
        .block_on(kms_proto::async_client::AsyncClient::connect_expecting(
            &path,
            ServerUid::SelfOrRoot,
        ))
        .expect_err("the async client refuses too");
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
    // Asked for that uid, or for no check (a path the caller chose): accepted.
    Client::connect_expecting(&path, ServerUid::Exactly(OTHER_UID)).unwrap();
    Client::connect(&path).unwrap();
    assert_eq!(nothing_was_sent(&fake), 5);

    // kmsctl --expect-uid: exit 3, one reason and a hint, nothing sent.
    let mut cmd = Command::new(kmsctl_bin());
    cmd.arg("--socket")
        .arg(&path)
        .args(["--expect-uid", "0", "encrypt", "--key-id", "k"]);
    let out = run_with_stdin(cmd, Some(b"secret"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("runs as uid 65534, not uid 0"), "{stderr}");
    assert!(stderr.contains("--expect-uid 65534"), "{stderr}");
    assert_eq!(nothing_was_sent(&fake), 1);

    // The default path (here under XDG_RUNTIME_DIR): checked without asking.
    let xdg = tmp.path().join("xdg");
    std::fs::create_dir_all(xdg.join("kmsd")).unwrap();
    let default_fake = listener_as(OTHER_UID, &xdg.join("kmsd/kmsd.sock"));
    let mut cmd = Command::new(kmsctl_bin());
    cmd.env("XDG_RUNTIME_DIR", &xdg)
        .args(["encrypt", "--key-id", "k"]);
    let out = run_with_stdin(cmd, Some(b"secret"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("runs as uid 65534, not your own uid 0 or root"),
        "{stderr}"
    );
    assert_eq!(nothing_was_sent(&default_fake), 1);
}

#[test]
fn kmsctl_talks_to_a_daemon_of_the_expected_uid_only() {
    let d = Daemon::start(&[]);
    let me = rustix::process::geteuid().as_raw().to_string();
    let out = d.kmsctl(
        &[
            "--expect-uid",
            &me,
            "generate-random",
            "--number-of-bytes",
            "8",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = d.kmsctl(
        &[
            "--expect-uid",
            "65534",
            "generate-random",
            "--number-of-bytes",
            "8",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(3), "{out:?}");
}

/// Mode bits of a path.
fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn one_data_directory_serves_one_process_at_a_time() {
    let mut d = Daemon::start(&[]);
    let other = tempfile::tempdir().unwrap();
    let other_socket = other.path().join("kmsd.sock");
    // A second daemon on the same data directory, on another socket.
    let out = kmsd_exits(&[
        "serve".as_ref(),
        "--socket".as_ref(),
        other_socket.as_os_str(),
        "--data-dir".as_ref(),
        d.data_dir.as_os_str(),
    ]);
    one_line_failure(
        &out,
        &["is in use by pid ", "(kmsd serve)", "stop it first"],
    );
    assert!(!other_socket.exists(), "the second daemon never served");

    // migrate-root while the daemon runs (the lock is taken before the
    // target root is even opened, so no HSM is needed to see it).
    let config = other.path().join("pkcs11.toml");
    std::fs::write(
        &config,
        "[root]\nkind = \"pkcs11\"\n\n[root.pkcs11]\nmodule = \"/nonexistent/libpkcs11.so\"\n\
         token_label = \"t\"\npin_env = \"KMSD_TEST_UNSET_PIN\"\n",
    )
    .unwrap();
    let migrate = |d: &Daemon| {
        kmsd_exits(&[
            "migrate-root".as_ref(),
            "--data-dir".as_ref(),
            d.data_dir.as_os_str(),
            "--config".as_ref(),
            config.as_os_str(),
        ])
    };
    one_line_failure(&migrate(&d), &["is in use by pid ", "(kmsd serve)"]);
    d.client().generate_random(8).unwrap();

    // Once the daemon is gone the lock is free: migrate-root gets as far as
    // the (missing) PKCS#11 module.
    d.stop();
    let stderr = one_line_failure(&migrate(&d), &[]);
    assert!(!stderr.contains("in use"), "{stderr}");
}

#[test]
fn the_store_is_for_the_daemons_user_only() {
    let mut d = Daemon::start(&[]);
    d.client().create_key("files").unwrap();
    // While the daemon runs, the database and its WAL files exist.
    for f in ["keys.db", "keys.db-wal", "keys.db-shm", "kmsd.lock"] {
        assert_eq!(mode(&d.data_dir.join(f)), 0o600, "{f}");
    }
    assert_eq!(mode(&d.data_dir), 0o700);
    d.stop();

    // Loosened by hand (or made so by an older kmsd): narrowed at start,
    // and the log says so.
    std::fs::set_permissions(&d.data_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let db = d.data_dir.join("keys.db");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    d.restart();
    assert_eq!(mode(&d.data_dir), 0o700);
    assert_eq!(mode(&db), 0o600);
    assert!(d.log().contains("changed to 0700"), "{}", d.log());
    assert!(d.log().contains("changed to 0600"), "{}", d.log());
    d.client().generate_random(8).unwrap();
    d.stop();

    // Another user's data directory is refused.
    std::os::unix::fs::chown(&d.data_dir, Some(OTHER_UID), None).unwrap();
    let socket = d.dir.path().join("again.sock");
    let out = kmsd_exits(&[
        "serve".as_ref(),
        "--socket".as_ref(),
        socket.as_os_str(),
        "--data-dir".as_ref(),
        d.data_dir.as_os_str(),
    ]);
    one_line_failure(&out, &["owned by uid 65534", "mode 0700"]);
}

#[test]
fn the_daemon_sees_each_connection_as_the_kernel_reports_it() {
    // The identity policies will decide on: the connecting process's uid,
    // gid and pid as SO_PEERCRED gives them, for the blocking and the async
    // client alike, and one connection's answer never another's.
    let d = Daemon::start(&[]);
    let mut groups: Vec<u32> = rustix::process::getgroups()
        .unwrap()
        .into_iter()
        .map(|g| g.as_raw())
        .collect();
    groups.sort_unstable();
    groups.dedup();
    // The cgroup v2 path of this process, where the host has one.
    let cgroup = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
        });
    let me = kms_proto::WhoAmIOutput {
        uid: rustix::process::getuid().as_raw(),
        gid: rustix::process::getgid().as_raw(),
        pid: std::process::id() as i32,
        groups,
        unit: cgroup.as_deref().and_then(kmsd::transport::peer::unit_of),
        cgroup,
    };
    let mut a = d.client();
    let mut b = d.client();
    assert_eq!(a.who_am_i().unwrap(), me);
    assert_eq!(b.who_am_i().unwrap(), me);
    // In a batch with other items, answered item by item.
    let items = a
        .batch(vec![
            kms_proto::Operation::WhoAmI(kms_proto::WhoAmI),
            kms_proto::Operation::GenerateRandom(kms_proto::GenerateRandom { number_of_bytes: 8 }),
            kms_proto::Operation::WhoAmI(kms_proto::WhoAmI),
        ])
        .unwrap();
    assert_eq!(items.len(), 3);
    for i in [0, 2] {
        assert_eq!(
            items[i],
            Ok(kms_proto::Output::WhoAmI(me.clone())),
            "{items:?}"
        );
    }
}
