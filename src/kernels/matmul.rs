//! Weight matrix × a batch of activations, the way ggml's CPU `mul_mat` does it
//! (`ggml_compute_forward_mul_mat` in `ggml-cpu/ggml-cpu.c`): the f32 activations are converted
//! once per call to the weight type's `vec_dot_type`, then every (weight row, token) pair is one
//! call of the type's `vec_dot`. Because each output is exactly one `vec_dot`, the result does
//! not depend on the number of threads.
//!
//! Where ggml's x86 build multiplies a batch in another order than the vec_dot — repacked
//! Q4_K, tiled Q6_K, llamafile's tinyBLAS for F16 (`gemm/tinyblas.rs`) — each output is one
//! call of that order's per-pair function instead, still independent of the thread count.
//! Converting the activations is split across the threads too (`convert_rows`).
//!
//! Work is cut into tiles (a range of weight rows × a range of tokens) handed to a [`Parallel`]
//! executor. [`ScopedThreads`] spawns threads for each call with `std::thread::scope`; a
//! persistent pool can implement the same trait and be passed to [`matmul_with`].

use super::gemm::{self, tinyblas, GemmKernel};
use super::{kernels, repack, VecDot};
use ggml_compat::quant::{quantize_row, QuantError};
use ggml_compat::GgmlType;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A weight matrix of `rows` × `cols` elements of one ggml type, stored row-major as ggml stores
/// a 2-D tensor (`ne[0] = cols`, `ne[1] = rows`). The bytes are borrowed (from the mmap), never
/// copied. Construction checks the byte length, so every row can be sliced without panicking.
#[derive(Clone, Copy, Debug)]
pub struct WeightMatrix<'a> {
    name: &'a str,
    ty: GgmlType,
    rows: usize,
    cols: usize,
    row_bytes: usize,
    data: &'a [u8],
}

impl<'a> WeightMatrix<'a> {
    /// Views `data` as a `rows` × `cols` matrix of type `ty`. `name` (the tensor's name) is only
    /// used in error messages.
    pub fn new(
        name: &'a str,
        ty: GgmlType,
        rows: usize,
        cols: usize,
        data: &'a [u8],
    ) -> Result<Self, MatmulError> {
        let block = ty.block_size();
        if !cols.is_multiple_of(block) {
            return Err(MatmulError::NotWholeBlocks {
                name: name.to_owned(),
                ty,
                cols,
                block,
            });
        }
        let row_bytes = cols / block * ty.type_size();
        let want = row_bytes.checked_mul(rows);
        if want != Some(data.len()) {
            return Err(MatmulError::BadWeightBytes {
                name: name.to_owned(),
                ty,
                rows,
                cols,
                got: data.len(),
                want,
            });
        }
        Ok(WeightMatrix {
            name,
            ty,
            rows,
            cols,
            row_bytes,
            data,
        })
    }

    /// The tensor name given to [`WeightMatrix::new`].
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// The weight type (ggml's `src0->type`).
    pub fn ty(&self) -> GgmlType {
        self.ty
    }

    /// Output features (ggml's `ne[1]`).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input features (ggml's `ne[0]`).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The bytes of row `r`, or `None` past the last row.
    pub fn row(&self, r: usize) -> Option<&'a [u8]> {
        if r >= self.rows {
            return None;
        }
        self.data.get(r * self.row_bytes..(r + 1) * self.row_bytes)
    }
}

/// Why a matrix multiplication could not run. Every message names the weight tensor.
#[derive(Debug, thiserror::Error)]
pub enum MatmulError {
    #[error(
        "tensor {name}: kiln has no matmul kernel for type {ty}; \
         use a model quantized to a supported type (see `kiln::kernels::supported_types`)"
    )]
    Unsupported { name: String, ty: GgmlType },
    #[error("tensor {name}: {cols} columns is not a whole number of {ty} blocks of {block}")]
    NotWholeBlocks {
        name: String,
        ty: GgmlType,
        cols: usize,
        block: usize,
    },
    #[error(
        "tensor {name}: {rows} rows × {cols} columns of {ty} need {} bytes, the data has {got}",
        want.map_or("more than usize::MAX".to_owned(), |w| w.to_string())
    )]
    BadWeightBytes {
        name: String,
        ty: GgmlType,
        rows: usize,
        cols: usize,
        got: usize,
        want: Option<usize>,
    },
    #[error(
        "tensor {name}: activations hold {got} floats, expected {n_tokens} tokens × {cols} columns"
    )]
    BadInput {
        name: String,
        n_tokens: usize,
        cols: usize,
        got: usize,
    },
    #[error("tensor {name}: output holds {got} floats, expected {n_tokens} tokens × {rows} rows")]
    BadOutput {
        name: String,
        n_tokens: usize,
        rows: usize,
        got: usize,
    },
    #[error("tensor {name}: converting activations to {vec_dot_type}: {source}")]
    Activations {
        name: String,
        vec_dot_type: GgmlType,
        source: QuantError,
    },
}

