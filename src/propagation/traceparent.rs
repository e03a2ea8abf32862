//! `traceparent`: strict parsing ([`parse_traceparent`]) and writing.

use opentelemetry::trace::{SpanId, TraceId};

/// A `traceparent` that passed the strict checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Traceparent {
    /// The trace id (never all-zero).
    pub trace_id: TraceId,
    /// The parent span id (never all-zero).
    pub span_id: SpanId,
    /// The trace flags as sent.
    pub flags: u8,
}

/// `2 * N` lowercase hex digits as `N` bytes: no uppercase, no signs, no whitespace (which
/// `from_str_radix`, underneath opentelemetry's `from_hex`, would accept).
fn lower_hex<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    let mut chunks = s.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let mut c = [0u8; 8];
        c.copy_from_slice(chunk);
        out[at..at + 4].copy_from_slice(&hex8(c)?);
        at += 4;
    }
    let digit = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    };
    for pair in chunks.remainder().chunks_exact(2) {
        out[at] = (digit(pair[0])? << 4) | digit(pair[1])?;
        at += 1;
    }
    Some(out)
}

/// Eight lowercase hex digits as four bytes, eight digits at a time in one `u64` (a
/// `traceparent` has 48 of them per request: ≈ 300 instructions per request less than a digit at
/// a time, `BENCHMARKS.md`).
fn hex8(chars: [u8; 8]) -> Option<[u8; 4]> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let x = u64::from_le_bytes(chars);
    if x & HIGH != 0 {
        return None; // not ASCII
    }
    // per byte b < 0x80: the high bit of ((b | 0x80) - n) is set iff b >= n (no borrow
    // crosses bytes)
    let ge = |n: u8| (x | HIGH).wrapping_sub(u64::from(n) * ONES) & HIGH;
    let digit = ge(b'0') & !ge(b'9' + 1);
    let letter = ge(b'a') & !ge(b'f' + 1);
    if digit | letter != HIGH {
        return None;
    }
    // each byte its value: the low nibble, plus 9 for a letter ('a' = 0x61 → 1 + 9)
    let nibbles = (x & (0x0f * ONES)) + (letter >> 7) * 9;
    // pairs of nibbles into bytes (the first digit is the high nibble), one per 16-bit lane
    const LOW_OF_16: u64 = 0x00ff_00ff_00ff_00ff;
    let pairs = ((nibbles & LOW_OF_16) << 4) | ((nibbles >> 8) & LOW_OF_16);
    let b = pairs.to_le_bytes();
    Some([b[0], b[2], b[4], b[6]])
}

/// Parse a `traceparent` value strictly per W3C Trace Context:
/// `00-<32 lowercase hex>-<16 lowercase hex>-<2 lowercase hex>`.
///
/// Rejected: all-zero ids, version `ff`, wrong lengths, uppercase, signs, whitespace, extra
/// fields on version `00`. For higher versions the first four fields are parsed and anything
/// after a `-` following them is ignored.
///
/// ```
/// use tower_otel_http::propagation::parse_traceparent;
/// assert!(parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_some());
/// assert!(parse_traceparent("00-1-2-01").is_none());
/// ```
#[must_use]
pub fn parse_traceparent(value: &str) -> Option<Traceparent> {
    let b = value.as_bytes();
    if b.len() < 55 || !value.is_char_boundary(55) {
        return None;
    }
    if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return None;
    }
    let [version] = lower_hex::<1>(&b[0..2])?;
    // version ff is invalid; version 00 has exactly four fields; higher versions may append
    // fields after a '-'
    if version == 0xff || (version == 0 && b.len() != 55) || (b.len() > 55 && b[55] != b'-') {
        return None;
    }
    let trace_id = lower_hex::<16>(&b[3..35])?;
    let span_id = lower_hex::<8>(&b[36..52])?;
    let [flags] = lower_hex::<1>(&b[53..55])?;
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some(Traceparent {
        trace_id: TraceId::from_bytes(trace_id),
        span_id: SpanId::from_bytes(span_id),
        flags,
    })
}

