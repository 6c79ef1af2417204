//! Model tests: shapes over a grid of configs, padding invariance of the encoder, and a tiny
//! model overfitting a 20-pair corpus.
mod common;

use rnmt::batch::{Batch, Example};
use rnmt::config::{AttentionType, CellType, ModelConfig};
use rnmt::model::Seq2Seq;
use rnmt::optim::{Adam, AdamConfig};
use tch::{nn::VarStore, Kind, Tensor};

fn tiny_config(enc: CellType, dec: CellType, att: AttentionType, feed: bool) -> ModelConfig {
    let mut c = ModelConfig {
        src_vocab: 23,
        tgt_vocab: 19,
        emb_size: 8,
        ..ModelConfig::default()
    };
    c.encoder.cell = enc;
    c.encoder.hidden = 6;
    c.encoder.layers = 2;
    c.decoder.cell = dec;
    c.decoder.hidden = 10;
    c.decoder.layers = 2;
    c.decoder.attention = att;
    c.decoder.input_feeding = feed;
    c
}

/// Tiny tensors: one thread avoids oversubscribing the cores when tests run in parallel.
fn one_thread() {
    tch::set_num_threads(1);
}

fn random_examples(n: usize, seed: u64) -> Vec<Example> {
    let mut rng = rnmt::rng::Rng::new(seed);
    (0..n)
        .map(|_| {
            let ls = 1 + rng.below(7) as usize;
            let lt = 1 + rng.below(7) as usize;
            Example {
                src: (0..ls).map(|_| 4 + rng.below(19) as u32).collect(),
                tgt: (0..lt).map(|_| 4 + rng.below(15) as u32).collect(),
            }
        })
        .collect()
}

#[test]
fn shapes_over_a_grid_of_configs() {
    one_thread();
    let examples = random_examples(5, 1);
    let refs: Vec<&Example> = examples.iter().collect();
    let batch = Batch::new(&refs, common::device());
    let (b, s) = (batch.src.size()[0], batch.src.size()[1]);
    for enc in [CellType::Lstm, CellType::Gru] {
        for dec in [CellType::Gru, CellType::Lstm] {
            for att in [
                AttentionType::None,
                AttentionType::Bahdanau,
                AttentionType::Luong,
            ] {
                for feed in [true, false] {
                    for layers in [1, 3] {
                        let mut cfg = tiny_config(enc, dec, att, feed);
                        cfg.encoder.layers = layers;
                        cfg.decoder.layers = layers;
                        let vs = VarStore::new(common::device());
                        let m = Seq2Seq::new(&vs.root(), &cfg);
                        let what = format!("{enc:?}/{dec:?}/{att:?}/feed {feed}/layers {layers}");
                        let numel: usize = vs.variables().values().map(|t| t.numel()).sum();
                        assert_eq!(cfg.parameter_count(), numel as u64, "{what}");
                        let out = m.encode(&batch.src, &batch.src_lens, true);
                        assert_eq!(out.states.size(), vec![b, s, 12], "{what}");
                        assert_eq!(out.final_state.size(), vec![b, 12], "{what}");
                        assert_eq!(out.mask.size(), vec![b, s], "{what}");
                        let state = m.initial_state(&out);
                        assert_eq!(state.hidden.len(), layers, "{what}");
                        assert_eq!(
                            state.cell.len(),
                            if dec == CellType::Lstm { layers } else { 0 }
                        );
                        let prev = Tensor::full([b], 2, (Kind::Int64, common::device()));
                        let (lp, next) = m.step(&prev, &state, &out);
                        assert_eq!(lp.size(), vec![b, 19], "{what}");
                        assert_eq!(next.att_vector.size(), vec![b, 10], "{what}");
                        // log-probabilities: each row sums to one.
                        let sums = lp.exp().sum_dim_intlist(1, false, Kind::Float);
                        assert!((sums - 1.0).abs().max().double_value(&[]) < 1e-5, "{what}");
                        let loss = m.loss(&batch, true, 1.0, 0.1);
                        assert_eq!(loss.tokens, batch.tgt_tokens as i64, "{what}");
                        assert!(loss.loss.double_value(&[]).is_finite(), "{what}");
                        assert_eq!(m.score(&batch).size(), vec![b], "{what}");
                    }
                }
            }
        }
    }
}

