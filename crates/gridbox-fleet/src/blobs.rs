//! Blobs in the market, content-addressed by BLAKE3, all in one KV bucket: a blob of at most
//! [`SMALL_BLOB_BYTES`] is one value under its hash in hex; a larger one is cut into chunks of
//! that size, each stored as a blob of its own (so equal chunks are stored once), and an index
//! under `index.<hash>`: the size (8 bytes, little-endian) and the chunks' hashes (32 bytes each).
//!
//! Every read is bounded before anything is allocated and hashed: each chunk against its name,
//! the whole against the blob's. Nothing is followed by reference and nothing is deleted, so no
//! value written by anyone can make a reader loop, wait without end, or remove other blobs (a
//! KV read is one request with the client's timeout).

use gridbox_core::digest::{BlobRef, Digest};
use tokio::io::AsyncReadExt;

use crate::FleetError;
use crate::market::{Market, SMALL_BLOB_BYTES};

/// Chunks a large blob may have: its index fits one value.
pub const MAX_CHUNKS: usize = (SMALL_BLOB_BYTES - 8) / 32;

/// The largest blob the market holds (about 2 GiB).
pub const MAX_MARKET_BLOB_BYTES: u64 = (MAX_CHUNKS * SMALL_BLOB_BYTES) as u64;

/// The key of a large blob's index.
fn index_key(digest: &Digest) -> String {
    format!("index.{}", digest.to_hex())
}

impl Market {
    async fn put_value(&self, key: &str, bytes: bytes::Bytes) -> Result<(), FleetError> {
        self.blobs.put(key, bytes).await.map(|_| ()).map_err(|e| FleetError::nats(format!("store blob {key}"), e))
    }

    /// Stores `bytes` under their hash (storing the same bytes again renews their age).
    pub async fn put_blob(&self, bytes: &[u8]) -> Result<BlobRef, FleetError> {
        let blob = BlobRef::of(bytes);
        if bytes.len() <= SMALL_BLOB_BYTES {
            self.put_value(&blob.blake3.to_hex(), bytes::Bytes::copy_from_slice(bytes)).await?;
            return Ok(blob);
        }
        if blob.size > MAX_MARKET_BLOB_BYTES {
            return Err(FleetError::BlobTooLarge { name: blob.blake3, size: blob.size, limit: MAX_MARKET_BLOB_BYTES, what: "the market" });
        }
        let mut index = blob.size.to_le_bytes().to_vec();
        for chunk in bytes.chunks(SMALL_BLOB_BYTES) {
            let name = Digest::of(chunk);
            self.put_value(&name.to_hex(), bytes::Bytes::copy_from_slice(chunk)).await?;
            index.extend_from_slice(&name.0);
        }
        self.put_value(&index_key(&blob.blake3), index.into()).await?;
        Ok(blob)
    }

    /// Stores a file whose hash should be `digest` and size `size`, a chunk at a time; refused
    /// (with nothing named `digest` written) if its bytes hash to anything else.
    pub async fn put_blob_file(&self, digest: Digest, size: u64, file: std::fs::File) -> Result<(), FleetError> {
        let name = digest.to_hex();
        let read_error = |source: std::io::Error| FleetError::LocalRead { what: format!("blob {name}"), source };
        if size > MAX_MARKET_BLOB_BYTES {
            return Err(FleetError::BlobTooLarge { name: digest, size, limit: MAX_MARKET_BLOB_BYTES, what: "the market" });
        }
        let mut file = tokio::fs::File::from_std(file);
        let mut hasher = blake3::Hasher::new();
        let mut index = size.to_le_bytes().to_vec();
        let mut left = size;
        let mut first: Option<Vec<u8>> = None;
        while left > 0 {
            let length = left.min(SMALL_BLOB_BYTES as u64) as usize;
            let mut chunk = vec![0u8; length];
            file.read_exact(&mut chunk).await.map_err(read_error)?;
            hasher.update(&chunk);
            left -= length as u64;
            if size <= SMALL_BLOB_BYTES as u64 {
                first = Some(chunk);
                break;
            }
            let chunk_name = Digest::of(&chunk);
            self.put_value(&chunk_name.to_hex(), chunk.into()).await?;
            index.extend_from_slice(&chunk_name.0);
        }
        let got = Digest(*hasher.finalize().as_bytes());
        if got != digest {
            return Err(FleetError::BlobMismatch { name: digest, got });
        }
        match first {
            Some(bytes) => self.put_value(&name, bytes.into()).await,
            None if size == 0 => self.put_value(&name, bytes::Bytes::new()).await,
            None => self.put_value(&index_key(&digest), index.into()).await,
        }
    }

