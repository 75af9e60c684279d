//! Implementations of the CLI subcommands (the binary only parses arguments and calls these).

pub mod batch;
pub mod eval;
pub mod probe;
pub mod segment;