/// Runs independent tasks `0..n_tasks`, possibly in parallel, and returns when all are done.
/// The matmul only needs this; a persistent thread pool can implement it in place of
/// [`ScopedThreads`].
pub trait Parallel {
    /// How many threads tasks may run on (used to size the tiles).
    fn threads(&self) -> usize;
    /// Calls `task(i)` exactly once for every `i` in `0..n_tasks`.
    fn run(&self, n_tasks: usize, task: &(dyn Fn(usize) + Sync));
}

/// Spawns `threads - 1` scoped threads per call (the calling thread works too); tasks are
/// handed out from an atomic counter, as ggml hands out mul_mat chunks.
#[derive(Clone, Copy, Debug)]
pub struct ScopedThreads {
    threads: usize,
}

impl ScopedThreads {
    /// An executor with `threads` threads (0 is taken as 1).
    pub fn new(threads: usize) -> Self {
        ScopedThreads {
            threads: threads.max(1),
        }
    }
}

impl Parallel for ScopedThreads {
    fn threads(&self) -> usize {
        self.threads
    }

    fn run(&self, n_tasks: usize, task: &(dyn Fn(usize) + Sync)) {
        let workers = self.threads.min(n_tasks);
        if workers <= 1 {
            (0..n_tasks).for_each(task);
            return;
        }
        let next = AtomicUsize::new(0);
        let work = || loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= n_tasks {
                break;
            }
            task(i);
        };
        std::thread::scope(|s| {
            for _ in 1..workers {
                s.spawn(work);
            }
            work();
        });
    }
}

/// Reusable buffer for the converted activations, so repeated calls do not allocate. Its
/// storage is 8-byte aligned, enough for every block struct (Q8_K holds an f32).
#[derive(Default, Debug)]
pub struct MatmulScratch {
    buf: Vec<u64>,
}

impl MatmulScratch {
    fn bytes(&mut self, len: usize) -> &mut [u8] {
        self.buf.resize(len.div_ceil(8), 0);
        &mut bytemuck::cast_slice_mut(&mut self.buf)[..len]
    }
}

/// Converts `x` (whole rows of `cols` floats) to `vec_dot_type` into `dst`, row by row: ggml-cpu's
/// `type_traits_cpu[vec_dot_type].from_float`, through `ggml_compat::quant::quantize_row` (no
/// importance matrix). F16 rounds to nearest even, as ggml-cpu's F16C conversion
/// (`ggml_cpu_fp32_to_fp16`) does; the one difference is a NaN, which ggml_compat stores as the
/// canonical quiet NaN of `ggml_fp32_to_fp16_row` where F16C keeps the payload's top bits (either
/// way the dot product is NaN). BF16 is `GGML_FP32_TO_BF16`. With a SIMD kernel table, Q8_0 and
/// Q8_1 follow ggml-cpu's x86 `quantize_row_q8_0` / `quantize_row_q8_1` (see `act_quant.rs`);
/// otherwise quantized types use the reference quantizer, as ggml's generic build does.
pub fn quantize_activations(
    vec_dot_type: GgmlType,
    x: &[f32],
    cols: usize,
    dst: &mut [u8],
) -> Result<(), QuantError> {
    let row_bytes = act_row_bytes(vec_dot_type, cols)?;
    let want = x.len() / cols.max(1) * row_bytes;
    if !x.len().is_multiple_of(cols.max(1)) || dst.len() != want {
        return Err(QuantError::BadLength {
            ty: vec_dot_type,
            got: dst.len(),
            want,
        });
    }
    if cols == 0 {
        return Ok(());
    }
    // ggml's x86 builds convert Q8_0 / Q8_1 activations with their own SIMD `from_float`,
    // which rounds differently from the reference quantizer; the scalar table is ggml's generic
    // build, which uses the reference.
    let x86 = super::active_isa() != "scalar";
    for (src, out) in x.chunks_exact(cols).zip(dst.chunks_exact_mut(row_bytes)) {
        match vec_dot_type {
            GgmlType::Q8_0 if x86 => super::act_quant::quantize_row_q8_0_x86(src, out),
            GgmlType::Q8_1 if x86 => super::act_quant::quantize_row_q8_1_x86(src, out),
            // The reference's bytes (ggml's x86 `quantize_row_q8_K` is the reference), faster.
            GgmlType::Q8_K if x86 => super::act_quant::quantize_row_q8_k_x86(src, out)?,
            _ => quantize_row(vec_dot_type, src, out, None)?,
        }
    }
    Ok(())
}

