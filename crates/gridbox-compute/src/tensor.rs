//! Tensors as the host holds them.

use gridbox_abi::DType;

use crate::ops::OpError;

/// A tensor's element type and shape, without its data: what shape inference works on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorMeta {
    /// Element type.
    pub dtype: DType,
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
}

impl TensorMeta {
    /// A meta for `dtype` and `shape`.
    pub fn new(dtype: DType, shape: Vec<usize>) -> Self {
        TensorMeta { dtype, shape }
    }

    /// Number of elements, or an error when the product overflows.
    pub fn checked_len(&self) -> Result<usize, OpError> {
        checked_product(&self.shape)
    }

    /// Size in bytes, or an error when it overflows.
    pub fn checked_bytes(&self) -> Result<usize, OpError> {
        self.checked_len()?.checked_mul(self.dtype.size()).ok_or_else(|| OpError::ShapeMismatch(format!("shape {:?} is too large", self.shape)))
    }
}

/// The product of `dims`, overflow-checked.
pub fn checked_product(dims: &[usize]) -> Result<usize, OpError> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| OpError::ShapeMismatch(format!("shape {dims:?} has more elements than fit in memory")))
}

/// A tensor's elements.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// `f32` elements.
    F32(Vec<f32>),
    /// `i32` elements.
    I32(Vec<i32>),
    /// `f16` elements, as their bit patterns.
    F16(Vec<u16>),
    /// `bf16` elements, as their bit patterns.
    Bf16(Vec<u16>),
}

impl TensorData {
    /// No elements, of `dtype`.
    pub fn empty(dtype: DType) -> TensorData {
        match dtype {
            DType::I32 => TensorData::I32(Vec::new()),
            DType::F16 => TensorData::F16(Vec::new()),
            DType::BF16 => TensorData::Bf16(Vec::new()),
            _ => TensorData::F32(Vec::new()),
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::I32(v) => v.len(),
            TensorData::F16(v) | TensorData::Bf16(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            TensorData::F32(_) => DType::F32,
            TensorData::I32(_) => DType::I32,
            TensorData::F16(_) => DType::F16,
            TensorData::Bf16(_) => DType::BF16,
        }
    }
}

/// A tensor on the host: dtype, shape and elements in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: TensorData,
}

impl Tensor {
    /// An `f32` tensor. Fails when `data` does not have the shape's element count.
    pub fn f32(shape: Vec<usize>, data: Vec<f32>) -> Result<Tensor, OpError> {
        Tensor::new(shape, TensorData::F32(data))
    }

    /// An `i32` tensor. Fails when `data` does not have the shape's element count.
    pub fn i32(shape: Vec<usize>, data: Vec<i32>) -> Result<Tensor, OpError> {
        Tensor::new(shape, TensorData::I32(data))
    }

    /// An `f16` tensor from bit patterns. Fails when `bits` does not have the shape's element count.
    pub fn f16(shape: Vec<usize>, bits: Vec<u16>) -> Result<Tensor, OpError> {
        Tensor::new(shape, TensorData::F16(bits))
    }

    /// A `bf16` tensor from bit patterns. Fails when `bits` does not have the shape's element count.
    pub fn bf16(shape: Vec<usize>, bits: Vec<u16>) -> Result<Tensor, OpError> {
        Tensor::new(shape, TensorData::Bf16(bits))
    }

    /// A tensor from its parts. Fails when the element count does not match the shape.
    pub fn new(shape: Vec<usize>, data: TensorData) -> Result<Tensor, OpError> {
        let len = checked_product(&shape)?;
        let actual = data.len();
        if len != actual {
            return Err(OpError::ShapeMismatch(format!("shape {shape:?} needs {len} elements, got {actual}")));
        }
        Ok(Tensor { shape, data })
    }

