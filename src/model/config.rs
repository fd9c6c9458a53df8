//! Hyperparameters read from GGUF metadata: the one place that knows the key strings and the
//! defaults llama.cpp applies per architecture (`llama-model.cpp`, `load_hparams`).

use super::ModelError;
use ggml_compat::gguf::{GgufFile, Value};

/// The architectures kiln can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// Llama 2/3, Mistral, TinyLlama, SmolLM2: RMSNorm, RoPE, GQA, SwiGLU.
    Llama,
    /// Gemma 3: scaled embeddings, q/k norms, post-norms, GELU-gated FFN, sliding-window layers.
    Gemma3,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Gemma3 => "gemma3",
        }
    }
}

/// How RoPE pairs up dimensions (llama.cpp's `LLAMA_ROPE_TYPE_NORM` / `_NEOX`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeKind {
    /// Adjacent pairs (2i, 2i+1).
    Norm,
    /// Halves (i, i + n_rot/2).
    Neox,
}

/// RoPE parameters of one layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rope {
    pub kind: RopeKind,
    /// Rotated dimensions per head (the rest pass through).
    pub n_rot: usize,
    pub freq_base: f32,
    /// Position multiplier (1 / linear scaling factor).
    pub freq_scale: f32,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub arch: Arch,
    pub n_vocab: usize,
    /// Context length the model was trained with.
    pub n_ctx_train: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    /// Per-head dimension of queries and keys.
    pub head_dim: usize,
    /// Per-head dimension of values.
    pub head_dim_v: usize,
    pub n_ff: usize,
    pub rms_eps: f32,
    /// RoPE of global-attention layers.
    pub rope: Rope,
    /// RoPE of sliding-window layers (same as `rope` where there are none).
    pub rope_swa: Rope,
    /// Sliding window size, for architectures that interleave local and global layers.
    pub swa_window: Option<usize>,
    /// Layer `il` is sliding-window when `il % swa_pattern < swa_pattern - 1`.
    pub swa_pattern: usize,
    /// Multiplier applied to queries before attention (scores are not scaled again).
    pub attn_scale: f32,
    /// Multiplier applied to token embeddings (Gemma: sqrt(n_embd)).
    pub embd_scale: Option<f32>,
    /// `tanh` soft-capping of the final logits.
    pub final_softcap: Option<f32>,
}

/// Typed access to `{arch}.*` keys with errors that name the key.
struct Keys<'a> {
    gguf: &'a GgufFile,
    arch: &'static str,
}

impl Keys<'_> {
    fn raw(&self, suffix: &str) -> (String, Option<&Value>) {
        let key = format!("{}.{}", self.arch, suffix);
        let v = self.gguf.get(&key);
        (key, v)
    }

    fn opt_usize(&self, suffix: &str) -> Result<Option<usize>, ModelError> {
        match self.raw(suffix) {
            (_, None) => Ok(None),
            (key, Some(v)) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| self.bad(&key, "a non-negative integer")),
        }
    }

    fn usize(&self, suffix: &str) -> Result<usize, ModelError> {
        let key = format!("{}.{}", self.arch, suffix);
        self.opt_usize(suffix)?
            .ok_or_else(|| ModelError::MissingKey {
                path: self.gguf.path().display().to_string(),
                key,
            })
    }

    fn opt_f32(&self, suffix: &str) -> Result<Option<f32>, ModelError> {
        match self.raw(suffix) {
            (_, None) => Ok(None),
            (key, Some(v)) => v
                .as_f32()
                .map(Some)
                .ok_or_else(|| self.bad(&key, "a number")),
        }
    }

    fn opt_str(&self, suffix: &str) -> Option<&str> {
        self.raw(suffix).1.and_then(Value::as_str)
    }

    fn bad(&self, key: &str, want: &str) -> ModelError {
        ModelError::BadKey {
            path: self.gguf.path().display().to_string(),
            key: key.to_string(),
            why: format!("expected {want}"),
        }
    }
}

impl Config {
    /// Reads the hyperparameters of the model in `gguf`.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Config, ModelError> {
        let path = gguf.path().display().to_string();
        let arch_name = gguf
            .get("general.architecture")
            .and_then(Value::as_str)
            .ok_or_else(|| ModelError::MissingKey {
                path: path.clone(),
                key: "general.architecture".into(),
            })?;
        let arch = match arch_name {
            "llama" => Arch::Llama,
            "gemma3" => Arch::Gemma3,
            other => {
                return Err(ModelError::UnknownArch {
                    path,
                    arch: other.to_string(),
                });
            }
        };
        let k = Keys {
            gguf,
            arch: arch.name(),
        };

