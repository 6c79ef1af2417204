//! Issue 29 (reliability, round three) and the interrupted output of issue 27 item 6: each
//! test failed before its fix. Hang and memory cases run with a deadline; nodes (FIFOs, zero
//! devices) are made in temporary directories, never in the machine's /dev.
mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use rnmt::data::prepare::{read_manifest, Manifest};
use rnmt::data::store::Shard;

/// Asserts that `o` failed with status 1 and one line on stderr containing `needle`.
fn assert_one_line_error(o: &Output, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
    assert_eq!(err.trim().lines().count(), 1, "not one line: {err}");
}

fn prepare(train: &Path, out: &Path, config: &Path, extra: &[&str]) -> Output {
    bin("rnmt-prepare")
        .arg("--train")
        .arg(train)
        .arg("--out")
        .arg(out)
        .arg("--config")
        .arg(config)
        .args(extra)
        .output()
        .unwrap()
}

fn mkfifo(p: &Path) {
    assert!(Command::new("mkfifo").arg(p).status().unwrap().success());
}

/// `mknod` a zero device (1,5) at `p`; false where not permitted (needs root).
fn mkzero(p: &Path) -> bool {
    Command::new("mknod")
        .arg(p)
        .args(["c", "1", "5"])
        .status()
        .is_ok_and(|s| s.success())
}

/// Every file under `dir` with its bytes, sorted.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            out.extend(snapshot(&e.path()));
        } else {
            out.push((e.path(), std::fs::read(e.path()).unwrap()));
        }
    }
    out.sort();
    out
}

/// Item 1: rnmt-prepare and rnmt-train refuse a non-empty folder that is not a prepared
/// folder, touching nothing in it (a user's `corpus-*` folder, a model's tokenizer); a
/// prepare again deletes only rnmt's own files.
#[test]
fn a_folder_that_is_not_a_prepared_one_is_never_written() {
    let tmp = tempfile::tempdir().unwrap();
    let (train, valid) = tiny_corpus(tmp.path());
    let config = tiny_config(tmp.path());
    let user = tmp.path().join("user");
    std::fs::create_dir_all(user.join("corpus-2024-interviews")).unwrap();
    std::fs::write(user.join("corpus-2024-interviews/notes.txt"), "mine").unwrap();
    std::fs::create_dir_all(user.join("corpus-0")).unwrap();
    std::fs::write(user.join("corpus-0/shard-00000.bin"), "mine too").unwrap();
    std::fs::write(user.join("tokenizer.json"), "{}").unwrap();
    let before = snapshot(&user);
    let o = prepare(&train, &user, &config, &[]);
    assert_one_line_error(&o, "not empty and not a prepared folder");
    let o = train_command(&train, &valid, &tmp.path().join("m"), Some(&config))
        .arg("--data-dir")
        .arg(&user)
        .args(["--max-steps", "1"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("not empty and not a prepared folder"));
    assert_eq!(snapshot(&user), before);

    // A model directory: its tokenizer stays the model's.
    let model = tmp.path().join("model");
    copy_dir(tiny_model(), &model);
    let before = snapshot(&model);
    let o = prepare(&valid, &model, &config, &[]);
    assert_one_line_error(&o, "not empty and not a prepared folder");
    assert_eq!(snapshot(&model), before);

    // A prepared folder with a user's file in a corpus folder: prepared again, the file kept.
    let prepared = tmp.path().join("prepared");
    assert!(prepare(&train, &prepared, &config, &[]).status.success());
    std::fs::write(prepared.join("corpus-0/notes.txt"), "mine").unwrap();
    std::fs::write(prepared.join("README"), "mine").unwrap();
    let o = prepare(&train, &prepared, &config, &["--force"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(prepared.join("corpus-0/notes.txt")).unwrap(),
        "mine"
    );
    assert_eq!(
        std::fs::read_to_string(prepared.join("README")).unwrap(),
        "mine"
    );
}

/// Item 2: a prepared folder in use (its shared lock held, as by a running rnmt-train) is
/// not prepared into by another config; a foreign tokenizer copied in is detected by the
/// manifest's tokenizer hash and prepared again.
#[test]
fn a_shared_data_dir_is_locked_and_its_tokenizer_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let (train, valid) = tiny_corpus(tmp.path());
    let config = tiny_config(tmp.path());
    let prepared = tmp.path().join("prepared");
    assert!(prepare(&train, &prepared, &config, &[]).status.success());
    let before = snapshot(&prepared);
    {
        let _in_use = rnmt::data::folder::lock_shared(&prepared)
            .unwrap()
            .expect("a prepared folder");
        let o = prepare(
            &train,
            &prepared,
            &config,
            &["--set", "data.tokenizer.vocab_size=300"],
        );
        assert_one_line_error(&o, "in use by another rnmt-train or rnmt-prepare");
        let o = train_command(&valid, &valid, &tmp.path().join("m"), Some(&config))
            .arg("--data-dir")
            .arg(&prepared)
            .args(["--max-steps", "1"])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stderr(&o).contains("in use by another"), "{}", stderr(&o));
        assert_eq!(snapshot(&prepared), before);
    }
    // Another corpus's tokenizer copied in: not "prepared earlier".
    let other = tmp.path().join("other");
    assert!(prepare(
        &valid,
        &other,
        &config,
        &["--set", "data.tokenizer.vocab_size=300"]
    )
    .status
    .success());
    std::fs::copy(
        other.join("tokenizer.json"),
        prepared.join("tokenizer.json"),
    )
    .unwrap();
    let o = prepare(&train, &prepared, &config, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("tokenizer files hash to") && stderr(&o).contains("preparing it again"),
        "{}",
        stderr(&o)
    );
    let no_manifest = |v: Vec<(PathBuf, Vec<u8>)>| -> Vec<(PathBuf, Vec<u8>)> {
        v.into_iter()
            .filter(|(p, _)| !p.ends_with("manifest.json"))
            .collect()
    };
    assert_eq!(no_manifest(snapshot(&prepared)), no_manifest(before));
}

