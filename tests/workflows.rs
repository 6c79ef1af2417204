//! The workflows after a first model (issue 27): sampling for back-translation, terminology
//! constraints, forced-decoding scores and word alignments, through the binaries.
mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

const LIMIT: Duration = Duration::from_secs(300);

/// Short dev pairs (source, reference) of the bundled en-fr corpus.
fn dev_pairs(n: usize) -> Vec<(String, String)> {
    head("lohelp.en-fr.dev.tsv", 200)
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .filter(|(s, _)| s.split_whitespace().count() <= 10)
        .take(n)
        .map(|(s, t)| (s.to_string(), t.to_string()))
        .collect()
}

fn sources(pairs: &[(String, String)]) -> String {
    pairs.iter().map(|(s, _)| format!("{s}\n")).collect()
}

fn stdout(o: &std::process::Output) -> String {
    assert!(o.status.success(), "{}", stderr(o));
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn scratch(name: &str) -> std::path::PathBuf {
    let d = tmp_root().join(format!("workflows-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn sampling_is_reproducible_batch_invariant_and_seed_dependent() {
    let model = tiny_model();
    let input = sources(&dev_pairs(6));
    let run = |seed: &str, extra: &[&str]| {
        let mut args = vec!["--sample", "--n-best", "3", "--seed", seed];
        args.extend_from_slice(extra);
        stdout(&translate_with(model, &args, input.as_bytes(), LIMIT))
    };
    let one = run(
        "7",
        &["--batch-size", "1", "--workers", "1", "--window", "1"],
    );
    let many = run("7", &["--batch-size", "6", "--workers", "2"]);
    assert_eq!(one, many, "the samples depend on the batching");
    assert_eq!(one, run("7", &["--batch-size", "6", "--workers", "1"]));
    // Three samples per line, in `index<TAB>score<TAB>text` lines.
    let lines: Vec<&str> = one.lines().collect();
    assert_eq!(lines.len(), 18);
    for (k, l) in lines.iter().enumerate() {
        let cols: Vec<&str> = l.splitn(3, '\t').collect();
        assert_eq!(cols[0], (k / 3).to_string());
        assert!(cols[1].parse::<f64>().unwrap() <= 0.0, "{l}");
    }
    let other = run("8", &["--batch-size", "6"]);
    assert_ne!(one, other, "another seed gives the same samples");
    // Samples vary (a sampled corpus, not three copies of the beam output).
    let distinct: std::collections::HashSet<&str> = lines
        .iter()
        .map(|l| l.splitn(3, '\t').nth(2).unwrap())
        .collect();
    assert!(distinct.len() > 6, "{distinct:?}");
    // Top-1 sampling is greedy search.
    let top1 = run("9", &["--topk", "1"]);
    let greedy = stdout(&translate_with(
        model,
        &["--beam", "1", "--n-best", "1"],
        input.as_bytes(),
        LIMIT,
    ));
    let greedy: Vec<&str> = greedy
        .lines()
        .map(|l| l.splitn(3, '\t').nth(2).unwrap())
        .collect();
    for (k, l) in top1.lines().enumerate() {
        assert_eq!(l.splitn(3, '\t').nth(2).unwrap(), greedy[k / 3]);
    }
}

/// One or two target phrases per sentence from its reference: its longest word and, for
/// longer references, its first two words (a multi-word phrase at the sentence start).
fn reference_constraints(reference: &str) -> Vec<String> {
    let words: Vec<&str> = reference.split_whitespace().collect();
    let longest = words
        .iter()
        .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric()))
        .max_by_key(|w| w.chars().count())
        .unwrap()
        .to_string();
    let mut out = vec![longest.clone()];
    if words.len() >= 4 {
        let two = format!("{} {}", words[0], words[1]);
        if !two.contains(&longest) && !longest.contains(words[0]) {
            out.push(two);
        }
    }
    out
}

#[test]
fn every_constraint_appears_in_every_output() {
    let model = tiny_model();
    let dir = scratch("constraints");
    let pairs = dev_pairs(6);
    let mut wanted: Vec<Vec<String>> = pairs
        .iter()
        .map(|(_, r)| reference_constraints(r))
        .collect();
    wanted[2].clear(); // a line without constraints
    let file = dir.join("c.txt");
    let text: String = wanted
        .iter()
        .map(|c| format!("{}\n", c.join("\t")))
        .collect();
    std::fs::write(&file, text).unwrap();
    let input = sources(&pairs);
    for beam in ["1", "4"] {
        let args = ["--constraints", file.to_str().unwrap(), "--beam", beam];
        let out = stdout(&translate_with(model, &args, input.as_bytes(), LIMIT));
        let outputs: Vec<&str> = out.lines().collect();
        assert_eq!(outputs.len(), pairs.len());
        for (k, (o, phrases)) in outputs.iter().zip(&wanted).enumerate() {
            for p in phrases {
                assert!(
                    o.contains(p.as_str()),
                    "beam {beam}, line {k}: {p:?} not in {o:?}"
                );
            }
        }
    }
    // The unconstrained line is what plain beam search gives.
    let plain = stdout(&translate_with(
        model,
        &["--beam", "4"],
        input.as_bytes(),
        LIMIT,
    ));
    let args = ["--constraints", file.to_str().unwrap(), "--beam", "4"];
    let constrained = stdout(&translate_with(model, &args, input.as_bytes(), LIMIT));
    assert_ne!(plain, constrained, "the constraints changed nothing");
}

#[test]
fn bad_constraints_are_one_clear_line() {
    let model = tiny_model();
    let dir = scratch("bad-constraints");
    let short = dir.join("short.txt");
    std::fs::write(&short, "Python\n").unwrap();
    let input = b"Open the file.\nSave it.\n";
    let o = translate_with(
        model,
        &["--constraints", short.to_str().unwrap()],
        input,
        LIMIT,
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("short.txt has 1 lines, fewer than the input"),
        "{err}"
    );
    let long = dir.join("long.txt");
    std::fs::write(
        &long,
        "\nun deux trois quatre cinq six sept huit neuf dix\n",
    )
    .unwrap();
    let args = ["--constraints", long.to_str().unwrap(), "--max-len", "8"];
    let o = translate_with(model, &args, input, LIMIT);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("long.txt") && err.contains("line 2") && err.contains("--max-len 8"),
        "{err}"
    );
    let args = ["--constraints", short.to_str().unwrap(), "--sample"];
    let o = translate_with(model, &args, b"x\n", LIMIT);
    assert!(
        !o.status.success() && stderr(&o).contains("--sample"),
        "{}",
        stderr(&o)
    );
}

