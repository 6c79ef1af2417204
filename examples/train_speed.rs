//! Quick training-step timing on synthetic batches of the default model size.
use rnmt::batch::{Batch, Example};
use rnmt::config::ModelConfig;
use rnmt::model::Seq2Seq;
use rnmt::optim::{Adam, AdamConfig};
use std::time::Instant;
use tch::{nn::VarStore, Device};

fn main() {
    let threads: i32 = std::env::var("THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    tch::set_num_threads(threads);
    let len: usize = std::env::var("LEN")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let tokens: usize = std::env::var("TOKENS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let cfg = ModelConfig {
        src_vocab: 8000,
        tgt_vocab: 8000,
        ..ModelConfig::default()
    };
    let vs = VarStore::new(Device::Cpu);
    let m = Seq2Seq::new(&vs.root(), &cfg);
    let n: usize = vs.variables().values().map(|t| t.numel()).sum();
    println!("params {n}");
    let mut opt = Adam::new(
        &vs,
        AdamConfig {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        },
    );
    let mut rng = rnmt::rng::Rng::new(1);
    let b = tokens / (len + 1);
    let ex: Vec<Example> = (0..b)
        .map(|_| Example {
            src: (0..len).map(|_| 4 + rng.below(7990) as u32).collect(),
            tgt: (0..len).map(|_| 4 + rng.below(7990) as u32).collect(),
        })
        .collect();
    let refs: Vec<&Example> = ex.iter().collect();
    let batch = Batch::new(&refs, Device::Cpu);
    for i in 0..6 {
        let t = Instant::now();
        let out = m.loss(&batch, true, 1.0, 0.1);
        let loss = out.loss / out.tokens as f64;
        let t1 = t.elapsed().as_secs_f64();
        opt.zero_grad();
        loss.backward();
        let t2 = t.elapsed().as_secs_f64();
        opt.clip_grad_norm(1.0);
        opt.step();
        let dt = t.elapsed().as_secs_f64();
        println!(
            "iter {i}: fwd {t1:.3}s bwd {:.3}s opt {:.3}s total {dt:.3}s -> {:.0} tgt tok/s",
            t2 - t1,
            dt - t2,
            out.tokens as f64 / dt
        );
    }
}
