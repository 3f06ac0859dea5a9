//! The verifier: checks every structural invariant of a graph and lists every failure.
