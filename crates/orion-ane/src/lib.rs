//! Orion's ANE target: everything that knows about MIL, weight blobs and the device's rules.
//!
//! - `blob`: weight-blob files (MIL blob storage v2), writer and validating reader;
//! - `profile`: per-chip profiles (limits, accepted ops, cost-model parameters) and the cost model;
//! - `catalogue`: the constraint catalogue C01..C43 as data, rendered to `docs/CONSTRAINTS.md`;
//! - `lower`: IR graph → MIL program + weight blobs + I/O description for one chip;
//! - `lint`: checks a MIL program against a chip profile, reporting catalogue ids;
//! - `device`: the device interface (compile / load / evaluate / unload) and the simulated ANE;
//! - `surfaces`: surface sizing, binding order, layout transposes and the fp16/fp32 surface codec;
//! - `backend`: `AneBackend`, the `orion_core::backend::Backend` that runs graphs on a device;
//! - `cache`: the program cache (memory LRU + disk) and `CachedBackend`;
//! - `probe`: measures the chip behind a device and writes a probed chip profile (`orion probe`).
//!
//! `unsafe` is denied everywhere except `device::macos` (Apple platforms only), where every block
//! carries its safety argument.
//!
//! Facts about the device cite the project's ANE reference by section ("ane.md §4") and catalogue id (C03).

#![deny(unsafe_code)]

pub mod backend;
pub mod blob;
pub mod cache;
pub mod catalogue;
pub mod device;
pub mod error;
pub mod lint;
pub mod lower;
pub mod mil;
pub mod probe;
pub mod profile;
pub mod surfaces;

pub use error::AneError;
