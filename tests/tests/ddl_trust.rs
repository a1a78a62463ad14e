//! Who can produce a DDL record: a `figoutput.ddl` message that figoutput authenticates and the
//! receiver trusts (docs/FIGOUTPUT.md, "Who can produce a trusted DDL record"). One test per role
//! class, each against a real server:
//!
//! ```text
//! trusted by definition   superusers, the extension's owner (also after losing SUPERUSER)
//! legitimate DDL          any role doing real DDL: the event trigger writes the record
//! refused                 no privilege, INSERT granted on figoutput.ddl_log, pg_write_all_data,
//!                         pg_write_all_data with BYPASSRLS, pg_write_all_data with
//!                         session_replication_role = replica; INSERT, ON CONFLICT or COPY;
//!                         also a superuser that is not the owner, writing directly
//! fail-safe               a figoutput.ddl_log without the guard trigger (an older install): nothing
//!                         is trusted, not even real DDL
//! ```
//!
//! A forgery is the attack the review found: in one transaction, write the payload into
//! `figoutput.ddl_log` and emit the same text as a `figoutput.ddl` message. It must arrive as a
//! plain MESSAGE (untrusted), never as a DDL record.

use fig_format::decode::Record;
use fig_tests::figoutput::{server_with_slot, Decoded};
use fig_tests::{PgServer, HOST};
use postgres::error::SqlState;
use postgres::Client;
use std::io::Write;

// ---- helpers ---------------------------------------------------------------------------------------

fn login(pg: &PgServer, role: &str, db: &str) -> Client {
    postgres::Config::new()
        .host(HOST)
        .port(pg.port())
        .user(role)
        .dbname(db)
        .connect(postgres::NoTls)
        .unwrap_or_else(|e| panic!("connecting as {role} to {db}: {e}"))
}

/// A payload as the capture writes it, telling of a statement that never ran (dropping a column of
/// a table the forger cannot touch).
fn forged_payload(c: &mut Client) -> String {
    c.batch_execute(
        "CREATE TABLE IF NOT EXISTS public.ledger (id int PRIMARY KEY, amount numeric)",
    )
    .unwrap();
    let objid: u32 = c
        .query_one("SELECT 'public.ledger'::regclass::oid", &[])
        .unwrap()
        .get(0);
    format!(
        r#"{{"at": "2026-12-01T00:00:00.000000Z", "tag": "ALTER TABLE", "role": "postgres", "event": "ddl_command_end", "query": "ALTER TABLE public.ledger DROP COLUMN amount", "version": 1, "commands": [{{"objid": {objid}, "schema": "public", "identity": "public.ledger", "command_tag": "ALTER TABLE", "object_type": "table", "in_extension": false}}]}}"#
    )
}

/// How the forger writes the payload into the log.
#[derive(Clone, Copy, Debug)]
enum Via {
    Insert,
    /// `INSERT … ON CONFLICT DO NOTHING`, the other way a row is inserted.
    Upsert,
    Copy,
}

/// The forgery, in one transaction: write `payload` into figoutput.ddl_log (in a savepoint, so a
/// refused write leaves the transaction going), then emit it as a `figoutput.ddl` message.
/// `setup` runs first in the transaction (e.g. `SET LOCAL ...`). Returns the write's outcome.
fn forge(c: &mut Client, setup: &str, how: Via, payload: &str) -> Result<(), postgres::Error> {
    let mut tx = c.transaction().unwrap();
    if !setup.is_empty() {
        tx.batch_execute(setup).unwrap();
    }
    let mut sp = tx.savepoint("forge").unwrap();
    let written = match how {
        Via::Insert => sp
            .execute(
                "INSERT INTO figoutput.ddl_log (payload) VALUES ($1)",
                &[&payload],
            )
            .map(drop),
        Via::Upsert => sp
            .execute(
                "INSERT INTO figoutput.ddl_log (payload) VALUES ($1) ON CONFLICT DO NOTHING",
                &[&payload],
            )
            .map(drop),
        Via::Copy => sp
            .copy_in("COPY figoutput.ddl_log (payload) FROM STDIN")
            .and_then(|mut w| {
                // The payload holds no tab, newline or backslash: it is one COPY text line as is.
                w.write_all(payload.as_bytes()).unwrap();
                w.write_all(b"\n").unwrap();
                w.finish().map(drop)
            }),
    };
    if written.is_ok() {
        sp.commit().unwrap();
    } else {
        sp.rollback().unwrap();
    }
    tx.execute(
        "SELECT pg_logical_emit_message(true, 'figoutput.ddl', $1::text)",
        &[&payload],
    )
    .unwrap();
    tx.commit().unwrap();
    written
}

