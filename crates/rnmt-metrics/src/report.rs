//! sacrebleu's output formats: score lines, `--format json`, `-b`, the
//! alignment of several metrics, and the paired-test table.
//!
//! Everything here reproduces sacrebleu 2.6.0's CLI text byte for byte
//! (`Score.format`, `utils.print_single_results`,
//! `utils.print_results_table` with tabulate's `fancy_grid`, colours off),
//! given the same `width` (decimal places of the score; sacrebleu's CLI
//! default is 1, its API's `str(score)` uses 2).

use std::fmt::Write as _;

use super::bleu::BleuScore;
use super::bootstrap::BootstrapResult;
use super::chrf::ChrfScore;
use super::metric::Signature;

/// One score ready to print; the arguments of sacrebleu's `Score.format`.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreReport {
    /// Metric name (`BLEU`, `chrF2`, ...).
    pub name: String,
    /// The score.
    pub score: f64,
    /// Text after the score (BLEU's precisions and BP; empty for chrF).
    pub verbose: String,
    /// The signature.
    pub signature: Signature,
}

impl ScoreReport {
    /// Report for a BLEU score.
    pub fn bleu(score: &BleuScore, signature: Signature) -> Self {
        ScoreReport {
            name: "BLEU".into(),
            score: score.score,
            verbose: score.verbose(),
            signature,
        }
    }

    /// Report for a chrF score.
    pub fn chrf(score: &ChrfScore, signature: Signature) -> Self {
        ScoreReport {
            name: score.name.clone(),
            score: score.score,
            verbose: String::new(),
            signature,
        }
    }

    /// The score with `width` decimals (`-b` output).
    pub fn score_only(&self, width: usize) -> String {
        format!("{:.width$}", self.score)
    }

    /// `NAME|SIGNATURE = SCORE VERBOSE`, the full text line.
    pub fn text(&self, width: usize) -> String {
        let mut s = format!(
            "{}|{} = {}",
            self.name,
            self.signature,
            self.score_only(width)
        );
        if !self.verbose.is_empty() {
            s.push(' ');
            s.push_str(&self.verbose);
        }
        s
    }

    /// The JSON object of `Score.format(is_json=True)`
    /// (`json.dumps(d, indent=1, ensure_ascii=False)`): name, score rounded
    /// to `width` decimals, signature, verbose_score (if any), then every
    /// signature field as a string.
    pub fn json(&self, width: usize) -> String {
        let rounded: f64 = self.score_only(width).parse().unwrap_or(self.score);
        let mut fields: Vec<(String, String)> = vec![
            ("name".into(), json_str(&self.name, false)),
            ("score".into(), py_float_repr(rounded)),
            (
                "signature".into(),
                json_str(&self.signature.to_string(), false),
            ),
        ];
        if !self.verbose.is_empty() {
            fields.push(("verbose_score".into(), json_str(&self.verbose, false)));
        }
        for (k, v) in self.signature.pairs() {
            fields.push((k.to_string(), json_str(&v, false)));
        }
        let body: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!(" {}: {}", json_str(k, false), v))
            .collect();
        format!("{{\n{}\n}}", body.join(",\n"))
    }

    /// `Score.format(width, score_only, signature, is_json)`.
    pub fn format(&self, width: usize, score_only: bool, json: bool) -> String {
        if score_only {
            self.score_only(width)
        } else if json {
            self.json(width)
        } else {
            self.text(width)
        }
    }
}

/// Python's `repr(float)`: shortest round-trip digits, `.0` for integral
/// values, scientific notation below 1e-4 and from 1e16 on (`1e-05`).
pub fn py_float_repr(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let ax = x.abs();
    if ax != 0.0 && !(1e-4..1e16).contains(&ax) {
        let s = format!("{x:e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let (sign, digits) = match exp.strip_prefix('-') {
            Some(d) => ('-', d),
            None => ('+', exp),
        };
        return format!("{mantissa}e{sign}{digits:0>2}");
    }
    let s = format!("{x}");
    if s.contains('.') {
        s
    } else {
        format!("{s}.0")
    }
}

