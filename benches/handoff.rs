//! The hand-off from an I/O thread to a worker: the crossbeam `ArrayQueue`
//! the dispatcher uses, against a naive `Mutex<VecDeque>`, streaming items
//! between two threads; and the round trip of a rayon spawn against running
//! the same tiny job inline (the measurement behind inline dispatch).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use crossbeam_queue::ArrayQueue;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ITEMS: u64 = 100_000;

/// Streams `n` items from the calling thread to a consumer thread through
/// `push`/`pop`, returning the elapsed time.
fn stream<Q: Send + Sync + 'static>(
    q: Arc<Q>,
    n: u64,
    push: fn(&Q, u64) -> bool,
    pop: fn(&Q) -> Option<u64>,
) -> Duration {
    let done = Arc::new(AtomicU64::new(0));
    let consumer = {
        let q = Arc::clone(&q);
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut got = 0;
            while got < n {
                if pop(&q).is_some() {
                    got += 1;
                } else {
                    std::hint::spin_loop();
                }
            }
            done.store(got, Ordering::Release);
        })
    };
    let start = Instant::now();
    for i in 0..n {
        while !push(&q, i) {
            std::hint::spin_loop();
        }
    }
    consumer.join().unwrap();
    assert_eq!(done.load(Ordering::Acquire), n);
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("handoff_stream");
    g.throughput(Throughput::Elements(ITEMS));
    g.sample_size(20);
    g.bench_function("crossbeam_ArrayQueue", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    stream(
                        Arc::new(ArrayQueue::<u64>::new(4096)),
                        ITEMS,
                        |q, v| q.push(v).is_ok(),
                        |q| q.pop(),
                    )
                })
                .sum()
        })
    });
    g.bench_function("naive_Mutex_VecDeque", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    stream(
                        Arc::new(Mutex::new(VecDeque::<u64>::with_capacity(4096))),
                        ITEMS,
                        |q, v| {
                            let mut q = q.lock().unwrap();
                            if q.len() >= 4096 {
                                return false;
                            }
                            q.push_back(v);
                            true
                        },
                        |q| q.lock().unwrap().pop_front(),
                    )
                })
                .sum()
        })
    });
    g.finish();

    // Round trip of one tiny job: inline vs a rayon worker that may be parked.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    let mut g = c.benchmark_group("handoff_round_trip");
    g.throughput(Throughput::Elements(1));
    let job = || {
        let mut k = [0u8; 32];
        kmsd::crypto::rng::fill(&mut k);
        k
    };
    g.bench_function("inline", |b| b.iter(job));
    g.bench_function("rayon_spawn_and_wait", |b| {
        b.iter(|| {
            let flag = Arc::new(AtomicBool::new(false));
            let f = Arc::clone(&flag);
            pool.spawn(move || {
                std::hint::black_box(job());
                f.store(true, Ordering::Release);
            });
            while !flag.load(Ordering::Acquire) {
                std::hint::spin_loop();
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
