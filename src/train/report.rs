//! What a run shows and records: a progress bar on a terminal or a step line every
//! `log_every` updates, a line per validation, `metrics.csv` (one row per validation, which
//! the learning curves `curves.svg` are drawn from).
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::TrainerState;
use crate::checkpoint::{CURVES_FILE, METRICS_FILE};
use crate::error::{Error, Result};
use crate::plot::curves::Point;
use crate::validation::Validation;

/// Loss and throughput since the last progress line.
struct Window {
    loss_sum: f64,
    tokens: usize,
    since: Instant,
}

impl Window {
    fn new() -> Self {
        Window {
            loss_sum: 0.0,
            tokens: 0,
            since: Instant::now(),
        }
    }

    fn add(&mut self, loss: f64, tokens: usize) {
        self.loss_sum += loss * tokens as f64;
        self.tokens += tokens;
    }

    /// Mean per-token loss.
    fn loss(&self) -> f64 {
        self.loss_sum / self.tokens.max(1) as f64
    }

    fn tokens_per_s(&self) -> f64 {
        self.tokens as f64 / self.since.elapsed().as_secs_f64()
    }
}

/// The progress lines of a run on stderr: a bar on a terminal, else step lines.
pub(super) struct Report {
    verbose: bool,
    bar: Option<indicatif::ProgressBar>,
    log_every: u64,
    window: Window,
}

impl Report {
    /// Reports of a run at update `step` that will stop after `total` updates, if known;
    /// silent unless `verbose`.
    pub(super) fn new(verbose: bool, total: Option<u64>, step: u64, log_every: usize) -> Self {
        Report {
            verbose,
            bar: progress_bar(verbose, total, step),
            log_every: log_every as u64,
            window: Window::new(),
        }
    }

    /// After an update of `loss` over `tokens` at learning rate `lr`, `elapsed` into this
    /// command's loop.
    pub(super) fn update(
        &mut self,
        s: &TrainerState,
        loss: f64,
        tokens: usize,
        lr: f64,
        elapsed: Duration,
    ) {
        self.window.add(loss, tokens);
        if let Some(bar) = &self.bar {
            bar.set_position(s.step);
            bar.set_message(format!(
                "loss {loss:.3} | {:.0} tok/s",
                self.window.tokens_per_s()
            ));
        } else if s.step.is_multiple_of(self.log_every) {
            self.line(&format!(
                "step {} | epoch {} | loss {:.4} | {:.0} tgt tok/s | lr {:.2e} | {:.0}s",
                s.step,
                s.epoch + 1,
                self.window.loss(),
                self.window.tokens_per_s(),
                lr,
                elapsed.as_secs_f64()
            ));
            self.window = Window::new();
        }
    }

    /// After validation `v` (`improved`: it beat the best and was saved) at learning rate
    /// `lr`, the rate of the last update (warm-up and budgeted decay included).
    pub(super) fn validation(&mut self, s: &TrainerState, v: &Validation, improved: bool, lr: f64) {
        self.line(&format!(
            "validation at step {} (epoch {}): loss {:.4} | ppl {:.2} | BLEU {:.2}{} | lr {:.2e}",
            s.step,
            s.epoch + 1,
            v.loss,
            v.ppl,
            v.bleu,
            if improved { " (best, saved)" } else { "" },
            lr
        ));
        // The validation's time is not the updates' throughput.
        self.window = Window::new();
    }

    /// One line, above the bar while there is one.
    fn line(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None if self.verbose => eprintln!("{line}"),
            None => {}
        }
    }

    /// Clears the bar: later lines are plain.
    pub(super) fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

fn progress_bar(verbose: bool, total: Option<u64>, step: u64) -> Option<indicatif::ProgressBar> {
    if !verbose || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = match total {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::new_spinner(),
    };
    let style = indicatif::ProgressStyle::with_template(
        "{spinner} step {pos}/{len} [{bar:30}] {msg} | {elapsed_precise} ETA {eta}",
    )
    .map(|s| s.progress_chars("=> "));
    if let Ok(style) = style {
        bar.set_style(style);
    }
    bar.set_position(step);
    Some(bar)
}

