//! Test probe `misbehave`: misbehaves on purpose, as its config key `mode` says.
//!
//! One guest covers the sandbox's limit tests; where a limit can be obeyed or
//! broken, an optional bound turns the misbehaviour into a well-behaved run
//! (`spin` with `ms`, `alloc` with `mib`, `recurse` with `depth`).
//!
//! | `mode` | does | extra config |
//! | --- | --- | --- |
//! | `ok` (default) | returns `ok-count` = 1 | |
//! | `spin` | busy loop forever, or for `ms` then `spun-ms` | `ms` |
//! | `alloc` | grows memory 1 MiB at a time until allocation fails (abort), or up to `mib` then `allocated-mib` | `mib` |
//! | `recurse` | unbounded recursion (stack overflow), or to `depth` then `depth-count` | `depth` |
//! | `panic` | panics | |
//! | `metrics-flood` | returns `count` metrics | `count` (10000) |
//! | `metrics-alias` | returns `count` metrics whose names all point at one buffer of `kib` KiB: little guest memory, `count` x `kib` KiB for the host to copy | `count` (1000), `kib` (1024) |
//! | `log-flood` | writes `mib` MiB of text to `via`, then `logged-bytes` | `mib` (4), `via` = `stdout`, `stderr`, `log`, `all` (default) |
//! | `sleep` | `std::thread::sleep` for `ms`, then `slept-ms` | `ms` (60000) |
//! | `read-file` | `std::fs::read(path)`: `Broken` with the error, or `leaked-bytes` | `path` (`/etc/passwd`) |
//! | `env` | `env-vars` = the number of environment variables visible | |
//! | `socket` | `std::net::TcpStream::connect(addr)`: `Broken` with the error, or `connected` = 1 | `addr` (`127.0.0.1:80`) |
//! | `http-elsewhere` | host `http` with `url` as the path: `Broken` with the host's error, or `reached` = 1 and `http-status` | `url` (`http://127.0.0.1:1/`) |
//! | `nan` / `inf` | returns a NaN / infinite metric | |
//! | `unhealthy` / `broken` | returns that failure | |

use std::hint::black_box;
use std::io::Write;
use std::time::{Duration, Instant};

use plb_guest_sdk::{Context, Failure, Probe, Report, export_probe, http, log};

struct Misbehave;

const MIB: usize = 1024 * 1024;

