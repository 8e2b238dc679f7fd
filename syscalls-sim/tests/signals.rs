//! Signals as kevents (source/signal.rs). Signal state is process-wide: every test here
//! uses a signal of its own.

mod util;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use kevent_syscalls::*;
use util::*;

static USR1_HANDLED: AtomicU32 = AtomicU32::new(0);
static USR2_HANDLED: AtomicU32 = AtomicU32::new(0);
static RT2_HANDLED: AtomicU32 = AtomicU32::new(0);

extern "C" fn count_usr1(_: libc::c_int) {
    USR1_HANDLED.fetch_add(1, Ordering::Relaxed);
}

extern "C" fn count_usr2(_: libc::c_int) {
    USR2_HANDLED.fetch_add(1, Ordering::Relaxed);
}

extern "C" fn count_rt2(_: libc::c_int) {
    RT2_HANDLED.fetch_add(1, Ordering::Relaxed);
}

fn install_handler(sig: i32, handler: extern "C" fn(libc::c_int)) {
    // SAFETY: a zeroed sigaction is a valid value; we set a plain handler that only
    // touches an atomic (async-signal-safe).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler as *const () as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(sig, &sa, std::ptr::null_mut()), 0);
    }
}

/// Sends `sig` to the calling thread.
fn raise(sig: i32) {
    // SAFETY: pthread_kill to our own thread with a valid signal number.
    assert_eq!(unsafe { libc::pthread_kill(libc::pthread_self(), sig) }, 0);
}

fn signal_ev(sig: i32, nomask: bool, user: u64) -> Ukevent {
    let id = sig as u64 | if nomask { KEVENT_SIGNAL_NOMASK } else { 0 };
    ev(KEVENT_SIGNAL, id, KEVENT_SIGNAL_DELIVERY, 0, user)
}

#[test]
fn signal_with_nomask_is_reported_and_not_delivered_the_usual_way() {
    let sig = libc::SIGUSR1;
    install_handler(sig, count_usr1);
    let q = Q::new(64);
    assert_eq!(q.add(&mut [signal_ev(sig, true, 1)]), 0);
    raise(sig);
    let got = q.get_one();
    assert_eq!((got.user, got.event), (1, KEVENT_SIGNAL_DELIVERY));
    assert_eq!(got.ret_data[0], 1);
    assert_eq!(
        USR1_HANDLED.load(Ordering::Relaxed),
        0,
        "NOMASK: delivered only through the queue"
    );
}

#[test]
fn signal_without_nomask_reaches_the_installed_handler_and_is_reported() {
    let sig = libc::SIGUSR2;
    install_handler(sig, count_usr2);
    let q = Q::new(64);
    assert_eq!(q.add(&mut [signal_ev(sig, false, 2)]), 0);
    raise(sig);
    assert_eq!(
        USR2_HANDLED.load(Ordering::Relaxed),
        1,
        "the program's own handler must still run"
    );
    let got = q.get_one();
    assert_eq!(
        (got.user, got.event, got.ret_data[0]),
        (2, KEVENT_SIGNAL_DELIVERY, 1)
    );
}

#[test]
fn signal_arrivals_before_a_claim_are_counted_not_dropped() {
    // SIGRTMIN+1's default action would end the process: the queue's handler replaces
    // it, so the signal is only counted.
    let sig = libc::SIGRTMIN() + 1;
    let q = Q::new(64);
    q.add(&mut [signal_ev(sig, false, 3)]);
    for _ in 0..3 {
        raise(sig);
    }
    let mut counted = 0;
    let got = wait_until(PATIENCE, || {
        counted += q
            .get(Duration::from_millis(10))
            .iter()
            .map(|e| e.ret_data[0])
            .sum::<u32>();
        counted >= 3
    });
    assert!(got, "counted {counted} of 3 arrivals");
    q.expect_none(QUIET);
    assert_eq!(counted, 3);
}

#[test]
fn signal_kevent_rejects_sigkill_sigstop_and_bad_numbers() {
    let q = Q::new(64);
    let mut evs = [
        signal_ev(libc::SIGKILL, false, 1),
        signal_ev(libc::SIGSTOP, true, 2),
        signal_ev(0, false, 3),
        signal_ev(65, false, 4),
        ev(KEVENT_SIGNAL, libc::SIGUSR1 as u64, 0x2, 0, 5),
    ];
    assert_eq!(q.add(&mut evs), 5);
    for e in &evs {
        assert_broken(e, libc::EINVAL);
    }
}

