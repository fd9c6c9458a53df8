//! The sampler chain (llama.cpp common sampler order: penalties → top-k → top-p → min-p →
//! temperature → dist) on hand-made distributions whose answers are worked out by hand.

use kiln::sample::{Candidate, Sampler, SamplerConfig};
use proptest::prelude::*;

/// Only the chain stage under test is on; temperature 1 leaves logits unchanged.
fn neutral(seed: u32) -> SamplerConfig {
    SamplerConfig {
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        seed,
        ..SamplerConfig::default()
    }
}

fn ids(c: &[Candidate]) -> Vec<u32> {
    c.iter().map(|c| c.id).collect()
}

/// Logits whose softmax is exactly proportional to `probs`.
fn logits_from_probs(probs: &[f32]) -> Vec<f32> {
    probs.iter().map(|p| p.ln()).collect()
}

/// Deterministic pseudo-random logits (an LCG; independent of the sampler's RNG).
fn test_logits(n: usize, salt: u64) -> Vec<f32> {
    let mut s = salt
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 8.0 - 4.0
        })
        .collect()
}

#[test]
fn defaults_are_llama_cpp_defaults() {
    let c = SamplerConfig::default();
    assert_eq!(
        (c.temperature, c.top_k, c.top_p, c.min_p),
        (0.8, 40, 0.95, 0.05)
    );
    assert_eq!(
        (c.repeat_penalty, c.frequency_penalty, c.presence_penalty),
        (1.0, 0.0, 0.0)
    );
    assert_eq!(
        (c.penalty_last_n, c.min_keep, c.seed),
        (64, 0, kiln::sample::DEFAULT_SEED)
    );
    // DEFAULT_SEED means "pick one": the chosen seed is reported and reproducible.
    let a = Sampler::new(c.clone());
    let logits = test_logits(500, 9);
    let mut b = Sampler::new(SamplerConfig {
        seed: a.seed(),
        ..c
    });
    let mut a = a;
    let sa: Vec<u32> = (0..50).map(|_| a.sample(&logits)).collect();
    let sb: Vec<u32> = (0..50).map(|_| b.sample(&logits)).collect();
    assert_eq!(sa, sb);
}

#[test]
fn greedy_picks_argmax_and_lowest_id_on_ties() {
    // Ties go to the lowest id: that is what llama.cpp's greedy sampler (strict `>` scan in
    // vocabulary order) and its temperature<=0 path return for unsorted candidates, and it makes
    // the choice independent of any sort's tie order.
    let mut s = Sampler::new(SamplerConfig::greedy());
    assert_eq!(s.sample(&[0.5, 3.0, -1.0, 3.0, 2.9]), 1);
    assert_eq!(s.sample(&[-2.0, -1.0, -3.0]), 1);
    assert_eq!(s.sample(&[7.0]), 0);
    for salt in 0..20 {
        let l = test_logits(1000, salt);
        let argmax = (0..l.len()).fold(0, |b, i| if l[i] > l[b] { i } else { b });
        assert_eq!(s.sample(&l) as usize, argmax);
    }
    // temperature < 0 is greedy too
    let mut neg = Sampler::new(SamplerConfig {
        temperature: -1.0,
        ..SamplerConfig::default()
    });
    assert_eq!(neg.sample(&[0.0, 1.0, 5.0, 1.0]), 2);
}

#[test]
fn draw_follows_llama_cpp_inverse_transform_with_mt19937() {
    // Two equal candidates in vocabulary order: the draw picks id 1 iff u * 2 > 1, with u the
    // libstdc++ uniform doubles of mt19937(42): 0.7965, 0.1834, 0.7797, 0.5969, 0.4458, 0.0999.
    let mut s = Sampler::new(neutral(42));
    let got: Vec<u32> = (0..6).map(|_| s.sample(&[0.0, 0.0])).collect();
    assert_eq!(got, [1, 0, 1, 1, 0, 0]);
    // A single surviving candidate consumes no randomness (llama.cpp returns before drawing).
    let mut s = Sampler::new(neutral(42));
    assert_eq!(s.sample(&[1.0]), 0);
    assert_eq!(s.sample(&[0.0, 0.0]), 1);
    assert_eq!(s.sample(&[0.0, 0.0]), 0);
}

