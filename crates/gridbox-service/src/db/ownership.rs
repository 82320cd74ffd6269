//! Who may read which blob, how much storage each tenant holds, and what expires when.
//!
//! A tenant *owns* a blob while it has a row in `owners`: `(tenant, hash) -> (refs, used_ms,
//! size)`. `refs` counts the tenant's kept-or-unexpired jobs whose results name the blob (each
//! job once per blob); `used_ms` is when the tenant last uploaded the blob or submitted a job
//! that reads it (0: never, or disowned). A row lives while `refs > 0` or its use is within the
//! retention time; when it goes, its size leaves the tenant's `usage`, and when a blob has no row
//! left (`rows` counts them) nothing may read it and the blob store may delete its file.
//!
//! A job's record and its result rows expire `retention` after it ended unless the tenant keeps
//! it; `ended` indexes finished, unkept jobs by their end time so that expiry reads only what
//! expires.

use std::collections::BTreeSet;

use redb::{ReadableTable, Table, TableDefinition};

use gridbox_core::digest::Digest;

use super::{DbError, JobRecord, storage};

/// `(tenant, hash hex) -> (refs, used_ms, size)`.
pub(super) const OWNERS: TableDefinition<(&str, &str), (u32, u64, u64)> = TableDefinition::new("owners");
/// `hash hex -> how many tenants own it`.
pub(super) const ROWS: TableDefinition<&str, u32> = TableDefinition::new("blob_rows");
/// `tenant -> bytes of the blobs it owns` (each blob once per tenant).
pub(super) const USAGE: TableDefinition<&str, u64> = TableDefinition::new("usage");
/// `(finished_ms, id) -> ()`: finished jobs that are not kept, by end time.
pub(super) const ENDED: TableDefinition<(u64, &str), ()> = TableDefinition::new("ended");

/// The tables a transaction changes ownership through.
pub(super) struct Owners<'t> {
    pub(super) owners: Table<'t, (&'static str, &'static str), (u32, u64, u64)>,
    pub(super) rows: Table<'t, &'static str, u32>,
    pub(super) usage: Table<'t, &'static str, u64>,
}

/// What happens to a row.
#[derive(Debug, Clone, Copy)]
pub(super) enum Change {
    /// An upload or a job reading the blob: the row lives at least `retention` from `now`.
    Use { now: u64 },
    /// A job's result names the blob.
    AddRef,
    /// A job whose result named the blob expired or was deleted.
    DropRef,
    /// The tenant gave the upload up (`DELETE /v1/blobs/{hash}`).
    Disown,
}

impl Owners<'_> {
    /// Bytes `tenant` holds.
    pub(super) fn usage_of(&self, tenant: &str) -> Result<u64, DbError> {
        Ok(self.usage.get(tenant).map_err(storage)?.map_or(0, |v| v.value()))
    }

    /// Whether `tenant` owns `blob`.
    pub(super) fn owns(&self, tenant: &str, blob: &str) -> Result<bool, DbError> {
        Ok(self.owners.get((tenant, blob)).map_err(storage)?.is_some())
    }

    /// Applies `change` to `tenant`'s row for `blob` (of `size` bytes), making or dropping the
    /// row and keeping `rows` and `usage` in step. Returns whether a blob lost its last row.
    pub(super) fn change(&mut self, tenant: &str, blob: &str, size: u64, change: Change, expire_before: u64) -> Result<bool, DbError> {
        let current = self.owners.get((tenant, blob)).map_err(storage)?.map(|v| v.value());
        let (refs, used, size) = match current {
            Some(row) => row,
            None => match change {
                Change::Use { .. } | Change::AddRef => (0, 0, size),
                // Nothing to drop.
                Change::DropRef | Change::Disown => return Ok(false),
            },
        };
        let (refs, used) = match change {
            Change::Use { now } => (refs, used.max(now)),
            Change::AddRef => (refs.saturating_add(1), used),
            Change::DropRef => (refs.saturating_sub(1), used),
            Change::Disown => (refs, 0),
        };
        let live = refs > 0 || (used != 0 && used >= expire_before);
        match (current.is_some(), live) {
            (_, true) => {
                self.owners.insert((tenant, blob), (refs, used, size)).map_err(storage)?;
                if current.is_none() {
                    self.add_row(tenant, blob, size)?;
                }
                Ok(false)
            }
            (true, false) => {
                self.owners.remove((tenant, blob)).map_err(storage)?;
                self.remove_row(tenant, blob, size)
            }
            (false, false) => Ok(false),
        }
    }

    fn add_row(&mut self, tenant: &str, blob: &str, size: u64) -> Result<(), DbError> {
        let rows = self.rows.get(blob).map_err(storage)?.map_or(0, |v| v.value());
        self.rows.insert(blob, rows.saturating_add(1)).map_err(storage)?;
        let usage = self.usage_of(tenant)?;
        self.usage.insert(tenant, usage.saturating_add(size)).map_err(storage)?;
        Ok(())
    }

    /// Returns whether `blob` has no row left.
    fn remove_row(&mut self, tenant: &str, blob: &str, size: u64) -> Result<bool, DbError> {
        let rows = self.rows.get(blob).map_err(storage)?.map_or(0, |v| v.value());
        let orphan = rows <= 1;
        if orphan {
            self.rows.remove(blob).map_err(storage)?;
        } else {
            self.rows.insert(blob, rows - 1).map_err(storage)?;
        }
        let usage = self.usage_of(tenant)?;
        if usage <= size {
            self.usage.remove(tenant).map_err(storage)?;
        } else {
            self.usage.insert(tenant, usage - size).map_err(storage)?;
        }
        Ok(orphan)
    }

    /// Adds or drops one reference for each distinct blob a job's result names. Returns the
    /// blobs left with no row.
    pub(super) fn job_refs(&mut self, record: &JobRecord, change: Change, expire_before: u64) -> Result<Vec<Digest>, DbError> {
        let mut orphans = Vec::new();
        let mut seen = BTreeSet::new();
        for blob in record.result.iter().flat_map(|result| result.blobs()) {
            if seen.insert(blob.blake3) && self.change(&record.tenant, &blob.blake3.to_hex(), blob.size, change, expire_before)? {
                orphans.push(blob.blake3);
            }
        }
        Ok(orphans)
    }
}

/// Whether any row names `blob`.
pub(super) fn has_rows(rows: &impl ReadableTable<&'static str, u32>, blob: &Digest) -> Result<bool, DbError> {
    Ok(rows.get(blob.to_hex().as_str()).map_err(storage)?.is_some())
}
