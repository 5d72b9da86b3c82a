//! `kmsctl audit verify` and `kmsctl audit tail`: kmsd's audit log (docs/audit.md).
//!
//! verify checks the hash chain offline (every record's `sequenceNumber`
//! follows the one before it, its `previousHash` is the SHA-256 of the line
//! before it, across files, and each line has a record's shape), then asks
//! the daemon (VerifyAuditSeals) whether each seal is one its key made and
//! where the chain's head is, so that a log rewritten consistently, cut
//! short, or edited after its last seal is caught. It names the first bad
//! record (file, line, sequence number) and why.
//!
//! Exit codes of verify: 0 the log is whole; 1 it is not (the first bad
//! record is named); 2 usage, or the log cannot be read; 3 the daemon
//! cannot be reached (seals and head unchecked; `--offline` skips them);
//! 5 whole, except a record torn by a crash, which is named.

use kms_proto::client::Client;
use kms_proto::AuditSeal;
use sha2::{Digest, Sha256};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Seals asked about in one request.
const SEALS_PER_REQUEST: usize = 1000;

/// The default audit directory: the daemon's default data directory's
/// `audit` (`$XDG_DATA_HOME/kmsd/audit`, else `~/.local/share/kmsd/audit`).
pub fn default_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("kmsd/audit");
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(h) => PathBuf::from(h).join(".local/share/kmsd/audit"),
        None => PathBuf::from("/var/lib/kmsd/audit"),
    }
}

/// The log files of `dir` in order.
fn files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let rd = std::fs::read_dir(dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
    let mut files: Vec<(u64, PathBuf)> = rd
        .filter_map(Result::ok)
        .filter_map(|e| {
            let n = e.file_name().to_str()?.to_owned();
            let i = n
                .strip_prefix("audit-")?
                .strip_suffix(".jsonl")?
                .parse()
                .ok()?;
            Some((i, e.path()))
        })
        .collect();
    files.sort();
    Ok(files.into_iter().map(|(_, p)| p).collect())
}

/// Where a record is.
#[derive(Clone, Debug)]
struct At {
    file: String,
    line: usize,
    seq: Option<u64>,
}

impl std::fmt::Display for At {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} line {}", self.file, self.line)?;
        if let Some(s) = self.seq {
            write!(f, " (sequenceNumber {s})")?;
        }
        Ok(())
    }
}

/// The outcome of the offline walk.
struct Walk {
    records: u64,
    last_seq: u64,
    seals: Vec<(AuditSeal, At)>,
    torn: Vec<String>,
    /// (seq, hash, where) of every record, kept only for the head check's
    /// record (`want`).
    at_head: Option<([u8; 32], At)>,
}

fn hex32(v: &serde_json::Value) -> Option<[u8; 32]> {
    let s = v.as_str()?;
    let b = hex::decode(s).ok()?;
    b.try_into().ok()
}

/// A line's record shape: the fields every record has.
fn shape(v: &serde_json::Value) -> Result<(u64, [u8; 32]), String> {
    for f in [
        "eventVersion",
        "eventTime",
        "eventSource",
        "eventName",
        "eventID",
    ] {
        if !v.get(f).is_some_and(serde_json::Value::is_string) {
            return Err(format!("no {f} string"));
        }
    }
    let seq = v
        .get("sequenceNumber")
        .and_then(serde_json::Value::as_u64)
        .ok_or("no sequenceNumber")?;
    let prev = v
        .get("previousHash")
        .and_then(hex32)
        .ok_or("no previousHash of 64 hex digits")?;
    Ok((seq, prev))
}

