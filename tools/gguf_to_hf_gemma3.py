#!/usr/bin/env python3
"""Write a Hugging Face style Gemma 3 (text-only) checkpoint folder from a gemma3 GGUF file.

Test data for `kiln convert` (Gemma3ForCausalLM), modelled on ../shared/tools/gguf_to_hf.py:
the weights are the GGUF's dequantized values with llama.cpp's +1 on every norm weight undone
(Gemma3RMSNorm multiplies by 1 + weight), written as bf16 (default), f16 or f32.

The folder holds what convert_hf_to_gguf.py reads for Gemma 3:
  config.json            Gemma3ForCausalLM hyperparameters (as google/gemma-3-270m has them)
  model.safetensors      the weights (tied embeddings: no lm_head)
  tokenizer.model        a SentencePiece ModelProto (BPE, byte fallback) built from the GGUF's
                         tokens, scores and token types
  tokenizer.json         only the parts the converter reads for a SentencePiece vocabulary:
                         added_tokens and the post-processor (BOS added, as Gemma's)
  tokenizer_config.json  special tokens, add_bos/add_eos, added_tokens_decoder (the control and
                         user-defined tokens), and the chat template when the GGUF has one

Needs: pip install numpy gguf   (no torch, no sentencepiece, no transformers)
Usage: gguf_to_hf_gemma3.py MODEL.gguf OUT_DIR [--dtype bf16|f16|f32] [--chat-template FILE]
"""
import argparse, json, os, struct, sys

import numpy as np
import gguf
from gguf.quants import dequantize

NAME_MAP = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
LAYER_MAP = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}

# sentencepiece ModelProto.SentencePiece.Type; ggml's token types use the same numbers
SP_NORMAL, SP_UNKNOWN, SP_CONTROL, SP_USER_DEFINED, SP_UNUSED, SP_BYTE = 1, 2, 3, 4, 5, 6


def field(reader, key, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def hf_name(name):
    if name in NAME_MAP:
        return NAME_MAP[name]
    _, layer, part, suffix = name.split(".")
    return f"model.layers.{layer}.{LAYER_MAP[part]}.{suffix}"


def to_dtype(a, dtype):
    a = np.ascontiguousarray(a, dtype=np.float32)
    if dtype == "f32":
        return "F32", a.tobytes()
    if dtype == "f16":
        return "F16", a.astype(np.float16).tobytes()
    u = a.view(np.uint32).astype(np.uint64)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)  # round to nearest even
    return "BF16", rounded.tobytes()


def write_safetensors(path, tensors):
    header, offset = {}, 0
    for name, (dt, shape, data) in tensors.items():
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    header["__metadata__"] = {"format": "pt"}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for _, (_, _, data) in tensors.items():
            f.write(data)


# --- protobuf encoding (just what sentencepiece_model.proto needs) ---------------------------

def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def pb_bytes(field_no, data):
    return varint(field_no << 3 | 2) + varint(len(data)) + data


def pb_varint(field_no, v):
    return varint(field_no << 3 | 0) + varint(v)


def pb_float(field_no, v):
    return varint(field_no << 3 | 5) + struct.pack("<f", v)


def sentencepiece_model(pieces, unk_id, bos_id, eos_id, pad_id):
    """A ModelProto: pieces (1), trainer_spec (2: BPE, byte fallback, special ids), and an
    identity normalizer_spec (3) without dummy prefix, as Gemma's."""
    out = bytearray()
    for text, score, ty in pieces:
        p = pb_bytes(1, text.encode("utf-8")) + pb_float(2, score)
        if ty != SP_NORMAL:  # NORMAL is the default and is left out, as protobuf does
            p += pb_varint(3, ty)
        out += pb_bytes(1, p)
    def sid(v):  # int32 field: negative numbers are 10-byte varints
        return v if v >= 0 else v + (1 << 64)
    trainer = (pb_varint(3, 2) + pb_varint(4, len(pieces)) + pb_varint(35, 1)
               + pb_varint(40, sid(unk_id)) + pb_varint(41, sid(bos_id))
               + pb_varint(42, sid(eos_id)) + pb_varint(43, sid(pad_id)))
    out += pb_bytes(2, trainer)
    normalizer = pb_bytes(1, b"identity") + pb_varint(3, 0) + pb_varint(4, 0) + pb_varint(5, 1)
    out += pb_bytes(3, normalizer)
    return bytes(out)


