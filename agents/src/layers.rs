//! Building blocks on runtime-shaped tensors: linear maps, LayerNorm, dropout, activations.
