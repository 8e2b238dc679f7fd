//! [`Queue`]: one kevent queue as seen from one process — its ring, its consumer record,
//! and, in the process that created it, the simulated kernel and its producer thread.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use kevent_ring::{
    Claim, ConsumerId, Deadline, Liveness, Producer, Ring, Ukevent, WaitOutcome, WaitSpec,
};
use rustix::event::{epoll, eventfd, EventfdFlags};

use crate::abi::*;
use crate::kernel::{Kernel, TOKEN_DOORBELL};
use crate::thread::{lock, ProducerThread};

fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

/// The creating process's side: the kernel and its thread.
struct Owner {
    kernel: Arc<Mutex<Option<Kernel>>>,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// One kevent queue.
pub struct Queue {
    ring: Arc<Ring>,
    me: ConsumerId,
    _liveness: Liveness,
    doorbell: Arc<OwnedFd>,
    /// The queue's handle: an fd number of our own (an eventfd), so that handles behave
    /// like the original's file descriptors (`EBADF` once closed).
    handle: OwnedFd,
    owner: Option<Owner>,
    /// Spin before sleeping, in nanoseconds.
    spin_ns: AtomicU64,
}

/// Default spin before a consumer sleeps: waking a sleeper on the other core costs
/// 27–49 µs here, a spinning one < 100 ns (MEASURED.md); spinning longer than the cost
/// it saves only burns the other threads' CPU.
pub const DEFAULT_SPIN: Duration = Duration::from_micros(20);

impl Queue {
    /// `kevent_init`: a queue with a ring of `num` entries (rounded up to a power of two;
    /// `0` means the default internal ring) and its producer thread.
    pub fn create(num: u32, flags: u32) -> io::Result<Arc<Queue>> {
        if flags != 0 || num == 1 || num > kevent_ring::layout::MAX_CAPACITY {
            return Err(errno(libc::EINVAL));
        }
        let capacity = if num == 0 {
            KEVENT_DEFAULT_RING
        } else {
            num.next_power_of_two()
        };
        let ring = Arc::new(Ring::create("kevent", capacity)?);
        let liveness = Liveness::register(&ring)?;
        let epoll = Arc::new(epoll::create(epoll::CreateFlags::CLOEXEC)?);
        let doorbell = Arc::new(eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?);
        epoll::add(
            epoll.as_fd(),
            doorbell.as_fd(),
            epoll::EventData::new_u64(TOKEN_DOORBELL),
            epoll::EventFlags::IN,
        )?;
        let producer = Producer::new(ring.clone()).map_err(io::Error::from)?;
        let kernel = Arc::new(Mutex::new(Some(Kernel::new(producer, epoll.clone()))));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = ProducerThread {
            kernel: kernel.clone(),
            epoll,
            doorbell: doorbell.clone(),
            ring: ring.clone(),
            stop: stop.clone(),
            housekeeping: Box::new(|_| None),
        };
        let handle = std::thread::Builder::new()
            .name("kevent-producer".into())
            .spawn(move || thread.run())?;
        Ok(Arc::new(Queue {
            me: liveness.id(),
            ring,
            _liveness: liveness,
            doorbell,
            handle: eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?,
            owner: Some(Owner {
                kernel,
                stop,
                thread: Mutex::new(Some(handle)),
            }),
            spin_ns: AtomicU64::new(DEFAULT_SPIN.as_nanos() as u64),
        }))
    }

    /// The handle number (what `kevent_init` returns).
    pub fn handle(&self) -> RawFd {
        self.handle.as_raw_fd()
    }

    /// The ring.
    pub fn ring(&self) -> &Arc<Ring> {
        &self.ring
    }

    /// This process's consumer id (the owner field of the slots it claims).
    pub fn consumer(&self) -> ConsumerId {
        self.me
    }

    /// How long a waiter spins before it sleeps (default [`DEFAULT_SPIN`]).
    pub fn set_spin(&self, spin: Duration) {
        self.spin_ns.store(
            spin.as_nanos().min(u128::from(u64::MAX)) as u64,
            Ordering::Relaxed,
        );
    }

    fn spin(&self) -> Duration {
        Duration::from_nanos(self.spin_ns.load(Ordering::Relaxed))
    }

    /// `kevent_ctl`.
    pub fn ctl(&self, cmd: u32, events: &mut [Ukevent]) -> io::Result<usize> {
        if cmd > KEVENT_CTL_READY {
            return Err(errno(libc::EINVAL));
        }
        if events.len() > KEVENT_MAX_EVENTS {
            return Err(errno(libc::EINVAL));
        }
        let owner = self.owner.as_ref().ok_or_else(|| errno(libc::EOPNOTSUPP))?;
        let mut guard = lock(&owner.kernel);
        let kernel = guard.as_mut().ok_or_else(|| errno(libc::EBADF))?;
        if let Some(b) = self.ring.broken() {
            return Err(b.into());
        }
        kernel.ctl(cmd, events)
    }

    fn deadline(timeout: Timeout, flags: u32) -> io::Result<Option<Deadline>> {
        if flags & !KEVENT_FLAGS_ABSTIME != 0 {
            return Err(errno(libc::EINVAL));
        }
        Ok(match timeout {
            None => None,
            Some(ns) if flags & KEVENT_FLAGS_ABSTIME != 0 => Some(Deadline::Realtime(ns)),
            Some(ns) => Some(Deadline::Monotonic(
                kevent_ring::monotonic_now().saturating_add(ns),
            )),
        })
    }

