//! The slot state word: `lap | owner | status` in one `AtomicU64`.
//!
//! This is the per-entry ownership flag the reviewers asked for (Zach Brown: "like
//! af_packet's `tp_status`") combined with the per-slot lap stamp of Vyukov's bounded
//! queue (as in crossbeam's `ArrayQueue`): every status change is a single CAS on this
//! word, and because the word carries the lap, a CAS prepared for one lap can never
//! succeed on the same slot in a later lap (no ABA).
//!
//! ```text
//!  63                                24 23            8 7        0
//! +------------------------------------+---------------+----------+
//! |  lap (40 bits, position / capacity) | owner (16)    | status   |
//! +------------------------------------+---------------+----------+
//! ```

/// Who may touch a slot and what it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    /// Owned by the producer: free for the lap in the word.
    Empty = 0,
    /// Published and unclaimed: any consumer may take it.
    Ready = 1,
    /// Taken by the consumer named in the owner field.
    Claimed = 2,
    /// Processed; freed when the user position passes it. The owner field says who
    /// finished it: the consumer that completed it, or [`RECLAIMED`] when the kernel
    /// took it back (reaper, lease, REMOVE). No protocol step writes an ownerless DONE:
    /// one is an entry that vanished without being claimed (a corrupt word), which the
    /// advance refuses to release and the reaper re-delivers.
    Done = 3,
}

/// The owner of a DONE slot the kernel took back for redelivery ([`Status::Done`]); no
/// consumer has this id (the table has at most a few hundred records).
pub const RECLAIMED: u16 = u16::MAX;

const STATUS_BITS: u32 = 8;
const OWNER_BITS: u32 = 16;
const LAP_SHIFT: u32 = STATUS_BITS + OWNER_BITS;
/// Laps are stored modulo 2^40: a slot would have to be reused 10^12 times between two
/// looks at it for the stamp to repeat.
pub(crate) const LAP_MASK: u64 = (1 << (64 - LAP_SHIFT)) - 1;

/// A decoded state word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotState {
    /// The lap (position / capacity, modulo 2^40) this state belongs to.
    pub lap: u64,
    /// The consumer that claimed the slot (`0` when nobody has).
    pub owner: u16,
    /// The status.
    pub status: Status,
}

impl SlotState {
    /// Builds a state.
    #[inline]
    pub fn new(lap: u64, owner: u16, status: Status) -> Self {
        SlotState {
            lap: lap & LAP_MASK,
            owner,
            status,
        }
    }

    /// Encodes the state into its word.
    #[inline]
    pub fn encode(self) -> u64 {
        (self.lap & LAP_MASK) << LAP_SHIFT
            | u64::from(self.owner) << STATUS_BITS
            | self.status as u64
    }

    /// Decodes a word read from shared memory; `None` if the status byte is not one of
    /// ours (a foreign or corrupt ring).
    #[inline]
    pub fn decode(word: u64) -> Option<Self> {
        let status = match word & ((1 << STATUS_BITS) - 1) {
            0 => Status::Empty,
            1 => Status::Ready,
            2 => Status::Claimed,
            3 => Status::Done,
            _ => return None,
        };
        Some(SlotState {
            lap: word >> LAP_SHIFT,
            owner: (word >> STATUS_BITS) as u16,
            status,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_round_trips_through_its_word() {
        for status in [Status::Empty, Status::Ready, Status::Claimed, Status::Done] {
            let s = SlotState::new(LAP_MASK, u16::MAX, status);
            assert_eq!(SlotState::decode(s.encode()), Some(s));
        }
    }

    #[test]
    fn a_garbage_status_byte_is_refused() {
        assert_eq!(SlotState::decode(0xff), None);
        assert_eq!(SlotState::decode(4), None);
    }

    #[test]
    fn laps_wrap_at_forty_bits() {
        assert_eq!(SlotState::new(LAP_MASK + 1, 0, Status::Empty).lap, 0);
    }
}
