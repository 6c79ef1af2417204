//! Search invariants on a tiny model trained inside the test:
//! beam 1 == greedy; results independent of batch composition and size; reported scores equal
//! the model's log-probability of the output; length bounds hold.
mod common;

use rnmt::batch::{Batch, Example};
use rnmt::config::{BeamStop, DecodeConfig, ModelConfig};
use rnmt::ensemble::Ensemble;
use rnmt::model::Seq2Seq;
use rnmt::optim::{Adam, AdamConfig};
use rnmt::search::{self, Hypothesis};
use tch::nn::VarStore;

struct Fixture {
    model: Seq2Seq,
    _vs: VarStore,
    sources: Vec<Vec<u32>>,
}

fn examples(n: usize, seed: u64) -> Vec<Example> {
    let mut rng = rnmt::rng::Rng::new(seed);
    (0..n)
        .map(|_| {
            let len = 2 + rng.below(8) as usize;
            let src: Vec<u32> = (0..len).map(|_| 4 + rng.below(26) as u32).collect();
            // A learnable mapping: reversed and shifted, so lengths vary with the source.
            let tgt = src.iter().rev().map(|&x| 4 + (x - 4 + 3) % 26).collect();
            Example { src, tgt }
        })
        .collect()
}

/// A model trained for a moment on a learnable toy task (built per test: a second each).
/// The decoder stepped in training too: Bahdanau attention with input feeding, 2 layers.
fn fixture() -> Fixture {
    fixture_with(|c| {
        c.decoder.attention = rnmt::config::AttentionType::Bahdanau;
        c.decoder.input_feeding = true;
        c.decoder.layers = 2;
    })
}

/// The same with the config changed by `edit` before the model is built.
fn fixture_with(edit: impl Fn(&mut ModelConfig)) -> Fixture {
    {
        // Tiny tensors: one thread avoids oversubscribing the cores when tests run in parallel.
        tch::set_num_threads(1);
        tch::manual_seed(11);
        let mut cfg = ModelConfig {
            src_vocab: 30,
            tgt_vocab: 30,
            emb_size: 16,
            ..ModelConfig::default()
        };
        cfg.encoder.hidden = 16;
        cfg.decoder.hidden = 32;
        edit(&mut cfg);
        let vs = VarStore::new(common::device());
        let model = Seq2Seq::new(&vs.root(), &cfg);
        let mut opt = Adam::new(
            &vs,
            AdamConfig {
                lr: 5e-3,
                ..AdamConfig::default()
            },
        );
        let train = examples(64, 1);
        let refs: Vec<&Example> = train.iter().collect();
        let batch = Batch::new(&refs, common::device());
        for _ in 0..60 {
            let out = model.loss(&batch, true, 1.0, 0.0);
            let loss = out.loss / out.tokens as f64;
            opt.backward_step(&loss, 1.0);
        }
        let sources = examples(24, 2).into_iter().map(|e| e.src).collect();
        Fixture {
            model,
            _vs: vs,
            sources,
        }
    }
}

fn decode(beam: usize) -> DecodeConfig {
    DecodeConfig {
        beam,
        n_best: 1,
        ..DecodeConfig::default()
    }
}

fn best(h: &[Vec<Hypothesis>]) -> Vec<Hypothesis> {
    h.iter().map(|v| v[0].clone()).collect()
}

#[test]
fn beam_of_one_is_greedy() {
    let f = &fixture();
    let greedy =
        tch::no_grad(|| search::greedy_search(&f.model, &f.sources, &decode(1), common::device()))
            .unwrap();
    let beam1 =
        tch::no_grad(|| search::beam_search(&f.model, &f.sources, &decode(1), common::device()))
            .unwrap();
    let beam1 = best(&beam1);
    for (i, (g, b)) in greedy.iter().zip(&beam1).enumerate() {
        assert_eq!(g.tokens, b.tokens, "sentence {i}");
        assert_eq!(g.score, b.score, "sentence {i}: scores differ");
    }
    // And the model learned something: outputs vary in length and are not all empty.
    let lens: std::collections::BTreeSet<usize> = greedy.iter().map(|h| h.tokens.len()).collect();
    assert!(lens.len() > 2, "lengths {lens:?}");
}

