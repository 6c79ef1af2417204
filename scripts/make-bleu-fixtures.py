#!/usr/bin/env python3
"""Regenerate the sacrebleu fixtures used by rnmt's metric tests.

The Rust tests (crates/rnmt-metrics/tests/bleu_sacrebleu.rs and bleu_cli.rs) only *read* the
files this script writes; they never need Python. Run this script only when
the fixtures must change (new inputs, new sacrebleu version):

    python3 -m venv /tmp/sacrebleu-venv
    /tmp/sacrebleu-venv/bin/pip install sacrebleu==2.6.0
    /tmp/sacrebleu-venv/bin/python scripts/make-bleu-fixtures.py [--regen-inputs]

Without --regen-inputs the committed input files in
crates/rnmt-metrics/tests/fixtures/sacrebleu/ are scored as they are. With it, the inputs are
first rebuilt, deterministically, from the parallel corpora in
`--corpora` (default: ../shared/corpora next to the repository) plus the
hand-written edge cases below.

Outputs (all in crates/rnmt-metrics/tests/fixtures/sacrebleu/):
  expected_corpus.json   corpus BLEU for every tokenizer x smoothing x case,
                         corpus chrF / chrF++ (several options)
  expected_sentence.json sentence-level BLEU and chrF, one record per line
  expected_paired.json   paired bootstrap resampling (sacrebleu's numbers;
                         the Rust RNG differs, so tests compare loosely)
  expected_cli.json      raw stdout of a few sacrebleu CLI invocations
"""

import argparse
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import sacrebleu
from sacrebleu.metrics import BLEU, CHRF
from sacrebleu.significance import PairedTest
from sacrebleu.utils import sum_of_lists

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "crates" / "rnmt-metrics" / "tests" / "fixtures" / "sacrebleu"
TOKENIZERS = ["13a", "intl", "char", "none"]
SMOOTHS = ["exp", "floor", "add-k", "none"]

# ---------------------------------------------------------------------------
# Input generation
# ---------------------------------------------------------------------------

