//! A Llama-architecture model's `config.json` (the Hugging Face `LlamaConfig` fields a decoder
//! needs), checked so that every size the model derives from it is consistent and bounded.

use serde::Deserialize;

/// Why a config was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Not JSON, or a field of the wrong type.
    #[error("config.json: {0}")]
    Json(#[source] serde_json::Error),
    /// The fields disagree or are out of range; the text names them.
    #[error("config.json: {0}")]
    Invalid(String),
}

/// The fields of a Llama `config.json` the decoder uses.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct LlamaConfig {
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the SwiGLU MLP.
    pub intermediate_size: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention); defaults to the query heads.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Tokens in the vocabulary.
    pub vocab_size: usize,
    /// RMSNorm's epsilon.
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// RoPE's base.
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    /// Whether the output head is the token embedding.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Most positions the model was trained for.
    #[serde(default = "default_positions")]
    pub max_position_embeddings: usize,
    /// Per-head width; defaults to hidden / heads.
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// The end-of-sequence token, when the model has one (a number or a list of numbers).
    #[serde(default)]
    pub eos_token_id: Option<serde_json::Value>,
}

fn default_eps() -> f64 {
    1e-6
}

fn default_theta() -> f64 {
    10_000.0
}

fn default_positions() -> usize {
    2048
}

/// The largest of any one size this reader takes: far above real models, and small enough that
/// products of two sizes fit a u64.
const MAX_DIM: usize = 1 << 24;

impl LlamaConfig {
    /// Reads and checks `config.json`.
    pub fn from_json(json: &[u8]) -> Result<LlamaConfig, ConfigError> {
        let config: LlamaConfig = serde_json::from_slice(json).map_err(ConfigError::Json)?;
        config.check()?;
        Ok(config)
    }

    /// Key/value heads.
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Per-head width.
    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// The end-of-sequence ids.
    pub fn eos_ids(&self) -> Vec<u32> {
        match &self.eos_token_id {
            Some(serde_json::Value::Number(n)) => n.as_u64().and_then(|n| u32::try_from(n).ok()).into_iter().collect(),
            Some(serde_json::Value::Array(ids)) => ids.iter().filter_map(|n| n.as_u64().and_then(|n| u32::try_from(n).ok())).collect(),
            _ => Vec::new(),
        }
    }

    fn check(&self) -> Result<(), ConfigError> {
        let invalid = |what: String| Err(ConfigError::Invalid(what));
        for (name, value) in [
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.kv_heads()),
            ("num_hidden_layers", self.num_hidden_layers),
            ("vocab_size", self.vocab_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("head_dim", self.head_dim()),
        ] {
            if value == 0 || value > MAX_DIM {
                return invalid(format!("{name} is {value}; it must be 1 to {MAX_DIM}"));
            }
        }
        if !self.num_attention_heads.is_multiple_of(self.kv_heads()) {
            return invalid(format!("num_attention_heads ({}) is not a multiple of num_key_value_heads ({})", self.num_attention_heads, self.kv_heads()));
        }
        if !self.head_dim().is_multiple_of(2) {
            return invalid(format!("head_dim is {}; rotary embedding needs it even", self.head_dim()));
        }
        if self.head_dim.is_none() && !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return invalid(format!("hidden_size ({}) is not a multiple of num_attention_heads ({})", self.hidden_size, self.num_attention_heads));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return invalid(format!("rms_norm_eps is {}; it must be positive and finite", self.rms_norm_eps));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 1.0) {
            return invalid(format!("rope_theta is {}; it must be finite and above 1", self.rope_theta));
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const SMOL: &str = r#"{"hidden_size":576,"intermediate_size":1536,"num_attention_heads":9,"num_key_value_heads":3,
        "num_hidden_layers":30,"vocab_size":49152,"rms_norm_eps":1e-5,"rope_theta":10000.0,"tie_word_embeddings":true,
        "max_position_embeddings":2048,"eos_token_id":0,"model_type":"llama"}"#;

    #[test]
    fn reads_a_smollm_config() {
        let config = LlamaConfig::from_json(SMOL.as_bytes()).unwrap();
        assert_eq!((config.head_dim(), config.kv_heads()), (64, 3));
        assert_eq!(config.eos_ids(), vec![0]);
    }

    #[test]
    fn refuses_inconsistent_sizes() {
        for (change, expected) in [
            (("\"num_key_value_heads\":3", "\"num_key_value_heads\":4"), "not a multiple of num_key_value_heads"),
            (("\"hidden_size\":576", "\"hidden_size\":0"), "hidden_size is 0"),
            (("\"hidden_size\":576", "\"hidden_size\":577"), "not a multiple of num_attention_heads"),
            (("\"rms_norm_eps\":1e-5", "\"rms_norm_eps\":-1"), "rms_norm_eps"),
            (("\"vocab_size\":49152", "\"vocab_size\":\"many\""), "invalid type"),
        ] {
            let json = SMOL.replace(change.0, change.1);
            let error = LlamaConfig::from_json(json.as_bytes()).unwrap_err().to_string();
            assert!(error.contains(expected), "{}: {error}", change.1);
        }
    }
}