#[test]
fn tied_embeddings_share_the_matrix() {
    one_thread();
    let mut cfg = tiny_config(CellType::Lstm, CellType::Gru, AttentionType::Bahdanau, true);
    cfg.tie_target_embeddings = true;
    assert!(
        cfg.validate().is_err(),
        "emb 8 != hidden 10 must be rejected"
    );
    cfg.emb_size = 10;
    cfg.validate().unwrap();
    let vs = VarStore::new(common::device());
    let _m = Seq2Seq::new(&vs.root(), &cfg);
    let numel: usize = vs.variables().values().map(|t| t.numel()).sum();
    assert_eq!(cfg.parameter_count(), numel as u64);
    let names: Vec<String> = vs.variables().into_keys().collect();
    assert!(
        !names.iter().any(|n| n == "decoder.output.weight"),
        "{names:?}"
    );
    assert!(names.iter().any(|n| n == "decoder.output.bias"));
}

/// A sentence encoded alone and inside a padded batch gives the same states and final states.
#[test]
fn padding_does_not_leak_into_the_encoder() {
    one_thread();
    tch::manual_seed(5);
    for cell in [CellType::Lstm, CellType::Gru] {
        let cfg = tiny_config(cell, CellType::Gru, AttentionType::Bahdanau, true);
        let vs = VarStore::new(common::device());
        let m = Seq2Seq::new(&vs.root(), &cfg);
        let examples = random_examples(9, 2);
        let refs: Vec<&Example> = examples.iter().collect();
        let batch = Batch::new(&refs, common::device());
        let together = m.encode(&batch.src, &batch.src_lens, false);
        for (i, e) in examples.iter().enumerate() {
            let alone_batch = Batch::new(&[e], common::device());
            let alone = m.encode(&alone_batch.src, &alone_batch.src_lens, false);
            let len = alone_batch.src_lens[0];
            let a = alone.states.get(0);
            let t = together.states.get(i as i64).narrow(0, 0, len);
            let d = (a - t).abs().max().double_value(&[]);
            assert!(d < 1e-5, "{cell:?} sentence {i}: states differ by {d}");
            let d = (alone.final_state.get(0) - together.final_state.get(i as i64))
                .abs()
                .max()
                .double_value(&[]);
            assert!(
                d < 1e-5,
                "{cell:?} sentence {i}: final states differ by {d}"
            );
            // Padding positions are zero and masked out.
            let width = together.states.size()[1];
            if len < width {
                let pad = together.states.get(i as i64).narrow(0, len, width - len);
                assert_eq!(pad.abs().max().double_value(&[]), 0.0);
            }
        }
    }
}

/// A tiny model memorizes 20 pairs: the loss goes to near zero.
#[test]
fn tiny_model_overfits_twenty_pairs() {
    one_thread();
    tch::manual_seed(0);
    let mut cfg = tiny_config(CellType::Lstm, CellType::Gru, AttentionType::Bahdanau, true);
    cfg.emb_size = 32;
    cfg.encoder.hidden = 32;
    cfg.decoder.hidden = 64;
    cfg.emb_dropout = 0.0;
    cfg.encoder.dropout = 0.0;
    cfg.decoder.dropout = 0.0;
    let vs = VarStore::new(common::device());
    let m = Seq2Seq::new(&vs.root(), &cfg);
    let mut opt = Adam::new(
        &vs,
        AdamConfig {
            lr: 3e-3,
            ..AdamConfig::default()
        },
    );
    let examples = random_examples(20, 3);
    let refs: Vec<&Example> = examples.iter().collect();
    let batch = Batch::new(&refs, common::device());
    let mut first = None;
    let mut last = f64::MAX;
    for _ in 0..300 {
        let out = m.loss(&batch, true, 1.0, 0.0);
        let loss = out.loss / out.tokens as f64;
        last = loss.double_value(&[]);
        first.get_or_insert(last);
        opt.backward_step(&loss, 1.0);
    }
    let first = first.unwrap();
    assert!(first > 2.0, "initial loss {first} should be near ln(19)");
    assert!(last < 0.02, "loss after 300 updates: {last}");
}