fn spin(ms: Option<u64>) -> Report {
    let start = Instant::now();
    let mut counter = 0u64;
    loop {
        counter = black_box(counter.wrapping_add(1));
        if let Some(ms) = ms {
            // Check the clock only now and then: the loop stays CPU-bound.
            if counter.is_multiple_of(4096) && start.elapsed() >= Duration::from_millis(ms) {
                return Report::new().metric("spun-ms", start.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
}

fn alloc(mib: Option<usize>) -> Report {
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    loop {
        if mib.is_some_and(|limit| chunks.len() >= limit) {
            return Report::new().metric("allocated-mib", chunks.len() as f64);
        }
        // Non-zero fill, so every page is really touched.
        chunks.push(black_box(vec![0x5a; MIB]));
    }
}

/// `count` metrics whose names all alias one leaked buffer of `len` bytes of `a`: the
/// guest spends `len` bytes, the host is asked to copy `count * len`.
///
/// The names are `String`s sharing one allocation, which Rust forbids; this probe exists
/// to break rules. The run never frees them: the host refuses the result before the
/// guest's post-return (which would free each name) runs.
#[allow(unsafe_code)]
fn metrics_alias(count: usize, len: usize) -> Report {
    let buf: &'static mut [u8] = Box::leak(vec![b'a'; len].into_boxed_slice());
    let ptr = buf.as_mut_ptr();
    let mut report = Report::new();
    for _ in 0..count {
        // SAFETY: not safe, on purpose (see above): every name aliases `buf`, which is
        // leaked, valid UTF-8 and `len` bytes long, and is never written again.
        let name = unsafe { String::from_raw_parts(ptr, len, len) };
        report.push(name, 1.0);
    }
    report
}

/// Recurse `depth` levels (forever when `None`) with a frame the optimiser
/// cannot remove; returns the depth reached.
#[inline(never)]
fn recurse(level: u64, depth: Option<u64>) -> u64 {
    let frame = black_box([level as u8; 256]);
    if depth.is_some_and(|d| level >= d) {
        return level;
    }
    let deeper = recurse(black_box(level + 1), depth);
    // Using the frame after the call keeps it alive: no tail call.
    black_box(&frame);
    deeper
}

fn log_flood(mib: usize, via: &str) -> Result<Report, Failure> {
    let (stdout, stderr, host) = match via {
        "stdout" => (true, false, false),
        "stderr" => (false, true, false),
        "log" => (false, false, true),
        "all" => (true, true, true),
        other => {
            return Err(Failure::broken(format!(
                "config `via`: {other:?} is not stdout, stderr, log or all"
            )));
        }
    };
    let line = format!("{}\n", "flood ".repeat(170)); // 1021 bytes
    let mut written = 0usize;
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    while written < mib * MIB {
        // Errors are ignored on purpose: the host may cut the streams off,
        // and classifying that is the sandbox's job.
        if stdout {
            let _ = out.write_all(line.as_bytes());
        }
        if stderr {
            let _ = err.write_all(line.as_bytes());
        }
        if host {
            log::info(&line);
        }
        written += line.len();
    }
    Ok(Report::new().metric("logged-bytes", written as f64))
}

/// Config `key` parsed as a `T`, or `None` when it is not set.
fn optional<T: std::str::FromStr>(ctx: &Context, key: &str) -> Result<Option<T>, Failure>
where
    T::Err: std::fmt::Display,
{
    ctx.config(key)
        .map(|value| {
            value.trim().parse::<T>().map_err(|e| {
                Failure::broken(format!("config `{key}`: cannot parse {value:?}: {e}"))
            })
        })
        .transpose()
}

impl Probe for Misbehave {
    fn run(ctx: Context) -> Result<Report, Failure> {
        match ctx.config_or("mode", "ok") {
            "ok" => Ok(Report::new().metric("ok-count", 1.0)),
            "spin" => Ok(spin(optional(&ctx, "ms")?)),
            "alloc" => Ok(alloc(optional(&ctx, "mib")?)),
            "recurse" => {
                let reached = recurse(0, optional(&ctx, "depth")?);
                Ok(Report::new().metric("depth-count", reached as f64))
            }
            "panic" => panic!("misbehave: panic on request"),
            "metrics-flood" => {
                let count: usize = ctx.config_parse("count", 10_000)?;
                let mut report = Report::new();
                for i in 0..count {
                    report.push(format!("flood-{i}-count"), i as f64);
                }
                Ok(report)
            }
            "metrics-alias" => Ok(metrics_alias(
                ctx.config_parse("count", 1_000)?,
                ctx.config_parse::<usize>("kib", 1024)?.saturating_mul(1024),
            )),
            "log-flood" => log_flood(ctx.config_parse("mib", 4)?, ctx.config_or("via", "all")),
            "sleep" => {
                let ms: u64 = ctx.config_parse("ms", 60_000)?;
                let start = Instant::now();
                std::thread::sleep(Duration::from_millis(ms));
                Ok(Report::new().metric("slept-ms", start.elapsed().as_secs_f64() * 1e3))
            }
            "read-file" => {
                let path = ctx.config_or("path", "/etc/passwd");
                match std::fs::read(path) {
                    Ok(bytes) => Ok(Report::new().metric("leaked-bytes", bytes.len() as f64)),
                    Err(e) => Err(Failure::broken(format!("read {path}: {e}"))),
                }
            }
            "env" => Ok(Report::new().metric("env-vars", std::env::vars_os().count() as f64)),
            "socket" => {
                let addr = ctx.config_or("addr", "127.0.0.1:80");
                match std::net::TcpStream::connect(addr) {
                    Ok(_) => Ok(Report::new().metric("connected", 1.0)),
                    Err(e) => Err(Failure::broken(format!("connect {addr}: {e}"))),
                }
            }
            "http-elsewhere" => {
                let url = ctx.config_or("url", "http://127.0.0.1:1/");
                match http::Request::get(url).timeout_ms(1_000).send() {
                    Ok(response) => Ok(Report::new()
                        .metric("reached", 1.0)
                        .metric("http-status", response.status)),
                    Err(e) => Err(Failure::broken(format!("host refused: {e}"))),
                }
            }
            "nan" => Ok(Report::new().metric("nan-value", f64::NAN)),
            "inf" => Ok(Report::new().metric("inf-value", f64::INFINITY)),
            "unhealthy" => Err(Failure::unhealthy("misbehave: unhealthy on request")),
            "broken" => Err(Failure::broken("misbehave: broken on request")),
            other => Err(Failure::broken(format!(
                "config `mode`: unknown mode {other:?}"
            ))),
        }
    }
}

export_probe!(Misbehave);

#[cfg(test)]
mod tests {
    use super::*;

    fn run(pairs: &[(&str, &str)]) -> Result<Report, Failure> {
        let ctx = pairs
            .iter()
            .fold(Context::new("n", "127.0.0.1:1", 5_000), |ctx, (k, v)| {
                ctx.with_config(*k, *v)
            });
        Misbehave::run(ctx)
    }

    #[test]
    fn bounded_modes_behave() {
        assert_eq!(run(&[]).expect("ok").get("ok-count"), Some(1.0));
        let spun = run(&[("mode", "spin"), ("ms", "20")]).expect("spin");
        assert!(spun.get("spun-ms").is_some_and(|ms| ms >= 20.0));
        let alloc = run(&[("mode", "alloc"), ("mib", "3")]).expect("alloc");
        assert_eq!(alloc.get("allocated-mib"), Some(3.0));
        let deep = run(&[("mode", "recurse"), ("depth", "100")]).expect("recurse");
        assert_eq!(deep.get("depth-count"), Some(100.0));
        let slept = run(&[("mode", "sleep"), ("ms", "5")]).expect("sleep");
        assert!(slept.get("slept-ms").is_some_and(|ms| ms >= 5.0));
    }

    #[test]
    fn output_modes() {
        assert_eq!(
            run(&[("mode", "metrics-flood")]).expect("flood").len(),
            10_000
        );
        assert_eq!(
            run(&[("mode", "metrics-flood"), ("count", "3")])
                .expect("flood")
                .len(),
            3
        );
        let logged = run(&[("mode", "log-flood"), ("mib", "0")]).expect("no flood");
        assert_eq!(logged.get("logged-bytes"), Some(0.0));
        assert!(matches!(
            run(&[("mode", "log-flood"), ("via", "pipe")]),
            Err(Failure::Broken(_))
        ));
        assert!(
            run(&[("mode", "nan")])
                .expect("nan")
                .get("nan-value")
                .is_some_and(f64::is_nan)
        );
        assert!(
            run(&[("mode", "inf")])
                .expect("inf")
                .get("inf-value")
                .is_some_and(f64::is_infinite)
        );
    }

    #[test]
    fn verdicts_and_bad_config() {
        assert!(matches!(
            run(&[("mode", "unhealthy")]),
            Err(Failure::Unhealthy(_))
        ));
        assert!(matches!(
            run(&[("mode", "broken")]),
            Err(Failure::Broken(_))
        ));
        assert!(
            matches!(run(&[("mode", "nope")]), Err(Failure::Broken(m)) if m.contains("unknown mode"))
        );
        assert!(
            matches!(run(&[("mode", "spin"), ("ms", "soon")]), Err(Failure::Broken(m)) if m.starts_with("config `ms`"))
        );
        // Outside the sandbox there is no host to refuse, only an error.
        assert!(
            matches!(run(&[("mode", "http-elsewhere")]), Err(Failure::Broken(m)) if m.starts_with("host refused"))
        );
    }
}
