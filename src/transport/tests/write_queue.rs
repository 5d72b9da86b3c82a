//! The writer queue on its own: gathering, and permits held until the
//! answer is written.

use super::*;
use crate::dispatch::{Admission, Outgoing, Reply};
use crate::transport::write_queue::{Chunk, WriteQueue};
use tokio::sync::{mpsc, Semaphore};

#[test]
fn write_queue_gathers_and_never_grows_its_buffer() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut q = WriteQueue::new(rx);
        let cap = q.buf.capacity();
        let small = |n: usize| Outgoing {
            frame: vec![1; n],
            permit: None,
        };
        for _ in 0..3 {
            tx.send(small(100)).unwrap();
        }
        tx.send(small(cap - 200)).unwrap(); // does not fit behind 300
        tx.send(small(cap + 1)).unwrap(); // larger than the buffer
        assert!(matches!(q.next().await, Some(Chunk::Gathered)));
        assert_eq!(q.buf.len(), 300);
        q.written();
        assert!(matches!(q.next().await, Some(Chunk::Gathered)));
        assert_eq!(q.buf.len(), cap - 200);
        q.written();
        match q.next().await {
            Some(Chunk::Large(o)) => assert_eq!(o.frame.len(), cap + 1),
            _ => panic!("expected the large answer on its own"),
        }
        assert_eq!(q.buf.capacity(), cap);
        drop(tx);
        assert!(q.next().await.is_none());
    });
}

#[test]
fn permits_return_only_after_the_answer_is_written() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let sem = Arc::new(Semaphore::new(1));
        let (tx, rx) = mpsc::unbounded_channel();
        let mut q = WriteQueue::new(rx);
        Reply::new(
            tx,
            Some(Admission::permit(
                Arc::clone(&sem).try_acquire_owned().unwrap(),
            )),
        )
        .send(vec![9; 10]);
        assert!(matches!(q.next().await, Some(Chunk::Gathered)));
        assert_eq!(sem.available_permits(), 0, "held while being written");
        q.written();
        assert_eq!(sem.available_permits(), 1);
    });
}