fn ddl_payloads(d: &Decoded) -> Vec<&'static str> {
    d.records
        .iter()
        .filter_map(|r| match r {
            Record::Ddl { payload, .. } => Some(*payload),
            _ => None,
        })
        .collect()
}

/// The forged message arrived, and only as a plain MESSAGE: no DDL record at all.
fn assert_arrived_untrusted(d: &Decoded, payload: &str) {
    assert!(
        ddl_payloads(d).is_empty(),
        "a forgery produced a trusted DDL record: {:?}",
        ddl_payloads(d)
    );
    let messages: Vec<_> = d
        .records
        .iter()
        .filter_map(|r| match r {
            Record::Message {
                transactional: true,
                prefix,
                content,
                ..
            } => Some((*prefix, *content)),
            _ => None,
        })
        .collect();
    assert_eq!(
        messages,
        [("figoutput.ddl", payload.as_bytes())],
        "{:?}",
        d.kinds()
    );
}

/// The write was refused: by the table's privileges, or by the guard trigger.
fn assert_refused(written: Result<(), postgres::Error>, by_guard: bool) {
    let e = written.expect_err("the write into figoutput.ddl_log went through");
    let db = e.as_db_error().unwrap_or_else(|| panic!("{e}"));
    assert_eq!(db.code(), &SqlState::INSUFFICIENT_PRIVILEGE, "{db:?}");
    if by_guard {
        assert!(
            db.message()
                .contains("only figoutput's DDL capture writes figoutput.ddl_log"),
            "{}",
            db.message()
        );
    } else {
        assert!(
            db.message().contains("permission denied"),
            "{}",
            db.message()
        );
    }
}

/// One trusted DDL record for `statement`, saying it was run by `role`.
fn assert_trusted(c: &mut Client, d: &Decoded, statement: &str, role: &str) {
    let payloads = ddl_payloads(d);
    assert_eq!(payloads.len(), 1, "{:?}", d.kinds());
    let row = c
        .query_one(
            "SELECT j->>'query', j->>'role' FROM (SELECT $1::text::jsonb AS j) p",
            &[&payloads[0]],
        )
        .unwrap();
    let (query, by): (Option<String>, String) = (row.get(0), row.get(1));
    assert_eq!(query.as_deref(), Some(statement));
    assert_eq!(by, role);
}

/// Drains the slot, so a test decodes only what it did itself.
fn drain(c: &mut Client) {
    Decoded::get(c, "s", &[]);
}

/// A server with the extension and slot `s`, `public.ledger`, and a LOGIN role made with `role_sql`
/// (`CREATE ROLE name LOGIN ...` and any grants); the slot is drained.
fn server_with_role(role_sql: &str) -> (PgServer, Client, String) {
    let (pg, mut c) = server_with_slot("s");
    let payload = forged_payload(&mut c);
    c.batch_execute(role_sql).unwrap();
    drain(&mut c);
    (pg, c, payload)
}

// ---- trusted by definition -------------------------------------------------------------------------

#[test]
fn ddl_by_the_superuser_that_owns_the_extension_is_a_trusted_ddl_record() {
    let (_pg, mut c) = server_with_slot("s");
    drain(&mut c);
    let statement = "CREATE TABLE public.t (id int PRIMARY KEY)";
    c.batch_execute(statement).unwrap();
    let d = Decoded::get(&mut c, "s", &[]);
    assert_trusted(&mut c, &d, statement, "postgres");
}

