//! The control operations (`kevent_ctl`): one method per command, and [`Added`], what
//! ADD answers.

use kevent_syscalls as sys;

use crate::error::errno_name;
use crate::{Error, Event, Kind, Mode, Queue, Result, Source, Token};

/// What [`Queue::add_ready_now`] did with the kevent.
///
/// The original `KEVENT_CTL_ADD` *returns* an event that is ready at the moment it is
/// added, instead of queueing it (unless `KEVENT_REQ_ALWAYS_QUEUE`): that readiness does
/// not also come through [`wait`](Queue::wait). Ignoring this answer would lose that
/// event, so the type is `#[must_use]`. ([`Queue::add`] always queues.)
#[must_use = "an event ready at ADD is returned here and not queued: handle Added::ReadyNow \
              (or add with Flags::ALWAYS_QUEUE)"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// Registered; its events will come through [`wait`](Queue::wait).
    Queued,
    /// Registered, and ready at once: here is the event (its readiness is the mask you
    /// asked for). It was **not** queued. A level-triggered kevent that is still ready
    /// at the next quiet moment — a consumer of the queue's process finding nothing and
    /// about to sleep, or a consumer already asleep (woken to look) — is queued then (as
    /// after a commit), so data you leave unread is reported
    /// by a later wait; read empty by then, it is not. With several consumers, another
    /// one may be handed it while you still handle this answer, as with any
    /// level-triggered kevent after a commit: where one handler at a time matters, add
    /// it edge-triggered or [`Trigger::Oneshot`](crate::Trigger::Oneshot). An
    /// edge-triggered one comes again at its next readiness change; a oneshot one is now
    /// disabled until [`modify`](Queue::modify).
    ReadyNow(Event),
}

impl Added {
    /// The event if it was ready at once.
    pub fn ready_now(self) -> Option<Event> {
        match self {
            Added::Queued => None,
            Added::ReadyNow(ev) => Some(ev),
        }
    }

    /// Whether the event was ready at once (and returned instead of queued).
    pub fn is_ready_now(&self) -> bool {
        matches!(self, Added::ReadyNow(_))
    }
}

/// Says what `errno` means for `op` on `source`.
fn describe(op: &str, source: &Source, req_flags: u32, errno: i32) -> Error {
    let kind = source.kind();
    let msg = match errno {
        libc::EEXIST if kind == Kind::Timer => format!(
            "{op}: {source} is already registered (a timer is identified by its time, as in \
             kevent: use another period or another queue)"
        ),
        libc::EEXIST => format!("{op}: {source} is already registered"),
        libc::ENOENT => format!("{op}: {source} is not registered"),
        libc::EBADF if kind.has_fd() => format!("{op}: {source} is not an open file descriptor"),
        libc::EPERM if kind == Kind::Signal => format!(
            "{op}: {source}: signal kevents from another process need the owner's consent \
             (Builder::remote_signals)"
        ),
        libc::EPERM if kind.has_fd() => format!(
            "{op}: {source} cannot be watched (epoll refuses regular files and directories)"
        ),
        libc::ENOSYS => format!("{op}: {kind:?} kevents are not supported by this implementation"),
        libc::EINVAL => match kind {
            Kind::Timer | Kind::PosixTimer => format!(
                "{op}: {source}: a timer needs a non-zero time (event mask {:#x})",
                source.events()
            ),
            Kind::Signal => format!(
                "{op}: {source}: not a signal a queue can take (1..=64, not SIGKILL, SIGSTOP, \
                 SIGSEGV, SIGBUS, SIGILL or SIGFPE)"
            ),
            _ => format!(
                "{op}: {source}: event mask {:#x} or request flags {req_flags:#x} are not valid \
                 for this kind",
                source.events()
            ),
        },
        libc::EOPNOTSUPP => format!(
            "{op}: {source}: this queue has no control channel in this process (attached \
             without one)"
        ),
        _ => {
            let text = std::io::Error::from_raw_os_error(errno).to_string();
            let text = text.split(" (os error").next().unwrap_or(&text).to_string();
            format!("{op}: {source}: {text}")
        }
    };
    Error::errno(errno, msg)
}

impl Queue {
    /// Runs one control command on one entry; returns the entry as the kernel wrote it
    /// back, or the entry's error.
    fn ctl_one(
        &self,
        op: &str,
        cmd: u32,
        source: &Source,
        token: Token,
        req_flags: u32,
    ) -> Result<sys::Ukevent> {
        let mut ev = [source.ukevent(token.0, req_flags)];
        self.inner(op)?
            .ctl(cmd, &mut ev)
            .map_err(|e| Error::wrap(&format!("{op}: {source}"), e))?;
        let [ev] = ev;
        if ev.ret_flags & sys::KEVENT_RET_BROKEN != 0 {
            let errno = ev.ret_data[1] as i32;
            debug_assert!(errno > 0, "BROKEN without an errno: {}", errno_name(errno));
            return Err(describe(op, source, req_flags, errno));
        }
        Ok(ev)
    }

