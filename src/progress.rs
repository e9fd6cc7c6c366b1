//! Progress bars with rate and ETA for long work (collection, training, evaluation, benchmarks).

use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar over `len` items of `unit` (e.g. "episodes", "steps"), showing the
/// count, the rate per second and the ETA. Hidden when stderr is not a terminal.
pub fn bar(len: u64, unit: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    let template = format!(
        "{{msg}} [{{elapsed_precise}}] {{wide_bar}} {{human_pos}}/{{human_len}} {unit} ({{per_sec}}, ETA {{eta}})"
    );
    pb.set_style(
        ProgressStyle::with_template(&template)
            .expect("static progress template is valid")
            .progress_chars("=> "),
    );
    pb
}
