//! Developer tool behind `scripts/profile.sh`: where a training update and a beam-search step
//! of a model spend their time, and what fraction of the machine's measured matrix-multiply
//! peak the whole reaches.
//!
//! ```text
//! cargo run --release --example profile -- MODEL_DIR TRAIN.tsv TEST.tsv
//! ```
//!
//! `MODEL_DIR` is a model directory (`config.json`, `tokenizer.json`, weights); its weights
//! are the starting point of the timed updates. Environment: `UPDATES` (40), `SENTENCES` (256,
//! test sentences decoded), `BEAM` (5), `BATCH` (64), `THREADS` (libtorch's default),
//! `DEVICE` (`cpu`, `cuda`).
//!
//! **Training.** Real batches of the epoch-0 order (`train.batch_tokens`), the first 5 as
//! warm-up. The forward runs in its four parts with the tensors between them detached, and the
//! backward runs part by part in reverse (each part's output gradient handed on by hand), so
//! every part's forward and backward are timed on their own; the device is synchronized at
//! every boundary. The arithmetic is the training step's (same kernels, same shapes); the
//! hand-over adds one elementwise product per boundary. Rows: batch building on the host
//! (with seeding), the four forward parts, the four backward parts, gradient clipping and Adam.
//!
//! **Decoding.** Beam search over the test sources in batches of `BATCH`, the model wrapped in
//! a [`StepModel`] that times its calls (encoder; decoder step; reordering rows); the rest of
//! the wall clock is the search's own work (top-k, host transfers, bookkeeping). One step of a
//! full batch is then timed part by part (embedding + RNN, attention, output layer,
//! log-softmax).
//!
//! **Peak.** libtorch matrix products: square 2048 and the output layer's shapes, float32,
//! giving GFLOP/s; the model's floating-point operations per target token (counted from its
//! shapes) over the measured time give the fraction of that peak reached.
use std::cell::RefCell;
use std::path::Path;
use std::time::Instant;

