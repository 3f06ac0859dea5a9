//! Composite layers built from primitive ops (norms, activations, attention, RoPE, losses).
