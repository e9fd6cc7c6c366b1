//! Every live episode's tokens as the first block reads them, kept between acting
//! steps. A token's embedding (after the embedding LayerNorm) and the first block's
//! query, key and value rows depend on that token's own step alone (the timestep
//! embedding is absolute, and there are no position embeddings), so each is computed
//! once, by the first re-encoding whose window holds it, and read by every later one.

/// One episode's encoded tokens `first..first + len`, in episode order: token `3 t` is
/// `R_t`, `3 t + 1` is `s_t` and `3 t + 2` is `a_t`. The rows sit in two buffers from
/// row `offset` on, with room after them to append.
#[derive(Clone, Debug, Default)]
pub(crate) struct EpisodeTokens<E> {
    /// The residual stream's rows after the embedding (`width` values each).
    x: Vec<E>,
    /// The first block's query, key and value rows (`3 width` values each, or none
    /// without blocks).
    qkv: Vec<E>,
    offset: usize,
    first: usize,
    len: usize,
}

impl<E: Copy + Default> EpisodeTokens<E> {
    /// Drops the tokens before `from` (all of them if the kept ones would not start
    /// at `from`) and returns the first token not encoded yet.
    pub(crate) fn keep_from(&mut self, from: usize) -> usize {
        let end = self.first + self.len;
        if (self.first..=end).contains(&from) {
            self.offset += from - self.first;
            self.len = end - from;
        } else {
            self.offset = 0;
            self.len = 0;
        }
        self.first = from;
        self.first + self.len
    }

    /// Appends the rows of the next tokens: `x` has `w` values a row, `qkv` `q`.
    pub(crate) fn append(&mut self, x: &[E], qkv: &[E], (w, q): (usize, usize)) {
        let n = x.len() / w.max(1);
        let rows = self.x.len() / w.max(1);
        if self.offset + self.len + n > rows {
            let live = self.offset..self.offset + self.len;
            self.x.copy_within(live.start * w..live.end * w, 0);
            self.qkv.copy_within(live.start * q..live.end * q, 0);
            self.offset = 0;
            // Twice the live rows: the buffers are moved back to the front once every
            // `len + n` appended rows or so.
            let rows = rows.max(2 * (self.len + n));
            self.x.resize(rows * w, E::default());
            self.qkv.resize(rows * q, E::default());
        }
        let at = self.offset + self.len;
        self.x[at * w..(at + n) * w].copy_from_slice(x);
        self.qkv[at * q..(at + n) * q].copy_from_slice(qkv);
        self.len += n;
    }

    /// The kept tokens' residual-stream rows.
    pub(crate) fn x(&self, w: usize) -> &[E] {
        &self.x[self.offset * w..(self.offset + self.len) * w]
    }

    /// The kept tokens' query, key and value rows.
    pub(crate) fn qkv(&self, q: usize) -> &[E] {
        &self.qkv[self.offset * q..(self.offset + self.len) * q]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tokens `from..to` of a fake encoding: row `t` holds `t` (x) and `-t` (qkv).
    fn rows(from: usize, to: usize, (w, q): (usize, usize)) -> (Vec<f64>, Vec<f64>) {
        let x = (from..to).flat_map(|t| vec![t as f64; w]).collect();
        let qkv = (from..to).flat_map(|t| vec![-(t as f64); q]).collect();
        (x, qkv)
    }

    #[test]
    fn a_sliding_window_keeps_exactly_its_tokens_through_many_moves() {
        let dims = (2, 3);
        let mut tokens = EpisodeTokens::default();
        for t in 0..50usize {
            // Window of 4 steps: tokens 3 (t - 3) up to the state token of step t.
            let from = 3 * t.saturating_sub(3);
            let end = 3 * t + 2;
            let next = tokens.keep_from(from);
            assert!(next >= from && next <= end, "step {t}: next token {next}");
            let (x, qkv) = rows(next, end, dims);
            tokens.append(&x, &qkv, dims);
            assert_eq!(tokens.x(2), rows(from, end, dims).0, "step {t}");
            assert_eq!(tokens.qkv(3), rows(from, end, dims).1, "step {t}");
        }
        // At most 11 tokens are live: the buffers hold twice that.
        assert!(
            tokens.x.len() <= 2 * 11 * 2,
            "buffers grew to {}",
            tokens.x.len()
        );
    }

    #[test]
    fn a_gap_or_an_earlier_start_encodes_everything_again() {
        let dims = (1, 1);
        let mut tokens = EpisodeTokens::default();
        assert_eq!(tokens.keep_from(0), 0);
        let (x, qkv) = rows(0, 5, dims);
        tokens.append(&x, &qkv, dims);
        assert_eq!(tokens.keep_from(3), 5);
        assert_eq!(tokens.keep_from(9), 9, "a gap after the kept tokens");
        assert!(tokens.x(1).is_empty());
        let (x, qkv) = rows(9, 11, dims);
        tokens.append(&x, &qkv, dims);
        assert_eq!(tokens.keep_from(6), 6, "tokens before the kept ones");
        assert!(tokens.qkv(1).is_empty());
    }
}
