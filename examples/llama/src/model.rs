//! The decoder: token embedding, then per layer RMSNorm, grouped-query attention with rotary
//! position embedding and a KV cache, RMSNorm and a SwiGLU MLP, each with a residual; a final
//! RMSNorm and the output head (tied to the embedding or its own).

use std::path::Path;

use gridbox_models::{ConfigError, LlamaConfig, Safetensors, SafetensorsError, StoredDtype, TensorInfo};
use gridbox_sdk::{DType, Tensor};

/// Why a model could not be loaded or run.
#[derive(Debug)]
#[non_exhaustive]
pub enum LoadError {
    /// `config.json` is missing or wrong.
    Config(ConfigError),
    /// A file could not be read.
    Io(std::path::PathBuf, std::io::Error),
    /// `model.safetensors` is wrong or lacks a tensor.
    Weights(SafetensorsError),
    /// A weight's shape is not what the config implies.
    Shape {
        /// The tensor.
        name: String,
        /// What the config implies.
        expected: Vec<usize>,
        /// What the file holds.
        found: Vec<usize>,
    },
    /// The bridge refused a call.
    Bridge(gridbox_sdk::Error),
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Config(e) => write!(f, "{e}"),
            LoadError::Io(path, e) => write!(f, "{}: {e}", path.display()),
            LoadError::Weights(e) => write!(f, "{e}"),
            LoadError::Shape { name, expected, found } => write!(f, "model.safetensors: tensor {name:?} is {found:?}; the config implies {expected:?}"),
            LoadError::Bridge(e) => write!(f, "tensor bridge: {e}"),
        }
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadError::Config(e) => Some(e),
            LoadError::Io(_, e) => Some(e),
            LoadError::Weights(e) => Some(e),
            LoadError::Bridge(e) => Some(e),
            LoadError::Shape { .. } => None,
        }
    }
}

impl From<gridbox_sdk::Error> for LoadError {
    fn from(e: gridbox_sdk::Error) -> Self {
        LoadError::Bridge(e)
    }
}

impl From<SafetensorsError> for LoadError {
    fn from(e: SafetensorsError) -> Self {
        LoadError::Weights(e)
    }
}

/// One decoder layer's weights; projections are stored `[in, out]` (transposed once at load).
struct Layer {
    input_norm: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    o: Tensor,
    post_norm: Tensor,
    gate: Tensor,
    up: Tensor,
    down: Tensor,
    /// Keys of every position so far, `[kv_heads, positions, head_dim]`.
    keys: Option<Tensor>,
    /// Values of every position so far, `[kv_heads, positions, head_dim]`.
    values: Option<Tensor>,
}

/// A loaded model and its KV cache.
pub struct Llama {
    config: LlamaConfig,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    /// The output head, `[hidden, vocab]`.
    head: Tensor,
    /// Positions in the cache.
    positions: usize,
}