/// Its DDL is captured like anyone's. Writing the log directly is refused even to it: the guard
/// admits only the table's owner (a superuser could of course act as the owner, or drop the guard,
/// which is why superusers are trusted by definition).
#[test]
fn ddl_by_a_superuser_that_does_not_own_the_extension_is_a_trusted_ddl_record() {
    let (pg, mut c, payload) = server_with_role("CREATE ROLE dba LOGIN SUPERUSER");
    let mut dba = login(&pg, "dba", "postgres");
    let statement = "CREATE TABLE public.t (id int PRIMARY KEY)";
    dba.batch_execute(statement).unwrap();
    let d = Decoded::get(&mut c, "s", &[]);
    assert_trusted(&mut c, &d, statement, "dba");

    let written = forge(&mut dba, "", Via::Insert, &payload);
    let d = Decoded::get(&mut c, "s", &[]);
    assert_arrived_untrusted(&d, &payload);
    assert_refused(written, true);
}

/// The owner keeps owning figoutput.ddl_log and the capture function after losing SUPERUSER: it
/// can write the log directly and so produce a DDL record of its own making. That is by definition
/// (it could as well rewrite `figoutput.capture_ddl()`), and it is the boundary of the rule.
#[test]
fn the_extension_owner_without_superuser_produces_trusted_records_by_ddl_and_by_writing_the_log() {
    let pg = PgServer::start();
    let mut c = pg.connect();
    c.batch_execute("CREATE ROLE ext_owner LOGIN SUPERUSER")
        .unwrap();
    pg.create_database("owned");
    let mut owner = login(&pg, "ext_owner", "owned");
    owner
        .batch_execute("CREATE EXTENSION figoutput; CREATE SCHEMA app")
        .unwrap();
    let payload = forged_payload(&mut owner);
    let mut admin = pg.connect_to("owned");
    admin
        .execute(
            "SELECT pg_create_logical_replication_slot('o', 'figoutput')",
            &[],
        )
        .unwrap();
    c.batch_execute("ALTER ROLE ext_owner NOSUPERUSER").unwrap();
    let is_superuser: bool = owner
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(!is_superuser);

    let statement = "CREATE TABLE app.t (id int PRIMARY KEY)";
    owner.batch_execute(statement).unwrap();
    let d = Decoded::get(&mut admin, "o", &[]);
    assert_trusted(&mut admin, &d, statement, "ext_owner");

    forge(&mut owner, "", Via::Insert, &payload).expect("the owner writes its own table");
    let d = Decoded::get(&mut admin, "o", &[]);
    assert_eq!(ddl_payloads(&d), [payload.as_str()], "{:?}", d.kinds());
}

// ---- legitimate DDL by anyone ----------------------------------------------------------------------

#[test]
fn ddl_by_a_plain_role_with_create_on_a_schema_is_a_trusted_ddl_record() {
    let (pg, mut c, _) = server_with_role(
        "CREATE ROLE dev LOGIN; CREATE SCHEMA app; GRANT USAGE, CREATE ON SCHEMA app TO dev",
    );
    let mut dev = login(&pg, "dev", "postgres");
    let statement = "CREATE TABLE app.t (id int PRIMARY KEY)";
    dev.batch_execute(statement).unwrap();
    let d = Decoded::get(&mut c, "s", &[]);
    assert_trusted(&mut c, &d, statement, "dev");

    let statement = "ALTER TABLE app.t ADD COLUMN note text";
    dev.batch_execute(statement).unwrap();
    let d = Decoded::get(&mut c, "s", &[]);
    assert_trusted(&mut c, &d, statement, "dev");
}

// ---- refused ---------------------------------------------------------------------------------------

#[test]
fn a_plain_role_cannot_forge_a_ddl_record() {
    let (pg, mut c, payload) = server_with_role("CREATE ROLE mallory LOGIN");
    let mut m = login(&pg, "mallory", "postgres");
    let written = forge(&mut m, "", Via::Insert, &payload);
    let d = Decoded::get(&mut c, "s", &[]);
    assert_arrived_untrusted(&d, &payload);
    assert_refused(written, false);
}

