//! How pooch runs: the command line's building blocks, one folder per component that runs
//! outside the graph.
//!
//! | module | owns |
//! |---|---|
//! | [`collect`] | reading source files and queries into typed rows |
//! | [`publish`] | published versions on disk: the snapshot format and store |
//! | [`serve`] | the serving state, its supervisor, the HTTP endpoint, `pooch models` |
//! | [`cluster`] | processes of a cluster: joining, detecting lost peers, supervising |
//! | [`runtime`] | running a pipeline: workers, feeding, agreement, outputs |
//! | [`spec`] | reading a TOML spec into a plan |
//! | [`generate`] | the data generators (Sniffable, Criteo-shaped) |
//! | [`report`] | `pooch report`: SVG plots of runs and of benchmark results |
//! | [`files`] | durable file writes, and I/O errors that name the path |
//! | [`clock`] | the wall clock, for stamps |

pub mod clock;
pub mod cluster;
pub mod collect;
pub mod files;
pub mod generate;
pub mod publish;
pub mod report;
pub mod runtime;
pub mod serve;
pub mod spec;
