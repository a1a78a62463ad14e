//! TLS, client certificates, SCRAM-SHA-256-PLUS and the password-method policy against real servers.
//!
//! Every certificate is made here with rcgen: a CA, a server certificate for 127.0.0.1 and localhost,
//! one for another host, an expired one, a second CA, and client certificates (CN = the role). The
//! server gets `ssl = on` with them and a pg_hba.conf like a managed service's: `hostssl` lines only
//! (`scram-sha-256`, `cert`, `md5` for one role), `hostnossl … reject` for everyone but the harness's
//! superuser. What the server saw is read from its side (`pg_stat_ssl`, the `log_connections` lines).
//! Both kinds of connection are exercised: the SQL one (`connect_sql`) and the replication one
//! (`ReplicationClient`), and `fig-receiver run`, which uses both.

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fig_receiver::conn::{AuthRefused, ConnConfig, ConnectError, PasswordAuth, TlsError};
use fig_receiver::replication::{ReplicationClient, ReplicationError};
use fig_tests::receiver::{assert_mirrors_match, Receiver};
use fig_tests::PgServer;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, PKCS_RSA_SHA256,
};

const PASSWORD: &str = "Tls-Pw-1";
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

// ---- certificates -------------------------------------------------------------------------------

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// A leaf signed by this CA: `names` as SAN (IPs become IP SANs), `cn` as subject.
    fn issue(&self, cn: &str, names: &[&str], key: &KeyPair, expired: bool) -> String {
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        if expired {
            params.not_before = rcgen::date_time_ymd(2019, 1, 1);
            params.not_after = rcgen::date_time_ymd(2020, 1, 1);
        }
        params.signed_by(key, &self.cert, &self.key).unwrap().pem()
    }
}

/// The test's PKI, written to a client-side directory (root.pem, other-ca.pem, client files).
struct Pki {
    dir: tempfile::TempDir,
    ca: Ca,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("fig test CA");
        let other = Ca::new("some other CA");
        std::fs::write(dir.path().join("root.pem"), ca.cert.pem()).unwrap();
        std::fs::write(dir.path().join("other-ca.pem"), other.cert.pem()).unwrap();
        Pki { dir, ca }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn root(&self) -> String {
        self.path("root.pem").display().to_string()
    }

    /// A client certificate for role `cn` signed by the CA; the key written as `name.key` (0600),
    /// PKCS#8 as rcgen makes it. Returns (cert path, key path).
    fn client(&self, cn: &str, name: &str, key: &KeyPair) -> (PathBuf, PathBuf) {
        let cert = self.path(&format!("{name}.crt"));
        let key_path = self.path(&format!("{name}.key"));
        std::fs::write(&cert, self.ca.issue(cn, &[], key, false)).unwrap();
        write_private(&key_path, &key.serialize_pem());
        (cert, key_path)
    }
}

fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// `openssl pkey … -traditional`: the same key as PKCS#1 (RSA) or SEC1 (EC).
fn traditional(pkcs8: &Path, out: &Path) {
    let status = std::process::Command::new("openssl")
        .args(["pkey", "-traditional", "-in"])
        .arg(pkcs8)
        .arg("-out")
        .arg(out)
        .status()
        .expect("openssl (Debian's openssl package) converts key formats for this test");
    assert!(status.success());
    std::fs::set_permissions(out, std::fs::Permissions::from_mode(0o600)).unwrap();
}

// ---- servers ------------------------------------------------------------------------------------

/// The harness's superuser keeps plaintext trust (the harness connects with sslmode=disable); every
/// other role must come over TLS.
const HBA: &str = "local all all trust
host all postgres 127.0.0.1/32 trust
hostssl all fig_cert 127.0.0.1/32 cert
hostssl all fig_md5 127.0.0.1/32 md5
hostssl all all 127.0.0.1/32 scram-sha-256
hostnossl all all 127.0.0.1/32 reject
";

