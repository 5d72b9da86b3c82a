//! The store side of the key lifecycle: state changes, rotations (a new
//! version made current), deletion of a key and everything that names it,
//! the due work the scheduler asks for, and the pending records of
//! HSM-only key versions being made or destroyed.
//!
//! Every write is one IMMEDIATE transaction that reads the key's record
//! first and decides on what it read, so that two changes of one key (an
//! operator's and the scheduler's) never both act on a state that one of
//! them has already changed: e.g. a deletion that comes due while a
//! CancelKeyDeletion commits either deletes the key or finds it Disabled,
//! never both.

use super::{may_block, read_key, state_name, KeyRecord, Keystore, StoreError, WrappedVersion};
use kms_proto::{KeyState, Origin, RotationType};
use rusqlite::{params, OptionalExtension, Transaction, TransactionBehavior};

/// A key's record before and after a change ([`Keystore::update_key`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Updated {
    /// As it was read.
    pub before: KeyRecord,
    /// As it was written.
    pub after: KeyRecord,
}

impl Updated {
    /// Whether the change changed anything (an EnableKey of an Enabled key
    /// does not).
    pub fn changed(&self) -> bool {
        self.before != self.after
    }
}

/// One rotation of a key: a version made after the first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rotation {
    /// The version it made.
    pub version: u32,
    /// When (seconds since the epoch).
    pub date: i64,
    /// Automatic or on demand.
    pub rotation_type: RotationType,
}

/// What a deletion removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deleted {
    /// The key's record as it was.
    pub record: KeyRecord,
    /// Its versions whose token objects are to be destroyed (an HSM-only
    /// key's; empty for others), each recorded pending ('delete') in the
    /// deletion's transaction.
    pub hsm_versions: Vec<u32>,
}

/// Why an HSM-only key version is pending in the store (`hsm_pending`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PendingReason {
    /// CreateKey recorded it before generating it: the token object is kept
    /// only if the key was stored.
    Create,
    /// A rotation recorded it before generating it: kept only if the
    /// version was stored.
    Rotate,
    /// A deletion recorded it with the key's deletion: its token object is
    /// destroyed, whatever else is found.
    Delete,
}

impl PendingReason {
    fn name(self) -> &'static str {
        match self {
            PendingReason::Create => "create",
            PendingReason::Rotate => "rotate",
            PendingReason::Delete => "delete",
        }
    }

    fn from_name(s: &str) -> Result<PendingReason, StoreError> {
        Ok(match s {
            "create" => PendingReason::Create,
            "rotate" => PendingReason::Rotate,
            "delete" => PendingReason::Delete,
            other => {
                return Err(StoreError::Corrupt(format!(
                    "unknown pending HSM reason {other:?}"
                )))
            }
        })
    }
}

/// A pending HSM-only key version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingHsm {
    /// The key.
    pub key_id: [u8; 16],
    /// The version.
    pub version: u32,
    /// Why it is pending.
    pub reason: PendingReason,
}

/// Whether key `id` was deleted (it left its id behind).
pub(super) fn was_deleted(conn: &rusqlite::Connection, id: &[u8; 16]) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT count(*) > 0 FROM deleted_keys WHERE key_id = ?1")?
        .query_row(params![&id[..]], |r| r.get(0))?)
}

/// Writes every column of `rec` that can change after creation.
fn write_record(tx: &Transaction<'_>, rec: &KeyRecord) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE keys SET description = ?2, state = ?3, current_version = ?4,
             deletion_date = ?5, pending_window_days = ?6, rotation_period_days = ?7,
             next_rotation_at = ?8, on_demand_rotations = ?9, valid_to = ?10
         WHERE key_id = ?1",
        params![
            &rec.key_id[..],
            rec.description,
            state_name(rec.state),
            rec.current_version,
            rec.deletion_date,
            rec.pending_window_days,
            rec.rotation_period_days,
            rec.next_rotation_at,
            rec.on_demand_rotations,
            rec.valid_to,
        ],
    )?;
    Ok(())
}

