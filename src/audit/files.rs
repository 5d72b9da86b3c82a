//! The log's files: names, and what start-up finds at the end of the last
//! one (the chain's head, and a torn last record left by a crash).

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// `audit-000001.jsonl`, `audit-000002.jsonl`, ...: names sort in order.
pub fn name(index: u64) -> String {
    format!("audit-{index:06}.jsonl")
}

/// The index a file name has, if it is a log file's.
pub fn index_of(name: &str) -> Option<u64> {
    name.strip_prefix("audit-")?
        .strip_suffix(".jsonl")?
        .parse()
        .ok()
}

/// The log files in `dir`, in order.
pub fn list(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if let Some(i) = e.file_name().to_str().and_then(index_of) {
            files.push((i, e.path()));
        }
    }
    files.sort();
    Ok(files)
}

/// SHA-256 of a record's line (without its newline): the chain's link.
pub fn line_hash(line: &[u8]) -> [u8; 32] {
    Sha256::digest(line).into()
}

/// A last record cut short by a crash: kept as it is (a newline is
/// appended), and named by the recovery record that follows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Torn {
    /// Its file's name.
    pub file: String,
    /// Where it starts in the file.
    pub offset: u64,
    /// Its length (without the appended newline).
    pub length: u64,
    /// SHA-256 of its bytes.
    pub sha256: [u8; 32],
}

/// Where the log ends.
#[derive(Debug)]
pub struct Tail {
    /// The file to append to (the last one).
    pub index: u64,
    /// Sequence number of the last complete record (0: none yet).
    pub seq: u64,
    /// Its hash (zeros when there is none).
    pub hash: [u8; 32],
    /// A torn record found at the end of the last file.
    pub torn: Option<Torn>,
    /// Whether the last file lacks a final newline (after a torn record):
    /// the writer appends one first.
    pub needs_newline: bool,
}

/// Reads the end of the log in `dir`: the last complete record's number and
/// hash, looking back through files that have none (a file just started by
/// a rotation), and a torn last record. A record that ends with a newline
/// but does not parse is torn too (a crash cannot make one, an edit can;
/// `kmsctl audit verify` tells which).
pub fn tail(dir: &Path) -> anyhow::Result<Tail> {
    let files = list(dir)?;
    let Some(&(last_index, _)) = files.last() else {
        return Ok(Tail {
            index: 1,
            seq: 0,
            hash: [0; 32],
            torn: None,
            needs_newline: false,
        });
    };
    let mut torn = None;
    let mut needs_newline = false;
    for (n, (index, path)) in files.iter().rev().enumerate() {
        let bytes = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("reading audit file {}: {e}", path.display()))?;
        let fname = name(*index);
        // Complete lines end with '\n'; what follows the last one is torn.
        let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
        let mut lines: Vec<(usize, &[u8])> = Vec::new();
        let mut at = 0;
        for line in bytes[..complete].split_inclusive(|&b| b == b'\n') {
            lines.push((at, &line[..line.len() - 1]));
            at += line.len();
        }
        if n == 0 {
            let mut torn_at = (complete < bytes.len()).then_some(complete);
            if let Some(&(off, line)) = lines.last() {
                if seq_of(line).is_none() {
                    torn_at = Some(off);
                    lines.pop();
                }
            }
            if let Some(off) = torn_at {
                let t = &bytes[off..];
                // The torn bytes as they are, less a final newline.
                let t = t.strip_suffix(b"\n").unwrap_or(t);
                torn = Some(Torn {
                    file: fname.clone(),
                    offset: off as u64,
                    length: t.len() as u64,
                    sha256: line_hash(t),
                });
                needs_newline = complete < bytes.len();
            }
        }
        if let Some(&(off, line)) = lines.last() {
            let seq = seq_of(line).ok_or_else(|| {
                anyhow::anyhow!(
                    "audit file {} is damaged at offset {off} (not a record): run `kmsctl audit verify`",
                    path.display()
                )
            })?;
            return Ok(Tail {
                index: last_index,
                seq,
                hash: line_hash(line),
                torn,
                needs_newline,
            });
        }
    }
    Ok(Tail {
        index: last_index,
        seq: 0,
        hash: [0; 32],
        torn,
        needs_newline,
    })
}

/// A record's `sequenceNumber`, if the line is a JSON object with one.
pub fn seq_of(line: &[u8]) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_slice(line).ok()?;
    v.get("sequenceNumber")?.as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_and_parse_back() {
        assert_eq!(name(1), "audit-000001.jsonl");
        assert_eq!(index_of(&name(123)), Some(123));
        assert_eq!(index_of("audit-x.jsonl"), None);
        assert!(name(9) < name(10));
    }

    #[test]
    fn the_tail_is_the_last_complete_record_and_a_torn_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let a = br#"{"sequenceNumber":1}"#;
        let b = br#"{"sequenceNumber":2}"#;
        let mut text = Vec::new();
        text.extend_from_slice(a);
        text.push(b'\n');
        text.extend_from_slice(b);
        text.push(b'\n');
        std::fs::write(dir.path().join(name(1)), &text).unwrap();
        // A rotation's new file, still empty.
        std::fs::write(dir.path().join(name(2)), b"").unwrap();
        let t = tail(dir.path()).unwrap();
        assert_eq!((t.index, t.seq, t.hash, t.torn), (2, 2, line_hash(b), None));
        // A torn record at the end of the last file.
        std::fs::write(dir.path().join(name(2)), br#"{"sequenceNum"#).unwrap();
        let t = tail(dir.path()).unwrap();
        assert_eq!((t.index, t.seq), (2, 2));
        assert!(t.needs_newline);
        assert_eq!(
            t.torn,
            Some(Torn {
                file: name(2),
                offset: 0,
                length: 13,
                sha256: line_hash(br#"{"sequenceNum"#)
            })
        );
    }
}
