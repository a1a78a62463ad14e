//! What the source server offers and where to resume: the plugin choice and the resume rule.
//!
//! The resume rule (DESIGN.md rule 2), enforced here before a byte is streamed:
//!
//! ```text
//! sink checkpoint C (system id, timeline, slot, plugin, last durable commit end)
//!   none ─┬─ slot missing ─▶ create the slot (exporting its snapshot), copy the tables under that
//!         │                  snapshot, store C = its consistent point, stream from there
//!         ├─ slot exists, the sink holds an initial copy begun at P, slot confirmed ≤ P
//!         │               ─▶ finish the copy (a crash interrupted it), store C = P, stream from P
//!         └─ slot exists  ─▶ STOP: the slot may have confirmed changes this sink never stored
//!   some ─┬─ other system id / slot / plugin ─▶ STOP: this sink holds another source's data
//!         ├─ slot missing ─▶ STOP: a lost slot means a re-snapshot, decided explicitly (rule 4)
//!         ├─ slot's confirmed_flush_lsn > C ─▶ STOP: a gap, changes were confirmed but not stored
//!         └─ otherwise ─▶ stream from C; transactions ending at or before C are dropped
//! ```

use crate::config::PluginChoice;
use crate::conn::ConnConfig;
use crate::model::Lsn;
use crate::sink::Checkpoint;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum SourceError {
    #[error("cannot reach the source: {0}")]
    Connect(#[from] crate::conn::ConnectError),
    #[error("a query on the source failed: {message}")]
    Query { message: String, transient: bool },
    #[error(
        "figoutput was requested but {0}; install it (docs/FIGOUTPUT.md) or use --plugin pgoutput"
    )]
    FigoutputUnavailable(String),
    #[error("slot {slot:?} uses the plugin {actual:?}, but {wanted:?} was requested; use another slot name or --plugin {actual}")]
    SlotPluginMismatch {
        slot: String,
        actual: String,
        wanted: String,
    },
    #[error("the sink holds data of another source ({field}: stored {stored}, this server {offered}); point the receiver at its own sink")]
    OtherSource {
        field: &'static str,
        stored: String,
        offered: String,
    },
    #[error("the source is on timeline {now}, the sink's data up to {checkpoint} came from timeline {stored}: after a failover or a point-in-time restore the history may differ; a re-snapshot is needed (start with a new, empty sink)")]
    TimelineChanged {
        stored: u32,
        now: u32,
        checkpoint: Lsn,
    },
    #[error("slot {slot:?} does not exist, but the sink has data up to {checkpoint}: the slot was dropped or lost, changes since then are gone; a re-snapshot is needed (start with a new, empty sink)")]
    SlotLost { slot: String, checkpoint: Lsn },
    #[error("slot {slot:?} already exists but the sink holds no checkpoint: changes the slot confirmed before are not in this sink; drop the slot (SELECT pg_drop_replication_slot('{slot}')) or use another slot name, then start with a re-snapshot")]
    SlotWithoutCheckpoint { slot: String },
    #[error("gap: slot {slot:?} has confirmed changes up to {confirmed}, but the sink only holds up to {checkpoint}; the changes in between are lost to this sink; a re-snapshot is needed")]
    Gap {
        slot: String,
        confirmed: Lsn,
        checkpoint: Lsn,
    },
    #[error("slot {slot:?} already exists on this server for database {database}, not for this one (slot names are server-wide): use another slot name (--slot / replication.slot), or point --source at that database")]
    SlotElsewhere { slot: String, database: String },
    #[error("slot {slot:?} does not exist and create_slot is off; create it (sql/05_slot.sql) or set replication.create_slot = true")]
    NoSlot { slot: String },
    #[error("publication {0:?} does not exist in this database; create it (sql/04_publication.sql) or fix replication.publication")]
    NoPublication(String),
    #[error("replication.include_generated is on, but pgoutput sends generated columns only from PostgreSQL 18 and only for a publication that publishes them: ALTER PUBLICATION {publication} SET (publish_generated_columns = stored) on PostgreSQL 18+, or use figoutput, or turn include_generated off")]
    GeneratedNotPublished { publication: String },
    #[error("publication {publication:?} publishes generated columns (publish_generated_columns = stored), but replication.include_generated is off, so the copy would leave out columns the stream sends; set include_generated = true, or ALTER PUBLICATION {publication} SET (publish_generated_columns = none)")]
    GeneratedPublished { publication: String },
}

impl SourceError {
    /// A failed query: transient when the connection broke or the server is restarting.
    pub fn query(e: tokio_postgres::Error) -> SourceError {
        let transient = e
            .code()
            .is_none_or(|c| crate::conn::is_transient_sqlstate(c.code()));
        SourceError::Query {
            message: crate::conn::describe_sql_error(&e),
            transient,
        }
    }