/// A tiny prepared folder and its request's sources and vocabulary, for the forgery tests.
struct Folder {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    sources: Vec<String>,
    vocab: usize,
}

fn prepared_folder(extra: &[&str]) -> Folder {
    let tmp = tempfile::tempdir().unwrap();
    let (train, _) = tiny_corpus(tmp.path());
    let config = tiny_config(tmp.path());
    let dir = tmp.path().join("p");
    let o = prepare(&train, &dir, &config, extra);
    assert!(o.status.success(), "{}", stderr(&o));
    let vocab = rnmt::tokenizer::Tokenizers::load_dir(&dir)
        .unwrap()
        .tgt()
        .vocab_size();
    Folder {
        sources: vec![train.display().to_string()],
        _tmp: tmp,
        dir,
        vocab,
    }
}

fn save_manifest(dir: &Path, m: &Manifest) {
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec_pretty(m).unwrap(),
    )
    .unwrap();
}

fn open(f: &Folder) -> Result<(), String> {
    let m = read_manifest(&f.dir).ok_or("no manifest")?;
    rnmt::data::open_cached(&f.dir, &m, &f.sources, None)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Writes `bytes` as shard 0 and records its real size and checksum in the manifest (a
/// forger who also edits the manifest), with the content hash recomputed.
fn forge_shard(f: &Folder, bytes: &[u8]) {
    let mut m = read_manifest(&f.dir).unwrap();
    let file = f.dir.join(&m.corpora[0].shards[0].file);
    std::fs::write(&file, bytes).unwrap();
    let s = &mut m.corpora[0].shards[0];
    s.bytes = bytes.len() as u64;
    s.checksum = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(bytes));
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for s in m.corpora.iter().flat_map(|c| &c.shards) {
        h.update(s.checksum.as_bytes());
        h.update(&s.pairs.to_le_bytes());
    }
    m.content_hash = format!("{:016x}", h.digest());
    save_manifest(&f.dir, &m);
}

/// Item 3: the checks of a prepared folder: checksums, paths inside it, corpora listed once,
/// a shard list that is not empty. Each is one line naming the folder.
#[test]
fn a_forged_prepared_folder_is_not_trained_on() {
    let f = prepared_folder(&[]);
    assert_eq!(open(&f), Ok(()));
    let m = read_manifest(&f.dir).unwrap();
    let shard = f.dir.join(&m.corpora[0].shards[0].file);
    let original = std::fs::read(&shard).unwrap();
    // Every id set to 7, same size.
    let pairs = u64::from_le_bytes(original[16..24].try_into().unwrap()) as usize;
    let ids_at = 32 + 16 * pairs + 8;
    let mut forged = original.clone();
    for c in forged[ids_at..].chunks_exact_mut(2) {
        c.copy_from_slice(&7u16.to_le_bytes());
    }
    std::fs::write(&shard, &forged).unwrap();
    let e = open(&f).unwrap_err();
    assert!(
        e.contains("damaged prepared corpus") && e.contains("xxh3"),
        "{e}"
    );
    std::fs::write(&shard, &original).unwrap();

    // A shard outside the folder.
    let mut outside = m.clone();
    outside.corpora[0].shards[0].file = "../other/corpus-0/shard-00000.bin".into();
    save_manifest(&f.dir, &outside);
    let e = open(&f).unwrap_err();
    assert!(e.contains("only \"corpus-0/shard-00000.bin\""), "{e}");
    // A corpus listed three times.
    let mut thrice = m.clone();
    thrice.corpora = vec![m.corpora[0].clone(); 3];
    save_manifest(&f.dir, &thrice);
    let e = open(&f).unwrap_err();
    assert!(e.contains("lists 3 corpora, 1 were asked for"), "{e}");
    // No shard at all.
    let mut empty = m.clone();
    empty.corpora[0].shards.clear();
    save_manifest(&f.dir, &empty);
    let e = open(&f).unwrap_err();
    assert!(e.contains("lists no shard"), "{e}");
    assert!(!e.contains('\n'), "{e}");
    save_manifest(&f.dir, &m);
    assert_eq!(open(&f), Ok(()));
}

/// Item 4: forged shards whose sizes match (the manifest forged along): a huge source
/// length, a wrong offset, a pair count wrapped by 2^60, an id beyond the vocabulary; each
/// is one clear error when the shard is opened, never a panic.
#[test]
fn forged_shards_are_errors_not_panics() {
    let f = prepared_folder(&[]);
    let m = read_manifest(&f.dir).unwrap();
    let shard = f.dir.join(&m.corpora[0].shards[0].file);
    let original = std::fs::read(&shard).unwrap();
    let pairs = u64::from_le_bytes(original[16..24].try_into().unwrap()) as usize;
    let offsets_at = 32 + 8 * pairs;
    let ids_at = offsets_at + 8 * (pairs + 1);
    let mut cases: Vec<(&str, Vec<u8>, &str)> = Vec::new();
    let mut b = original.clone();
    b[32..36].copy_from_slice(&4_000_000_000u32.to_le_bytes());
    cases.push(("source length", b, "ends past the"));
    let mut b = original.clone();
    b[offsets_at + 8..offsets_at + 16].copy_from_slice(&8_000_044_410u64.to_le_bytes());
    cases.push(("offset", b, "does not start where"));
    let mut b = original.clone();
    let n = pairs as u64 + (1 << 60);
    b[16..24].copy_from_slice(&n.to_le_bytes());
    cases.push(("pair count + 2^60", b, "its header says"));
    let mut b = original.clone();
    b[ids_at..ids_at + 2].copy_from_slice(&60_000u16.to_le_bytes());
    cases.push(("id beyond the vocabulary", b, "the vocabulary has"));
    for (what, bytes, needle) in cases {
        forge_shard(&f, &bytes);
        let got = std::panic::catch_unwind(|| open(&f));
        let e = got
            .unwrap_or_else(|_| panic!("{what}: panicked"))
            .unwrap_err();
        assert!(e.contains(needle), "{what}: {e}");
        assert!(e.contains("shard-00000.bin"), "{what}: {e}");
        assert!(e.contains("delete it or run rnmt-prepare"), "{what}: {e}");
        let direct = std::panic::catch_unwind(|| Shard::open(&shard).map(|s| s.len()));
        assert!(direct.is_ok(), "{what}: Shard::open panicked");
    }
    assert!(f.vocab < 60_000);
}

/// Item 5: decode.json, last/trainer.json and manifest.json that are FIFOs, zero devices or
/// huge are refused before they are read: within a deadline, with bounded memory.
#[test]
fn model_and_data_files_are_read_with_a_bound() {
    let tmp = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let rss_before = rnmt::memory::peak_rss_bytes().unwrap_or(0);
    for kind in ["fifo", "zero", "huge"] {
        let d = tmp.path().join(kind);
        std::fs::create_dir_all(d.join("last")).unwrap();
        for p in [
            d.join("decode.json"),
            d.join("last/trainer.json"),
            d.join("manifest.json"),
        ] {
            match kind {
                "fifo" => mkfifo(&p),
                "zero" => {
                    if !mkzero(&p) {
                        eprintln!("zero device part skipped: mknod not permitted");
                        continue;
                    }
                }
                _ => {
                    let f = std::fs::File::create(&p).unwrap();
                    f.set_len(2 << 30).unwrap(); // sparse: 2 GB, no disk
                }
            }
        }
        if d.join("decode.json").exists() {
            let e = rnmt::calibrate::DecodeDefaults::load(&d)
                .unwrap_err()
                .to_string();
            assert!(e.contains("decode.json"), "{kind}: {e}");
            let e = rnmt::checkpoint::read_trainer_file(&d.join("last/trainer.json"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("trainer.json"), "{kind}: {e}");
            assert!(read_manifest(&d).is_none(), "{kind}");
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    let grown = rnmt::memory::peak_rss_bytes()
        .unwrap_or(0)
        .saturating_sub(rss_before);
    assert!(grown < 512 << 20, "peak RSS grew by {grown} bytes");

    // The binaries: a FIFO decode.json in a model directory does not hang rnmt-translate.
    let m = tmp.path().join("m");
    copy_dir(tiny_model(), &m);
    let _ = std::fs::remove_file(m.join("decode.json"));
    mkfifo(&m.join("decode.json"));
    let o = translate_with(&m, &[], b"hi\n", Duration::from_secs(30));
    assert_one_line_error(&o, "not a regular file");
    assert!(stderr(&o).contains("decode.json"), "{}", stderr(&o));
}

/// Item 6: sizing flags beyond what they can use are one line before anything is allocated
/// (the model is not even loaded: the path does not exist), never an abort or a panic.
#[test]
fn sizing_flags_are_bounded() {
    let missing = Path::new("/nonexistent-model-dir");
    let max = u64::MAX.to_string();
    for (flag, value, needle) in [
        (
            "--window",
            max.as_str(),
            "--window 18446744073709551615 is more than",
        ),
        ("--window", "30000000", "--window 30000000 is more than"),
        (
            "--batch-size",
            "100000000",
            "--batch-size 100000000 is more than",
        ),
        ("--workers", "1000", "--workers 1000 is more than"),
    ] {
        let started = Instant::now();
        let o = translate_with(missing, &[flag, value], b"a\nb\n", Duration::from_secs(30));
        assert_one_line_error(&o, needle);
        assert!(started.elapsed() < Duration::from_secs(10));
    }
    for (flag, value, needle) in [
        (
            "--queue",
            max.as_str(),
            "--queue 18446744073709551615 is more than",
        ),
        ("--queue", "100000000", "--queue 100000000 is more than"),
        (
            "--max-connections",
            max.as_str(),
            "--max-connections 18446744073709551615",
        ),
        ("--beam", "32", "--beam 32 is more than --max-beam 16"),
    ] {
        let mut c = bin("rnmt-serve");
        c.arg("--model")
            .arg(tiny_model())
            .args(["--port", "0", "--device", "cpu", flag, value])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let o = wait_with_deadline(c.spawn().unwrap(), Duration::from_secs(30), "rnmt-serve");
        assert_one_line_error(&o, needle);
    }
    let tmp = tempfile::tempdir().unwrap();
    let (train, _) = tiny_corpus(tmp.path());
    let config = tiny_config(tmp.path());
    let o = prepare(
        &train,
        &tmp.path().join("p"),
        &config,
        &["--set", "data.tokenizer.vocab_size=1000000000000"],
    );
    assert_one_line_error(&o, "data.tokenizer.vocab_size");
    assert!(!tmp.path().join("p").exists());
}

/// Item 7: huge data.weights are one line, not a wrapped count or an abort.
#[test]
fn huge_data_weights_are_refused() {
    let f = prepared_folder(&[]);
    let m = read_manifest(&f.dir).unwrap();
    for weights in [
        vec![1e300, 1.0],
        vec![1_500_000.0, 1.0],
        vec![1_000_000.0, 1.0],
    ] {
        let (stores, _) = rnmt::data::open_cached(&f.dir, &m, &f.sources, None).unwrap();
        let (again, _) = rnmt::data::open_cached(&f.dir, &m, &f.sources, None).unwrap();
        let two: Vec<_> = stores.into_iter().chain(again).collect();
        let e = rnmt::data::mixer::TrainSet::new(two, &weights, 0)
            .err()
            .expect("refused")
            .to_string();
        assert!(
            e.contains("data.weights[0]") && e.contains("at most"),
            "{weights:?}: {e}"
        );
        assert!(!e.contains("18446744073709551615"), "{e}");
    }
}

/// Item 9: decode.json names the weights it was calibrated on; with other weights in
/// model.safetensors it is not used (one warning line) and counts as not calibrated.
#[test]
fn stale_decoding_defaults_are_not_used() {
    use rnmt::calibrate::DecodeDefaults;
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    copy_dir(tiny_model(), &m);
    let d = DecodeDefaults {
        alpha: 2.9,
        stop: rnmt::config::BeamStop::Finished,
        calibration: None,
        weights_sha256: None,
    };
    d.save(&m).unwrap();
    let saved = DecodeDefaults::load(&m).unwrap().unwrap();
    let digest = rnmt::digest::recorded(&m.join("model.safetensors")).expect("a sealed model");
    assert_eq!(saved.weights_sha256.as_deref(), Some(digest.as_str()));
    assert!(DecodeDefaults::calibrated(&m));
    // Other weights (as after a crash between averaging and calibrating).
    let mut stale = saved.clone();
    stale.weights_sha256 = Some("0".repeat(64));
    std::fs::write(m.join("decode.json"), serde_json::to_vec(&stale).unwrap()).unwrap();
    assert!(!DecodeDefaults::calibrated(&m));
    assert_eq!(DecodeDefaults::load_current(&m).unwrap(), None);
    let o = translate_with(&m, &[], b"hi\n", Duration::from_secs(60));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!(
            "was calibrated on weights with sha256 {}, but",
            "0".repeat(64)
        )) && stderr(&o).contains(&format!("has sha256 {digest}")),
        "{}",
        stderr(&o)
    );
}

/// Issue 27 item 6 and issue 29 item 10: `-o FILE` is written as it goes; SIGTERM leaves
/// the lines so far in FILE.partial (whole lines, in order) and FILE untouched; `-i -`,
/// `-o -` and `-o /dev/stdout` into a pipe work; `--progress` prints lines/s and the total.
#[test]
fn interrupted_output_survives_and_stdio_dashes_work() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model();
    let lines: String = (0..40).map(|i| format!("open the file {i}\n")).collect();
    let input = tmp.path().join("in.txt");
    std::fs::write(&input, &lines).unwrap();
    let reference = translate_with(model, &[], lines.as_bytes(), Duration::from_secs(120));
    assert!(reference.status.success(), "{}", stderr(&reference));
    for args in [&["-i", "-", "-o", "-"][..], &["-o", "/dev/stdout"][..]] {
        let o = translate_with(model, args, lines.as_bytes(), Duration::from_secs(120));
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        assert_eq!(o.stdout, reference.stdout, "{args:?}");
    }
    let out = tmp.path().join("out.txt");
    let o = translate_with(
        model,
        &[
            "-i",
            input.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--progress",
        ],
        b"",
        Duration::from_secs(120),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(&out).unwrap(), reference.stdout);
    assert!(stderr(&o).contains("40/40 lines"), "{}", stderr(&o));
    assert!(stderr(&o).contains("lines/s"), "{}", stderr(&o));

    // A long job stopped by SIGTERM.
    std::fs::write(&out, "old\n").unwrap();
    let long: String = lines.repeat(200);
    std::fs::write(&input, &long).unwrap();
    let partial = tmp.path().join("out.txt.partial");
    let child = bin("rnmt-translate")
        .arg("--model")
        .arg(model)
        .args([
            "--device",
            "cpu",
            "--threads",
            "1",
            "--batch-size",
            "1",
            "--window",
            "1",
        ])
        .arg("-i")
        .arg(&input)
        .arg("-o")
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while std::fs::read(&partial).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count()) < 5 {
        assert!(started.elapsed() < Duration::from_secs(60), "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let o = wait_with_deadline(child, Duration::from_secs(30), "rnmt-translate");
    assert_eq!(o.status.code(), Some(130), "{:?}: {}", o.status, stderr(&o));
    assert!(stderr(&o).contains("interrupted"), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "old\n");
    let mut got = Vec::new();
    std::fs::File::open(&partial)
        .unwrap()
        .read_to_end(&mut got)
        .unwrap();
    assert!(got.ends_with(b"\n"));
    let full: Vec<u8> = reference.stdout.repeat(200);
    assert!(
        full.starts_with(&got),
        "the partial lines are not the first translations"
    );
    let n = got.iter().filter(|&&c| c == b'\n').count();
    assert!(
        stderr(&o).contains(&format!("the {n} line(s)")),
        "{n}: {}",
        stderr(&o)
    );
    let _ = std::io::stderr().flush();
}

/// Starts `rnmt-serve --port 0` on the tiny model with `extra`; returns it and its address.
fn start_server(extra: &[&str]) -> (std::process::Child, std::net::SocketAddr) {
    use std::io::BufRead;
    let mut child = bin("rnmt-serve")
        .arg("--model")
        .arg(tiny_model())
        .args(["--port", "0", "--device", "cpu", "--threads", "1"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
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
        .expect("rnmt-serve did not start")
        .parse()
        .unwrap();
    (child, addr)
}

/// A connection from the loopback address `from` (127.0.0.0/8) with a small receive buffer.
fn connect_from(from: &str, to: std::net::SocketAddr) -> std::net::TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.set_recv_buffer_size(4096).unwrap();
        s.bind(format!("{from}:0").parse().unwrap()).unwrap();
        let s = s.connect(to).await.unwrap().into_std().unwrap();
        s.set_nonblocking(false).unwrap(); // tokio's sockets are non-blocking
        s
    })
}

/// One `GET /health` on a new connection: its status, or `None` when none came in time.
fn probe(addr: std::net::SocketAddr) -> Option<u16> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out)
        .strip_prefix("HTTP/1.1 ")?
        .get(..3)?
        .parse()
        .ok()
}