/// `00-<trace-id>-<span-id>-<flags>`, lowercase hex, on the stack (the trace id is bytes
/// 3..35, the span id 36..52, the flags 53..55).
pub(crate) fn traceparent_bytes(trace_id: TraceId, span_id: SpanId, flags: u8) -> [u8; 55] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    fn hex_into(out: &mut [u8], bytes: &[u8]) {
        for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
            pair[0] = DIGITS[usize::from(b >> 4)];
            pair[1] = DIGITS[usize::from(b & 0x0f)];
        }
    }
    let mut b = [b'-'; 55];
    b[0] = b'0';
    b[1] = b'0';
    hex_into(&mut b[3..35], &trace_id.to_bytes());
    hex_into(&mut b[36..52], &span_id.to_bytes());
    hex_into(&mut b[53..55], &[flags]);
    b
}

/// The ASCII text of (part of) [`traceparent_bytes`].
pub(crate) fn ascii(b: &[u8]) -> &str {
    std::str::from_utf8(b).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn every_byte_value_in_every_id_position_is_accepted_iff_lowercase_hex() {
        for pos in (3..35).chain(36..52).chain(53..55) {
            for v in 0..=255u8 {
                let mut b = VALID.as_bytes().to_vec();
                b[pos] = v;
                let Ok(s) = std::str::from_utf8(&b) else {
                    continue;
                };
                let hex = v.is_ascii_digit() || (b'a'..=b'f').contains(&v);
                assert_eq!(
                    parse_traceparent(s).is_some(),
                    hex,
                    "byte {v:#04x} at {pos}"
                );
            }
        }
    }

    #[test]
    fn accepts_valid() {
        let tp = parse_traceparent(VALID).unwrap();
        assert_eq!(
            tp.trace_id,
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()
        );
        assert_eq!(tp.span_id, SpanId::from_hex("00f067aa0ba902b7").unwrap());
        assert_eq!(tp.flags, 1);
        // higher version with extra fields: first four parsed
        assert!(
            parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra")
                .is_some()
        );
        assert!(
            parse_traceparent("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_some()
        );
    }

    #[test]
    fn rejects_invalid() {
        for bad in [
            "00-1-2-01",
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47366-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-+0f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-+1",
            " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "0-04bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad:?} accepted");
        }
    }

    #[test]
    fn eight_digits_at_a_time_agree_with_one_at_a_time() {
        fn slow(s: &[u8]) -> Option<[u8; 4]> {
            let digit = |b: u8| match b {
                b'0'..=b'9' => Some(b - b'0'),
                b'a'..=b'f' => Some(b - b'a' + 10),
                _ => None,
            };
            let mut out = [0u8; 4];
            for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
                *o = (digit(pair[0])? << 4) | digit(pair[1])?;
            }
            Some(out)
        }
        // every byte value in every position, around valid digits
        let base = *b"0123abcd";
        for pos in 0..8 {
            for v in 0..=255u8 {
                let mut c = base;
                c[pos] = v;
                assert_eq!(hex8(c), slow(&c), "{c:?}");
            }
        }
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..100_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let alphabet = b"0123456789abcdefABCDEF/:`g@G\x00\x7f\xff";
            let mut c = [0u8; 8];
            for (i, b) in c.iter_mut().enumerate() {
                *b = alphabet[((seed >> (i * 5)) % alphabet.len() as u64) as usize];
            }
            assert_eq!(hex8(c), slow(&c), "{c:?}");
        }
    }

    #[test]
    fn multibyte_input_at_the_field_boundaries_is_rejected_not_panicking() {
        for s in [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0\u{e9}",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b\u{e9}-01",
            "\u{e9}0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(parse_traceparent(s).is_none(), "{s:?}");
        }
    }
}
