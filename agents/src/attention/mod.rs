//! Attention cores: Flow-Attention (normal, causal, step-by-step) and causal softmax.