/// Makes `path` the server's: owned by its OS user (`postgres` when the tests run as root).
fn give_to_server(path: &Path) {
    // SAFETY: geteuid has no preconditions; getpwnam reads a static record we copy at once.
    unsafe {
        if libc::geteuid() != 0 {
            return;
        }
        let pw = libc::getpwnam(c"postgres".as_ptr());
        assert!(!pw.is_null(), "no OS user postgres");
        std::os::unix::fs::chown(path, Some((*pw).pw_uid), Some((*pw).pw_gid)).unwrap();
    }
}

/// A server with `ssl = on`, the CA for client certificates, the managed-like pg_hba.conf above, and
/// roles `fig` (SCRAM, REPLICATION), `fig_cert` (certificate, REPLICATION) and `fig_md5` (MD5).
/// The server certificate is `kind`: "good" (127.0.0.1, localhost), "wrong-host", "expired".
fn tls_server(pki: &Pki, kind: &str) -> PgServer {
    let pg = PgServer::builder().setting("log_connections", "on").start();
    let key = KeyPair::generate().unwrap();
    let cert = match kind {
        "good" => pki.ca.issue("db", &["127.0.0.1", "localhost"], &key, false),
        "wrong-host" => pki.ca.issue("db", &["db.example.com"], &key, false),
        "expired" => pki.ca.issue("db", &["127.0.0.1", "localhost"], &key, true),
        other => panic!("no server certificate kind {other}"),
    };
    let dir = pg.cluster_dir().to_owned();
    for (name, text) in [
        ("server.crt", cert),
        ("server.key", key.serialize_pem()),
        ("ca.crt", pki.ca.cert.pem()),
    ] {
        let path = dir.join(name);
        write_private(&path, &text);
        give_to_server(&path);
    }
    let hba = pg.data_dir().join("pg_hba.conf");
    std::fs::write(&hba, HBA).unwrap();
    give_to_server(&hba);
    pg.psql(&format!(
        "SET password_encryption = 'scram-sha-256';
         CREATE ROLE fig LOGIN REPLICATION PASSWORD '{PASSWORD}';
         CREATE ROLE fig_cert LOGIN REPLICATION;
         SET password_encryption = 'md5';
         CREATE ROLE fig_md5 LOGIN REPLICATION PASSWORD '{PASSWORD}';
         ALTER SYSTEM SET ssl = on;
         ALTER SYSTEM SET ssl_cert_file = '{d}/server.crt';
         ALTER SYSTEM SET ssl_key_file = '{d}/server.key';
         ALTER SYSTEM SET ssl_ca_file = '{d}/ca.crt';
         SELECT pg_reload_conf();",
        d = dir.display()
    ));
    wait_for_setting(&pg, "ssl", "on");
    pg
}

/// A server without TLS, with SCRAM for `fig` (as the harness makes them, plus the role).
fn plain_server() -> PgServer {
    let pg = PgServer::start();
    pg.psql(&format!(
        "SET password_encryption = 'scram-sha-256';
         CREATE ROLE fig LOGIN REPLICATION PASSWORD '{PASSWORD}';"
    ));
    let hba = pg.data_dir().join("pg_hba.conf");
    std::fs::write(
        &hba,
        "local all all trust\nhost all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n",
    )
    .unwrap();
    give_to_server(&hba);
    // A setting changed in the same reload tells when the postmaster has applied it.
    pg.psql("ALTER SYSTEM SET log_connections = on; SELECT pg_reload_conf();");
    wait_for_setting(&pg, "log_connections", "on");
    pg
}

