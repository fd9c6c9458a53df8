//! Per-architecture tensor naming, as gguf-py's `tensor_mapping.py` and the model classes of
//! `convert_hf_to_gguf.py` do it: Hugging Face name → GGUF name, the expected shape from
//! config.json, and the transforms applied on the way (llama's Q/K row permutation).

use super::hf::Hparams;

/// An architecture kiln converts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// `LlamaForCausalLM`, `MistralForCausalLM` → `llama`
    Llama,
    /// `Qwen2ForCausalLM` → `qwen2` (Q/K/V biases, no permutation)
    Qwen2,
    /// `Qwen3ForCausalLM` → `qwen3` (Q/K RMS norms, no biases, no permutation)
    Qwen3,
    /// `Gemma3ForCausalLM` → `gemma3` (Q/K norms, four norms a layer, every norm weight + 1,
    /// SentencePiece vocabulary)
    Gemma3,
}

impl Arch {
    /// From config.json's `architectures[0]`.
    pub fn from_hf(name: &str) -> Option<Arch> {
        match name {
            "LlamaForCausalLM" | "LLaMAForCausalLM" | "MistralForCausalLM" => Some(Arch::Llama),
            "Qwen2ForCausalLM" => Some(Arch::Qwen2),
            "Qwen3ForCausalLM" => Some(Arch::Qwen3),
            "Gemma3ForCausalLM" => Some(Arch::Gemma3),
            _ => None,
        }
    }

    /// The Hugging Face architectures kiln accepts.
    pub const SUPPORTED: &'static str =
        "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, Gemma3ForCausalLM";

    /// `general.architecture`.
    pub fn gguf_name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Gemma3 => "gemma3",
        }
    }
}

/// What to do to a tensor's rows on the way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transform {
    None,
    /// `LlamaModel.permute(w, n_head, n_head_kv)`: within each of `heads` heads, rows
    /// `[first half | second half]` are interleaved (HF's rotate-half → ggml's adjacent pairs).
    Permute {
        heads: usize,
    },
    /// `Gemma3Model.norm_shift`: + 1.0 on every `*norm.weight` (Gemma3RMSNorm scales by
    /// `1 + weight`; ggml's rms_norm by `weight`). In f32, or in f16 for an f16 checkpoint.
    NormShift,
}

/// One tensor the model must have.
#[derive(Clone, Debug)]
pub struct Expected {
    pub hf: String,
    pub gguf: String,
    /// PyTorch order.
    pub shape: Vec<u64>,
    pub transform: Transform,
}

/// Every tensor of the model, in no particular order: the converter walks the checkpoint in
/// its (sorted) name order and looks each one up here.
pub fn expected_tensors(arch: Arch, hp: &Hparams, has_lm_head: bool) -> Vec<Expected> {
    if arch == Arch::Gemma3 {
        return gemma3_tensors(hp, has_lm_head);
    }
    let (d, ff, v) = (hp.n_embd, hp.n_ff, hp.n_vocab);
    let q = hp.n_head * hp.head_dim;
    let kv = hp.n_head_kv * hp.head_dim;
    let mut out = vec![
        e(
            "model.embed_tokens.weight",
            "token_embd.weight",
            &[v, d],
            Transform::None,
        ),
        e(
            "model.norm.weight",
            "output_norm.weight",
            &[d],
            Transform::None,
        ),
    ];
    if has_lm_head || !hp.tie_word_embeddings {
        out.push(e(
            "lm_head.weight",
            "output.weight",
            &[v, d],
            Transform::None,
        ));
    }
    for l in 0..hp.n_layer {
        let hf = |s: &str| format!("model.layers.{l}.{s}.weight");
        let gg = |s: &str| format!("blk.{l}.{s}.weight");
        let mut biases = Vec::new();
        let mut push = |h: &str, g: &str, shape: &[u64], t: Transform| {
            out.push(Expected {
                hf: hf(h),
                gguf: gg(g),
                shape: shape.to_vec(),
                transform: t,
            })
        };
        push("input_layernorm", "attn_norm", &[d], Transform::None);
        // only llama undoes Hugging Face's rotate-half layout
        let (tq, tk) = if arch == Arch::Llama {
            (
                Transform::Permute {
                    heads: hp.n_head as usize,
                },
                Transform::Permute {
                    heads: hp.n_head_kv as usize,
                },
            )
        } else {
            (Transform::None, Transform::None)
        };
        push("self_attn.q_proj", "attn_q", &[q, d], tq);
        push("self_attn.k_proj", "attn_k", &[kv, d], tk);
        push("self_attn.v_proj", "attn_v", &[kv, d], Transform::None);
        push("self_attn.o_proj", "attn_output", &[d, q], Transform::None);
        if arch == Arch::Qwen2 || hp.attention_bias {
            // llama permutes the Q/K biases like the weights
            let bias = |h: &str, g: &str, n: u64, transform: Transform| Expected {
                hf: format!("model.layers.{l}.self_attn.{h}.bias"),
                gguf: format!("blk.{l}.{g}.bias"),
                shape: vec![n],
                transform,
            };
            biases.push(bias("q_proj", "attn_q", q, tq));
            biases.push(bias("k_proj", "attn_k", kv, tk));
            biases.push(bias("v_proj", "attn_v", kv, Transform::None));
        }
        if arch == Arch::Qwen3 {
            let hd = hp.head_dim;
            push("self_attn.q_norm", "attn_q_norm", &[hd], Transform::None);
            push("self_attn.k_norm", "attn_k_norm", &[hd], Transform::None);
        }
        push(
            "post_attention_layernorm",
            "ffn_norm",
            &[d],
            Transform::None,
        );
        push("mlp.gate_proj", "ffn_gate", &[ff, d], Transform::None);
        push("mlp.up_proj", "ffn_up", &[ff, d], Transform::None);
        push("mlp.down_proj", "ffn_down", &[d, ff], Transform::None);
        out.extend(biases);
    }
    out
}

