//! Trajectory datasets: the native store, importers, statistics and training windows.