    pub fn is_transient(&self) -> bool {
        match self {
            SourceError::Connect(e) => e.is_transient(),
            SourceError::Query { transient, .. } => *transient,
            _ => false,
        }
    }
}

/// The slot as the server reports it.
#[derive(Debug, Clone)]
pub struct SlotState {
    pub plugin: String,
    pub confirmed_flush: Option<Lsn>,
    /// A walsender is streaming it now (a receiver is running on it).
    pub active: bool,
}

/// Facts about the source, read over a regular SQL connection.
#[derive(Debug, Clone)]
pub struct SourceFacts {
    pub server_version_num: u32,
    pub figoutput_installed: bool,
    /// `None` on servers without the setting (before the 2026-08 minor releases).
    pub output_plugin_libraries: Option<Vec<String>>,
    pub slot: Option<SlotState>,
    pub publication_exists: Option<bool>,
    /// Whether the publication sends stored generated columns (PostgreSQL 18's
    /// `publish_generated_columns = stored`); `false` before 18 and without a publication.
    pub publication_generated: bool,
}

impl SourceFacts {
    pub async fn read(
        conn: &ConnConfig,
        slot: &str,
        publication: Option<&str>,
    ) -> Result<SourceFacts, SourceError> {
        let client = conn.connect_sql().await.map_err(SourceError::from)?;
        let sql = SourceError::query;
        let version: i32 = client
            .query_one("SELECT current_setting('server_version_num')::int", &[])
            .await
            .map_err(sql)?
            .get(0);
        let figoutput_installed = client
            .query_opt(
                "SELECT 1 FROM pg_extension WHERE extname = 'figoutput'",
                &[],
            )
            .await
            .map_err(sql)?
            .is_some();
        let libs: Option<String> = client
            .query_opt(
                "SELECT setting FROM pg_settings WHERE name = 'output_plugin_libraries'",
                &[],
            )
            .await
            .map_err(sql)?
            .map(|r| r.get(0));
        let slot_row = client
            .query_opt(
                "SELECT plugin, confirmed_flush_lsn::text, active, database::text, \
                 database IS NOT DISTINCT FROM current_database() FROM pg_replication_slots \
                 WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .map_err(sql)?;
        // Slot names are server-wide: one of another database (or a physical one) cannot be
        // created here nor streamed from here.
        if let Some(r) = slot_row.as_ref().filter(|r| !r.get::<_, bool>(4)) {
            return Err(SourceError::SlotElsewhere {
                slot: slot.to_string(),
                database: r
                    .get::<_, Option<String>>(3)
                    .unwrap_or_else(|| "none (a physical slot)".into()),
            });
        }
        let slot = slot_row.map(|r| SlotState {
            plugin: r.get::<_, Option<String>>(0).unwrap_or_default(),
            confirmed_flush: r.get::<_, Option<String>>(1).and_then(|t| t.parse().ok()),
            active: r.get(2),
        });
        let publication_exists = match publication {
            Some(p) => Some(
                client
                    .query_opt("SELECT 1 FROM pg_publication WHERE pubname = $1", &[&p])
                    .await
                    .map_err(sql)?
                    .is_some(),
            ),
            None => None,
        };
        let publication_generated = match (publication, version >= 180000) {
            (Some(p), true) => client
                .query_opt(
                    "SELECT pubgencols = 's' FROM pg_publication WHERE pubname = $1",
                    &[&p],
                )
                .await
                .map_err(sql)?
                .is_some_and(|r| r.get::<_, bool>(0)),
            _ => false,
        };
        Ok(SourceFacts {
            server_version_num: version as u32,
            publication_generated,
            figoutput_installed,
            output_plugin_libraries: libs
                .map(|s| s.split(',').map(|p| p.trim().to_string()).collect()),
            slot,
            publication_exists,
        })
    }

    /// Why figoutput cannot be used here, if it cannot.
    pub fn figoutput_unavailable(&self) -> Option<String> {
        if !self.figoutput_installed {
            return Some("the figoutput extension is not installed in this database (CREATE EXTENSION figoutput)".into());
        }
        match &self.output_plugin_libraries {
            Some(list) if !list.iter().any(|p| p == "figoutput") => Some(format!(
                "output_plugin_libraries ({}) does not list figoutput",
                list.join(", ")
            )),
            _ => None,
        }
    }

    /// The newest pgoutput protocol this server speaks.
    pub fn pgoutput_proto(&self) -> u32 {
        match self.server_version_num {
            v if v >= 160000 => 4,
            v if v >= 150000 => 3,
            v if v >= 140000 => 2,
            _ => 1,
        }
    }
}

/// The plugin to stream with, and why (logged once).
pub fn choose_plugin(
    choice: PluginChoice,
    facts: &SourceFacts,
    slot: &str,
) -> Result<(String, String), SourceError> {
    if let Some(existing) = &facts.slot {
        let wanted = match choice {
            PluginChoice::Auto => None,
            PluginChoice::Figoutput => Some("figoutput"),
            PluginChoice::Pgoutput => Some("pgoutput"),
        };
        if let Some(w) = wanted {
            if existing.plugin != w {
                return Err(SourceError::SlotPluginMismatch {
                    slot: slot.into(),
                    actual: existing.plugin.clone(),
                    wanted: w.into(),
                });
            }
        }
        return Ok((
            existing.plugin.clone(),
            format!("slot {slot:?} exists with plugin {}", existing.plugin),
        ));
    }
    match choice {
        PluginChoice::Figoutput => match facts.figoutput_unavailable() {
            Some(why) => Err(SourceError::FigoutputUnavailable(why)),
            None => Ok(("figoutput".into(), "requested in the configuration".into())),
        },
        PluginChoice::Pgoutput => Ok(("pgoutput".into(), "requested in the configuration".into())),
        PluginChoice::Auto => match facts.figoutput_unavailable() {
            None => Ok((
                "figoutput".into(),
                "figoutput is installed and allowed".into(),
            )),
            Some(why) => Ok((
                "pgoutput".into(),
                format!("falling back to pgoutput: {why}"),
            )),
        },
    }
}

/// Where a session starts, by the resume rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// A new sink: create the slot (and copy the tables under its snapshot).
    CreateSlot,
    /// The sink holds an initial copy begun at the slot's consistent point that a crash
    /// interrupted: finish it, then stream from that point.
    FinishInitialCopy(Lsn),
    /// Stream from the checkpoint.
    Resume(Lsn),
}