/// Gemma 3: gguf-py's GEMMA3 tensor map (`post_attention_layernorm` is the post-attention
/// norm here, `pre_feedforward_layernorm` the FFN norm) and the +1 on every norm weight.
fn gemma3_tensors(hp: &Hparams, has_lm_head: bool) -> Vec<Expected> {
    let (d, ff, v, hd) = (hp.n_embd, hp.n_ff, hp.n_vocab, hp.head_dim);
    let q = hp.n_head * hd;
    let kv = hp.n_head_kv * hd;
    let (none, shift) = (Transform::None, Transform::NormShift);
    let mut out = vec![
        e(
            "model.embed_tokens.weight",
            "token_embd.weight",
            &[v, d],
            none,
        ),
        e("model.norm.weight", "output_norm.weight", &[d], shift),
    ];
    if has_lm_head || !hp.tie_word_embeddings {
        out.push(e("lm_head.weight", "output.weight", &[v, d], none));
    }
    for l in 0..hp.n_layer {
        let layer: [(&str, &str, Vec<u64>, Transform); 13] = [
            ("input_layernorm", "attn_norm", vec![d], shift),
            ("self_attn.q_proj", "attn_q", vec![q, d], none),
            ("self_attn.k_proj", "attn_k", vec![kv, d], none),
            ("self_attn.v_proj", "attn_v", vec![kv, d], none),
            ("self_attn.o_proj", "attn_output", vec![d, q], none),
            ("self_attn.q_norm", "attn_q_norm", vec![hd], shift),
            ("self_attn.k_norm", "attn_k_norm", vec![hd], shift),
            (
                "post_attention_layernorm",
                "post_attention_norm",
                vec![d],
                shift,
            ),
            ("pre_feedforward_layernorm", "ffn_norm", vec![d], shift),
            (
                "post_feedforward_layernorm",
                "post_ffw_norm",
                vec![d],
                shift,
            ),
            ("mlp.gate_proj", "ffn_gate", vec![ff, d], none),
            ("mlp.up_proj", "ffn_up", vec![ff, d], none),
            ("mlp.down_proj", "ffn_down", vec![d, ff], none),
        ];
        for (h, g, shape, t) in layer {
            out.push(e(
                &format!("model.layers.{l}.{h}.weight"),
                &format!("blk.{l}.{g}.weight"),
                &shape,
                t,
            ));
        }
    }
    out
}

fn e(hf: &str, gguf: &str, shape: &[u64], transform: Transform) -> Expected {
    Expected {
        hf: hf.into(),
        gguf: gguf.into(),
        shape: shape.to_vec(),
        transform,
    }
}

/// Apply `t` to `data`, a row-major matrix of `rows` rows.
pub fn apply(t: Transform, data: &[f32], rows: usize) -> Vec<f32> {
    match t {
        Transform::None => data.to_vec(),
        Transform::Permute { heads } => permute_rows(data, rows, heads),
        Transform::NormShift => data.iter().map(|v| v + 1.0).collect(),
    }
}

/// `reshape(heads, 2, rows/heads/2, cols).swapaxes(1, 2).reshape(rows, cols)`: output row
/// `h*hd + 2i + j` is input row `h*hd + j*hd/2 + i`.
fn permute_rows(data: &[f32], rows: usize, heads: usize) -> Vec<f32> {
    let cols = data.len() / rows.max(1);
    let hd = rows / heads.max(1);
    let half = hd / 2;
    let mut out = vec![0.0f32; data.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let dst = h * hd + 2 * i + j;
                let src = h * hd + j * half + i;
                out[dst * cols..(dst + 1) * cols]
                    .copy_from_slice(&data[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permute_interleaves_halves_per_head() {
        // 2 heads of 4 rows, 1 column: [a0 a1 b0 b1] → [a0 b0 a1 b1] per head
        let x: Vec<f32> = (0..8).map(|v| v as f32).collect();
        assert_eq!(permute_rows(&x, 8, 2), [0., 2., 1., 3., 4., 6., 5., 7.]);
    }
}