#[test]
fn same_seed_same_sequence_and_reset_replays_it() {
    let run = |s: &mut Sampler| -> Vec<u32> {
        (0..200)
            .map(|i| {
                let t = s.sample(&test_logits(300, i));
                s.accept(t);
                t
            })
            .collect()
    };
    let cfg = SamplerConfig {
        seed: 1234,
        repeat_penalty: 1.3,
        ..SamplerConfig::default()
    };
    let mut a = Sampler::new(cfg.clone());
    let mut b = Sampler::new(cfg);
    let first = run(&mut a);
    assert_eq!(first, run(&mut b));
    a.reset();
    assert_eq!(
        a.count_in_window(first[199]),
        0,
        "reset clears the penalty window"
    );
    assert_eq!(
        run(&mut a),
        first,
        "reset with a fixed seed replays the sequence"
    );
}

#[test]
fn different_seeds_differ() {
    let logits = vec![0.0f32; 1000]; // uniform: every draw is pure RNG
    let mut a = Sampler::new(neutral(1));
    let mut b = Sampler::new(neutral(2));
    let sa: Vec<u32> = (0..100).map(|_| a.sample(&logits)).collect();
    let sb: Vec<u32> = (0..100).map(|_| b.sample(&logits)).collect();
    assert_ne!(sa, sb);
    let same = sa.iter().zip(&sb).filter(|(x, y)| x == y).count();
    assert!(same < 10, "{same} of 100 draws coincide");
}

#[test]
fn top_k_one_equals_greedy() {
    let mut greedy = Sampler::new(SamplerConfig::greedy());
    for seed in 0..10 {
        let mut k1 = Sampler::new(SamplerConfig {
            top_k: 1,
            temperature: 1.5,
            seed,
            ..SamplerConfig::default()
        });
        for salt in 0..10 {
            let l = test_logits(777, salt * 31 + u64::from(seed));
            assert_eq!(k1.sample(&l), greedy.sample(&l));
        }
    }
}

#[test]
fn top_k_keeps_the_k_largest_sorted() {
    let mut s = Sampler::new(SamplerConfig {
        top_k: 3,
        ..neutral(0)
    });
    let kept = s.filter(&[0.1, 5.0, -2.0, 4.0, 4.5, 0.0]);
    assert_eq!(ids(kept), [1, 4, 3]);
    // k larger than the vocabulary keeps everything, sorted
    let mut s = Sampler::new(SamplerConfig {
        top_k: 100,
        ..neutral(0)
    });
    assert_eq!(ids(s.filter(&[1.0, 3.0, 2.0])), [1, 2, 0]);
}

#[test]
fn top_p_prunes_exactly_the_right_candidates() {
    // id:    0     1     2     3
    // p:   0.30  0.05  0.15  0.50   → sorted 3 (0.5), 0 (0.8), 2 (0.95), 1 (1.0)
    let logits = logits_from_probs(&[0.30, 0.05, 0.15, 0.50]);
    let kept = |top_p: f32, min_keep: usize| {
        let mut s = Sampler::new(SamplerConfig {
            top_p,
            min_keep,
            ..neutral(0)
        });
        ids(s.filter(&logits))
    };
    assert_eq!(kept(0.45, 0), [3]);
    assert_eq!(kept(0.75, 0), [3, 0]);
    assert_eq!(kept(0.90, 0), [3, 0, 2]);
    assert_eq!(kept(0.99, 0), [3, 0, 2, 1]);
    assert_eq!(kept(0.45, 3), [3, 0, 2], "min_keep wins over top_p");
    assert_eq!(
        kept(1.0, 0),
        [0, 1, 2, 3],
        "top_p = 1 is off: vocabulary order untouched"
    );
    // probabilities are attached to the kept candidates
    let mut s = Sampler::new(SamplerConfig {
        top_p: 0.75,
        ..neutral(0)
    });
    let c = s.filter(&logits);
    assert!(
        (c[0].p - 0.5).abs() < 1e-6 && (c[1].p - 0.3).abs() < 1e-6,
        "{c:?}"
    );
}

