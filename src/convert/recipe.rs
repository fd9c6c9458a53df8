//! llama-quantize's per-tensor type choice (`src/llama-quant.cpp`): the file types (ftypes),
//! which tensors may be quantized, the mixes that give some tensors more bits (output,
//! token_embd, attn_v, ffn_down by layer), the block-size fallbacks, `--pure` and the
//! `--tensor-type PATTERN=TYPE` overrides.

use ggml_compat::GgmlType;
use regex::Regex;

/// A llama.cpp file type (`enum llama_ftype`): what `general.file_type` records and what
/// `llama-quantize` takes as TYPE.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ftype {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q8_0,
    Q5_0,
    Q5_1,
    Q2_K,
    Q3_K_S,
    Q3_K_M,
    Q3_K_L,
    Q4_K_S,
    Q4_K_M,
    Q5_K_S,
    Q5_K_M,
    Q6_K,
    Q2_K_S,
    IQ4_NL,
    IQ4_XS,
    BF16,
    TQ1_0,
    TQ2_0,
    MXFP4_MOE,
    Q1_0,
    Q2_0,
}

/// (ftype, name as llama-quantize spells it, `llama_ftype` id, default tensor type).
const FTYPES: [(Ftype, &str, u32, GgmlType); 25] = {
    use GgmlType as T;
    [
        (Ftype::F32, "F32", 0, T::F32),
        (Ftype::F16, "F16", 1, T::F16),
        (Ftype::Q4_0, "Q4_0", 2, T::Q4_0),
        (Ftype::Q4_1, "Q4_1", 3, T::Q4_1),
        (Ftype::Q8_0, "Q8_0", 7, T::Q8_0),
        (Ftype::Q5_0, "Q5_0", 8, T::Q5_0),
        (Ftype::Q5_1, "Q5_1", 9, T::Q5_1),
        (Ftype::Q2_K, "Q2_K", 10, T::Q2_K),
        (Ftype::Q3_K_S, "Q3_K_S", 11, T::Q3_K),
        (Ftype::Q3_K_M, "Q3_K_M", 12, T::Q3_K),
        (Ftype::Q3_K_L, "Q3_K_L", 13, T::Q3_K),
        (Ftype::Q4_K_S, "Q4_K_S", 14, T::Q4_K),
        (Ftype::Q4_K_M, "Q4_K_M", 15, T::Q4_K),
        (Ftype::Q5_K_S, "Q5_K_S", 16, T::Q5_K),
        (Ftype::Q5_K_M, "Q5_K_M", 17, T::Q5_K),
        (Ftype::Q6_K, "Q6_K", 18, T::Q6_K),
        (Ftype::Q2_K_S, "Q2_K_S", 21, T::Q2_K),
        (Ftype::IQ4_NL, "IQ4_NL", 25, T::IQ4_NL),
        (Ftype::IQ4_XS, "IQ4_XS", 30, T::IQ4_XS),
        (Ftype::BF16, "BF16", 32, T::BF16),
        (Ftype::TQ1_0, "TQ1_0", 36, T::TQ1_0),
        (Ftype::TQ2_0, "TQ2_0", 37, T::TQ2_0),
        (Ftype::MXFP4_MOE, "MXFP4_MOE", 38, T::MXFP4),
        (Ftype::Q1_0, "Q1_0", 40, T::Q1_0),
        (Ftype::Q2_0, "Q2_0", 41, T::Q2_0),
    ]
};

impl Ftype {
    /// Parse a type name, case-insensitively (`Q4_K_M`, `q8_0`, `Q4_K` = Q4_K_M, `Q3_K` =
    /// Q3_K_M, `Q5_K` = Q5_K_M as llama-quantize's aliases).
    pub fn from_name(name: &str) -> Option<Ftype> {
        let up = name.to_ascii_uppercase();
        let up = match up.as_str() {
            "Q3_K" => "Q3_K_M",
            "Q4_K" => "Q4_K_M",
            "Q5_K" => "Q5_K_M",
            "MXFP4" => "MXFP4_MOE",
            other => other,
        };
        FTYPES.iter().find(|f| f.1 == up).map(|f| f.0)
    }

