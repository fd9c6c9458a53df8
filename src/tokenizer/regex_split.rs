//! The general path of llama.cpp's `unicode_regex_split`: regexes without a hand-written
//! splitter run through `std::regex` (ECMAScript, backtracking, leftmost-first).
//!
//! A regex that names a Unicode category (`\p{L}` ...) is matched against a "collapsed" copy
//! of the text where every non-ASCII codepoint becomes one stand-in character for its
//! category (non-ASCII whitespace becomes `\v`), and each `\p{X}` in the regex becomes that
//! stand-in plus the ASCII members llama.cpp lists for the category. Other regexes see the
//! text with non-ASCII whitespace as `\v`.
//! fancy-regex has the same leftmost-first backtracking semantics and supports the
//! look-arounds these regexes use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use fancy_regex::Regex;

use super::unicode::{Flags, LETTER, NUMBER, PUNCTUATION};

const ACCENT_MARK: u8 = 0x10;
const SYMBOL: u8 = 0x40;

/// `k_ucat_enum`: the category names llama.cpp recognises.
const CATEGORIES: [(&str, u8); 10] = [
    ("\\p{N}", NUMBER),
    ("\\p{L}", LETTER),
    ("\\p{P}", PUNCTUATION),
    ("\\p{M}", ACCENT_MARK),
    ("\\p{S}", SYMBOL),
    ("\\p{Lu}", LETTER),
    ("\\p{Ll}", LETTER),
    ("\\p{Lt}", LETTER),
    ("\\p{Lm}", LETTER),
    ("\\p{Lo}", LETTER),
];

/// The stand-in for a category (`k_ucat_cpt`; 0xD0 for the rest), as a private-use char.
fn stand_in(category: u8) -> char {
    match category {
        NUMBER => '\u{E0D1}',
        LETTER => '\u{E0D2}',
        PUNCTUATION => '\u{E0D3}',
        ACCENT_MARK => '\u{E0D4}',
        SYMBOL => '\u{E0D5}',
        _ => '\u{E0D0}',
    }
}

/// `k_ucat_map`: the ASCII members of each category, as regex class text.
fn ascii_members(category: u8) -> &'static str {
    match category {
        NUMBER => "0-9",
        LETTER => "A-Za-z",
        PUNCTUATION => "!-#%-*,-/:-;?-@\\[-\\]_\\{\\}",
        SYMBOL => "\\$\\+<->\\^`\\|~",
        _ => "",
    }
}

fn uses_categories(pattern: &str) -> bool {
    CATEGORIES.iter().any(|(name, _)| pattern.contains(name))
}

/// The collapsed form of a regex (the `regex_expr_collapsed` loop of `unicode_regex_split`).
fn collapse(pattern: &str) -> Result<String, String> {
    if !pattern.is_ascii() {
        return Err("regex includes both unicode categories and non-ASCII characters".into());
    }
    let b = pattern.as_bytes();
    let mut out = String::with_capacity(pattern.len() * 2);
    let mut inside = false;
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'[' && (i == 0 || b[i - 1] != b'\\') {
            out.push('[');
            inside = true;
            i += 1;
            continue;
        }
        if inside && b[i] == b']' && b[i - 1] != b'\\' {
            out.push(']');
            inside = false;
            i += 1;
            continue;
        }
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1] == b'p' && b[i + 2] == b'{' {
            if let Some(close) = pattern[i + 3..].find('}').map(|c| c + i + 3) {
                let name = &pattern[i..=close];
                let cat = CATEGORIES.iter().find(|(n, _)| *n == name).map(|&(_, c)| c);
                if let (true, Some(cat)) = (close <= i + 10, cat) {
                    if !inside {
                        out.push('[');
                    }
                    out.push(stand_in(cat));
                    out.push_str(ascii_members(cat));
                    if !inside {
                        out.push(']');
                    }
                    i = close + 1;
                    continue;
                }
            }
        }
        out.push(b[i] as char);
        i += 1;
    }
    Ok(out)
}

type Cache = Mutex<HashMap<&'static str, Arc<Regex>>>;

/// The compiled (collapsed if needed) form of one of llama.cpp's regexes.
pub(crate) fn compiled(pattern: &'static str) -> Result<Arc<Regex>, String> {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(re) = cache.lock().map_err(|e| e.to_string())?.get(pattern) {
        return Ok(re.clone());
    }
    let source = if uses_categories(pattern) {
        collapse(pattern)?
    } else {
        pattern.to_string()
    };
    let re = Arc::new(Regex::new(&source).map_err(|e| format!("regex {pattern:?}: {e}"))?);
    cache
        .lock()
        .map_err(|e| e.to_string())?
        .insert(pattern, re.clone());
    Ok(re)
}

/// Splits each segment `(start, len)` (in codepoints) on the matches of `pattern`, keeping
/// the text between matches as segments (`unicode_regex_split_stl`).
pub(crate) fn split(
    pattern: &'static str,
    cpts: &[u32],
    flags: &[Flags],
    segs: &[(usize, usize)],
) -> Vec<(usize, usize)> {
    let Ok(re) = compiled(pattern) else {
        return segs.to_vec();
    };
    let collapsed = uses_categories(pattern);
    let mut text = String::with_capacity(cpts.len() * 2);
    let mut byte_of = Vec::with_capacity(cpts.len() + 1);
    for (&c, f) in cpts.iter().zip(flags) {
        byte_of.push(text.len());
        let ch = if c < 128 {
            char::from(c as u8)
        } else if f.whitespace {
            '\u{0B}'
        } else if collapsed {
            stand_in(f.category)
        } else {
            char::from_u32(c).unwrap_or('\u{FFFD}')
        };
        text.push(ch);
    }
    byte_of.push(text.len());
    let cpt_at = |byte: usize| byte_of.partition_point(|&b| b < byte);

    let mut out = Vec::with_capacity(segs.len());
    for &(ini, len) in segs {
        let (lo, hi) = (byte_of[ini], byte_of[ini + len]);
        let mut prev = ini;
        for m in re.find_iter(&text[lo..hi]) {
            let Ok(m) = m else { break };
            if m.start() == m.end() {
                continue;
            }
            let (s, e) = (cpt_at(lo + m.start()), cpt_at(lo + m.end()));
            if s > prev {
                out.push((prev, s - prev));
            }
            out.push((s, e - s));
            prev = e;
        }
        if prev < ini + len {
            out.push((prev, ini + len - prev));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collapses_categories_like_llama_cpp() {
        assert_eq!(collapse("\\p{N}+").as_deref(), Ok("[\u{E0D1}0-9]+"));
        assert_eq!(
            collapse("[^\\s\\p{L}]").as_deref(),
            Ok("[^\\s\u{E0D2}A-Za-z]")
        );
        assert!(collapse("\\p{L}中").is_err());
    }
}
