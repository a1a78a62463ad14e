//! The text of replication commands, built by pure functions so the quoting can be tested on its own.
//!
//! The replication grammar (`repl_gram.y`) takes identifiers in double quotes (a `"` inside doubled) and
//! string literals in single quotes (a `'` inside doubled; backslashes are literal). Slot names, plugin
//! names and option names are always double-quoted, as `pg_recvlogical` does, so case is preserved and
//! no name can end the command early; option values are always single-quoted literals.

use super::error::{ReplicationError, Result};
use super::lsn::Lsn;

/// What `CREATE_REPLICATION_SLOT` does with the snapshot at the slot's consistent point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotAction {
    /// Export it: the result carries a snapshot name that another session can import with
    /// `SET TRANSACTION SNAPSHOT` to read the data exactly as of the slot's start. It stays importable only
    /// while the creating replication connection is idle and runs no other command.
    Export,
    /// Do not export a snapshot.
    NoExport,
    /// Use it in the current transaction of the creating connection (needs a transaction on the
    /// replication connection; rarely useful here).
    Use,
}

/// Checks a replication slot name the way PostgreSQL does: 1 to 63 characters of `a-z`, `0-9`, `_`.
pub fn validate_slot_name(name: &str) -> Result<()> {
    let bad = |reason: &str| {
        ReplicationError::InvalidArgument {
        what: "replication slot name",
        reason: format!(
            "`{}` {reason}; slot names are 1 to 63 characters of lower-case letters, digits and underscores",
            name.chars().take(80).collect::<String>()
        ),
    }
    };
    if name.is_empty() {
        return Err(bad("is empty"));
    }
    if name.len() > 63 {
        return Err(bad("is too long"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(bad("contains a character other than a-z, 0-9 or _"));
    }
    Ok(())
}

fn check_no_nul(what: &'static str, s: &str) -> Result<()> {
    if s.contains('\0') {
        return Err(ReplicationError::InvalidArgument {
            what,
            reason: "contains a NUL byte, which cannot be sent to the server".into(),
        });
    }
    Ok(())
}

/// `name` as a double-quoted identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `value` as a single-quoted string literal.
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// `CREATE_REPLICATION_SLOT` for a logical slot, in the syntax of the server's major version.
pub fn create_logical_slot(
    server_major: u32,
    name: &str,
    plugin: &str,
    snapshot: SnapshotAction,
    temporary: bool,
) -> Result<String> {
    validate_slot_name(name)?;
    check_no_nul("output plugin name", plugin)?;
    if plugin.is_empty() {
        return Err(ReplicationError::InvalidArgument {
            what: "output plugin name",
            reason: "is empty".into(),
        });
    }
    let mut cmd = format!("CREATE_REPLICATION_SLOT {}", quote_ident(name));
    if temporary {
        cmd.push_str(" TEMPORARY");
    }
    cmd.push_str(" LOGICAL ");
    cmd.push_str(&quote_ident(plugin));
    if server_major >= 15 {
        cmd.push_str(match snapshot {
            SnapshotAction::Export => " (SNAPSHOT 'export')",
            SnapshotAction::NoExport => " (SNAPSHOT 'nothing')",
            SnapshotAction::Use => " (SNAPSHOT 'use')",
        });
    } else {
        cmd.push_str(match snapshot {
            SnapshotAction::Export => " EXPORT_SNAPSHOT",
            SnapshotAction::NoExport => " NOEXPORT_SNAPSHOT",
            SnapshotAction::Use => " USE_SNAPSHOT",
        });
    }
    Ok(cmd)
}

/// `DROP_REPLICATION_SLOT`.
pub fn drop_slot(name: &str) -> Result<String> {
    validate_slot_name(name)?;
    Ok(format!("DROP_REPLICATION_SLOT {}", quote_ident(name)))
}

/// `START_REPLICATION SLOT … LOGICAL …` with the plugin's options.
pub fn start_logical(slot: &str, start: Lsn, options: &[(String, String)]) -> Result<String> {
    validate_slot_name(slot)?;
    let mut cmd = format!(
        "START_REPLICATION SLOT {} LOGICAL {start}",
        quote_ident(slot)
    );
    if !options.is_empty() {
        cmd.push_str(" (");
        for (i, (k, v)) in options.iter().enumerate() {
            check_no_nul("plugin option name", k)?;
            check_no_nul("plugin option value", v)?;
            if k.is_empty() {
                return Err(ReplicationError::InvalidArgument {
                    what: "plugin option name",
                    reason: "is empty".into(),
                });
            }
            if i > 0 {
                cmd.push_str(", ");
            }
            cmd.push_str(&quote_ident(k));
            cmd.push(' ');
            cmd.push_str(&quote_literal(v));
        }
        cmd.push(')');
    }
    Ok(cmd)
}

/// The major version from a `server_version` parameter such as `15.20 (Debian 15.20-1.pgdg120+1)`,
/// `17beta1` or `9.6.24` (→ 9).
pub fn server_major(server_version: &str) -> Option<u32> {
    let digits: String = server_version
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn slot_names() {
        assert!(validate_slot_name("fig_slot_1").is_ok());
        assert!(validate_slot_name(&"a".repeat(63)).is_ok());
        for bad in ["", "Fig", "a-b", "a b", "a\"b", "é", &"a".repeat(64)] {
            let e = validate_slot_name(bad).unwrap_err();
            assert!(
                matches!(e, ReplicationError::InvalidArgument { .. }),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn create_slot_syntax_by_version() {
        assert_eq!(
            create_logical_slot(15, "s", "pgoutput", SnapshotAction::Export, false).unwrap(),
            r#"CREATE_REPLICATION_SLOT "s" LOGICAL "pgoutput" (SNAPSHOT 'export')"#
        );
        assert_eq!(
            create_logical_slot(16, "s", "test_decoding", SnapshotAction::NoExport, true).unwrap(),
            r#"CREATE_REPLICATION_SLOT "s" TEMPORARY LOGICAL "test_decoding" (SNAPSHOT 'nothing')"#
        );
        assert_eq!(
            create_logical_slot(14, "s", "pgoutput", SnapshotAction::Export, false).unwrap(),
            r#"CREATE_REPLICATION_SLOT "s" LOGICAL "pgoutput" EXPORT_SNAPSHOT"#
        );
        assert_eq!(
            create_logical_slot(10, "s", "x\"y", SnapshotAction::Use, true).unwrap(),
            r#"CREATE_REPLICATION_SLOT "s" TEMPORARY LOGICAL "x""y" USE_SNAPSHOT"#
        );
        assert!(create_logical_slot(15, "S", "p", SnapshotAction::Export, false).is_err());
        assert!(create_logical_slot(15, "s", "", SnapshotAction::Export, false).is_err());
    }

    #[test]
    fn start_replication_quoting() {
        let opts = vec![
            ("proto_version".to_string(), "1".to_string()),
            ("publication_names".to_string(), "p, \"Q\"".to_string()),
            ("odd\"name".to_string(), "it's".to_string()),
        ];
        assert_eq!(
            start_logical("s", Lsn(0x1_0000_00AB), &opts).unwrap(),
            r#"START_REPLICATION SLOT "s" LOGICAL 1/AB ("proto_version" '1', "publication_names" 'p, "Q"', "odd""name" 'it''s')"#
        );
        assert_eq!(
            start_logical("s", Lsn::INVALID, &[]).unwrap(),
            r#"START_REPLICATION SLOT "s" LOGICAL 0/0"#
        );
        assert!(start_logical("s", Lsn(0), &[("a".into(), "b\0".into())]).is_err());
        assert!(start_logical("s", Lsn(0), &[("".into(), "b".into())]).is_err());
    }

    #[test]
    fn server_versions() {
        assert_eq!(server_major("15.20 (Debian 15.20-1.pgdg120+1)"), Some(15));
        assert_eq!(server_major("17beta1"), Some(17));
        assert_eq!(server_major("9.6.24"), Some(9));
        assert_eq!(server_major("x"), None);
    }

    proptest! {
        #[test]
        fn literal_quoting_is_closed(v in ".{0,30}") {
            let q = quote_literal(&v);
            // Strip the outer quotes; what is inside has only doubled quotes.
            let inner = &q[1..q.len() - 1];
            prop_assert_eq!(inner.replace("''", ""), v.replace('\'', ""));
            prop_assert_eq!(inner.replace("''", "'"), v);
        }

        #[test]
        fn ident_quoting_is_closed(v in ".{0,30}") {
            let q = quote_ident(&v);
            let inner = &q[1..q.len() - 1];
            prop_assert_eq!(inner.replace("\"\"", "\""), v);
        }
    }
}