    /// `KEVENT_CTL_ADD`: registers `source` with cookie `token` and `mode` (a
    /// [`Trigger`](crate::Trigger), or a [`Mode`] with flags). Every event of it comes
    /// through [`wait`](Queue::wait) — one that is ready at once included: `add` queues
    /// it (`KEVENT_REQ_ALWAYS_QUEUE`), so the loop everyone writes first (add, then wait)
    /// loses nothing. [`add_ready_now`](Queue::add_ready_now) is the original's
    /// return-at-ADD behaviour.
    ///
    /// # Errors
    /// `EEXIST`: a kevent with this kind and id is registered already (for fds: the same
    /// fd number; for timers: the same time). `EBADF`: not an open fd. `EPERM`: a file
    /// epoll cannot watch. `EINVAL`: an event mask or flags this kind does not take.
    /// `ENOSYS`: a kind with no source here (AIO, NAIO).
    #[doc(alias = "kevent_ctl")]
    #[doc(alias = "KEVENT_CTL_ADD")]
    pub fn add(&self, source: &Source, token: Token, mode: impl Into<Mode>) -> Result<()> {
        let req = mode.into().req_flags() | sys::KEVENT_REQ_ALWAYS_QUEUE;
        self.ctl_one("kevent add", sys::KEVENT_CTL_ADD, source, token, req)
            .map(drop)
    }

    /// `KEVENT_CTL_ADD` as the original answers it: an fd that is ready at once is
    /// *returned* ([`Added::ReadyNow`]) instead of queued, saving a trip through the ring
    /// — unless `mode` has [`Flags::ALWAYS_QUEUE`](crate::Flags::ALWAYS_QUEUE). Later
    /// readiness comes through [`wait`](Queue::wait) as usual and is never lost, however
    /// the first was reported.
    ///
    /// # Errors
    /// As [`add`](Queue::add).
    #[doc(alias = "kevent_ctl")]
    #[doc(alias = "KEVENT_CTL_ADD")]
    pub fn add_ready_now(
        &self,
        source: &Source,
        token: Token,
        mode: impl Into<Mode>,
    ) -> Result<Added> {
        let req = mode.into().req_flags();
        let ev = self.ctl_one("kevent add", sys::KEVENT_CTL_ADD, source, token, req)?;
        Ok(if ev.ret_flags & sys::KEVENT_RET_DONE != 0 {
            Added::ReadyNow(Event::from_raw(ev))
        } else {
            Added::Queued
        })
    }

    /// `KEVENT_CTL_MODIFY`: changes the event mask (from `source`), the cookie and the
    /// mode of a registered kevent, and re-enables a fired oneshot. Like `EPOLL_CTL_MOD`,
    /// a source that is ready now is reported (through the ring).
    ///
    /// # Errors
    /// `ENOENT`: no such kevent. `EINVAL`: an event mask or flags this kind does not take.
    #[doc(alias = "kevent_ctl")]
    #[doc(alias = "KEVENT_CTL_MODIFY")]
    pub fn modify(&self, source: &Source, token: Token, mode: impl Into<Mode>) -> Result<()> {
        let req = mode.into().req_flags();
        self.ctl_one("kevent modify", sys::KEVENT_CTL_MODIFY, source, token, req)
            .map(drop)
    }

    /// `KEVENT_CTL_REMOVE`: unregisters the kevent `source` names (by kind and id; the
    /// mask is ignored). An event of it not yet claimed is taken back, never delivered;
    /// one already claimed stays with its consumer. Remove an fd kevent *before* closing
    /// the fd (as with epoll): the queue watches the fd itself.
    ///
    /// # Errors
    /// `ENOENT`: no such kevent.
    #[doc(alias = "kevent_ctl")]
    #[doc(alias = "KEVENT_CTL_REMOVE")]
    pub fn remove(&self, source: &Source) -> Result<()> {
        self.ctl_one("kevent remove", sys::KEVENT_CTL_REMOVE, source, Token(0), 0)
            .map(drop)
    }

    /// `KEVENT_CTL_READY`: marks a registered kevent ready — how a
    /// [`Source::user`] event fires. Each call on a user event counts one arrival, and
    /// none is lost: a kevent has one event outstanding at a time, so arrivals after its
    /// event was published — claimed yet or not — are counted into the next one
    /// ([`Event::count`]), published when the first is committed. Three calls before a
    /// wait can therefore arrive as an event of count 1 and, after its commit, one of
    /// count 2.
    ///
    /// # Errors
    /// `ENOENT`: no such kevent.
    #[doc(alias = "kevent_ctl")]
    #[doc(alias = "KEVENT_CTL_READY")]
    pub fn ready(&self, source: &Source) -> Result<()> {
        self.ctl_one("kevent ready", sys::KEVENT_CTL_READY, source, Token(0), 0)
            .map(drop)
    }

    /// `KEVENT_CTL_READY` with no entries: wakes one sleeping [`wait`](Queue::wait) —
    /// wherever it sleeps, in any process — which returns an empty batch. An event loop
    /// asleep on the [`notify_fd`](Queue::notify_fd) is woken too.
    ///
    /// A wake-up that finds nobody asleep is not remembered (as with a futex). To stop
    /// consumers reliably, wait with a timeout and check your stop flag, or make a
    /// [`Source::user`] event [`ready`](Queue::ready): an event is not lost, and the
    /// consumer that takes it can pass it on to the next by making it ready again.
    ///
    /// # Errors
    /// `EPIPE`: the queue was closed (by its owner, for a connected consumer).
    #[doc(alias = "kevent_ctl")]
    pub fn wake(&self) -> Result<()> {
        self.inner("kevent wake")?
            .ctl(sys::KEVENT_CTL_READY, &mut [])
            .map(drop)
            .map_err(|e| Error::wrap("kevent wake", e))
    }
}
