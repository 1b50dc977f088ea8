//! The guest SDK: write a PLB probe in Rust as a few lines over the `plb:probe` WIT contract.
//!
//! A probe is a WebAssembly component that PLB's sandbox runs beside a node to
//! measure it. This crate hides the generated bindings behind an idiomatic API:
//! implement [`Probe`], export it with [`export_probe!`], read your settings from
//! the [`Context`], measure with [`http`], [`tcp_connect`] or plain Rust code, and
//! return a [`Report`] of metrics or a [`Failure`].
//!
//! ```
//! use plb_guest_sdk::{export_probe, http, Context, Failure, Probe, Report};
//!
//! struct Health;
//!
//! impl Probe for Health {
//!     fn run(ctx: Context) -> Result<Report, Failure> {
//!         let path = ctx.config_or("path", "/health");
//!         let response = http::get(path)?; // a connection error counts against the node
//!         if response.status != 200 {
//!             return Err(Failure::unhealthy(format!("{path} answered {}", response.status)));
//!         }
//!         Ok(Report::new()
//!             .metric("http-total-ms", response.total_ms)
//!             .metric("http-status", response.status))
//!     }
//! }
//!
//! export_probe!(Health);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` from a crate of
//! `crate-type = ["cdylib"]`; the `.wasm` file is the component to upload.
//!
//! Outside the sandbox (in a host-side unit test, say) the host functions are
//! not there: [`http`] and [`tcp_connect`] return [`Error::NotInSandbox`] and
//! [`log`] writes to stderr, so the logic of a probe can still be tested natively.

#![deny(missing_docs)]

mod context;
mod failure;
pub mod http;
pub mod log;
mod report;

pub use context::{Context, Target};
pub use failure::{Error, Failure, ResultExt};
pub use report::{Metric, Report, is_kebab_case};

/// Time to open a TCP connection to the node's address, in milliseconds,
/// measured by the host. An `Err` means no connection (refused, timed out).
///
/// ```no_run
/// # fn f() -> Result<(), plb_guest_sdk::Failure> {
/// let connect_ms = plb_guest_sdk::tcp_connect(1_000)?; // refused counts against the node
/// # Ok(())
/// # }
/// ```
pub fn tcp_connect(timeout_ms: u32) -> Result<f64, Error> {
    #[cfg(target_arch = "wasm32")]
    {
        wit::plb::probe::host::tcp_connect(timeout_ms).map_err(Error::Tcp)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = timeout_ms;
        Err(Error::NotInSandbox("tcp-connect"))
    }
}

/// The raw bindings generated from `wit/probe.wit` (world `plb:probe/probe`).
///
/// Not part of the public API: use the wrappers of this crate instead.
#[doc(hidden)]
#[allow(unsafe_code, missing_docs, clippy::all)]
pub mod wit {
    wit_bindgen::generate!({
        path: "wit",
        world: "probe",
        pub_export_macro: true,
        export_macro_name: "__plb_export_probe_world",
        default_bindings_module: "plb_guest_sdk::wit",
    });
}

/// A probe: one measurement of one node, run by PLB's sandbox.
///
/// `run` gets the run's [`Context`] (the target node, the probe's config, the
/// time budget) and returns either a [`Report`] of metrics or a [`Failure`]:
/// [`Failure::Unhealthy`] when the node failed the check, [`Failure::Broken`]
/// when the probe itself could not do its job. Export the type with
/// [`export_probe!`].
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a PLB probe: it does not implement `plb_guest_sdk::Probe`",
    label = "this type must implement `plb_guest_sdk::Probe`",
    note = "add `impl plb_guest_sdk::Probe for {Self} {{ fn run(ctx: Context) -> Result<Report, Failure> {{ ... }} }}`"
)]
pub trait Probe {
    /// Run the probe once against `ctx.target()`.
    fn run(ctx: Context) -> Result<Report, Failure>;
}

/// Export a type implementing [`Probe`] as the component's `run` function.
///
/// Use it once, at the top level of a `cdylib` crate:
///
/// ```
/// use plb_guest_sdk::{export_probe, Context, Failure, Probe, Report};
///
/// struct Trivial;
///
/// impl Probe for Trivial {
///     fn run(_ctx: Context) -> Result<Report, Failure> {
///         Ok(Report::new().metric("answer-count", 42))
///     }
/// }
///
/// export_probe!(Trivial);
/// ```
///
/// A type that does not implement [`Probe`] is a compile error that says so:
///
/// ```compile_fail,E0277
/// struct NotAProbe;
/// plb_guest_sdk::export_probe!(NotAProbe);
/// ```
#[macro_export]
macro_rules! export_probe {
    ($probe:ty) => {
        const _: () = {
            // Checked first, so that a wrong type gives one clear error.
            const fn __plb_assert_probe<P: $crate::Probe>() {}
            __plb_assert_probe::<$probe>();

            struct __PlbProbeExport;

            impl $crate::wit::Guest for __PlbProbeExport {
                fn run(
                    ctx: $crate::wit::plb::probe::types::Context,
                ) -> ::core::result::Result<
                    $crate::wit::plb::probe::types::Report,
                    $crate::wit::plb::probe::types::Failure,
                > {
                    $crate::__private::run::<$probe>(ctx)
                }
            }

    $crate::wit::__plb_export_probe_world!(__PlbProbeExport with_types_in $crate::wit);
        };
    };
}

/// Glue used by [`export_probe!`]; not part of the public API.
#[doc(hidden)]
pub mod __private {
    use crate::wit::plb::probe::types as raw;
    use crate::{Context, Failure, Probe};

    /// Convert the raw context, run the probe, convert its result back.
    pub fn run<P: Probe>(ctx: raw::Context) -> Result<raw::Report, raw::Failure> {
        match P::run(Context::from_raw(ctx)) {
            Ok(report) => Ok(report.into_raw()),
            Err(Failure::Unhealthy(message)) => Err(raw::Failure::Unhealthy(message)),
            Err(Failure::Broken(message)) => Err(raw::Failure::Broken(message)),
        }
    }
}

/// The Rust examples of `README.md` (the guide to writing probes), compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
