//! The primitives of Avro's binary encoding, appended to a byte buffer.
//!
//! Writing into a `Vec<u8>` cannot fail, so none of these return a `Result`: the only
//! failure an event can have is a value that does not fit its schema, which the caller
//! (`encode::write_event`) finds while it walks the schema.

/// A `long`: zigzag, then a little-endian base-128 varint (1 to 10 bytes).
pub fn long(out: &mut Vec<u8>, n: i64) {
    // Zigzag maps small magnitudes of either sign to small unsigned numbers.
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8 & 0x7F) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// An `int`: the same varint as a `long` of the same value.
pub fn int(out: &mut Vec<u8>, n: i32) {
    long(out, i64::from(n));
}

/// A length or a count, as a `long`. A Rust slice never holds more than `isize::MAX`
/// elements, so the conversion never saturates in practice.
fn length(out: &mut Vec<u8>, len: usize) {
    long(out, i64::try_from(len).unwrap_or(i64::MAX));
}

/// `bytes`: the length as a `long`, then the bytes.
pub fn bytes(out: &mut Vec<u8>, b: &[u8]) {
    length(out, b.len());
    out.extend_from_slice(b);
}

/// A `string`: its UTF-8 bytes as `bytes`.
pub fn string(out: &mut Vec<u8>, s: &str) {
    bytes(out, s.as_bytes());
}

/// A `boolean`: one byte, 0 or 1.
pub fn boolean(out: &mut Vec<u8>, b: bool) {
    out.push(u8::from(b));
}

/// A `float`: 4 bytes, little-endian IEEE 754 (NaN and infinities included).
pub fn float(out: &mut Vec<u8>, f: f32) {
    out.extend_from_slice(&f.to_le_bytes());
}

/// A `double`: 8 bytes, little-endian IEEE 754.
pub fn double(out: &mut Vec<u8>, f: f64) {
    out.extend_from_slice(&f.to_le_bytes());
}

/// The branch of a union, as a `long` (branch 0 is `null` in every union we generate).
pub fn branch(out: &mut Vec<u8>, index: u8) {
    // A branch index below 64 is one byte: its zigzag, 2 × index.
    long(out, i64::from(index));
}

/// The start of an array of `count` items: one block holding them all (none for an empty
/// array, whose only byte is the end marker [`array_end`]).
pub fn array_start(out: &mut Vec<u8>, count: usize) {
    if count > 0 {
        length(out, count);
    }
}

/// The end of an array: a block of zero items.
pub fn array_end(out: &mut Vec<u8>) {
    out.push(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut out = Vec::new();
        f(&mut out);
        out
    }

    #[test]
    fn longs_are_zigzag_varints_as_the_spec_lists_them() {
        // The Avro specification's table, then the extremes.
        let cases: [(i64, &[u8]); 8] = [
            (0, &[0x00]),
            (-1, &[0x01]),
            (1, &[0x02]),
            (-2, &[0x03]),
            (2, &[0x04]),
            (-64, &[0x7F]),
            (64, &[0x80, 0x01]),
            (
                i64::MIN,
                &[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
            ),
        ];
        for (n, expected) in cases {
            assert_eq!(written(|o| long(o, n)), expected, "{n}");
        }
        assert_eq!(
            written(|o| long(o, i64::MAX)),
            [0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]
        );
        assert_eq!(
            written(|o| int(o, i32::MIN)),
            [0xFF, 0xFF, 0xFF, 0xFF, 0x0F]
        );
    }

    #[test]
    fn strings_bytes_and_arrays_are_length_prefixed() {
        assert_eq!(written(|o| string(o, "ab")), [0x04, b'a', b'b']);
        assert_eq!(written(|o| bytes(o, &[])), [0x00]);
        assert_eq!(
            written(|o| {
                array_start(o, 0);
                array_end(o);
            }),
            [0x00]
        );
        assert_eq!(
            written(|o| {
                array_start(o, 1);
                int(o, 3);
                array_end(o);
            }),
            [0x02, 0x06, 0x00]
        );
    }
}