#[test]
fn a_role_granted_insert_on_the_ddl_log_cannot_forge_a_ddl_record() {
    let (pg, mut c, payload) =
        server_with_role("CREATE ROLE mallory LOGIN; GRANT INSERT ON figoutput.ddl_log TO mallory");
    let mut m = login(&pg, "mallory", "postgres");
    let written = forge(&mut m, "", Via::Insert, &payload);
    let d = Decoded::get(&mut c, "s", &[]);
    assert_arrived_untrusted(&d, &payload);
    assert_refused(written, true);
}

#[test]
fn a_member_of_pg_write_all_data_cannot_forge_a_ddl_record_by_insert_upsert_or_copy() {
    let (pg, mut c, payload) =
        server_with_role("CREATE ROLE mallory LOGIN; GRANT pg_write_all_data TO mallory");
    let mut m = login(&pg, "mallory", "postgres");
    for how in [Via::Insert, Via::Upsert, Via::Copy] {
        let written = forge(&mut m, "", how, &payload);
        let d = Decoded::get(&mut c, "s", &[]);
        assert_arrived_untrusted(&d, &payload);
        assert_refused(written, true);
    }
}

/// BYPASSRLS does not matter: the guard is a trigger, not a row security policy.
#[test]
fn a_bypassrls_member_of_pg_write_all_data_cannot_forge_a_ddl_record() {
    let (pg, mut c, payload) =
        server_with_role("CREATE ROLE mallory LOGIN BYPASSRLS; GRANT pg_write_all_data TO mallory");
    let mut m = login(&pg, "mallory", "postgres");
    let written = forge(&mut m, "", Via::Insert, &payload);
    let d = Decoded::get(&mut c, "s", &[]);
    assert_arrived_untrusted(&d, &payload);
    assert_refused(written, true);
}

/// `session_replication_role = replica` silences ordinary triggers; the guard fires ALWAYS.
#[test]
fn a_member_of_pg_write_all_data_in_replica_mode_cannot_forge_a_ddl_record() {
    let (pg, mut c, payload) = server_with_role(
        "CREATE ROLE mallory LOGIN; GRANT pg_write_all_data TO mallory;
         GRANT SET ON PARAMETER session_replication_role TO mallory",
    );
    let mut m = login(&pg, "mallory", "postgres");
    let written = forge(
        &mut m,
        "SET LOCAL session_replication_role = replica",
        Via::Insert,
        &payload,
    );
    let d = Decoded::get(&mut c, "s", &[]);
    assert_arrived_untrusted(&d, &payload);
    assert_refused(written, true);
}

// ---- fail-safe -------------------------------------------------------------------------------------

/// A figoutput.ddl_log whose guard trigger is missing, disabled, or not firing ALWAYS (as in an
/// install made before the guard existed) authenticates nothing: even real DDL arrives as a plain
/// MESSAGE, until the extension is recreated.
#[test]
fn without_its_guard_trigger_the_ddl_log_authenticates_nothing() {
    let (_pg, mut c) = server_with_slot("s");
    drain(&mut c);
    for (n, weaken) in [
        "ALTER TABLE figoutput.ddl_log ENABLE TRIGGER ddl_log_guard", // fires ORIGIN only
        "ALTER TABLE figoutput.ddl_log DISABLE TRIGGER ddl_log_guard",
        "DROP TRIGGER ddl_log_guard ON figoutput.ddl_log",
    ]
    .into_iter()
    .enumerate()
    {
        c.batch_execute(weaken).unwrap();
        drain(&mut c);
        c.batch_execute(&format!("CREATE TABLE public.t{n} (id int)"))
            .unwrap();
        let d = Decoded::get(&mut c, "s", &[]);
        assert!(
            ddl_payloads(&d).is_empty(),
            "after {weaken:?}: {:?}",
            d.kinds()
        );
        assert_eq!(
            d.kinds(),
            ["BEGIN", "MESSAGE", "COMMIT"],
            "after {weaken:?}"
        );
    }
}