fn ids(rows: Vec<Vec<u8>>) -> Result<Vec<[u8; 16]>, StoreError> {
    rows.into_iter().map(super::key_id_from).collect()
}

impl Keystore {
    /// Reads a key's record, lets `change` decide and edit it, and writes
    /// it back, in one IMMEDIATE transaction. `Ok(None)`: no such key.
    /// An error from `change` writes nothing. A change that changes nothing
    /// writes nothing either.
    pub fn update_key<E: From<StoreError>>(
        &mut self,
        key_id: &[u8; 16],
        change: impl FnOnce(&mut KeyRecord) -> Result<(), E>,
    ) -> Result<Option<Updated>, E> {
        may_block();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::from)?;
        let Some(before) = read_key(&tx, key_id)? else {
            return Ok(None);
        };
        let mut after = before.clone();
        change(&mut after)?;
        debug_assert_eq!(after.key_id, before.key_id, "a change keeps the key id");
        if after != before {
            write_record(&tx, &after)?;
            tx.commit().map_err(StoreError::from)?;
        }
        Ok(Some(Updated { before, after }))
    }

    /// Adds the next version of a key and makes it current, in one
    /// IMMEDIATE transaction: reads the record, lets `change` decide (and
    /// edit the record: e.g. count an on-demand rotation, move the
    /// automatic schedule), stores the version with its rotation type and
    /// `now`, and ends the version's pending record if it had one (an
    /// HSM-only key's). `version.version` 0 takes the next number; another
    /// must be the next number (an HSM-only key's, reserved by
    /// [`Keystore::begin_hsm_rotation`]). `Ok(None)`: no such key.
    pub fn commit_rotation<E: From<StoreError>>(
        &mut self,
        key_id: &[u8; 16],
        version: &WrappedVersion,
        rotation_type: RotationType,
        now: i64,
        change: impl FnOnce(&mut KeyRecord) -> Result<(), E>,
    ) -> Result<Option<KeyRecord>, E> {
        may_block();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::from)?;
        let Some(mut rec) = read_key(&tx, key_id)? else {
            return Ok(None);
        };
        change(&mut rec)?;
        let last: u32 = tx
            .query_row(
                "SELECT coalesce(max(version), 0) FROM key_versions WHERE key_id = ?1",
                params![&key_id[..]],
                |r| r.get(0),
            )
            .map_err(StoreError::from)?;
        let next = last + 1;
        if version.version != 0 && version.version != next {
            return Err(StoreError::Corrupt(format!(
                "version {} of a key whose last version is {last}",
                version.version
            ))
            .into());
        }
        tx.execute(
            "INSERT INTO key_versions (key_id, version, wrapped_key, created_at, rotation_type)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                &key_id[..],
                next,
                version.wrapped,
                now,
                rotation_type.name()
            ],
        )
        .map_err(StoreError::from)?;
        rec.current_version = next;
        write_record(&tx, &rec)?;
        tx.execute(
            "DELETE FROM hsm_pending WHERE key_id = ?1 AND version = ?2",
            params![&key_id[..], next],
        )
        .map_err(StoreError::from)?;
        tx.commit().map_err(StoreError::from)?;
        Ok(Some(rec))
    }

    /// Reserves the next version of an HSM-only key before its token
    /// object is generated: records it pending ('rotate'), so that a crash
    /// before [`Keystore::commit_rotation`] leaves a record start-up
    /// reconciliation finds (and destroys the token object it names).
    /// Returns the version, or `None` when a rotation of the key is already
    /// in progress (one at a time: the version number is the token
    /// object's name).
    pub fn begin_hsm_rotation(
        &mut self,
        key_id: &[u8; 16],
        now: i64,
    ) -> Result<Option<u32>, StoreError> {
        may_block();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let busy: bool = tx.query_row(
            "SELECT count(*) > 0 FROM hsm_pending WHERE key_id = ?1 AND reason = ?2",
            params![&key_id[..], PendingReason::Rotate.name()],
            |r| r.get(0),
        )?;
        if busy {
            return Ok(None);
        }
        let last: u32 = tx.query_row(
            "SELECT coalesce(max(version), 0) FROM key_versions WHERE key_id = ?1",
            params![&key_id[..]],
            |r| r.get(0),
        )?;
        tx.execute(
            "INSERT INTO hsm_pending (key_id, version, created_at, reason) VALUES (?1, ?2, ?3, ?4)",
            params![&key_id[..], last + 1, now, PendingReason::Rotate.name()],
        )?;
        tx.commit()?;
        Ok(Some(last + 1))
    }

    /// When the rotation of an HSM-only key now in progress started (its
    /// pending record), if one is.
    pub fn rotation_in_progress(&self, key_id: &[u8; 16]) -> Result<Option<i64>, StoreError> {
        may_block();
        Ok(self
            .conn
            .query_row(
                "SELECT min(created_at) FROM hsm_pending WHERE key_id = ?1 AND reason = ?2",
                params![&key_id[..], PendingReason::Rotate.name()],
                |r| r.get(0),
            )
            .optional()?
            .flatten())
    }

    /// Up to `limit` rotations of a key that made versions after `after`,
    /// oldest first (the key's first version is not a rotation).
    pub fn list_rotations(
        &self,
        key_id: &[u8; 16],
        after: u32,
        limit: u32,
    ) -> Result<Vec<Rotation>, StoreError> {
        may_block();
        let mut stmt = self.conn.prepare_cached(
            "SELECT version, created_at, rotation_type FROM key_versions
             WHERE key_id = ?1 AND version > ?2 AND rotation_type IS NOT NULL
             ORDER BY version LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![&key_id[..], after, limit], |r| {
            Ok((
                r.get::<_, u32>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        rows.map(|r| {
            let (version, date, t) = r?;
            let rotation_type = RotationType::from_name(&t)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown rotation type {t:?}")))?;
            Ok(Rotation {
                version,
                date,
                rotation_type,
            })
        })
        .collect()
    }

    /// Keys pending deletion whose deletion date is `now` or earlier.
    pub fn due_deletions(&self, now: i64) -> Result<Vec<[u8; 16]>, StoreError> {
        may_block();
        let mut stmt = self.conn.prepare_cached(
            "SELECT key_id FROM keys WHERE deletion_date <= ?1 AND state = ?2 ORDER BY deletion_date",
        )?;
        let rows = stmt.query_map(
            params![now, state_name(KeyState::PendingDeletion)],
            |r| r.get(0),
        )?;
        ids(rows.collect::<Result<_, _>>()?)
    }

    /// Enabled keys whose automatic rotation is due at `now` or earlier (a
    /// key that is not Enabled does not rotate, as in AWS; it rotates at
    /// the first pass after it is enabled again).
    pub fn due_rotations(&self, now: i64) -> Result<Vec<[u8; 16]>, StoreError> {
        may_block();
        let mut stmt = self.conn.prepare_cached(
            "SELECT key_id FROM keys WHERE next_rotation_at <= ?1 AND state = ?2 ORDER BY next_rotation_at",
        )?;
        let rows = stmt.query_map(params![now, state_name(KeyState::Enabled)], |r| r.get(0))?;
        ids(rows.collect::<Result<_, _>>()?)
    }

    /// Deletes a key whose deletion is due at `now`, and everything that
    /// names it (versions, tags, aliases, policy, grants, import parameters,
    /// usage reservations), in one IMMEDIATE transaction, leaving its id in
    /// `deleted_keys`; an HSM-only key's
    /// versions are recorded pending ('delete') in the same transaction,
    /// so that their token objects are destroyed even if kmsd stops before
    /// it destroys them. `Ok(None)`: the key is gone, or no longer due
    /// (its deletion was cancelled meanwhile): nothing was changed.
    pub fn delete_key(&mut self, key_id: &[u8; 16], now: i64) -> Result<Option<Deleted>, StoreError> {
        may_block();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let Some(record) = read_key(&tx, key_id)? else {
            return Ok(None);
        };
        if record.state != KeyState::PendingDeletion || record.deletion_date.is_none_or(|d| d > now)
        {
            return Ok(None);
        }
        let id = &key_id[..];
        let mut hsm_versions = Vec::new();
        if record.origin == Origin::Hsm {
            let mut stmt =
                tx.prepare("SELECT version FROM key_versions WHERE key_id = ?1 ORDER BY version")?;
            hsm_versions = stmt
                .query_map(params![id], |r| r.get::<_, u32>(0))?
                .collect::<Result<_, _>>()?;
            drop(stmt);
            for v in &hsm_versions {
                tx.execute(
                    "INSERT OR REPLACE INTO hsm_pending (key_id, version, created_at, reason)
                     VALUES (?1, ?2, ?3, ?4)",
                    params![id, v, now, PendingReason::Delete.name()],
                )?;
            }
        }
        super::aliases::delete_for_key(&tx, key_id)?;
        super::annotations::delete_tags_of(&tx, key_id)?;
        super::access::delete_access_of(&tx, key_id)?;
        tx.execute("DELETE FROM import_params WHERE key_id = ?1", params![id])?;
        tx.execute("DELETE FROM hsm_usage WHERE key_id = ?1", params![id])?;
        tx.execute("DELETE FROM key_versions WHERE key_id = ?1", params![id])?;
        tx.execute("DELETE FROM keys WHERE key_id = ?1", params![id])?;
        tx.execute(
            "INSERT OR REPLACE INTO deleted_keys (key_id, deleted_at) VALUES (?1, ?2)",
            params![id, now],
        )?;
        tx.commit()?;
        Ok(Some(Deleted {
            record,
            hsm_versions,
        }))
    }

    /// Every pending HSM-only key version, with why it is pending.
    pub fn pending_hsm_versions(&self) -> Result<Vec<PendingHsm>, StoreError> {
        may_block();
        let mut stmt = self.conn.prepare_cached(
            "SELECT key_id, version, reason FROM hsm_pending ORDER BY key_id, version",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, u32>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        rows.map(|r| {
            let (id, version, reason) = r?;
            Ok(PendingHsm {
                key_id: super::key_id_from(id)?,
                version,
                reason: PendingReason::from_name(&reason)?,
            })
        })
        .collect()
    }

    /// Whether a stored key has `version`.
    pub fn has_version(&self, key_id: &[u8; 16], version: u32) -> Result<bool, StoreError> {
        may_block();
        Ok(self.conn.query_row(
            "SELECT count(*) > 0 FROM key_versions WHERE key_id = ?1 AND version = ?2",
            params![&key_id[..], version],
            |r| r.get(0),
        )?)
    }

    #[cfg(any(test, feature = "internals"))]
    /// Rows that name a key in any table (tests: a deleted key leaves none).
    pub fn rows_naming(&self, key_id: &[u8; 16]) -> Result<usize, StoreError> {
        may_block();
        let mut n = 0usize;
        for table in [
            "keys",
            "key_versions",
            "aliases",
            "tags",
            "import_params",
            "hsm_usage",
        ] {
            let c: i64 = self.conn.query_row(
                &format!("SELECT count(*) FROM {table} WHERE key_id = ?1"),
                params![&key_id[..]],
                |r| r.get(0),
            )?;
            n += c as usize;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: u8, state: KeyState, origin: Origin) -> KeyRecord {
        KeyRecord {
            key_id: [id; 16],
            created_at: 1_000,
            description: String::new(),
            state,
            origin,
            current_version: 1,
            ..Default::default()
        }
    }

    fn store_with(records: &[KeyRecord]) -> Keystore {
        let mut s = Keystore::open_in_memory().unwrap();
        for r in records {
            s.insert_key(
                r,
                &WrappedVersion {
                    version: 1,
                    wrapped: vec![r.key_id[0]; 40],
                },
            )
            .unwrap();
        }
        s
    }

    #[test]
    fn an_update_that_fails_or_changes_nothing_writes_nothing() {
        let mut s = store_with(&[rec(1, KeyState::Enabled, Origin::Kmsd)]);
        let r: Result<_, StoreError> = s.update_key(&[1; 16], |r| {
            r.state = KeyState::Disabled;
            Err(StoreError::Corrupt("refused".into()))
        });
        assert!(r.is_err());
        assert_eq!(s.get_key(&[1; 16]).unwrap().unwrap().state, KeyState::Enabled);
        let u = s
            .update_key::<StoreError>(&[1; 16], |_| Ok(()))
            .unwrap()
            .unwrap();
        assert!(!u.changed());
        let u = s
            .update_key::<StoreError>(&[1; 16], |r| {
                r.state = KeyState::PendingDeletion;
                r.deletion_date = Some(5_000);
                Ok(())
            })
            .unwrap()
            .unwrap();
        assert!(u.changed());
        assert_eq!(s.get_key(&[1; 16]).unwrap().unwrap(), u.after);
        assert_eq!(
            s.update_key::<StoreError>(&[9; 16], |_| Ok(())).unwrap(),
            None
        );
    }

    #[test]
    fn versions_are_added_in_order_and_listed_as_rotations() {
        let mut s = store_with(&[rec(1, KeyState::Enabled, Origin::Kmsd)]);
        for (t, now) in [(RotationType::OnDemand, 10), (RotationType::Automatic, 20)] {
            s.commit_rotation::<StoreError>(
                &[1; 16],
                &WrappedVersion {
                    version: 0,
                    wrapped: vec![now as u8; 40],
                },
                t,
                now,
                |r| {
                    r.on_demand_rotations += u32::from(t == RotationType::OnDemand);
                    Ok(())
                },
            )
            .unwrap()
            .unwrap();
        }
        let k = s.get_key(&[1; 16]).unwrap().unwrap();
        assert_eq!((k.current_version, k.on_demand_rotations), (3, 1));
        let all = s.list_rotations(&[1; 16], 0, 10).unwrap();
        assert_eq!(
            all,
            [
                Rotation {
                    version: 2,
                    date: 10,
                    rotation_type: RotationType::OnDemand
                },
                Rotation {
                    version: 3,
                    date: 20,
                    rotation_type: RotationType::Automatic
                }
            ]
        );
        assert_eq!(s.list_rotations(&[1; 16], 2, 10).unwrap(), all[1..]);
        assert_eq!(s.list_rotations(&[1; 16], 0, 1).unwrap(), all[..1]);
        // A wrong explicit version number is refused, nothing written.
        let bad = s.commit_rotation::<StoreError>(
            &[1; 16],
            &WrappedVersion {
                version: 7,
                wrapped: vec![],
            },
            RotationType::OnDemand,
            30,
            |_| Ok(()),
        );
        assert!(bad.is_err());
        assert_eq!(s.get_versions(&[1; 16]).unwrap().len(), 3);
    }

    #[test]
    fn one_hsm_rotation_at_a_time_and_its_record_ends_with_the_version() {
        let mut s = store_with(&[rec(1, KeyState::Enabled, Origin::Hsm)]);
        assert_eq!(s.begin_hsm_rotation(&[1; 16], 50).unwrap(), Some(2));
        assert_eq!(s.begin_hsm_rotation(&[1; 16], 51).unwrap(), None, "busy");
        assert_eq!(s.rotation_in_progress(&[1; 16]).unwrap(), Some(50));
        // Not a CreateKey: does not count against the key limit.
        assert_eq!(s.count_keys_and_pending().unwrap(), 1);
        s.commit_rotation::<StoreError>(
            &[1; 16],
            &WrappedVersion {
                version: 2,
                wrapped: vec![],
            },
            RotationType::OnDemand,
            52,
            |_| Ok(()),
        )
        .unwrap();
        assert_eq!(s.rotation_in_progress(&[1; 16]).unwrap(), None);
        assert!(s.pending_hsm_versions().unwrap().is_empty());
        assert!(s.has_version(&[1; 16], 2).unwrap());
        assert!(!s.has_version(&[1; 16], 3).unwrap());
    }

    #[test]
    fn due_work_is_found_by_date_and_state() {
        let mut s = store_with(&[
            rec(1, KeyState::Enabled, Origin::Kmsd),
            rec(2, KeyState::Disabled, Origin::Kmsd),
            rec(3, KeyState::Enabled, Origin::Kmsd),
        ]);
        for (id, at) in [(1u8, 100), (2, 100), (3, 200)] {
            s.update_key::<StoreError>(&[id; 16], |r| {
                r.next_rotation_at = Some(at);
                Ok(())
            })
            .unwrap();
        }
        assert!(s.due_rotations(99).unwrap().is_empty());
        // The disabled key does not rotate.
        assert_eq!(s.due_rotations(100).unwrap(), [[1; 16]]);
        assert_eq!(s.due_rotations(200).unwrap(), [[1; 16], [3; 16]]);
        s.update_key::<StoreError>(&[2; 16], |r| {
            r.state = KeyState::PendingDeletion;
            r.deletion_date = Some(300);
            Ok(())
        })
        .unwrap();
        assert!(s.due_deletions(299).unwrap().is_empty());
        assert_eq!(s.due_deletions(300).unwrap(), [[2; 16]]);
    }

    #[test]
    fn a_deletion_removes_every_row_naming_the_key_and_records_hsm_versions() {
        let mut s = store_with(&[
            rec(1, KeyState::PendingDeletion, Origin::Hsm),
            rec(2, KeyState::Enabled, Origin::Kmsd),
        ]);
        s.update_key::<StoreError>(&[1; 16], |r| {
            r.deletion_date = Some(100);
            Ok(())
        })
        .unwrap();
        s.commit_rotation::<StoreError>(
            &[1; 16],
            &WrappedVersion {
                version: 0,
                wrapped: vec![],
            },
            RotationType::OnDemand,
            5,
            |_| Ok(()),
        )
        .unwrap();
        s.reserve_usage(&[1; 16], 1, 65_536).unwrap();
        for sql in [
            "INSERT INTO aliases VALUES ('alias/a', ?1, 0, 0)",
            "INSERT INTO tags VALUES (?1, 'k', 'v')",
            "INSERT INTO import_params VALUES (?1, x'00', 'A', 'B', x'00', 0)",
        ] {
            s.conn.execute(sql, params![&[1u8; 16][..]]).unwrap();
        }
        assert!(s.rows_naming(&[1; 16]).unwrap() >= 6);
        // Not due yet: nothing happens.
        assert_eq!(s.delete_key(&[1; 16], 99).unwrap(), None);
        // A key not pending deletion is never deleted.
        assert_eq!(s.delete_key(&[2; 16], 1_000).unwrap(), None);
        let d = s.delete_key(&[1; 16], 100).unwrap().unwrap();
        assert_eq!(d.hsm_versions, [1, 2]);
        assert_eq!(s.rows_naming(&[1; 16]).unwrap(), 0);
        assert_eq!(
            s.pending_hsm_versions().unwrap(),
            [1, 2].map(|version| PendingHsm {
                key_id: [1; 16],
                version,
                reason: PendingReason::Delete
            })
        );
        // Deleted keys' records do not count against the key limit.
        assert_eq!(s.count_keys_and_pending().unwrap(), 1);
        assert_eq!(s.delete_key(&[1; 16], 100).unwrap(), None);
        assert!(s.get_key(&[2; 16]).unwrap().is_some());
    }
}
