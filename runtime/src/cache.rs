//! The compiled-component cache: an `InstancePre` per (module sha256, engine) in memory,
//! and precompiled artifacts on disk keyed by sha256 and the engine's compatibility hash,
//! so a repeat run never recompiles and a restart does not either.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use wasmtime::component::Component;

use crate::RuntimeError;
use crate::bindings::ProbePre;
use crate::engine::EngineSlot;
use crate::host::RunState;

#[derive(Default)]
pub(crate) struct Cache {
    compiled: Mutex<HashMap<(String, bool), ProbePre<RunState>>>,
}

impl Cache {
    pub(crate) fn get(&self, sha256: &str, metered: bool) -> Option<ProbePre<RunState>> {
        self.compiled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&(sha256.to_string(), metered))
            .cloned()
    }

    pub(crate) fn insert(&self, sha256: &str, metered: bool, pre: ProbePre<RunState>) {
        self.compiled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert((sha256.to_string(), metered), pre);
    }

    pub(crate) fn len(&self) -> usize {
        self.compiled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }
}

/// Checks the bytes are a component before handing them to the compiler, so the
/// common mistakes get a message that says what to do.
pub(crate) fn check_header(wasm: &[u8]) -> Result<(), RuntimeError> {
    if wasm.is_empty() {
        return Err(RuntimeError::Invalid("empty module: no bytes".into()));
    }
    if wasm.len() < 8 || &wasm[..4] != b"\0asm" {
        return Err(RuntimeError::Invalid(
            "not a WebAssembly file: missing the \\0asm magic header".into(),
        ));
    }
    // The version/layer field after the magic: 1.0 for core modules, 0x0d/layer 1 for
    // components.
    const COMPONENT: [u8; 4] = [0x0d, 0x00, 0x01, 0x00];
    const CORE: [u8; 4] = [0x01, 0x00, 0x00, 0x00];
    if wasm[4..8] != COMPONENT {
        if wasm[4..8] == CORE {
            return Err(RuntimeError::Invalid(
                "a core WebAssembly module, not a component: build for wasm32-wasip2 \
                 (or wrap it with `wasm-tools component new`)"
                    .into(),
            ));
        }
        return Err(RuntimeError::Invalid(
            "unsupported WebAssembly version or layer: expected a component".into(),
        ));
    }
    Ok(())
}

/// Compiles (or loads from disk) and links a component against the probe world.
pub(crate) fn prepare(
    slot: &EngineSlot,
    cache_dir: Option<&Path>,
    sha256: &str,
    wasm: &[u8],
) -> Result<ProbePre<RunState>, RuntimeError> {
    check_header(wasm)?;
    let component = match cache_dir {
        Some(dir) => load_or_compile(slot, dir, sha256, wasm)?,
        None => compile(slot, wasm)?,
    };
    link(slot, &component)
}

fn compile(slot: &EngineSlot, wasm: &[u8]) -> Result<Component, RuntimeError> {
    Component::new(&slot.engine, wasm)
        .map_err(|e| RuntimeError::Invalid(format!("malformed component: {e:#}")))
}

fn link(slot: &EngineSlot, component: &Component) -> Result<ProbePre<RunState>, RuntimeError> {
    let pre = slot.linker.instantiate_pre(component).map_err(|e| {
        RuntimeError::Invalid(format!(
            "not a component of the {} world: {e:#}",
            crate::WORLD
        ))
    })?;
    ProbePre::new(pre).map_err(|e| {
        RuntimeError::Invalid(format!(
            "not a component of the {} world (it must export `run: func(ctx: context) -> result<report, failure>`): {e:#}",
            crate::WORLD
        ))
    })
}

fn artifact_path(slot: &EngineSlot, dir: &Path, sha256: &str) -> PathBuf {
    dir.join(format!("{sha256}-{}.cwasm", slot.compat))
}

fn load_or_compile(
    slot: &EngineSlot,
    dir: &Path,
    sha256: &str,
    wasm: &[u8],
) -> Result<Component, RuntimeError> {
    let path = artifact_path(slot, dir, sha256);
    if path.exists() {
        match deserialize(slot, &path) {
            Ok(c) => return Ok(c),
            Err(e) => {
                tracing::warn!(path = %path.display(), "ignoring unusable cached artifact: {e:#}")
            }
        }
    }
    let component = compile(slot, wasm)?;
    // The cache only saves the next start a compile: failing to write it fails nothing.
    if let Err(e) = store_artifact(&component, dir, &path) {
        tracing::warn!(path = %path.display(), "cannot cache the compiled artifact: {e:#}");
    }
    Ok(component)
}

/// Distinguishes the temporary files of concurrent writers in one process.
static NEXT_TMP: AtomicU64 = AtomicU64::new(0);

/// Writes `component`'s artifact to `path` atomically: into a temporary file of this
/// writer's own (several runs of one module may compile it at once), then renamed.
fn store_artifact(component: &Component, dir: &Path, path: &Path) -> wasmtime::Result<()> {
    let bytes = component.serialize()?;
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension(format!(
        "tmp{}-{}",
        std::process::id(),
        NEXT_TMP.fetch_add(1, Ordering::Relaxed)
    ));
    let written = std::fs::write(&tmp, &bytes).and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    Ok(written?)
}

#[allow(unsafe_code)]
fn deserialize(slot: &EngineSlot, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: the file lives in our own cache directory, was written by `serialize` of an
    // engine with the same compatibility hash (part of its name) and moved into place
    // atomically; wasmtime additionally checks the header and engine compatibility.
    unsafe { Component::deserialize_file(&slot.engine, path) }
}
