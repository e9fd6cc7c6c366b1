//! AdamW with decoupled weight decay, and gradient-norm clipping.