/// `total<TAB>per_token<TAB>tokens` lines of rnmt-score.
fn parse_scores(out: &str) -> Vec<(f64, f64, usize)> {
    out.lines()
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            assert_eq!(c.len(), 3, "{l}");
            (
                c[0].parse().unwrap(),
                c[1].parse().unwrap(),
                c[2].parse().unwrap(),
            )
        })
        .collect()
}

fn score(model: &Path, args: &[&str]) -> std::process::Output {
    bin("rnmt-score")
        .arg("--model")
        .arg(model)
        .args(["--device", &device_arg(), "--threads", "1"])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn scores_are_the_training_loss_of_each_pair() {
    let model = tiny_model();
    let dir = scratch("score");
    let pairs = dev_pairs(7);
    let tsv = dir.join("pairs.tsv");
    let text: String = pairs.iter().map(|(s, t)| format!("{s}\t{t}\n")).collect();
    std::fs::write(&tsv, text).unwrap();
    let batched = parse_scores(&stdout(&score(model, &["-i", tsv.to_str().unwrap()])));
    let single = parse_scores(&stdout(&score(
        model,
        &["-i", tsv.to_str().unwrap(), "--batch-size", "1"],
    )));
    assert_eq!(batched.len(), pairs.len());
    // The same pairs as two files.
    let (src, tgt) = (dir.join("s.txt"), dir.join("t.txt"));
    std::fs::write(&src, sources(&pairs)).unwrap();
    std::fs::write(
        &tgt,
        pairs
            .iter()
            .map(|(_, t)| format!("{t}\n"))
            .collect::<String>(),
    )
    .unwrap();
    let files = parse_scores(&stdout(&score(
        model,
        &[
            "--src",
            src.to_str().unwrap(),
            "--tgt",
            tgt.to_str().unwrap(),
        ],
    )));
    assert_eq!(files, batched);

    // The training loss (label smoothing 0, no dropout) of each pair alone.
    let loaded = rnmt::checkpoint::load_model_dir(model, device()).unwrap();
    let norm = loaded.config.data.normalization;
    for (k, (s, t)) in pairs.iter().enumerate() {
        let ex = rnmt::batch::Example {
            src: loaded
                .tokenizers
                .src()
                .encode(&rnmt::corpus::normalize(s, norm))
                .unwrap(),
            tgt: loaded
                .tokenizers
                .tgt()
                .encode(&rnmt::corpus::normalize(t, norm))
                .unwrap(),
        };
        let batch = rnmt::batch::Batch::new(&[&ex], device());
        let loss = tch::no_grad(|| loaded.model.loss(&batch, false, 1.0, 0.0));
        let nll = loss.nll.double_value(&[]);
        let (total, per_token, tokens) = batched[k];
        assert_eq!(tokens as i64, loss.tokens, "pair {k}");
        assert!(
            (total + nll).abs() < 1e-3 * (1.0 + nll.abs()),
            "pair {k}: {total} vs -{nll}"
        );
        assert!((per_token - total / tokens as f64).abs() < 1e-3);
        assert!(
            (single[k].0 - total).abs() < 1e-3 * (1.0 + nll.abs()),
            "batch changes pair {k}"
        );
    }
    // A scrambled translation (its words reversed) scores lower than the reference.
    let shuffled = dir.join("shuffled.tsv");
    let text: String = pairs
        .iter()
        .map(|(s, t)| {
            let words: Vec<&str> = t.split_whitespace().rev().collect();
            format!("{s}\t{}\n", words.join(" "))
        })
        .collect();
    std::fs::write(&shuffled, text).unwrap();
    let wrong = parse_scores(&stdout(&score(model, &["-i", shuffled.to_str().unwrap()])));
    let better = (0..pairs.len())
        .filter(|&k| batched[k].1 > wrong[k].1)
        .count();
    assert!(better * 2 > pairs.len(), "{batched:?} vs {wrong:?}");
}

#[test]
fn a_pairs_file_with_one_column_is_one_clear_line() {
    let model = tiny_model();
    let dir = scratch("score-bad");
    let tsv = dir.join("bad.tsv");
    std::fs::write(&tsv, "a\tb\nonly a source\n").unwrap();
    let o = score(
        model,
        &[
            "-i",
            tsv.to_str().unwrap(),
            "-o",
            dir.join("out").to_str().unwrap(),
        ],
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("bad.tsv:2: 1 column"), "{err}");
    assert!(!dir.join("out").exists(), "a partial output file was left");
}

/// The Pharaoh links of an `--align` line: `(i, j)` pairs.
fn parse_links(text: &str) -> Vec<(usize, usize)> {
    text.split_whitespace()
        .map(|l| {
            let (i, j) = l.split_once('-').unwrap_or_else(|| panic!("not i-j: {l}"));
            (i.parse().unwrap(), j.parse().unwrap())
        })
        .collect()
}

#[test]
fn alignments_link_every_output_word_to_a_source_word() {
    let model = tiny_model();
    let dir = scratch("align");
    let pairs = dev_pairs(6);
    let att = dir.join("att.jsonl");
    let mut input = sources(&pairs);
    input.push('\n'); // an empty line: an empty alignment
    let args = ["--align", "--attention", att.to_str().unwrap()];
    let out = stdout(&translate_with(model, &args, input.as_bytes(), LIMIT));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), pairs.len() + 1);
    assert_eq!(lines[pairs.len()], "\t");
    let json = std::fs::read_to_string(&att).unwrap();
    for ((line, (src, _)), a) in lines.iter().zip(&pairs).zip(json.lines()) {
        let (text, align) = line.split_once('\t').expect("translation<TAB>alignment");
        let links = parse_links(align);
        let n_src = src.split_whitespace().count();
        let n_out = text.split_whitespace().count();
        // One link per output word, in output order, to a source word.
        assert_eq!(
            links.iter().map(|l| l.1).collect::<Vec<_>>(),
            (0..n_out).collect::<Vec<_>>()
        );
        assert!(links.iter().all(|&(i, _)| i < n_src), "{line}");
        // The rule: the source word with the most attention summed over the two words'
        // subword tokens, recomputed here from the subword attention matrix.
        let v: serde_json::Value = serde_json::from_str(a).unwrap();
        let words = |key: &str| -> Vec<Option<usize>> {
            let toks: Vec<String> = v[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_string())
                .collect();
            let mut seen = String::new();
            toks.iter()
                .map(|t| {
                    seen.push_str(t);
                    let n = seen.split_whitespace().count();
                    (t != "</s>" && !t.trim().is_empty() && n > 0).then(|| n - 1)
                })
                .collect()
        };
        let (sw, tw) = (words("source"), words("target"));
        let m: Vec<Vec<f64>> = v["attention"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap())
                    .collect()
            })
            .collect();
        for &(i, j) in &links {
            let mass = |i: usize| -> f64 {
                let mut sum = 0.0;
                for (r, t) in m.iter().zip(&tw) {
                    for (x, s) in r.iter().zip(&sw) {
                        if *t == Some(j) && *s == Some(i) {
                            sum += x;
                        }
                    }
                }
                sum
            };
            for other in 0..n_src {
                assert!(
                    mass(other) <= mass(i) + 1e-5,
                    "{line}: word {j} links {i}, not {other}"
                );
            }
        }
    }
}