/// Activations (elements) from which converting them is split across the executor's threads:
/// below, spawning or waking threads costs more than the conversion (decode converts one row).
const PARALLEL_CONVERT_MIN: usize = 16 * 1024;

/// `convert(rows, bytes)` of [`convert_rows`].
type ConvertFn<'a> = dyn Fn(&[f32], &mut [u8]) -> Result<(), QuantError> + Sync + 'a;

/// Converts the whole rows of `cols` floats in `x` into `dst` (`act_row` bytes a row) with
/// `convert(rows, bytes)`, in contiguous runs of rows shared among the threads of `par` when the
/// batch is large enough to pay. Each row is converted on its own, so the bytes do not depend on the
/// split. ggml splits every row among its threads instead (`from_float` on a share of each
/// row's blocks): blocks are independent, so the result is the same.
fn convert_rows<P: Parallel + ?Sized>(
    par: &P,
    convert: &ConvertFn,
    x: &[f32],
    cols: usize,
    dst: &mut [u8],
    act_row: usize,
) -> Result<(), QuantError> {
    let n_rows = dst.len().checked_div(act_row).unwrap_or(0);
    // A few runs per thread, so a thread that starts late still finds work.
    let parts = (4 * par.threads()).min(n_rows);
    if par.threads() <= 1 || parts <= 1 || x.len() < PARALLEL_CONVERT_MIN {
        return convert(x, dst);
    }
    let per = n_rows.div_ceil(parts);
    let jobs: Vec<std::sync::Mutex<(&[f32], &mut [u8])>> = x
        .chunks(per * cols)
        .zip(dst.chunks_mut(per * act_row))
        .map(std::sync::Mutex::new)
        .collect();
    let failed = std::sync::Mutex::new(None);
    par.run(jobs.len(), &|i| {
        // Each job is taken by exactly one task, so the lock is never contended.
        let mut job = jobs[i].lock().unwrap_or_else(|e| e.into_inner());
        let (src, out) = &mut *job;
        if let Err(e) = convert(src, out) {
            *failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
        }
    });
    match failed.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Bytes of one row of `cols` activations converted to `vec_dot_type`.
fn act_row_bytes(vec_dot_type: GgmlType, cols: usize) -> Result<usize, QuantError> {
    let bytes = vec_dot_type
        .row_bytes(cols as u64)
        .ok_or(QuantError::NotWholeBlocks {
            ty: vec_dot_type,
            n: cols,
            block: vec_dot_type.block_size(),
        })?;
    Ok(bytes as usize)
}

/// `out[t][r] = dot(w row r, x row t)` for `n_tokens` activation rows `x` (`[n_tokens × cols]`,
/// row-major) into `out` (`[n_tokens × rows]`), on `threads` threads spawned for this call.
/// Matches ggml's CPU `mul_mat` of a 2-D weight (src0) with f32 activations (src1): the
/// activations are converted once to the weight type's `vec_dot_type`.
pub fn matmul(
    w: &WeightMatrix,
    x: &[f32],
    n_tokens: usize,
    out: &mut [f32],
    threads: usize,
) -> Result<(), MatmulError> {
    matmul_with(
        &ScopedThreads::new(threads),
        &mut MatmulScratch::default(),
        w,
        x,
        n_tokens,
        out,
    )
}

/// [`matmul`] with a caller-provided executor and a reusable activation buffer.
pub fn matmul_with<P: Parallel + ?Sized>(
    par: &P,
    scratch: &mut MatmulScratch,
    w: &WeightMatrix,
    x: &[f32],
    n_tokens: usize,
    out: &mut [f32],
) -> Result<(), MatmulError> {
    let name = || w.name.to_owned();
    let mut k = *kernels(w.ty).ok_or_else(|| MatmulError::Unsupported {
        name: name(),
        ty: w.ty,
    })?;
    // ggml's x86 builds multiply a repackable Q4_K matrix through its repack kernels, which sum
    // in other orders than the vec_dot: one for the tokens in whole groups of four (gemm), one
    // for the rest (gemv) (see `repack.rs`).
    let mut tail_dot = k.vec_dot;
    // Which per-pair function the batched kernel must reproduce, and up to which token.
    let mut order = gemm::Order::VecDot;
    let mut batched_until = n_tokens;
    if w.ty == GgmlType::Q4_K && super::active_isa() != "scalar" && repack::q4_k_is_repacked(w.rows)
    {
        k.vec_dot = repack::vec_dot_q4_k_q8_k_gemm;
        tail_dot = repack::vec_dot_q4_k_q8_k_gemv;
        order = gemm::Order::Q4KGemm;
        batched_until = n_tokens - n_tokens % 4;
    }
    // ... and other K-quants of batches from 8 tokens through its tiled kernels.
    if w.ty == GgmlType::Q6_K
        && super::active_isa() != "scalar"
        && n_tokens >= repack::TILED_MIN_BATCH
    {
        k.vec_dot = repack::vec_dot_q6_k_q8_k_tiled;
        tail_dot = k.vec_dot;
        order = gemm::Order::Q6KTiled;
    }
    // ... and a repackable Q4_0 matrix in one order for every token (see `repack.rs`).
    let x86 = matches!(
        super::active_table().isa(),
        super::Isa::Avx2 | super::Isa::Avx512
    );
    if w.ty == GgmlType::Q4_0 && x86 && repack::q4_0_is_repacked(w.rows) {
        k.vec_dot = repack::vec_dot_q4_0_q8_0_repack;
        tail_dot = k.vec_dot;
        order = gemm::Order::Q40Repack;
    }
    let dots = Dots {
        head: k.vec_dot,
        tail: tail_dot,
        tail_from: n_tokens - n_tokens % 4,
        gemv: order == gemm::Order::VecDot,
    };
    let (rows, cols) = (w.rows, w.cols);
    if n_tokens.checked_mul(cols) != Some(x.len()) {
        return Err(MatmulError::BadInput {
            name: name(),
            n_tokens,
            cols,
            got: x.len(),
        });
    }
    if n_tokens.checked_mul(rows) != Some(out.len()) {
        return Err(MatmulError::BadOutput {
            name: name(),
            n_tokens,
            rows,
            got: out.len(),
        });
    }
    let vdt = k.vec_dot_type;
    let act_err = |source| MatmulError::Activations {
        name: name(),
        vec_dot_type: vdt,
        source,
    };
    // Whole weight blocks are whole activation blocks for every pair in the table (tested in
    // scalar.rs), so this cannot fail for a valid WeightMatrix; keep the error path anyway.
    let act_row = act_row_bytes(vdt, cols).map_err(act_err)?;
    if n_tokens == 0 || rows == 0 {
        return Ok(());
    }
    let isa = super::active_table().isa();
    // ggml's x86 builds hand an F16 batch to llamafile's tinyBLAS, which sums in its own order
    // (see `gemm/tinyblas.rs`); its activations are kept as f16-rounded f32s.
    let tb = if w.ty == GgmlType::F16 && tinyblas::takes_f16(rows, cols, n_tokens) {
        gemm::tinyblas_f16(isa)
    } else {
        None
    };
    let (dots, act_row) = match tb {
        Some(tb) => {
            let dot = tb.dot;
            let dots = Dots {
                head: dot,
                tail: dot,
                tail_from: n_tokens,
                gemv: false,
            };
            (dots, cols * 4)
        }
        None => (dots, act_row),
    };
    let act: &[u8] = if tb.is_none() && vdt == GgmlType::F32 {
        // Already the vec_dot_type: ggml skips the conversion too.
        bytemuck::cast_slice(x)
    } else {
        let buf = scratch.bytes(n_tokens * act_row);
        let convert = |src: &[f32], dst: &mut [u8]| match tb {
            Some(tb) => {
                (tb.widen)(src, dst);
                Ok(())
            }
            None => quantize_activations(vdt, src, cols, dst),
        };
        convert_rows(par, &convert, x, cols, buf, act_row).map_err(act_err)?;
        buf
    };
    debug_assert_eq!(act.len(), n_tokens * act_row);
    let batched = match tb {
        Some(tb) => Some(tb.tile),
        None if order == gemm::Order::Q40Repack => gemm::q4_0_repack_kernel(isa, n_tokens),
        None if order == gemm::Order::Q4KGemm => gemm::q4_k_gemm_kernel(isa, rows, batched_until),
        None if n_tokens >= 2 => gemm::kernel(isa, w.ty, order, rows, n_tokens),
        // One token: several rows' vec_dots side by side (`gemv.rs`).
        None if order == gemm::Order::VecDot => super::gemv::kernel(isa, w.ty),
        None => None,
    };
    let (row_align, tok_align) = batched.map_or((1, 1), |g| (g.rows, g.tokens));
    let tiles = match batched {
        Some(g) if g.tokens == 1 && n_tokens == 1 && dots.gemv => {
            Tiles::per_thread(rows, par.threads(), g.rows)
        }
        _ => Tiles::new(rows, n_tokens, par.threads(), row_align, tok_align),
    };
    let dst = SharedOut::new(out);
    par.run(tiles.count(), &|i| {
        let (row_range, tok_range) = tiles.get(i);
        let batch = batched.map(|g| (g, batched_until));
        tile(&dots, batch, w, act, act_row, row_range, tok_range, &dst);
    });
    Ok(())
}

/// [`matmul_with`] of several matrices by the same one-token activations (`outs[i]` for
/// `ws[i]`), in one pass over the executor: decode's q/k/v and gate/up projections, so a token
/// takes fewer thread-pool wake-ups and converts those activations once. Each output is computed
/// exactly as [`matmul_with`] computes it (ggml runs these as separate `mul_mat`s, each the same
/// per-row vec_dot). Other batches, mixed types or widths, and matrices ggml multiplies in a
/// repacked order fall back to one [`matmul_with`] each.
pub fn matmul_many_with<P: Parallel + ?Sized>(
    par: &P,
    scratch: &mut MatmulScratch,
    ws: &[WeightMatrix],
    x: &[f32],
    n_tokens: usize,
    outs: &mut [&mut [f32]],
) -> Result<(), MatmulError> {
    let isa = super::active_table().isa();
    // Only weights `matmul_with` multiplies with the plain vec_dot order for one token. Q4_0 is
    // left out: it is moving to ggml's repacked order (a hook in `matmul_with`).
    let simple = |w: &WeightMatrix| {
        w.ty == ws[0].ty
            && w.ty != GgmlType::Q4_0
            && w.cols == ws[0].cols
            && x.len() == w.cols
            && !(w.ty == GgmlType::Q4_K
                && isa != super::Isa::Scalar
                && repack::q4_k_is_repacked(w.rows))
    };
    let k = kernels(ws[0].ty).copied();
    if n_tokens != 1 || ws.len() != outs.len() || !ws.iter().all(simple) || k.is_none() {
        for (w, out) in ws.iter().zip(outs.iter_mut()) {
            matmul_with(par, scratch, w, x, n_tokens, out)?;
        }
        return Ok(());
    }
    let k = k.expect("checked just above");
    for (w, out) in ws.iter().zip(outs.iter()) {
        if out.len() != w.rows {
            return Err(MatmulError::BadOutput {
                name: w.name.to_owned(),
                n_tokens,
                rows: w.rows,
                got: out.len(),
            });
        }
    }
    let (vdt, cols) = (k.vec_dot_type, ws[0].cols);
    let act_err = |source| MatmulError::Activations {
        name: ws[0].name.to_owned(),
        vec_dot_type: vdt,
        source,
    };
    let act_row = act_row_bytes(vdt, cols).map_err(act_err)?;
    let act: &[u8] = if vdt == GgmlType::F32 {
        bytemuck::cast_slice(x)
    } else {
        let buf = scratch.bytes(act_row);
        quantize_activations(vdt, x, cols, buf).map_err(act_err)?;
        buf
    };
    let gemv = super::gemv::kernel(isa, ws[0].ty);
    let align = gemv.map_or(1, |g| g.rows);
    let dots = Dots {
        head: k.vec_dot,
        tail: k.vec_dot,
        tail_from: 0,
        gemv: true,
    };
    let tiles: Vec<Tiles> = ws
        .iter()
        .map(|w| match gemv {
            Some(_) => Tiles::per_thread(w.rows, par.threads(), align),
            None => Tiles::new(w.rows, 1, par.threads(), 1, 1),
        })
        .collect();
    let dsts: Vec<SharedOut> = outs.iter_mut().map(|o| SharedOut::new(o)).collect();
    let total: usize = tiles.iter().map(Tiles::count).sum();
    par.run(total, &|mut i| {
        for ((w, t), dst) in ws.iter().zip(&tiles).zip(&dsts) {
            if i < t.count() {
                let (row_range, tok_range) = t.get(i);
                let batch = gemv.map(|g| (g, 1));
                return tile(&dots, batch, w, act, act_row, row_range, tok_range, dst);
            }
            i -= t.count();
        }
    });
    Ok(())
}

/// The dot product of each token: `head` for tokens before `tail_from`, `tail` from there.
struct Dots {
    head: VecDot,
    tail: VecDot,
    tail_from: usize,
    /// Whether a one-token kernel is a `gemv.rs` kernel, which wants its rows far apart (one
    /// chunk per thread, cut into runs). Other one-token tiles (the repacked Q4_0's) read
    /// adjacent rows and prefetch for that.
    gemv: bool,
}

/// The first `len` floats of `space`, zeroed: a tile's output buffer, sized to the tile, so that
/// a task or decode gemv call zeroes only the floats its tile writes rather than the whole
/// `MAX_OUT`-float array (2 KiB, sized for the widest tile).
fn zeroed(space: &mut [MaybeUninit<f32>], len: usize) -> &mut [f32] {
    let space = &mut space[..len];
    for x in space.iter_mut() {
        x.write(0.0);
    }
    // SAFETY: every element of `space` was just initialized, and `MaybeUninit<f32>` has the
    // layout of `f32`.
    unsafe { &mut *(space as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// Computes one task's tile: with a batched kernel (usable for tokens before `until`), whole
/// `g.rows` × `g.tokens` sub-tiles through it (weight rows outermost, so the task's activations
/// stay in cache), and the rows and tokens left over one `vec_dot` each.
#[allow(clippy::too_many_arguments)]
fn tile(
    k: &Dots,
    batched: Option<(GemmKernel, usize)>,
    w: &WeightMatrix,
    act: &[u8],
    act_row: usize,
    rows: std::ops::Range<usize>,
    tokens: std::ops::Range<usize>,
    dst: &SharedOut,
) {
    if let Some((g, _)) = batched.filter(|(g, _)| k.gemv && g.tokens == 1 && tokens.len() == 1) {
        return gemv_tile(g, k, w, act, act_row, rows, tokens.start, dst);
    }
    let mut r = rows.start;
    if let Some((g, until)) = batched {
        let mut space = [const { MaybeUninit::uninit() }; GemmKernel::MAX_OUT];
        let buf = zeroed(&mut space, g.rows * g.tokens);
        while r + g.rows <= rows.end {
            let w_rows = &w.data[r * w.row_bytes..];
            let mut t = tokens.start;
            while t + g.tokens <= tokens.end.min(until) {
                (g.run)(
                    w.cols,
                    w_rows,
                    w.row_bytes,
                    &act[t * act_row..],
                    act_row,
                    buf,
                );
                for (j, outs) in buf.chunks_exact(g.rows).enumerate() {
                    // SAFETY: as in `dots` below: (r + i, t + j) lies in this task's tile for
                    // every i < g.rows.
                    unsafe { dst.write_run((t + j) * w.rows + r, outs) };
                }
                t += g.tokens;
            }
            dots(k, w, act, act_row, r..r + g.rows, t..tokens.end, dst);
            r += g.rows;
        }
    }
    dots(k, w, act, act_row, r..rows.end, tokens, dst);
}

/// One token through a multi-row gemv (`gemv.rs`): the rows cut into `g.rows` equal runs read
/// side by side, each front to back, so the weights stream in as `g.rows` sequential streams;
/// the rows left over one `vec_dot` each.
#[allow(clippy::too_many_arguments)]
fn gemv_tile(
    g: GemmKernel,
    k: &Dots,
    w: &WeightMatrix,
    act: &[u8],
    act_row: usize,
    rows: std::ops::Range<usize>,
    t: usize,
    dst: &SharedOut,
) {
    let run = rows.len() / g.rows;
    let a = &act[t * act_row..(t + 1) * act_row];
    let mut space = [const { MaybeUninit::uninit() }; GemmKernel::MAX_OUT];
    let buf = zeroed(&mut space, g.rows);
    for r in rows.start..rows.start + run {
        (g.run)(
            w.cols,
            &w.data[r * w.row_bytes..],
            run * w.row_bytes,
            a,
            act_row,
            buf,
        );
        for (i, &v) in buf.iter().enumerate() {
            // SAFETY: as in `dots`: row r + i * run < rows.end lies in this task's tile.
            unsafe { dst.write(t * w.rows + r + i * run, v) };
        }
    }
    let rest = rows.start + run * g.rows..rows.end;
    dots(k, w, act, act_row, rest, t..t + 1, dst);
}

/// One `vec_dot` per (row, token) pair: weight rows outermost, so each row is read once while
/// the tokens' activations stay in cache.
fn dots(
    k: &Dots,
    w: &WeightMatrix,
    act: &[u8],
    act_row: usize,
    rows: std::ops::Range<usize>,
    tokens: std::ops::Range<usize>,
    dst: &SharedOut,
) {
    for r in rows {
        let w_row = &w.data[r * w.row_bytes..(r + 1) * w.row_bytes];
        for t in tokens.clone() {
            let a_row = &act[t * act_row..(t + 1) * act_row];
            let dot = if t < k.tail_from { k.head } else { k.tail };
            let v = dot(w.cols, w_row, a_row);
            // SAFETY: tiles partition the (row, token) pairs, so index t * rows + r is written
            // by exactly one task, and it is < n_tokens * rows = out.len() (checked above).
            unsafe { dst.write(t * w.rows + r, v) };
        }
    }
}

/// How the output is cut into tasks: row chunks (about four per thread, for balance) times
/// token chunks of about [`Tiles::TOKENS`].
struct Tiles {
    rows: usize,
    tokens: usize,
    row_chunk: usize,
    row_chunks: usize,
    tok_chunk: usize,
}

impl Tiles {
    const TOKENS: usize = 16;

    /// Row chunks are a multiple of `row_align` rows and token chunks of `tok_align` tokens (a
    /// batched kernel's tile), except the last.
    fn new(rows: usize, tokens: usize, threads: usize, row_align: usize, tok_align: usize) -> Self {
        let wanted = if threads <= 1 { 1 } else { 4 * threads };
        let row_chunk = rows
            .div_ceil(wanted)
            .next_multiple_of(row_align.max(1))
            .max(1);
        Tiles {
            rows,
            tokens,
            row_chunk,
            row_chunks: rows.div_ceil(row_chunk),
            tok_chunk: Self::TOKENS.next_multiple_of(tok_align.max(1)),
        }
    }

    /// One token through a multi-row gemv: one row chunk per thread, as ggml cuts a one-token
    /// `mul_mat` (`nchunk0 = nth`), so each thread streams `row_align` long runs (each run's
    /// start costs the hardware prefetchers a few misses; measured slower with 4 chunks a thread).
    fn per_thread(rows: usize, threads: usize, row_align: usize) -> Self {
        let row_chunk = rows
            .div_ceil(threads.max(1))
            .next_multiple_of(row_align.max(1))
            .max(1);
        Tiles {
            rows,
            tokens: 1,
            row_chunk,
            row_chunks: rows.div_ceil(row_chunk),
            tok_chunk: Self::TOKENS,
        }
    }

    fn count(&self) -> usize {
        self.row_chunks * self.tokens.div_ceil(self.tok_chunk)
    }

    fn get(&self, i: usize) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
        let (rc, tc) = (i % self.row_chunks, i / self.row_chunks);
        let r0 = rc * self.row_chunk;
        let t0 = tc * self.tok_chunk;
        (
            r0..(r0 + self.row_chunk).min(self.rows),
            t0..(t0 + self.tok_chunk).min(self.tokens),
        )
    }
}

/// The output buffer shared by the tasks of one matmul, each writing a disjoint set of indices.
struct SharedOut {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: `SharedOut` is only written through `write`, whose callers guarantee that no index is
// written by two threads; it lives no longer than the `&mut [f32]` it was made from (the
// executor returns before `matmul_with` does).
unsafe impl Sync for SharedOut {}

impl SharedOut {
    fn new(out: &mut [f32]) -> Self {
        SharedOut {
            ptr: out.as_mut_ptr(),
            len: out.len(),
        }
    }

    /// # Safety
    /// `i < len`, and no other thread reads or writes index `i` during this matmul.
    unsafe fn write(&self, i: usize, v: f32) {
        debug_assert!(i < self.len);
        // SAFETY: in bounds and unaliased, per this function's contract.
        unsafe { self.ptr.add(i).write(v) }
    }

    /// Writes `v` to indices `i..i + v.len()`; the tile widths in use are copied as whole
    /// fixed-size runs (a few vector moves instead of a loop of scalar stores).
    ///
    /// # Safety
    /// As [`SharedOut::write`] for each of those indices.
    unsafe fn write_run(&self, i: usize, v: &[f32]) {
        debug_assert!(i + v.len() <= self.len);
        /// # Safety
        /// `dst` is valid for `N` writes.
        unsafe fn copy<const N: usize>(v: &[f32], dst: *mut f32) {
            let v: &[f32; N] = v.try_into().unwrap();
            // SAFETY: per this function's contract; `[f32; N]` has f32's alignment.
            unsafe { dst.cast::<[f32; N]>().write(*v) }
        }
        // SAFETY: in bounds and unaliased, per this function's contract.
        unsafe {
            let dst = self.ptr.add(i);
            match v.len() {
                4 => copy::<4>(v, dst),
                6 => copy::<6>(v, dst),
                8 => copy::<8>(v, dst),
                16 => copy::<16>(v, dst),
                _ => dst.copy_from_nonoverlapping(v.as_ptr(), v.len()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_cover_every_pair_once() {
        for (rows, tokens, threads, align) in [
            (1, 1, 1, 1),
            (7, 1, 3, 1),
            (100, 37, 2, 1),
            (5, 40, 8, 1),
            (64, 16, 4, 1),
            (102, 37, 2, 4),
            (3, 9, 2, 4),
            (576, 512, 2, 4),
        ] {
            let t = Tiles::new(rows, tokens, threads, align, align + 2);
            let mut seen = vec![0u8; rows * tokens];
            for i in 0..t.count() {
                let (rr, tr) = t.get(i);
                for r in rr {
                    for k in tr.clone() {
                        seen[k * rows + r] += 1;
                    }
                }
            }
            assert!(seen.iter().all(|&c| c == 1), "{rows}×{tokens} on {threads}");
            for i in 0..t.count() {
                let (rr, tr) = t.get(i);
                assert!(rr.start % align == 0, "{rows} rows aligned to {align}");
                assert!(
                    tr.start % (align + 2) == 0,
                    "{tokens} tokens aligned to {}",
                    align + 2
                );
            }
        }
    }

    #[test]
    fn scoped_threads_run_each_task_once() {
        let hits: Vec<AtomicUsize> = (0..50).map(|_| AtomicUsize::new(0)).collect();
        ScopedThreads::new(3).run(50, &|i| {
            hits[i].fetch_add(1, Ordering::Relaxed);
        });
        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
        ScopedThreads::new(0).run(0, &|_| panic!("no tasks"));
    }

    /// F16 activations through ggml_compat round exactly as IEEE round-to-nearest-even (what
    /// F16C and `half` do) for every non-NaN float: normals, f16 subnormals, halfway cases,
    /// overflow. NaN stays NaN with its sign.
    #[test]
    fn f16_activations_round_like_f16c() {
        let mut x = Vec::new();
        let mut bits = 0u32;
        for _ in 0..200_000 {
            bits = bits.wrapping_add(2_654_435_761);
            x.push(f32::from_bits(bits));
        }
        // Halfway between f16 neighbours (normal and subnormal), and the overflow edge.
        x.extend([
            f32::from_bits(0x3f80_1000),
            f32::from_bits(0x3f80_3000),
            2f32.powi(-25),
            3.0 * 2f32.powi(-25),
            65519.0,
            65520.0,
            -0.0,
            f32::NAN,
            -f32::NAN,
        ]);
        let mut out = vec![0u8; 2 * x.len()];
        quantize_activations(GgmlType::F16, &x, x.len(), &mut out).unwrap();
        for (v, b) in x.iter().zip(out.chunks_exact(2)) {
            let got = half::f16::from_le_bytes([b[0], b[1]]);
            if v.is_nan() {
                assert!(got.is_nan() && got.is_sign_negative() == v.is_sign_negative());
            } else {
                assert_eq!(got.to_bits(), half::f16::from_f32(*v).to_bits(), "{v:e}");
            }
        }
    }
}