/// One row of `metrics.csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsRow {
    pub step: u64,
    /// 1-based.
    pub epoch: u64,
    /// `valid` (a scheduled validation) or `final` (the extra one at the end of a run).
    pub kind: &'static str,
    pub valid_loss: f64,
    pub valid_ppl: f64,
    pub valid_bleu: f64,
    /// The learning rate of the update before the validation.
    pub lr: f64,
    pub tgt_tokens_per_s: f64,
    pub train_seconds: f64,
}

impl MetricsRow {
    /// The row of validation `v` of `kind` after the progress `s`, the last update at `lr`.
    pub fn new(s: &TrainerState, v: &Validation, kind: &'static str, lr: f64) -> Self {
        MetricsRow {
            step: s.step,
            epoch: s.epoch + 1,
            kind,
            valid_loss: v.loss,
            valid_ppl: v.ppl,
            valid_bleu: v.bleu,
            lr,
            tgt_tokens_per_s: s.tokens as f64 / s.train_seconds.max(1e-9),
            train_seconds: s.train_seconds,
        }
    }

    fn fields(&self) -> Vec<String> {
        vec![
            self.step.to_string(),
            self.epoch.to_string(),
            self.kind.to_string(),
            format!("{:.5}", self.valid_loss),
            format!("{:.3}", self.valid_ppl),
            format!("{:.2}", self.valid_bleu),
            format!("{:e}", self.lr),
            format!("{:.1}", self.tgt_tokens_per_s),
            format!("{:.1}", self.train_seconds),
        ]
    }
}

/// `metrics.csv` of a model directory: one row per validation of the run's history, written
/// by the training loop, read by the learning curves.
pub struct MetricsCsv {
    path: PathBuf,
}

impl MetricsCsv {
    /// The columns, in order.
    pub const COLUMNS: [&'static str; 9] = [
        "step",
        "epoch",
        "kind",
        "valid_loss",
        "valid_ppl",
        "valid_bleu",
        "lr",
        "tgt_tokens_per_s",
        "train_seconds",
    ];

    /// The file of `model_dir`.
    pub fn of_model_dir(model_dir: &Path) -> Self {
        Self::at(&model_dir.join(METRICS_FILE))
    }

    /// The file at `path`.
    pub fn at(path: &Path) -> Self {
        MetricsCsv {
            path: path.to_path_buf(),
        }
    }

    fn csv_err(&self) -> impl Fn(csv::Error) -> Error + '_ {
        |source| Error::Csv {
            path: self.path.clone(),
            source,
        }
    }

    /// Adds `row`, rewriting the file atomically: rows of later steps (from progress a crash
    /// lost before `last/` was saved) and an earlier row of the same step and kind (a re-run)
    /// are dropped, so every row is one validation of this run's history.
    pub fn append(&self, row: &MetricsRow) -> Result<()> {
        let csv_err = self.csv_err();
        let mut rows: Vec<Vec<String>> = Vec::new();
        if self.path.exists() {
            let mut r = csv::ReaderBuilder::new()
                .has_headers(true)
                .from_path(&self.path)
                .map_err(&csv_err)?;
            for rec in r.records() {
                let rec = rec.map_err(&csv_err)?;
                let step: u64 = rec.get(0).and_then(|x| x.parse().ok()).unwrap_or(u64::MAX);
                if step < row.step || (step == row.step && rec.get(2) != Some(row.kind)) {
                    rows.push(rec.iter().map(str::to_string).collect());
                }
            }
        }
        rows.push(row.fields());
        let mut w = csv::WriterBuilder::new().from_writer(Vec::new());
        w.write_record(Self::COLUMNS).map_err(&csv_err)?;
        for row in &rows {
            w.write_record(row).map_err(&csv_err)?;
        }
        let bytes = w
            .into_inner()
            .map_err(|e| Error::io(&self.path, e.into_error()))?;
        crate::atomic::write_atomic(&self.path, &bytes)
    }

    /// The points of the learning curves, in file order (columns found by name).
    pub fn points(&self) -> Result<Vec<Point>> {
        let csv_err = self.csv_err();
        let path = &self.path;
        let mut r = csv::ReaderBuilder::new()
            .has_headers(true)
            .from_path(path)
            .map_err(&csv_err)?;
        let header = r.headers().map_err(&csv_err)?.clone();
        let col = |name: &str| {
            header
                .iter()
                .position(|h| h == name)
                .ok_or_else(|| Error::Input(format!("{}: no column {name}", path.display())))
        };
        let cols = [
            col("step")?,
            col("train_seconds")?,
            col("valid_bleu")?,
            col("valid_ppl")?,
            col("lr")?,
        ];
        let mut points = Vec::new();
        for (i, rec) in r.records().enumerate() {
            let rec = rec.map_err(&csv_err)?;
            let v: Vec<f64> = cols
                .iter()
                .map(|&c| rec.get(c).and_then(|x| x.parse::<f64>().ok()))
                .collect::<Option<_>>()
                .ok_or_else(|| {
                    Error::Input(format!(
                        "{}:{}: a value is not a number",
                        path.display(),
                        i + 2
                    ))
                })?;
            points.push(Point {
                step: v[0],
                minutes: v[1] / 60.0,
                bleu: v[2],
                ppl: v[3],
                lr: v[4],
            });
        }
        Ok(points)
    }
}

