//! A throwaway PostgreSQL server for tests: `scripts/pg-temp.sh` (Debian's server in a
//! temporary directory, on a unix socket there, run as an unprivileged user) started as
//! a child whose standard input this process holds. Dropping the [`PgServer`] closes it,
//! and so does this process ending in any way (a `static` server, a panic, `kill -9`):
//! the script then stops the server and removes its directory. Tests that need
//! PostgreSQL never skip: if it cannot start, [`PgServer::start`] fails.
//!
//! One server per test binary is the intent (`shared()`); each test takes a database of
//! its own ([`PgServer::create_database`], a `CREATE DATABASE`, a few ms).
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};

use crate::process::workspace_root;

/// A running throwaway PostgreSQL server.
#[derive(Debug)]
pub struct PgServer {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Its socket directory.
    pub socket_dir: String,
    /// Its port (the socket file's number).
    pub port: u16,
}

static SHARED: OnceLock<PgServer> = OnceLock::new();
static NEXT_DB: AtomicU64 = AtomicU64::new(0);

impl PgServer {
    /// Starts a server (1 to 3 s: initdb, start, `createdb plb`).
    pub fn start() -> Result<PgServer> {
        let script = workspace_root().join("scripts/pg-temp.sh");
        let mut child = Command::new("bash")
            .arg(&script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {}", script.display()))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("the script's stdout")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .context("reading the script's URL")?;
        let url = line.trim().to_string();
        if url.is_empty() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            let _ = child.wait();
            bail!("scripts/pg-temp.sh did not start PostgreSQL: {err}");
        }
        let (socket_dir, port) = parse_socket_url(&url)
            .with_context(|| format!("unexpected URL from pg-temp.sh: {url}"))?;
        Ok(PgServer {
            child,
            stdin,
            socket_dir,
            port,
        })
    }

    /// The one server of this test binary, started on first use. It stays up until the
    /// process ends (statics are never dropped; the script notices its stdin close).
    /// Blocking: call it from a blocking thread or `block_in_place`.
    pub fn shared() -> Result<&'static PgServer> {
        if let Some(s) = SHARED.get() {
            return Ok(s);
        }
        let started = PgServer::start()?;
        // Another thread may have won the race: its server is kept, ours dropped.
        Ok(SHARED.get_or_init(|| started))
    }

    /// The URL of database `db` on this server.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgresql:///{db}?host={}&port={}&user=plb",
            self.socket_dir, self.port
        )
    }

    /// Creates a new empty database and answers its URL.
    pub async fn create_database(&self) -> Result<String> {
        let name = format!(
            "t{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::Relaxed)
        );
        let (client, conn) = tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
            .await
            .context("connecting to the test server")?;
        let task = tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .with_context(|| format!("CREATE DATABASE {name}"))?;
        drop(client);
        let _ = task.await;
        Ok(self.url(&name))
    }
}

impl PgServer {
    /// Stops the server (fast shutdown: open connections are cut), keeping its data;
    /// [`Self::start_server`] starts it again on the same socket and port.
    pub fn stop_server(&self) -> Result<()> {
        self.pg_ctl(&["-m", "fast", "-w", "-t", "30", "stop"])
    }

    /// Starts the server again after [`Self::stop_server`], as pg-temp.sh started it.
    pub fn start_server(&self) -> Result<()> {
        let opts = format!(
            "-k {} -p {} -c listen_addresses='' -c fsync=off -c full_page_writes=off \
             -c max_connections=300 -c shared_buffers=128MB",
            self.socket_dir, self.port
        );
        let log = format!("{}/server.log", self.socket_dir);
        self.pg_ctl(&["-l", &log, "-w", "-t", "60", "-o", &opts, "start"])
    }

    /// Runs `pg_ctl -D DATA ARGS` as the server's user (the `postgres` user when root).
    fn pg_ctl(&self, args: &[&str]) -> Result<()> {
        let bin = ["15", "16", "17", "14", "13"]
            .iter()
            .map(|v| format!("/usr/lib/postgresql/{v}/bin"))
            .find(|b| std::path::Path::new(&format!("{b}/pg_ctl")).exists())
            .context("no pg_ctl under /usr/lib/postgresql")?;
        let data = format!("{}/data", self.socket_dir);
        let pg_ctl = format!("{bin}/pg_ctl");
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", &pg_ctl]);
            c
        } else {
            Command::new(&pg_ctl)
        };
        let out = cmd
            .current_dir(&self.socket_dir)
            .args(["-D", &data])
            .args(args)
            .output()
            .context("running pg_ctl")?;
        if !out.status.success() {
            bail!(
                "pg_ctl {args:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}

/// Whether this process runs as root.
fn is_root() -> bool {
    crate::process::proc_status("Uid").is_some_and(|u| u == "0")
}

/// The socket directory and port of a URL printed by pg-temp.sh.
fn parse_socket_url(url: &str) -> Option<(String, u16)> {
    let (_, query) = url.split_once('?')?;
    let mut host = None;
    let mut port = 5432;
    for kv in query.split('&') {
        match kv.split_once('=') {
            Some(("host", h)) => host = Some(h.to_string()),
            Some(("port", p)) => port = p.parse().ok()?,
            _ => {}
        }
    }
    Some((host?, port))
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // EOF on the script's stdin: it stops the server and removes the directory.
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_urls_parse() {
        assert_eq!(
            parse_socket_url("postgresql:///plb?host=/tmp/plb-pg.x&port=5433&user=plb"),
            Some(("/tmp/plb-pg.x".to_string(), 5433))
        );
        assert_eq!(parse_socket_url("postgresql:///plb"), None);
    }

    /// A server starts, takes a database, and is gone (directory removed) once dropped.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_server_starts_serves_and_cleans_up() {
        let pg = tokio::task::spawn_blocking(PgServer::start)
            .await
            .expect("task")
            .expect("PostgreSQL starts");
        let url = pg.create_database().await.expect("database");
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(conn);
        let row = client.query_one("SELECT 40 + 2", &[]).await.expect("query");
        assert_eq!(row.get::<_, i32>(0), 42);
        drop(client);
        let dir = pg.socket_dir.clone();
        tokio::task::spawn_blocking(move || drop(pg))
            .await
            .expect("drop");
        assert!(!std::path::Path::new(&dir).exists(), "{dir} is left behind");
    }
}