use rnmt::batch::{epoch_batches, Batch, Example};
use rnmt::checkpoint::load_model_dir;
use rnmt::config::DecodeConfig;
use rnmt::corpus::{read_all, CorpusSource, ReadOptions};
use rnmt::model::{EncoderOutput, Seq2Seq};
use rnmt::optim::{Adam, AdamConfig};
use rnmt::precision::Precision;
use rnmt::search::{beam_search, Step, StepModel};
use tch::{Device, Kind, Tensor};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// `PRECISION=bf16` runs as `--precision bf16`: the forward parts under bfloat16 autocast on
/// CUDA, the encoder and the output layer in bfloat16 on the CPU.
fn precision() -> Precision {
    match std::env::var("PRECISION").as_deref() {
        Ok("bf16") => Precision::Bf16,
        _ => Precision::Fp32,
    }
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// Seconds per named part, summed over runs.
#[derive(Default)]
struct Laps {
    rows: Vec<(&'static str, f64)>,
    last: Option<Instant>,
}

impl Laps {
    fn start(&mut self, device: Device) {
        sync(device);
        self.last = Some(Instant::now());
    }
    fn lap(&mut self, name: &'static str, device: Device) {
        sync(device);
        let now = Instant::now();
        let secs = self.last.map_or(0.0, |t| (now - t).as_secs_f64());
        self.last = Some(now);
        match self.rows.iter_mut().find(|(n, _)| *n == name) {
            Some(r) => r.1 += secs,
            None => self.rows.push((name, secs)),
        }
    }
    fn total(&self) -> f64 {
        self.rows.iter().map(|r| r.1).sum()
    }
    fn print(&self, per: f64, unit: &str) {
        let total = self.total();
        for (name, secs) in &self.rows {
            println!(
                "| {name} | {:.2} | {:.1}% |",
                secs / per * 1e3,
                100.0 * secs / total
            );
        }
        println!("| **total** | {:.2} {unit} | 100% |", total / per * 1e3);
    }
}

fn leaf(t: &Tensor) -> Tensor {
    // float32, as the parts hand on to each other outside an autocast region.
    t.detach().to_kind(Kind::Float).set_requires_grad(true)
}

/// One training update, part by part (see the module docs). Returns the target tokens.
fn timed_update(
    model: &Seq2Seq,
    opt: &mut Adam,
    examples: &[&Example],
    laps: &mut Laps,
    device: Device,
    eps: f64,
) -> i64 {
    let fwd = |f: &mut dyn FnMut()| precision().run(device, f).expect("autocast");
    laps.start(device);
    tch::manual_seed(7);
    let batch = Batch::new(examples, device);
    laps.lap("host: batch building and seeding", device);
    opt.zero_grad();
    let mut enc = None;
    fwd(&mut || enc = Some(model.encode(&batch.src, &batch.src_lens, true)));
    let enc = enc.expect("encoded");
    laps.lap(
        "forward: embeddings, encoder (biLSTM), attention keys",
        device,
    );
    let states = leaf(&enc.states);
    let final_state = leaf(&enc.final_state);
    let keys = enc.keys.as_ref().map(leaf);
    let enc_d = EncoderOutput {
        states: states.shallow_clone(),
        mask: enc.mask.shallow_clone(),
        final_state: final_state.shallow_clone(),
        keys: keys.as_ref().map(Tensor::shallow_clone),
        step_cache: model.decoder().prepare(&final_state, None),
    };
    let mut top = None;
    fwd(&mut || {
        let state = model.initial_state(&enc_d);
        let emb = model.embed_target(&batch.tgt_in, true);
        top = Some(model.decoder().rnn_fused(&emb, &state, &enc_d, true))
    });
    let top = top.expect("decoded");
    laps.lap("forward: bridge, target embeddings, decoder RNN", device);
    let top_d = leaf(&top);
    let mut att = None;
    fwd(&mut || att = Some(model.decoder().attend(&top_d, &enc_d)));
    let att = att.expect("attended");
    laps.lap("forward: attention and attentional vectors", device);
    let att_d = leaf(&att);
    let hidden = att.size()[2];
    let gold = batch.tgt_out.reshape([-1]);
    let keep = gold.ne(0).nonzero().squeeze_dim(1);
    let rows = att_d.reshape([-1, hidden]).index_select(0, &keep);
    // As Seq2Seq::loss does under the CPU's bf16.
    let rows = match precision().low_precision(device) {
        Some(k) => rows.to_kind(k),
        None => rows,
    };
    let mut out = None;
    fwd(&mut || {
        out = Some(
            model
                .decoder()
                .output_loss(&rows, &gold.index_select(0, &keep), eps, true),
        )
    });
    let out = out.expect("loss");
    let tokens = keep.size()[0];
    let loss = out.loss / tokens as f64;
    let _ = loss.double_value(&[]);
    laps.lap("forward: output layer and loss", device);
    loss.backward();
    laps.lap("backward: output layer and loss", device);
    (&att * att_d.grad()).sum(Kind::Float).backward();
    laps.lap("backward: attention and attentional vectors", device);
    (&top * top_d.grad()).sum(Kind::Float).backward();
    laps.lap("backward: decoder RNN, target embeddings, bridge", device);
    let mut s = (&enc.states * states.grad()).sum(Kind::Float)
        + (&enc.final_state * final_state.grad()).sum(Kind::Float);
    if let (Some(k), Some(kd)) = (&enc.keys, &keys) {
        s += (k * kd.grad()).sum(Kind::Float);
    }
    s.backward();
    laps.lap("backward: encoder, source embeddings", device);
    opt.clip_grad_norm(1.0);
    laps.lap("gradient clipping (global norm)", device);
    opt.step();
    laps.lap("Adam step", device);
    tokens
}

/// Times the calls search makes.
struct Timed<'a> {
    model: &'a Seq2Seq,
    device: Device,
    laps: RefCell<Laps>,
}

impl Timed<'_> {
    fn time<T>(&self, name: &'static str, f: impl FnOnce() -> T) -> T {
        self.laps.borrow_mut().start(self.device);
        let out = f();
        self.laps.borrow_mut().lap(name, self.device);
        out
    }
}

