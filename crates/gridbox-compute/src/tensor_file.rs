//! Kept tensors (spec/trace.md, "Tensor files"): the self-describing encoding of one tensor in a
//! file, and the [`TensorKeeper`] a session hands every tensor its trace names to.
//!
//! A tensor file is the 8 bytes `gbtensor`, then exactly the bytes the tensor's content hash
//! covers: dtype code (u32 LE), rank (u64 LE), each dim (u64 LE), the elements (LE). So the
//! file's tensor hash is `BLAKE3-derive-key("gridbox 2026-11 tensor v1", file[8..])`.

use gridbox_abi::{DType, MAX_RANK};

use crate::tensor::{Tensor, TensorMeta};

/// The first bytes of every tensor file.
pub const MAGIC: &[u8; 8] = b"gbtensor";

/// Receives every tensor a session's trace names (created, op inputs and outputs, read), with
/// its content hash, for `gridbox run --keep-tensors`. Keeping never changes a run's result: a
/// keeper that cannot store a tensor remembers the failure for its owner to report after the
/// run.
pub trait TensorKeeper: Send + Sync + std::fmt::Debug {
    /// Keeps `tensor`, whose content hash is `hash`.
    fn keep(&self, hash: &[u8; 32], tensor: &Tensor);
}

/// A tensor file that cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TensorFileError {
    /// It does not start with [`MAGIC`].
    #[error("not a gridbox tensor file: it does not start with `gbtensor`")]
    NoMagic,
    /// It ends inside its header.
    #[error("the tensor file ends inside its header")]
    Truncated,
    /// The dtype code is not a dtype.
    #[error("dtype code {0} is not a dtype")]
    DType(u32),
    /// The rank is above the ABI's.
    #[error("rank {0} is above the most a tensor has ({MAX_RANK})")]
    Rank(u64),
    /// The elements are not what the header says.
    #[error("the header says {expected} bytes of elements, the file has {got}")]
    Length {
        /// What dtype and dims call for (saturated).
        expected: u64,
        /// What follows the header.
        got: u64,
    },
}

/// The file bytes of `tensor`.
pub fn encode(tensor: &Tensor) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + 4 + 8 + 8 * tensor.shape().len() + tensor.byte_len());
    out.extend_from_slice(MAGIC);
    out.extend(tensor.dtype().code().to_le_bytes());
    out.extend((tensor.shape().len() as u64).to_le_bytes());
    tensor.shape().iter().for_each(|dim| out.extend((*dim as u64).to_le_bytes()));
    tensor.write_le_bytes(&mut out);
    out
}

/// The tensor a file holds. Every size is checked before anything is allocated.
pub fn decode(bytes: &[u8]) -> Result<Tensor, TensorFileError> {
    let rest = bytes.strip_prefix(MAGIC.as_slice()).ok_or(TensorFileError::NoMagic)?;
    let (code, rest) = take::<4>(rest)?;
    let code = u32::from_le_bytes(code);
    let dtype = DType::from_code(code).ok_or(TensorFileError::DType(code))?;
    let (rank, mut rest) = take::<8>(rest)?;
    let rank = u64::from_le_bytes(rank);
    if rank > MAX_RANK as u64 {
        return Err(TensorFileError::Rank(rank));
    }
    let mut shape = Vec::with_capacity(rank as usize);
    let mut expected = dtype.size() as u64;
    for _ in 0..rank {
        let (dim, after) = take::<8>(rest)?;
        let dim = u64::from_le_bytes(dim);
        expected = expected.saturating_mul(dim);
        shape.push(usize::try_from(dim).unwrap_or(usize::MAX));
        rest = after;
    }
    if expected != rest.len() as u64 {
        return Err(TensorFileError::Length { expected, got: rest.len() as u64 });
    }
    let meta = TensorMeta::new(dtype, shape);
    // The length matched a product that fits in memory, so this cannot fail.
    Tensor::from_le_bytes(meta.dtype, meta.shape, rest).map_err(|_| TensorFileError::Length { expected, got: rest.len() as u64 })
}

fn take<const N: usize>(bytes: &[u8]) -> Result<([u8; N], &[u8]), TensorFileError> {
    let head = bytes.get(..N).ok_or(TensorFileError::Truncated)?;
    let mut out = [0; N];
    out.copy_from_slice(head);
    Ok((out, &bytes[N..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_hashes_like_the_tensor() {
        for tensor in [Tensor::f32(vec![2, 3], vec![1.5; 6]).unwrap(), Tensor::i32(vec![0, 4], vec![]).unwrap(), Tensor::f32(vec![], vec![7.0]).unwrap()] {
            let bytes = encode(&tensor);
            assert_eq!(decode(&bytes).unwrap(), tensor);
            let hash = *blake3::Hasher::new_derive_key("gridbox 2026-11 tensor v1").update(&bytes[8..]).finalize().as_bytes();
            assert_eq!(hash, tensor.content_hash());
        }
    }

    #[test]
    fn malformed_files_are_refused_with_the_reason() {
        let good = encode(&Tensor::f32(vec![2, 2], vec![1.0; 4]).unwrap());
        assert_eq!(decode(b"hello world"), Err(TensorFileError::NoMagic));
        assert_eq!(decode(&good[..14]), Err(TensorFileError::Truncated));
        assert_eq!(decode(&good[..good.len() - 1]), Err(TensorFileError::Length { expected: 16, got: 15 }));
        let mut dtype = good.clone();
        dtype[8] = 9;
        assert_eq!(decode(&dtype), Err(TensorFileError::DType(9)));
        let mut rank = good.clone();
        rank[12] = 200;
        assert_eq!(decode(&rank), Err(TensorFileError::Rank(200)));
        let mut huge = good[..28].to_vec();
        huge.extend(u64::MAX.to_le_bytes());
        assert!(matches!(decode(&huge), Err(TensorFileError::Length { .. })));
    }
}
