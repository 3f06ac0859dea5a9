//! Reverse-mode automatic differentiation as a graph transform.
