//! What seeding (`crate::seed`) records in the store: which seeded keys are
//! still being made. A seeded key takes several steps (the key, its
//! material, tags, aliases, rotation, state), each its own transaction
//! like the API's; the mark, set before the first and cleared after the
//! last, tells a start after a crash to finish the key instead of
//! checking it as a finished one. Marks are rows of `meta` named
//! `seeding:<key id>`: no schema change.

use super::{Keystore, StoreError};
use rusqlite::params;

fn mark(key_id: &[u8; 16]) -> String {
    format!("seeding:{}", crate::service::format_key_id(key_id))
}

impl Keystore {
    /// Marks `key_id` as being seeded (durably, before its first step).
    pub fn begin_seeding(&self, key_id: &[u8; 16]) -> Result<(), StoreError> {
        super::may_block();
        self.conn.execute(
            "INSERT OR REPLACE INTO meta (name, value) VALUES (?1, X'01')",
            params![mark(key_id)],
        )?;
        Ok(())
    }

    /// Clears the mark of a seeded key whose every step is done.
    pub fn end_seeding(&self, key_id: &[u8; 16]) -> Result<(), StoreError> {
        super::may_block();
        self.conn
            .execute("DELETE FROM meta WHERE name = ?1", params![mark(key_id)])?;
        Ok(())
    }

    /// Whether `key_id` was being seeded when kmsd stopped.
    pub fn is_seeding(&self, key_id: &[u8; 16]) -> Result<bool, StoreError> {
        super::may_block();
        let n: i64 = self.conn.query_row(
            "SELECT count(*) FROM meta WHERE name = ?1",
            params![mark(key_id)],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_are_per_key_and_cleared() {
        let s = Keystore::open_in_memory().unwrap();
        assert!(!s.is_seeding(&[1; 16]).unwrap());
        s.begin_seeding(&[1; 16]).unwrap();
        s.begin_seeding(&[1; 16]).unwrap();
        assert!(s.is_seeding(&[1; 16]).unwrap());
        assert!(!s.is_seeding(&[2; 16]).unwrap());
        s.end_seeding(&[1; 16]).unwrap();
        assert!(!s.is_seeding(&[1; 16]).unwrap());
    }
}
