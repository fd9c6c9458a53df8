//! GGUF → named, shape-checked weight views. Matrices stay in the memory map (only their
//! location is recorded, until calibration replaces one); small vectors (norm weights) are converted to f32 once.

use super::config::{Arch, Config};
use super::ModelError;
use crate::kernels::{self, MatmulError, WeightMatrix};
use ggml_compat::gguf::{GgufFile, TensorInfo};
use ggml_compat::{quant, GgmlType};

/// Where a weight matrix lives: `rows` rows of `cols` elements, in the mapped file or (after
/// calibration replaced it, see [`Matrix::replace`]) in memory.
#[derive(Clone, Debug)]
pub struct Matrix {
    pub name: String,
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    start: usize,
    len: usize,
    owned: Option<std::sync::Arc<Vec<u8>>>,
}

impl Matrix {
    /// The matrix's bytes: its range of `file` (the file it was loaded from), or its replacement.
    fn bytes<'a>(&'a self, file: &'a GgufFile) -> &'a [u8] {
        match &self.owned {
            Some(b) => b,
            None => &file.bytes()[self.start..self.start + self.len],
        }
    }

    /// The matrix as a view into `file` (the same file it was loaded from).
    pub fn view<'a>(&'a self, file: &'a GgufFile) -> Result<WeightMatrix<'a>, MatmulError> {
        WeightMatrix::new(&self.name, self.ty, self.rows, self.cols, self.bytes(file))
    }

    /// Dequantizes row `r` into `out` (`cols` values): ggml's `get_rows`.
    pub fn row_to_f32(&self, file: &GgufFile, r: usize, out: &mut [f32]) {
        let bytes = self.bytes(file);
        let row_bytes = bytes.len() / self.rows;
        quant::dequantize(self.ty, &bytes[r * row_bytes..][..row_bytes], out)
            .expect("row geometry checked at load");
    }

    /// All rows as f32 (rows × cols, row-major).
    pub fn to_f32(&self, file: &GgufFile) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        for (r, row) in out.chunks_exact_mut(self.cols).enumerate() {
            self.row_to_f32(file, r, row);
        }
        out
    }

    /// Replaces the weights with `bytes` of type `ty` (same shape), e.g. a calibrated
    /// quantization, so later forward passes see what the output file will hold.
    pub fn replace(&mut self, ty: GgmlType, bytes: Vec<u8>) -> Result<(), MatmulError> {
        WeightMatrix::new(&self.name, ty, self.rows, self.cols, &bytes)?;
        if kernels::kernels(ty).is_none() {
            return Err(MatmulError::Unsupported {
                name: self.name.clone(),
                ty,
            });
        }
        self.ty = ty;
        self.owned = Some(std::sync::Arc::new(bytes));
        Ok(())
    }
}

/// The weights of one transformer block. Shapes are (out, in) = (rows, cols).
pub struct Layer {
    pub attn_norm: Vec<f32>,              // (n_embd)
    pub wq: Matrix,                       // (n_head*head_dim, n_embd)
    pub wk: Matrix,                       // (n_head_kv*head_dim, n_embd)
    pub wv: Matrix,                       // (n_head_kv*head_dim_v, n_embd)
    pub wo: Matrix,                       // (n_embd, n_head*head_dim_v)
    pub q_norm: Option<Vec<f32>>,         // (head_dim) gemma3
    pub k_norm: Option<Vec<f32>>,         // (head_dim) gemma3
    pub post_attn_norm: Option<Vec<f32>>, // (n_embd) gemma3
    pub ffn_norm: Vec<f32>,               // (n_embd)
    pub w_gate: Matrix,                   // (n_ff, n_embd)
    pub w_up: Matrix,                     // (n_ff, n_embd)
    pub w_down: Matrix,                   // (n_embd, n_ff)
    pub post_ffn_norm: Option<Vec<f32>>,  // (n_embd) gemma3
}

impl Layer {
    /// The matrix called `key` in the GGUF names (`attn_q`, …, `ffn_down`), if it is one.
    pub fn matrix_mut(&mut self, key: &str) -> Option<&mut Matrix> {
        Some(match key {
            "attn_q" => &mut self.wq,
            "attn_k" => &mut self.wk,
            "attn_v" => &mut self.wv,
            "attn_output" => &mut self.wo,
            "ffn_gate" => &mut self.w_gate,
            "ffn_up" => &mut self.w_up,
            "ffn_down" => &mut self.w_down,
            _ => return None,
        })
    }
}

pub struct Weights {
    pub tok_embd: Matrix, // (n_vocab, n_embd)
    pub output_norm: Vec<f32>,
    /// The output projection (n_vocab, n_embd): `output.weight`, or the tied embedding.
    pub output: Matrix,
    /// Per-pair RoPE frequency divisors (`rope_freqs.weight`, Llama 3.1 style), if present.
    pub rope_freqs: Option<Vec<f32>>,
    pub layers: Vec<Layer>,
}

struct Loader<'a> {
    file: &'a GgufFile,
}

