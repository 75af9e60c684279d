//! `videolisa propagate`: XMem++ alone on the user's masks of a few frames (XMem2's
//! `run_on_video`), every object in one memory, into an output folder with its run manifest.

use super::print_json;
use crate::device::DeviceSpec;
use crate::error::{Error, Result};
use crate::load::XMemSpec;
use crate::lock::FolderLock;
use crate::model::xmem::memory::MemoryConfig;
use crate::model::xmem::XMem;
use crate::output::{overlay_fps, OutputFormats};
use crate::propagate::given::{read_given, GivenMasks};
use crate::propagate::{object_dir, propagate, PropagateOptions, PropagateSummary};
use crate::run_manifest::{
    add_propagation, ensure_writable, fingerprint_files, prepare_replace, RunManifest,
};
use crate::shard::Shard;
use clap::Args;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Propagate your masks of a few frames through a video with XMem++ alone (as XMem2's
/// run_on_video): every object in one memory; each frame written with the first mask's palette.
#[derive(Args, Debug, Clone)]
pub struct PropagateArgs {
    /// An mp4, a y4m file, a folder of jpg/png frames, or `-` (a y4m stream on stdin).
    #[arg(long)]
    pub video: PathBuf,
    /// A folder of index PNGs named like their frames (`<frame>.png`; for a video also
    /// `frame_000042.png`): palette (P) PNGs as DAVIS ships them, or grayscale holding the
    /// labels; 0 is background, each other value one object.
    #[arg(long)]
    pub masks: PathBuf,
    /// Output folder: masks/<frame>.png (labels, coloured as the first mask), summary.json, the
    /// run manifest. A folder holding an earlier propagate run is replaced.
    #[arg(long)]
    pub out: PathBuf,
    /// Write into a non-empty folder that holds other files.
    #[arg(long)]
    pub force: bool,
    /// XMem++ weights: XMem.pth (or a safetensors copy), a folder holding it, or a hub id.
    #[arg(long, value_name = "PATH|HUB_ID")]
    pub xmem: String,
    /// Use only the local Hugging Face cache (also: HF_HUB_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    /// XMem2's memory settings.
    #[command(flatten)]
    pub memory: MemoryArgs,
    /// Also write object_<label>/<frame>.png, 0/255 per object.
    #[arg(long)]
    pub binary: bool,
    /// Also write overlay PNGs and an overlay mp4 of all objects.
    #[arg(long)]
    pub overlay: bool,
    /// Also write COCO RLE JSON per object (object_<label>/masks.rle.json).
    #[arg(long)]
    pub rle: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// XMem2's `VIDEO_INFERENCE_CONFIG` memory settings, with its defaults.
#[derive(Args, Debug, Clone)]
pub struct MemoryArgs {
    /// A working-memory frame every N frames.
    #[arg(long, default_value_t = 10, value_name = "N", value_parser = super::count::<100000>)]
    pub mem_every: usize,
    /// Memory elements each query pixel reads.
    #[arg(long, default_value_t = 30, value_name = "K", value_parser = super::count::<10000>)]
    pub top_k: usize,
    /// Working memory is consolidated when it holds this many frames.
    #[arg(long, default_value_t = 10, value_name = "N", value_parser = super::count::<10000>)]
    pub max_mid_term_frames: usize,
    /// Frames a consolidation keeps in working memory.
    #[arg(long, default_value_t = 5, value_name = "N", value_parser = super::count::<10000>)]
    pub min_mid_term_frames: usize,
    /// Long-term prototypes one consolidation makes.
    #[arg(long, default_value_t = 128, value_name = "N", value_parser = super::count::<1000000>)]
    pub num_prototypes: usize,
    /// Long-term memory cap, in elements.
    #[arg(long, default_value_t = 10000, value_name = "N", value_parser = super::count::<100000000>)]
    pub max_long_term_elements: usize,
}

impl MemoryArgs {
    /// The settings, checked against each other.
    pub fn config(&self) -> Result<MemoryConfig> {
        if self.min_mid_term_frames >= self.max_mid_term_frames {
            return Err(Error::Usage(format!(
                "--min-mid-term-frames ({}) must be below --max-mid-term-frames ({})",
                self.min_mid_term_frames, self.max_mid_term_frames
            )));
        }
        if self.num_prototypes >= self.max_long_term_elements {
            return Err(Error::Usage(format!(
                "--num-prototypes ({}) must be below --max-long-term-elements ({})",
                self.num_prototypes, self.max_long_term_elements
            )));
        }
        Ok(MemoryConfig {
            top_k: self.top_k,
            mem_every: self.mem_every,
            max_mid_term_frames: self.max_mid_term_frames,
            min_mid_term_frames: self.min_mid_term_frames,
            num_prototypes: self.num_prototypes,
            max_long_term_elements: self.max_long_term_elements,
        })
    }
}

impl PropagateArgs {
    /// Checks the options, the video and the masks, loads XMem, propagates, writes the summary.
    pub fn run(&self) -> Result<()> {
        let config = self.memory.config()?;
        let device = self.device.device()?;
        let (video, _spool) = super::segment::open_video(&self.video)?;
        let given = read_given(&self.masks, video.info())?;
        let xmem_path = XMemSpec {
            spec: self.xmem.clone(),
            offline: self.offline,
        }
        .resolve()?;
        ensure_writable(&self.out)?;
        let _lock = FolderLock::acquire(&self.out, "propagate", Shard::WHOLE)?;
        let mut manifest = self.manifest(&given, &config, &xmem_path, &device)?;
        let net = XMem::open(&xmem_path, &device)?;
        prepare_replace(&self.out, &mut manifest, self.force)?;
        let opts = PropagateOptions {
            config,
            binary: self.binary,
            formats: OutputFormats {
                mask_png: false,
                overlay_png: self.overlay,
                overlay_mp4: self.overlay.then(|| overlay_fps(video.info().fps)),
                rle: self.rle,
                ..OutputFormats::default()
            },
        };
        let mut summary = propagate(&net, &video, &given, &self.out, &opts)?;
        summary.video = self.video.display().to_string();
        crate::json::write_json(&self.out.join("summary.json"), &summary)?;
        manifest.finish(&self.out)?;
        self.report(&summary)
    }

    /// What decides the outputs (weights, masks, settings, device) and the entries written.
    fn manifest(
        &self,
        given: &GivenMasks,
        config: &MemoryConfig,
        xmem: &Path,
        device: &candle_core::Device,
    ) -> Result<RunManifest> {
        let mut settings = BTreeMap::from([
            (
                "masks".to_string(),
                fingerprint_files(given.files.values().cloned().collect())?,
            ),
            ("memory".to_string(), format!("{config:?}")),
            ("device".to_string(), crate::device::kind_name(device).to_string()),
        ]);
        let mut info = BTreeMap::from([
            ("video".to_string(), self.video.display().to_string()),
            ("masks_path".to_string(), self.masks.display().to_string()),
        ]);
        add_propagation(&mut settings, &mut info, xmem)?;
        let mut m = RunManifest::new("propagate", settings, info);
        let mut labels = [false; 256];
        for mask in given.masks.values() {
            mask.as_raw().iter().for_each(|&l| labels[l as usize] = true);
        }
        m.entries = ["masks", "overlay", "overlay.mp4", "summary.json"]
            .map(String::from)
            .to_vec();
        m.entries
            .extend((1..=255u8).filter(|&l| labels[l as usize]).map(object_dir));
        Ok(m)
    }

    fn report(&self, s: &PropagateSummary) -> Result<()> {
        if self.json {
            print_json(s)?;
        } else {
            println!(
                "{} frames of {} ({}x{}): objects {:?} from masks of frames {:?}; {} consolidation(s); \
                 {:.1} s (XMem++ {:.1} s)\nmasks: {}",
                s.frames,
                s.video,
                s.width,
                s.height,
                s.objects,
                s.given_frames,
                s.consolidations,
                s.seconds.total,
                s.seconds.xmem,
                self.out.join("masks").display()
            );
        }
        super::report_warnings(&s.warnings, &self.out)
    }
}
