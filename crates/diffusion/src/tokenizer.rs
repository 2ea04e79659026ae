//! CLIP BPE tokenization with ComfyUI's prompt syntax (`comfy/sd1_clip.py` `SDTokenizer`).
//!
//! - BPE: OpenAI's `bpe_simple_vocab_16e6` (49408 ids), bundled at compile time by the
//!   `instant-clip-tokenizer` crate; no file or network access at run time. Text handling
//!   follows the Hugging Face `CLIPTokenizer` ComfyUI uses (no ftfy): NFC, whitespace runs →
//!   one space, lowercase, split with CLIP's regex, byte-level BPE with `</w>` word ends.
//! - Prompt syntax ([`weights`]): `(text)` ×1.1, `(text:w)`, `\(`/`\)`, `embedding:name`
//!   (looked up in the embedding folders given to [`PromptTokenizer::new`]).
//! - Windows of 77: `[49406, tokens…, 49407, pad…]`, ComfyUI's splitting rule (groups of 8+
//!   tokens may straddle windows, smaller ones move whole), pad 49407 for CLIP-L and 0 for
//!   OpenCLIP-G/H.

pub mod weights;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use unicode_normalization::UnicodeNormalization;

use crate::checkpoint::config::{ClipKind, TextEncoderConfig};

/// `<|startoftext|>`.
pub const START_TOKEN: u32 = 49406;
/// `<|endoftext|>`.
pub const END_TOKEN: u32 = 49407;
/// Window length.
pub const MAX_LENGTH: usize = 77;
/// Groups at least this long may be split across windows.
pub const MAX_WORD_LENGTH: usize = 8;

/// One position of a window: a vocabulary id or an embedding vector (textual inversion).
#[derive(Debug, Clone, PartialEq)]
pub enum Token {
    /// Vocabulary id.
    Id(u32),
    /// A vector inserted in place of a token embedding.
    Embedding(Arc<Vec<f32>>),
}

/// A token with its prompt weight and group index (0 = start/end/pad, else 1 + group).
#[derive(Debug, Clone, PartialEq)]
pub struct WeightedToken {
    /// The token.
    pub token: Token,
    /// Weight from the prompt syntax (1.0 for start/end/pad).
    pub weight: f64,
    /// 0 for start/end/pad, else 1 + index of the token group it came from.
    pub word_id: u32,
}

/// 77 weighted tokens.
pub type Window = Vec<WeightedToken>;

/// Tokenized prompt for every text encoder of a model (ComfyUI's `{"l": …, "g": …}` dict).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tokens {
    /// Per encoder kind, its windows.
    pub per_encoder: Vec<(ClipKind, Vec<Window>)>,
}

impl Tokens {
    /// Windows for encoder `kind`.
    pub fn get(&self, kind: ClipKind) -> Option<&[Window]> {
        self.per_encoder
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, w)| w.as_slice())
    }
}

fn bpe() -> &'static instant_clip_tokenizer::Tokenizer {
    static T: OnceLock<instant_clip_tokenizer::Tokenizer> = OnceLock::new();
    T.get_or_init(instant_clip_tokenizer::Tokenizer::new)
}

fn split_regex() -> &'static regex::Regex {
    static R: OnceLock<regex::Regex> = OnceLock::new();
    R.get_or_init(|| {
        regex::Regex::new(r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+")
            .unwrap_or_else(|e| panic!("static regex: {e}"))
    })
}

fn whitespace_regex() -> &'static regex::Regex {
    static R: OnceLock<regex::Regex> = OnceLock::new();
    R.get_or_init(|| regex::Regex::new(r"\s+").unwrap_or_else(|e| panic!("static regex: {e}")))
}

fn encode_plain(text: &str, out: &mut Vec<u32>) {
    let nfc: String = text.nfc().collect();
    let spaced = whitespace_regex().replace_all(&nfc, " ");
    let lower: String = spaced.chars().flat_map(char::to_lowercase).collect();
    let mut toks = Vec::new();
    for m in split_regex().find_iter(&lower) {
        toks.clear();
        bpe().encode(m.as_str(), &mut toks);
        out.extend(toks.iter().map(|t| t.to_u16() as u32));
    }
}

