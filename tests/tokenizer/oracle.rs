//! Randomized cases checked against llama.cpp itself. `tests/data/tokenizer/NAME.tsv` holds
//! what llama.cpp (the copy vendored in llama-cpp-python 0.3.36, linked into a small
//! `llama_tokenize` / `llama_detokenize` driver, vocab-only load) answered for ~325 random
//! texts mixing words, digits, punctuation, odd whitespace, many scripts, emoji and the
//! vocabulary's special-token texts.
//!
//! Line 1: `meta bos=.. eos=.. eot=.. add_bos=.. add_eos=.. eog=id,id,`; then one case per
//! line: `<add_special> <parse_special> <hex text>\t<ids>\t<hex detokenize(keep special,
//! render special)>\t<hex detokenize(remove special, hide special)>` where `=` means "same
//! bytes as the text".

use kiln::tokenizer::Tokenizer;

fn unhex(h: &str) -> Vec<u8> {
    (0..h.len() / 2)
        .map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}

fn field<'a>(meta: &'a str, key: &str) -> &'a str {
    meta.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        .unwrap_or_else(|| panic!("meta has no {key}"))
}

fn id_or_none(s: &str) -> Option<u32> {
    let v: i64 = s.parse().expect("id");
    (v >= 0).then_some(v as u32)
}

/// Compares tokenize, detokenize and the special ids with llama.cpp's answers for `name`.
pub fn check(name: &str, tok: &Tokenizer) {
    let path = format!(
        "{}/tests/data/tokenizer/{name}.tsv",
        env!("CARGO_MANIFEST_DIR")
    );
    let raw = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut lines = raw.lines();
    let meta = lines.next().expect("meta line");
    assert_eq!(tok.bos(), id_or_none(field(meta, "bos")), "{name}: bos");
    assert_eq!(tok.eos(), id_or_none(field(meta, "eos")), "{name}: eos");
    assert_eq!(tok.eot(), id_or_none(field(meta, "eot")), "{name}: eot");
    assert_eq!(
        tok.add_bos(),
        field(meta, "add_bos") == "1",
        "{name}: add_bos"
    );
    assert_eq!(
        tok.add_eos(),
        field(meta, "add_eos") == "1",
        "{name}: add_eos"
    );
    let eog: Vec<u32> = field(meta, "eog")
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().expect("id"))
        .collect();
    let ours: Vec<u32> = (0..tok.n_vocab() as u32)
        .filter(|&id| tok.is_eog(id))
        .collect();
    assert_eq!(ours, eog, "{name}: end-of-generation set");

    let mut failures = Vec::new();
    let mut n = 0;
    for line in lines {
        let cols: Vec<&str> = line.split('\t').collect();
        assert_eq!(cols.len(), 4, "{path}: bad line {line:?}");
        let head: Vec<&str> = cols[0].splitn(3, ' ').collect();
        let (add, parse) = (head[0] == "1", head[1] == "1");
        let text_bytes = unhex(head[2]);
        let text = String::from_utf8(text_bytes.clone()).expect("case text is UTF-8");
        let want: Vec<u32> = cols[1]
            .split_whitespace()
            .map(|x| x.parse().expect("id"))
            .collect();
        let expect_bytes = |c: &str| {
            if c == "=" {
                text_bytes.clone()
            } else {
                unhex(c)
            }
        };
        let got = tok.encode(&text, add, parse);
        n += 1;
        if got != want {
            failures.push(format!(
                "encode {text:?} add={add} parse={parse}\n   want {want:?}\n    got {got:?}"
            ));
            continue;
        }
        for (remove, special, col) in [(false, true, cols[2]), (true, false, cols[3])] {
            let back = tok.detokenize(&want, remove, special);
            let exp = expect_bytes(col);
            if back != exp {
                failures.push(format!(
                    "detokenize(remove={remove}, special={special}) of {text:?}\n   want {:?}\n    got {:?}",
                    String::from_utf8_lossy(&exp),
                    String::from_utf8_lossy(&back)
                ));
            }
        }
    }
    assert!(n >= 300, "{name}: only {n} cases");
    assert!(
        failures.is_empty(),
        "{name}: {} of {n} cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