# (reference, second reference, hypothesis) triples exercising tokenizer and
# scoring edge cases. "\r" at the end of a line simulates CRLF files.
MISC = [
    ("The price is 1,000.50 dollars, not 1.000,50 euros.",
     "It costs 1,000.50 dollars rather than 1.000,50 euros.",
     "The price is 1,000.50 dollars , not 1.000,50 €."),
    ("The meeting starts at 12:30 and ends at 14:45.",
     "The meeting begins at 12:30 and finishes at 14:45.",
     "Meeting starts at 12:30, ends at 2:45 p.m."),
    ("Il a dit : « Bonjour ! » — puis il est parti…",
     "Il a dit « bonjour » puis il est parti...",
     "Il a dit: «Bonjour!» - puis il est parti..."),
    ("He said “hello” and ‘goodbye’ to everyone.",
     "He said \"hello\" and 'goodbye' to everybody.",
     "He said “hello” and 'goodbye' to all."),
    ("© 2024 ACME™ — all rights reserved; price: 5 € + 3 $ = ?",
     "© 2024 ACME™, all rights reserved; price 5€+3$=?",
     "(c) 2024 ACME — all rights reserved ; price : 5 € + 3 $ = ?"),
    ("我们今天去公园散步、然后去吃饭。",
     "今天我们去公园散步，然后吃饭。",
     "我们今天去公园、吃饭。"),
    ("東京は日本の首都です。「こんにちは」と言った。",
     "東京は日本の首都である。「こんにちは」と彼は言った。",
     "東京は日本の首都。「こんにちは」と言いました。"),
    ("Η γρήγορη καφέ αλεπού πηδάει πάνω από τον τεμπέλη σκύλο.",
     "Η γρήγορη καστανή αλεπού πηδά πάνω από τον τεμπέλικο σκύλο.",
     "Η ΓΡΗΓΟΡΗ καφέ αλεπού πηδάει από τον σκύλο."),
    ("ΟΔΟΣ ΑΘΗΝΑΣ 12, ΤΚ 105 51",
     "Οδός Αθηνάς 12, 105 51",
     "οδος αθηνας 12 , ΤΚ 10551"),
    ("Быстрая коричневая лиса прыгает через ленивую собаку.",
     "Быстрая бурая лиса перепрыгивает через ленивого пса.",
     "Быстрая лиса прыгает через ЛЕНИВУЮ собаку!"),
    ("Tom &amp; Jerry said &quot;hi&quot; to &lt;b&gt;everyone&lt;/b&gt; &amp;amp; more.",
     "Tom & Jerry said \"hi\" to <b>everyone</b> & more.",
     "Tom & Jerry said \"hi\" to &lt;b&gt;everyone&lt;/b&gt; & more."),
    ("The file was not found.",
     "The file could not be found.",
     ""),
    ("",
     "",
     "This hypothesis has an empty reference."),
    ("", "", ""),
    ("Yes, I think that this is the correct answer to your question.",
     "Yes, I believe this is the right answer to your question.",
     "Yes"),
    ("Trailing   spaces\tand\ttabs should not matter.   ",
     "Trailing spaces and tabs do not matter.",
     "Trailing spaces\u00a0and tabs\u3000should not matter.\t \r"),
    ("Windows line endings are stripped.\r",
     "Windows line endings get stripped.",
     "Windows line endings are stripped .\r"),
    ("Separators\x1cinside a line are whitespace for Python.",
     "Separators inside a line count as whitespace.",
     "Separators inside\x1fa line are whitespace for Python."),
    ("See pages 10-20 and the 2019-2020 report: a well-known, state-of-the-art method.",
     "See pp. 10–20 and the 2019–2020 report, a well known state of the art method.",
     "See pages 10 - 20 and 2019-2020 report: well-known state-of-the-art method."),
    ("L'éditeur d'images n'est pas là aujourd'hui.",
     "L’éditeur d’images n’est pas là aujourd’hui.",
     "L'éditeur d'image n'est pas là aujourd'hui."),
    ("About 50% of x^2 + y_1 <= 3/4 (approx.) in {a|b} [c] `d` ~e #f @g",
     "About 50 % of x^2+y_1<=3/4 (approx.)",
     "About 50% of x^2 + y_1 < = 3 / 4 (approx) in {a | b} [c] d ~e #f @g"),
    ("Wait… what?! — No way!!! ... Really???",
     "Wait... what?! No way! Really?",
     "Wait ... what ? ! — No way ! ! ! Really ? ? ?"),
    ("I ❤ Rust 🦀 → fast ✓ and safe ✔.",
     "I love Rust 🦀: fast and safe.",
     "I ❤ Rust 🦀→fast ✓ and safe✔."),
    ("It happened in 1999. Then in 2001.",
     "This happened in 1999, then in 2001.",
     "It happened in 1999. And then in 2001"),
    ("Visit https://example.com/a?b=c&d=e or mail info@example.org today.",
     "Go to https://example.com/a?b=c&d=e or write to info@example.org today.",
     "Visit https://example.com/a?b=c&amp;d=e or email info@example.org."),
    ("مرحبا بالعالم، كيف حالك؟",
     "أهلا بالعالم، كيف الحال؟",
     "مرحبا بالعالم ، كيف حالك ؟"),
    ("नमस्ते दुनिया। आप कैसे हैं?",
     "नमस्ते संसार। आप कैसे हो?",
     "नमस्ते दुनिया । आप कैसे हैं ?"),
    ("The <skipped> segment was removed by the aligner.",
     "The segment was removed by the aligner.",
     "The segment <skipped> was removed by aligner."),
    ("Pi is 3.14159, e is 2,71828 and .5 plus 5. equals ,5 or 5,",
     "Pi is 3.14159; e is 2.71828; .5 plus 5. equals 5,5",
     "Pi is 3.14159 , e is 2,71828 and . 5 plus 5 . equals , 5 or 5 ,"),
    ("!!! ??? ... ;;; ::: ---",
     "!!! ??? ...",
     "!!!???...;;;:::---"),
    ("x² + ½ = ¾ and Ⅻ chapters, ٣ items, 5th place.",
     "x^2 + 1/2 = 3/4 and XII chapters, 3 items, fifth place.",
     "x² + ½ = ¾ and Ⅻ chapters , ٣ items, 5th place"),
    ("the cat is on the mat",
     "there is a cat on the mat",
     "the the the the the the the"),
    ("Straße, Œuvre, ǅemal, İstanbul, ΣΊΣΥΦΟΣ and DŽUNGLA.",
     "Strasse, Oeuvre, Dzemal, Istanbul, Σίσυφος, Džungla.",
     "STRASSE, œuvre, ǆemal, istanbul, ΣΊΣΥΦΟΣ and džungla."),
    ("Press Ctrl+Shift+F10 (or ⌘+F10 on macOS) to open the dialog.",
     "Press Ctrl+Shift+F10 (⌘+F10 on macOS) to open the dialogue.",
     "Press Ctrl + Shift + F10 (or ⌘ + F10 on macOS) to open the dialog box."),
    ("Choose Tools - Options - LibreOffice Writer - Formatting Aids.",
     "Choose Tools > Options > LibreOffice Writer > Formatting Aids.",
     "Choose Tools – Options – LibreOffice Writer – Formatting Aids."),
    ("She paid €1.234,56 for 3×4 tiles at 10:05 a.m. on 01/02/2023.",
     "She paid 1.234,56 € for 3 x 4 tiles at 10.05 on 1 Feb 2023.",
     "She paid € 1.234,56 for 3x4 tiles at 10:05 am on 01/02/2023."),
    ("   Leading spaces are not stripped but do not count.",
     "Leading spaces do not count.",
     "  Leading spaces are not stripped, but do not count."),
    ("Он сказал: «Всё хорошо» — и ушёл.",
     "Он сказал «всё хорошо» и ушёл.",
     "Он сказал: \"Всё хорошо\" - и ушел."),
    ("한국어 문장도 포함됩니다. 감사합니다!",
     "한국어 문장 또한 포함됩니다. 고맙습니다!",
     "한국어 문장도 포함됩니다 감사합니다"),
    ("ok", "okay", "ok"),
]