    fn entry(self) -> &'static (Ftype, &'static str, u32, GgmlType) {
        // every variant has exactly one row (checked by a test)
        FTYPES.iter().find(|f| f.0 == self).unwrap_or(&FTYPES[0])
    }

    /// The name, as llama-quantize prints it.
    pub fn name(self) -> &'static str {
        self.entry().1
    }

    /// The value of `general.file_type` (`llama_ftype`).
    pub fn id(self) -> u32 {
        self.entry().2
    }

    /// The type most tensors get (`llama_ftype_get_default_type`).
    pub fn default_type(self) -> GgmlType {
        self.entry().3
    }

    /// All file types kiln can write.
    pub fn all() -> impl Iterator<Item = Ftype> {
        FTYPES.iter().map(|f| f.0)
    }
}

/// Options of the recipe (the parts of `llama_model_quantize_params` kiln supports).
#[derive(Clone, Debug)]
pub struct RecipeOptions {
    pub ftype: Ftype,
    /// `--pure`: every quantizable tensor gets the default type (no mix).
    pub pure: bool,
    /// `--tensor-type PATTERN=TYPE`, first match wins (`std::regex_search` on the name).
    pub overrides: Vec<(Regex, GgmlType)>,
    /// An importance matrix was given (changes a few choices).
    pub has_imatrix: bool,
}

/// The model facts the recipe looks at (`llama_model::hparams`, `arch`, `type`).
#[derive(Clone, Debug)]
pub struct ModelFacts {
    /// `general.architecture`
    pub arch: String,
    /// `{arch}.block_count`
    pub n_layer: u32,
    /// `{arch}.attention.head_count` and `head_count_kv` (of layer 0)
    pub n_head: u32,
    pub n_head_kv: u32,
    /// `{arch}.expert_count` (0 without experts)
    pub n_expert: u32,
}

impl ModelFacts {
    fn n_gqa(&self) -> u32 {
        self.n_head.checked_div(self.n_head_kv).unwrap_or(0)
    }

    /// `model.type == LLM_TYPE_70B` (llama: 80 layers with grouped-query attention).
    fn is_70b(&self) -> bool {
        self.arch == "llama" && self.n_layer == 80 && self.n_head != self.n_head_kv
    }

