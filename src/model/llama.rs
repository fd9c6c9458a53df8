//! The llama forward pass (Llama 2/3, Mistral, TinyLlama, SmolLM2), as llama.cpp's
//! `src/models/llama.cpp`: pre-norm attention with RoPE and GQA, pre-norm SwiGLU FFN.

use super::{dump, ops, Gate, Model, ModelError, State};

/// Runs layer `il` over the `n` tokens whose residual stream is in `state.buf.x`, at
/// positions `pos0..pos0 + n`.
pub(super) fn layer(
    m: &Model,
    il: usize,
    state: &mut State,
    n: usize,
    pos0: usize,
) -> Result<(), ModelError> {
    let c = &m.config;
    let kq_scale = 1.0 / (c.head_dim as f32).sqrt();
    let l = &m.weights.layers[il];
    let buf = &mut state.buf;
    // attention block: x += wo · attn(rope(wq·xn), rope(wk·xn), wv·xn), xn = norm(x)
    m.norm_rows(&buf.x, &l.attn_norm, &mut buf.xn, n);
    dump("attn_norm", il, &buf.xn[..n * c.n_embd]);
    m.project_qkv(l, buf, n)?;
    dump("Qcur", il, &buf.q);
    dump("Kcur", il, &buf.k);
    dump("Vcur", il, &buf.v);
    m.rope(il, buf, n, pos0);
    dump("Qrope", il, &buf.q);
    dump("Krope", il, &buf.k);
    m.attend(il, l, state, n, kq_scale)?;
    let buf = &mut state.buf;
    dump("kqv_out", il, &buf.attn);
    dump("attn_out", il, &buf.o);
    ops::add_assign(&mut buf.x, &buf.o);
    dump("ffn_inp", il, &buf.x);

    // feed-forward block: x += down · (silu(gate·xn) * up·xn), xn = norm(x)
    m.ffn(il, l, buf, n, Gate::Silu)?;
    ops::add_assign(&mut buf.x, &buf.o);
    dump("l_out", il, &buf.x);
    Ok(())
}
