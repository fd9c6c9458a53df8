//! Diagnostic (not committed): GPTQ held-out error on layer L of the F16 reference.
use ggml_compat::GgmlType;
use kiln::calib::gptq::{self, GptqOptions};
use kiln::calib::hessian::Hessian;
use kiln::convert::quantize::quantize_rows;
use kiln::model::Model;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

fn hessians(model: &Model, text: &str, chunks: usize, layer: usize) -> HashMap<String, Hessian> {
    let tok = kiln::tokenizer::Tokenizer::from_gguf(&model.file).unwrap();
    let ch = kiln::calib::run::chunks(&tok, text, "t", 512, chunks).unwrap();
    let hs: Arc<Mutex<HashMap<String, Hessian>>> = Default::default();
    let sink = hs.clone();
    let prefix = format!("blk.{layer}.");
    model.set_observer(Some(Box::new(move |name, x, n| {
        if !name.starts_with(&prefix) {
            return;
        }
        let cols = x.len() / n;
        let mut m = sink.lock().unwrap();
        m.entry(name.to_string())
            .or_insert_with(|| Hessian::new(cols))
            .add(x);
    })));
    let mut st = model.new_state(512);
    for c in &ch {
        model.begin(&mut st, c).unwrap();
        for il in 0..=layer {
            model.forward_layer(&mut st, il).unwrap();
        }
    }
    model.set_observer(None);
    let m = std::mem::take(&mut *hs.lock().unwrap());
    m
}

#[test]
#[ignore]
fn heldout() {
    kiln::kernels::init();
    let layer: usize = std::env::var("L")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let damp: f64 = std::env::var("DAMP")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.01);
    let model = Model::load("/work/quality/ref.F16.gguf", 2).unwrap();
    let valid = std::fs::read_to_string("/work/shared/data/wikitext-2-valid.txt").unwrap();
    let test = std::fs::read_to_string("/work/shared/data/wikitext-2-test.txt").unwrap();
    let htr = hessians(&model, &valid, 8, layer);
    let hte = hessians(&model, &test, 4, layer);
    let ty = GgmlType::Q4_0;
    for w in [
        "attn_q",
        "attn_k",
        "attn_v",
        "attn_output",
        "ffn_gate",
        "ffn_up",
        "ffn_down",
    ] {
        let name = format!("blk.{layer}.{w}.weight");
        let l = &model.weights.layers[layer];
        let m = match w {
            "attn_q" => &l.wq,
            "attn_k" => &l.wk,
            "attn_v" => &l.wv,
            "attn_output" => &l.wo,
            "ffn_gate" => &l.w_gate,
            "ffn_up" => &l.w_up,
            _ => &l.w_down,
        };
        let wf = m.to_f32(&model.file);
        let (rows, cols) = (m.rows, m.cols);
        let h = &htr[&name];
        let ht = &hte[&name];
        let imp: Vec<f32> = (0..cols)
            .map(|i| (h.sum[i * cols + i] / h.rows as f64) as f32)
            .collect();
        let deq = |b: &[u8]| {
            let mut o = vec![0f32; rows * cols];
            ggml_compat::quant::dequantize(ty, b, &mut o).unwrap();
            o
        };
        let rtn = deq(&quantize_rows(ty, &wf, cols, rows, None, 2).unwrap());
        let imx = deq(&quantize_rows(ty, &wf, cols, rows, Some(&imp), 2).unwrap());
        let g = deq(&gptq::quantize(
            &wf,
            rows,
            cols,
            h,
            ty,
            &GptqOptions {
                damp,
                ..Default::default()
            },
        )
        .unwrap()
        .bytes);
        let e = |q: &[f32], h: &Hessian| gptq::output_error(&wf, q, cols, h) / h.rows as f64;
        eprintln!("L{layer} {w:12} train rtn {:.3e} imx {:.3e} gptq {:.3e} | test rtn {:.3e} imx {:.3e} gptq {:.3e}",
            e(&rtn, h), e(&imx, h), e(&g, h), e(&rtn, ht), e(&imx, ht), e(&g, ht));
    }
}