        let n_embd = k.usize("embedding_length")?;
        let n_layer = k.usize("block_count")?;
        let n_head = k.usize("attention.head_count")?;
        let n_head_kv = k.opt_usize("attention.head_count_kv")?.unwrap_or(n_head);
        if n_head == 0 || n_head_kv == 0 || n_head % n_head_kv != 0 {
            return Err(k.bad(
                &format!("{}.attention.head_count_kv", arch.name()),
                &format!("a divisor of head_count ({n_head})"),
            ));
        }
        let head_dim = k
            .opt_usize("attention.key_length")?
            .unwrap_or(n_embd / n_head);
        let head_dim_v = k
            .opt_usize("attention.value_length")?
            .unwrap_or(n_embd / n_head);
        let n_rot = k.opt_usize("rope.dimension_count")?.unwrap_or(head_dim);
        if n_rot > head_dim || n_rot % 2 != 0 {
            return Err(k.bad(
                &format!("{}.rope.dimension_count", arch.name()),
                &format!("an even number <= the head dimension ({head_dim})"),
            ));
        }
        let n_vocab = match k.opt_usize("vocab_size")? {
            Some(n) => n,
            None => gguf
                .get("tokenizer.ggml.tokens")
                .and_then(Value::as_array)
                .map(|a| a.values.len())
                .unwrap_or(0),
        };

        let freq_base = k.opt_f32("rope.freq_base")?.unwrap_or(10000.0);
        // Linear scaling only: llama.cpp's `rope.scaling.type` "linear" / `rope.scale_linear`.
        let freq_scale = match k.opt_str("rope.scaling.type") {
            None | Some("none") | Some("linear") => {
                let factor = match k.opt_f32("rope.scaling.factor")? {
                    Some(f) => Some(f),
                    None => k.opt_f32("rope.scale_linear")?,
                };
                match factor {
                    Some(f) if f > 0.0 => 1.0 / f,
                    _ => 1.0,
                }
            }
            Some(other) => {
                return Err(ModelError::Unsupported {
                    path,
                    what: format!("rope scaling type {other:?}"),
                });
            }
        };
        let kind = match arch {
            Arch::Llama => RopeKind::Norm,
            Arch::Gemma3 => RopeKind::Neox,
        };
        let rope = Rope {
            kind,
            n_rot,
            freq_base,
            freq_scale,
        };

        let mut cfg = Config {
            arch,
            n_vocab,
            n_ctx_train: k.opt_usize("context_length")?.unwrap_or(2048),
            n_embd,
            n_layer,
            n_head,
            n_head_kv,
            head_dim,
            head_dim_v,
            n_ff: k.usize("feed_forward_length")?,
            rms_eps: k
                .opt_f32("attention.layer_norm_rms_epsilon")?
                .unwrap_or(1e-5),
            rope,
            rope_swa: rope,
            swa_window: None,
            swa_pattern: 1,
            attn_scale: 1.0 / (head_dim as f32).sqrt(),
            embd_scale: None,
            final_softcap: None,
        };

        if arch == Arch::Gemma3 {
            // llama.cpp hard-codes gemma3's pattern: five local layers, then one global layer,
            // local layers with their own RoPE base.
            if let Some(window) = k.opt_usize("attention.sliding_window")?.filter(|&w| w > 0) {
                cfg.swa_window = Some(window);
                cfg.swa_pattern = 6;
                cfg.rope_swa = Rope {
                    freq_base: 10000.0,
                    freq_scale: 1.0,
                    ..rope
                };
            }
            cfg.embd_scale = Some((n_embd as f32).sqrt());
            // 27B (62 layers) scales by n_embd / n_head instead of the head dimension.
            let scale_dim = if n_layer == 62 {
                n_embd / n_head
            } else {
                head_dim
            };
            cfg.attn_scale = 1.0 / (scale_dim as f32).sqrt();
            cfg.final_softcap = k.opt_f32("final_logit_softcapping")?.filter(|&c| c > 0.0);
        }
        Ok(cfg)
    }

    /// Whether layer `il` attends only within the sliding window.
    pub fn is_swa(&self, il: usize) -> bool {
        self.swa_window.is_some() && il % self.swa_pattern < self.swa_pattern - 1
    }

    /// The RoPE parameters of layer `il`.
    pub fn rope_for(&self, il: usize) -> Rope {
        if self.is_swa(il) {
            self.rope_swa
        } else {
            self.rope
        }
    }

    /// Width of the key (and value) rows stored per token per layer.
    pub fn n_embd_k(&self) -> usize {
        self.n_head_kv * self.head_dim
    }

    pub fn n_embd_v(&self) -> usize {
        self.n_head_kv * self.head_dim_v
    }
}
