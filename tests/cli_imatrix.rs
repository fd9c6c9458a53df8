//! `kiln imatrix` end to end on SmolLM2-135M-Instruct Q4_1: the GGUF file llama-imatrix
//! writes (keys, shapes, counts), the legacy `.dat` file, and `--in-file` merging.

mod common;

use kiln::convert::imatrix::{load, read};
use kiln::model::Model;
use std::path::{Path, PathBuf};
use std::process::Command;

fn work_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("kiln-cli-imatrix-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn kiln(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .expect("run kiln");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kiln {args:?} failed:\n{stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn collects_writes_both_formats_and_merges() {
    let model_path = common::model_path("smollm2-135m-instruct-q4_1");
    let model = s(&model_path);
    let text = common::shared_dir().join("data/wikitext-2-valid.txt");
    // a short prefix keeps the run quick in a debug build
    let short = work_dir().join("calib.txt");
    let body = std::fs::read_to_string(&text).unwrap();
    std::fs::write(&short, body.chars().take(4000).collect::<String>()).unwrap();
    let a = work_dir().join("a.gguf");
    let stdout = kiln(&[
        "imatrix",
        "-m",
        model,
        "-f",
        s(&short),
        "-o",
        s(&a),
        "-c",
        "32",
        "--chunks",
        "2",
        "-t",
        "2",
    ]);
    assert!(stdout.contains("Final estimate: PPL = "), "{stdout}");

    let f = read(&a).unwrap();
    assert!(!f.is_legacy && f.has_metadata);
    assert_eq!((f.chunk_count, f.chunk_size), (2, 32));
    assert_eq!(f.datasets, vec![s(&short).to_string()]);
    let m = Model::load(&model_path, 1).unwrap();
    let c = &m.config;
    assert_eq!(f.entries.len(), c.n_layer * 7, "7 matmuls per llama block");
    for (name, e) in &f.entries {
        assert!(
            name.starts_with("blk."),
            "{name} is not collected by llama-imatrix"
        );
        assert_eq!(e.counts, vec![64], "{name}: 2 chunks of 32 rows");
        let cols = if name.ends_with("ffn_down.weight") {
            c.n_ff
        } else if name.ends_with("attn_output.weight") {
            c.n_head * c.head_dim_v
        } else {
            c.n_embd
        };
        assert_eq!(e.sums.len(), cols, "{name}");
        assert!(e.sums.iter().all(|v| v.is_finite() && *v >= 0.0), "{name}");
        assert!(e.sums.iter().any(|v| *v > 0.0), "{name}");
    }
    // q, k and v see the same input
    let q = &f.entries["blk.3.attn_q.weight"].sums;
    assert_eq!(q, &f.entries["blk.3.attn_v.weight"].sums);

    // legacy .dat from the GGUF file alone (no text: merge only)
    let dat = work_dir().join("b.dat");
    kiln(&[
        "imatrix",
        "-m",
        model,
        "--in-file",
        s(&a),
        "-o",
        s(&dat),
        "-c",
        "32",
        "--output-format",
        "dat",
    ]);
    let d = read(&dat).unwrap();
    assert!(d.is_legacy);
    assert_eq!(d.chunk_count, 2);
    assert_eq!(d.datasets, f.datasets);
    assert_eq!(d.entries["blk.0.ffn_up.weight"].counts, vec![2]);
    // the quantizer sees the same weights from both files
    let (wa, wd) = (load(&a).unwrap(), load(&dat).unwrap());
    assert_eq!(wa.data.len(), wd.data.len());
    for (name, v) in &wa.data {
        for (x, y) in v.iter().zip(&wd.data[name]) {
            assert!(
                (x - y).abs() <= 1e-6 * x.abs().max(1e-6),
                "{name}: {x} vs {y}"
            );
        }
    }

    // merging: the .dat back to raw sums; the GGUF twice doubles sums and counts
    let c1 = work_dir().join("c.gguf");
    kiln(&[
        "imatrix",
        "-m",
        model,
        "--in-file",
        s(&dat),
        "-o",
        s(&c1),
        "-c",
        "32",
    ]);
    let back = read(&c1).unwrap();
    assert_eq!(back.entries["blk.0.ffn_up.weight"].counts, vec![64]);
    let c2 = work_dir().join("d.gguf");
    kiln(&[
        "imatrix",
        "-m",
        model,
        "--in-file",
        s(&a),
        "--in-file",
        s(&a),
        "-o",
        s(&c2),
        "-c",
        "32",
    ]);
    let twice = read(&c2).unwrap();
    assert_eq!(twice.chunk_count, 4);
    assert_eq!(twice.datasets.len(), 2);
    for (name, e) in &twice.entries {
        assert_eq!(e.counts, vec![128]);
        let one = &f.entries[name].sums;
        assert!(e.sums.iter().zip(one).all(|(x, y)| *x == y + y), "{name}");
    }
}

#[test]
fn nothing_to_do_and_short_text_are_errors() {
    let model_path = common::model_path("smollm2-135m-instruct-q4_1");
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["imatrix", "-m", s(&model_path), "-o"])
        .arg(work_dir().join("x.gguf"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to do"));

    let tiny = work_dir().join("tiny.txt");
    std::fs::write(&tiny, "Hello world, a short text.").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args([
            "imatrix",
            "-m",
            s(&model_path),
            "-c",
            "64",
            "-f",
            s(&tiny),
            "-o",
        ])
        .arg(work_dir().join("y.gguf"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("at least 128 tokens"), "{err}");
}
