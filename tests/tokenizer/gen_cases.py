import random, sys, gguf
PIECES = ["Hello", "world", "the", "don't", "I'M", "we'Ve", "'ll", "'s", "'RE", "AbC", "x", "a'b",
  "3.14", "1,000", "0", "42", "1234567", "!?.,;:", "-_~", "$+<=>^`|", "@#%&*", "()[]{}", "\"'", "\\/", "...", "--", "==",
  " ", "  ", "   ", "\t", "\n", "\r\n", "\n\n", " \n ", "\r", "\u00a0", "\u3000", "\u2009", "\u0085", "\u000b", "\u000c",
  "é", "naïve", "Ünïcödé", "café", "中文字符", "日本語", "한국어", "нещо", "العربية", "हिन्दी", "ก่อน", "ᄀ", "𝔘𝔫𝔦",
  "½", "²", "Ⅻ", "٣", "€", "™", "©", "👍", "🙂🚀", "👨\u200d👩\u200d👧", "🇺🇸", "e\u0301", "\ufeff", "\u200b", "\u0378",
  "\ue000", "～", "！", "、", "「」", "Cửa Việt", "ǅ", "ﬁ", "Ⓐ", "\u1680", "\u2028", "\x00", "\x1f", "\x7f"]

def specials(path, k=12):
    r = gguf.GGUFReader(path)
    f = r.fields
    toks = [bytes(f['tokenizer.ggml.tokens'].parts[i]).decode('utf-8', 'replace') for i in f['tokenizer.ggml.tokens'].data]
    if 'tokenizer.ggml.token_type' not in f:
        return []
    types = [int(f['tokenizer.ggml.token_type'].parts[i][0]) for i in f['tokenizer.ggml.token_type'].data]
    sp = [t for t, ty in zip(toks, types) if ty in (2, 3, 4)]
    random.shuffle(sp)
    named = [t for t in toks if t in ("<s>", "</s>", "<|im_start|>", "<|im_end|>", "<start_of_turn>", "<end_of_turn>",
             "<bos>", "<|endoftext|>", "<|user|>", "<|end|>", "<|assistant|>", "<|begin_of_text|>", "<unk>")]
    return named + sp[:k]

def main(path, out, n=300, seed=1):
    random.seed(seed)
    sp = specials(path)
    pool = PIECES + sp * 3
    with open(out, 'w') as o:
        cases = ["", " ", "\n", "  ", "a"] + [random.choice(PIECES) for _ in range(20)]
        for _ in range(n):
            parts = [random.choice(pool) for _ in range(random.randint(1, 12))]
            text = "".join(p + random.choice(["", "", " ", "  ", "\n"]) for p in parts)
            cases.append(text)
        for i, t in enumerate(cases):
            add, ps = random.randint(0, 1), (i % 2)
            o.write(f"{add} {ps} {t.encode('utf-8').hex()}\n")

main(sys.argv[1], sys.argv[2])