# One-word hypotheses: brevity penalty, zero higher-order counts.
SHORT = [
    ("The committee approved the new budget yesterday.", "Yesterday"),
    ("Please save the document before closing it.", "Save"),
    ("The river flows quietly through the old town.", "river"),
    ("Click the button to continue.", "Click"),
    ("All changes were saved automatically.", "Saved"),
    ("Il fait beau aujourd'hui.", "beau"),
    ("Das ist nicht richtig.", "nicht"),
    ("The end.", "end"),
    ("Open the Format menu and choose Paragraph.", "Paragraph"),
    ("Nothing matches here at all.", "zzz"),
]

# Hypotheses that share nothing with their references (BLEU early stop).
NOMATCH = [
    ("alpha beta gamma delta", "one two three four five"),
    ("epsilon zeta eta", "six seven"),
    ("theta iota kappa lambda mu", "eight"),
]

FILLER_FR = ["le", "la", "de", "une", "les", "des", "et", "pour", "dans",
             "fenêtre", "menu", "cliquez", "sur", "texte", "document"]
FILLER_ES = ["el", "la", "de", "y", "que", "los", "en", "á", "su", "dios",
             "tierra", "hijos", "dijo", "Jehová", "pueblo"]


def perturb(words, rng, n_ops, filler, truncate_p):
    """Apply `n_ops` random edit operations to a list of words."""
    words = list(words)
    for _ in range(n_ops):
        if not words:
            break
        op = rng.choice(["drop", "swap", "replace", "dup", "case", "punct"])
        i = rng.randrange(len(words))
        if op == "drop" and len(words) > 1:
            del words[i]
        elif op == "swap" and i + 1 < len(words):
            words[i], words[i + 1] = words[i + 1], words[i]
        elif op == "replace":
            words[i] = rng.choice(filler)
        elif op == "dup":
            words.insert(i, words[i])
        elif op == "case":
            words[i] = words[i].upper() if rng.random() < 0.5 else words[i].lower()
        elif op == "punct":
            words[i] = words[i].rstrip(".,;:!?") + rng.choice([",", ".", " ,", ""])
    if words and rng.random() < truncate_p:
        keep = max(1, int(len(words) * rng.uniform(0.4, 0.9)))
        words = words[:keep]
    return words


def make_system(refs, seed, ops_range, filler, truncate_p, empty_p=0.0):
    rng = random.Random(seed)
    out = []
    for ref in refs:
        if rng.random() < empty_p:
            out.append("")
            continue
        n_ops = rng.randint(*ops_range)
        out.append(" ".join(perturb(ref.split(), rng, n_ops, filler, truncate_p)))
    return out


def read_tsv(path, n, max_len, stride, offset):
    rows = []
    with open(path, encoding="utf-8", newline="\n") as f:
        lines = [l.rstrip("\n") for l in f]
    for i in range(offset, len(lines), stride):
        src, tgt = lines[i].split("\t")
        if 15 <= len(tgt) <= max_len:
            rows.append(tgt)
        if len(rows) == n:
            break
    return rows


def write_lines(name, lines):
    with open(FIX / name, "w", encoding="utf-8", newline="\n") as f:
        for line in lines:
            f.write(line + "\n")


