//! Lexically constrained beam search (`rnmt-translate --constraints`): every target phrase
//! given for a sentence appears in its output, exactly (as consecutive subword tokens).
//!
//! The algorithm is dynamic beam allocation (Post & Vilar 2018): one beam of `K` rows per
//! sentence, as in unconstrained search, whose slots are shared out among *banks*, the
//! hypotheses grouped by how many constraint tokens they have produced. At each step every
//! live hypothesis proposes its `K + 1` best free tokens, the next token of every phrase it
//! could start, and `</s>` when it may end; the candidates are taken round-robin from the
//! banks, most complete bank first, each bank's best first, until `K` are taken. So
//! hypotheses that have met more constraints always keep a place in the beam next to more
//! probable ones that have met fewer.
//!
//! Two rules make the guarantee hold (both simplifications of Post & Vilar's, stated here):
//! - A phrase once started must be finished: while a hypothesis is inside a phrase its only
//!   candidate is the phrase's next token (Hokamp & Liu's "open" constraints; Post & Vilar
//!   instead allow leaving and unwinding the phrase).
//! - `</s>` only when every phrase is met, and a free token only while the tokens left
//!   before the output bound can still hold every unmet phrase and `</s>`; the bound is raised
//!   to the constraint tokens + 1 where that is more, and a sentence whose constraints do
//!   not fit `max_len` is refused before search ([`check_fits`]).
//!
//! The search reads only the model's log-probabilities (through [`StepModel`]); candidates
//! come to the host as each row's top `K + 1` and the few constraint tokens' values.
use tch::{Device, Kind, Tensor};

use super::alignment::AttentionHistory;
use super::{encode_sources, host, length_penalty, step_recording, Hypothesis, StepModel};
use crate::config::DecodeConfig;
use crate::error::{Error, Result};
use crate::tokenizer::{BOS_ID, EOS_ID};

/// The constraint phrases of one sentence, each as target subword ids.
pub type Phrases = Vec<Vec<u32>>;

/// The output bound of a sentence with `src_len` source tokens and these phrases: the usual
/// bound, raised to hold every phrase and `</s>`.
pub fn constrained_bound(cfg: &DecodeConfig, src_len: usize, phrases: &[Vec<u32>]) -> usize {
    let need: usize = phrases.iter().map(Vec::len).sum::<usize>() + 1;
    cfg.max_output_len(src_len).max(need)
}

/// Checks that the phrases fit the length limit `max_len` together with `</s>`; the error
/// says by how much they do not (the caller adds the file and line).
pub fn check_fits(cfg: &DecodeConfig, phrases: &[Vec<u32>]) -> Result<()> {
    if phrases.iter().any(Vec::is_empty) {
        return Err(Error::Input("an empty constraint phrase".into()));
    }
    let need: usize = phrases.iter().map(Vec::len).sum::<usize>() + 1;
    if need > cfg.max_len {
        return Err(Error::Input(format!(
            "the constraints are {} target tokens, with </s> more than --max-len {}",
            need - 1,
            cfg.max_len
        )));
    }
    Ok(())
}

/// How far a hypothesis is through its sentence's phrases.
#[derive(Debug, Clone, PartialEq)]
struct Progress {
    met: Vec<bool>,
    /// The phrase being written and the position of its next token.
    open: Option<(usize, usize)>,
    /// Constraint tokens produced so far (the bank).
    done: usize,
}

impl Progress {
    fn new(n: usize) -> Self {
        Progress {
            met: vec![false; n],
            open: None,
            done: 0,
        }
    }

    /// The progress after emitting `tok`, which either continues the open phrase, starts an
    /// unmet phrase (the first listed whose first token it is) or is free.
    fn after(&self, tok: u32, phrases: &[Vec<u32>]) -> Progress {
        let mut p = self.clone();
        let start = match self.open {
            Some(open) => Some(open),
            None => (0..phrases.len())
                .find(|&i| !self.met[i] && phrases[i][0] == tok)
                .map(|i| (i, 0)),
        };
        if let Some((i, pos)) = start {
            debug_assert_eq!(phrases[i][pos], tok);
            p.done += 1;
            if pos + 1 == phrases[i].len() {
                p.met[i] = true;
                p.open = None;
            } else {
                p.open = Some((i, pos + 1));
            }
        }
        p
    }
}