impl Loader<'_> {
    fn info(&self, name: &str) -> Result<&TensorInfo, ModelError> {
        self.file
            .tensor(name)
            .ok_or_else(|| ModelError::MissingTensor {
                path: self.file.path().display().to_string(),
                name: name.to_string(),
            })
    }

    fn check_dims(&self, t: &TensorInfo, want: &[usize]) -> Result<(), ModelError> {
        let got: Vec<u64> = t.dims.to_vec();
        let want_u64: Vec<u64> = want.iter().map(|&d| d as u64).collect();
        if got != want_u64 {
            return Err(ModelError::BadShape {
                path: self.file.path().display().to_string(),
                name: t.name.clone(),
                want: want_u64,
                got,
            });
        }
        Ok(())
    }

    /// A matrix of `rows` × `cols` (ggml dims `[cols, rows]`) whose type kiln can multiply.
    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Matrix, ModelError> {
        let t = self.info(name)?;
        self.check_dims(t, &[cols, rows])?;
        if kernels::kernels(t.ty).is_none() || quant::fns(t.ty).is_none() {
            return Err(ModelError::UnsupportedType {
                path: self.file.path().display().to_string(),
                name: name.to_string(),
                ty: t.ty,
            });
        }
        let start = (self.file.header().data_offset + t.offset) as usize;
        let m = Matrix {
            name: name.to_string(),
            ty: t.ty,
            rows,
            cols,
            start,
            len: t.size as usize,
            owned: None,
        };
        m.view(self.file)
            .map_err(|e| ModelError::Matmul(e.to_string()))?;
        Ok(m)
    }

    fn opt_matrix(
        &self,
        name: &str,
        rows: usize,
        cols: usize,
    ) -> Result<Option<Matrix>, ModelError> {
        match self.file.tensor(name) {
            None => Ok(None),
            Some(_) => self.matrix(name, rows, cols).map(Some),
        }
    }

    /// A vector of `n` values of any convertible type, as f32.
    fn vector(&self, name: &str, n: usize) -> Result<Vec<f32>, ModelError> {
        let t = self.info(name)?;
        self.check_dims(t, &[n])?;
        let mut out = vec![0f32; n];
        quant::dequantize(t.ty, self.file.tensor_data(t), &mut out).map_err(|_| {
            ModelError::UnsupportedType {
                path: self.file.path().display().to_string(),
                name: name.to_string(),
                ty: t.ty,
            }
        })?;
        Ok(out)
    }

    fn opt_vector(&self, name: &str, n: usize) -> Result<Option<Vec<f32>>, ModelError> {
        match self.file.tensor(name) {
            None => Ok(None),
            Some(_) => self.vector(name, n).map(Some),
        }
    }
}

impl Weights {
    /// Finds and checks every tensor the architecture needs.
    pub fn load(file: &GgufFile, c: &Config) -> Result<Weights, ModelError> {
        let l = Loader { file };
        let tok_embd = l.matrix("token_embd.weight", c.n_vocab, c.n_embd)?;
        let output = l
            .opt_matrix("output.weight", c.n_vocab, c.n_embd)?
            .unwrap_or_else(|| tok_embd.clone());
        let gemma = c.arch == Arch::Gemma3;
        let mut layers = Vec::with_capacity(c.n_layer);
        for il in 0..c.n_layer {
            let n = |s: &str| format!("blk.{il}.{s}.weight");
            let q_dim = c.n_head * c.head_dim;
            let per_head_norm = |s: &str| -> Result<Option<Vec<f32>>, ModelError> {
                if gemma {
                    l.vector(&n(s), c.head_dim).map(Some)
                } else {
                    l.opt_vector(&n(s), c.head_dim)
                }
            };
            let post_norm = |s: &str| -> Result<Option<Vec<f32>>, ModelError> {
                if gemma {
                    l.vector(&n(s), c.n_embd).map(Some)
                } else {
                    Ok(None)
                }
            };
            layers.push(Layer {
                attn_norm: l.vector(&n("attn_norm"), c.n_embd)?,
                wq: l.matrix(&n("attn_q"), q_dim, c.n_embd)?,
                wk: l.matrix(&n("attn_k"), c.n_embd_k(), c.n_embd)?,
                wv: l.matrix(&n("attn_v"), c.n_embd_v(), c.n_embd)?,
                wo: l.matrix(&n("attn_output"), c.n_embd, c.n_head * c.head_dim_v)?,
                q_norm: per_head_norm("attn_q_norm")?,
                k_norm: per_head_norm("attn_k_norm")?,
                post_attn_norm: post_norm("post_attention_norm")?,
                ffn_norm: l.vector(&n("ffn_norm"), c.n_embd)?,
                w_gate: l.matrix(&n("ffn_gate"), c.n_ff, c.n_embd)?,
                w_up: l.matrix(&n("ffn_up"), c.n_ff, c.n_embd)?,
                w_down: l.matrix(&n("ffn_down"), c.n_embd, c.n_ff)?,
                post_ffn_norm: post_norm("post_ffw_norm")?,
            });
        }
        Ok(Weights {
            tok_embd,
            output_norm: l.vector("output_norm.weight", c.n_embd)?,
            output,
            rope_freqs: l.opt_vector("rope_freqs.weight", c.rope.n_rot / 2)?,
            layers,
        })
    }
}