/// Item 8 (scaled to seconds): with the connection cap full (idle connections of two
/// clients), `/health` is still answered and a client beyond its own cap is refused (503);
/// a client that pipelines requests and never reads is closed by the write timeout.
#[test]
fn clients_that_stop_reading_are_timed_out() {
    let (mut child, addr) = start_server(&[
        "--max-connections",
        "4",
        "--max-client-connections",
        "2",
        "--write-timeout",
        "1s",
    ]);
    let idle: Vec<_> = ["127.0.0.1", "127.0.0.1", "127.0.0.2", "127.0.0.2"]
        .iter()
        .map(|from| connect_from(from, addr))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut third = connect_from("127.0.0.2", addr);
    third
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    third
        .write_all(b"GET /translator/models HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    let _ = third.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.starts_with("HTTP/1.1 503") && text.contains("\"error\""),
        "{text}"
    );
    let answered = (0..5).filter(|_| probe(addr) == Some(200)).count();
    assert_eq!(
        answered, 5,
        "/health answered {answered} of 5 with the cap full"
    );
    drop(idle);

    // A client that pipelines 100,000 requests (11 MB of answers) and never reads.
    let mut hog = connect_from("127.0.0.3", addr);
    let mut w = hog.try_clone().unwrap();
    w.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    let pipelined: Vec<u8> = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n".repeat(100_000);
    std::thread::spawn(move || {
        let _ = w.write_all(&pipelined);
    });
    std::thread::sleep(Duration::from_secs(5));
    // Closed meanwhile: what is buffered drains at once, then the end (or a reset).
    hog.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let closed = loop {
        match hog.read(&mut buf) {
            Ok(0) => break true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    assert!(closed, "a client that never reads was kept open");
    assert_eq!(probe(addr), Some(200));
    let _ = child.kill();
    let _ = child.wait();
}

/// Item 4, the rest: a shard truncated while rnmt-train trains on it. Shards are read with
/// positioned reads, not memory-mapped, so the next batch read is the one-line "damaged
/// prepared corpus" error with status 1, never a SIGBUS death.
#[test]
fn a_shard_truncated_while_training_is_an_error_not_sigbus() {
    let f = prepared_folder(&[]);
    let (train, valid) = tiny_corpus(f._tmp.path());
    let config = f._tmp.path().join("tiny.toml");
    let model = f._tmp.path().join("m");
    let child = train_command(&train, &valid, &model, Some(&config))
        .arg("--data-dir")
        .arg(&f.dir)
        .args(["--max-steps", "100000", "--set", "train.valid_every=1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Training is under way once the first validation is recorded.
    let started = Instant::now();
    while !model.join("metrics.csv").exists() {
        assert!(started.elapsed() < Duration::from_secs(120), "no step");
        std::thread::sleep(Duration::from_millis(50));
    }
    let m = read_manifest(&f.dir).unwrap();
    for s in m.corpora.iter().flat_map(|c| &c.shards) {
        std::fs::OpenOptions::new()
            .write(true)
            .open(f.dir.join(&s.file))
            .unwrap()
            .set_len(32)
            .unwrap();
    }
    let o = wait_with_deadline(child, Duration::from_secs(120), "rnmt-train");
    let err = stderr(&o);
    assert_eq!(
        o.status.code(),
        Some(1),
        "no signal death: {:?} {err}",
        o.status
    );
    let damaged: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("damaged prepared corpus"))
        .collect();
    assert_eq!(damaged.len(), 1, "{err}");
    assert!(damaged[0].contains("shard-00000.bin"), "{err}");
    assert!(
        damaged[0].contains("delete it or run rnmt-prepare"),
        "{err}"
    );
    assert_eq!(err.trim().lines().last(), Some(damaged[0]), "{err}");
}
