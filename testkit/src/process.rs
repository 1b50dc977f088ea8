//! Child processes of tests: locating binaries (`plb`, HAProxy), a child with a log file
//! that is killed when dropped ([`Proc`]), a bare kill-on-drop guard, HAProxy in the
//! foreground, and per-test directories.
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// `target/<profile>/plb`, found from the running test executable
/// (`target/<profile>/deps/<test>-<hash>`), for tests of crates other than `plb` (which
/// use `env!("CARGO_BIN_EXE_plb")`). Build it first (`cargo build --workspace`).
pub fn plb_bin() -> PathBuf {
    built_plb_bin().unwrap_or_else(|| {
        panic!(
            "target/<profile>/plb not found beside {:?}: run `cargo build --workspace` (or `cargo build -p plb`) before the end-to-end tests",
            std::env::current_exe().ok()
        )
    })
}

/// [`plb_bin`] when it has been built (benchmarks that can do without it say so).
pub fn built_plb_bin() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    // target/<profile>/deps/<test>-<hash> -> target/<profile>/plb
    let profile_dir = exe.parent()?.parent()?;
    let bin = profile_dir.join(format!("plb{}", std::env::consts::EXE_SUFFIX));
    bin.is_file().then_some(bin)
}

/// `bin` on `PATH` (or in `/usr/sbin`, `/sbin`, where Debian puts daemons like HAProxy).
pub fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
        .map(|d| Path::new(d).join(bin))
        .find(|p| p.is_file())
}

/// HAProxy (`haproxy`, found with [`which`]) in the foreground (`-db`) on the config
/// file `cfg`, stdout discarded, stderr as given; killed when the handle is dropped.
pub fn spawn_haproxy(haproxy: &Path, cfg: &Path, stderr: Stdio) -> tokio::process::Child {
    tokio::process::Command::new(haproxy)
        .arg("-db")
        .arg("-f")
        .arg(cfg)
        .stdout(Stdio::null())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .expect("start haproxy")
}

/// Kills the child (and reaps it) when dropped, also when the test panics.
#[derive(Debug)]
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A child process whose stdout and stderr go to a log file; killed when dropped.
#[derive(Debug)]
pub struct Proc {
    /// What it is, for messages.
    pub name: String,
    child: Option<Child>,
    /// Its log file (stdout and stderr, appended).
    pub log: PathBuf,
}

impl Proc {
    /// Starts `program <args>` with `envs` added to the environment, stdin closed,
    /// appending its output to `log`.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        envs: &[(&str, String)],
        log: &Path,
    ) -> Result<Proc> {
        let out = File::options().create(true).append(true).open(log)?;
        let err = out.try_clone()?;
        let mut cmd = Command::new(program);
        cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        Ok(Proc {
            name: name.to_string(),
            child: Some(child),
            log: log.to_path_buf(),
        })
    }

    /// Process id (0 once it was killed or terminated).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Its exit status if it has exited on its own.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// Whether it is still running.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// `kill -9`: no chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits up to `within` for a clean exit; returns its exit status.
    pub fn terminate(&mut self, within: Duration) -> Result<ExitStatus> {
        let Some(mut c) = self.child.take() else {
            bail!("{} is not running", self.name)
        };
        let st = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()?;
        if !st.success() {
            bail!("kill -TERM {} failed", c.id());
        }
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = c.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                bail!(
                    "{} did not exit within {within:?} of SIGTERM; log:\n{}",
                    self.name,
                    self.log_tail(4000)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Resident memory, from `/proc/<pid>/status`.
    pub fn rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let kib: u64 = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        Some(kib * 1024)
    }

    /// The last `bytes` of its log.
    pub fn log_tail(&self, bytes: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut at = text.len().saturating_sub(bytes);
        while !text.is_char_boundary(at) {
            at += 1;
        }
        text[at..].to_string()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A temporary directory for one test, kept (and its path printed) when `PLB_TEST_KEEP`
/// is set, for reading the logs of its processes after a failure.
pub fn test_dir(name: &str) -> tempfile::TempDir {
    let mut dir = tempfile::Builder::new()
        .prefix(&format!("plb-{name}-"))
        .tempdir()
        .expect("tempdir");
    if std::env::var_os("PLB_TEST_KEEP").is_some() {
        dir.disable_cleanup(true);
        eprintln!("{name}: keeping {}", dir.path().display());
    }
    dir
}

/// The first value of `field` (e.g. `VmRSS`, `Uid`) in this process's
/// `/proc/self/status` (Linux).
pub fn proc_status(field: &str) -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status
        .lines()
        .find(|l| l.split_once(':').is_some_and(|(k, _)| k == field))?;
    line.split_whitespace().nth(1).map(str::to_string)
}
