//! videolisa: segment the object a sentence describes in every frame of a video.
//!
//! A re-implementation of VideoLISA ("One Token to Seg Them All", NeurIPS 2024) on candle.
//! This crate is the library; the `videolisa` binary is a thin command line on top of it.

#![warn(missing_docs)]

pub mod batch;
pub mod commands;
pub mod demo;
pub mod error;
pub mod eval;
pub mod hub;
pub mod load;
pub mod model;
pub mod output;
pub mod preprocess;
pub mod progress;
pub mod propagate;
pub mod run_manifest;
pub mod sampling;
pub mod segment;
pub mod tokenizer;
pub mod video;
pub mod weights;

pub use error::{Error, Result};
