//! `struct ukevent`: the 40-byte event record of the original kevent (take29), and how
//! it is stored in a ring slot.
//!
//! In the slot the record is five `AtomicU64` words, not plain bytes: every process that
//! maps the ring can write those pages, so a plain read racing with a foreign write would
//! be undefined behaviour in Rust's memory model. Relaxed word loads and stores cost
//! nothing extra on x86 and are ordered by the slot's state word (Release on publish,
//! Acquire on claim). The word order reproduces the C struct's bytes on a little-endian
//! machine.

/// One kevent, as the original `struct ukevent` (40 bytes, `#[repr(C)]`).
///
/// ```
/// # use kevent_ring::Ukevent;
/// assert_eq!(std::mem::size_of::<Ukevent>(), 40);
/// ```
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Ukevent {
    /// `id.raw_u64`: what the event is about (fd, timer period, signal number, ...).
    pub id: u64,
    /// `type`: the event source (`KEVENT_SOCKET`, `KEVENT_TIMER`, ...).
    pub type_: u32,
    /// `event`: the event mask within that source (`KEVENT_SOCKET_RECV`, ...).
    pub event: u32,
    /// `req_flags`: what the user asks for (`KEVENT_REQ_ET`, ...).
    pub req_flags: u32,
    /// `ret_flags`: what the kernel reports (`KEVENT_RET_DONE`, `KEVENT_RET_BROKEN`, ...).
    pub ret_flags: u32,
    /// `ret_data`: the result; `ret_data[1]` is the errno on failure.
    pub ret_data: [u32; 2],
    /// `user` / `ptr`: the caller's opaque cookie, copied through unchanged.
    pub user: u64,
}

impl Ukevent {
    /// The id's two 32-bit halves, `id.raw[0]` and `id.raw[1]`.
    pub fn id_raw(&self) -> [u32; 2] {
        [self.id as u32, (self.id >> 32) as u32]
    }

    /// The record as the five little-endian words a slot stores.
    #[inline]
    pub(crate) fn to_words(self) -> [u64; 5] {
        [
            self.id,
            u64::from(self.type_) | u64::from(self.event) << 32,
            u64::from(self.req_flags) | u64::from(self.ret_flags) << 32,
            u64::from(self.ret_data[0]) | u64::from(self.ret_data[1]) << 32,
            self.user,
        ]
    }

    /// The inverse of [`Ukevent::to_words`].
    #[inline]
    pub(crate) fn from_words(w: [u64; 5]) -> Self {
        Ukevent {
            id: w[0],
            type_: w[1] as u32,
            event: (w[1] >> 32) as u32,
            req_flags: w[2] as u32,
            ret_flags: (w[2] >> 32) as u32,
            ret_data: [w[3] as u32, (w[3] >> 32) as u32],
            user: w[4],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_and_match_the_c_byte_layout() {
        let ev = Ukevent {
            id: 0x1122_3344_5566_7788,
            type_: 6,
            event: 1,
            req_flags: 0x14,
            ret_flags: 2,
            ret_data: [7, 11],
            user: 0xdead_beef,
        };
        let words = ev.to_words();
        assert_eq!(Ukevent::from_words(words), ev);
        // SAFETY: Ukevent is repr(C), 40 bytes, no padding (pinned in layout tests), and
        // every bit pattern of [u8; 40] is a valid value for reading its bytes.
        let bytes: [u8; 40] = unsafe { core::mem::transmute(ev) };
        let mut from_words = [0u8; 40];
        for (i, w) in words.iter().enumerate() {
            from_words[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
        assert_eq!(bytes, from_words);
    }
}