/// Waits until new sessions see `name = value` (the postmaster has applied a reload).
fn wait_for_setting(pg: &PgServer, name: &str, value: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while pg.psql(&format!("SHOW {name}")).trim() != value {
        assert!(Instant::now() < deadline, "{name} never became {value}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The pg_hba.conf and certificates are reloaded by the same SIGHUP; give the postmaster a moment
    // past the first session that saw it.
    std::thread::sleep(Duration::from_millis(200));
}

// ---- connecting ---------------------------------------------------------------------------------

/// A key=value string for `user` on `pg` (password `PASSWORD`), plus `extra` options.
fn conn(pg: &PgServer, user: &str, extra: &str) -> ConnConfig {
    ConnConfig::parse(&format!(
        "host=127.0.0.1 port={} dbname=postgres user={user} password={PASSWORD} connect_timeout=10 {extra}",
        pg.port()
    ))
    .unwrap_or_else(|e| panic!("{extra}: {e}"))
}

/// Whether the server reports the session of backend `pid` as TLS (pg_stat_ssl, read as superuser).
fn server_says_tls(pg: &PgServer, pid: i32) -> bool {
    let out = pg.psql(&format!("SELECT ssl FROM pg_stat_ssl WHERE pid = {pid}"));
    match out.trim() {
        "t" => true,
        "f" => false,
        other => panic!("no pg_stat_ssl row for pid {pid}: {other:?}"),
    }
}

/// Opens both connections with `config`; returns whether the server saw TLS on each (SQL, replication).
fn connect_both(pg: &PgServer, config: &ConnConfig) -> Result<(bool, bool), String> {
    block_on(async {
        let sql = config
            .connect_sql()
            .await
            .map_err(|e| format!("SQL: {e}"))?;
        let pid: i32 = sql
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .unwrap()
            .get(0);
        let sql_tls = server_says_tls(pg, pid);
        let mut repl = ReplicationClient::connect(config)
            .await
            .map_err(|e| format!("replication: {e}"))?;
        repl.identify_system().await.unwrap();
        let repl_tls = server_says_tls(pg, repl.backend_pid().expect("walsender pid"));
        Ok((sql_tls, repl_tls))
    })
}

/// Both connections' errors under `config` (each must fail).
fn both_errors(config: &ConnConfig) -> (ConnectError, ReplicationError) {
    block_on(async {
        let sql = config
            .connect_sql()
            .await
            .map(|_| ())
            .expect_err("the SQL connection should fail");
        let repl = ReplicationClient::connect(config)
            .await
            .map(|_| ())
            .expect_err("the replication connection should fail");
        (sql, repl)
    })
}

/// The ConnectError inside a replication error.
fn connect_error(e: &ReplicationError) -> &ConnectError {
    match e {
        ReplicationError::Connect(c) => c,
        other => panic!("not a connection error: {other}"),
    }
}

fn handshake_advice(e: &ConnectError) -> String {
    match e {
        ConnectError::Tls(TlsError::Handshake { advice, .. }) => advice.clone(),
        other => panic!("not a handshake failure: {other}"),
    }
}

// ---- tests --------------------------------------------------------------------------------------

#[test]
fn verify_full_streams_end_to_end_with_scram_plus_on_both_connections() {
    let pki = Pki::new();
    let pg = tls_server(&pki, "good");
    pg.psql(
        "CREATE TABLE accounts (id int PRIMARY KEY, owner text, balance numeric(18,2));
         INSERT INTO accounts SELECT i, 'owner ' || i, i * 1.5 FROM generate_series(1, 200) i;
         GRANT SELECT ON accounts TO fig;
         CREATE PUBLICATION fig_pub FOR TABLE accounts;",
    );
    let dir = tempfile::tempdir().unwrap();
    let sink = dir.path().join("tls.sqlite");
    // Host `localhost` checks the DNS SAN here; the library tests below check the IP SAN.
    let url = format!(
        "postgres://fig:{PASSWORD}@localhost:{}/postgres?sslmode=verify-full&sslrootcert={}&channel_binding=require&application_name=fig_tls_run",
        pg.port(),
        pki.root()
    );
    let first = Receiver::run(&url, &sink)
        .plugin("pgoutput")
        .publication("fig_pub")
        .slot("fig_tls")
        .endpos("now")
        .env("HOME", &dir.path().display().to_string())
        .output(RUN_TIMEOUT);
    first.assert_success();
    assert!(
        !first
            .stderr
            .lines()
            .any(|l| l.contains("WARN")
                && (l.contains("sslmode") || l.contains("allow_password_auth"))),
        "verify-full with SCRAM only must not warn about the connection:\n{}",
        first.stderr
    );
    pg.psql(
        "UPDATE accounts SET balance = balance + 1 WHERE id % 7 = 0;
         DELETE FROM accounts WHERE id > 190;
         INSERT INTO accounts VALUES (1000, 'late', 0.01);",
    );
    Receiver::run(&url, &sink)
        .plugin("pgoutput")
        .publication("fig_pub")
        .slot("fig_tls")
        .endpos("now")
        .env("HOME", &dir.path().display().to_string())
        .output(RUN_TIMEOUT)
        .assert_success();
    assert_mirrors_match(&mut pg.connect(), &sink, &["public.accounts"]);

    // The server's view: every session of `fig` was TLS, and both kinds were there.
    let log = pg.log_contents();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("connection authorized: user=fig "))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("replication connection authorized")),
        "no replication connection in the server log:\n{log}"
    );
    assert!(
        lines
            .iter()
            .any(|l| !l.contains("replication connection authorized")),
        "no SQL connection in the server log:\n{log}"
    );
    for l in &lines {
        assert!(l.contains("SSL enabled"), "a session without TLS: {l}");
    }
}

