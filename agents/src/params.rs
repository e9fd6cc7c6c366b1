//! The parameter store: named runtime-shaped tensors, initialisation, safetensors I/O.
