//! Tokenizers: the byte-level BPE of a Hugging Face `tokenizer.json` (the kind GPT-2, SmolLM and
//! Llama 3 ship), and a byte tokenizer (token = byte) for models without one.
//!
//! What is read of `tokenizer.json`: `model` (`type` BPE: `vocab`, `merges` as `"a b"` strings
//! or `["a", "b"]` pairs), `added_tokens` (matched literally in the text before anything else,
//! longest first), `normalizer` (must be null), and `pre_tokenizer`: null, `ByteLevel`
//! (`add_prefix_space`, `use_regex`: the GPT-2 split below), `Digits` (`individual_digits`),
//! or a `Sequence` of those. Anything else is refused by name rather than tokenized differently
//! from the model's own tokenizer.
//!
//! The GPT-2 split (`'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`)
//! is written out by hand; letters are `char::is_alphabetic` (Unicode Alphabetic, which is
//! `\p{L}` plus letter numbers and some combining marks), digits `char::is_numeric`, spaces
//! `char::is_whitespace` (Unicode White_Space, as `\s`).

use std::collections::HashMap;

use serde_json::Value;

/// Why a tokenizer could not be read or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenizerError {
    /// `tokenizer.json` is not what this reader understands; the text says what.
    #[error("tokenizer.json: {0}")]
    Format(String),
    /// A piece of text has no token (the vocab lacks a byte's symbol and there is no unk token).
    #[error("no token for {0:?} in the vocabulary")]
    NoToken(String),
    /// An id past the vocabulary.
    #[error("token id {id} is outside the vocabulary of {size}")]
    BadId {
        /// The id.
        id: u32,
        /// The vocabulary's size.
        size: usize,
    },
}

/// A tokenizer.
#[derive(Debug)]
pub enum Tokenizer {
    /// Token = byte of the UTF-8 text (ids 0 to 255).
    Bytes,
    /// Byte-level BPE.
    Bpe(Box<Bpe>),
}

impl Tokenizer {
    /// The ids of `text`.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        match self {
            Tokenizer::Bytes => Ok(text.bytes().map(u32::from).collect()),
            Tokenizer::Bpe(bpe) => bpe.encode(text),
        }
    }

    /// The text of `ids` (bytes that are not UTF-8 become U+FFFD).
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        match self {
            // An id past 255 (a model whose vocabulary is larger than bytes, used without its
            // tokenizer) has no text: it becomes U+FFFD, as bytes that are not UTF-8 do.
            Tokenizer::Bytes => Ok(ids
                .split(|&id| id > 255)
                .map(|run| String::from_utf8_lossy(&run.iter().map(|&id| id as u8).collect::<Vec<u8>>()).into_owned())
                .collect::<Vec<_>>()
                .join("\u{FFFD}")),
            Tokenizer::Bpe(bpe) => bpe.decode(ids),
        }
    }
}

/// One pre-tokenizer step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PreTokenizer {
    /// Digits, each on its own (`individual_digits`) or in runs.
    Digits { individual: bool },
    /// The GPT-2 split (when `use_regex`), after a leading space is added (`add_prefix_space`).
    ByteLevel { add_prefix_space: bool, use_regex: bool },
}

/// A byte-level BPE tokenizer read from `tokenizer.json`.
#[derive(Debug)]
pub struct Bpe {
    vocab: HashMap<String, u32>,
    /// Token strings by id (added tokens included).
    tokens: Vec<Option<String>>,
    ranks: HashMap<(String, String), usize>,
    /// Added tokens, longest first.
    added: Vec<(String, u32)>,
    added_ids: HashMap<u32, String>,
    pre: Vec<PreTokenizer>,
    unk: Option<u32>,
    byte_to_char: [char; 256],
    char_to_byte: HashMap<char, u8>,
}

