//! Thread roles: the acceptor and every I/O thread are marked as I/O
//! threads before they run anything (so that, in debug builds, a store or
//! PKCS#11 call there panics), and the thread that called `serve` is not.

use super::*;
use crate::thread_role::{self, Role};
use crate::transport::threads::{self, serve_handoffs, Handoffs, Ready, SocketMode};
use crate::transport::{ServeState, Shutdown};
use std::sync::Mutex;

/// The roles the I/O threads of the one test below found themselves in
/// (an I/O thread body is a plain `fn`, so it cannot capture a channel).
static ROLES: Mutex<Vec<Role>> = Mutex::new(Vec::new());

fn recording_io_thread(rx: Handoffs, state: Arc<ServeState>, stop: Shutdown, ready: Ready) {
    ROLES.lock().unwrap().push(thread_role::current());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let Some(rt) = threads::started(runtime, &ready) else {
        return;
    };
    rt.block_on(serve_handoffs(rx, state, stop, |h, _, _| drop(h)));
}

#[test]
fn the_acceptor_and_every_io_thread_are_marked_and_the_caller_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let listener = std::os::unix::net::UnixListener::bind(dir.path().join("s.sock")).unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let service = Arc::new(
        Service::open(
            &data,
            Arc::new(crate::root::FileRoot::from_key(
                crate::crypto::KeyMaterial::from_bytes([7; 32]),
            )),
            kms_proto::DecodeLimits::default(),
            10,
        )
        .unwrap(),
    );
    let dispatcher = Arc::new(Dispatcher::new(service, &DispatchConfig::default()).unwrap());
    let state = Arc::new(ServeState::new(
        &TransportConfig::default(),
        dispatcher,
        MAX_FRAME,
    ));
    // Shutdown already requested: `run` starts every thread, the acceptor
    // stops at once, and `run` returns once the I/O threads have drained.
    let (_tx, shutdown) = tokio::sync::watch::channel(true);
    threads::run(
        "roles",
        listener,
        3,
        state,
        shutdown,
        SocketMode::NonBlocking,
        recording_io_thread,
    )
    .unwrap();
    assert_eq!(*ROLES.lock().unwrap(), vec![Role::Io; 3]);
    // The caller may block again once serving is over.
    assert_eq!(thread_role::current(), Role::MayBlock);
    // The acceptor is started by the same helper.
    let acceptor_role = threads::spawn_io_thread("roles-accept".into(), thread_role::current)
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(acceptor_role, Role::Io);
}