/// A live hypothesis.
#[derive(Debug, Clone)]
struct Live {
    tokens: Vec<u32>,
    score: f32,
    progress: Progress,
}

/// A continuation: hypothesis `hyp` of the sentence's beam extended by `tok`.
#[derive(Debug, Clone)]
struct Candidate {
    score: f32,
    hyp: usize,
    tok: u32,
    progress: Progress,
}

/// Constrained beam search over `sources` (subword ids without `</s>`) with `phrases[i]` the
/// target phrases of sentence `i` (check them with [`check_fits`] first); up to `n_best`
/// hypotheses per sentence, best (normalized score) first, each containing all its
/// sentence's phrases. The model's batch holds `K = beam` rows per sentence, as in
/// [`super::beam_search`].
pub fn constrained_search<M: StepModel + ?Sized>(
    model: &M,
    sources: &[Vec<u32>],
    phrases: &[Phrases],
    cfg: &DecodeConfig,
    device: Device,
) -> Result<Vec<Vec<Hypothesis>>> {
    assert_eq!(phrases.len(), sources.len(), "phrases for every source");
    for p in phrases {
        check_fits(cfg, p)?;
    }
    let n = sources.len();
    let k = cfg.beam.max(1);
    let (mut enc, _) = encode_sources(model, sources, cfg, device);
    let bounds: Vec<usize> = sources
        .iter()
        .zip(phrases)
        .map(|(s, p)| constrained_bound(cfg, s.len(), p))
        .collect();
    let expand: Vec<i64> = (0..n as i64)
        .flat_map(|s| std::iter::repeat_n(s, k))
        .collect();
    let mut state = model.select_state(
        &model.initial_state(&enc),
        &Tensor::from_slice(&expand).to_device(device),
    );
    let mut attention = cfg.attention.then(AttentionHistory::default);
    let mut prev = Tensor::full([(n * k) as i64], BOS_ID as i64, (Kind::Int64, device));
    let mut active: Vec<usize> = (0..n).collect();
    // Per active sentence its live hypotheses; hypothesis j is row a * k + j.
    let mut beams: Vec<Vec<Live>> = (0..n)
        .map(|s| {
            vec![Live {
                tokens: vec![],
                score: 0.0,
                progress: Progress::new(phrases[s].len()),
            }]
        })
        .collect();
    let mut finished: Vec<Vec<Hypothesis>> = vec![Vec::new(); n];
    let mut t = 0;
    while !active.is_empty() {
        let (log_probs, next) = step_recording(model, &prev, &state, &enc, &mut attention)?;
        let vocab = log_probs.size()[1];
        let width = (k as i64 + 1).min(vocab);
        let (top_v, top_i) = log_probs.topk(width, 1, true, true);
        let top_v: Vec<f32> = host(&top_v, "search scores")?;
        let top_i: Vec<i64> = host(&top_i, "search candidates")?;
        // The values of the tokens the constraints and `</s>` ask for.
        let mut wanted = Vec::new();
        for (a, &s) in active.iter().enumerate() {
            for (j, h) in beams[a].iter().enumerate() {
                for tok in wanted_tokens(&h.progress, &phrases[s]) {
                    wanted.push(((a * k + j) as i64) * vocab + tok as i64);
                }
            }
        }
        let wanted_v: Vec<f32> = if wanted.is_empty() {
            vec![]
        } else {
            let idx = Tensor::from_slice(&wanted).to_device(log_probs.device());
            host(
                &log_probs.reshape([-1]).index_select(0, &idx),
                "constraint scores",
            )?
        };
        let mut wanted_at = 0;
        let mut next_rows = Vec::new();
        let mut next_tokens = Vec::new();
        let mut next_beams = Vec::new();
        let mut still_active = Vec::new();
        for (a, &s) in active.iter().enumerate() {
            let ph = &phrases[s];
            let total: usize = ph.iter().map(Vec::len).sum();
            let mut cands: Vec<Candidate> = Vec::new();
            for (j, h) in beams[a].iter().enumerate() {
                let row = a * k + j;
                let left = total - h.progress.done;
                let len = h.tokens.len();
                let offer = |tok: u32, lp: f32, cands: &mut Vec<Candidate>| {
                    if lp == f32::NEG_INFINITY || cands.iter().any(|c| c.hyp == j && c.tok == tok) {
                        return;
                    }
                    cands.push(Candidate {
                        score: h.score + lp,
                        hyp: j,
                        tok,
                        progress: h.progress.after(tok, ph),
                    });
                };
                let wanted_here = wanted_tokens(&h.progress, ph);
                let values = &wanted_v[wanted_at..wanted_at + wanted_here.len()];
                wanted_at += wanted_here.len();
                for (&tok, &lp) in wanted_here.iter().zip(values) {
                    let may_end = tok != EOS_ID || (len + 1 >= bounds[s] || t >= cfg.min_len);
                    if may_end {
                        offer(tok, lp, &mut cands);
                    }
                }
                // Free tokens while the rest still fits before the bound.
                if h.progress.open.is_none() && len + left + 2 <= bounds[s] {
                    for c in 0..width as usize {
                        let tok = top_i[row * width as usize + c] as u32;
                        if tok != EOS_ID {
                            offer(tok, top_v[row * width as usize + c], &mut cands);
                        }
                    }
                }
            }
            if cands
                .iter()
                .any(|c| c.score.is_nan() || c.score == f32::INFINITY)
            {
                return Err(Error::NonFiniteScores { step: t + 1 });
            }
            let mut live = Vec::new();
            for c in allocate(cands, k) {
                let h = &beams[a][c.hyp];
                if c.tok == EOS_ID {
                    let matrix = match &attention {
                        Some(m) => Some(m.matrix(a * k + c.hyp, sources[s].len() + 1)?),
                        None => None,
                    };
                    let len = h.tokens.len() + 1;
                    finished[s].push(Hypothesis {
                        tokens: h.tokens.clone(),
                        score: c.score as f64,
                        normalized: c.score as f64 / length_penalty(len, cfg.alpha()),
                        attention: matrix,
                    });
                } else {
                    let mut tokens = h.tokens.clone();
                    tokens.push(c.tok);
                    live.push((
                        a * k + c.hyp,
                        Live {
                            tokens,
                            score: c.score,
                            progress: c.progress,
                        },
                    ));
                }
            }
            if finished[s].len() >= k || live.is_empty() {
                continue;
            }
            // Dead rows (repeats of the first) pad the beam to K rows.
            for j in 0..k {
                let (row, tok) = match live.get(j) {
                    Some((row, l)) => (*row, *l.tokens.last().expect("extended")),
                    None => (live[0].0, EOS_ID),
                };
                next_rows.push(row as i64);
                next_tokens.push(tok as i64);
            }
            next_beams.push(live.into_iter().map(|(_, l)| l).collect());
            still_active.push(s);
        }
        t += 1;
        if still_active.is_empty() {
            break;
        }
        let shrank = still_active.len() != active.len();
        (state, enc) = super::reorder_rows(
            model,
            &next,
            enc,
            &mut attention,
            &next_rows,
            k,
            shrank,
            device,
        );
        prev = Tensor::from_slice(&next_tokens).to_device(device);
        beams = next_beams;
        active = still_active;
    }
    finished
        .into_iter()
        .enumerate()
        .map(|(s, mut hyps)| {
            if hyps.is_empty() {
                return Err(Error::Input(format!(
                    "sentence {}: no hypothesis could meet its constraints",
                    s + 1
                )));
            }
            hyps.sort_by(|a, b| b.normalized.total_cmp(&a.normalized));
            hyps.truncate(cfg.n_best);
            Ok(hyps)
        })
        .collect()
}

