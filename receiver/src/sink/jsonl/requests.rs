//! Re-copy requests for a JSON Lines file: `PATH.resync`, one `{"schema":…,"table":…}` line per
//! table. `fig-receiver resync` adds to it; the `run` writing the file re-copies what it lists
//! ([`super::recopy`]) and takes each table off once its copy is in the file. A request survives a
//! crash of either: it stays listed until it is served.
//!
//! Both sides hold an `flock` on the request file while they read or change it, and change it in
//! place (never by rename), so the lock always guards the file being read.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::sink::{io_err, SinkError};

/// `PATH.resync`.
pub fn requests_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".resync");
    PathBuf::from(s)
}

fn open_locked(path: &Path) -> Result<File, SinkError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(io_err(path, "opening the re-copy requests"))?;
    file.lock()
        .map_err(io_err(path, "locking the re-copy requests"))?;
    Ok(file)
}

fn read_all_text(file: &mut File, path: &Path) -> Result<String, SinkError> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_to_string(&mut text))
        .map_err(io_err(path, "reading the re-copy requests"))?;
    Ok(text)
}

fn read_all(file: &mut File, path: &Path) -> Result<Vec<(String, String)>, SinkError> {
    let text = read_all_text(file, path)?;
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        // A line cut short by a crash while it was appended was never a whole request.
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if let (Some(s), Some(t)) = (v["schema"].as_str(), v["table"].as_str()) {
            let t = (s.to_string(), t.to_string());
            if !out.contains(&t) {
                out.push(t);
            }
        }
    }
    Ok(out)
}

fn line(schema: &str, table: &str) -> String {
    serde_json::json!({"schema": schema, "table": table}).to_string() + "\n"
}

/// Asks for re-copies of `tables` into the JSON Lines file at `path`.
pub fn request(path: &Path, tables: &[(String, String)]) -> Result<(), SinkError> {
    let at = requests_path(path);
    let mut file = open_locked(&at)?;
    // After a line torn by a crash, a new line of its own (else this request would join it).
    let torn = read_all_text(&mut file, &at)?;
    let torn = !torn.is_empty() && !torn.ends_with('\n');
    let mut text: String = if torn { "\n".into() } else { String::new() };
    text.extend(tables.iter().map(|(s, t)| line(s, t)));
    file.seek(SeekFrom::End(0))
        .and_then(|_| file.write_all(text.as_bytes()))
        .and_then(|()| file.sync_all())
        .map_err(io_err(&at, "adding to the re-copy requests"))
}

/// The tables whose re-copy into the file at `path` is asked for, oldest request first.
pub fn requested(path: &Path) -> Result<Vec<(String, String)>, SinkError> {
    let at = requests_path(path);
    if !at.exists() {
        return Ok(Vec::new());
    }
    read_all(&mut open_locked(&at)?, &at)
}

/// Takes `table` off the requests: its re-copy is in the file.
pub fn served(path: &Path, table: &(String, String)) -> Result<(), SinkError> {
    let at = requests_path(path);
    if !at.exists() {
        return Ok(());
    }
    let mut file = open_locked(&at)?;
    let left: String = read_all(&mut file, &at)?
        .iter()
        .filter(|t| *t != table)
        .map(|(s, t)| line(s, t))
        .collect();
    file.set_len(0)
        .and_then(|()| file.seek(SeekFrom::Start(0)))
        .and_then(|_| file.write_all(left.as_bytes()))
        .and_then(|()| file.sync_all())
        .map_err(io_err(&at, "updating the re-copy requests"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_kept_once_in_order_until_served() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("out.jsonl");
        assert!(requested(&data).unwrap().is_empty());
        let a = ("public".to_string(), "a.b\n\"x\"".to_string());
        let b = ("Sales".to_string(), "Orders".to_string());
        request(&data, &[a.clone(), b.clone()]).unwrap();
        request(&data, std::slice::from_ref(&a)).unwrap();
        assert_eq!(requested(&data).unwrap(), vec![a.clone(), b.clone()]);
        served(&data, &a).unwrap();
        assert_eq!(requested(&data).unwrap(), vec![b.clone()]);
        // A torn last line (a crash while appending) is not a request.
        let mut f = OpenOptions::new()
            .append(true)
            .open(requests_path(&data))
            .unwrap();
        f.write_all(b"{\"schema\":\"pub").unwrap();
        assert_eq!(requested(&data).unwrap(), vec![b.clone()]);
        request(&data, std::slice::from_ref(&a)).unwrap();
        assert_eq!(
            requested(&data).unwrap(),
            vec![b, a],
            "a request after a torn line"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(requests_path(&data))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "private like the data file");
    }
}
