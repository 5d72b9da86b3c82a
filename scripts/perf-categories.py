#!/usr/bin/env python3
"""Where a kmsd profile's samples went, by part of the request path
(docs/perf/http.md).

    perf record -F 999 --call-graph dwarf,32768 -p <kmsd pid> -o perf.data -- sleep 5
    perf script -i perf.data -F comm,tid,ip,sym,dso > script.txt
    scripts/perf-categories.py script.txt [DAEMON_US_PER_REQUEST]

Each sample goes to one category: a sample in the kernel under schedule()
is a context switch; other kernel samples go by the system call the
user-space stack made (socket I/O, the audit file, the eventfd write of a
tokio waker); a user-space sample goes to the innermost frame that names a
part of the path (hyper, http::json, call.rs's frame round trip, the
service, the audit log, ...), so allocations count with whoever made them.
With the daemon's CPU per request (kms-loadgen's `target cpu ... ns/op`,
in µs), each share is also shown as µs per request.
"""
import collections
import re
import sys

KERNEL = "[kernel.kallsyms]"

# Innermost match wins: the more specific parts come first.
RULES = [
    ("JSON decode of the request body (http::json, serde_json)",
     r"JsonRequest|http::json::request|http::json::scan"),
    ("JSON encode of the answer (http::json::response, base64)",
     r"http::json::response|encode_output|encode_json_error|http::json::error"),
    ("call.rs: request re-encoded as a binary frame", r"call::encode_frame|RequestEncoder"),
    ("call.rs: answer frame decoded back", r"decode_response"),
    ("audit log (record, hash chain, writer)", r"kmsd::audit"),
    ("quotas", r"kmsd::quota"),
    ("metrics", r"kmsd::metrics|metrics::|metrics_exporter"),
    ("service: GenerateDataKey (keys, crypto, policy)", r"kmsd::service|kmsd::crypto|kms_policy"),
    ("binary admission (wire::admit, frame decode)", r"kmsd::wire::admit|decode_request|kmsd::wire::bound"),
    ("binary answer encode (wire::answer)", r"kmsd::wire::answer|encode_response|kmsd::wire"),
    ("dispatch (offer, budgets, reply)", r"kmsd::dispatch|kmsd::budget"),
    ("hyper: request head parsing",
     r"Server as hyper::proto::h1::Http1Transaction>::parse|httparse"),
    ("hyper: answer head encoding (incl. Date)",
     r"Server as hyper::proto::h1::Http1Transaction>::encode|httpdate|hyper::common::date"),
    ("hyper: connection state machine, body, buffers", r"hyper::|http_body"),
    ("transport/http.rs: handle, headers, respond",
     r"kmsd::transport::http|http::header|HeaderMap|http::"),
    ("binary transport (transport::conn, write queue)",
     r"kmsd::transport::(conn|write_queue|epoll|uring|threads)"),
    ("tokio runtime (tasks, timers, mpsc, wakers)", r"tokio::|mio::"),
    ("crossbeam channels (audit queue)", r"crossbeam"),
]
RULES = [(name, re.compile(pattern)) for name, pattern in RULES]


def samples(path):
    """(thread name, frames from the leaf up) per sample of `perf script`."""
    cur = None
    for line in open(path, errors="replace"):
        if not line.strip():
            if cur:
                yield cur
            cur = None
        elif not line[0].isspace():
            cur = (line.split()[0], [])
        elif cur is not None:
            parts = line.strip().split(" ", 1)
            if len(parts) == 2:
                cur[1].append(parts[1])
    if cur:
        yield cur


def kernel_category(comm, frames):
    if any("schedule" in f or "finish_task_switch" in f for f in frames[:12]):
        return "kernel: context switches (sleeping, waking)"
    user = " ".join(f for f in frames if KERNEL not in f)
    if "Waker::wake" in user:
        return "kernel: eventfd write(2) waking an I/O thread's runtime (tokio waker)"
    if any(w in user for w in ("futex", "SyncWaker::notify", "Parker", "lll_lock_wake")):
        return "kernel: futex (channel wake-ups, locks)"
    if "fdatasync" in user or "sync_data" in user:
        return "kernel: fdatasync (audit)"
    if comm.startswith("kmsd-audit") and "write" in user:
        return "kernel: write(2) of the audit file"
    if any(w in user for w in ("_send", "sendto", "sendmsg")):
        return "kernel: sendto (answers out)"
    if "_recv" in user:
        return "kernel: recvfrom (requests in)"
    if "epoll_wait" in user:
        return "kernel: epoll_wait"
    if "write" in user:
        return "kernel: write(2) other"
    return "kernel: interrupts, other"


def category(comm, frames):
    if not frames:
        return "unknown"
    if KERNEL in frames[0]:
        return kernel_category(comm, frames)
    for f in frames:
        for name, pattern in RULES:
            if pattern.search(f):
                return name
    return "libc, allocator, other"


def main():
    per_request = float(sys.argv[2]) if len(sys.argv) > 2 else None
    total = collections.Counter()
    by_thread = collections.defaultdict(collections.Counter)
    threads = collections.Counter()
    for comm, frames in samples(sys.argv[1]):
        c = category(comm, frames)
        total[c] += 1
        by_thread[comm][c] += 1
        threads[comm] += 1
    n = sum(total.values())
    print(f"{n} samples; by thread: "
          + ", ".join(f"{t} {100 * v / n:.1f}%" for t, v in threads.most_common()))
    head = "| category | share |" + (" µs/request |" if per_request else "") + " by thread (%) |"
    print(head)
    print("|---" * (head.count("|") - 1) + "|")
    for c, v in total.most_common():
        us = f" {per_request * v / n:.2f} |" if per_request else ""
        split = ", ".join(f"{t} {100 * by_thread[t][c] / n:.1f}"
                          for t in threads if by_thread[t][c] * 1000 > n)
        print(f"| {c} | {100 * v / n:.1f}% |{us} {split} |")


if __name__ == "__main__":
    main()