    /// Decodes little-endian elements. `bytes.len()` must be the shape's size in bytes.
    pub fn from_le_bytes(dtype: DType, shape: Vec<usize>, bytes: &[u8]) -> Result<Tensor, OpError> {
        let meta = TensorMeta::new(dtype, shape);
        let expected = meta.checked_bytes()?;
        if bytes.len() != expected {
            return Err(OpError::ShapeMismatch(format!("shape {:?} of {} needs {expected} bytes, got {}", meta.shape, dtype.name(), bytes.len())));
        }
        let words = || bytes.chunks_exact(4).map(|c| [c[0], c[1], c[2], c[3]]);
        let halves = || bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]));
        let data = match dtype {
            DType::I32 => TensorData::I32(words().map(i32::from_le_bytes).collect()),
            DType::F16 => TensorData::F16(halves().collect()),
            DType::BF16 => TensorData::Bf16(halves().collect()),
            _ => TensorData::F32(words().map(f32::from_le_bytes).collect()),
        };
        Tensor::new(meta.shape, data)
    }

    /// Appends the little-endian bytes of every element to `out`.
    pub fn write_le_bytes(&self, out: &mut Vec<u8>) {
        match &self.data {
            TensorData::F32(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorData::I32(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorData::F16(v) | TensorData::Bf16(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        }
    }

    /// Writes the little-endian bytes of every element into `out`, which must be exactly
    /// [`Tensor::byte_len`] long (else nothing is written and `false` comes back).
    pub fn copy_le_bytes_to(&self, out: &mut [u8]) -> bool {
        if out.len() != self.byte_len() {
            return false;
        }
        match &self.data {
            TensorData::F32(v) => out.chunks_exact_mut(4).zip(v).for_each(|(slot, x)| slot.copy_from_slice(&x.to_le_bytes())),
            TensorData::I32(v) => out.chunks_exact_mut(4).zip(v).for_each(|(slot, x)| slot.copy_from_slice(&x.to_le_bytes())),
            TensorData::F16(v) | TensorData::Bf16(v) => out.chunks_exact_mut(2).zip(v).for_each(|(slot, x)| slot.copy_from_slice(&x.to_le_bytes())),
        }
        true
    }

    /// The little-endian bytes of every element.
    pub fn to_le_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.byte_len());
        self.write_le_bytes(&mut out);
        out
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    /// The dimensions.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Dtype and shape.
    pub fn meta(&self) -> TensorMeta {
        TensorMeta::new(self.dtype(), self.shape.clone())
    }

    /// The elements.
    pub fn data(&self) -> &TensorData {
        &self.data
    }

    /// The elements if `f32`.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            TensorData::F32(v) => Some(v),
            _ => None,
        }
    }

    /// The elements if `i32`.
    pub fn as_i32(&self) -> Option<&[i32]> {
        match &self.data {
            TensorData::I32(v) => Some(v),
            _ => None,
        }
    }

    /// The bit patterns if `f16` or `bf16` (which one: [`Tensor::dtype`]).
    pub fn as_u16(&self) -> Option<&[u16]> {
        match &self.data {
            TensorData::F16(v) | TensorData::Bf16(v) => Some(v),
            _ => None,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether it has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Size in bytes.
    pub fn byte_len(&self) -> usize {
        self.len() * self.dtype().size()
    }

    /// BLAKE3 over dtype code, rank, dims (u64 LE) and the element bytes: what the trace records.
    pub fn content_hash(&self) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new_derive_key("gridbox 2026-11 tensor v1");
        hasher.update(&self.dtype().code().to_le_bytes());
        hasher.update(&(self.shape.len() as u64).to_le_bytes());
        for dim in &self.shape {
            hasher.update(&(*dim as u64).to_le_bytes());
        }
        let mut bytes = Vec::with_capacity(64 * 1024);
        let chunk = 16 * 1024;
        match &self.data {
            TensorData::F32(v) => {
                for part in v.chunks(chunk) {
                    bytes.clear();
                    part.iter().for_each(|x| bytes.extend_from_slice(&x.to_le_bytes()));
                    hasher.update(&bytes);
                }
            }
            TensorData::I32(v) => {
                for part in v.chunks(chunk) {
                    bytes.clear();
                    part.iter().for_each(|x| bytes.extend_from_slice(&x.to_le_bytes()));
                    hasher.update(&bytes);
                }
            }
            TensorData::F16(v) | TensorData::Bf16(v) => {
                for part in v.chunks(chunk) {
                    bytes.clear();
                    part.iter().for_each(|x| bytes.extend_from_slice(&x.to_le_bytes()));
                    hasher.update(&bytes);
                }
            }
        }
        *hasher.finalize().as_bytes()
    }
}
