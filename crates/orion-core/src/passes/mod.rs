//! The pass pipeline: a named table of passes, a driver that verifies after each, analyses.
