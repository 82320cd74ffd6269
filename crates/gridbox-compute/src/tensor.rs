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
}

impl TensorData {
    /// No elements, of `dtype`.
    pub fn empty(dtype: DType) -> TensorData {
        match dtype {
            DType::I32 => TensorData::I32(Vec::new()),
            _ => TensorData::F32(Vec::new()),
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

    /// A tensor from its parts. Fails when the element count does not match the shape.
    pub fn new(shape: Vec<usize>, data: TensorData) -> Result<Tensor, OpError> {
        let len = checked_product(&shape)?;
        let actual = match &data {
            TensorData::F32(v) => v.len(),
            TensorData::I32(v) => v.len(),
        };
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
        let words = bytes.chunks_exact(4).map(|c| [c[0], c[1], c[2], c[3]]);
        let data = match dtype {
            DType::I32 => TensorData::I32(words.map(i32::from_le_bytes).collect()),
            _ => TensorData::F32(words.map(f32::from_le_bytes).collect()),
        };
        Tensor::new(meta.shape, data)
    }

    /// Appends the little-endian bytes of every element to `out`.
    pub fn write_le_bytes(&self, out: &mut Vec<u8>) {
        match &self.data {
            TensorData::F32(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorData::I32(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
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
        match self.data {
            TensorData::F32(_) => DType::F32,
            TensorData::I32(_) => DType::I32,
        }
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
            TensorData::I32(_) => None,
        }
    }

    /// The elements if `i32`.
    pub fn as_i32(&self) -> Option<&[i32]> {
        match &self.data {
            TensorData::I32(v) => Some(v),
            TensorData::F32(_) => None,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match &self.data {
            TensorData::F32(v) => v.len(),
            TensorData::I32(v) => v.len(),
        }
    }

    /// Whether it has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Size in bytes.
    pub fn byte_len(&self) -> usize {
        self.len() * 4
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
        }
        *hasher.finalize().as_bytes()
    }
}
