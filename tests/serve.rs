//! rnmt-serve over real HTTP on loopback: the OpenNMT-py contract, every error case as a 4xx
//! JSON answer (never a crash), concurrent clients getting what rnmt-translate gives,
//! graceful shutdown, and the web page in headless Chromium.
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// A running server, killed when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `rnmt-serve --port 0` on `models` and waits for its address.
fn start(models: &[&Path], extra: &[&str]) -> Server {
    let mut c = bin("rnmt-serve");
    for m in models {
        c.arg("--model").arg(m);
    }
    let mut child = c
        .args(["--port", "0", "--device", &device_arg(), "--threads", "1"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(a) = line.strip_prefix("rnmt-serve: listening on http://") {
                let _ = tx.send(a.to_string());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("rnmt-serve did not start listening within 60 s")
        .parse()
        .unwrap();
    Server { child, addr }
}

/// One HTTP/1.1 request with `Connection: close`; returns (status, body).
fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    // A server may answer (413) before reading a big body and close: ignore a failed write.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"));
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no end of headers");
    let mut body = raw[split + 4..].to_vec();
    if text
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let nl = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let n = usize::from_str_radix(std::str::from_utf8(&b[..nl]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[nl + 2..nl + 2 + n]);
        b = &b[nl + 2 + n + 2..];
    }
}

/// `POST /translator/translate` with `body`.
fn translate(addr: SocketAddr, body: &[u8]) -> (u16, Value) {
    json(addr, "POST", "/translator/translate", body)
}

fn json(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
    let (status, body) = http(addr, method, path, body);
    let v = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{e}: not JSON: {}", String::from_utf8_lossy(&body)));
    (status, v)
}

/// What `rnmt-translate --scores` prints for `lines`: (score, translation) per line.
fn reference(model: &Path, lines: &[&str], extra: &[&str]) -> Vec<(f64, String)> {
    let input = lines.iter().map(|l| format!("{l}\n")).collect::<String>();
    let o = translate_with(
        model,
        &[&["--scores"][..], extra].concat(),
        input.as_bytes(),
        Duration::from_secs(120),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (s, t) = l.split_once('\t').unwrap();
            (s.parse().unwrap(), t.to_string())
        })
        .collect()
}

const LINES: [&str; 6] = [
    "Open the file.",
    "Click Save to keep your changes.",
    "",
    "The document is read-only.",
    "Select a cell.",
    "Print the page.",
];

#[test]
fn translates_with_opennmt_shapes_like_rnmt_translate() {
    let model = tiny_model();
    let server = start(&[model], &[]);
    let addr = server.addr;
    assert_eq!(json(addr, "GET", "/health", b"").1["status"], "ok");
    let (status, models) = json(addr, "GET", "/translator/models", b"");
    assert_eq!(status, 200);
    assert_eq!(models[0]["model_id"], 100);
    assert_eq!(models[0]["loaded"], true);

    let body: Vec<Value> = LINES
        .iter()
        .map(|l| serde_json::json!({"src": l, "id": 100}))
        .collect();
    let (status, v) = translate(addr, serde_json::to_string(&body).unwrap().as_bytes());
    assert_eq!(status, 200, "{v}");
    let want = reference(model, &LINES, &[]);
    let got = v.as_array().unwrap();
    assert_eq!(got.len(), 1, "one list for n_best 1");
    for (i, (item, (score, text))) in got[0].as_array().unwrap().iter().zip(&want).enumerate() {
        assert_eq!(item["src"], LINES[i]);
        assert_eq!(item["tgt"], text.as_str(), "sentence {i}");
        assert_eq!(item["n_best"], 1);
        let s = item["pred_score"].as_f64().unwrap();
        assert!((s - score).abs() < 1e-3, "sentence {i}: {s} vs {score}");
    }

    // Attention on request: per translation, rows are distributions over the source tokens.
    let (status, v) = translate(addr, br#"[{"src": "Open the file.", "attention": true}, {"src": "Print the page.", "attention": true}]"#);
    assert_eq!(status, 200, "{v}");
    for item in v[0].as_array().unwrap() {
        let a = &item["attention"];
        let (src, tgt) = (
            a["source"].as_array().unwrap(),
            a["target"].as_array().unwrap(),
        );
        let rows = a["attention"].as_array().unwrap();
        assert_eq!(rows.len(), tgt.len(), "{a}");
        for r in rows {
            let r = r.as_array().unwrap();
            assert_eq!(r.len(), src.len());
            let sum: f64 = r.iter().map(|x| x.as_f64().unwrap()).sum();
            assert!((sum - 1.0).abs() < 1e-4, "row sums to {sum}");
        }
    }
    assert!(
        v[0][0].get("attention").is_some() && got[0][0].get("attention").is_none(),
        "attention only when asked for"
    );

    // Per-request beam size and n-best: n_best lists, ranked.
    let (status, v) = translate(
        addr,
        br#"[{"src": "Open the file.", "id": 100, "beam_size": 3, "n_best": 2}]"#,
    );
    assert_eq!(status, 200, "{v}");
    let lists = v.as_array().unwrap();
    assert_eq!(lists.len(), 2);
    let greedy = reference(model, &["Open the file."], &["--beam", "3"]);
    assert_eq!(lists[0][0]["tgt"], greedy[0].1.as_str());
    // The list is rnmt-translate's n-best list, in its order (ranked by the length-normalized
    // score, so the raw scores need not fall).
    let o = translate_with(
        model,
        &["--beam", "3", "--n-best", "2"],
        b"Open the file.\n",
        Duration::from_secs(120),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let listed: Vec<(f64, String)> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let mut f = l.splitn(3, '\t');
            let (_, score, text) = (f.next(), f.next().unwrap(), f.next().unwrap());
            (score.parse().unwrap(), text.to_string())
        })
        .collect();
    assert_eq!(listed.len(), 2);
    for (i, (score, text)) in listed.iter().enumerate() {
        assert_eq!(lists[i][0]["tgt"], text.as_str(), "hypothesis {i}");
        let served = lists[i][0]["pred_score"].as_f64().unwrap();
        assert!(
            (served - score).abs() < 1e-3,
            "hypothesis {i}: {served} vs {score}"
        );
    }
}

#[test]
fn bad_requests_get_json_errors_and_the_server_keeps_serving() {
    let server = start(
        &[tiny_model()],
        &[
            "--max-body-bytes",
            "2000",
            "--max-sentences",
            "4",
            "--max-input-bytes",
            "1000",
        ],
    );
    let addr = server.addr;
    let big = format!(r#"[{{"src": "{}"}}]"#, "a".repeat(3000));
    let many = format!("[{}]", [r#"{"src": "a"}"#; 5].join(","));
    let long = format!(r#"[{{"src": "{}"}}]"#, "a".repeat(1990 - 12));
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (
            "POST",
            "/translator/translate",
            b"[{\"src\": ".to_vec(),
            400,
            "malformed",
        ),
        (
            "POST",
            "/translator/translate",
            b"not json".to_vec(),
            400,
            "malformed",
        ),
        (
            "POST",
            "/translator/translate",
            b"{\"src\": \"x\"}".to_vec(),
            400,
            "malformed",
        ),
        (
            "POST",
            "/translator/translate",
            b"[]".to_vec(),
            400,
            "no sentences",
        ),
        (
            "POST",
            "/translator/translate",
            b"".to_vec(),
            400,
            "malformed",
        ),
        (
            "POST",
            "/translator/translate",
            b"[{\"src\": \"\xff\xfe\"}]".to_vec(),
            400,
            "UTF-8",
        ),
        (
            "POST",
            "/translator/translate",
            big.into_bytes(),
            413,
            "--max-body-bytes",
        ),
        (
            "POST",
            "/translator/translate",
            many.into_bytes(),
            413,
            "--max-sentences",
        ),
        (
            "POST",
            "/translator/translate",
            long.into_bytes(),
            413,
            "--max-input-bytes",
        ),
        (
            "POST",
            "/translator/translate",
            br#"[{"src": "x", "id": 9}]"#.to_vec(),
            404,
            "no model",
        ),
        (
            "POST",
            "/translator/translate",
            br#"[{"src": "x", "beam_size": 99}]"#.to_vec(),
            400,
            "beam_size",
        ),
        ("GET", "/translator/translate", vec![], 405, "not allowed"),
        ("GET", "/nothing/here", vec![], 404, "no such route"),
    ];
    for (method, path, body, want, says) in cases {
        let (status, v) = json(addr, method, path, &body);
        assert_eq!(
            status,
            want,
            "{method} {path} {:?}: {v}",
            String::from_utf8_lossy(&body)
        );
        let e = v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error field: {v}"));
        assert!(e.contains(says), "{e}");
    }
    // Still serving.
    let (status, v) = translate(addr, br#"[{"src": "Open the file."}]"#);
    assert_eq!(status, 200, "{v}");
}

/// Clients sending at once are batched together by the worker and still get exactly what
/// rnmt-translate gives each sentence alone.
#[test]
fn concurrent_clients_get_rnmt_translate_results() {
    let model = tiny_model();
    let server = start(&[model], &["--batch-size", "8"]);
    let addr = server.addr;
    let sentences: Vec<String> = head("lohelp.en-fr.test.tsv", 24)
        .lines()
        .map(|l| l.split('\t').next().unwrap().to_string())
        .collect();
    let refs: Vec<&str> = sentences.iter().map(String::as_str).collect();
    let want = reference(model, &refs, &[]);
    let threads: Vec<_> = sentences
        .chunks(3)
        .enumerate()
        .map(|(k, chunk)| {
            let chunk = chunk.to_vec();
            std::thread::spawn(move || {
                let body: Vec<Value> = chunk
                    .iter()
                    .map(|s| serde_json::json!({"src": s}))
                    .collect();
                let (status, v) = translate(addr, serde_json::to_string(&body).unwrap().as_bytes());
                assert_eq!(status, 200, "{v}");
                (k, v[0].as_array().unwrap().clone())
            })
        })
        .collect();
    for t in threads {
        let (k, items) = t.join().unwrap();
        for (j, item) in items.iter().enumerate() {
            assert_eq!(
                item["tgt"],
                want[3 * k + j].1.as_str(),
                "client {k} sentence {j}"
            );
        }
    }
}

/// Two models are served side by side under ids 100 and 101.
#[test]
fn serves_several_models() {
    let tmp = tempfile::tempdir().unwrap();
    let other = tmp.path().join("other");
    copy_dir(tiny_model(), &other);
    let server = start(&[tiny_model(), &other], &[]);
    let (_, models) = json(server.addr, "GET", "/translator/models", b"");
    let ids: Vec<u64> = models
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["model_id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [100, 101]);
    let (status, v) = translate(server.addr, br#"[{"src": "Open the file.", "id": 101}]"#);
    assert_eq!(status, 200, "{v}");
}

/// SIGTERM: the server stops accepting, answers the request in flight, and exits 0.
#[test]
fn sigterm_finishes_the_request_in_flight_and_exits_zero() {
    let mut server = start(&[tiny_model()], &["--beam", "5"]);
    let addr = server.addr;
    let body: Vec<Value> = (0..64)
        .map(|i| serde_json::json!({"src": format!("Click Save to keep your changes number {i}.")}))
        .collect();
    let body = serde_json::to_vec(&body).unwrap();
    let client = std::thread::spawn(move || http(addr, "POST", "/translator/translate", &body));
    std::thread::sleep(Duration::from_millis(300));
    let pid = server.child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let (status, body) = client.join().unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let start = Instant::now();
    loop {
        if let Some(s) = server.child.try_wait().unwrap() {
            assert!(s.success(), "exit status {s}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "still running after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        TcpStream::connect(addr).is_err(),
        "still accepting after SIGTERM"
    );
}

#[test]
fn a_missing_model_is_a_one_line_error() {
    let o = bin("rnmt-serve")
        .args([
            "--model",
            "/nonexistent/model",
            "--port",
            "0",
            "--device",
            "cpu",
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let e = stderr(&o);
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    assert!(e.contains("/nonexistent/model"), "{e}");
}

/// The web page in headless Chromium: `/?q=...` translates on load, and the rendered page
/// (DOM and a screenshot) shows the translation that the API gives.
#[test]
fn the_web_page_shows_the_translation_in_a_browser() {
    let chromium = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find(|b| {
            std::process::Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("no Chromium: scripts/setup.sh installs Debian's chromium package");
    let server = start(&[tiny_model()], &[]);
    let (_, page) = http(server.addr, "GET", "/", b"");
    let page = String::from_utf8(page).unwrap();
    // Nothing from outside: the only absolute URL is the SVG namespace name (not fetched).
    assert!(page.contains("<title>rnmt</title>"));
    let outside = page.replace("\"http://www.w3.org/2000/svg\"", "");
    assert!(
        !outside.contains("http://") && !outside.contains("https://") && !outside.contains("//cdn"),
        "the page must load nothing from outside"
    );
    let (_, v) = translate(server.addr, br#"[{"src": "Open the file."}]"#);
    let want = v[0][0]["tgt"].as_str().unwrap().to_string();
    assert!(!want.is_empty());
    let url = format!("http://{}/?q=Open%20the%20file.", server.addr);
    let tmp = tempfile::tempdir().unwrap();
    let shot = tmp.path().join("page.png");
    let common_args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--virtual-time-budget=15000",
        "--window-size=900,500",
    ];
    let profile = format!("--user-data-dir={}", tmp.path().join("profile").display());
    let dom = std::process::Command::new(chromium)
        .args(common_args)
        .arg(&profile)
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .unwrap();
    let dom_text = String::from_utf8_lossy(&dom.stdout);
    let html_want = want
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    assert!(
        dom_text.contains(&format!("<div class=\"tgt\">{html_want}<span")),
        "the rendered page lacks the translation {want:?}: {dom_text}"
    );
    let o = std::process::Command::new(chromium)
        .args(common_args)
        .arg(&profile)
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 5000,
        "{} bytes",
        png.len()
    );
    if let Some(keep) = std::env::var_os("RNMT_KEEP_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
}

#[test]
fn attention_from_a_model_without_it_is_a_400() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m");
    train_ok(
        tmp.path(),
        &model,
        &["--max-steps", "2", "--set", "model.decoder.attention=none"],
    );
    let server = start(&[&model], &[]);
    let (_, models) = json(server.addr, "GET", "/translator/models", b"");
    assert_eq!(models[0]["attention"], false);
    let (status, v) = translate(
        server.addr,
        br#"[{"src": "Open the file.", "attention": true}]"#,
    );
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("has no attention"),
        "{v}"
    );
    let (status, _) = translate(server.addr, br#"[{"src": "Open the file."}]"#);
    assert_eq!(status, 200);
}

// ---- Issue 21: a server that holds under abuse. ----

/// Sends raw bytes on a new connection and reads what comes back until the server closes
/// or `limit` passes: `(bytes, closed by the server within the limit)`.
fn raw_exchange(
    addr: SocketAddr,
    bytes: &[u8],
    shutdown_write: bool,
    limit: Duration,
) -> (Vec<u8>, bool) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(limit)).unwrap();
    let _ = s.write_all(bytes);
    if shutdown_write {
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (out, true),
            Err(_) => return (out, false),
        }
    }
}

fn status_of(raw: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(raw);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// Item 5: idle connections, partial heads and bodies that stop short are closed by the
/// header and body timeouts; connections beyond the cap are closed at once; an incomplete
/// body is a 400, `Content-Length` with `Transfer-Encoding` a 400; memory stays bounded;
/// and the server answers throughout.
#[test]
fn connections_are_bounded_in_number_and_time() {
    let server = start(
        &[tiny_model()],
        &[
            "--max-connections",
            "16",
            "--header-timeout",
            "1s",
            "--body-timeout",
            "1s",
        ],
    );
    let addr = server.addr;
    let deadline = Duration::from_secs(10);
    // Idle connections and a partial head: closed by the header timeout.
    let t0 = Instant::now();
    let idle: Vec<TcpStream> = (0..8).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let (_, closed) = raw_exchange(
        addr,
        b"POST /translator/translate HTTP/1.1\r\nHost: x\r\n",
        false,
        deadline,
    );
    assert!(
        closed,
        "a partial head was kept open for {:?}",
        t0.elapsed()
    );
    for mut s in idle {
        s.set_read_timeout(Some(deadline)).unwrap();
        let mut b = [0u8; 64];
        assert!(
            !matches!(s.read(&mut b), Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut),
            "an idle connection was kept open"
        );
    }
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());

    let head = |len: usize, extra: &str| {
        format!("POST /translator/translate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n{extra}\r\n")
    };
    let part = br#"[{"src": "Open the file.", "id": 100}, {"#; // 43 bytes of 1000
                                                               // A body that stops short and waits: 408 after the body timeout.
    let mut req = head(1000, "").into_bytes();
    req.extend_from_slice(part);
    let (raw, closed) = raw_exchange(addr, &req, false, deadline);
    assert_eq!(
        status_of(&raw),
        Some(408),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    assert!(closed);
    // A body cut by the client: 400, not 413.
    let (raw, _) = raw_exchange(addr, &req, true, deadline);
    assert_eq!(
        status_of(&raw),
        Some(400),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    // Content-Length together with chunked: 400.
    let body = r#"[{"src": "Open the file."}]"#;
    let mut req = head(body.len(), "Transfer-Encoding: chunked\r\n").into_bytes();
    req.extend_from_slice(format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len()).as_bytes());
    let (raw, _) = raw_exchange(addr, &req, false, deadline);
    assert_eq!(
        status_of(&raw),
        Some(400),
        "{}",
        String::from_utf8_lossy(&raw)
    );

    // 200 connections at once against a cap of 16: the rest are closed at once, and the
    // server still answers once they go.
    let many: Vec<TcpStream> = (0..200)
        .filter_map(|_| TcpStream::connect(addr).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let (mut closed_at_once, mut open) = (0, 0);
    for s in &many {
        s.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        match (&*s).read(&mut b) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => open += 1,
            _ => closed_at_once += 1,
        }
    }
    // The cap, and the overflow lane that answers /health meanwhile (issue 29 item 8).
    let lane = rnmt::serve::overflow::OVERFLOW_LANE;
    assert!(
        (1..=16 + lane).contains(&open),
        "{open} connections open at a cap of 16 (and {lane} in the overflow lane)"
    );
    assert!(
        closed_at_once >= 150,
        "only {closed_at_once} of 200 were closed at the cap of 16"
    );
    drop(many);
    let t = Instant::now();
    let ok = loop {
        let (raw, _) = raw_exchange(
            addr,
            b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            false,
            deadline,
        );
        if status_of(&raw) == Some(200) {
            break true;
        }
        if t.elapsed() > Duration::from_secs(10) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(ok, "/health did not answer after the connections went");

    // 16 connections sending almost 1 MiB of body each: bounded memory.
    let before = rss_kb(server.child.id());
    let big = vec![b'x'; (1 << 20) - 1];
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let mut req = head(big.len(), "").into_bytes();
            req.extend_from_slice(&big);
            std::thread::spawn(move || raw_exchange(addr, &req, false, deadline))
        })
        .collect();
    for t in threads {
        let (raw, _) = t.join().unwrap();
        assert!(
            matches!(status_of(&raw), Some(400) | None),
            "{}",
            String::from_utf8_lossy(&raw[..raw.len().min(200)])
        );
    }
    let grew = rss_kb(server.child.id()).saturating_sub(before);
    assert!(grew < 200 * 1024, "RSS grew by {grew} kB");
    let (status, v) = translate(addr, br#"[{"src": "Open the file.", "id": 100}]"#);
    assert_eq!(status, 200, "{v}");
}

/// The HTTP fuzz target: random request lines, headers and bodies over loopback. Every
/// answer is an HTTP response below 500 (or a closed connection); the server never stops and
/// translates correctly afterwards. `RNMT_FUZZ_CASES=N` runs more by hand.
#[test]
fn fuzz_the_http_api() {
    use rnmt::rng::Rng;
    let cases: u64 = std::env::var("RNMT_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120);
    let server = start(
        &[tiny_model()],
        &["--header-timeout", "1s", "--body-timeout", "1s"],
    );
    let addr = server.addr;
    let (status, expected) = translate(addr, br#"[{"src": "Open the file.", "id": 100}]"#);
    assert_eq!(status, 200);
    let mut rng = Rng::new(2112);
    let pick = |rng: &mut Rng, xs: &[&str]| xs[rng.below(xs.len() as u64) as usize].to_string();
    let started = Instant::now();
    for case in 0..cases {
        let method = pick(
            &mut rng,
            &[
                "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "POST ", "G\0T", "",
            ],
        );
        let path = pick(
            &mut rng,
            &[
                "/translator/translate",
                "/health",
                "/",
                "/translator/models",
                "/../etc/passwd",
                "/%ff",
                "*",
                "/translator/translate?x=1",
            ],
        );
        let body: Vec<u8> = match rng.below(6) {
            0 => br#"[{"src": "Open the file.", "id": 100}]"#.to_vec(),
            1 => br#"[{"src": "x", "beam_size": 16, "n_best": 16, "attention": true}]"#.to_vec(),
            2 => (0..rng.below(300)).map(|_| rng.next_u64() as u8).collect(),
            3 => {
                let mut b = br#"[{"src": "Open the file.", "id": 100}]"#.to_vec();
                let i = rng.below(b.len() as u64) as usize;
                b[i] = rng.next_u64() as u8;
                b
            }
            4 => format!(
                "[{}]",
                vec![r#"{"src": "\ud800"}"#; rng.below(4) as usize].join(",")
            )
            .into_bytes(),
            _ => Vec::new(),
        };
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: x\r\n");
        for _ in 0..rng.below(4) {
            head.push_str(&pick(
                &mut rng,
                &[
                    "Content-Type: application/json\r\n",
                    "Transfer-Encoding: chunked\r\n",
                    "Content-Length: 5\r\n",
                    "Content-Length: -1\r\n",
                    "Content-Length: 99999999999999999999\r\n",
                    "Expect: 100-continue\r\n",
                    "Connection: keep-alive\r\n",
                    "X: \u{7f}\u{1}\r\n",
                    ": nothing\r\n",
                ],
            ));
        }
        let cl = rng.below(3);
        if cl == 0 {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("Connection: close\r\n\r\n");
        let mut req = head.into_bytes();
        req.extend_from_slice(&body);
        let (raw, _) = raw_exchange(addr, &req, rng.below(2) == 0, Duration::from_secs(20));
        if !raw.is_empty() {
            let status = status_of(&raw).unwrap_or_else(|| {
                panic!("case {case}: not HTTP: {:?}", String::from_utf8_lossy(&raw))
            });
            assert!(
                status < 500,
                "case {case}: {status}: {}",
                String::from_utf8_lossy(&raw)
            );
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(180),
        "took {:?}",
        started.elapsed()
    );
    let (status, v) = translate(addr, br#"[{"src": "Open the file.", "id": 100}]"#);
    assert_eq!((status, &v), (200, &expected));
}