#[test]
fn verify_full_checks_the_ip_san_and_scram_plus_is_what_channel_binding_require_gets() {
    let pki = Pki::new();
    let pg = tls_server(&pki, "good");
    let config = conn(
        &pg,
        "fig",
        &format!(
            "sslmode=verify-full sslrootcert={} channel_binding=require",
            pki.root()
        ),
    );
    assert_eq!(connect_both(&pg, &config).unwrap(), (true, true));
    // The default sslmode is verify-full: the same without sslmode.
    let config = conn(&pg, "fig", &format!("sslrootcert={}", pki.root()));
    assert_eq!(connect_both(&pg, &config).unwrap(), (true, true));
}

#[test]
fn verify_full_without_any_root_certificate_names_sslrootcert() {
    let pki = Pki::new();
    let pg = tls_server(&pki, "good");
    if fig_home_root_exists() {
        return;
    }
    let (sql, repl) = both_errors(&conn(&pg, "fig", ""));
    for e in [sql.to_string(), repl.to_string()] {
        assert!(e.contains("`sslrootcert`") && e.contains("root.crt"), "{e}");
    }
}

/// libpq's default root file would change what these tests see.
fn fig_home_root_exists() -> bool {
    std::env::var_os("HOME")
        .map(|h| Path::new(&h).join(".postgresql/root.crt").exists())
        .unwrap_or(false)
}

#[test]
fn a_wrong_host_is_refused_by_verify_full_and_accepted_by_verify_ca() {
    let pki = Pki::new();
    let pg = tls_server(&pki, "wrong-host");
    let (sql, repl) = both_errors(&conn(
        &pg,
        "fig",
        &format!("sslmode=verify-full sslrootcert={}", pki.root()),
    ));
    for advice in [
        handshake_advice(&sql),
        handshake_advice(connect_error(&repl)),
    ] {
        assert!(
            advice.contains("not valid for host `127.0.0.1`") && advice.contains("db.example.com"),
            "{advice}"
        );
    }
    let config = conn(
        &pg,
        "fig",
        &format!("sslmode=verify-ca sslrootcert={}", pki.root()),
    );
    assert_eq!(connect_both(&pg, &config).unwrap(), (true, true));
}