impl StepModel for Timed<'_> {
    type Encoded = EncoderOutput;
    type State = rnmt::model::DecoderState;
    fn encode(&self, src: &Tensor, lengths: &[i64]) -> EncoderOutput {
        self.time("encoder", || StepModel::encode(self.model, src, lengths))
    }
    fn initial_state(&self, enc: &EncoderOutput) -> Self::State {
        self.time("decoder steps", || {
            StepModel::initial_state(self.model, enc)
        })
    }
    fn step(&self, prev: &Tensor, state: &Self::State, enc: &EncoderOutput) -> Step<Self::State> {
        self.time("decoder steps", || {
            StepModel::step(self.model, prev, state, enc)
        })
    }
    fn select_encoded(&self, enc: &EncoderOutput, index: &Tensor) -> EncoderOutput {
        self.time("reordering rows (beams, finished sentences)", || {
            StepModel::select_encoded(self.model, enc, index)
        })
    }
    fn select_state(&self, state: &Self::State, index: &Tensor) -> Self::State {
        self.time("reordering rows (beams, finished sentences)", || {
            StepModel::select_state(self.model, state, index)
        })
    }
    fn has_attention(&self) -> bool {
        self.model.has_attention()
    }
}

/// GFLOP/s of `[m, k] x [k, n]` in float32.
fn gemm_gflops(m: i64, k: i64, n: i64, device: Device, kind: Kind) -> f64 {
    let a = Tensor::randn([m, k], (Kind::Float, device)).to_kind(kind);
    let b = Tensor::randn([k, n], (Kind::Float, device)).to_kind(kind);
    for _ in 0..3 {
        let _ = a.mm(&b);
    }
    sync(device);
    let reps = 10;
    let t = Instant::now();
    for _ in 0..reps {
        let _ = a.mm(&b);
    }
    sync(device);
    2.0 * (m * k * n) as f64 * reps as f64 / t.elapsed().as_secs_f64() / 1e9
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, train, test] = args.as_slice() else {
        eprintln!("usage: profile MODEL_DIR TRAIN.tsv TEST.tsv");
        std::process::exit(2);
    };
    if let Ok(n) = std::env::var("THREADS") {
        tch::set_num_threads(n.parse().expect("THREADS"));
    }
    let device = match std::env::var("DEVICE").as_deref() {
        Ok("cuda") => Device::Cuda(0),
        _ => Device::Cpu,
    };
    let mut loaded = load_model_dir(Path::new(dir), device).expect("model directory");
    loaded.vs.unfreeze();
    loaded
        .model
        .set_low_precision(precision().low_precision(device));
    let cfg = &loaded.config;
    let tok = &loaded.tokenizers;
    let read = |path: &str| -> Vec<Example> {
        let (pairs, _) =
            read_all(&CorpusSource::from_path(path), &ReadOptions::default()).expect("corpus");
        pairs
            .iter()
            .filter_map(|p| {
                let e = Example {
                    src: tok.src().encode(&p.src).ok()?,
                    tgt: tok.tgt().encode(&p.tgt).ok()?,
                };
                (e.src.len() <= 100 && e.tgt.len() <= 100).then_some(e)
            })
            .collect()
    };
    let model = &loaded.model;
    println!(
        "# rnmt profile: {} threads, device {device:?}, model {dir} ({} parameters)",
        tch::get_num_threads(),
        loaded
            .vs
            .trainable_variables()
            .iter()
            .map(Tensor::numel)
            .sum::<usize>()
    );

    // Training.
    let examples = read(train);
    let mut opt = Adam::new(
        &loaded.vs,
        AdamConfig {
            lr: 1e-4,
            ..AdamConfig::default()
        },
    );
    let batches = epoch_batches(&examples, cfg.train.batch_tokens, cfg.train.seed, 0);
    let updates = env("UPDATES", 40);
    let mut laps = Laps::default();
    let (mut tokens, mut sentences) = (0i64, 0usize);
    for (i, b) in batches.iter().take(updates + 5).enumerate() {
        let refs: Vec<&Example> = b.iter().map(|&j| &examples[j]).collect();
        let mut warm = Laps::default();
        let target = if i < 5 { &mut warm } else { &mut laps };
        let n = timed_update(
            model,
            &mut opt,
            &refs,
            target,
            device,
            cfg.train.label_smoothing,
        );
        if i >= 5 {
            tokens += n;
            sentences += refs.len();
        }
    }
    let per_update = updates as f64;
    println!(
        "\n## Training update ({updates} updates of {} target tokens padded, {:.0} real tokens and {:.1} sentences each)\n",
        cfg.train.batch_tokens,
        tokens as f64 / per_update,
        sentences as f64 / per_update
    );
    println!("| part | ms per update | share |\n|---|---|---|");
    laps.print(per_update, "ms");
    let train_secs = laps.total();
    let tok_s = tokens as f64 / train_secs;
    println!(
        "\n{tok_s:.0} target tokens/s, {:.1} sentences/s (updates only)",
        sentences as f64 / train_secs
    );

    // Arithmetic per target token, counted from the shapes (multiply-add = 2 FLOP; backward
    // = 2x forward), with the batch's source/target length ratio.
    let m = &cfg.model;
    let (e, he, hd, v) = (
        m.emb_size as f64,
        m.encoder.hidden as f64,
        m.decoder.hidden as f64,
        m.tgt_vocab as f64,
    );
    let gates_e = if m.encoder.cell == rnmt::config::CellType::Lstm {
        4.0
    } else {
        3.0
    };
    let gates_d = if m.decoder.cell == rnmt::config::CellType::Lstm {
        4.0
    } else {
        3.0
    };
    let src_per_tgt = {
        let (s, t): (usize, usize) = examples.iter().fold((0, 0), |(s, t), x| {
            (s + x.src.len() + 1, t + x.tgt.len() + 1)
        });
        s as f64 / t as f64
    };
    let mut enc = 0.0;
    for l in 0..m.encoder.layers {
        let input = if l == 0 { e } else { 2.0 * he };
        enc += 2.0 * 2.0 * gates_e * he * (input + he);
    }
    let dec_rnn = 2.0 * gates_d * hd * (e + hd) * m.decoder.layers as f64;
    let keys = 2.0 * 2.0 * he * hd; // key projection per source token
    let att_vec = 2.0 * (hd + 2.0 * he) * hd;
    let output = 2.0 * hd * v;
    let fwd_per_tgt = (enc + keys) * src_per_tgt + dec_rnn + att_vec + output;
    let flop_per_tgt = 3.0 * fwd_per_tgt;
    println!(
        "\nArithmetic: {:.1} MFLOP per target token (forward and backward; output layer {:.1}, encoder {:.1}, decoder RNN {:.1}; attention scores left out), so {:.1} GFLOP/s",
        flop_per_tgt / 1e6,
        3.0 * output / 1e6,
        3.0 * enc * src_per_tgt / 1e6,
        3.0 * dec_rnn / 1e6,
        flop_per_tgt * tok_s / 1e9
    );

    // Decoding.
    let test_ex = read(test);
    let n = env("SENTENCES", 256).min(test_ex.len());
    let sources: Vec<Vec<u32>> = test_ex[..n].iter().map(|x| x.src.clone()).collect();
    let dcfg = DecodeConfig {
        beam: env("BEAM", 5),
        ..DecodeConfig::default()
    };
    let timed = Timed {
        model,
        device,
        laps: RefCell::new(Laps::default()),
    };
    let batch = env("BATCH", 64);
    let t = Instant::now();
    let mut out_tokens = 0;
    tch::no_grad(|| {
        precision()
            .run(device, || {
                for chunk in sources.chunks(batch) {
                    let hyps = beam_search(&timed, chunk, &dcfg, device).expect("beam search");
                    out_tokens += hyps.iter().map(|h| h[0].tokens.len() + 1).sum::<usize>();
                }
            })
            .expect("autocast")
    });
    sync(device);
    let wall = t.elapsed().as_secs_f64();
    let mut laps = timed.laps.into_inner();
    let model_secs = laps.total();
    laps.rows.push((
        "search: top-k, host transfers, bookkeeping",
        wall - model_secs,
    ));
    println!(
        "\n## Beam search (beam {}, {n} test sentences in batches of {batch}, {out_tokens} output tokens)\n",
        dcfg.beam
    );
    println!("| part | ms per sentence | share |\n|---|---|---|");
    laps.print(n as f64, "ms");
    println!("\n{:.1} sentences/s", n as f64 / wall);

    // One decoder step of a full batch, part by part.
    let rows = (batch * dcfg.beam) as i64;
    let src = Tensor::randint(m.src_vocab as i64, [rows, 24], (Kind::Int64, device));
    let lens = vec![24i64; rows as usize];
    let mut laps = Laps::default();
    tch::no_grad(|| {
        let enc = model.encode(&src, &lens, false);
        let mut state = model.initial_state(&enc);
        let prev = Tensor::full([rows], 2, (Kind::Int64, device));
        let k = dcfg.beam;
        let forced = vec![false; rows as usize];
        let beam_scores = vec![0.0f32; rows as usize];
        for i in 0..25 {
            let mut l = Laps::default();
            let target = if i < 5 { &mut l } else { &mut laps };
            target.start(device);
            let emb = model.embed_target(&prev, false);
            let proj = model.decoder().embed_proj(&emb);
            target.lap("target embedding and the RNN's input projection", device);
            let next = model.decoder().step(&proj, &state, &enc, false);
            target.lap("RNN step, attention, attentional vector", device);
            let logits = model
                .decoder()
                .step_logits(&next.att_vector, &enc.step_cache);
            target.lap("output layer (bf16 with PRECISION=bf16)", device);
            let lp = logits.log_softmax(-1, Kind::Float);
            target.lap("log-softmax", device);
            if rnmt::search::candidates::can_read_in_place(&lp) {
                let rules = rnmt::search::candidates::Rules {
                    ban_eos: false,
                    forced: &forced,
                };
                let _ = rnmt::search::candidates::best_candidates(&lp, &beam_scores, k, rules, 1);
            } else {
                let _ = lp
                    .view([-1, k as i64 * lp.size()[1]])
                    .topk(2 * k as i64, 1, true, true);
            }
            target.lap("best 2K candidates per sentence", device);
            state = next;
        }
    });
    println!(
        "\n## One decoder step, {rows} rows (batch {batch} x beam {})\n",
        dcfg.beam
    );
    println!("| part | ms per step | share |\n|---|---|---|");
    laps.print(20.0, "ms");

    // Peak.
    let bf16 = device.is_cuda() || rnmt::precision::cpu_has_bf16();
    println!(
        "\n## Matrix products (libtorch)\n\n| shape | float32 GFLOP/s | bfloat16 GFLOP/s |\n|---|---|---|"
    );
    let gemm = |a: i64, b: i64, c: i64| {
        let low = if bf16 {
            format!("{:.1}", gemm_gflops(a, b, c, device, Kind::BFloat16))
        } else {
            "(no bfloat16 instructions)".to_string()
        };
        (gemm_gflops(a, b, c, device, Kind::Float), low)
    };
    let (peak, peak_low) = gemm(2048, 2048, 2048);
    println!("| 2048 x 2048 x 2048 | {peak:.1} | {peak_low} |");
    let vv = m.tgt_vocab as i64;
    let hh = m.decoder.hidden as i64;
    let he = m.encoder.hidden as i64;
    for (a, b, c, what) in [
        (2000, hh, vv, "output layer forward"),
        (vv, 2000, hh, "output layer weight gradient"),
        (2000, vv, hh, "output layer input gradient"),
        (rows, hh, vv, "output layer, one beam step"),
        (83, he, 4 * he, "one encoder LSTM step"),
    ] {
        let (f, l) = gemm(a, b, c);
        println!("| {a} x {b} x {c} ({what}) | {f:.1} | {l} |");
    }
    println!(
        "\nTraining reaches {:.0}% of the float32 square-matrix peak ({:.1} of {peak:.1} GFLOP/s).",
        100.0 * flop_per_tgt * tok_s / 1e9 / peak,
        flop_per_tgt * tok_s / 1e9
    );
}