#[test]
fn results_do_not_depend_on_the_batch() {
    let f = &fixture();
    let patient = DecodeConfig {
        stop: Some(BeamStop::Patient),
        alpha: Some(1.5),
        ..decode(4)
    };
    for (beam, cfg) in [(1, decode(1)), (4, decode(4)), (4, patient)] {
        let together = best(&search::decode(&f.model, &f.sources, &cfg, common::device()).unwrap());
        // Alone, in batches of 5, and in reverse order.
        for (i, s) in f.sources.iter().enumerate() {
            let alone = best(
                &search::decode(&f.model, std::slice::from_ref(s), &cfg, common::device()).unwrap(),
            );
            assert_eq!(
                alone[0].tokens, together[i].tokens,
                "beam {beam}, sentence {i} alone"
            );
            assert!(
                (alone[0].score - together[i].score).abs() < 1e-4,
                "beam {beam}, sentence {i}"
            );
        }
        for (c, chunk) in f.sources.chunks(5).enumerate() {
            let part = best(&search::decode(&f.model, chunk, &cfg, common::device()).unwrap());
            for (j, h) in part.iter().enumerate() {
                assert_eq!(
                    h.tokens,
                    together[c * 5 + j].tokens,
                    "beam {beam}, batch of 5"
                );
            }
        }
        let reversed: Vec<Vec<u32>> = f.sources.iter().rev().cloned().collect();
        let rev = best(&search::decode(&f.model, &reversed, &cfg, common::device()).unwrap());
        for (j, h) in rev.iter().enumerate() {
            assert_eq!(
                h.tokens,
                together[f.sources.len() - 1 - j].tokens,
                "beam {beam}, reversed"
            );
        }
    }
}

/// The patient rule keeps the beam-size best ended hypotheses by normalized score and stops
/// no later than the length bound. (Unlike `finished`, with beam 1 it is not greedy search:
/// an ending at the top does not stop it while a longer hypothesis could still normalize
/// higher.)
#[test]
fn the_patient_rule_ranks_and_bounds() {
    let f = &fixture();
    for alpha in [0.5, 1.0, 2.0] {
        let cfg = DecodeConfig {
            beam: 4,
            n_best: 4,
            alpha: Some(alpha),
            stop: Some(BeamStop::Patient),
            ..DecodeConfig::default()
        };
        let hyps = search::decode(&f.model, &f.sources, &cfg, common::device()).unwrap();
        for (s, hs) in f.sources.iter().zip(&hyps) {
            assert!(!hs.is_empty() && hs.len() <= 4);
            for w in hs.windows(2) {
                assert!(w[0].normalized >= w[1].normalized);
            }
            for h in hs {
                assert!(h.tokens.len() < cfg.max_output_len(s.len()));
                let lp = search::length_penalty(h.tokens.len() + 1, alpha);
                assert!((h.normalized - h.score / lp).abs() < 1e-9);
            }
        }
    }
}

/// What calibration relies on (`rnmt::calibrate`): with the `finished` rule one search with
/// `n_best = beam`, re-ranked for any alpha, gives exactly what decoding with that alpha gives.
#[test]
fn re_ranking_one_search_equals_decoding_with_each_alpha() {
    let f = &fixture();
    let all = DecodeConfig {
        beam: 4,
        n_best: 4,
        stop: Some(BeamStop::Finished),
        ..DecodeConfig::default()
    };
    let pool = search::decode(&f.model, &f.sources, &all, common::device()).unwrap();
    for alpha in [0.0, 0.7, 1.3, 2.5] {
        let one = DecodeConfig {
            n_best: 1,
            alpha: Some(alpha),
            ..all.clone()
        };
        let got = best(&search::decode(&f.model, &f.sources, &one, common::device()).unwrap());
        for (i, (hs, g)) in pool.iter().zip(&got).enumerate() {
            let pick = hs
                .iter()
                .max_by(|a, b| {
                    let n = |h: &Hypothesis| {
                        h.score / search::length_penalty(h.tokens.len() + 1, alpha)
                    };
                    n(a).total_cmp(&n(b)).then(std::cmp::Ordering::Greater)
                })
                .unwrap();
            assert_eq!(pick.tokens, g.tokens, "alpha {alpha}, sentence {i}");
        }
    }
}

#[test]
fn scores_are_the_model_log_probability() {
    scores_match_rescoring(&fixture());
}

/// Without input feeding, `score` (like training) runs the fused decoder; search steps it one
/// token at a time. Both give the same log-probabilities.
#[test]
fn fused_decoder_scores_match_search() {
    scores_match_rescoring(&fixture_with(|c| {
        c.decoder.input_feeding = false;
        c.decoder.attention = rnmt::config::AttentionType::Luong;
        c.decoder.layers = 1;
    }));
}

