//! The iteration order of llama.cpp's `std::unordered_map<std::string, llama_token>
//! token_to_id` under libstdc++ (GCC's C++ library, which the reference build uses).
//!
//! `llama_vocab::impl::load` finds the EOT, EOM and FIM tokens by walking that map and taking
//! the first token whose text is in a candidate list, so when a vocabulary has several
//! candidates (SmolLM2 has both `<|endoftext|>` and `<|im_end|>`) the answer is whichever
//! the hash table yields first. This replays libstdc++'s hashtable: `std::hash<std::string>`
//! (`_Hash_bytes`, a 64-bit MurmurHash2 variant), the prime bucket counts it grows through,
//! and how insertion and rehashing link the nodes.

/// `(element number whose insertion triggers a rehash, new bucket count)`, as measured on
/// libstdc++ for a default-constructed map filled one `emplace` at a time.
const REHASHES: [(usize, usize); 18] = [
    (1, 13),
    (14, 29),
    (30, 59),
    (60, 127),
    (128, 257),
    (258, 541),
    (542, 1109),
    (1110, 2357),
    (2358, 5087),
    (5088, 10273),
    (10274, 20753),
    (20754, 42043),
    (42044, 85229),
    (85230, 172933),
    (172934, 351061),
    (351062, 712697),
    (712698, 1447153),
    (1447154, 2938679),
];

/// libstdc++ `std::_Hash_bytes(ptr, len, 0xc70f6907)` for 64-bit `size_t`.
pub(crate) fn std_hash(bytes: &[u8]) -> u64 {
    const MUL: u64 = (0xc6a4_a793u64 << 32) + 0x5bd1_e995;
    let shift_mix = |v: u64| v ^ (v >> 47);
    let mut hash = 0xc70f_6907u64 ^ (bytes.len() as u64).wrapping_mul(MUL);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let word = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        hash ^= shift_mix(word.wrapping_mul(MUL)).wrapping_mul(MUL);
        hash = hash.wrapping_mul(MUL);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let data = rest
            .iter()
            .rev()
            .fold(0u64, |acc, &b| (acc << 8) + b as u64);
        hash ^= data;
        hash = hash.wrapping_mul(MUL);
    }
    hash = shift_mix(hash).wrapping_mul(MUL);
    shift_mix(hash)
}

const NIL: u32 = u32::MAX;
/// A bucket slot pointing at the list head (`_M_before_begin`).
const BEFORE_BEGIN: u32 = u32::MAX - 1;

struct Table {
    hashes: Vec<u64>,
    next: Vec<u32>,
    head: u32,
    /// For each bucket, the node before its first node (or `BEFORE_BEGIN`), `NIL` if empty.
    buckets: Vec<u32>,
}

impl Table {
    fn bucket(&self, node: u32, n: usize) -> usize {
        (self.hashes[node as usize] % n as u64) as usize
    }
    fn next_of(&self, prev: u32) -> u32 {
        if prev == BEFORE_BEGIN {
            self.head
        } else {
            self.next[prev as usize]
        }
    }
    fn set_next_of(&mut self, prev: u32, node: u32) {
        if prev == BEFORE_BEGIN {
            self.head = node;
        } else {
            self.next[prev as usize] = node;
        }
    }

    /// `_M_insert_bucket_begin`
    fn insert(&mut self, node: u32) {
        let b = self.bucket(node, self.buckets.len());
        let prev = self.buckets[b];
        if prev != NIL {
            self.next[node as usize] = self.next_of(prev);
            self.set_next_of(prev, node);
        } else {
            self.next[node as usize] = self.head;
            self.head = node;
            let after = self.next[node as usize];
            if after != NIL {
                let ab = self.bucket(after, self.buckets.len());
                self.buckets[ab] = node;
            }
            self.buckets[b] = BEFORE_BEGIN;
        }
    }

    /// `_M_rehash_aux` for unique keys.
    fn rehash(&mut self, n: usize) {
        let mut buckets = vec![NIL; n];
        let mut p = self.head;
        self.head = NIL;
        let mut bbegin = 0usize;
        while p != NIL {
            let next = self.next[p as usize];
            let b = self.bucket(p, n);
            if buckets[b] == NIL {
                self.next[p as usize] = self.head;
                self.head = p;
                buckets[b] = BEFORE_BEGIN;
                if self.next[p as usize] != NIL {
                    buckets[bbegin] = p;
                }
                bbegin = b;
            } else {
                let prev = buckets[b];
                self.next[p as usize] = if prev == BEFORE_BEGIN {
                    self.head
                } else {
                    self.next[prev as usize]
                };
                if prev == BEFORE_BEGIN {
                    self.head = p;
                } else {
                    self.next[prev as usize] = p;
                }
            }
            p = next;
        }
        self.buckets = buckets;
    }
}

/// Token ids in the order llama.cpp iterates `token_to_id` after inserting `texts` in id
/// order; `None` past the bucket counts measured above.
pub(crate) fn token_to_id_order<'a>(
    texts: impl ExactSizeIterator<Item = &'a str>,
) -> Option<Vec<u32>> {
    let n = texts.len();
    if n > REHASHES[REHASHES.len() - 1].1 {
        return None;
    }
    let mut t = Table {
        hashes: texts.map(|s| std_hash(s.as_bytes())).collect(),
        next: vec![NIL; n],
        head: NIL,
        buckets: vec![NIL; 1],
    };
    let mut r = 0;
    for i in 0..n {
        if r < REHASHES.len() && REHASHES[r].0 == i + 1 {
            t.rehash(REHASHES[r].1);
            r += 1;
        }
        t.insert(i as u32);
    }
    let mut order = Vec::with_capacity(n);
    let mut p = t.head;
    while p != NIL {
        order.push(p);
        p = t.next[p as usize];
    }
    Some(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_matches_libstdcxx() {
        // values printed by `std::hash<std::string>{}` with g++ 12 / libstdc++
        assert_eq!(std_hash(b""), 6142509188972423790);
        assert_eq!(std_hash(b"a"), 4993892634952068459);
        assert_eq!(std_hash(b"<|im_end|>"), 2038672007907099973);
        assert_eq!(std_hash(b"Hello world!"), 17202043382860636313);
        assert_eq!(std_hash("Ġthe".as_bytes()), 5009670037669802831);
        assert_eq!(std_hash(b"12345678"), 10113836418918046885);
        assert_eq!(std_hash(b"123456789"), 12315982496267331008);
    }

    /// The full iteration order was compared with g++ 12's for the SmolLM2 (49,152 tokens)
    /// and Gemma 3 (262,144 tokens) vocabularies; here a synthetic check of its shape.
    #[test]
    fn order_is_a_permutation() {
        let texts: Vec<String> = (0..5000).map(|i| format!("t{i}")).collect();
        let mut order = token_to_id_order(texts.iter().map(String::as_str)).expect("small");
        order.sort_unstable();
        assert!(order.iter().enumerate().all(|(i, &x)| i as u32 == x));
    }
}