/// Hugging Face `CLIPTokenizer` ids of `text` without BOS/EOS (special-token strings in the
/// text map to their ids).
pub fn encode_text(text: &str) -> Vec<u32> {
    let mut out = Vec::new();
    let mut rest = text;
    loop {
        let s = rest
            .find("<|startoftext|>")
            .map(|i| (i, START_TOKEN, "<|startoftext|>".len()));
        let e = rest
            .find("<|endoftext|>")
            .map(|i| (i, END_TOKEN, "<|endoftext|>".len()));
        let next = match (s, e) {
            (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
            (a, b) => a.or(b),
        };
        match next {
            Some((i, id, len)) => {
                encode_plain(&rest[..i], &mut out);
                out.push(id);
                rest = &rest[i + len..];
            }
            None => {
                encode_plain(rest, &mut out);
                return out;
            }
        }
    }
}

const EMBEDDING_IDENTIFIER: &str = "embedding:";

/// Tokenizer for one encoder's windows (ComfyUI `SDTokenizer`).
#[derive(Debug, Clone)]
pub struct SdTokenizer {
    /// Pad id (49407 CLIP-L, 0 OpenCLIP).
    pub pad_token: u32,
    /// Key to pick from embedding files (`clip_l`, `clip_g`, `clip_h`).
    pub embedding_key: String,
    /// Embedding folders; `None` = `embedding:` is plain text.
    pub embedding_dirs: Option<Vec<PathBuf>>,
}

impl SdTokenizer {
    /// `tokenize_with_weights`: the prompt as 77-token windows.
    pub fn tokenize_with_weights(&self, text: &str) -> Vec<Window> {
        let text = weights::escape_important(text);
        let parsed = weights::token_weights(&text, 1.0);
        let mut groups: Vec<Vec<(Token, f64)>> = Vec::new();
        for (segment, weight) in parsed {
            let seg = weights::unescape_important(&segment);
            for word in split_embeddings(&seg) {
                let mut word = word;
                if word.starts_with(EMBEDDING_IDENTIFIER) {
                    if let Some(dirs) = &self.embedding_dirs {
                        let name = word[EMBEDDING_IDENTIFIER.len()..].trim_matches('\n');
                        let (embed, leftover) = self.try_get_embedding(dirs, name);
                        match embed {
                            Some(vectors) => groups.push(
                                vectors
                                    .into_iter()
                                    .map(|v| (Token::Embedding(v), weight))
                                    .collect(),
                            ),
                            None => {
                                tracing::warn!("warning, embedding:{name} does not exist, ignoring")
                            }
                        }
                        if leftover.is_empty() {
                            continue;
                        }
                        word = leftover;
                    }
                }
                groups.push(
                    encode_text(&word)
                        .into_iter()
                        .map(|t| (Token::Id(t), weight))
                        .collect(),
                );
            }
        }
        self.chunk(groups)
    }

    fn chunk(&self, groups: Vec<Vec<(Token, f64)>>) -> Vec<Window> {
        let wt = |t: Token, w: f64, id: u32| WeightedToken {
            token: t,
            weight: w,
            word_id: id,
        };
        let special = |t: u32| wt(Token::Id(t), 1.0, 0);
        let mut windows: Vec<Window> = Vec::new();
        let mut batch: Window = vec![special(START_TOKEN)];
        for (i, group) in groups.into_iter().enumerate() {
            let is_large = group.len() >= MAX_WORD_LENGTH;
            let mut g: &[(Token, f64)] = &group;
            while !g.is_empty() {
                if g.len() + batch.len() > MAX_LENGTH - 1 {
                    let remaining = MAX_LENGTH - batch.len() - 1;
                    if is_large {
                        batch.extend(
                            g[..remaining]
                                .iter()
                                .map(|(t, w)| wt(t.clone(), *w, i as u32 + 1)),
                        );
                        batch.push(special(END_TOKEN));
                        g = &g[remaining..];
                    } else {
                        batch.push(special(END_TOKEN));
                        batch.extend((0..remaining).map(|_| special(self.pad_token)));
                    }
                    windows.push(std::mem::replace(&mut batch, vec![special(START_TOKEN)]));
                } else {
                    batch.extend(g.iter().map(|(t, w)| wt(t.clone(), *w, i as u32 + 1)));
                    g = &[];
                }
            }
        }
        batch.push(special(END_TOKEN));
        while batch.len() < MAX_LENGTH {
            batch.push(special(self.pad_token));
        }
        windows.push(batch);
        windows
    }

    /// `_try_get_embedding`: the vectors of the first word of `name`, and the leftover text.
    fn try_get_embedding(
        &self,
        dirs: &[PathBuf],
        name: &str,
    ) -> (Option<Vec<Arc<Vec<f32>>>>, String) {
        let mut parts = name.split_whitespace();
        let first = parts.next().unwrap_or("");
        let leftover = parts.collect::<Vec<_>>().join(" ");
        let embed = load_embed(first, dirs, &self.embedding_key);
        if embed.is_none() {
            let stripped = first.trim_matches(',');
            if stripped.len() < first.len() {
                let embed = load_embed(stripped, dirs, &self.embedding_key);
                // The commas the name lost go back in front of the leftover text (ComfyUI
                // returns `name[len(stripped):]`, i.e. the tail of the original name).
                let tail: String = first.chars().skip(stripped.chars().count()).collect();
                return (embed, format!("{tail} {leftover}"));
            }
        }
        (embed, leftover)
    }
}

/// `re.split(' embedding:|\nembedding:')`, re-prefixing the pieces after the first, dropping
/// empty pieces.
fn split_embeddings(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = s;
    let mut first = true;
    loop {
        let a = rest.find(" embedding:");
        let b = rest.find("\nembedding:");
        let cut = match (a, b) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        };
        let (piece, next) = match cut {
            Some(i) => (
                &rest[..i],
                Some(&rest[i + 1 + EMBEDDING_IDENTIFIER.len()..]),
            ),
            None => (rest, None),
        };
        let piece = if first {
            piece.to_string()
        } else {
            format!("{EMBEDDING_IDENTIFIER}{piece}")
        };
        if !piece.is_empty() {
            out.push(piece);
        }
        first = false;
        match next {
            Some(n) => rest = n,
            None => return out,
        }
    }
}

