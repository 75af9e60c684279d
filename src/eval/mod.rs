//! Benchmarks: exact J&F scoring (davis2017-evaluation), the four dataset layouts, running
//! VideoLISA over a split with shards and resume, and synthetic datasets for tests.

pub mod datasets;
pub mod metrics;
pub mod run;
pub mod score;
pub mod synthetic;
