//! Reader threads for a child's pipes.

use super::Utf8Carry;
use std::io::{self, BufRead, BufReader, Read};
use std::thread::JoinHandle;

/// Starts a thread that reads `r` in chunks of at most `chunk` bytes and hands each to `f`; at
/// end of file or on a read error `f` gets an empty slice and the thread ends. `f` returns false
/// to stop early.
pub fn read_chunks<R, F>(name: &str, mut r: R, chunk: usize, mut f: F) -> io::Result<JoinHandle<()>>
where
    R: Read + Send + 'static,
    F: FnMut(&[u8]) -> bool + Send + 'static,
{
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let mut buf = vec![0u8; chunk];
            loop {
                match r.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if !f(&buf[..n]) {
                            return;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
            f(&[]);
        })
}

/// [`read_chunks`] as text: `f` gets each chunk's complete characters (a character cut by a
/// read waits for the rest, see [`Utf8Carry`]; never an empty string), then `None` at the end.
pub fn read_text<R, F>(name: &str, r: R, chunk: usize, mut f: F) -> io::Result<JoinHandle<()>>
where
    R: Read + Send + 'static,
    F: FnMut(Option<&str>) -> bool + Send + 'static,
{
    let mut carry = Utf8Carry::default();
    read_chunks(name, r, chunk, move |bytes| {
        let text = if bytes.is_empty() {
            carry.finish()
        } else {
            carry.push(bytes)
        };
        if !text.is_empty() && !f(Some(&text)) {
            return false;
        }
        if bytes.is_empty() {
            f(None);
        }
        true
    })
}

/// Starts a thread that reads `r` line by line (without the newline, invalid UTF-8 replaced) and
/// hands each to `f`; at end of file or on error `f` gets `None`. `f` returns false to stop.
pub fn read_lines<R, F>(name: &str, r: R, mut f: F) -> io::Result<JoinHandle<()>>
where
    R: Read + Send + 'static,
    F: FnMut(Option<String>) -> bool + Send + 'static,
{
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let mut r = BufReader::new(r);
            let mut line = Vec::new();
            loop {
                line.clear();
                match r.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if line.last() == Some(&b'\n') {
                            line.pop();
                        }
                        if !f(Some(String::from_utf8_lossy(&line).into_owned())) {
                            return;
                        }
                    }
                }
            }
            f(None);
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::mpsc;

    #[test]
    fn chunks_end_with_an_empty_slice() {
        let (r, mut w) = std::io::pipe().unwrap();
        let (tx, rx) = mpsc::channel();
        read_chunks("t", r, 4, move |b| tx.send(b.to_vec()).is_ok()).unwrap();
        w.write_all(b"abcdef").unwrap();
        drop(w);
        let mut all = Vec::new();
        loop {
            let c = rx.recv().unwrap();
            if c.is_empty() {
                break;
            }
            assert!(c.len() <= 4);
            all.extend(c);
        }
        assert_eq!(all, b"abcdef");
    }

    #[test]
    fn text_reads_keep_characters_whole_across_reads() {
        let (r, mut w) = std::io::pipe().unwrap();
        let (tx, rx) = mpsc::channel();
        // 2-byte reads cut "€" (3 bytes) and "é" (2 bytes, at an odd offset) in the middle
        let h = read_text("t", r, 2, move |t| tx.send(t.map(str::to_string)).is_ok()).unwrap();
        w.write_all("a€é".as_bytes()).unwrap();
        drop(w);
        h.join().unwrap();
        let got: Vec<Option<String>> = rx.iter().collect();
        assert_eq!(got.last(), Some(&None));
        let text: String = got.iter().flatten().map(String::as_str).collect();
        assert_eq!(text, "a€é");
        assert!(got.iter().flatten().all(|t| !t.is_empty()), "{got:?}");
    }
}