def regen_inputs(corpora):
    FIX.mkdir(parents=True, exist_ok=True)
    lohelp = read_tsv(corpora / "lohelp.en-fr.test.tsv", 150, 220, 13, 3)
    bible = read_tsv(corpora / "bible.en_web-es_rv1909.test.tsv", 120, 260, 12, 5)

    write_lines("lohelp.ref.fr", lohelp)
    # A second, alternative reference: light rewording of the first.
    write_lines("lohelp.ref2.fr", make_system(lohelp, 7, (0, 2), FILLER_FR, 0.0))
    sys_a = make_system(lohelp, 11, (0, 4), FILLER_FR, 0.15, empty_p=0.01)
    write_lines("lohelp.hyp.fr", sys_a)
    write_lines("lohelp.hyp2.fr", make_system(lohelp, 13, (2, 7), FILLER_FR, 0.35))
    # Same quality as system A, independent edits: a non-significant pair
    # (sacrebleu p ~ 0.3); system B above is clearly worse (p ~ 0.001).
    write_lines("lohelp.hyp3.fr", make_system(lohelp, 21, (0, 4), FILLER_FR, 0.15, empty_p=0.01))

    write_lines("bible.ref.es", bible)
    write_lines("bible.hyp.es", make_system(bible, 19, (1, 6), FILLER_ES, 0.2))

    write_lines("misc.ref", [r for r, _, _ in MISC])
    write_lines("misc.ref2", [r2 for _, r2, _ in MISC])
    write_lines("misc.hyp", [h for _, _, h in MISC])
    write_lines("short.ref", [r for r, _ in SHORT])
    write_lines("short.hyp", [h for _, h in SHORT])
    write_lines("nomatch.ref", [r for r, _ in NOMATCH])
    write_lines("nomatch.hyp", [h for _, h in NOMATCH])


# ---------------------------------------------------------------------------
# Expected results
# ---------------------------------------------------------------------------

# name -> (hypothesis file, [reference files])
DATASETS = {
    "lohelp": ("lohelp.hyp.fr", ["lohelp.ref.fr"]),
    "lohelp_2ref": ("lohelp.hyp.fr", ["lohelp.ref.fr", "lohelp.ref2.fr"]),
    "bible": ("bible.hyp.es", ["bible.ref.es"]),
    "misc": ("misc.hyp", ["misc.ref"]),
    "misc_2ref": ("misc.hyp", ["misc.ref", "misc.ref2"]),
    "short": ("short.hyp", ["short.ref"]),
    "nomatch": ("nomatch.hyp", ["nomatch.ref"]),
}


def read_lines(name):
    """Read a file exactly as sacrebleu's CLI does (smart_open + rstrip)."""
    with open(FIX / name, encoding="utf-8", newline="\n") as f:
        return [line.rstrip() for line in f]


def load(ds):
    hyp, refs = DATASETS[ds]
    return read_lines(hyp), [read_lines(r) for r in refs]


def bleu_record(score, sig, raw=None):
    """`raw`: summed segment statistics; sacrebleu's own `counts`/`totals`
    include the add-k increments, the raw ones do not."""
    raw = raw or ([score.sys_len, score.ref_len] + list(score.counts) + list(score.totals))
    order = (len(raw) - 2) // 2
    return {
        "score": score.score,
        "counts": [int(c) for c in raw[2:2 + order]],
        "totals": [int(t) for t in raw[2 + order:]],
        "precisions": list(score.precisions),
        "bp": score.bp,
        "ratio": score.ratio,
        "sys_len": score.sys_len,
        "ref_len": score.ref_len,
        "signature": sig,
        "line": score.format(signature=sig),
    }


