//! The relation cache: the latest description of every table, by OID, with its column
//! types resolved.
//!
//! Row messages name their table only by OID, and the server sends a table's Relation
//! message once before its first change on a connection and again whenever the schema or
//! the replica identity changes (CASE-16) or the table was truncated (CASE-18). So the
//! cache always replaces, and it is cleared after a reconnect because the server then
//! resends every Relation before use.

use std::collections::HashMap;
use std::sync::Arc;

use crate::source::change::Relation;

/// The schemas of the relations seen on the current replication connection.
#[derive(Debug, Default)]
pub struct RelationCache {
    /// Shared so that changes decoded under one schema keep it after a replacement.
    relations: HashMap<u32, Arc<Relation>>,
}

impl RelationCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores a relation, replacing the previous schema of the same OID, and returns the
    /// shared handle; the replaced one stays valid for whoever still holds it.
    pub fn insert(&mut self, relation: Relation) -> Arc<Relation> {
        let relation = Arc::new(relation);
        self.relations.insert(relation.oid, Arc::clone(&relation));
        relation
    }

    /// The current schema of a relation, `None` if no Relation message announced it.
    pub fn get(&self, oid: u32) -> Option<Arc<Relation>> {
        self.relations.get(&oid).cloned()
    }

    /// Forgets every relation, after a reconnect.
    pub fn clear(&mut self) {
        self.relations.clear();
    }

    /// The number of relations known.
    pub fn len(&self) -> usize {
        self.relations.len()
    }

    /// Whether no relation is known.
    pub fn is_empty(&self) -> bool {
        self.relations.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::change::Column;
    use crate::source::pgoutput::ReplicaIdentity;
    use crate::source::value::PgType;

    fn relation(oid: u32, identity: ReplicaIdentity, column_count: usize) -> Relation {
        Relation {
            oid,
            schema: "public".to_owned(),
            name: format!("t{oid}"),
            replica_identity: identity,
            columns: (0..column_count)
                .map(|i| Column {
                    name: format!("c{i}"),
                    type_oid: 23,
                    type_modifier: -1,
                    pg_type: PgType::Int4,
                    identity: true,
                })
                .collect(),
        }
    }

    #[test]
    fn insert_replaces_and_keeps_old_handles_valid() {
        let mut cache = RelationCache::new();
        let first = cache.insert(relation(16384, ReplicaIdentity::Full, 2));
        let second = cache.insert(relation(16384, ReplicaIdentity::Default, 3));
        assert_eq!(cache.len(), 1);
        let current = cache.get(16384).expect("relation cached");
        assert!(Arc::ptr_eq(&current, &second));
        assert_eq!(current.replica_identity, ReplicaIdentity::Default);
        assert_eq!(first.columns.len(), 2, "a replaced schema stays readable");
    }

    #[test]
    fn get_unknown_and_clear() {
        let mut cache = RelationCache::new();
        assert!(cache.get(1).is_none());
        cache.insert(relation(1, ReplicaIdentity::Full, 1));
        cache.insert(relation(2, ReplicaIdentity::Full, 1));
        assert_eq!(cache.len(), 2);
        cache.clear();
        assert!(cache.is_empty());
        assert!(cache.get(1).is_none());
    }
}