#[test]
fn top_p_on_a_large_vocabulary_sorts_past_the_first_256() {
    // 2000 equal logits: top_p 0.5 needs 1000 of them, beyond llama.cpp's first 256-wide sort.
    let logits = vec![1.0f32; 2000];
    let mut s = Sampler::new(SamplerConfig {
        top_p: 0.5,
        ..neutral(0)
    });
    let kept = s.filter(&logits);
    assert!((999..=1001).contains(&kept.len()), "{}", kept.len());
    assert!(
        kept.windows(2).all(|w| w[0].id < w[1].id),
        "ties sorted by id"
    );
}

#[test]
fn min_p_prunes_exactly_the_right_candidates() {
    // p = 0.40 0.06 0.30 0.04 0.20 ; min_p 0.125 → threshold 0.05 keeps 0.06, drops 0.04
    let logits = logits_from_probs(&[0.40, 0.06, 0.30, 0.04, 0.20]);
    let mut s = Sampler::new(SamplerConfig {
        min_p: 0.125,
        ..neutral(0)
    });
    assert_eq!(
        ids(s.filter(&logits)),
        [0, 1, 2, 4],
        "unsorted path keeps vocabulary order"
    );
    let mut s = Sampler::new(SamplerConfig {
        min_p: 0.2,
        ..neutral(0)
    });
    assert_eq!(ids(s.filter(&logits)), [0, 2, 4], "threshold 0.08");
    // after top-k the array is sorted and min-p takes llama.cpp's sorted path
    let mut s = Sampler::new(SamplerConfig {
        min_p: 0.2,
        top_k: 5,
        ..neutral(0)
    });
    assert_eq!(ids(s.filter(&logits)), [0, 2, 4]);
    let mut s = Sampler::new(SamplerConfig {
        min_p: 0.9,
        min_keep: 2,
        ..neutral(0)
    });
    assert_eq!(
        ids(s.filter(&logits)),
        [0, 2],
        "min_keep falls back to the sorted prefix"
    );
}

#[test]
fn penalties_change_the_right_logits_by_the_right_amounts() {
    let cfg = SamplerConfig {
        repeat_penalty: 1.5,
        frequency_penalty: 0.25,
        presence_penalty: 0.5,
        penalty_last_n: 3,
        ..neutral(0)
    };
    let mut s = Sampler::new(cfg);
    for t in [0, 1, 1, 2] {
        s.accept(t);
    }
    // window = last 3 = [1, 1, 2]; token 0 has left it
    assert_eq!(
        (
            s.count_in_window(0),
            s.count_in_window(1),
            s.count_in_window(2)
        ),
        (0, 2, 1)
    );
    let out = s.filter(&[2.0, 3.0, -1.0, 4.0]).to_vec();
    let logit = |id: u32| out.iter().find(|c| c.id == id).unwrap().logit;
    assert_eq!(logit(0), 2.0, "outside the window: untouched");
    assert_eq!(
        logit(1),
        3.0 / 1.5 - (2.0 * 0.25 + 0.5),
        "positive: divided, then 2 x freq + presence"
    );
    assert_eq!(
        logit(2),
        -1.5 - (0.25 + 0.5),
        "non-positive (-1.0): multiplied by 1.5, then freq + presence"
    );
    assert_eq!(logit(3), 4.0, "never seen: untouched");
    // token ids beyond this vocabulary are ignored, not a panic
    s.accept(1_000_000);
    s.filter(&[0.0, 1.0]);
    // penalty_last_n = 0 disables the window entirely
    let mut off = Sampler::new(SamplerConfig {
        penalty_last_n: 0,
        repeat_penalty: 2.0,
        ..neutral(0)
    });
    off.accept(0);
    assert_eq!(off.filter(&[2.0, 1.0])[0].logit, 2.0);
}

#[test]
fn repeat_penalty_steers_greedy_away_from_a_repeated_token() {
    let mut s = Sampler::new(SamplerConfig {
        repeat_penalty: 1.3,
        ..SamplerConfig::greedy()
    });
    let logits = [1.0, 1.2, 0.5];
    assert_eq!(s.sample(&logits), 1);
    s.accept(1);
    assert_eq!(s.sample(&logits), 0, "1.2 / 1.3 < 1.0");
}