/// Redraws `curves.svg` of `model_dir` from its `metrics.csv`. A picture that cannot be drawn
/// is a warning, never the end of a training run.
pub(super) fn write_curves(model_dir: &Path) {
    let curves = model_dir.join(CURVES_FILE);
    let drawn = MetricsCsv::of_model_dir(model_dir)
        .points()
        .and_then(|points| crate::plot::curves::write_curves(&points, &curves));
    if let Err(e) = drawn {
        let e = anyhow::Error::new(e);
        eprintln!("warning: {}: {}", curves.display(), crate::cli::chain(&e));
    }
}

/// `Duration` to `1h02m03s`.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}h{:02}m{:02}s", s / 3600, s / 60 % 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(step: u64, kind: &'static str, lr: f64) -> MetricsRow {
        let mut s = TrainerState::new(3e-3);
        s.step = step;
        let v = Validation {
            loss: 2.0,
            ppl: 2f64.exp(),
            bleu: 10.0,
        };
        MetricsRow::new(&s, &v, kind, lr)
    }

    #[test]
    fn metrics_keep_one_row_per_validation_and_the_curves_read_them() {
        let dir = tempfile::tempdir().unwrap();
        let m = MetricsCsv::of_model_dir(dir.path());
        m.append(&row(2, "valid", 1e-3)).unwrap();
        m.append(&row(4, "valid", 5e-4)).unwrap();
        m.append(&row(4, "final", 5e-4)).unwrap();
        // A re-run after a crash that lost step 4: the later rows go.
        m.append(&row(3, "valid", 2e-4)).unwrap();
        let text = std::fs::read_to_string(dir.path().join(METRICS_FILE)).unwrap();
        assert_eq!(
            text.lines().next(),
            Some(MetricsCsv::COLUMNS.join(",").as_str())
        );
        let points = m.points().unwrap();
        let steps: Vec<f64> = points.iter().map(|p| p.step).collect();
        assert_eq!(steps, [2.0, 3.0]);
        assert_eq!(points[1].lr, 2e-4);
    }

    #[test]
    fn a_metrics_file_without_a_column_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.csv");
        std::fs::write(&path, "step,valid_bleu\n1,2\n").unwrap();
        let e = MetricsCsv::at(&path).points().unwrap_err().to_string();
        assert!(e.ends_with("m.csv: no column train_seconds"), "{e}");
    }

    #[test]
    fn durations_read_as_hours_minutes_seconds() {
        assert_eq!(human_duration(Duration::from_secs(3723)), "1h02m03s");
    }
}