/// The per-step path used for scheduled sampling is the same computation as the precomputed
/// teacher-forcing path when it always feeds the gold token, and differs when it feeds the
/// model's own predictions.
#[test]
fn scheduled_sampling_shares_the_step_function() {
    one_thread();
    tch::manual_seed(9);
    let cfg = tiny_config(CellType::Lstm, CellType::Gru, AttentionType::Bahdanau, true);
    let vs = VarStore::new(common::device());
    let m = Seq2Seq::new(&vs.root(), &cfg);
    let examples = random_examples(12, 4);
    let refs: Vec<&Example> = examples.iter().collect();
    let batch = Batch::new(&refs, common::device());
    let gold = m.loss(&batch, false, 1.0, 0.0).loss.double_value(&[]);
    // A ratio just below 1 takes the per-step path but (with probability 1 - 1e-7 per
    // token) still feeds the gold tokens.
    let stepwise = m
        .loss(&batch, false, 1.0 - 1e-7, 0.0)
        .loss
        .double_value(&[]);
    assert!(
        (gold - stepwise).abs() < 1e-4 * gold.abs(),
        "{gold} vs {stepwise}"
    );
    let own = m.loss(&batch, false, 0.0, 0.0).loss.double_value(&[]);
    assert!(
        own.is_finite() && (own - gold).abs() > 1e-3,
        "{own} vs {gold}"
    );
}

/// Without input feeding, training runs the decoder as one fused libtorch RNN call with the
/// attention for all steps at once; it is the same function as the per-step decoder that
/// search uses, for every cell and attention.
#[test]
fn fused_decoder_equals_the_step_function() {
    one_thread();
    let examples = random_examples(12, 5);
    let refs: Vec<&Example> = examples.iter().collect();
    let batch = Batch::new(&refs, common::device());
    for dec in [CellType::Gru, CellType::Lstm] {
        for att in [
            AttentionType::None,
            AttentionType::Bahdanau,
            AttentionType::Luong,
        ] {
            tch::manual_seed(21);
            let mut cfg = tiny_config(CellType::Lstm, dec, att, false);
            cfg.decoder.layers = 3;
            let vs = VarStore::new(common::device());
            let m = Seq2Seq::new(&vs.root(), &cfg);
            let fused = m.loss(&batch, false, 1.0, 0.1).loss.double_value(&[]);
            // Below 1 the per-step path runs (feeding gold tokens with probability 1 - 1e-7).
            let stepwise = m
                .loss(&batch, false, 1.0 - 1e-7, 0.1)
                .loss
                .double_value(&[]);
            assert!(
                (fused - stepwise).abs() < 1e-5 * fused.abs(),
                "{dec:?} {att:?}: fused {fused} vs stepwise {stepwise}"
            );
            // And the gradients flow through the fused call into every parameter.
            let loss = m.loss(&batch, true, 1.0, 0.1).loss;
            loss.backward();
            for (name, t) in vs.variables() {
                let g = t.grad();
                assert!(g.defined(), "{dec:?} {att:?}: no gradient for {name}");
            }
        }
    }
}

