//! The Gemma 3 forward pass, as llama.cpp's `src/models/gemma3.cpp`: embeddings scaled by
//! sqrt(n_embd) (done in `Model::embed`), per-head q/k RMS norms, queries pre-scaled, post-norms
//! after attention and FFN, GELU-gated FFN, sliding-window layers with their own RoPE base.
//! GGUF stores Gemma's `(1 + w)` norm weights with the 1 already added.

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
    let l = &m.weights.layers[il];
    let buf = &mut state.buf;
    m.norm_rows(&buf.x, &l.attn_norm, &mut buf.xn, n);
    dump("attn_norm", il, &buf.xn[..n * c.n_embd]);
    m.project_qkv(l, buf, n)?;
    dump("Qcur", il, &buf.q);
    dump("Kcur", il, &buf.k);
    dump("Vcur", il, &buf.v);
    let q_norm = l
        .q_norm
        .as_deref()
        .expect("gemma3 loader requires attn_q_norm");
    let k_norm = l
        .k_norm
        .as_deref()
        .expect("gemma3 loader requires attn_k_norm");
    m.norm_chunks(&mut buf.q, q_norm);
    m.norm_chunks(&mut buf.k, k_norm);
    dump("Qcur_normed", il, &buf.q);
    dump("Kcur_normed", il, &buf.k);
    m.rope(il, buf, n, pos0);
    dump("Qrope", il, &buf.q);
    dump("Krope", il, &buf.k);
    buf.q.iter_mut().for_each(|v| *v *= c.attn_scale);
    m.attend(il, l, state, n, 1.0)?;

    // x = x + post_attn_norm(wo · attn)
    let buf = &mut state.buf;
    let post_attn = l
        .post_attn_norm
        .as_deref()
        .expect("gemma3 loader requires post_attention_norm");
    dump("kqv_out", il, &buf.attn);
    dump("attn_out", il, &buf.o);
    m.norm_chunks(&mut buf.o, post_attn);
    dump("attn_post_norm", il, &buf.o);
    ops::add_assign(&mut buf.x, &buf.o);
    dump("sa_out", il, &buf.x);

    // x = x + post_ffn_norm(down · (gelu(gate·xn) * up·xn)), xn = norm(x)
    m.ffn(il, l, buf, n, Gate::Gelu)?;
    let post_ffn = l
        .post_ffn_norm
        .as_deref()
        .expect("gemma3 loader requires post_ffw_norm");
    m.norm_chunks(&mut buf.o, post_ffn);
    dump("ffn_post_norm", il, &buf.o);
    ops::add_assign(&mut buf.x, &buf.o);
    dump("l_out", il, &buf.x);
    Ok(())
}