/// Stopping a sentence once no live hypothesis can enter its n-best list changes nothing:
/// the best of an n-best-1 search (which stops early) is the best of a full n-best-K search
/// (which must wait for K finished hypotheses).
#[test]
fn early_stopping_keeps_the_best_hypothesis() {
    let f = &fixture();
    for alpha in [0.0, 0.6, 1.0] {
        let one = DecodeConfig {
            beam: 4,
            alpha: Some(alpha),
            ..DecodeConfig::default()
        };
        let all = DecodeConfig {
            n_best: 4,
            ..one.clone()
        };
        let a = search::decode(&f.model, &f.sources, &one, common::device()).unwrap();
        let b = search::decode(&f.model, &f.sources, &all, common::device()).unwrap();
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert_eq!(x.len(), 1);
            assert_eq!(x[0].tokens, y[0].tokens, "alpha {alpha}, sentence {i}");
            assert!((x[0].normalized - y[0].normalized).abs() < 1e-9);
        }
    }
}

fn scores_match_rescoring(f: &Fixture) {
    for beam in [1, 3] {
        let cfg = DecodeConfig {
            beam,
            n_best: beam,
            ..DecodeConfig::default()
        };
        let hyps = search::decode(&f.model, &f.sources, &cfg, common::device()).unwrap();
        let mut pairs = Vec::new();
        let mut reported = Vec::new();
        for (s, hs) in f.sources.iter().zip(&hyps) {
            assert!(!hs.is_empty() && hs.len() <= cfg.n_best);
            for w in hs.windows(2) {
                assert!(w[0].normalized >= w[1].normalized, "n-best not sorted");
            }
            for h in hs {
                pairs.push(Example {
                    src: s.clone(),
                    tgt: h.tokens.clone(),
                });
                reported.push(h.score);
            }
        }
        let refs: Vec<&Example> = pairs.iter().collect();
        let rescored: Vec<f32> = Vec::try_from(tch::no_grad(|| {
            f.model.score(&Batch::new(&refs, common::device()))
        }))
        .unwrap();
        for (i, (r, s)) in reported.iter().zip(&rescored).enumerate() {
            assert!(
                (r - *s as f64).abs() < 1e-4,
                "beam {beam}, hyp {i}: reported {r}, rescored {s}"
            );
        }
    }
}

#[test]
fn length_bounds_hold() {
    let f = &fixture();
    let cfg = DecodeConfig {
        beam: 3,
        max_len_ratio: 0.0,
        max_len_offset: 2,
        ..DecodeConfig::default()
    };
    for h in best(&search::decode(&f.model, &f.sources, &cfg, common::device()).unwrap()) {
        // At most 2 tokens counting </s>: at most 1 word.
        assert!(h.tokens.len() <= 1, "{:?}", h.tokens);
    }
    for beam in [3, 1] {
        let cfg = DecodeConfig {
            beam,
            min_len: 12,
            ..DecodeConfig::default()
        };
        for h in best(&search::decode(&f.model, &f.sources, &cfg, common::device()).unwrap()) {
            assert!(h.tokens.len() >= 12, "beam {beam}: {:?}", h.tokens);
        }
    }
}

fn with_attention(beam: usize, n_best: usize) -> DecodeConfig {
    DecodeConfig {
        beam,
        n_best,
        attention: true,
        ..DecodeConfig::default()
    }
}

/// Every hypothesis's attention matrix has one row per output token and `</s>`, one column
/// per source token and `</s>`; each row is a distribution.
#[test]
fn attention_rows_are_distributions_over_the_source() {
    for f in [
        fixture(),
        fixture_with(|c| c.decoder.attention = rnmt::config::AttentionType::Luong),
    ] {
        for (beam, n_best) in [(1, 1), (4, 3)] {
            let hyps = search::decode(
                &f.model,
                &f.sources,
                &with_attention(beam, n_best),
                common::device(),
            )
            .unwrap();
            for (s, hs) in f.sources.iter().zip(&hyps) {
                for h in hs {
                    let m = h.attention.as_ref().expect("attention asked for");
                    assert_eq!(m.len(), h.tokens.len() + 1, "beam {beam}: rows");
                    for row in m {
                        assert_eq!(row.len(), s.len() + 1, "beam {beam}: columns");
                        assert!(row.iter().all(|&w| (0.0..=1.0 + 1e-6).contains(&w)));
                        let sum: f32 = row.iter().sum();
                        assert!((sum - 1.0).abs() < 1e-5, "beam {beam}: row sums to {sum}");
                    }
                }
            }
            // Without asking, nothing is collected, and the hypotheses are the same.
            let plain = DecodeConfig {
                attention: false,
                ..with_attention(beam, n_best)
            };
            let without = search::decode(&f.model, &f.sources, &plain, common::device()).unwrap();
            for (a, b) in hyps.iter().flatten().zip(without.iter().flatten()) {
                assert!(b.attention.is_none());
                assert_eq!((&a.tokens, a.score), (&b.tokens, b.score));
            }
        }
    }
}