    async fn get_value(&self, key: &str) -> Result<Option<bytes::Bytes>, FleetError> {
        self.blobs.get(key).await.map_err(|e| FleetError::nats(format!("read blob {key}"), e))
    }

    /// Reads blob `digest`, refusing it above `limit` bytes (before reading it) or if its bytes
    /// hash to anything else. `what` names it in errors (`module`, `output`).
    pub async fn get_blob(&self, digest: &Digest, limit: u64, what: &'static str) -> Result<Vec<u8>, FleetError> {
        let too_large = |size: u64| FleetError::BlobTooLarge { name: *digest, size, limit, what };
        let bytes = match self.get_value(&digest.to_hex()).await? {
            Some(bytes) if bytes.len() as u64 > limit => return Err(too_large(bytes.len() as u64)),
            Some(bytes) => bytes.to_vec(),
            None => {
                let Some(index) = self.get_value(&index_key(digest)).await? else { return Err(FleetError::BlobMissing(*digest)) };
                let malformed = |reason: String| FleetError::malformed(format!("index of blob {digest}"), reason);
                if index.len() < 8 || (index.len() - 8) % 32 != 0 {
                    return Err(malformed(format!("{} bytes is not a size and whole chunk hashes", index.len())));
                }
                let mut size_bytes = [0u8; 8];
                size_bytes.copy_from_slice(&index[..8]);
                let size = u64::from_le_bytes(size_bytes);
                if size > limit {
                    return Err(too_large(size));
                }
                let chunks = (index.len() - 8) / 32;
                if chunks > MAX_CHUNKS || chunks as u64 != size.div_ceil(SMALL_BLOB_BYTES as u64) {
                    return Err(malformed(format!("{chunks} chunks cannot hold {size} bytes")));
                }
                let capacity = usize::try_from(size).map_err(|_| malformed(format!("{size} bytes do not fit this machine's memory")))?;
                let mut bytes = Vec::new();
                bytes.try_reserve_exact(capacity).map_err(|_| malformed(format!("cannot reserve {size} bytes to read it")))?;
                for (number, name) in (0u64..).zip(index[8..].chunks_exact(32)) {
                    let mut chunk_name = Digest([0u8; 32]);
                    chunk_name.0.copy_from_slice(name);
                    let Some(chunk) = self.get_value(&chunk_name.to_hex()).await? else { return Err(FleetError::BlobMissing(chunk_name)) };
                    let expected = size.saturating_sub(number * SMALL_BLOB_BYTES as u64).min(SMALL_BLOB_BYTES as u64);
                    if chunk.len() as u64 != expected {
                        return Err(malformed(format!("chunk {number} is {} bytes, not {expected}", chunk.len())));
                    }
                    let got = Digest::of(&chunk);
                    if got != chunk_name {
                        return Err(FleetError::BlobMismatch { name: chunk_name, got });
                    }
                    bytes.extend_from_slice(&chunk);
                }
                bytes
            }
        };
        let got = Digest::of(&bytes);
        if got != *digest {
            return Err(FleetError::BlobMismatch { name: *digest, got });
        }
        Ok(bytes)
    }
}
