//! Trace and span ids on the wire: hex (Jaeger, OTLP JSON), base64 (some OTLP JSON exporters)
//! and raw bytes (OTLP protobuf).
//!
//! Canonical forms: a trace id is lowercase hex, 16 digits when its high 64 bits are zero (as
//! Jaeger prints ids) and 32 otherwise, so the same trace read from Jaeger JSON or OTLP gets the
//! same id; shorter hex ids are zero-padded (Jaeger drops leading zeros). A span id is the low
//! 64 bits of its bytes.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};

/// Most bytes an id may have (OTLP trace ids are 16 bytes).
const MAX_ID_BYTES: usize = 16;

/// Id bytes decoded without allocating.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct IdBytes {
    bytes: [u8; MAX_ID_BYTES],
    len: usize,
}

impl IdBytes {
    pub(crate) fn from_slice(b: &[u8]) -> Option<Self> {
        if b.len() > MAX_ID_BYTES {
            return None;
        }
        let mut id = IdBytes { len: b.len(), ..IdBytes::default() };
        id.bytes[..b.len()].copy_from_slice(b);
        Some(id)
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    pub(crate) fn is_zero(&self) -> bool {
        self.as_slice().iter().all(|&b| b == 0)
    }

    /// The low 64 bits, big-endian (the whole id when it has 8 bytes or fewer).
    pub(crate) fn low_u64(&self) -> u64 {
        let s = self.as_slice();
        let tail = &s[s.len().saturating_sub(8)..];
        tail.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
    }

    /// Canonical trace id: lowercase hex, 16 digits when the id fits 64 bits, else 32.
    pub(crate) fn trace_hex(&self) -> String {
        let s = self.as_slice();
        let high = &s[..s.len().saturating_sub(8)];
        let (width, digits) = if high.iter().all(|&b| b == 0) { (8, &s[high.len()..]) } else { (MAX_ID_BYTES, s) };
        let mut out = String::with_capacity(2 * width);
        for _ in digits.len()..width {
            out.push_str("00");
        }
        for b in digits {
            push_hex_byte(&mut out, *b);
        }
        out
    }

    /// The id as 16 bytes, zero-padded on the left (OTLP trace ids).
    pub(crate) fn padded16(&self) -> [u8; MAX_ID_BYTES] {
        let mut out = [0u8; MAX_ID_BYTES];
        out[MAX_ID_BYTES - self.len..].copy_from_slice(self.as_slice());
        out
    }
}

fn push_hex_byte(out: &mut String, b: u8) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.push(char::from(DIGITS[usize::from(b >> 4)]));
    out.push(char::from(DIGITS[usize::from(b & 0xf)]));
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Hex id of 1..=32 digits (an odd count gets a leading zero) as bytes.
pub(crate) fn hex_bytes(s: &str) -> Option<IdBytes> {
    let s = s.as_bytes();
    if s.is_empty() || s.len() > 2 * MAX_ID_BYTES {
        return None;
    }
    let mut id = IdBytes { len: s.len().div_ceil(2), ..IdBytes::default() };
    let odd = s.len() % 2;
    for (i, &c) in s.iter().enumerate() {
        let v = hex_value(c)?;
        let pos = (i + odd) / 2;
        if (i + odd).is_multiple_of(2) {
            id.bytes[pos] = v << 4;
        } else {
            id.bytes[pos] |= v;
        }
    }
    Some(id)
}

/// Jaeger span id (hex, 1..=32 digits) as its low 64 bits.
pub(crate) fn hex_u64(s: &str) -> Option<u64> {
    hex_bytes(s).map(|id| id.low_u64())
}

/// Jaeger trace id in canonical form.
pub(crate) fn hex_trace_id(s: &str) -> Option<String> {
    hex_bytes(s).map(|id| id.trace_hex())
}

/// An OTLP JSON id of `expected` bytes: hex (`2 * expected` digits), else base64 (as some
/// exporters write the protobuf bytes), else hex of any length up to 32 digits.
pub(crate) fn otlp_json_id(s: &str, expected: usize) -> Option<IdBytes> {
    let all_hex = s.bytes().all(|b| b.is_ascii_hexdigit());
    if all_hex && s.len() == 2 * expected {
        return hex_bytes(s);
    }
    if s.len() <= 4 * MAX_ID_BYTES.div_ceil(3) {
        let mut buf = [0u8; 3 * (MAX_ID_BYTES.div_ceil(3) + 1)];
        for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
            if let Ok(n) = engine.decode_slice(s, &mut buf)
                && (n == expected || (!all_hex && n <= MAX_ID_BYTES))
            {
                return IdBytes::from_slice(&buf[..n]);
            }
        }
    }
    if all_hex { hex_bytes(s) } else { None }
}

/// The trace id writers put on the wire: `id` itself when it is hex, else the first 16 bytes
/// of its SHA-256 (so that any id written can be read back).
pub(crate) fn wire_trace_id(id: &str) -> IdBytes {
    hex_bytes(id).unwrap_or_else(|| {
        let digest = Sha256::digest(id.as_bytes());
        IdBytes::from_slice(&digest[..MAX_ID_BYTES]).unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_ids_pad_and_truncate() {
        assert_eq!(hex_u64("1"), Some(1));
        assert_eq!(hex_u64("00000000000000ff"), Some(255));
        assert_eq!(hex_u64("0123456789abcdef0000000000000002"), Some(2));
        assert_eq!(hex_u64(""), None);
        assert_eq!(hex_u64("xyz"), None);
        assert_eq!(hex_u64(&"f".repeat(33)), None);
        assert_eq!(hex_trace_id("ABC").as_deref(), Some("0000000000000abc"));
        assert_eq!(hex_trace_id(&"a".repeat(17)).map(|s| s.len()), Some(32));
        assert_eq!(hex_trace_id("00000000000000000000000000abcdef").as_deref(), Some("0000000000abcdef"));
        let padded = hex_bytes("abcdef").map(|id| id.padded16()).unwrap_or_default();
        assert_eq!(padded[13..], [0xab, 0xcd, 0xef]);
        assert!(padded[..13].iter().all(|&b| b == 0));
    }

    #[test]
    fn otlp_ids_hex_or_base64() {
        let hex = "5b8efff798038103d269b633813fc60c";
        let b64 = "W47/95gDgQPSabYzgT/GDA==";
        let a = otlp_json_id(hex, 16).map(|i| i.trace_hex());
        let b = otlp_json_id(b64, 16).map(|i| i.trace_hex());
        assert_eq!(a.as_deref(), Some(hex));
        assert_eq!(a, b);
        let span_hex = "eee19b7ec3c1b174";
        let span_b64 = "7uGbfsPBsXQ=";
        assert_eq!(otlp_json_id(span_hex, 8).map(|i| i.low_u64()), Some(0xeee1_9b7e_c3c1_b174));
        assert_eq!(otlp_json_id(span_b64, 8).map(|i| i.low_u64()), Some(0xeee1_9b7e_c3c1_b174));
        assert!(otlp_json_id("not an id!", 8).is_none());
    }

    #[test]
    fn wire_ids_are_readable() {
        assert_eq!(wire_trace_id("00ff").trace_hex(), "00000000000000ff");
        let hashed = wire_trace_id("not-hex trace").trace_hex();
        assert_eq!(hashed.len(), 32);
        assert!(hex_trace_id(&hashed).is_some());
    }
}
