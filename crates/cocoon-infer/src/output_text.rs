//! Turning generated token bytes into the text a client sees.
//!
//! Two things make this more than concatenation: a token may end in the middle of a UTF-8
//! character (emoji, CJK), and a `stop` string may span several tokens. Text is released only once
//! it is valid UTF-8 and cannot be the start of a stop string, so the streamed pieces always add
//! up to exactly the non-streamed answer, and a stop string never leaks to the client.

/// Text assembled from token bytes, with stop-string detection.
#[derive(Debug, Default)]
pub(crate) struct OutputText {
    stops: Vec<String>,
    /// Bytes of an incomplete UTF-8 character at the end of the output so far.
    partial: Vec<u8>,
    /// Decoded text not yet released because it may be the start of a stop string.
    held: String,
}

/// What one token added.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Step {
    /// Text that can be sent to the client now (may be empty).
    pub text: String,
    /// A stop string was completed; `text` ends just before it and generation must end.
    pub stopped: bool,
}

impl OutputText {
    /// Output that ends at the first occurrence of any of `stops` (empty strings are ignored).
    pub(crate) fn new(stops: Vec<String>) -> Self {
        OutputText {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            ..OutputText::default()
        }
    }

    /// Appends one token's bytes.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Step {
        self.partial.extend_from_slice(bytes);
        self.decode_partial();
        if let Some(at) = self.first_stop() {
            self.held.truncate(at);
            return Step {
                text: std::mem::take(&mut self.held),
                stopped: true,
            };
        }
        let keep = self.stop_prefix_len();
        let release = self.held.len() - keep;
        let rest = self.held.split_off(release);
        Step {
            text: std::mem::replace(&mut self.held, rest),
            stopped: false,
        }
    }

    /// Everything still held back, when generation ends for another reason than a stop string.
    /// An incomplete trailing character becomes U+FFFD.
    pub(crate) fn finish(&mut self) -> String {
        if !self.partial.is_empty() {
            self.held
                .push_str(&String::from_utf8_lossy(&std::mem::take(&mut self.partial)));
        }
        std::mem::take(&mut self.held)
    }

    /// Moves every complete character from `partial` to `held`; invalid bytes become U+FFFD.
    fn decode_partial(&mut self) {
        let mut start = 0;
        loop {
            match std::str::from_utf8(&self.partial[start..]) {
                Ok(valid) => {
                    self.held.push_str(valid);
                    self.partial.clear();
                    return;
                }
                Err(e) => {
                    let valid_end = start + e.valid_up_to();
                    // The prefix was just validated, so this conversion cannot fail.
                    self.held
                        .push_str(&String::from_utf8_lossy(&self.partial[start..valid_end]));
                    match e.error_len() {
                        Some(bad) => {
                            self.held.push(char::REPLACEMENT_CHARACTER);
                            start = valid_end + bad;
                        }
                        None => {
                            // An incomplete character: wait for the next token's bytes.
                            self.partial.drain(..valid_end);
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Byte offset in `held` of the earliest complete stop string.
    fn first_stop(&self) -> Option<usize> {
        self.stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min()
    }

    /// Length of the longest suffix of `held` that is a proper prefix of some stop string.
    fn stop_prefix_len(&self) -> usize {
        let mut longest = 0;
        for stop in &self.stops {
            for (i, _) in self.held.char_indices() {
                let suffix = &self.held[i..];
                if suffix.len() > longest && suffix.len() < stop.len() && stop.starts_with(suffix) {
                    longest = suffix.len();
                }
            }
        }
        longest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&[u8]]) -> (Vec<String>, bool, String) {
        let mut out = OutputText::new(stops.iter().map(|s| s.to_string()).collect());
        let mut texts = Vec::new();
        for piece in pieces {
            let step = out.push(piece);
            texts.push(step.text);
            if step.stopped {
                return (texts, true, String::new());
            }
        }
        let rest = out.finish();
        (texts, false, rest)
    }

    #[test]
    fn plain_text_passes_through_at_once() {
        let (texts, stopped, rest) = run(&[], &[b"Hello", b", ", b"world"]);
        assert_eq!(texts, ["Hello", ", ", "world"]);
        assert!(!stopped);
        assert_eq!(rest, "");
    }

    #[test]
    fn split_utf8_characters_are_joined() {
        let crab = "🦀".as_bytes();
        let (texts, _, rest) = run(&[], &[b"a", &crab[..1], &crab[1..3], &crab[3..], b"b"]);
        assert_eq!(texts, ["a", "", "", "🦀", "b"]);
        assert_eq!(rest, "");
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let (texts, _, rest) = run(&[], &[b"a\xffb"]);
        assert_eq!(texts, ["a\u{fffd}b"]);
        // A character cut off by the end of generation is flushed lossily.
        let (_, _, rest2) = run(&[], &[&"é".as_bytes()[..1]]);
        assert_eq!(rest, "");
        assert_eq!(rest2, "\u{fffd}");
    }

    #[test]
    fn stop_string_across_tokens_is_cut_and_not_leaked() {
        let (texts, stopped, _) = run(&["END"], &[b"one E", b"N", b"D two"]);
        assert!(stopped);
        assert_eq!(texts.concat(), "one ");
        // The partial match was held back, not sent.
        assert_eq!(texts[0], "one ");
        assert_eq!(texts[1], "");
    }

    #[test]
    fn false_start_of_a_stop_string_is_released() {
        let (texts, stopped, rest) = run(&["END"], &[b"an E", b"lephant"]);
        assert!(!stopped);
        assert_eq!(texts, ["an ", "Elephant"]);
        assert_eq!(rest, "");
    }

    #[test]
    fn earliest_of_several_stops_wins() {
        let (texts, stopped, _) = run(&["world", "lo"], &[b"hello world"]);
        assert!(stopped);
        assert_eq!(texts.concat(), "hel");
    }

    #[test]
    fn held_text_is_flushed_at_the_end() {
        let (texts, stopped, rest) = run(&["\n\n"], &[b"last line\n"]);
        assert!(!stopped);
        assert_eq!(texts, ["last line"]);
        assert_eq!(rest, "\n");
    }

    #[test]
    fn empty_stop_strings_are_ignored() {
        let (texts, stopped, _) = run(&[""], &[b"abc"]);
        assert!(!stopped);
        assert_eq!(texts, ["abc"]);
    }
}
