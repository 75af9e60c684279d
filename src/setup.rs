//! A model run's setup, one place for `segment`, `batch`, `eval` (and any later subcommand that
//! loads models): open the device, resolve the weights (downloading when allowed), record what
//! decides the outputs in a run manifest, then load VideoLISA and XMem++ once. The steps are
//! separate so that each command checks its output folder against the manifest before the
//! expensive load, or after it where that is its rule.

use crate::error::Result;
use crate::load::{load_resolved, LoadSpec, XMemSpec};
use crate::model::videolisa::{LoadOptions, ModelPaths, VideoLisa};
use crate::model::xmem::XMem;
use crate::run_manifest::{add_propagation, model_settings, RunManifest};
use std::path::PathBuf;
use std::sync::Arc;

/// What a run will load, and the manifest that says what its outputs are made with.
#[derive(Debug, Clone)]
pub struct RunSetup {
    /// The checkpoint and CLIP folders, resolved.
    pub paths: ModelPaths,
    /// Dtypes and the opened device.
    pub options: LoadOptions,
    /// XMem++'s weight file, for post-optimization runs.
    pub xmem: Option<PathBuf>,
    /// The run manifest (settings that decide the outputs, where things came from); commands
    /// add their own settings and entries before writing it.
    pub manifest: RunManifest,
}

/// The loaded networks of a run.
pub struct Models {
    /// VideoLISA (CLIP, Phi-3, SAM).
    pub videolisa: VideoLisa,
    /// XMem++ on the same device, when propagating.
    pub xmem: Option<Arc<XMem>>,
}

impl RunSetup {
    /// Opens the device and resolves what a `command` run with `n_sparse`/`n_dense` sampling
    /// loads; the manifest records the checkpoints' fingerprints, dtypes, device kind,
    /// sampling and XMem's weights.
    pub fn new(
        command: &str,
        load: &LoadSpec,
        xmem: Option<&XMemSpec>,
        n_sparse: usize,
        n_dense: usize,
    ) -> Result<Self> {
        let options = load.options()?;
        let paths = load.resolve()?;
        let (mut settings, mut info) = model_settings(&paths, &options, n_sparse, n_dense)?;
        let xmem = xmem.map(XMemSpec::resolve).transpose()?;
        if let Some(x) = &xmem {
            add_propagation(&mut settings, &mut info, x)?;
        }
        Ok(RunSetup {
            paths,
            options,
            xmem,
            manifest: RunManifest::new(command, settings, info),
        })
    }

    /// Loads VideoLISA, and XMem++ onto its device when the run propagates.
    pub fn load(&self) -> Result<Models> {
        let videolisa = load_resolved(&self.paths, self.options.clone())?;
        let xmem = self
            .xmem
            .as_deref()
            .map(|p| XMem::open(p, &videolisa.options.device).map(Arc::new))
            .transpose()?;
        Ok(Models { videolisa, xmem })
    }
}