fn subdirs(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_path_buf());
    if let Ok(rd) = std::fs::read_dir(dir) {
        let mut entries: Vec<PathBuf> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        entries.sort();
        for e in entries {
            subdirs(&e, out);
        }
    }
}

/// Finds and reads embedding `name` (ComfyUI `load_embed`): each folder and its subfolders,
/// exact name or with `.safetensors`/`.pt`/`.bin`, never outside the folder. Only safetensors
/// files can be read (pickles are reported and skipped).
pub fn load_embed(name: &str, dirs: &[PathBuf], key: &str) -> Option<Vec<Arc<Vec<f32>>>> {
    if name.is_empty() {
        return None;
    }
    let rel = Path::new(name);
    if rel.is_absolute()
        || rel
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return None;
    }
    let mut all = Vec::new();
    for d in dirs {
        subdirs(d, &mut all);
    }
    let mut found = None;
    'outer: for d in &all {
        let p = d.join(rel);
        if p.is_file() {
            found = Some(p);
            break;
        }
        for ext in [".safetensors", ".pt", ".bin"] {
            let mut s = p.clone().into_os_string();
            s.push(ext);
            let q = PathBuf::from(s);
            if q.is_file() {
                found = Some(q);
                break 'outer;
            }
        }
    }
    let path = found?;
    match read_embedding_file(&path, key) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!("embedding {}: {e}", path.display());
            None
        }
    }
}

fn read_embedding_file(path: &Path, key: &str) -> crate::Result<Vec<Arc<Vec<f32>>>> {
    let ck = crate::checkpoint::Checkpoint::open(path)?;
    let name = if ck.contains(key) {
        key.to_string()
    } else {
        ck.names()
            .next()
            .map(str::to_string)
            .ok_or_else(|| ck.error("no tensors"))?
    };
    let t = ck.tensor(&name, candle_core::DType::F32, &candle_core::Device::Cpu)?;
    let rows: Vec<Vec<f32>> = match t.rank() {
        1 => vec![t.to_vec1()?],
        2 => t.to_vec2()?,
        r => {
            return Err(ck.error(format!(
                "embedding tensor {name:?} has rank {r}, expected 1 or 2"
            )))
        }
    };
    Ok(rows.into_iter().map(Arc::new).collect())
}

/// Tokenizer for all text encoders of a model (what `CLIPTextEncode` calls).
#[derive(Debug, Clone)]
pub struct PromptTokenizer {
    /// One tokenizer per encoder, in the model's order.
    pub encoders: Vec<(ClipKind, SdTokenizer)>,
}

impl PromptTokenizer {
    /// Tokenizers for `encoders` (from `ModelConfig::text_encoders`); `embedding_dirs` =
    /// `None` disables `embedding:` lookup.
    pub fn new(encoders: &[TextEncoderConfig], embedding_dirs: Option<Vec<PathBuf>>) -> Self {
        PromptTokenizer {
            encoders: encoders
                .iter()
                .map(|c| {
                    (
                        c.kind,
                        SdTokenizer {
                            pad_token: c.pad_token(),
                            embedding_key: c.embedding_key().to_string(),
                            embedding_dirs: embedding_dirs.clone(),
                        },
                    )
                })
                .collect(),
        }
    }

    /// Tokenizes `text` for every encoder.
    pub fn tokenize(&self, text: &str) -> Tokens {
        Tokens {
            per_encoder: self
                .encoders
                .iter()
                .map(|(k, t)| (*k, t.tokenize_with_weights(text)))
                .collect(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