impl Bpe {
    /// Reads a `tokenizer.json`.
    pub fn from_json(json: &[u8]) -> Result<Bpe, TokenizerError> {
        let bad = |what: String| TokenizerError::Format(what);
        let root: Value = serde_json::from_slice(json).map_err(|e| bad(format!("not JSON: {e}")))?;
        let model = root.get("model").ok_or_else(|| bad("no \"model\"".into()))?;
        match model.get("type").and_then(Value::as_str) {
            Some("BPE") | None => {}
            Some(other) => return Err(bad(format!("model type {other:?} is not supported (byte-level BPE only)"))),
        }
        if model.get("byte_fallback").and_then(Value::as_bool) == Some(true) {
            return Err(bad("a SentencePiece-style BPE (byte_fallback) is not supported; byte-level BPE only".into()));
        }
        if !matches!(root.get("normalizer"), None | Some(Value::Null)) {
            return Err(bad("a normalizer is not supported".into()));
        }
        let pre = match root.get("pre_tokenizer") {
            None | Some(Value::Null) => Vec::new(),
            Some(p) => pre_tokenizers(p)?,
        };
        let vocab_json = model.get("vocab").and_then(Value::as_object).ok_or_else(|| bad("model has no \"vocab\" object".into()))?;
        let mut vocab = HashMap::with_capacity(vocab_json.len());
        for (token, id) in vocab_json {
            let id = id.as_u64().and_then(|i| u32::try_from(i).ok()).ok_or_else(|| bad(format!("vocab entry {token:?} has no valid id")))?;
            vocab.insert(token.clone(), id);
        }
        let merges_json = model.get("merges").and_then(Value::as_array).ok_or_else(|| bad("model has no \"merges\" array".into()))?;
        let mut ranks = HashMap::with_capacity(merges_json.len());
        for (rank, merge) in merges_json.iter().enumerate() {
            let pair = match merge {
                Value::String(s) => s.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())),
                Value::Array(a) if a.len() == 2 => a[0].as_str().zip(a[1].as_str()).map(|(a, b)| (a.to_string(), b.to_string())),
                _ => None,
            };
            let pair = pair.ok_or_else(|| bad(format!("merge {rank} is neither \"a b\" nor [\"a\", \"b\"]")))?;
            ranks.entry(pair).or_insert(rank);
        }
        let mut added = Vec::new();
        for token in root.get("added_tokens").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default() {
            let content = token.get("content").and_then(Value::as_str).ok_or_else(|| bad("an added token has no \"content\"".into()))?;
            let id = token
                .get("id")
                .and_then(Value::as_u64)
                .and_then(|i| u32::try_from(i).ok())
                .ok_or_else(|| bad(format!("added token {content:?} has no valid id")))?;
            if !content.is_empty() {
                added.push((content.to_string(), id));
            }
        }
        added.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        let size = vocab.values().chain(added.iter().map(|(_, id)| id)).map(|&id| id as usize + 1).max().unwrap_or(0);
        if size > 1 << 24 {
            return Err(bad(format!("a token id of {} is beyond any vocabulary this reader takes (2^24)", size - 1)));
        }
        let mut tokens = vec![None; size];
        for (token, &id) in &vocab {
            tokens[id as usize] = Some(token.clone());
        }
        let added_ids: HashMap<u32, String> = added.iter().map(|(t, id)| (*id, t.clone())).collect();
        let unk = model.get("unk_token").and_then(Value::as_str).and_then(|t| vocab.get(t).copied());
        let byte_to_char = bytes_to_chars();
        let char_to_byte = byte_to_char.iter().enumerate().map(|(b, &c)| (c, b as u8)).collect();
        Ok(Bpe { vocab, tokens, ranks, added, added_ids, pre, unk, byte_to_char, char_to_byte })
    }

    /// The number of ids (one past the largest).
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// The id of an added or vocabulary token spelled exactly `token`.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.added.iter().find(|(t, _)| t == token).map(|(_, id)| *id).or_else(|| self.vocab.get(token).copied())
    }

    /// The ids of `text`.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let mut ids = Vec::new();
        let mut cache: HashMap<String, Vec<u32>> = HashMap::new();
        let mut rest = text;
        while !rest.is_empty() {
            // The next added token, if any, splits the text.
            let next = self
                .added
                .iter()
                .filter_map(|(t, id)| rest.find(t.as_str()).map(|at| (at, t.len(), *id)))
                .min_by_key(|&(at, len, _)| (at, std::cmp::Reverse(len)));
            let (plain, after) = match next {
                Some((at, len, id)) => (&rest[..at], Some((id, &rest[at + len..]))),
                None => (rest, None),
            };
            if !plain.is_empty() {
                for piece in self.pre_tokenize(plain) {
                    if let Some(known) = cache.get(&piece) {
                        ids.extend_from_slice(known);
                        continue;
                    }
                    let word = self.bpe(&piece)?;
                    ids.extend_from_slice(&word);
                    cache.insert(piece, word);
                }
            }
            match after {
                Some((id, after)) => {
                    ids.push(id);
                    rest = after;
                }
                None => break,
            }
        }
        Ok(ids)
    }

    /// The text of `ids`.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        let mut bytes = Vec::new();
        for &id in ids {
            if let Some(added) = self.added_ids.get(&id) {
                bytes.extend_from_slice(added.as_bytes());
                continue;
            }
            let token = self.tokens.get(id as usize).and_then(Option::as_ref).ok_or(TokenizerError::BadId { id, size: self.tokens.len() })?;
            for c in token.chars() {
                match self.char_to_byte.get(&c) {
                    Some(&b) => bytes.push(b),
                    // Not a byte-level symbol (a hand-made vocab entry): its own UTF-8.
                    None => bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
                }
            }
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The pieces the pre-tokenizers cut `text` into, each mapped byte for byte to its
    /// byte-level symbols.
    fn pre_tokenize(&self, text: &str) -> Vec<String> {
        let mut pieces = vec![text.to_string()];
        for step in &self.pre {
            let mut next = Vec::new();
            for piece in &pieces {
                match *step {
                    PreTokenizer::Digits { individual } => split_digits(piece, individual, &mut next),
                    PreTokenizer::ByteLevel { add_prefix_space, use_regex } => {
                        let spaced;
                        let piece = if add_prefix_space && !piece.starts_with(' ') {
                            spaced = format!(" {piece}");
                            &spaced
                        } else {
                            piece
                        };
                        if use_regex {
                            next.extend(gpt2_split(piece).into_iter().map(str::to_string));
                        } else {
                            next.push(piece.clone());
                        }
                    }
                }
            }
            pieces = next;
        }
        pieces.into_iter().map(|p| p.bytes().map(|b| self.byte_to_char[b as usize]).collect()).collect()
    }

    /// BPE of one piece: merges the adjacent pair of lowest rank (leftmost on ties) until none
    /// is in the merges, then looks each symbol up.
    fn bpe(&self, piece: &str) -> Result<Vec<u32>, TokenizerError> {
        if let Some(&id) = self.vocab.get(piece) {
            return Ok(vec![id]);
        }
        let mut symbols: Vec<String> = piece.chars().map(String::from).collect();
        loop {
            let mut best: Option<(usize, usize)> = None;
            for at in 0..symbols.len().saturating_sub(1) {
                if let Some(&rank) = self.ranks.get(&(symbols[at].clone(), symbols[at + 1].clone()))
                    && best.is_none_or(|(r, _)| rank < r)
                {
                    best = Some((rank, at));
                }
            }
            let Some((_, at)) = best else { break };
            let right = symbols.remove(at + 1);
            symbols[at].push_str(&right);
        }
        symbols.iter().map(|s| self.vocab.get(s).copied().or(self.unk).ok_or_else(|| TokenizerError::NoToken(s.clone()))).collect()
    }
}