impl Llama {
    /// Loads `folder/config.json` and `folder/model.safetensors`, uploading every weight once.
    pub fn load(folder: &Path) -> Result<Llama, LoadError> {
        let config_path = folder.join("config.json");
        let config_json = std::fs::read(&config_path).map_err(|e| LoadError::Io(config_path.clone(), e))?;
        let config = LlamaConfig::from_json(&config_json).map_err(LoadError::Config)?;
        let mut file = Safetensors::open(&folder.join("model.safetensors"))?;
        let (hidden, heads, kv_heads, head_dim) = (config.hidden_size, config.num_attention_heads, config.kv_heads(), config.head_dim());
        let (inter, vocab) = (config.intermediate_size, config.vocab_size);
        let embed = load(&mut file, "model.embed_tokens.weight", &[vocab, hidden])?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("model.layers.{i}.");
            let mut linear =
                |name: &str, out: usize, inp: usize| -> Result<Tensor, LoadError> { Ok(load(&mut file, &format!("{p}{name}"), &[out, inp])?.transpose()?) };
            let q = linear("self_attn.q_proj.weight", heads * head_dim, hidden)?;
            let k = linear("self_attn.k_proj.weight", kv_heads * head_dim, hidden)?;
            let v = linear("self_attn.v_proj.weight", kv_heads * head_dim, hidden)?;
            let o = linear("self_attn.o_proj.weight", hidden, heads * head_dim)?;
            let gate = linear("mlp.gate_proj.weight", inter, hidden)?;
            let up = linear("mlp.up_proj.weight", inter, hidden)?;
            let down = linear("mlp.down_proj.weight", hidden, inter)?;
            let input_norm = load(&mut file, &format!("{p}input_layernorm.weight"), &[hidden])?;
            let post_norm = load(&mut file, &format!("{p}post_attention_layernorm.weight"), &[hidden])?;
            layers.push(Layer { input_norm, q, k, v, o, post_norm, gate, up, down, keys: None, values: None });
        }
        let norm = load(&mut file, "model.norm.weight", &[hidden])?;
        let head = if config.tie_word_embeddings || !file.tensors().contains_key("lm_head.weight") {
            embed.transpose()?
        } else {
            load(&mut file, "lm_head.weight", &[vocab, hidden])?.transpose()?
        };
        Ok(Llama { config, embed, layers, norm, head, positions: 0 })
    }

    /// The model's config.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// Positions in the KV cache (tokens fed so far).
    pub fn positions(&self) -> usize {
        self.positions
    }

    /// Feeds `tokens` at the next positions and returns the logits of the last one, `[1, vocab]`.
    pub fn forward(&mut self, tokens: &[u32]) -> Result<Tensor, LoadError> {
        let t = tokens.len();
        let c = &self.config;
        let (heads, kv_heads, head_dim) = (c.num_attention_heads, c.kv_heads(), c.head_dim());
        let eps = c.rms_norm_eps as f32;
        let theta = c.rope_theta as f32;
        let start = self.positions;
        let ids: Vec<i32> = tokens.iter().map(|&id| i32::try_from(id).unwrap_or(i32::MAX)).collect();
        let mut x = self.embed.gather(&Tensor::from_i32(&ids, &[t])?)?;
        let scale = 1.0 / (head_dim as f32).sqrt();
        for layer in &mut self.layers {
            let h = x.rms_norm(&layer.input_norm, eps)?;
            // [t, heads * d] -> [heads, t, d], rotated by position.
            let q = h.matmul(&layer.q)?.reshape(&[t, heads, head_dim])?.permute(&[1, 0, 2])?.rope(start, theta)?;
            let k = h.matmul(&layer.k)?.reshape(&[t, kv_heads, head_dim])?.permute(&[1, 0, 2])?.rope(start, theta)?;
            let v = h.matmul(&layer.v)?.reshape(&[t, kv_heads, head_dim])?.permute(&[1, 0, 2])?;
            let keys = match layer.keys.take() {
                Some(cache) => Tensor::concat(&[&cache, &k], 1)?,
                None => k,
            };
            let values = match layer.values.take() {
                Some(cache) => Tensor::concat(&[&cache, &v], 1)?,
                None => v,
            };
            // Causal grouped-query attention over the cache, in one bridge call (bit for bit
            // the matmul, scale, mask, softmax and matmul it stands for).
            let attended = q.attention(&keys, &values, start, scale)?;
            let attended = attended.permute(&[1, 0, 2])?.reshape(&[t, heads * head_dim])?;
            x = x.add(&attended.matmul(&layer.o)?)?;
            layer.keys = Some(keys);
            layer.values = Some(values);
            let h = x.rms_norm(&layer.post_norm, eps)?;
            let mlp = h.matmul(&layer.gate)?.silu()?.mul(&h.matmul(&layer.up)?)?.matmul(&layer.down)?;
            x = x.add(&mlp)?;
        }
        self.positions = start + t;
        let last = if t > 1 { x.slice(0, t - 1, t)? } else { x };
        Ok(last.rms_norm(&self.norm, eps)?.matmul(&self.head)?)
    }
}

/// Reads tensor `name`, checks its shape, and uploads it as f32 (half-precision weights are
/// uploaded as stored and converted on the bridge).
fn load(file: &mut Safetensors, name: &str, expected: &[usize]) -> Result<Tensor, LoadError> {
    let info: &TensorInfo = file.info(name)?;
    if info.shape != expected {
        return Err(LoadError::Shape { name: name.to_string(), expected: expected.to_vec(), found: info.shape.clone() });
    }
    let (info, bytes) = file.read(name)?;
    Ok(match info.dtype {
        StoredDtype::F32 => {
            let values: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            Tensor::from_slice(&values, &info.shape)?
        }
        StoredDtype::F16 => Tensor::from_f16_bytes(&bytes, &info.shape)?.cast(DType::F32)?,
        StoredDtype::Bf16 => Tensor::from_bf16_bytes(&bytes, &info.shape)?.cast(DType::F32)?,
    })
}