/// A sentence's attention does not depend on the other sentences of its batch (padding gets
/// exactly zero weight and is cut off).
#[test]
fn attention_does_not_depend_on_the_batch() {
    let f = &fixture();
    for beam in [1, 4] {
        let cfg = with_attention(beam, 1);
        let together = best(&search::decode(&f.model, &f.sources, &cfg, common::device()).unwrap());
        for (i, s) in f.sources.iter().enumerate() {
            let alone = best(
                &search::decode(&f.model, std::slice::from_ref(s), &cfg, common::device()).unwrap(),
            );
            assert_eq!(alone[0].tokens, together[i].tokens);
            let (a, b) = (
                alone[0].attention.as_ref().unwrap(),
                together[i].attention.as_ref().unwrap(),
            );
            assert_eq!(a.len(), b.len());
            for (ra, rb) in a.iter().zip(b) {
                assert_eq!(ra.len(), rb.len(), "beam {beam}, sentence {i}");
                for (x, y) in ra.iter().zip(rb) {
                    assert!(
                        (x - y).abs() < 1e-5,
                        "beam {beam}, sentence {i}: {x} vs {y}"
                    );
                }
            }
        }
    }
}

#[test]
fn attention_of_a_model_without_attention_is_an_error() {
    let f = fixture_with(|c| c.decoder.attention = rnmt::config::AttentionType::None);
    for beam in [1, 3] {
        let err = search::decode(
            &f.model,
            &f.sources,
            &with_attention(beam, 1),
            common::device(),
        )
        .unwrap_err();
        assert!(matches!(err, rnmt::error::Error::NoAttention), "{err}");
        assert!(err.to_string().contains("no attention"), "{err}");
    }
    // Without asking, it decodes.
    assert!(search::decode(&f.model, &f.sources, &decode(3), common::device()).is_ok());
}

/// The mean of a model's log-probabilities with themselves is exactly the model's: an
/// ensemble of a model with itself gives the same hypotheses with the same scores.
#[test]
fn an_ensemble_of_a_model_with_itself_is_the_model() {
    let f = &fixture();
    let pair = Ensemble::new(vec![&f.model, &f.model]);
    assert_eq!(pair.len(), 2);
    for (beam, n_best) in [(1, 1), (4, 4)] {
        let cfg = with_attention(beam, n_best);
        let single = search::decode(&f.model, &f.sources, &cfg, common::device()).unwrap();
        let double = search::decode(&pair, &f.sources, &cfg, common::device()).unwrap();
        assert_eq!(single, double, "beam {beam}");
    }
}

/// An ensemble of two different models: differs from each member, and its results do not
/// depend on the batch (alone, in batches of 5).
#[test]
fn ensemble_results_do_not_depend_on_the_batch() {
    let a = fixture();
    let b = fixture_with(|c| {
        c.decoder.attention = rnmt::config::AttentionType::Luong;
        c.emb_size = 12;
    });
    let ens = Ensemble::new(vec![&a.model, &b.model]);
    let sources = &a.sources;
    for beam in [1, 4] {
        let cfg = decode(beam);
        let together = best(&search::decode(&ens, sources, &cfg, common::device()).unwrap());
        let only_a = best(&search::decode(&a.model, sources, &cfg, common::device()).unwrap());
        assert!(
            together
                .iter()
                .zip(&only_a)
                .any(|(x, y)| x.score != y.score),
            "beam {beam}: the ensemble scores exactly as its first model"
        );
        for (i, s) in sources.iter().enumerate() {
            let alone = best(
                &search::decode(&ens, std::slice::from_ref(s), &cfg, common::device()).unwrap(),
            );
            assert_eq!(
                alone[0].tokens, together[i].tokens,
                "beam {beam}, sentence {i}"
            );
            assert!((alone[0].score - together[i].score).abs() < 1e-4);
        }
        for (c, chunk) in sources.chunks(5).enumerate() {
            let part = best(&search::decode(&ens, chunk, &cfg, common::device()).unwrap());
            for (j, h) in part.iter().enumerate() {
                assert_eq!(
                    h.tokens,
                    together[c * 5 + j].tokens,
                    "beam {beam}, batch of 5"
                );
            }
        }
    }
}
