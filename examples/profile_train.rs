//! Developer tool: times the forward pass, backward pass and optimizer step of training
//! updates on real batches of the bundled corpus with the default model, and prints the
//! target-token throughput and the padding share. Run it under `perf record` to see where the
//! time goes.
//!
//! ```text
//! cargo run --release --example profile_train -- MODEL_DIR   # any dir with tokenizer.json
//! N=30 ATT=luong cargo run --release --example profile_train -- MODEL_DIR
//! ```
use std::time::Instant;

use rnmt::batch::{epoch_batches, Batch, Example};
use rnmt::config::{Config, ModelConfig};
use rnmt::corpus::{read_all, CorpusSource, ReadOptions};
use rnmt::model::Seq2Seq;
use rnmt::optim::{Adam, AdamConfig};
use rnmt::tokenizer::Tokenizers;
use tch::{nn::VarStore, Device};

fn main() {
    tch::set_num_threads(2);
    let dir = std::env::args().nth(1).expect("model dir");
    let tok = Tokenizers::load_dir(&dir).unwrap();
    let (pairs, _) = read_all(
        &CorpusSource::from_path("corpora/lohelp.en-fr.train.tsv"),
        &ReadOptions::default(),
    )
    .unwrap();
    let ex: Vec<Example> = pairs
        .iter()
        .map(|p| Example {
            src: tok.src().encode(&p.src).unwrap(),
            tgt: tok.tgt().encode(&p.tgt).unwrap(),
        })
        .filter(|e| e.src.len() <= 100 && e.tgt.len() <= 100)
        .collect();
    let cfg = Config::default();
    let mut mcfg = ModelConfig {
        src_vocab: 8000,
        tgt_vocab: 8000,
        ..cfg.model
    };
    if let Ok(a) = std::env::var("ATT") {
        mcfg.decoder.attention = serde_json::from_str(&format!("\"{a}\"")).unwrap();
    }
    let vs = VarStore::new(Device::Cpu);
    let m = Seq2Seq::new(&vs.root(), &mcfg);
    let mut opt = Adam::new(
        &vs,
        AdamConfig {
            lr: 1e-3,
            ..AdamConfig::default()
        },
    );
    let batches = epoch_batches(&ex, 2000, 42, 0);
    let (mut tf, mut tb, mut to, mut toks, mut padded) = (0.0, 0.0, 0.0, 0usize, 0i64);
    let n = std::env::var("N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    for (i, b) in batches.iter().take(n).enumerate() {
        let refs: Vec<&Example> = b.iter().map(|&i| &ex[i]).collect();
        let batch = Batch::new(&refs, Device::Cpu);
        let t = Instant::now();
        let out = m.loss(&batch, true, 1.0, 0.1);
        let loss = out.loss / out.tokens as f64;
        let _ = loss.double_value(&[]);
        let t1 = t.elapsed().as_secs_f64();
        opt.zero_grad();
        loss.backward();
        let t2 = t.elapsed().as_secs_f64();
        opt.clip_grad_norm(1.0);
        opt.step();
        let t3 = t.elapsed().as_secs_f64();
        if i >= 3 {
            tf += t1;
            tb += t2 - t1;
            to += t3 - t2;
            toks += batch.tgt_tokens;
            padded += batch.tgt_out.numel() as i64;
        }
        if i < 8 {
            println!(
                "batch {i}: {} sents, src {:?}, tgt {:?}, {:.2}s",
                b.len(),
                batch.src.size(),
                batch.tgt_out.size(),
                t3
            );
        }
    }
    let total = tf + tb + to;
    println!(
        "fwd {tf:.2}s bwd {tb:.2}s opt {to:.2}s; {:.0} tgt tok/s; target padding {:.1}%",
        toks as f64 / total,
        100.0 * (1.0 - toks as f64 / padded as f64)
    );
}