#[test]
fn a_certificate_from_another_ca_is_refused_even_under_require_with_a_root_file() {
    let pki = Pki::new();
    let pg = tls_server(&pki, "good");
    let other = pki.path("other-ca.pem").display().to_string();
    for mode in ["verify-full", "verify-ca", "require"] {
        let (sql, repl) = both_errors(&conn(
            &pg,
            "fig",
            &format!("sslmode={mode} sslrootcert={other}"),
        ));
        for advice in [
            handshake_advice(&sql),
            handshake_advice(connect_error(&repl)),
        ] {
            assert!(advice.contains("not signed by a CA"), "{mode}: {advice}");
            assert!(advice.contains("other-ca.pem"), "{mode}: {advice}");
        }
    }
}

#[test]
fn an_expired_certificate_is_refused() {
    let pki = Pki::new();
    let pg = tls_server(&pki, "expired");
    let (sql, repl) = both_errors(&conn(
        &pg,
        "fig",
        &format!("sslmode=verify-full sslrootcert={}", pki.root()),
    ));
    for advice in [
        handshake_advice(&sql),
        handshake_advice(connect_error(&repl)),
    ] {
        assert!(advice.contains("expired"), "{advice}");
    }
}

#[test]
fn require_without_a_root_certificate_encrypts_without_verifying() {
    if fig_home_root_exists() {
        return;
    }
    let pki = Pki::new();
    // A certificate for another host: require does not look at it.
    let pg = tls_server(&pki, "wrong-host");
    let config = conn(&pg, "fig", "sslmode=require");
    assert_eq!(connect_both(&pg, &config).unwrap(), (true, true));
}

#[test]
fn prefer_uses_tls_when_offered_and_plain_when_declined() {
    let pki = Pki::new();
    let tls = tls_server(&pki, "good");
    assert_eq!(
        connect_both(&tls, &conn(&tls, "fig", "sslmode=prefer")).unwrap(),
        (true, true)
    );
    let plain = plain_server();
    assert_eq!(
        connect_both(&plain, &conn(&plain, "fig", "sslmode=prefer")).unwrap(),
        (false, false)
    );
    // A mode that demands TLS is never downgraded.
    let (sql, repl) = both_errors(&conn(&plain, "fig", "sslmode=require"));
    assert!(
        matches!(sql, ConnectError::Tls(TlsError::ServerRefused { .. })),
        "{sql}"
    );
    assert!(
        matches!(
            connect_error(&repl),
            ConnectError::Tls(TlsError::ServerRefused { .. })
        ),
        "{repl}"
    );
}

#[test]
fn disable_against_a_hostssl_only_server_gives_the_servers_refusal_and_allow_retries_with_tls() {
    let pki = Pki::new();
    let pg = tls_server(&pki, "good");
    let (sql, repl) = both_errors(&conn(&pg, "fig", "sslmode=disable"));
    for e in [sql.to_string(), repl.to_string()] {
        assert!(
            e.contains("pg_hba.conf") && e.contains("no encryption"),
            "the server's reason should be shown: {e}"
        );
    }
    // allow: plain first, refused by the server, then TLS.
    assert_eq!(
        connect_both(&pg, &conn(&pg, "fig", "sslmode=allow")).unwrap(),
        (true, true)
    );
}