    fn outcome_error(outcome: WaitOutcome) -> Option<io::Error> {
        match outcome {
            WaitOutcome::Closed => Some(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "kevent queue closed: its producer has stopped",
            )),
            WaitOutcome::Broken => Some(io::Error::new(
                io::ErrorKind::InvalidData,
                "kevent ring is broken",
            )),
            WaitOutcome::Interrupted => Some(errno(libc::EINTR)),
            _ => None,
        }
    }

    /// `kevent_wait`: waits until entries are ready (or `old_uidx` is stale, a wake-up
    /// request arrives, or the timeout passes) and claims up to `num` of them.
    pub fn wait(&self, num: u32, old_uidx: u64, timeout: Timeout, flags: u32) -> io::Result<Claim> {
        if num == 0 || u64::from(num) > self.ring.capacity() {
            return Err(errno(libc::EINVAL));
        }
        let spec = WaitSpec {
            old_uidx: Some(old_uidx),
            deadline: Self::deadline(timeout, flags)?,
            spin: if timeout == Some(0) {
                Duration::ZERO
            } else {
                self.spin()
            },
            return_on_wake: true,
        };
        loop {
            let outcome = if timeout == Some(0) && flags & KEVENT_FLAGS_ABSTIME == 0 {
                if self.ring.has_claimable() {
                    WaitOutcome::Ready
                } else {
                    WaitOutcome::TimedOut
                }
            } else {
                self.ring.wait(&spec)?
            };
            if let Some(e) = Self::outcome_error(outcome) {
                return Err(e);
            }
            if outcome == WaitOutcome::Ready {
                let claim = self.ring.claim(self.me, u64::from(num));
                if claim.owned > 0 || timeout == Some(0) {
                    return Ok(claim);
                }
                // Another consumer was faster; wait again.
                continue;
            }
            let c = self.ring.cidx();
            return Ok(Claim {
                start: c,
                end: c,
                owned: 0,
            });
        }
    }

    /// Reads a claimed entry (see [`Ring::take`]).
    pub fn entry(&self, pos: u64) -> Option<Ukevent> {
        self.ring.take(self.me, pos)
    }

    /// `kevent_commit`: done with every entry this process claimed below the position
    /// `(new_uidx, over)` names. Returns how many entries it committed.
    pub fn commit(&self, new_uidx: u32, over: u32) -> io::Result<u64> {
        let pos = self
            .ring
            .position_of(new_uidx, over)
            .ok_or_else(|| errno(libc::EINVAL))?;
        let u = self.ring.uidx();
        if pos > self.ring.kidx() {
            return Err(errno(libc::EINVAL));
        }
        if pos < u {
            let (_, over_now) = self.ring.kevent_view(u);
            // A position from before the last wrap of uidx: never taken for a new wrap.
            return if over < over_now {
                Err(errno(libc::EOVERFLOW))
            } else {
                Ok(0)
            };
        }
        let n = self.ring.commit_below(self.me, pos);
        self.after_commit();
        Ok(n)
    }

    /// Commits exactly the positions in `range` that this process claimed.
    pub fn commit_range(&self, range: std::ops::Range<u64>) -> u64 {
        let n = self.ring.complete_range(self.me, range);
        self.after_commit();
        n
    }

    fn after_commit(&self) {
        if self.ring.doorbell_wanted() {
            let _ = rustix::io::write(self.doorbell.as_fd(), &1u64.to_ne_bytes());
        }
    }

    /// `kevent_get_events`: copies at least `min` (waiting up to the timeout) and at most
    /// `max` ready events into `buf` and commits them. Returns how many it copied.
    pub fn get_events(
        &self,
        min: u32,
        max: u32,
        timeout: Timeout,
        buf: &mut [Ukevent],
        flags: u32,
    ) -> io::Result<usize> {
        let (min, max) = (min as usize, max as usize);
        if max == 0 || max > buf.len() || min > max {
            return Err(errno(libc::EINVAL));
        }
        let deadline = Self::deadline(timeout, flags)?;
        let mut got = 0;
        loop {
            let claim = self.ring.claim(self.me, (max - got) as u64);
            for pos in claim.start..claim.end {
                if let Some(ev) = self.ring.take(self.me, pos) {
                    buf[got] = ev;
                    got += 1;
                }
            }
            if !claim.is_empty() {
                self.commit_range(claim.start..claim.end);
            }
            if got >= min.max(1)
                || got == max
                || (min == 0 && claim.is_empty())
                || timeout == Some(0)
            {
                return Ok(got);
            }
            if !claim.is_empty() {
                continue;
            }
            let spec = WaitSpec {
                old_uidx: None,
                deadline,
                spin: self.spin(),
                return_on_wake: true,
            };
            match self.ring.wait(&spec)? {
                WaitOutcome::Ready => {}
                WaitOutcome::TimedOut | WaitOutcome::Woken | WaitOutcome::Stale => return Ok(got),
                other => return Err(Self::outcome_error(other).expect("error outcome")),
            }
        }
    }

    /// Stops the producer thread, closes the ring (waiters return an error) and every fd
    /// the kernel made. Idempotent.
    pub fn close(&self) {
        let Some(owner) = &self.owner else { return };
        owner.stop.store(true, Ordering::Release);
        let _ = rustix::io::write(self.doorbell.as_fd(), &1u64.to_ne_bytes());
        if let Some(t) = owner
            .thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = t.join();
        }
        self.ring.close();
        lock(&owner.kernel).take();
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        self.close();
    }
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("handle", &self.handle())
            .field("ring", &self.ring)
            .field("consumer", &self.me)
            .finish()
    }
}
