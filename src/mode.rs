//! How a kevent is reported: its [`Trigger`] mode and request [`Flags`], together a
//! [`Mode`].

use kevent_syscalls as sys;

/// When a kevent is reported again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Trigger {
    /// Level-triggered (the default): while the source stays ready it is reported again
    /// after each commit of its previous event. Never more than one event of a kevent is
    /// outstanding, so a ready source cannot flood the ring; the commit is the
    /// acknowledgement.
    #[default]
    Level,
    /// `KEVENT_REQ_ET`, edge-triggered: reported once per readiness edge. Read until
    /// `WouldBlock`, or the rest waits for the next edge.
    Edge,
    /// `KEVENT_REQ_ONESHOT`: reported once, then registered but inactive until
    /// [`modify`](crate::Queue::modify) re-enables it.
    Oneshot,
}

impl Trigger {
    /// This trigger mode with request `flags`.
    ///
    /// ```
    /// # use kevent::{Flags, Trigger};
    /// let mode = Trigger::Edge.with(Flags::WAKEUP_ALL);
    /// assert_eq!(mode.flags, Flags::WAKEUP_ALL);
    /// ```
    pub fn with(self, flags: Flags) -> Mode {
        Mode {
            trigger: self,
            flags,
        }
    }
}

bitflags::bitflags! {
    /// Request flags (`req_flags`) besides the trigger mode. Unknown bits are kept and
    /// passed on (the kernel answers `EINVAL` for bits it does not know).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct Flags: u32 {
        /// `KEVENT_REQ_WAKEUP_ALL`: wake every waiting consumer for this kevent (default:
        /// one per event).
        const WAKEUP_ALL = sys::KEVENT_REQ_WAKEUP_ALL;
        /// `KEVENT_REQ_LAST_CHECK`: when an event waited in the backlog (ring full),
        /// re-check readiness just before publishing it and drop it if the source is no
        /// longer ready (the condition passed; nothing is lost).
        const LAST_CHECK = sys::KEVENT_REQ_LAST_CHECK;
        /// `KEVENT_REQ_ALWAYS_QUEUE`: an fd that is ready at ADD is queued like any other
        /// event instead of being returned by [`add`](crate::Queue::add) as
        /// [`Added::ReadyNow`](crate::Added::ReadyNow).
        const ALWAYS_QUEUE = sys::KEVENT_REQ_ALWAYS_QUEUE;
        // Keep unknown bits (see the type's docs).
        const _ = !0;
    }
}

/// A trigger mode and request flags: what [`add`](crate::Queue::add) and
/// [`modify`](crate::Queue::modify) take. A bare [`Trigger`] converts into a `Mode` with
/// no flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Mode {
    /// When the kevent is reported again.
    pub trigger: Trigger,
    /// Other request flags.
    pub flags: Flags,
}

impl Mode {
    /// The `req_flags` word of the C ABI.
    pub fn req_flags(&self) -> u32 {
        let trigger = match self.trigger {
            Trigger::Level => 0,
            Trigger::Edge => sys::KEVENT_REQ_ET,
            Trigger::Oneshot => sys::KEVENT_REQ_ONESHOT,
        };
        trigger | self.flags.bits()
    }
}

impl From<Trigger> for Mode {
    fn from(trigger: Trigger) -> Mode {
        trigger.with(Flags::empty())
    }
}

impl From<Flags> for Mode {
    /// Level-triggered with `flags`.
    fn from(flags: Flags) -> Mode {
        Trigger::Level.with(flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_encode_to_the_c_request_flags() {
        assert_eq!(Mode::from(Trigger::Level).req_flags(), 0);
        assert_eq!(Mode::from(Trigger::Edge).req_flags(), sys::KEVENT_REQ_ET);
        assert_eq!(
            Trigger::Oneshot.with(Flags::ALWAYS_QUEUE).req_flags(),
            sys::KEVENT_REQ_ONESHOT | sys::KEVENT_REQ_ALWAYS_QUEUE
        );
    }
}