/// A JSON string literal as Python's `json.dumps` writes it; with
/// `ensure_ascii` every non-ASCII character becomes `\uXXXX` (surrogate
/// pairs above U+FFFF).
pub fn json_str(s: &str, ensure_ascii: bool) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ensure_ascii && (c as u32) > 0x7e) => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The whole stdout of sacrebleu's single-system mode for already formatted
/// results (`utils.print_single_results`), with a trailing newline: JSON
/// objects are wrapped in a list when there are several; text lines are
/// right-aligned on their first `=`.
pub fn single_results(results: &[String], json: bool) -> String {
    if json {
        if results.len() > 1 {
            return format!("[\n{}\n]\n", results.join(",\n"));
        }
        return results.first().map_or(String::new(), |r| format!("{r}\n"));
    }
    if results.len() == 1 {
        return format!("{}\n", results[0]);
    }
    let mut out = String::new();
    let mut lens = Vec::new();
    for line in results {
        match line.find('=') {
            // the split point, counted in characters like Python's index()
            Some(b) => lens.push(line[..b].chars().count().saturating_sub(1)),
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    if let Some(&w) = lens.iter().max() {
        for line in results.iter().filter(|l| l.contains('=')) {
            let cut = line[..line.find('=').unwrap_or(0)]
                .chars()
                .count()
                .saturating_sub(1);
            let split = line.char_indices().nth(cut).map_or(line.len(), |(i, _)| i);
            let (left, right) = line.split_at(split);
            let pad = w.saturating_sub(left.chars().count());
            let _ = writeln!(out, "{}{left}{right}", " ".repeat(pad));
        }
    }
    out
}

/// Center `s` in `width` like Python's `format(s, '^width')` (extra space on
/// the right).
fn center(s: &str, width: usize) -> String {
    let pad = width.saturating_sub(s.chars().count());
    let left = pad / 2;
    format!("{}{s}{}", " ".repeat(left), " ".repeat(pad - left))
}

/// A `tabulate(..., tablefmt='fancy_grid', colalign=('right',),
/// stralign='center')` table of string cells (cells may span lines).
fn fancy_grid(headers: &[String], rows: &[Vec<String>]) -> String {
    let ncols = headers.len();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (j, cell) in row.iter().enumerate().take(ncols) {
            for line in cell.split('\n') {
                widths[j] = widths[j].max(line.chars().count());
            }
        }
    }
    let align = |j: usize, s: &str| {
        if j == 0 {
            format!("{s:>w$}", w = widths[0])
        } else {
            center(s, widths[j])
        }
    };
    let rule = |l: &str, fill: &str, mid: &str, r: &str| {
        let segs: Vec<String> = widths.iter().map(|w| fill.repeat(w + 2)).collect();
        format!("{l}{}{r}\n", segs.join(mid))
    };
    let line = |cells: Vec<String>| format!("│ {} │\n", cells.join(" │ "));

    let mut out = rule("╒", "═", "╤", "╕");
    out.push_str(&line(
        headers
            .iter()
            .enumerate()
            .map(|(j, h)| align(j, h))
            .collect(),
    ));
    out.push_str(&rule("╞", "═", "╪", "╡"));
    for (r, row) in rows.iter().enumerate() {
        let cells: Vec<Vec<&str>> = row.iter().map(|c| c.split('\n').collect()).collect();
        let height = cells.iter().map(Vec::len).max().unwrap_or(1);
        for k in 0..height {
            out.push_str(&line(
                (0..ncols)
                    .map(|j| align(j, cells.get(j).and_then(|c| c.get(k)).unwrap_or(&"")))
                    .collect(),
            ));
        }
        if r + 1 < rows.len() {
            out.push_str(&rule("├", "─", "┼", "┤"));
        }
    }
    out.push_str(&rule("╘", "═", "╧", "╛"));
    out
}

/// One metric's column of a paired test: its name, its signature (with the
/// `bs`/`seed` fields) and one result per system, baseline first.
#[derive(Debug, Clone)]
pub struct PairedColumn {
    /// Metric name (`BLEU`, `chrF2`, ...).
    pub name: String,
    /// Signature including `bs` and `seed`.
    pub signature: Signature,
    /// Results, baseline first.
    pub results: Vec<BootstrapResult>,
}

/// sacrebleu's paired bootstrap report in text form
/// (`utils.print_results_table` with `fancy_grid`, no colours): the table,
/// the explanation of the test and the signatures. `systems[0]` is the
/// baseline's name, e.g. `Baseline: base.txt`.
pub fn paired_text(
    systems: &[String],
    columns: &[PairedColumn],
    n_samples: usize,
    width: usize,
) -> String {
    let mut headers = vec!["System".to_string()];
    headers.extend(columns.iter().map(|c| format!("{} (μ ± 95% CI)", c.name)));
    let rows: Vec<Vec<String>> = systems
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let mut row = vec![name.clone()];
            for c in columns {
                let Some(r) = c.results.get(i) else {
                    row.push(String::new());
                    continue;
                };
                let mut cell = format!(
                    "{:.width$} ({:.width$} ± {:.width$})",
                    r.score, r.mean, r.ci
                );
                if let Some(p) = r.p_value {
                    let _ = write!(cell, "\n(p = {p:.4})");
                    if p <= 0.05 {
                        cell.push('*');
                    }
                }
                row.push(cell);
            }
            row
        })
        .collect();
    let baseline = systems.first().map_or("", String::as_str);
    let msg = format!("Paired bootstrap resampling test with {n_samples} resampling trials");
    let dashes = "-".repeat(msg.chars().count());
    let mut out = fancy_grid(&headers, &rows);
    out.push('\n');
    let _ = writeln!(out, "{dashes}\n{msg}\n{dashes}");
    let _ = writeln!(out, " - Each system is pairwise compared to {baseline}.");
    out.push_str(concat!(
        "   Actual system score / bootstrap estimated true mean / 95% CI are provided for each metric.\n",
        "\n",
        " - Null hypothesis: the system and the baseline translations are essentially\n",
        "   generated by the same underlying process. For a given system and the baseline,\n",
        "   the p-value is roughly the probability of the absolute score difference (delta)\n",
        "   or higher occurring due to chance, under the assumption that the null hypothesis is correct.\n",
        "\n",
        " - Assuming a significance threshold of 0.05, the null hypothesis can be rejected\n",
        "   for p-values < 0.05 (marked with \"*\"). This means that the delta is unlikely to be attributed\n",
        "   to chance, hence the system is significantly \"different\" than the baseline.\n",
        "   Otherwise, the p-values are highlighted in red.\n",
        "\n",
        " - NOTE: Significance does not tell whether a system is \"better\" than the baseline but rather\n",
        "   emphasizes the \"difference\" of the systems in terms of the replicability of the delta.\n",
        "\n",
        "-----------------\n",
        "Metric signatures\n",
        "-----------------\n",
    ));
    for c in columns {
        let _ = writeln!(out, " - {:<10} {}", c.name, c.signature);
    }
    out
}

