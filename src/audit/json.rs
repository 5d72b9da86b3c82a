//! The few JSON pieces audit records are made of, written by hand into a
//! reused buffer: a record is built on the data path for every request
//! frame, where serde's machinery (and its allocations) would cost more
//! than the record is worth (docs/perf/audit.md).

use std::time::SystemTime;

/// Appends `s` as a JSON string (quotes included), escaping what RFC 8259
/// requires: `"`, `\` and the control characters below U+0020.
pub fn string(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    // Nearly every string needs no escape (key ids, names, contexts): one
    // scan the compiler vectorizes, one copy (the byte loop below cost
    // about 1% of batched GenerateDataKey's CPU; docs/perf/audit.md).
    if !bytes.iter().fold(false, |e, &b| e | (b < 0x20) | (b == b'"') | (b == b'\\')) {
        out.reserve(bytes.len() + 2);
        out.push(b'"');
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    out.push(b'"');
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if esc.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 15) as usize]);
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Appends `"key":` (the key is a literal that needs no escaping).
pub fn key(out: &mut Vec<u8>, k: &str) {
    out.push(b'"');
    out.extend_from_slice(k.as_bytes());
    out.extend_from_slice(b"\":");
}

/// Appends `,"key":"value"` with the value escaped.
pub fn field_str(out: &mut Vec<u8>, k: &str, v: &str) {
    out.push(b',');
    key(out, k);
    string(out, v);
}

/// Appends `,"key":n`.
pub fn field_u64(out: &mut Vec<u8>, k: &str, n: u64) {
    out.push(b',');
    key(out, k);
    uint(out, n);
}

/// Appends a decimal integer.
pub fn uint(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Appends a signed decimal integer.
pub fn int(out: &mut Vec<u8>, n: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Appends `bytes` as lower-case hex, unquoted.
pub fn hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(HEX[(b >> 4) as usize]);
        out.push(HEX[(b & 15) as usize]);
    }
}

/// Appends `t` as a quoted RFC 3339 UTC time with milliseconds
/// (`"2026-03-01T12:00:00.123Z"`; CloudTrail's eventTime has seconds, a
/// fraction is allowed by ISO 8601 and orders a busy second's records).
pub fn time(out: &mut Vec<u8>, t: SystemTime) {
    let d = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs();
    let (y, m, day) = civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    let mut b = *b"\"0000-00-00T00:00:00.000Z\"";
    let put = |b: &mut [u8; 26], at: usize, v: u64, n: usize| {
        let mut v = v;
        for i in (0..n).rev() {
            b[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(&mut b, 1, y.clamp(0, 9999) as u64, 4);
    put(&mut b, 6, m as u64, 2);
    put(&mut b, 9, day as u64, 2);
    put(&mut b, 12, s / 3600, 2);
    put(&mut b, 15, s / 60 % 60, 2);
    put(&mut b, 18, s % 60, 2);
    put(&mut b, 21, u64::from(d.subsec_millis()), 3);
    out.extend_from_slice(&b);
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn strings_are_escaped_as_rfc_8259_requires_and_parse_back() {
        for s in ["plain", "q\"uote", "back\\slash", "nl\n\r\t", "\u{1}\u{1f}\u{7f}", "é€😀", ""] {
            let mut out = Vec::new();
            string(&mut out, s);
            let back: String = serde_json::from_slice(&out).unwrap();
            assert_eq!(back, s, "{}", String::from_utf8_lossy(&out));
        }
    }

    #[test]
    fn times_are_rfc_3339_utc() {
        let cases = [
            (0, "\"1970-01-01T00:00:00.000Z\""),
            (951_782_400_123, "\"2000-02-29T00:00:00.123Z\""),
            (1_709_294_399_999, "\"2024-03-01T11:59:59.999Z\""),
            (4_102_444_800_000, "\"2100-01-01T00:00:00.000Z\""),
        ];
        for (ms, want) in cases {
            let mut out = Vec::new();
            time(&mut out, SystemTime::UNIX_EPOCH + Duration::from_millis(ms));
            assert_eq!(String::from_utf8(out).unwrap(), want);
        }
    }
}