#[test]
fn removed_signal_kevent_is_not_reported() {
    let sig = libc::SIGRTMIN() + 2;
    // Ours, so that the raise below is harmless whatever REMOVE does to the disposition.
    install_handler(sig, count_rt2);
    let q = Q::new(64);
    let e = signal_ev(sig, false, 4);
    q.add(&mut [e]);
    q.ctl_ok(KEVENT_CTL_REMOVE, &mut [e]);
    raise(sig);
    assert_eq!(RT2_HANDLED.load(Ordering::Relaxed), 1);
    q.expect_none(QUIET);
}

/// The current handler address of `sig` (`SIG_DFL` is 0).
fn disposition(sig: i32) -> usize {
    // SAFETY: a null new action only reads the current one into `old`.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        assert_eq!(libc::sigaction(sig, std::ptr::null(), &mut old), 0);
        old.sa_sigaction
    }
}

#[test]
fn removing_the_last_signal_kevent_gives_the_previous_disposition_back() {
    // SIGTERM as in the report: a queue that took it must not leave the process
    // ignoring it. Never raised here.
    let sig = libc::SIGTERM;
    assert_eq!(disposition(sig), libc::SIG_DFL);
    let q = Q::new(64);
    let (a, b) = (signal_ev(sig, false, 1), signal_ev(sig, true, 2));
    // Two kevents on it in two queues: the disposition comes back after the last.
    let other = Q::new(64);
    assert_eq!(q.add(&mut [a]), 0);
    assert_eq!(other.add(&mut [b]), 0);
    assert_ne!(
        disposition(sig),
        libc::SIG_DFL,
        "the queue's handler is installed"
    );
    q.ctl_ok(KEVENT_CTL_REMOVE, &mut [a]);
    assert_ne!(
        disposition(sig),
        libc::SIG_DFL,
        "still used by the other queue"
    );
    other.ctl_ok(KEVENT_CTL_REMOVE, &mut [b]);
    assert_eq!(
        disposition(sig),
        libc::SIG_DFL,
        "REMOVE of the last one restores it"
    );
}

#[test]
fn closing_a_queue_gives_its_signals_dispositions_back() {
    let sig = libc::SIGRTMIN() + 4;
    assert_eq!(disposition(sig), libc::SIG_DFL);
    let q = Q::new(64);
    assert_eq!(q.add(&mut [signal_ev(sig, true, 1)]), 0);
    assert_ne!(disposition(sig), libc::SIG_DFL);
    q.close().unwrap();
    assert_eq!(disposition(sig), libc::SIG_DFL, "close restores it");
}

#[test]
fn fault_signals_that_must_crash_are_refused() {
    // (Rust's runtime has a SIGSEGV handler of its own, for stack overflows.)
    let segv_before = disposition(libc::SIGSEGV);
    let q = Q::new(64);
    let mut evs = [
        signal_ev(libc::SIGSEGV, true, 1),
        signal_ev(libc::SIGBUS, false, 2),
        signal_ev(libc::SIGILL, true, 3),
        signal_ev(libc::SIGFPE, false, 4),
    ];
    assert_eq!(q.add(&mut evs), 4);
    for e in &evs {
        assert_broken(e, libc::EINVAL);
    }
    assert_eq!(disposition(libc::SIGSEGV), segv_before, "left alone");
}

#[test]
fn signal_kevents_through_the_gate_need_the_owners_consent() {
    let sig = libc::SIGRTMIN() + 5;
    let dir = TempDir::new("signals");
    let path = dir.0.join("q.sock");
    let owner = Instance::create(64, 0).unwrap();
    owner.listen(&path).unwrap();
    let peer = Instance::connect(&path).unwrap();
    let mut e = [signal_ev(sig, true, 1)];
    assert_eq!(peer.ctl(KEVENT_CTL_ADD, &mut e).unwrap(), 1);
    assert_broken(&e[0], libc::EPERM);
    assert_eq!(
        disposition(sig),
        libc::SIG_DFL,
        "a refused peer changed nothing"
    );
    owner.allow_remote_signals(true).unwrap();
    let mut e = [signal_ev(sig, true, 1)];
    assert_eq!(peer.ctl(KEVENT_CTL_ADD, &mut e).unwrap(), 0);
    assert_ne!(disposition(sig), libc::SIG_DFL);
    owner.close();
    assert_eq!(disposition(sig), libc::SIG_DFL);
}