#[test]
fn temperature_divides_logits_and_tends_to_greedy() {
    let mut s = Sampler::new(SamplerConfig {
        temperature: 0.5,
        ..neutral(0)
    });
    let out: Vec<f32> = s
        .filter(&[1.0, -2.0, 0.25])
        .iter()
        .map(|c| c.logit)
        .collect();
    assert_eq!(out, [2.0, -4.0, 0.5]);
    // As temperature → 0 the draw concentrates on the argmax, for every seed.
    let logits = [0.3, 1.0, 0.9, -5.0, 0.95];
    for seed in 0..300 {
        let mut cold = Sampler::new(SamplerConfig {
            temperature: 1e-3,
            ..neutral(seed)
        });
        assert_eq!(cold.sample(&logits), 1, "seed {seed}");
    }
    // …while at temperature 1 the runner-up is drawn too.
    let mut warm = Sampler::new(neutral(7));
    assert!((0..300).any(|_| warm.sample(&logits) != 1));
}

#[test]
fn nan_and_inf_logits_do_not_panic() {
    let nan = f32::NAN;
    let inf = f32::INFINITY;
    let configs = [
        SamplerConfig::default(),
        SamplerConfig::greedy(),
        neutral(3),
        SamplerConfig {
            repeat_penalty: 1.2,
            frequency_penalty: 0.5,
            seed: 5,
            ..SamplerConfig::default()
        },
    ];
    for cfg in configs {
        let mut s = Sampler::new(cfg);
        s.accept(1);
        s.accept(2);
        // NaN is a banned token: never drawn while a finite one exists.
        for _ in 0..50 {
            let t = s.sample(&[nan, 0.0, nan, 0.5]);
            assert!(t == 1 || t == 3, "{t}");
        }
        // +inf takes all the mass.
        assert_eq!(s.sample(&[0.0, 1.0, inf, 3.0]), 2);
        // -inf tokens are never drawn.
        for _ in 0..50 {
            assert_ne!(s.sample(&[-inf, 0.0, -inf, 0.1]) % 2, 0);
        }
        // Degenerate rows still give an in-range id.
        assert!(s.sample(&[nan, nan, nan]) < 3);
        assert!(s.sample(&[-inf, -inf]) < 2);
        assert!(s.sample(&[inf, inf, -inf]) < 2);
        assert!(s.sample(&[f32::MAX, -f32::MAX, f32::MAX]) != 1);
    }
}

/// Independent f64 reference of which ids top-k → top-p → min-p may leave, with a little slack
/// at the thresholds so f32 rounding in the sampler cannot make a correct pick look wrong.
fn allowed(logits: &[f32], top_k: i32, top_p: f32, min_p: f32) -> Vec<u32> {
    let mut order: Vec<u32> = (0..logits.len() as u32).collect();
    order.sort_by(|&a, &b| {
        logits[b as usize]
            .total_cmp(&logits[a as usize])
            .then(a.cmp(&b))
    });
    if top_k > 0 {
        order.truncate(top_k as usize);
    }
    if top_p < 1.0 {
        let max = f64::from(logits[order[0] as usize]);
        let w: Vec<f64> = order
            .iter()
            .map(|&i| (f64::from(logits[i as usize]) - max).exp())
            .collect();
        let sum: f64 = w.iter().sum();
        let mut cum = 0.0;
        let mut keep = order.len();
        for (i, wi) in w.iter().enumerate() {
            cum += wi / sum;
            if cum >= f64::from(top_p) + 1e-4 {
                keep = i + 1;
                break;
            }
        }
        order.truncate(keep);
    }
    if min_p > 0.0 {
        let max = f64::from(logits[order[0] as usize]);
        let threshold = max + f64::from(min_p).ln() - 1e-4;
        order.retain(|&i| f64::from(logits[i as usize]) >= threshold);
    }
    order
}

proptest! {
    #[test]
    fn sampled_ids_are_always_allowed_by_top_k_top_p_min_p(
        logits in prop::collection::vec(-20.0f32..20.0, 1..300),
        top_k in -1i32..60,
        top_p in 0.05f32..1.2,
        min_p in 0.0f32..0.6,
        temperature in 0.05f32..3.0,
        seed in 0u32..1000,
    ) {
        let mut s = Sampler::new(SamplerConfig { top_k, top_p, min_p, temperature, seed, ..SamplerConfig::default() });
        let ok = allowed(&logits, top_k, top_p, min_p);
        for _ in 0..8 {
            let t = s.sample(&logits);
            prop_assert!(ok.contains(&t), "sampled {} not in {:?}", t, ok);
        }
    }
}