/// Whether a slot the resume rule refused ([`SourceError::SlotWithoutCheckpoint`]) is this sink's
/// own orphan: the sink recorded it was about to create `slot` and holds nothing of it (no
/// checkpoint, no copy), and nobody streams from it. Its run was killed between creating it and
/// recording its copy, so nothing was acknowledged from it: it may be dropped and created again.
pub fn own_orphan_slot(facts: &SourceFacts, slot: &str, intent: Option<&str>) -> bool {
    intent == Some(slot) && facts.slot.as_ref().is_some_and(|s| !s.active)
}

/// Applies the resume rule. `initial_copy`: where the sink's initial copy began (its slot's
/// consistent point), if it holds one.
pub fn resume_point(
    checkpoint: Option<&Checkpoint>,
    facts: &SourceFacts,
    (system_id, timeline): (u64, u32),
    slot: &str,
    plugin: &str,
    initial_copy: Option<Lsn>,
) -> Result<Start, SourceError> {
    let Some(cp) = checkpoint else {
        return match (&facts.slot, initial_copy) {
            (None, _) => Ok(Start::CreateSlot),
            // Nothing was acknowledged since the copy began, so the slot still holds every change
            // after its consistent point.
            (Some(s), Some(p))
                if s.plugin == plugin && s.confirmed_flush.is_none_or(|c| c <= p) =>
            {
                Ok(Start::FinishInitialCopy(p))
            }
            (Some(_), _) => Err(SourceError::SlotWithoutCheckpoint { slot: slot.into() }),
        };
    };
    let other = |field, stored: String, offered: String| SourceError::OtherSource {
        field,
        stored,
        offered,
    };
    if cp.system_id != system_id {
        return Err(other(
            "system identifier",
            cp.system_id.to_string(),
            system_id.to_string(),
        ));
    }
    // A new timeline (a promoted standby, a point-in-time restore) may have rewritten history
    // after the checkpoint: what the sink holds is no longer known to match the source.
    if cp.timeline != timeline {
        return Err(SourceError::TimelineChanged {
            stored: cp.timeline,
            now: timeline,
            checkpoint: cp.commit_end_lsn,
        });
    }
    if cp.slot != slot {
        return Err(other("slot", cp.slot.clone(), slot.to_string()));
    }
    if cp.plugin != plugin {
        return Err(other("plugin", cp.plugin.clone(), plugin.to_string()));
    }
    let Some(state) = &facts.slot else {
        return Err(SourceError::SlotLost {
            slot: slot.into(),
            checkpoint: cp.commit_end_lsn,
        });
    };
    if let Some(confirmed) = state.confirmed_flush {
        if confirmed > cp.commit_end_lsn {
            return Err(SourceError::Gap {
                slot: slot.into(),
                confirmed,
                checkpoint: cp.commit_end_lsn,
            });
        }
    }
    Ok(Start::Resume(cp.commit_end_lsn))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(slot: Option<(&str, u64)>) -> SourceFacts {
        SourceFacts {
            server_version_num: 150020,
            figoutput_installed: true,
            output_plugin_libraries: Some(vec!["pgoutput".into(), "figoutput".into()]),
            slot: slot.map(|(p, l)| SlotState {
                plugin: p.into(),
                confirmed_flush: Some(Lsn(l)),
                active: false,
            }),
            publication_exists: None,
            publication_generated: false,
        }
    }

    fn cp(lsn: u64) -> Checkpoint {
        Checkpoint {
            system_id: 1,
            timeline: 1,
            slot: "s".into(),
            plugin: "figoutput".into(),
            commit_end_lsn: Lsn(lsn),
        }
    }

    #[test]
    fn resume_rule() {
        // New sink, no slot: create it.
        assert_eq!(
            resume_point(None, &facts(None), (1, 1), "s", "figoutput", None).unwrap(),
            Start::CreateSlot
        );
        // New sink, existing slot: refuse.
        assert!(matches!(
            resume_point(
                None,
                &facts(Some(("figoutput", 5))),
                (1, 1),
                "s",
                "figoutput",
                None
            ),
            Err(SourceError::SlotWithoutCheckpoint { .. })
        ));
        // An initial copy a crash interrupted: finished, when the slot confirmed nothing past it.
        assert_eq!(
            resume_point(
                None,
                &facts(Some(("figoutput", 5))),
                (1, 1),
                "s",
                "figoutput",
                Some(Lsn(5))
            )
            .unwrap(),
            Start::FinishInitialCopy(Lsn(5))
        );
        assert!(matches!(
            resume_point(
                None,
                &facts(Some(("figoutput", 6))),
                (1, 1),
                "s",
                "figoutput",
                Some(Lsn(5))
            ),
            Err(SourceError::SlotWithoutCheckpoint { .. })
        ));
        assert!(matches!(
            resume_point(
                None,
                &facts(Some(("pgoutput", 5))),
                (1, 1),
                "s",
                "figoutput",
                Some(Lsn(5))
            ),
            Err(SourceError::SlotWithoutCheckpoint { .. })
        ));
        // Normal resume.
        assert_eq!(
            resume_point(
                Some(&cp(100)),
                &facts(Some(("figoutput", 90))),
                (1, 1),
                "s",
                "figoutput",
                None
            )
            .unwrap(),
            Start::Resume(Lsn(100))
        );
        assert_eq!(
            resume_point(
                Some(&cp(100)),
                &facts(Some(("figoutput", 100))),
                (1, 1),
                "s",
                "figoutput",
                None
            )
            .unwrap(),
            Start::Resume(Lsn(100))
        );
        // Gap, lost slot, other system.
        assert!(matches!(
            resume_point(
                Some(&cp(100)),
                &facts(Some(("figoutput", 101))),
                (1, 1),
                "s",
                "figoutput",
                None
            ),
            Err(SourceError::Gap { .. })
        ));
        assert!(matches!(
            resume_point(Some(&cp(100)), &facts(None), (1, 1), "s", "figoutput", None),
            Err(SourceError::SlotLost { .. })
        ));
        assert!(matches!(
            resume_point(
                Some(&cp(100)),
                &facts(Some(("figoutput", 1))),
                (2, 1),
                "s",
                "figoutput",
                None
            ),
            Err(SourceError::OtherSource { .. })
        ));
        // Another timeline: refused.
        assert!(matches!(
            resume_point(
                Some(&cp(100)),
                &facts(Some(("figoutput", 90))),
                (1, 2),
                "s",
                "figoutput",
                None
            ),
            Err(SourceError::TimelineChanged {
                stored: 1,
                now: 2,
                ..
            })
        ));
    }

    #[test]
    fn plugin_choice_falls_back_with_a_reason() {
        let mut f = facts(None);
        assert_eq!(
            choose_plugin(PluginChoice::Auto, &f, "s").unwrap().0,
            "figoutput"
        );
        f.output_plugin_libraries = Some(vec!["pgoutput".into()]);
        let (p, why) = choose_plugin(PluginChoice::Auto, &f, "s").unwrap();
        assert_eq!(p, "pgoutput");
        assert!(why.contains("output_plugin_libraries"), "{why}");
        assert!(choose_plugin(PluginChoice::Figoutput, &f, "s").is_err());
        f.output_plugin_libraries = None;
        f.figoutput_installed = false;
        assert!(choose_plugin(PluginChoice::Auto, &f, "s")
            .unwrap()
            .1
            .contains("CREATE EXTENSION"));
        // An existing slot decides.
        let f = facts(Some(("pgoutput", 1)));
        assert_eq!(
            choose_plugin(PluginChoice::Auto, &f, "s").unwrap().0,
            "pgoutput"
        );
        assert!(choose_plugin(PluginChoice::Figoutput, &f, "s").is_err());
    }
}
