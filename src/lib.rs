//! videolisa: segment the object a sentence describes in every frame of a video.
//!
//! A re-implementation of VideoLISA ("One Token to Seg Them All", NeurIPS 2024) on candle.
//! This crate is the library; the `videolisa` binary is a thin command line on top of it.
//!
//! Modules import downwards only (checked by `tests/architecture.rs`):
//! 1. [`error`], then [`device`], [`names`], [`shard`], [`progress`], [`output`], then [`lock`],
//!    then [`json`];
//! 2. inputs and tensors: [`video`], [`sampling`], [`preprocess`], [`tokenizer`], [`weights`],
//!    [`hub`], [`demo`];
//! 3. the networks: [`model`];
//! 4. what to load and what a folder holds: [`load`], [`run_manifest`];
//! 5. a run: [`setup`] (weights, settings, manifest, models), [`segment`] (the pipeline),
//!    [`propagate`] (XMem++ alone on the user's masks);
//! 6. many runs: [`batch`], [`eval`]; a run on a live stream: [`live`];
//! 7. the subcommands: [`commands`].

#![warn(missing_docs)]

pub mod batch;
pub mod commands;
pub mod demo;
pub mod device;
pub mod error;
pub mod eval;
pub mod hub;
pub mod json;
pub mod live;
pub mod load;
pub mod lock;
pub mod model;
pub mod names;
pub mod output;
pub mod preprocess;
pub mod progress;
pub mod propagate;
pub mod run_manifest;
pub mod sampling;
pub mod segment;
pub mod setup;
pub mod shard;
pub mod tokenizer;
pub mod video;
pub mod weights;

pub use error::{Error, Result};