def corpus_expectations():
    out = {"bleu": [], "chrf": []}
    configs = [(t, s, None, lc) for t in TOKENIZERS for s in SMOOTHS for lc in (False, True)]
    # Explicit smoothing values (the value is ignored for exp/none).
    configs += [("13a", "floor", 0.3, False), ("13a", "add-k", 2.0, False),
                ("intl", "floor", 0.01, True), ("13a", "exp", 0.5, False),
                ("char", "add-k", 0.5, False)]
    for ds in DATASETS:
        hyps, refs = load(ds)
        for tok, smooth, value, lc in configs:
            if value is not None and ds not in ("lohelp", "short", "misc"):
                continue
            m = BLEU(tokenize=tok, smooth_method=smooth, smooth_value=value, lowercase=lc)
            score = m.corpus_score(hyps, refs)
            raw = sum_of_lists(m._extract_corpus_statistics(hyps, refs))
            rec = {"dataset": ds, "tokenize": tok, "smooth_method": smooth,
                   "smooth_value": value, "lowercase": lc}
            rec.update(bleu_record(score, str(m.get_signature()), list(raw)))
            out["bleu"].append(rec)
        chrf_configs = [
            dict(word_order=0), dict(word_order=2), dict(word_order=0, lowercase=True),
            dict(word_order=2, lowercase=True), dict(word_order=1),
            dict(word_order=0, whitespace=True), dict(word_order=2, eps_smoothing=True),
            dict(char_order=4, word_order=0, beta=1),
        ]
        for cfg in chrf_configs:
            m = CHRF(**cfg)
            score = m.corpus_score(hyps, refs)
            sig = str(m.get_signature())
            rec = {"dataset": ds, "char_order": m.char_order, "word_order": m.word_order,
                   "beta": m.beta, "lowercase": m.lowercase, "whitespace": m.whitespace,
                   "eps_smoothing": m.eps_smoothing, "name": score.name,
                   "score": score.score, "signature": sig,
                   "line": score.format(signature=sig)}
            out["chrf"].append(rec)
    return out


def sentence_expectations():
    out = {"bleu": [], "chrf": []}
    configs = []
    for ds in ("misc", "misc_2ref", "short", "nomatch"):
        for tok in TOKENIZERS:
            for smooth in SMOOTHS:
                configs.append((ds, tok, smooth, False))
        configs.append((ds, "13a", "exp", True))
    configs += [("lohelp", "13a", "exp", False), ("bible", "13a", "exp", False),
                ("lohelp_2ref", "intl", "floor", True)]
    for ds, tok, smooth, lc in configs:
        hyps, refs = load(ds)
        m = BLEU(tokenize=tok, smooth_method=smooth, lowercase=lc, effective_order=True)
        recs, texts = [], []
        for hyp, *rs in zip(hyps, *refs):
            score = m.sentence_score(hyp, rs)
            sig = str(m.get_signature())
            # compact: [score, p1, p2, p3, p4, bp, sys_len, ref_len]
            recs.append([score.score, *score.precisions, score.bp, score.sys_len,
                         score.ref_len])
            texts.append(score.format(signature=sig))
        rec = {"dataset": ds, "tokenize": tok, "smooth_method": smooth,
               "lowercase": lc, "signature": str(m.get_signature()), "lines": recs}
        if smooth == "exp":
            # full score lines only for some configurations (fixture size)
            rec["texts"] = texts
        out["bleu"].append(rec)
    for ds in ("misc", "misc_2ref", "lohelp", "short"):
        hyps, refs = load(ds)
        for wo in (0, 2):
            m = CHRF(word_order=wo)
            scores = [m.sentence_score(h, rs).score for h, *rs in zip(hyps, *refs)]
            out["chrf"].append({"dataset": ds, "word_order": wo,
                                "signature": str(m.get_signature()), "scores": scores})
    return out


def result_dict(r):
    def f(x):
        return None if x is None else float(x)
    return {"score": f(r.score), "p_value": f(r.p_value), "mean": f(r.mean), "ci": f(r.ci)}


def paired_expectations():
    refs = [read_lines("lohelp.ref.fr")]
    base = read_lines("lohelp.hyp.fr")
    out = []
    for other in ("lohelp.hyp2.fr", "lohelp.hyp3.fr"):
        metrics = {"BLEU": BLEU(references=refs), "CHRF": CHRF(references=refs)}
        ps = PairedTest([("base", base), ("other", read_lines(other))], metrics,
                        references=None, test_type="bs", n_samples=1000)
        sigs, scores = ps()
        rec = {"baseline": "lohelp.hyp.fr", "system": other, "refs": ["lohelp.ref.fr"],
               "n_samples": 1000, "seed": 12345,
               "signatures": {k: str(v) for k, v in sigs.items()},
               "results": {k: [result_dict(r) for r in v] for k, v in scores.items()
                           if k != "System"}}
        out.append(rec)
    return out