/// Walks the chain over every file; `Err((where, why))` at the first bad
/// record.
fn walk(dir: &Path, head_seq: Option<u64>) -> Result<Result<Walk, (At, String)>, String> {
    let mut w = Walk {
        records: 0,
        last_seq: 0,
        seals: Vec::new(),
        torn: Vec::new(),
        at_head: None,
    };
    let mut hash = [0u8; 32];
    let mut prev_at: Option<At> = None;
    // A line that is not a record, waiting for the recovery record that
    // must name it: (at, offset, length, sha256).
    let mut pending: Option<(At, u64, u64, [u8; 32])> = None;
    for path in files(dir)? {
        let fname = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let bytes = std::fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        let mut offset = 0u64;
        for (i, raw) in bytes.split_inclusive(|&b| b == b'\n').enumerate() {
            let line = raw.strip_suffix(b"\n").unwrap_or(raw);
            let mut at = At {
                file: fname.clone(),
                line: i + 1,
                seq: None,
            };
            let this_offset = offset;
            offset += raw.len() as u64;
            let v: serde_json::Value = match serde_json::from_slice(line) {
                Ok(v) => v,
                Err(e) => {
                    if let Some((p, ..)) = pending {
                        return Ok(Err((
                            p,
                            "not a record, and no recovery record names it".into(),
                        )));
                    }
                    let sha: [u8; 32] = Sha256::digest(line).into();
                    pending = Some((at.clone(), this_offset, line.len() as u64, sha));
                    let _ = e;
                    continue;
                }
            };
            let (seq, prev) = match shape(&v) {
                Ok(x) => x,
                Err(why) => return Ok(Err((at, format!("not a record: {why}")))),
            };
            at.seq = Some(seq);
            if let Some((p, off, len, sha)) = pending.take() {
                let t = &v["additionalEventData"]["tornRecord"];
                let names_it = v["eventName"] == "AuditLogRecovered"
                    && t["file"] == p.file.as_str()
                    && t["offset"].as_u64() == Some(off)
                    && t["length"].as_u64() == Some(len)
                    && hex32(&t["sha256"]) == Some(sha);
                if !names_it {
                    return Ok(Err((
                        p,
                        "not a record, and no recovery record names it".into(),
                    )));
                }
                w.torn.push(format!(
                    "{p}: torn by a crash ({len} bytes), named by the recovery record at {at}"
                ));
            }
            let expected = w.last_seq + 1;
            if seq != expected {
                let why = if w.records == 0 {
                    format!("the log starts at sequenceNumber {seq}, not 1: records or files before it are missing")
                } else if seq <= w.last_seq {
                    format!(
                        "sequenceNumber {seq} after {}: records reordered or repeated",
                        w.last_seq
                    )
                } else {
                    format!(
                        "sequenceNumber {seq} after {}: records {expected}..{} are missing",
                        w.last_seq,
                        seq - 1
                    )
                };
                return Ok(Err((at, why)));
            }
            if prev != hash {
                return Ok(Err(match prev_at {
                    Some(p) => (
                        p,
                        format!("its SHA-256 is not the previousHash of the record after it ({at}): it was changed"),
                    ),
                    None => (at, "the first record's previousHash is not zeros".into()),
                }));
            }
            if v["eventName"] == "AuditSeal" && v["eventSource"] == "kmsd" {
                let Some(mac) = hex32(&v["additionalEventData"]["seal"]) else {
                    return Ok(Err((
                        at,
                        "a seal record without a 64-hex-digit seal".into(),
                    )));
                };
                w.seals.push((
                    AuditSeal {
                        seq,
                        prev_hash: prev,
                        mac,
                    },
                    at.clone(),
                ));
            }
            hash = Sha256::digest(line).into();
            if Some(seq) == head_seq {
                w.at_head = Some((hash, at.clone()));
            }
            w.records += 1;
            w.last_seq = seq;
            prev_at = Some(at);
        }
    }
    if let Some((p, _, len, _)) = pending {
        w.torn.push(format!(
            "{p}: torn by a crash ({len} bytes) at the end of the log; the daemon names it when it starts again"
        ));
    }
    Ok(Ok(w))
}

/// `kmsctl audit verify`.
pub fn verify(
    dir: &Path,
    offline: bool,
    connect: impl FnOnce() -> std::io::Result<Client>,
) -> ExitCode {
    // The head first: records written after it are checked by the chain
    // only; the head itself must be in the files as the daemon wrote it.
    let mut client = None;
    let mut head = None;
    if !offline {
        match connect().map_err(|e| e.to_string()).and_then(|mut c| {
            let h = c
                .verify_audit_seals(Vec::new())
                .map_err(|e| e.to_string())?;
            Ok((c, h))
        }) {
            Ok((c, h)) => {
                head = Some((h.head_seq, h.head_hash));
                client = Some(c);
            }
            Err(e) => {
                eprintln!("kmsctl: audit verify: cannot ask kmsd for the seals and the head: {e} (use --offline to check the chain alone)");
                return ExitCode::from(3);
            }
        }
    }
    let w = match walk(dir, head.map(|h| h.0)) {
        Err(e) => {
            eprintln!("kmsctl: audit verify: {e}");
            return ExitCode::from(2);
        }
        Ok(Err((at, why))) => return bad(&at, &why),
        Ok(Ok(w)) => w,
    };
    if let (Some(c), Some((head_seq, head_hash))) = (client.as_mut(), head) {
        if w.records > 0 && w.seals.is_empty() {
            let at = At {
                file: "-".into(),
                line: 0,
                seq: None,
            };
            return bad(&at, "no seal in the log: kmsd seals at every start");
        }
        for chunk in w.seals.chunks(SEALS_PER_REQUEST) {
            let seals = chunk.iter().map(|(s, _)| *s).collect();
            match c.verify_audit_seals(seals) {
                Ok(r) => {
                    if let Some(i) = r.valid.iter().position(|v| !v) {
                        return bad(
                            &chunk[i].1,
                            "its seal is not one the daemon's seal key made: the log was rewritten",
                        );
                    }
                    if r.valid.len() != chunk.len() {
                        eprintln!(
                            "kmsctl: audit verify: the daemon answered {} of {} seals",
                            r.valid.len(),
                            chunk.len()
                        );
                        return ExitCode::from(2);
                    }
                }
                Err(e) => {
                    eprintln!("kmsctl: audit verify: VerifyAuditSeals: {e}");
                    return ExitCode::from(3);
                }
            }
        }
        match &w.at_head {
            None if head_seq > 0 => {
                let at = At {
                    file: "-".into(),
                    line: 0,
                    seq: Some(w.last_seq),
                };
                return bad(
                    &at,
                    &format!("the log ends at sequenceNumber {} but kmsd has written up to {head_seq}: its end was cut off", w.last_seq),
                );
            }
            Some((h, at)) if *h != head_hash => {
                return bad(at, "this record is not the one kmsd wrote last (its hash differs from the daemon's head): the log was changed after it was written");
            }
            _ => {}
        }
    }
    for t in &w.torn {
        println!("torn record: {t}");
    }
    println!(
        "audit log {}: {} records, chain whole{}",
        dir.display(),
        w.records,
        if offline {
            " (offline: seals and head not checked)".to_owned()
        } else {
            format!(", {} seals valid, head matches", w.seals.len())
        }
    );
    if w.torn.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(5)
    }
}

