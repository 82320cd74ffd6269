//! Blobs in the market, content-addressed by BLAKE3: small ones as one KV value, larger ones in
//! the object store, both named by the hash in hex. Every read is hashed and bounded: a blob
//! whose bytes do not match its name is refused, whoever wrote it.

use async_nats::jetstream::object_store::ObjectMetadata;
use gridbox_core::digest::{BlobRef, Digest};
use tokio::io::AsyncReadExt;

use crate::FleetError;
use crate::market::{Market, SMALL_BLOB_BYTES};

impl Market {
    /// Stores `bytes` under their hash (a second store of the same bytes replaces them with
    /// themselves, which also renews their age).
    pub async fn put_blob(&self, bytes: &[u8]) -> Result<BlobRef, FleetError> {
        let blob = BlobRef::of(bytes);
        let name = blob.blake3.to_hex();
        if bytes.len() <= SMALL_BLOB_BYTES {
            self.small_blobs.put(&name, bytes::Bytes::copy_from_slice(bytes)).await.map_err(|e| FleetError::nats(format!("store blob {name}"), e))?;
        } else {
            let mut reader = bytes;
            self.large_blobs
                .put(ObjectMetadata { name: name.clone(), ..Default::default() }, &mut reader)
                .await
                .map_err(|e| FleetError::nats(format!("store blob {name}"), e))?;
        }
        Ok(blob)
    }

    /// Stores a file whose hash the caller checked (`digest`, `size`), streaming it.
    pub async fn put_blob_file(&self, digest: Digest, size: u64, file: std::fs::File) -> Result<(), FleetError> {
        let name = digest.to_hex();
        if size <= SMALL_BLOB_BYTES as u64 {
            let mut bytes = Vec::with_capacity(size as usize);
            tokio::fs::File::from_std(file).read_to_end(&mut bytes).await.map_err(|e| FleetError::nats(format!("read blob {name} to store it"), e))?;
            if Digest::of(&bytes) != digest {
                return Err(FleetError::BlobMismatch { name: digest, got: Digest::of(&bytes) });
            }
            self.small_blobs.put(&name, bytes.into()).await.map_err(|e| FleetError::nats(format!("store blob {name}"), e))?;
        } else {
            let mut reader = tokio::fs::File::from_std(file);
            self.large_blobs
                .put(ObjectMetadata { name: name.clone(), ..Default::default() }, &mut reader)
                .await
                .map_err(|e| FleetError::nats(format!("store blob {name}"), e))?;
        }
        Ok(())
    }

    /// Reads blob `digest`, refusing it above `limit` bytes or if its bytes hash to anything
    /// else. `what` names it in errors (`module`, `output "x"`).
    pub async fn get_blob(&self, digest: &Digest, limit: u64, what: &'static str) -> Result<Vec<u8>, FleetError> {
        let name = digest.to_hex();
        let small = self.small_blobs.get(&name).await.map_err(|e| FleetError::nats(format!("read blob {name}"), e))?;
        let bytes = match small {
            Some(bytes) => {
                if bytes.len() as u64 > limit {
                    return Err(FleetError::BlobTooLarge { name: *digest, size: bytes.len() as u64, limit, what });
                }
                bytes.to_vec()
            }
            None => {
                use async_nats::jetstream::object_store::GetErrorKind;
                let object = match self.large_blobs.get(&name).await {
                    Ok(object) => object,
                    Err(e) if e.kind() == GetErrorKind::NotFound => return Err(FleetError::BlobMissing(*digest)),
                    Err(e) => return Err(FleetError::nats(format!("read blob {name}"), e)),
                };
                let size = object.info().size as u64;
                if size > limit {
                    return Err(FleetError::BlobTooLarge { name: *digest, size, limit, what });
                }
                let mut bytes = Vec::with_capacity(size as usize);
                object.take(limit.saturating_add(1)).read_to_end(&mut bytes).await.map_err(|e| FleetError::nats(format!("read blob {name}"), e))?;
                if bytes.len() as u64 > limit {
                    return Err(FleetError::BlobTooLarge { name: *digest, size: bytes.len() as u64, limit, what });
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
