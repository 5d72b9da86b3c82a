//! The echo baseline's server: the same socket type as kmsd, a thread per
//! connection, every byte written back as it arrives. Frames come back
//! whole and in order, so the load generator matches answers to requests by
//! position and the figure is the transport's limit on this machine, with no
//! parsing on either side.
//!
//! Reads block; writes do not, and while some echo is still unsent the
//! thread waits for either direction, so large frames flow both ways at once
//! (a read-then-write-all loop would be half duplex and slower than kmsd).

use rustix::event::{poll, PollFd, PollFlags};
use rustix::net::{send, SendFlags};
use std::io::Read;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

/// Serves `socket` until the process is killed.
pub fn serve(socket: &Path) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket)?;
    for stream in listener.incoming() {
        let stream = stream?;
        std::thread::spawn(move || echo(stream));
    }
    Ok(())
}

fn echo(mut stream: UnixStream) {
    const CAP: usize = 1 << 20;
    let mut buf = vec![0u8; CAP];
    // Unsent bytes are buf[head..tail].
    let (mut head, mut tail) = (0usize, 0usize);
    loop {
        if head == tail {
            head = 0;
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => tail = n,
            }
        } else {
            let want_in = tail < CAP;
            let mut flags = PollFlags::OUT;
            if want_in {
                flags |= PollFlags::IN;
            }
            let mut fds = [PollFd::new(&stream, flags)];
            if poll(&mut fds, None).is_err() {
                return;
            }
            let ready = fds[0].revents();
            if ready.intersects(PollFlags::ERR | PollFlags::HUP) && !ready.contains(PollFlags::IN) {
                return;
            }
            if want_in && ready.contains(PollFlags::IN) {
                match stream.read(&mut buf[tail..]) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => tail += n,
                }
            }
        }
        match send(&stream, &buf[head..tail], SendFlags::DONTWAIT) {
            Ok(n) => head += n,
            Err(rustix::io::Errno::AGAIN) => {}
            Err(_) => return,
        }
        if head == tail {
            head = 0;
            tail = 0;
        } else if head > CAP / 2 {
            buf.copy_within(head..tail, 0);
            tail -= head;
            head = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn echoes_what_it_reads_small_and_large() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.sock");
        let p = path.clone();
        std::thread::spawn(move || serve(&p));
        let mut c = loop {
            if let Ok(c) = UnixStream::connect(&path) {
                break c;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        c.write_all(b"\x03\0\0\0abc").unwrap();
        let mut back = [0u8; 7];
        c.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"\x03\0\0\0abc");
        // More than both socket buffers and the server's buffer together,
        // written while reading: only a full-duplex echo gets through.
        let big: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut w = c.try_clone().unwrap();
        let sent = big.clone();
        let writer = std::thread::spawn(move || w.write_all(&sent).unwrap());
        let mut got = vec![0u8; big.len()];
        c.read_exact(&mut got).unwrap();
        writer.join().unwrap();
        assert!(got == big);
    }
}
