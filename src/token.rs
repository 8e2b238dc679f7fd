//! [`Token`]: the caller's cookie, carried through every event unchanged.

/// The cookie a kevent carries: chosen at [`add`](crate::Queue::add), returned in every
/// [`Event`](crate::Event) of that kevent (the original's `ukevent.user`, a 64-bit `ptr`
/// or number). Use it to find your state for the event: an index into a slab, a
/// connection id.
///
/// ```
/// # use kevent::Token;
/// let t = Token(42);
/// assert_eq!(usize::from(t), 42);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Token(pub u64);

impl From<Token> for u64 {
    fn from(t: Token) -> u64 {
        t.0
    }
}

impl From<Token> for usize {
    /// Truncates on 32-bit targets (tokens made from a `usize` round-trip exactly).
    fn from(t: Token) -> usize {
        t.0 as usize
    }
}

impl From<usize> for Token {
    fn from(n: usize) -> Token {
        Token(n as u64)
    }
}
