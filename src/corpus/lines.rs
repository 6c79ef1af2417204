//! Reading lines with a bound on the bytes kept, for corpora and for translation input: a
//! line of any length (a 20 MB line, or `/dev/zero`) costs at most the bound in memory.
use std::io::{self, BufRead};

/// The UTF-8 byte order mark, which editors put at the start of a file.
pub const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Reads the next line into `buf` without its `\n` / `\r\n`, keeping at most `max` bytes:
/// the rest of a longer line is read and dropped, and a cut inside a UTF-8 character backs up
/// to the character's start. Returns the line's full length in bytes (more than `max` when
/// cut), or `None` at the end of the input.
pub fn read_line_bounded<R: BufRead + ?Sized>(
    input: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<Option<usize>> {
    buf.clear();
    let mut total = 0usize;
    let mut any = false;
    loop {
        let chunk = match input.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            break;
        }
        any = true;
        let newline = chunk.iter().position(|&b| b == b'\n');
        let part = &chunk[..newline.unwrap_or(chunk.len())];
        let room = max.saturating_sub(buf.len());
        buf.extend_from_slice(&part[..part.len().min(room)]);
        total = total.saturating_add(part.len());
        let used = newline.map_or(chunk.len(), |i| i + 1);
        input.consume(used);
        if newline.is_some() {
            break;
        }
    }
    if !any {
        return Ok(None);
    }
    if total <= max {
        if buf.last() == Some(&b'\r') {
            buf.pop();
            total -= 1;
        }
    } else if let Err(e) = std::str::from_utf8(buf) {
        if e.error_len().is_none() {
            buf.truncate(e.valid_up_to());
        }
    }
    Ok(Some(total))
}

/// Drops a leading byte order mark from `buf` (the first line of a file).
pub fn strip_bom(buf: &mut Vec<u8>) {
    if buf.starts_with(BOM) {
        buf.drain(..BOM.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &[u8], max: usize) -> Vec<(Vec<u8>, usize)> {
        let mut r = io::BufReader::with_capacity(7, input);
        let mut out = Vec::new();
        let mut buf = Vec::new();
        while let Some(n) = read_line_bounded(&mut r, &mut buf, max).unwrap() {
            out.push((buf.clone(), n));
        }
        out
    }

    #[test]
    fn lines_endings_and_bounds() {
        let got = all(b"ab\r\ncd\n\nlast", 100);
        let want: Vec<(Vec<u8>, usize)> = vec![
            (b"ab".to_vec(), 2),
            (b"cd".to_vec(), 2),
            (vec![], 0),
            (b"last".to_vec(), 4),
        ];
        assert_eq!(got, want);
        // A long line keeps `max` bytes and reports its length; the next line is intact.
        let got = all(b"0123456789abcdef\nxy\n", 5);
        assert_eq!(got[0], (b"01234".to_vec(), 16));
        assert_eq!(got[1], (b"xy".to_vec(), 2));
        // A cut inside a character backs up to its start: "é" is 2 bytes.
        let got = all("aé é".as_bytes(), 2);
        assert_eq!(got[0].0, b"a");
        assert!(all(b"", 5).is_empty());
    }

    #[test]
    fn bom_is_dropped() {
        let mut b = b"\xEF\xBB\xBFhi".to_vec();
        strip_bom(&mut b);
        assert_eq!(b, b"hi");
        strip_bom(&mut b);
        assert_eq!(b, b"hi");
    }
}