def cli_expectations():
    """Raw stdout of the sacrebleu CLI, for byte-exact format tests."""
    exe = [sys.executable, "-m", "sacrebleu"]
    runs = {
        "text_w1": ["lohelp.ref.fr", "-i", "lohelp.hyp.fr", "-f", "text"],
        "text_w2": ["lohelp.ref.fr", "-i", "lohelp.hyp.fr", "-f", "text", "-w", "2"],
        "text_w2_bleu_chrf": ["lohelp.ref.fr", "-i", "lohelp.hyp.fr", "-f", "text",
                              "-w", "2", "-m", "bleu", "chrf"],
        "text_w2_chrfpp_bleu": ["lohelp.ref.fr", "-i", "lohelp.hyp.fr", "-f", "text",
                                "-w", "2", "-m", "chrf", "bleu", "--chrf-word-order", "2"],
        "json_w2": ["lohelp.ref.fr", "-i", "lohelp.hyp.fr", "-f", "json", "-w", "2"],
        "json_w1_bleu_chrf": ["lohelp.ref.fr", "-i", "lohelp.hyp.fr", "-f", "json",
                              "-m", "bleu", "chrf"],
        "json_chrf_w2": ["lohelp.ref.fr", "-i", "lohelp.hyp.fr", "-f", "json", "-w", "2",
                         "-m", "chrf"],
        "score_only_w2": ["lohelp.ref.fr", "-i", "lohelp.hyp.fr", "-b", "-w", "2"],
        "score_only_w2_bleu_chrf": ["lohelp.ref.fr", "-i", "lohelp.hyp.fr", "-b", "-w", "2",
                                    "-m", "bleu", "chrf", "-f", "text"],
        "score_only_json_bleu_chrf": ["lohelp.ref.fr", "-i", "lohelp.hyp.fr", "-b", "-w", "2",
                                      "-m", "bleu", "chrf", "-f", "json"],
        "text_w2_2ref_lc_intl": ["lohelp.ref.fr", "lohelp.ref2.fr", "-i", "lohelp.hyp.fr",
                                 "-f", "text", "-w", "2", "-lc", "-tok", "intl"],
        "text_w2_floor": ["misc.ref", "-i", "misc.hyp", "-f", "text", "-w", "2",
                          "-s", "floor", "-sv", "0.2"],
        "text_w2_addk": ["short.ref", "-i", "short.hyp", "-f", "text", "-w", "2",
                         "-s", "add-k", "-tok", "char"],
        "sentence_w2": ["misc.ref", "-i", "misc.hyp", "-sl", "-w", "2"],
        "sentence_w2_chrf": ["misc.ref", "-i", "misc.hyp", "-sl", "-w", "2", "-m", "chrf",
                             "--chrf-word-order", "2"],
        "sentence_w2_json": ["short.ref", "-i", "short.hyp", "-sl", "-w", "2", "-f", "json"],
        "paired_bs_text": ["lohelp.ref.fr", "-i", "lohelp.hyp.fr", "lohelp.hyp2.fr",
                           "--paired-bs", "-m", "bleu", "chrf", "-f", "text", "-w", "2"],
        # NB: sacrebleu 2.6.0 crashes on `--paired-bs -f json` (numpy float32 is
        # not JSON serializable), so there is no fixture for that combination.
    }
    env = dict(os.environ, NO_COLOR="1")
    env.pop("SACREBLEU_SEED", None)
    env.pop("SACREBLEU_FORMAT", None)
    out = {}
    for name, args in runs.items():
        p = subprocess.run(exe + args + ["-q"], cwd=FIX, env=env, capture_output=True,
                           text=True, check=True)
        out[name] = {"args": args, "stdout": p.stdout}
    return out


def dump(name, obj, indent=1):
    with open(FIX / name, "w", encoding="utf-8", newline="\n") as f:
        json.dump(obj, f, ensure_ascii=False, indent=indent)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--regen-inputs", action="store_true",
                    help="rebuild the input files from the corpora first")
    ap.add_argument("--corpora", type=Path, default=ROOT.parent / "shared" / "corpora")
    args = ap.parse_args()
    if sacrebleu.__version__ != "2.6.0":
        sys.exit(f"need sacrebleu 2.6.0, found {sacrebleu.__version__}")
    if args.regen_inputs:
        regen_inputs(args.corpora)
    meta = {"sacrebleu_version": sacrebleu.__version__}
    dump("expected_corpus.json", dict(meta, **corpus_expectations()))
    dump("expected_sentence.json", dict(meta, **sentence_expectations()), indent=None)
    dump("expected_paired.json", dict(meta, paired=paired_expectations()))
    dump("expected_cli.json", dict(meta, runs=cli_expectations()))


if __name__ == "__main__":
    main()
