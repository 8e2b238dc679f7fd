//! The workload's random stream picker: Marsaglia's xorshift64.
//!
//! The original `epoll_bench` picked the next stream with `rand() % n`. We use our own
//! generator with a fixed seed so that every backend, in every round, sees exactly the same
//! sequence of streams (a fairness rule, see the module docs of [`crate::bench`]).

/// Marsaglia's xorshift64 generator (shifts 13, 7, 17), "Xorshift RNGs", 2003.
#[derive(Debug, Clone)]
pub struct XorShift64 {
    state: u64,
}

impl XorShift64 {
    /// A generator started from `seed`; a zero seed (the one fixed point) is replaced by a
    /// non-zero constant.
    pub fn new(seed: u64) -> Self {
        let state = if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        };
        Self { state }
    }

    /// The next 64 pseudo-random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state = x;
        x
    }

    /// A value in `0..n` (`n > 0`), as the original's `rand() % n` (the modulo bias is
    /// negligible for n ≤ 9000 against 2^64).
    #[inline]
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::XorShift64;

    #[test]
    fn same_seed_gives_same_sequence_and_values_stay_in_range() {
        let mut a = XorShift64::new(42);
        let mut b = XorShift64::new(42);
        for _ in 0..1000 {
            let x = a.below(2000);
            assert_eq!(x, b.below(2000));
            assert!(x < 2000);
        }
    }

    #[test]
    fn zero_seed_does_not_stick_at_zero() {
        let mut r = XorShift64::new(0);
        assert_ne!(r.next_u64(), 0);
    }
}