/// The paired report as JSON, in the shape sacrebleu's
/// `print_results_table` intends for `--format json` (a list with one object
/// per system: `"system"` and, per metric, `score`, `p_value`, `mean`, `ci`;
/// `json.dumps(indent=4)`, ASCII-escaped). sacrebleu 2.6.0 itself crashes
/// there (numpy float32 is not JSON serializable), so this is the format it
/// would print, not one it does print.
pub fn paired_json(systems: &[String], columns: &[PairedColumn]) -> String {
    let num = |x: Option<f64>| x.map_or("null".to_string(), py_float_repr);
    let objs: Vec<String> = systems
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let mut fields = vec![format!("        \"system\": {}", json_str(name, true))];
            for c in columns {
                if let Some(r) = c.results.get(i) {
                    fields.push(format!(
                        "        {}: {{\n            \"score\": {},\n            \"p_value\": {},\n            \"mean\": {},\n            \"ci\": {}\n        }}",
                        json_str(&c.name, true),
                        num(Some(r.score)),
                        num(r.p_value),
                        num(Some(r.mean)),
                        num(Some(r.ci)),
                    ));
                }
            }
            format!("    {{\n{}\n    }}", fields.join(",\n"))
        })
        .collect();
    format!("[\n{}\n]\n", objs.join(",\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_float_repr() {
        assert_eq!(py_float_repr(26.6), "26.6");
        assert_eq!(py_float_repr(100.0), "100.0");
        assert_eq!(py_float_repr(0.0), "0.0");
        assert_eq!(py_float_repr(1e-5), "1e-05");
        assert_eq!(py_float_repr(0.0001), "0.0001");
        assert_eq!(py_float_repr(1.5e16), "1.5e+16");
        assert_eq!(py_float_repr(0.000999000999000999), "0.000999000999000999");
    }

    #[test]
    fn json_strings() {
        assert_eq!(json_str("a\"b\\\u{1}é", false), "\"a\\\"b\\\\\\u0001é\"");
        assert_eq!(json_str("μ🦀", true), "\"\\u03bc\\ud83e\\udd80\"");
    }

    #[test]
    fn alignment_of_several_lines() {
        let out = single_results(&["AB|x = 1".into(), "ABCD|y = 2".into()], false);
        assert_eq!(out, "  AB|x = 1\nABCD|y = 2\n");
        assert_eq!(
            single_results(&["1".into(), "2".into()], true),
            "[\n1,\n2\n]\n"
        );
    }
}