fn pre_tokenizers(value: &Value) -> Result<Vec<PreTokenizer>, TokenizerError> {
    let kind = value.get("type").and_then(Value::as_str).unwrap_or("");
    match kind {
        "Sequence" => {
            let steps = value
                .get("pretokenizers")
                .and_then(Value::as_array)
                .ok_or_else(|| TokenizerError::Format("a Sequence pre_tokenizer has no \"pretokenizers\"".into()))?;
            let mut all = Vec::new();
            for step in steps {
                all.extend(pre_tokenizers(step)?);
            }
            Ok(all)
        }
        "ByteLevel" => Ok(vec![PreTokenizer::ByteLevel {
            add_prefix_space: value.get("add_prefix_space").and_then(Value::as_bool).unwrap_or(true),
            use_regex: value.get("use_regex").and_then(Value::as_bool).unwrap_or(true),
        }]),
        "Digits" => Ok(vec![PreTokenizer::Digits { individual: value.get("individual_digits").and_then(Value::as_bool).unwrap_or(false) }]),
        other => Err(TokenizerError::Format(format!("pre_tokenizer {other:?} is not supported (ByteLevel, Digits or a Sequence of them)"))),
    }
}

/// Splits runs of digits out of `text` (each digit alone when `individual`).
fn split_digits(text: &str, individual: bool, out: &mut Vec<String>) {
    let mut current = String::new();
    let mut in_digits = false;
    for c in text.chars() {
        let digit = c.is_numeric();
        if !current.is_empty() && (digit != in_digits || (digit && individual)) {
            out.push(std::mem::take(&mut current));
        }
        in_digits = digit;
        current.push(c);
    }
    if !current.is_empty() {
        out.push(current);
    }
}

