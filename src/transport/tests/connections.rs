//! The connection caps: in all and per uid, decided at accept.

use super::*;
use crate::transport::socket;

#[test]
fn connections_beyond_the_cap_are_closed_at_once() {
    for io in engines() {
        let server = Server::start(io, |c| c.max_connections = 1);
        let mut first = server.client();
        assert_eq!(first.generate_random(4).unwrap().expose().len(), 4);
        let mut second = server.raw();
        let mut req = Vec::new();
        random_request(1, 4, &mut req);
        // The write may already fail if the close was quick.
        let _ = second.write_all(&req);
        assert!(
            read_response(&mut second, &mut BytesMut::new()).is_none(),
            "{io:?}"
        );
        drop(first);
        // Once the first is gone, a new connection is served.
        let start = Instant::now();
        loop {
            let mut s = server.raw();
            let _ = s.write_all(&req);
            if read_response(&mut s, &mut BytesMut::new()).is_some() {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{io:?}: slot never freed"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Runs `f` on a new thread whose credentials (only the thread's: Linux
/// keeps them per thread, and rustix's calls are the raw syscalls) are
/// uid and gid `id`.
fn as_uid<T: Send + 'static>(id: u32, f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        use rustix::process::{Gid, Uid};
        use rustix::thread::{set_thread_res_gid, set_thread_res_uid};
        let gid = Gid::from_raw(id);
        set_thread_res_gid(gid, gid, gid).unwrap();
        let uid = Uid::from_raw(id);
        set_thread_res_uid(uid, uid, uid).unwrap();
        f()
    })
    .join()
    .unwrap()
}

#[test]
fn one_uid_flooding_idle_and_half_frame_connections_does_not_lock_out_another() {
    const OTHER: u32 = 65534;
    // A second uid needs root (to switch a thread's credentials); as
    // another user only the cap on the flooding uid is checked.
    let root = rustix::process::geteuid().is_root();
    if !root {
        eprintln!("not root: the second uid's part of this test is not run");
    }
    for io in engines() {
        let server = Server::start_for_all(io, |c| {
            c.max_connections = 8;
            c.max_connections_per_uid = 4;
        });
        // The flood: 20 connections from this uid, half idle, half
        // holding half a frame, all accepted before the other uid's.
        let mut flood = Vec::new();
        for i in 0..20 {
            let mut s = server.raw();
            if i % 2 == 1 {
                let _ = s.write_all(&[100, 0, 0, 0, 1, 2, 3]);
            }
            flood.push(s);
        }
        if root {
            other_uid_is_served(&server, OTHER, io);
        }
        // The flooding uid got no more than its share: its extra
        // connections were closed at accept, which (first come, first
        // accepted) happened before the last connection was accepted.
        if !root {
            assert_eq!(
                server.client().generate_random(8).unwrap().expose().len(),
                8
            );
        }
        let closed = flood.iter().filter(|s| closed_within(s, 0)).count();
        assert_eq!(closed, 16, "{io:?}");
    }
}

fn other_uid_is_served(server: &Server, other: u32, io: IoMode) {
    {
        // The kernel names the other uid as the peer of its
        // connections (checked here with the daemon's own reader).
        let check = tempfile::tempdir().unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(check.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        }
        let path = check.path().join("peercred.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        std::fs::set_permissions(&path, {
            use std::os::unix::fs::PermissionsExt;
            std::fs::Permissions::from_mode(0o777)
        })
        .unwrap();
        let probe = as_uid(other, move || UnixStream::connect(&path).unwrap());
        let (accepted, _) = listener.accept().unwrap();
        let accepted = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let s = tokio::net::UnixStream::from_std({
                    accepted.set_nonblocking(true).unwrap();
                    accepted
                })
                .unwrap();
                socket::peer_of(&s).unwrap()
            });
        assert_eq!((accepted.uid, accepted.gid), (other, other));
        drop(probe);

        // The other uid is served.
        let socket = server.socket.clone();
        let served = as_uid(other, move || {
            let mut c = Client::connect(&socket).unwrap();
            c.stream()
                .set_read_timeout(Some(Duration::from_secs(20)))
                .unwrap();
            c.generate_random(8).map(|r| r.expose().len())
        });
        assert_eq!(served.unwrap(), 8, "{io:?}");
    }
}