    fn is_falcon(&self) -> bool {
        self.arch == "falcon"
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Category {
    TokenEmbd,
    AttentionQ,
    AttentionV,
    AttentionK,
    AttentionQkv,
    AttentionKvB,
    AttentionOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Output,
    Other,
}

/// `tensor_get_category`.
fn category(name: &str) -> Category {
    use Category::*;
    if name == "output.weight" {
        return Output;
    }
    if name == "token_embd.weight" || name == "per_layer_token_embd.weight" {
        return TokenEmbd;
    }
    let table = [
        ("attn_qkv.weight", AttentionQkv),
        ("attn_kv_b.weight", AttentionKvB),
        ("attn_v.weight", AttentionV),
        ("attn_k.weight", AttentionK),
        ("attn_q.weight", AttentionQ),
        ("attn_output.weight", AttentionOutput),
        ("ffn_up", FfnUp),
        ("ffn_gate", FfnGate),
        ("ffn_down", FfnDown),
    ];
    table
        .iter()
        .find(|(pat, _)| name.contains(pat))
        .map_or(Other, |&(_, c)| c)
}

fn is_attn_v(c: Category) -> bool {
    matches!(
        c,
        Category::AttentionV | Category::AttentionQkv | Category::AttentionKvB
    )
}

/// `tensor_allows_quantization` for the architectures kiln converts: at least 2-D, named
/// `*weight`, and not a norm, expert gate, position/token-type embedding or one of the small
/// special tensors llama.cpp keeps as they are.
pub fn allows_quantization(name: &str, n_dims: usize) -> bool {
    if n_dims < 2 || !name.ends_with("weight") {
        return false;
    }
    const KEEP: [&str; 25] = [
        "_norm.weight",
        "ffn_gate_inp.weight",
        "ffn_gate_tid2eid.weight",
        "altup",
        "laurel",
        "per_layer_model_proj",
        "ssm_conv1d",
        "shortconv.conv.weight",
        "indexer.k_proj.weight",
        "indexer.q_proj.weight",
        "time_mix_first.weight",
        "time_mix_w0.weight",
        "time_mix_w1.weight",
        "time_mix_w2.weight",
        "time_mix_v0.weight",
        "time_mix_v1.weight",
        "time_mix_v2.weight",
        "time_mix_a0.weight",
        "time_mix_a1.weight",
        "time_mix_a2.weight",
        "time_mix_g1.weight",
        "time_mix_g2.weight",
        "time_mix_decay_w1.weight",
        "time_mix_decay_w2.weight",
        "time_mix_lerp_fused.weight",
    ];
    const KEEP2: [&str; 10] = [
        "attn_rel_b.weight",
        ".position_embd",
        "sam.pos_embd",
        "sam.neck.",
        "sam.net_",
        ".rel_pos",
        ".patch_embd",
        ".patch_merger",
        "a.rvq.codebook",
        "mm.a.code_embd",
    ];
    name != "position_embd.weight"
        && name != "token_types.weight"
        && !KEEP.iter().chain(KEEP2.iter()).any(|p| name.contains(p))
}

/// Why a tensor's type could not be chosen.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error("tensor '{name}': no fallback type is defined for {ty} when rows of {ncols} are not a multiple of its block size")]
    NoFallback {
        name: String,
        ty: GgmlType,
        ncols: u64,
    },
}

/// The state `llama-quantize` carries across tensors (`quantize_state_impl`): counters of the
/// attn_v / ffn_* tensors seen so far, which place the use-more-bits layers.
pub struct Recipe {
    opts: RecipeOptions,
    model: ModelFacts,
    n_attention_wv: u32,
    i_attention_wv: u32,
    n_ffn: u32,
    i_ffn_down: u32,
    i_ffn_gate: u32,
    i_ffn_up: u32,
    has_tied_embeddings: bool,
    /// Tensors that fell back to another type because of their row length.
    pub n_fallback: usize,
}

/// `use_more_bits`: the first and last eighth of the layers, and every third in between.
fn use_more_bits(i_layer: u32, n_layers: u32) -> bool {
    let (i, n) = (i_layer as i64, n_layers as i64);
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

impl Recipe {
    /// `init_quantize_state_counters` over all tensor names of the model, in the order they
    /// will be visited.
    pub fn new<'a>(
        opts: RecipeOptions,
        model: ModelFacts,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Recipe {
        let mut n_attention_wv = 0;
        let mut has_tied_embeddings = true;
        for name in names {
            let c = category(name);
            if is_attn_v(c) {
                n_attention_wv += 1;
            }
            if c == Category::Output {
                has_tied_embeddings = false;
            }
        }
        let n_ffn = model.n_layer;
        Recipe {
            opts,
            model,
            n_attention_wv,
            i_attention_wv: 0,
            n_ffn,
            i_ffn_down: 0,
            i_ffn_gate: 0,
            i_ffn_up: 0,
            has_tied_embeddings,
            n_fallback: 0,
        }
    }

    /// The type for tensor `name` of shape `dims` (ggml order) now of type `cur`
    /// (`llama_tensor_get_type`). Call once per tensor, in file order: the counters advance.
    pub fn tensor_type(
        &mut self,
        name: &str,
        dims: &[u64],
        cur: GgmlType,
    ) -> Result<GgmlType, RecipeError> {
        if !allows_quantization(name, dims.len()) {
            return Ok(cur);
        }
        let default = self.opts.ftype.default_type();
        let mut ty = default;
        if default.is_quantized() {
            let manual = self
                .opts
                .overrides
                .iter()
                .find(|(re, _)| re.is_match(name))
                .map(|&(_, t)| t);
            if let Some(t) = manual {
                ty = t;
            } else if !self.opts.pure {
                ty = self.mix_type(ty, name, dims);
            }
            ty = self.fallback(name, dims, ty)?;
        }
        Ok(ty)
    }

    /// `tensor_type_fallback`: a type whose block fits the row length.
    fn fallback(
        &mut self,
        name: &str,
        dims: &[u64],
        ty: GgmlType,
    ) -> Result<GgmlType, RecipeError> {
        use GgmlType::*;
        let ncols = dims.first().copied().unwrap_or(1);
        if ncols % ty.block_size() as u64 == 0 {
            return Ok(ty);
        }
        self.n_fallback += 1;
        let mut out = match ty {
            IQ1_S | IQ1_M | IQ2_XXS | IQ2_XS | IQ2_S | IQ3_XXS | IQ3_S | IQ4_XS => IQ4_NL,
            Q2_0 | Q2_K | Q3_K | TQ1_0 | TQ2_0 => Q4_0,
            Q4_K => Q5_0,
            Q5_K => Q5_1,
            Q6_K => Q8_0,
            t if t.block_size() <= 32 => t,
            t => {
                return Err(RecipeError::NoFallback {
                    name: name.to_string(),
                    ty: t,
                    ncols,
                })
            }
        };
        if ncols % out.block_size() as u64 != 0 {
            out = F16;
        }
        Ok(out)
    }

    /// `llama_tensor_get_type_impl` for the ftypes kiln writes (the IQ1/IQ2/IQ3 mixes are not
    /// among them).
    fn mix_type(&mut self, mut ty: GgmlType, name: &str, dims: &[u64]) -> GgmlType {
        use Ftype as F;
        use GgmlType::*;
        let ft = self.opts.ftype;
        let cat = category(name);
        let m = &self.model;
        let falcon = m.is_falcon();
        if cat == Category::Output || (self.has_tied_embeddings && cat == Category::TokenEmbd) {
            let nx = dims.first().copied().unwrap_or(1);
            if ft == F::MXFP4_MOE || falcon || nx % ty.block_size() as u64 != 0 {
                ty = Q8_0;
            } else if ty != Q8_0 {
                ty = Q6_K;
            }
        } else if ft == F::MXFP4_MOE {
            ty = if dims.get(2).copied().unwrap_or(1) > 1 {
                MXFP4
            } else {
                Q8_0
            };
        } else if cat == Category::TokenEmbd {
            if matches!(ft, F::TQ1_0 | F::TQ2_0 | F::Q2_0) {
                ty = Q4_K;
            }
        } else if is_attn_v(cat) {
            let gqa4 = m.n_gqa() >= 4;
            let i = self.i_attention_wv;
            match ft {
                F::Q2_K => ty = if gqa4 { Q4_K } else { Q3_K },
                F::Q2_K_S if gqa4 => ty = Q4_K,
                F::Q3_K_M => ty = if i < 2 { Q5_K } else { Q4_K },
                F::Q3_K_L => ty = Q5_K,
                F::IQ4_NL | F::IQ4_XS if gqa4 => ty = Q5_K,
                F::Q4_K_M | F::Q5_K_M if use_more_bits(i, self.n_attention_wv) => ty = Q6_K,
                F::Q4_K_S if i < 4 => ty = Q5_K,
                _ => {}
            }
            if m.is_70b() && matches!(ty, Q3_K | Q4_K) {
                ty = Q5_K;
            }
            if m.n_expert == 8 {
                ty = Q8_0;
            }
            self.i_attention_wv += 1;
        } else if cat == Category::AttentionK {
            if m.n_expert == 8 {
                ty = Q8_0;
            }
        } else if cat == Category::FfnDown {
            let (i, n) = self.layer_of(self.i_ffn_down, name);
            let more = use_more_bits(i, n);
            match ft {
                F::Q2_K => ty = Q3_K,
                F::Q2_K_S if i < n / 8 => ty = Q4_K,
                F::Q2_K_S => {}
                F::Q3_K_M => {
                    ty = if i < n / 16 {
                        Q5_K
                    } else if !falcon || more {
                        Q4_K
                    } else {
                        Q3_K
                    }
                }
                F::Q3_K_L => ty = if falcon { Q4_K } else { Q5_K },
                F::Q4_K_M => {
                    if falcon {
                        ty = if i < n / 16 {
                            Q6_K
                        } else if more {
                            Q5_K
                        } else {
                            Q4_K
                        };
                    } else if more {
                        ty = Q6_K;
                    }
                }
                F::IQ4_NL | F::IQ4_XS if i < n / 8 && !self.opts.has_imatrix => ty = Q5_K,
                F::Q5_K_M if more => ty = Q6_K,
                F::Q4_K_S if !falcon && i < n / 8 => ty = Q5_K,
                F::Q4_0 | F::Q5_0 if self.opts.has_imatrix && i < n / 8 => {
                    ty = if ft == F::Q4_0 { Q4_1 } else { Q5_1 };
                }
                _ => {}
            }
            self.i_ffn_down += 1;
        } else if cat == Category::AttentionOutput {
            if !falcon {
                if m.n_expert == 8 {
                    if matches!(
                        ft,
                        F::Q2_K
                            | F::Q3_K_S
                            | F::Q3_K_M
                            | F::IQ4_NL
                            | F::Q4_K_S
                            | F::Q4_K_M
                            | F::IQ4_XS
                    ) {
                        ty = Q5_K;
                    }
                } else {
                    match ft {
                        F::Q2_K => ty = Q3_K,
                        F::Q3_K_M => ty = Q4_K,
                        F::Q3_K_L => ty = Q5_K,
                        _ => {}
                    }
                }
            } else if ft == F::Q3_K_L {
                ty = Q4_K;
            }
        } else if cat == Category::AttentionQkv {
            match ft {
                F::Q3_K_M | F::Q3_K_L => ty = Q4_K,
                F::Q4_K_M => ty = Q5_K,
                F::Q5_K_M => ty = Q6_K,
                _ => {}
            }
        } else if cat == Category::FfnGate {
            self.i_ffn_gate += 1;
        } else if cat == Category::FfnUp {
            self.i_ffn_up += 1;
        }
        ty
    }

    /// `layer_info`: the counter, or with experts the layer parsed from `blk.N.`.
    fn layer_of(&self, counter: u32, name: &str) -> (u32, u32) {
        if self.model.n_expert > 1 {
            if let Some(l) = layer_index(name) {
                return (l, self.n_ffn);
            }
        }
        (counter, self.n_ffn)
    }
}

/// N in a name starting `blk.N.`.
pub fn layer_index(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("blk.")?;
    let (n, _) = rest.split_once('.')?;
    n.parse().ok()
}

/// llama-model-loader's `weight_name_comparer`: by layer (non-layer tensors first), then by
/// name. llama-quantize writes tensors in this order.
pub fn weight_order(a: &str, b: &str) -> std::cmp::Ordering {
    let la = layer_index(a).map_or(-1, i64::from);
    let lb = layer_index(b).map_or(-1, i64::from);
    la.cmp(&lb).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ftype_has_one_row() {
        for f in Ftype::all() {
            assert_eq!(FTYPES.iter().filter(|r| r.0 == f).count(), 1);
            assert_eq!(Ftype::from_name(f.name()), Some(f));
        }
        assert_eq!(Ftype::from_name("q4_k"), Some(Ftype::Q4_K_M));
        assert_eq!(Ftype::from_name("IQ2_XXS"), None);
    }

    #[test]
    fn use_more_bits_matches_llama_quant() {
        // 30 layers: first 3, last 4, and every third from layer 5
        let picked: Vec<u32> = (0..30).filter(|&i| use_more_bits(i, 30)).collect();
        assert_eq!(picked, [0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29]);
    }

    #[test]
    fn norms_and_vectors_are_kept() {
        assert!(!allows_quantization("blk.0.attn_norm.weight", 2));
        assert!(!allows_quantization("blk.0.attn_q.weight", 1));
        assert!(!allows_quantization("blk.0.attn_q.bias", 2));
        assert!(allows_quantization("blk.0.attn_q.weight", 2));
    }
}