fn bad(at: &At, why: &str) -> ExitCode {
    println!("first bad record: {at}: {why}");
    ExitCode::from(1)
}

/// One record as a summary line: time, number, operation, caller, request
/// id, outcome, key.
fn summary(line: &[u8]) -> String {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else {
        return format!("(not a record: {} bytes)", line.len());
    };
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_owned();
    let outcome = v.get("errorCode").map_or_else(|| "OK".to_owned(), s);
    let key = v["requestParameters"]["keyId"]
        .as_str()
        .or_else(|| v["resources"][0]["ARN"].as_str())
        .unwrap_or("");
    let items = v["additionalEventData"]["items"]
        .as_u64()
        .map_or_else(String::new, |n| format!(" items={n}"));
    format!(
        "{} #{} {} {} req={} {}{} {}",
        s(&v["eventTime"]),
        v["sequenceNumber"].as_u64().unwrap_or(0),
        s(&v["eventName"]),
        v["userIdentity"]["principalId"].as_str().unwrap_or("kmsd"),
        v["requestID"].as_str().unwrap_or("-"),
        outcome,
        items,
        key
    )
    .trim_end()
    .to_owned()
}

fn print_line(out: &mut impl Write, line: &[u8], json: bool) -> std::io::Result<()> {
    if json {
        out.write_all(line)?;
        out.write_all(b"\n")
    } else {
        writeln!(out, "{}", summary(line))
    }
}

/// `kmsctl audit tail`: the last `n` records, then (with `follow`) every new
/// one, across rotations.
pub fn tail(dir: &Path, n: usize, json: bool, follow: bool) -> ExitCode {
    let list = match files(dir) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("kmsctl: audit tail: {e}");
            return ExitCode::from(2);
        }
    };
    let mut stdout = std::io::stdout().lock();
    // The last n lines, from the newest files backwards. Following starts
    // where this read of the newest file ended, not at its length later:
    // records written meanwhile are printed, not skipped.
    let mut last: std::collections::VecDeque<Vec<u8>> = std::collections::VecDeque::new();
    let mut newest_read: Option<u64> = None;
    for p in list.iter().rev() {
        let Ok(bytes) = std::fs::read(p) else {
            continue;
        };
        let mut bytes = &bytes[..];
        if Some(p) == list.last() {
            // Up to its last whole line: a record being written is
            // printed whole, by the follower.
            let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            newest_read = Some(whole as u64);
            bytes = &bytes[..whole];
        }
        for l in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()).rev() {
            if last.len() >= n {
                break;
            }
            last.push_front(l.to_vec());
        }
        if last.len() >= n {
            break;
        }
    }
    for l in &last {
        if print_line(&mut stdout, l, json).is_err() {
            return ExitCode::from(4);
        }
    }
    let _ = stdout.flush();
    if !follow {
        return ExitCode::SUCCESS;
    }
    let Some(mut current) = list.last().cloned() else {
        eprintln!("kmsctl: audit tail: no log files in {}", dir.display());
        return ExitCode::from(2);
    };
    let mut pos = newest_read.unwrap_or(0);
    let mut partial = Vec::new();
    loop {
        let mut grew = false;
        if let Ok(mut f) = std::fs::File::open(&current) {
            if f.seek(SeekFrom::Start(pos)).is_ok() {
                let mut buf = Vec::new();
                if f.read_to_end(&mut buf).is_ok() && !buf.is_empty() {
                    pos += buf.len() as u64;
                    partial.extend_from_slice(&buf);
                    grew = true;
                }
            }
        }
        while let Some(i) = partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = partial.drain(..=i).collect();
            if print_line(&mut stdout, &line[..line.len() - 1], json).is_err() {
                return ExitCode::from(4);
            }
        }
        let _ = stdout.flush();
        if !grew {
            // A newer file: the current one is finished (the writer seals
            // and moves on); read what is left of it first.
            if let Some(next) = files(dir)
                .ok()
                .and_then(|l| l.into_iter().find(|p| *p > current))
            {
                let rest = std::fs::metadata(&current).map_or(pos, |m| m.len());
                if rest == pos {
                    current = next;
                    pos = 0;
                    continue;
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