/// `rnmt-serve --port 0` on `model`; returns the child and its address.
fn serve(model: &Path) -> (std::process::Child, std::net::SocketAddr) {
    use std::io::BufRead;
    let mut child = bin("rnmt-serve")
        .arg("--model")
        .arg(model)
        .args(["--port", "0", "--device", &device_arg(), "--threads", "1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            if let Some(a) = line.strip_prefix("rnmt-serve: listening on http://") {
                let _ = tx.send(a.to_string());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap()
        .parse()
        .unwrap();
    (child, addr)
}

/// `POST /translator/translate` with `Connection: close`: (status, JSON body).
fn post(addr: std::net::SocketAddr, body: &str) -> (u16, serde_json::Value) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(
        s,
        "POST /translator/translate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status = raw.split_whitespace().nth(1).unwrap().parse().unwrap();
    let (_, body) = raw.split_once("\r\n\r\n").unwrap();
    // The body is small: one chunk when chunked.
    let json = match body.find('[').or_else(|| body.find('{')) {
        Some(at) => &body[at..body.rfind([']', '}']).unwrap() + 1],
        None => body,
    };
    (status, serde_json::from_str(json).unwrap())
}

#[test]
fn the_server_meets_constraints_and_returns_alignments() {
    let model = tiny_model();
    let pairs = dev_pairs(3);
    let wanted: Vec<Vec<String>> = pairs
        .iter()
        .map(|(_, r)| reference_constraints(r))
        .collect();
    let (mut child, addr) = serve(model);
    let items: Vec<serde_json::Value> = pairs
        .iter()
        .zip(&wanted)
        .map(|((s, _), c)| serde_json::json!({"src": s, "constraints": c, "align": true}))
        .collect();
    let (status, v) = post(addr, &serde_json::Value::from(items).to_string());
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status, 200, "{v}");
    // The same as rnmt-translate --constraints --align.
    let dir = scratch("serve");
    let file = dir.join("c.txt");
    let text: String = wanted
        .iter()
        .map(|c| format!("{}\n", c.join("\t")))
        .collect();
    std::fs::write(&file, text).unwrap();
    let args = ["--constraints", file.to_str().unwrap(), "--align"];
    let cli = stdout(&translate_with(
        model,
        &args,
        sources(&pairs).as_bytes(),
        LIMIT,
    ));
    for (k, line) in cli.lines().enumerate() {
        let t = &v[0][k];
        let tgt = t["tgt"].as_str().unwrap();
        for p in &wanted[k] {
            assert!(tgt.contains(p.as_str()), "{p:?} not in {tgt:?}");
        }
        assert_eq!(format!("{tgt}\t{}", t["align"].as_str().unwrap()), line);
    }
}