/// The GPT-2 pre-tokenizer split:
/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`.
pub fn gpt2_split(text: &str) -> Vec<&str> {
    let letter = |c: char| c.is_alphabetic();
    let number = |c: char| c.is_numeric();
    let other = |c: char| !c.is_whitespace() && !c.is_alphabetic() && !c.is_numeric();
    let mut pieces = Vec::new();
    let mut at = 0;
    while at < text.len() {
        let rest = &text[at..];
        let len = match_at(rest, letter, number, other);
        pieces.push(&rest[..len]);
        at += len;
    }
    pieces
}

/// The length of the GPT-2 pattern's match at the start of `rest` (never 0 for non-empty text).
fn match_at(rest: &str, letter: impl Fn(char) -> bool, number: impl Fn(char) -> bool, other: impl Fn(char) -> bool) -> usize {
    for contraction in ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"] {
        if rest.starts_with(contraction) {
            return contraction.len();
        }
    }
    let run = |s: &str, class: &dyn Fn(char) -> bool| s.char_indices().find(|&(_, c)| !class(c)).map_or(s.len(), |(i, _)| i);
    let classes: [&dyn Fn(char) -> bool; 3] = [&letter, &number, &other];
    for class in classes {
        // ` ?X+`: the space is taken when X follows it.
        let (skip, body) = match rest.strip_prefix(' ') {
            Some(after) if after.chars().next().is_some_and(class) => (1, after),
            _ => (0, rest),
        };
        let len = run(body, class);
        if len > 0 {
            return skip + len;
        }
    }
    // `\s+(?!\S)`, then `\s+`: a whitespace run, less its last char when a non-space follows.
    let spaces = run(rest, &|c: char| c.is_whitespace());
    if spaces > 0 {
        if spaces == rest.len() {
            return spaces;
        }
        let last = rest[..spaces].chars().next_back().map_or(1, char::len_utf8);
        return if spaces > last { spaces - last } else { spaces };
    }
    // Unreachable for a non-empty string (every char is a letter, number, other or space);
    // one char keeps the split total.
    rest.chars().next().map_or(rest.len(), char::len_utf8)
}

/// GPT-2's map of bytes to printable chars: printable Latin-1 bytes map to themselves, the
/// rest to U+0100 onwards in byte order.
fn bytes_to_chars() -> [char; 256] {
    let mut map = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        let printable = (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
        map[b as usize] = if printable {
            char::from(b)
        } else {
            let c = char::from_u32(next).unwrap_or('\u{FFFD}');
            next += 1;
            c
        };
    }
    map
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn gpt2_split_matches_the_pattern() {
        assert_eq!(gpt2_split("Hello world's  end!!  42x\n\n"), vec!["Hello", " world", "'s", " ", " end", "!!", " ", " 42", "x", "\n\n"]);
        assert_eq!(gpt2_split("  a"), vec![" ", " a"]);
        assert_eq!(gpt2_split("a  "), vec!["a", "  "]);
        assert_eq!(gpt2_split("héllo wörld"), vec!["héllo", " wörld"]);
    }

    #[test]
    fn byte_tokens_decode_losslessly_and_larger_ids_as_replacement() {
        assert_eq!(Tokenizer::Bytes.encode("hé").unwrap(), vec![104, 195, 169]);
        assert_eq!(Tokenizer::Bytes.decode(&[104, 195, 169]).unwrap(), "hé");
        assert_eq!(Tokenizer::Bytes.decode(&[104, 4000, 105]).unwrap(), "h\u{FFFD}i");
    }

    #[test]
    fn digits_split() {
        let mut out = Vec::new();
        split_digits("ab123c4", true, &mut out);
        assert_eq!(out, vec!["ab", "1", "2", "3", "c", "4"]);
        out.clear();
        split_digits("ab123c4", false, &mut out);
        assert_eq!(out, vec!["ab", "123", "c", "4"]);
    }

    #[test]
    fn byte_map_is_a_bijection() {
        let map = bytes_to_chars();
        let distinct: std::collections::HashSet<char> = map.iter().copied().collect();
        assert_eq!(distinct.len(), 256);
        assert_eq!(map[b' ' as usize], 'Ġ');
        assert_eq!(map[b'\n' as usize], 'Ċ');
    }

    fn tiny() -> Bpe {
        let json = r#"{"added_tokens":[{"id":9,"content":"<|end|>","special":true}],"normalizer":null,
            "pre_tokenizer":{"type":"ByteLevel","add_prefix_space":false,"use_regex":true},
            "model":{"type":"BPE","vocab":{"a":0,"b":1,"Ġ":2,"ab":3,"Ġab":4,"c":5},"merges":["a b","Ġ ab"]}}"#;
        Bpe::from_json(json.as_bytes()).unwrap()
    }

    #[test]
    fn encodes_and_decodes() {
        let bpe = tiny();
        assert_eq!(bpe.encode("ab ab<|end|>c").unwrap(), vec![3, 4, 9, 5]);
        assert_eq!(bpe.decode(&[3, 4, 9, 5]).unwrap(), "ab ab<|end|>c");
        assert!(matches!(bpe.encode("d"), Err(TokenizerError::NoToken(_))));
        assert!(matches!(bpe.decode(&[77]), Err(TokenizerError::BadId { id: 77, .. })));
    }

    #[test]
    fn refuses_what_it_does_not_understand() {
        for (json, expected) in [
            (r#"{"model":{"type":"Unigram"}}"#, "Unigram"),
            (r#"{"model":{"type":"BPE","byte_fallback":true,"vocab":{},"merges":[]}}"#, "byte_fallback"),
            (r#"{"normalizer":{"type":"NFC"},"model":{"type":"BPE","vocab":{},"merges":[]}}"#, "normalizer"),
            (r#"{"pre_tokenizer":{"type":"Metaspace"},"model":{"type":"BPE","vocab":{},"merges":[]}}"#, "Metaspace"),
            (r#"{"model":{"type":"BPE","vocab":{"a":-1},"merges":[]}}"#, "valid id"),
            (r#"{"model":{"type":"BPE","vocab":{"a":4294967295},"merges":[]}}"#, "2^24"),
            (r#"{"model":{"type":"BPE","vocab":{},"merges":[7]}}"#, "merge 0"),
            ("not json", "not JSON"),
        ] {
            let error = Bpe::from_json(json.as_bytes()).unwrap_err().to_string();
            assert!(error.contains(expected), "{json}: {error}");
        }
    }
}
