//! `kevent_ctl`: in the owning process, on the kernel; elsewhere, through the gate
//! connection (made on demand, remade after a failure).

use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;

use kevent_ring::Ukevent;

use super::{errno, Instance};
use crate::abi::*;
use crate::gate::GateClient;

impl Instance {
    /// `kevent_ctl`.
    pub fn ctl(&self, cmd: u32, events: &mut [Ukevent]) -> io::Result<usize> {
        if cmd > KEVENT_CTL_READY {
            return Err(errno(libc::EINVAL));
        }
        if events.len() > KEVENT_MAX_EVENTS {
            return Err(errno(libc::EINVAL));
        }
        if let Some(b) = self.ring.broken() {
            return Err(b.into());
        }
        if !self.is_local() {
            // A fork's copy: its locks and connection are the parent's.
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "kevent_ctl: this queue value belongs to process {}; a forked child \
                     uses Instance::for_this_process (the kevent_* calls do)",
                    self.pid
                ),
            ));
        }
        if let Some(owner) = &self.owner {
            let mut guard = owner.kernel.lock();
            let kernel = guard.as_mut().ok_or_else(|| errno(libc::EBADF))?;
            return kernel.ctl(cmd, events, &[], crate::kernel::Caller::Local);
        }
        if self.ring.owner_died() {
            return Err(errno(libc::EPIPE));
        }
        let n = self
            .client()?
            .as_ref()
            .expect("connected")
            .ctl(cmd, events)?;
        if cmd == KEVENT_CTL_ADD {
            self.kevents_through_client.store(true, Ordering::Relaxed);
        }
        Ok(n)
    }

    /// The control connection of a consumer in another process, made (or remade, if
    /// the last one failed on the way) on demand; a remade one re-arms the notify fd,
    /// which the owner forgot with the old connection.
    ///
    /// # Errors
    /// `EOPNOTSUPP`: attached without a control channel (`Instance::attach`; use
    /// `Instance::connect`). `ECONNRESET` once, when the connection is remade after this
    /// process had added kevents through the old one: the owner dropped them with it
    /// (`peer.rs`) and they must be added again; the next call goes through.
    pub(super) fn client(&self) -> io::Result<std::sync::MutexGuard<'_, Option<GateClient>>> {
        let gate = self.gate.as_ref().ok_or_else(|| errno(libc::EOPNOTSUPP))?;
        let mut client = self.client.lock().unwrap_or_else(|e| e.into_inner());
        if client.as_ref().is_none_or(GateClient::is_broken) {
            // First use in this process, or the last connection failed on the way. A
            // queue closed under a connection stays closed: EPIPE, as the call that found
            // it closed said, not the errors of connecting to a socket that is gone
            // (ENOENT, ECONNREFUSED). (A first connection — a forked child's — is tried:
            // whoever serves the name now is refused by the credential check.)
            let remade = client.is_some();
            if remade && (self.ring.is_closed() || self.ring.owner_died()) {
                return Err(errno(libc::EPIPE));
            }
            *client = None;
            let fresh = gate.connect()?;
            let notify = self.peer_notify.as_ref().filter(|n| n.is_armed());
            if let Some(notify) = notify {
                let inbox = fresh.arm_notify()?;
                let alive = || !self.ring.owner_died();
                notify.arm(self.handle.as_fd(), inbox, self.owner_pid(), alive)?;
            }
            *client = Some(fresh);
            if remade && self.kevents_through_client.swap(false, Ordering::Relaxed) {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "kevent_ctl: the connection to the queue's owner was lost, and with it \
                     the kevents this process had added (add them again); connected anew",
                ));
            }
        }
        Ok(client)
    }
}
