//! `impl mio::event::Source for Queue` (feature `mio`): the queue inside a `mio::Poll`.

use std::io;
use std::os::fd::AsRawFd;

use mio::event::Source;
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use crate::Queue;

/// The queue in a [`mio::Poll`] (feature `mio`): registering arms the queue's
/// [`notify_fd`](Queue::notify_fd) and registers it for readability.
///
/// mio registrations are edge-triggered. The contract that makes that safe: **when mio
/// reports the queue's token, call [`wait`](Queue::wait) with `Some(Duration::ZERO)`
/// until it returns an empty batch.** The empty wait resets the fd before its last look
/// at the ring, and every later publish makes the fd readable again — a new edge — so no
/// event is missed; stopping at a non-empty batch can leave entries that no edge will
/// announce. A [`wake`](Queue::wake) reaches a loop asleep in `Poll::poll` the same way:
/// the token is reported and the drain finds nothing.
///
/// Only [`Interest::READABLE`] is accepted (the queue is never "writable"); anything
/// else is `InvalidInput`. A [`connect`](Queue::connect)ed queue works the same way
/// (its notify fd is armed through the owner's socket).
///
/// ```
/// use std::time::Duration;
/// use kevent::{Queue, Source, Token as Cookie, Trigger};
/// use mio::{Events, Interest, Poll, Token};
///
/// let mut queue = Queue::builder().capacity(64).build()?;
/// let mut poll = Poll::new()?;
/// poll.registry().register(&mut queue, Token(0), Interest::READABLE)?;
///
/// queue.add(&Source::user(1), Cookie(1), Trigger::Edge)?;
/// queue.ready(&Source::user(1))?;
///
/// let mut events = Events::with_capacity(8);
/// poll.poll(&mut events, Some(Duration::from_secs(5)))?;
/// assert_eq!(events.iter().next().map(|e| e.token()), Some(Token(0)));
/// let mut taken = 0;
/// loop {
///     let batch = queue.wait(64, Some(Duration::ZERO))?;
///     if batch.is_empty() {
///         break; // drained: the next publish is a new edge
///     }
///     taken += batch.len();
/// }
/// assert_eq!(taken, 1);
/// poll.registry().deregister(&mut queue)?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "mio")))]
impl Source for Queue {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        let fd = notify_fd(self, interests)?;
        SourceFd(&fd).register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        let fd = notify_fd(self, interests)?;
        SourceFd(&fd).reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        SourceFd(&self.as_raw_fd()).deregister(registry)
    }
}

/// The armed notify fd, for readability only.
fn notify_fd(queue: &Queue, interests: Interest) -> io::Result<std::os::fd::RawFd> {
    if interests != Interest::READABLE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("kevent mio register: a queue is only readable, not {interests:?}"),
        ));
    }
    Ok(queue.notify_fd()?.as_raw_fd())
}