/// On CUDA with cuDNN the encoder's and the fused decoder's RNN weights are views of one flat
/// cuDNN buffer each (no per-call copy, no libtorch warning), and they stay so through
/// optimizer updates and a checkpoint load, with the parameter names of a CPU-built model.
/// On the CPU nothing is flattened. (`RNMT_TEST_DEVICE=cuda` runs the CUDA half.)
#[test]
fn rnn_weights_are_flat_on_cuda_and_keep_their_names() {
    one_thread();
    let device = common::device();
    let cudnn = device.is_cuda() && tch::Cuda::cudnn_is_available();
    let examples = random_examples(8, 6);
    let refs: Vec<&Example> = examples.iter().collect();
    let batch = Batch::new(&refs, device);
    let dir = tempfile::tempdir().unwrap();
    for feed in [false, true] {
        for (enc, dec) in [
            (CellType::Lstm, CellType::Gru),
            (CellType::Gru, CellType::Lstm),
        ] {
            tch::manual_seed(4);
            let cfg = tiny_config(enc, dec, AttentionType::Luong, feed);
            let mut vs = VarStore::new(device);
            let m = Seq2Seq::new(&vs.root(), &cfg);
            let expected = (cudnn, cudnn && !feed);
            assert_eq!(
                m.rnn_weights_are_flat(),
                expected,
                "{enc:?}/{dec:?} feed {feed}"
            );
            let mut opt = Adam::new(&vs, AdamConfig::default());
            for _ in 0..3 {
                let out = m.loss(&batch, true, 1.0, 0.0);
                opt.backward_step(&(out.loss / out.tokens as f64), 1.0);
            }
            assert_eq!(m.rnn_weights_are_flat(), expected, "after updates");
            let file = dir.path().join("w.safetensors");
            vs.save(&file).unwrap();
            vs.load(&file).unwrap();
            assert_eq!(m.rnn_weights_are_flat(), expected, "after a load");
            let cpu = VarStore::new(tch::Device::Cpu);
            let _ = Seq2Seq::new(&cpu.root(), &cfg);
            let names = |vs: &VarStore| {
                let mut n: Vec<String> = vs.variables().into_keys().collect();
                n.sort();
                n
            };
            assert_eq!(names(&vs), names(&cpu));
        }
    }
}

/// bf16 autocast (`--precision bf16`, CUDA autocast there; CPU autocast here, which the
/// library supports and the binaries refuse) trains: the loss falls, and the parameters, their
/// gradients and Adam's state stay float32.
#[test]
fn bf16_autocast_trains_with_float32_weights() {
    use rnmt::precision::{cpu_has_bf16, with_autocast, LowPrecision};
    one_thread();
    tch::manual_seed(5);
    let device = common::device();
    if !device.is_cuda() && !cpu_has_bf16() {
        eprintln!(
            "skipped bf16_autocast_trains_with_float32_weights: this CPU has no bfloat16 \
             instructions (AVX512-BF16), and oneDNN has no bfloat16 LSTM without them"
        );
        return;
    }
    let mut cfg = tiny_config(CellType::Lstm, CellType::Gru, AttentionType::Luong, false);
    cfg.encoder.dropout = 0.0;
    cfg.decoder.dropout = 0.0;
    cfg.emb_dropout = 0.0;
    let vs = VarStore::new(device);
    let m = Seq2Seq::new(&vs.root(), &cfg);
    let mut opt = Adam::new(
        &vs,
        AdamConfig {
            lr: 1e-2,
            ..AdamConfig::default()
        },
    );
    let examples = random_examples(10, 7);
    let refs: Vec<&Example> = examples.iter().collect();
    let batch = Batch::new(&refs, device);
    let mut losses = vec![];
    for _ in 0..60 {
        let out = with_autocast(device.is_cuda(), LowPrecision::Bf16, || {
            m.loss(&batch, true, 1.0, 0.0)
        })
        .unwrap();
        assert_eq!(out.loss.kind(), Kind::Float, "losses stay float32");
        let loss = out.loss / out.tokens as f64;
        losses.push(loss.double_value(&[]));
        opt.backward_step(&loss, 1.0);
    }
    for (name, t) in vs.variables() {
        assert_eq!(t.kind(), Kind::Float, "{name}");
        assert_eq!(t.grad().kind(), Kind::Float, "{name}'s gradient");
    }
    let (first, last) = (losses[0], losses[losses.len() - 1]);
    assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
    assert!(last < 0.5 * first, "loss {first} -> {last}");
}
