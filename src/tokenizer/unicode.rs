//! Codepoint classes and the GPT-2 byte↔unicode mapping, as llama.cpp's `src/unicode.cpp`.

use super::unicode_data::CATEGORY_RANGES;

pub(crate) const UNDEFINED: u8 = 0x01;
pub(crate) const NUMBER: u8 = 0x02;
pub(crate) const LETTER: u8 = 0x04;
pub(crate) const ACCENT_MARK: u8 = 0x10;
pub(crate) const PUNCTUATION: u8 = 0x20;

/// The flags of one codepoint (`unicode_cpt_flags`). `Flags::OUT` (all zero) stands for a
/// position outside the current segment, like llama.cpp's default-constructed flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Flags {
    /// Exactly one of the category bits for a real codepoint (`UNDEFINED` when unassigned).
    pub category: u8,
    pub whitespace: bool,
}

impl Flags {
    pub const OUT: Flags = Flags {
        category: 0,
        whitespace: false,
    };

    pub fn is_letter(self) -> bool {
        self.category & LETTER != 0
    }
    pub fn is_number(self) -> bool {
        self.category & NUMBER != 0
    }
    pub fn is_mark(self) -> bool {
        self.category & ACCENT_MARK != 0
    }
    pub fn is_punctuation(self) -> bool {
        self.category & PUNCTUATION != 0
    }
    /// `as_uint() != 0`: true for every codepoint inside the segment.
    pub fn is_some(self) -> bool {
        self.category != 0 || self.whitespace
    }
}

/// The `<White_Space>` set of `gen-unicode-data.py`.
fn is_whitespace(cpt: u32) -> bool {
    matches!(
        cpt,
        0x09..=0x0D
            | 0x20
            | 0x85
            | 0xA0
            | 0x1680
            | 0x2000..=0x200A
            | 0x2028
            | 0x2029
            | 0x202F
            | 0x205F
            | 0x3000
    )
}

/// `unicode_cpt_flags_from_cpt`.
pub(crate) fn flags(cpt: u32) -> Flags {
    if cpt >= 0x110000 {
        return Flags {
            category: UNDEFINED,
            whitespace: false,
        };
    }
    let i = CATEGORY_RANGES.partition_point(|&(start, _)| start <= cpt);
    Flags {
        category: CATEGORY_RANGES[i - 1].1,
        whitespace: is_whitespace(cpt),
    }
}

/// `unicode_len_utf8`: sequence length from the lead byte (continuation bytes count as 1).
pub(crate) fn utf8_len(lead: u8) -> usize {
    const LOOKUP: [usize; 16] = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4];
    LOOKUP[(lead >> 4) as usize]
}

/// The printable stand-in GPT-2 uses for each byte (`unicode_byte_to_utf8_map`).
pub(crate) fn byte_to_char(byte: u8) -> char {
    BYTE_MAP.with(|m| m.0[byte as usize])
}

/// The byte behind a GPT-2 stand-in character (`unicode_utf8_to_byte`), if it is one.
pub(crate) fn char_to_byte(c: char) -> Option<u8> {
    let cpt = c as u32;
    if cpt < 256 {
        let b = cpt as u8;
        return is_printable_byte(b).then_some(b);
    }
    BYTE_MAP.with(|m| m.1.get((cpt - 256) as usize).copied())
}

fn is_printable_byte(b: u8) -> bool {
    matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF)
}

/// (byte → char, (char − 256) → byte for the shifted ones).
struct ByteMap([char; 256], Vec<u8>);

thread_local! {
    static BYTE_MAP: ByteMap = {
        let mut fwd = ['\0'; 256];
        let mut back = Vec::new();
        for b in 0..=255u8 {
            if is_printable_byte(b) {
                fwd[b as usize] = char::from(b);
            } else {
                // 256 + n is below 0x200, always a valid scalar value.
                fwd[b as usize] = char::from_u32(256 + back.len() as u32).unwrap_or('\u{FFFD}');
                back.push(b);
            }
        }
        ByteMap(fwd, back)
    };
}

/// ASCII-only lowercase; the only case `unicode_tolower` matters for here is the contraction
/// letters s, t, m, d, r, e, v, l, which no non-ASCII codepoint lowercases to.
pub(crate) fn ascii_lower(cpt: u32) -> u32 {
    if (b'A' as u32..=b'Z' as u32).contains(&cpt) {
        cpt + 32
    } else {
        cpt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_match_llama_cpp_table_samples() {
        assert_eq!(flags(0).category, 0x80);
        assert_eq!(
            flags(' ' as u32),
            Flags {
                category: 0x08,
                whitespace: true
            }
        );
        assert_eq!(flags('$' as u32).category, 0x40);
        assert_eq!(flags('~' as u32).category, 0x40);
        assert_eq!(flags('a' as u32).category, LETTER);
        assert_eq!(flags(0x378).category, UNDEFINED);
        assert_eq!(flags(0x2FFC).category, 0x40); // Unicode 15.1
        assert_eq!(flags(0x1C89).category, UNDEFINED); // not yet assigned in 15.1
        assert!(flags(0x3000).whitespace);
    }

    #[test]
    fn byte_map_round_trips() {
        for b in 0..=255u8 {
            assert_eq!(char_to_byte(byte_to_char(b)), Some(b));
        }
        assert_eq!(byte_to_char(b' '), 'Ġ');
        assert_eq!(byte_to_char(b'\n'), 'Ċ');
        assert_eq!(char_to_byte('中'), None);
    }
}
