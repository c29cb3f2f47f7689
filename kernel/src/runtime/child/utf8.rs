//! Text from a child's byte stream: a read can end in the middle of a UTF-8 character.

/// Turns successive byte chunks of one stream into text without cutting a character in two: an
/// incomplete UTF-8 sequence at the end of a chunk is kept for the next one. Bytes that can
/// never be UTF-8 become U+FFFD at once (they do not hold the stream back).
#[derive(Debug, Default)]
pub struct Utf8Carry {
    pending: Vec<u8>,
}

impl Utf8Carry {
    /// The complete text of `pending` + `bytes`; keeps an unfinished last character.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        if self.pending.is_empty() {
            // the common case: a whole chunk of valid text, no copy into `pending`
            let keep = incomplete_tail(bytes);
            let (text, rest) = bytes.split_at(bytes.len() - keep);
            self.pending.extend_from_slice(rest);
            return String::from_utf8_lossy(text).into_owned();
        }
        self.pending.extend_from_slice(bytes);
        let keep = incomplete_tail(&self.pending);
        let rest = self.pending.split_off(self.pending.len() - keep);
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending = rest;
        text
    }

    /// What is still held back (an unfinished character at the end of the stream becomes
    /// U+FFFD); the carry is empty afterwards.
    pub fn finish(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        text
    }
}

/// Length of the suffix of `b` that starts a UTF-8 sequence the next bytes could complete (0–3).
fn incomplete_tail(b: &[u8]) -> usize {
    for k in 1..=b.len().min(3) {
        match std::str::from_utf8(&b[b.len() - k..]) {
            // a truncated, so far valid sequence starting exactly k bytes from the end
            Err(e) if e.valid_up_to() == 0 && e.error_len().is_none() => return k,
            _ => {}
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn characters_split_across_reads_come_out_whole() {
        let text = "aé€𝄞z";
        let bytes = text.as_bytes();
        // every way of cutting the stream into two reads
        for cut in 0..=bytes.len() {
            let mut c = Utf8Carry::default();
            let mut got = c.push(&bytes[..cut]);
            assert!(!got.contains('\u{fffd}'), "cut at {cut}: {got:?}");
            got.push_str(&c.push(&bytes[cut..]));
            got.push_str(&c.finish());
            assert_eq!(got, text, "cut at {cut}");
        }
        // one byte per read
        let mut c = Utf8Carry::default();
        let got: String = bytes.iter().map(|b| c.push(&[*b])).collect();
        assert_eq!(got, text);
    }

    #[test]
    fn invalid_bytes_are_replaced_without_holding_text_back() {
        let mut c = Utf8Carry::default();
        assert_eq!(c.push(&[b'a', 0xff, b'b']), "a\u{fffd}b");
        // an invalid byte followed by the start of a real character: only the start waits
        assert_eq!(c.push(&[0xff, 0xe2, 0x82]), "\u{fffd}");
        assert_eq!(c.push(&[0xac]), "€");
        // a stream that ends inside a character
        assert_eq!(c.push(&[0xf0, 0x9d]), "");
        assert_eq!(c.finish(), "\u{fffd}");
        assert_eq!(c.finish(), "");
    }
}