/// The tokens a hypothesis at `progress` must be able to take whatever their probability:
/// the open phrase's next token; else the first token of every unmet phrase, or `</s>` when
/// all are met.
fn wanted_tokens(progress: &Progress, phrases: &[Vec<u32>]) -> Vec<u32> {
    if let Some((i, pos)) = progress.open {
        return vec![phrases[i][pos]];
    }
    let mut toks: Vec<u32> = Vec::new();
    for (i, p) in phrases.iter().enumerate() {
        if !progress.met[i] && !toks.contains(&p[0]) {
            toks.push(p[0]);
        }
    }
    if toks.is_empty() {
        toks.push(EOS_ID);
    }
    toks
}

/// Dynamic beam allocation: up to `k` candidates taken round-robin over the banks (most
/// constraint tokens first), each bank's best score first (ties: lower hypothesis, then
/// token).
fn allocate(mut cands: Vec<Candidate>, k: usize) -> Vec<Candidate> {
    cands.sort_by(|x, y| {
        y.progress
            .done
            .cmp(&x.progress.done)
            .then(y.score.total_cmp(&x.score))
            .then(x.hyp.cmp(&y.hyp))
            .then(x.tok.cmp(&y.tok))
    });
    let mut banks: Vec<std::collections::VecDeque<Candidate>> = Vec::new();
    for c in cands {
        match banks.last_mut() {
            Some(b) if b[0].progress.done == c.progress.done => b.push_back(c),
            _ => banks.push(std::collections::VecDeque::from([c])),
        }
    }
    let mut out = Vec::with_capacity(k);
    while out.len() < k && banks.iter().any(|b| !b.is_empty()) {
        for b in &mut banks {
            if out.len() == k {
                break;
            }
            if let Some(c) = b.pop_front() {
                out.push(c);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(score: f32, hyp: usize, tok: u32, done: usize) -> Candidate {
        Candidate {
            score,
            hyp,
            tok,
            progress: Progress {
                met: vec![],
                open: None,
                done,
            },
        }
    }

    #[test]
    fn allocation_gives_every_bank_a_place_most_complete_first() {
        let cands = vec![
            cand(-1.0, 0, 10, 0),
            cand(-1.5, 0, 11, 0),
            cand(-2.0, 0, 12, 0),
            cand(-9.0, 1, 20, 2),
            cand(-5.0, 1, 21, 1),
        ];
        let picked: Vec<u32> = allocate(cands, 4).iter().map(|c| c.tok).collect();
        assert_eq!(picked, vec![20, 21, 10, 11]);
    }

    #[test]
    fn progress_follows_a_phrase_to_its_end() {
        let phrases = vec![vec![7, 8], vec![9]];
        let p = Progress::new(2);
        let p = p.after(5, &phrases);
        assert_eq!((p.done, p.open), (0, None));
        let p = p.after(7, &phrases);
        assert_eq!((p.done, p.open), (1, Some((0, 1))));
        assert_eq!(wanted_tokens(&p, &phrases), vec![8]);
        let p = p.after(8, &phrases);
        assert_eq!(p.met, vec![true, false]);
        assert_eq!(wanted_tokens(&p, &phrases), vec![9]);
        let p = p.after(9, &phrases);
        assert_eq!(p.done, 3);
        assert_eq!(wanted_tokens(&p, &phrases), vec![EOS_ID]);
    }

    #[test]
    fn constraints_longer_than_max_len_are_refused() {
        let cfg = DecodeConfig {
            max_len: 4,
            ..DecodeConfig::default()
        };
        assert!(check_fits(&cfg, &[vec![5, 6], vec![7]]).is_ok());
        let e = check_fits(&cfg, &[vec![5, 6, 7, 8]])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--max-len 4"), "{e}");
        assert!(check_fits(&cfg, &[vec![]]).is_err());
    }
}
