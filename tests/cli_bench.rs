//! `kiln bench` output: llama-bench's JSON field names and markdown table, on the real model.

mod common;

use std::process::Command;

fn bench(args: &[&str]) -> std::process::Output {
    let model = common::model_path("smollm2-135m-instruct-q4_1");
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("bench")
        .arg("-m")
        .arg(&model)
        .args(args)
        .output()
        .expect("run kiln bench")
}

#[test]
fn json_uses_llama_bench_fields() {
    let out = bench(&["-p", "16", "-n", "4", "-r", "2", "-t", "1", "-o", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    let tests = v.as_array().expect("a list of tests");
    assert_eq!(tests.len(), 2);
    for (t, (p, g)) in tests.iter().zip([(16, 0), (0, 4)]) {
        for field in [
            "model_filename",
            "model_type",
            "model_size",
            "model_n_params",
            "n_threads",
            "avg_ns",
            "stddev_ns",
            "test_time",
        ] {
            assert!(t.get(field).is_some(), "missing {field}");
        }
        assert_eq!(t["n_prompt"], p);
        assert_eq!(t["n_gen"], g);
        assert_eq!(t["n_threads"], 1);
        assert!(t["avg_ts"].as_f64().unwrap() > 0.0);
        assert_eq!(t["samples_ts"].as_array().unwrap().len(), 2);
        assert_eq!(t["samples_ns"].as_array().unwrap().len(), 2);
        // avg_ts is the mean of the per-sample rates, as llama-bench computes it
        let samples: Vec<f64> = t["samples_ts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let mean = samples.iter().sum::<f64>() / samples.len() as f64;
        assert!((mean - t["avg_ts"].as_f64().unwrap()).abs() < 1e-9 * mean);
    }
    assert!(tests[0]["model_size"].as_u64().unwrap() > 90 << 20);
}

#[test]
fn markdown_table_has_one_row_per_test() {
    let out = bench(&["-p", "8", "-n", "2", "-r", "1", "-t", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines[0].contains("| model") && lines[0].contains("t/s"));
    assert!(lines[2].contains("pp8") && lines[3].contains("tg2"));
}

#[test]
fn missing_model_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["bench", "-m", "/no/such.gguf"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/no/such.gguf"), "{err}");
}
