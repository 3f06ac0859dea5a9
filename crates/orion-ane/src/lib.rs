//! Orion's ANE target: everything that knows about MIL, weight blobs and the device's rules.
