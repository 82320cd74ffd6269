//! A Llama-architecture decoder on the gridbox tensor bridge, loaded from a Hugging Face style
//! folder: `config.json`, `model.safetensors` (f32, f16 or bf16 weights) and, when present,
//! `tokenizer.json` (byte-level BPE; without it, one token per byte).
//!
//! Every op runs on the bridge, so the same receipt verifies on any backend. The weights are
//! uploaded once per job; each generated token then costs one forward pass over one position,
//! with the keys and values of earlier positions kept on the bridge (the KV cache).

pub mod model;
pub mod sampling;

pub use model::{Llama, LoadError};
pub use sampling::Sampler;
