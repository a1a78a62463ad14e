//! Keeps the stream's partition routes current: each definition (RELATION) the stream brings is
//! looked up in the catalog, so a leaf partition's changes go to its root's mirror
//! (`replication.partition_mirrors = "root"`), and a table attached or detached since is routed as
//! it is now. Definitions come at the start of every session and again after any change to the
//! table, so a few lookups per session.

use std::sync::Arc;

use tokio_postgres::Client;

use super::source::SourceError;
use super::RunError;
use crate::config::PartitionMirrors;
use crate::model::Event;
use crate::pipeline::partitions::Routes;

pub struct Router {
    on: bool,
    client: Option<Client>,
    routes: Arc<Routes>,
}

impl Router {
    pub fn new(mirrors: PartitionMirrors) -> Router {
        Router {
            on: mirrors == PartitionMirrors::Root,
            client: None,
            routes: Arc::default(),
        }
    }

    /// Looks up the tables `events` define. The routes, when they changed.
    pub async fn observe(
        &mut self,
        events: &[Event],
        conn: &crate::conn::ConnConfig,
    ) -> Result<Option<Arc<Routes>>, RunError> {
        if !self.on {
            return Ok(None);
        }
        let relids: Vec<u32> = events
            .iter()
            .filter_map(|e| match e {
                Event::Relation(r) => Some(r.relid),
                _ => None,
            })
            .collect();
        if relids.is_empty() {
            return Ok(None);
        }
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            self.client = Some(conn.connect_sql().await.map_err(SourceError::from)?);
        }
        let client = self.client.as_ref().expect("connected above");
        let found = crate::sync::catalog::partition_routes(client, &relids)
            .await
            .map_err(|e| {
                RunError::from(SourceError::Query {
                    transient: e.is_transient(),
                    message: e.to_string(),
                })
            })?;
        let changed = relids.iter().any(|r| found.get(r) != self.routes.get(r));
        if !changed {
            return Ok(None);
        }
        let routes = Arc::make_mut(&mut self.routes);
        for relid in relids {
            match found.get(&relid) {
                Some(route) => routes.insert(relid, Arc::clone(route)),
                None => routes.remove(&relid),
            };
        }
        Ok(Some(Arc::clone(&self.routes)))
    }
}