def write_tokenizer(r, out_dir, chat_template):
    if field(r, "tokenizer.ggml.model") != "llama":
        sys.exit("only SentencePiece (tokenizer.ggml.model = llama) vocabularies are supported")
    tokens = field(r, "tokenizer.ggml.tokens")
    scores = field(r, "tokenizer.ggml.scores")
    types = field(r, "tokenizer.ggml.token_type")
    if len(set(tokens)) != len(tokens):
        sys.exit("the GGUF vocabulary has duplicate tokens; a SentencePiece model cannot")
    ids = {k: field(r, f"tokenizer.ggml.{k}_token_id") for k in ("bos", "eos", "unknown", "padding")}
    unk = ids["unknown"]

    # convert_hf_to_gguf.py reads control and user-defined tokens from added_tokens_decoder
    # (score -1000, type from "special"); the rest come from the ModelProto as they are.
    pieces, decoder = [], {}
    for i, (t, s, ty) in enumerate(zip(tokens, scores, types)):
        ty = int(ty)
        if i == unk:
            pieces.append((t, float(s), SP_UNKNOWN))
        elif ty in (SP_CONTROL, SP_USER_DEFINED):
            pieces.append((t.replace(" ", "\u2581"), float(s), ty))
        elif ty in (SP_NORMAL, SP_UNUSED, SP_BYTE):
            pieces.append((t, float(s), ty))
        else:
            sys.exit(f"token {i} {t!r}: unexpected token type {ty}")
        if ty in (SP_CONTROL, SP_USER_DEFINED) or i == unk:
            decoder[str(i)] = {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                               "single_word": False, "special": ty != SP_USER_DEFINED}
    with open(os.path.join(out_dir, "tokenizer.model"), "wb") as f:
        f.write(sentencepiece_model(pieces, unk, ids["bos"], ids["eos"],
                                    -1 if ids["padding"] is None else ids["padding"]))

    def tok(key):
        i = ids[key]
        return None if i is None else tokens[i]
    bos = tok("bos")
    added = [{"id": int(i), **d} for i, d in decoder.items()]
    post = {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {bos: {"id": bos, "ids": [ids["bos"]], "tokens": [bos]}}}
    with open(os.path.join(out_dir, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump({"version": "1.0", "added_tokens": added, "post_processor": post}, f, ensure_ascii=False)

    cfg = {"add_bos_token": bool(field(r, "tokenizer.ggml.add_bos_token", True)),
           "add_eos_token": bool(field(r, "tokenizer.ggml.add_eos_token", False)),
           "added_tokens_decoder": decoder,
           "bos_token": bos, "eos_token": tok("eos"), "pad_token": tok("padding"), "unk_token": tok("unknown"),
           "clean_up_tokenization_spaces": False, "model_max_length": 1000000000000000019884624838656,
           "spaces_between_special_tokens": False, "tokenizer_class": "GemmaTokenizer"}
    template = chat_template if chat_template is not None else field(r, "tokenizer.chat_template")
    if template:
        cfg["chat_template"] = template
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump({k: v for k, v in cfg.items() if v is not None}, f, indent=2, ensure_ascii=False)
        f.write("\n")
    return ids


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("gguf_path")
    ap.add_argument("out_dir")
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "f16", "f32"])
    ap.add_argument("--chat-template", help="a Jinja file for tokenizer_config.json's chat_template "
                    "(default: the GGUF's tokenizer.chat_template, if any)")
    args = ap.parse_args()
    r = gguf.GGUFReader(args.gguf_path)
    arch = field(r, "general.architecture")
    if arch != "gemma3":
        sys.exit(f"only gemma3-architecture GGUF files are supported, not {arch!r}")
    os.makedirs(args.out_dir, exist_ok=True)

    tensors, names = {}, set()
    for t in r.tensors:
        w = dequantize(t.data, t.tensor_type).reshape([int(x) for x in reversed(t.shape)])
        if t.name.endswith("norm.weight"):
            w = w.astype(np.float32) - np.float32(1.0)  # convert_hf_to_gguf.py adds 1 back
        name = hf_name(t.name)
        names.add(name)
        dt, data = to_dtype(w, args.dtype)
        tensors[name] = (dt, w.shape, data)
    write_safetensors(os.path.join(args.out_dir, "model.safetensors"), tensors)

    chat_template = None
    if args.chat_template:
        with open(args.chat_template, encoding="utf-8") as f:
            chat_template = f.read()
    ids = write_tokenizer(r, args.out_dir, chat_template)

    a = "gemma3"
    n_layer = field(r, f"{a}.block_count")
    pattern = 6  # Gemma 3: five sliding-window layers, then one global
    config = {
        "architectures": ["Gemma3ForCausalLM"],
        "model_type": "gemma3_text",
        "_sliding_window_pattern": pattern,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "attn_logit_softcapping": None,
        "bos_token_id": ids["bos"],
        "eos_token_id": ids["eos"],
        "pad_token_id": ids["padding"],
        "final_logit_softcapping": field(r, f"{a}.final_logit_softcapping"),
        "head_dim": field(r, f"{a}.attention.key_length"),
        "hidden_activation": "gelu_pytorch_tanh",
        "hidden_size": field(r, f"{a}.embedding_length"),
        "intermediate_size": field(r, f"{a}.feed_forward_length"),
        "layer_types": ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention"
                        for i in range(n_layer)],
        "max_position_embeddings": field(r, f"{a}.context_length"),
        "num_attention_heads": field(r, f"{a}.attention.head_count"),
        "num_hidden_layers": n_layer,
        "num_key_value_heads": field(r, f"{a}.attention.head_count_kv"),
        "query_pre_attn_scalar": field(r, f"{a}.attention.key_length"),
        "rms_norm_eps": field(r, f"{a}.attention.layer_norm_rms_epsilon"),
        "rope_local_base_freq": field(r, f"{a}.rope.freq_base_swa", 10000.0),
        "rope_scaling": None,
        "rope_theta": field(r, f"{a}.rope.freq_base", 1000000.0),
        "sliding_window": field(r, f"{a}.attention.sliding_window"),
        "tie_word_embeddings": "lm_head.weight" not in names,
        "torch_dtype": {"bf16": "bfloat16", "f16": "float16", "f32": "float32"}[args.dtype],
        "use_cache": True,
        "vocab_size": len(field(r, "tokenizer.ggml.tokens")),
    }
    with open(os.path.join(args.out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    with open(os.path.join(args.out_dir, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": ids["bos"], "eos_token_id": ids["eos"], "pad_token_id": ids["padding"]},
                  f, indent=2)
    print(f"wrote {len(tensors)} tensors ({args.dtype}) and a {len(field(r, 'tokenizer.ggml.tokens'))}-piece "
          f"tokenizer.model to {args.out_dir}")


if __name__ == "__main__":
    main()