#[test]
fn client_certificates_authenticate_in_every_key_format_and_a_loose_key_is_refused() {
    let pki = Pki::new();
    let pg = tls_server(&pki, "good");
    let root = pki.root();

    // PKCS#8 (rcgen) and SEC1 (openssl -traditional) for an ECDSA key.
    let ec = KeyPair::generate().unwrap();
    let (cert, pkcs8) = pki.client("fig_cert", "ec", &ec);
    let sec1 = pki.path("ec-sec1.key");
    traditional(&pkcs8, &sec1);
    assert!(std::fs::read_to_string(&sec1)
        .unwrap()
        .contains("BEGIN EC PRIVATE KEY"));
    // PKCS#1 for an RSA key (openssl makes it: ring cannot generate RSA keys).
    let rsa8 = pki.path("rsa8.key");
    let status = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-quiet",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&rsa8)
        .status()
        .unwrap();
    assert!(status.success());
    let rsa =
        KeyPair::from_pem_and_sign_algo(&std::fs::read_to_string(&rsa8).unwrap(), &PKCS_RSA_SHA256)
            .unwrap();
    let (rsa_cert, _) = pki.client("fig_cert", "rsa", &rsa);
    let pkcs1 = pki.path("rsa-pkcs1.key");
    traditional(&rsa8, &pkcs1);
    assert!(std::fs::read_to_string(&pkcs1)
        .unwrap()
        .contains("BEGIN RSA PRIVATE KEY"));

    for (cert, key) in [(&cert, &pkcs8), (&cert, &sec1), (&rsa_cert, &pkcs1)] {
        let config = conn(
            &pg,
            "fig_cert",
            &format!(
                "sslrootcert={root} sslcert={} sslkey={}",
                cert.display(),
                key.display()
            ),
        );
        assert_eq!(
            connect_both(&pg, &config).unwrap_or_else(|e| panic!("{}: {e}", key.display())),
            (true, true)
        );
    }

    // Without a certificate the server refuses (its reason is shown).
    let (sql, _) = both_errors(&conn(&pg, "fig_cert", &format!("sslrootcert={root}")));
    assert!(sql.to_string().contains("certificate"), "{sql}");

    // A key others can read is refused before it is read, naming sslkey.
    std::fs::set_permissions(&pkcs8, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = conn(
        &pg,
        "fig_cert",
        &format!(
            "sslrootcert={root} sslcert={} sslkey={}",
            cert.display(),
            pkcs8.display()
        ),
    );
    let (sql, repl) = both_errors(&config);
    for e in [sql.to_string(), repl.to_string()] {
        assert!(
            e.contains("`sslkey`") && e.contains("644") && e.contains("chmod 600"),
            "{e}"
        );
    }
}

#[test]
fn channel_binding_require_works_over_tls_and_fails_over_plaintext() {
    let pki = Pki::new();
    let tls = tls_server(&pki, "good");
    let config = conn(
        &tls,
        "fig",
        &format!("sslrootcert={} channel_binding=require", pki.root()),
    );
    assert_eq!(connect_both(&tls, &config).unwrap(), (true, true));
    // A certificate login involves no SCRAM: channel binding cannot have happened.
    let ec = KeyPair::generate().unwrap();
    let (cert, key) = pki.client("fig_cert", "cb", &ec);
    let (sql, repl) = both_errors(&conn(
        &tls,
        "fig_cert",
        &format!(
            "sslrootcert={} sslcert={} sslkey={} channel_binding=require",
            pki.root(),
            cert.display(),
            key.display()
        ),
    ));
    assert!(
        matches!(
            sql,
            ConnectError::Auth {
                refused: AuthRefused::BindingNotUsed { .. },
                ..
            }
        ),
        "{sql}"
    );
    assert!(
        matches!(
            connect_error(&repl),
            ConnectError::Auth {
                refused: AuthRefused::BindingNotUsed { .. },
                ..
            }
        ),
        "{repl}"
    );

    let plain = plain_server();
    let (sql, repl) = both_errors(&conn(
        &plain,
        "fig",
        "sslmode=disable channel_binding=require",
    ));
    for e in [&sql, connect_error(&repl)] {
        assert!(
            matches!(
                e,
                ConnectError::Auth {
                    refused: AuthRefused::BindingWithoutTls { .. },
                    ..
                }
            ),
            "{e}"
        );
    }
    assert!(
        sql.to_string().contains("channel binding needs TLS"),
        "{sql}"
    );
    // prefer over plaintext: plain SCRAM.
    assert_eq!(
        connect_both(&plain, &conn(&plain, "fig", "sslmode=disable")).unwrap(),
        (false, false)
    );
}

#[test]
fn md5_is_refused_by_default_and_accepted_when_the_config_allows_it() {
    let pki = Pki::new();
    let pg = tls_server(&pki, "good");
    let root = pki.root();
    let (sql, repl) = both_errors(&conn(&pg, "fig_md5", &format!("sslrootcert={root}")));
    for e in [&sql, connect_error(&repl)] {
        assert!(
            matches!(
                e,
                ConnectError::Auth {
                    refused: AuthRefused::PasswordMethod {
                        method: PasswordAuth::Md5
                    },
                    ..
                }
            ),
            "{e}"
        );
        let text = e.to_string();
        assert!(
            text.contains("`md5`") && text.contains("allow_password_auth"),
            "{text}"
        );
        assert!(!text.contains(PASSWORD), "{text}");
    }
    let config = conn(
        &pg,
        "fig_md5",
        &format!("sslrootcert={root} allow_password_auth=md5"),
    );
    assert_eq!(connect_both(&pg, &config).unwrap(), (true, true));

    // The same through the binary and the config file's [source] keys, with sslrootcert=system and
    // the test CA as the system store (rustls-native-certs reads SSL_CERT_FILE).
    pg.psql(
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1), (2);
         GRANT SELECT ON t TO fig_md5; CREATE PUBLICATION p FOR TABLE t;",
    );
    let dir = tempfile::tempdir().unwrap();
    let sink = dir.path().join("md5.sqlite");
    let file = |allow: &str| {
        let path = dir.path().join("fig.toml");
        std::fs::write(
            &path,
            format!(
                "[source]\nurl = \"postgres://fig_md5@127.0.0.1:{}/postgres\"\npassword = \"{PASSWORD}\"\nsslmode = \"verify-full\"\nsslrootcert = \"system\"\n{allow}\n[sink]\nurl = \"sqlite:{}\"\n[replication]\nslot = \"md5\"\nplugin = \"pgoutput\"\npublication = \"p\"\n",
                pg.port(),
                sink.display()
            ),
        )
        .unwrap();
        Receiver::new(["run", "--endpos", "now", "--config"])
            .arg(&path)
            .env("HOME", &dir.path().display().to_string())
            .env("SSL_CERT_FILE", &root)
            .output(RUN_TIMEOUT)
    };
    let refused = file("");
    refused.assert_failure();
    assert!(
        refused.stderr.contains("allow_password_auth") && refused.stderr.contains("md5"),
        "{}",
        refused.stderr
    );
    assert!(!refused.stderr.contains(PASSWORD), "{}", refused.stderr);
    let allowed = file("allow_password_auth = [\"md5\"]");
    allowed.assert_success();
    assert!(
        allowed.stderr.contains("allow_password_auth includes md5"),
        "allowing md5 warns at start:\n{}",
        allowed.stderr
    );
    assert_mirrors_match(&mut pg.connect(), &sink, &["public.t"]);
}

#[test]
fn weak_sslmodes_warn_at_every_start() {
    let plain = plain_server();
    let dir = tempfile::tempdir().unwrap();
    for mode in ["disable", "prefer"] {
        let url = format!(
            "postgres://fig:{PASSWORD}@127.0.0.1:{}/postgres?sslmode={mode}",
            plain.port()
        );
        let out = Receiver::new(["check", "--source", &url, "--sink"])
            .arg(format!("sqlite:{}", dir.path().join("w.sqlite").display()))
            .arg("--plugin")
            .arg("pgoutput")
            .arg("--publication")
            .arg("p")
            .env("HOME", &dir.path().display().to_string())
            .output(RUN_TIMEOUT);
        assert!(
            out.stderr.contains("WARN") && out.stderr.contains(&format!("sslmode={mode}")),
            "{mode}:\n{}",
            out.stderr
        );
        assert!(!out.stderr.contains(PASSWORD), "{}", out.stderr);
    }
}
