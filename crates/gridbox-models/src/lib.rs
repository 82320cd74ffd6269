//! Model files a job reads, checked as hostile input: `model.safetensors`, a Hugging Face
//! `tokenizer.json` (byte-level BPE) and a Llama `config.json`. Pure Rust with no host or
//! bridge dependency, so that a job (wasm32-wasip1) and the host's tests share one reader.

pub mod config;
pub mod safetensors;
pub mod tokenizer;

pub use config::{ConfigError, LlamaConfig};
pub use safetensors::{Safetensors, SafetensorsError, StoredDtype, TensorInfo};
pub use tokenizer::{Bpe, Tokenizer, TokenizerError};
