//! Several processes on one queue (ARCHITECTURE.md §5, §7): consumers in `fork`ed children and
//! in a separate program (`kevent-worker`), consumers killed with `SIGKILL` mid-batch,
//! wake-ups across processes, and control through the queue's socket with the fds
//! travelling by `SCM_RIGHTS`.
//!
//! Accounting is exact: every byte written into a pipe is read by exactly one worker,
//! every entry posted is taken by exactly one consumer (when nobody dies), `lost` stays 0.
//! Every loop is bounded in time, so a bug fails a test instead of hanging it.
//!
//! Children are forked from the test thread, run only this file's code and end with
//! `_exit` (never returning into the harness); a guard kills whatever is left when a test
//! fails, and `PR_SET_PDEATHSIG` kills them if the test process dies. The tests of this
//! file run one at a time: they fork, and their timings should not compete.

#![deny(clippy::undocumented_unsafe_blocks)]

mod util;

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kevent_syscalls::*;
use rustix::process::Pid;
use util::proc::{bounded, child_log, Children, SharedWords, XorShift};
use util::{
    assert_only_the_owner_stays_registered, drain, fd_ev, nonblocking_pipe, pipes_registered,
    raise_fd_limit, ring_report, user_ev, wait_until, write_bytes, Pipes, MS,
};

// --- pipe workers ----------------------------------------------------------------------

const SLOTS: usize = 8;
/// Worker states of the kill handshake: a worker reads a pipe only between `IDLE → BUSY`
/// and counting what it read; the killer dooms an `IDLE` worker before `SIGKILL`, so a
/// byte read is never lost with its reader (the count lives in shared memory).
const IDLE: u64 = 0;
const BUSY: u64 = 1;
const DOOMED: u64 = 2;

/// What workers report: per worker slot (a restarted worker reuses its slot).
struct Board(SharedWords);

impl Board {
    fn new() -> Board {
        Board(SharedWords::new(SLOTS * 8))
    }
    fn stop(&self) -> &AtomicU64 {
        self.0.at(0)
    }
    fn field(&self, f: usize, slot: usize) -> &AtomicU64 {
        assert!(slot < SLOTS);
        self.0.at(SLOTS * f + slot)
    }
    /// Bytes read.
    fn bytes(&self, slot: usize) -> &AtomicU64 {
        self.field(1, slot)
    }
    /// Entries taken.
    fn events(&self, slot: usize) -> &AtomicU64 {
        self.field(2, slot)
    }
    /// Entries taken that carried `KEVENT_RET_REDELIVERED`.
    fn redelivered(&self, slot: usize) -> &AtomicU64 {
        self.field(3, slot)
    }
    /// The kill handshake word (`IDLE`, `BUSY`, `DOOMED`).
    fn state(&self, slot: usize) -> &AtomicU64 {
        self.field(4, slot)
    }
    /// Entries that named no pipe of ours, and failed reads.
    fn bad(&self, slot: usize) -> &AtomicU64 {
        self.field(5, slot)
    }
    /// The worker's consumer id.
    fn cid(&self, slot: usize) -> &AtomicU64 {
        self.field(6, slot)
    }
    /// How many workers attached in this slot so far.
    fn attached(&self, slot: usize) -> &AtomicU64 {
        self.field(7, slot)
    }
    fn sum(&self, f: impl Fn(&Board, usize) -> &AtomicU64) -> u64 {
        (0..SLOTS).map(|s| f(self, s).load(Ordering::SeqCst)).sum()
    }
}

/// `for_this_process`, retried while the consumer table is full of dead consumers the
/// reaper has not freed yet.
fn attach_retrying(q: &Arc<Instance>) -> std::io::Result<Arc<Instance>> {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        match q.for_this_process() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < end => {
                std::thread::sleep(Duration::from_millis(10))
            }
            r => return r,
        }
    }
}

/// A worker process: takes entries, reads each entry's pipe once (non-blocking, up to 64
/// bytes), counts what it read in shared memory, spends `work` on the entry, commits the
/// batch; until told to stop.
fn pipe_worker(
    parent_q: &Arc<Instance>,
    board: &Board,
    slot: usize,
    pipes: &[OwnedFd],
    work: Duration,
) -> i32 {
    let q = match attach_retrying(parent_q) {
        Ok(q) => q,
        Err(e) => {
            child_log(&format!("worker {slot}: attaching: {e}"));
            return 3;
        }
    };
    board
        .cid(slot)
        .store(u64::from(q.consumer().0), Ordering::SeqCst);
    board.attached(slot).fetch_add(1, Ordering::SeqCst);
    let mut buf = [0u8; 64];
    while board.stop().load(Ordering::SeqCst) == 0 {
        let claim = match q.wait(64, q.ring().uidx(), Some(50 * MS), 0) {
            Ok(c) => c,
            Err(e) => {
                child_log(&format!("worker {slot}: kevent_wait: {e}"));
                return 4;
            }
        };
        for pos in claim.start..claim.end {
            let Some(ev) = q.entry(pos) else { continue };
            board.events(slot).fetch_add(1, Ordering::SeqCst);
            if ev.ret_flags & KEVENT_RET_REDELIVERED != 0 {
                board.redelivered(slot).fetch_add(1, Ordering::SeqCst);
            }
            // The entry came from shared memory: use it only if it names one of our pipes.
            let fd = match pipes.get(ev.user as usize) {
                Some(fd) if fd.as_raw_fd() as u64 == ev.id => fd,
                _ => {
                    board.bad(slot).fetch_add(1, Ordering::SeqCst);
                    continue;
                }
            };
            if board
                .state(slot)
                .compare_exchange(IDLE, BUSY, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
            {
                // Doomed: SIGKILL is on its way. Never start a read it could cut short.
                loop {
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
            match rustix::io::read(fd, &mut buf) {
                Ok(n) => {
                    board.bytes(slot).fetch_add(n as u64, Ordering::SeqCst);
                }
                Err(rustix::io::Errno::AGAIN) => {}
                Err(_) => {
                    board.bad(slot).fetch_add(1, Ordering::SeqCst);
                }
            }
            board.state(slot).store(IDLE, Ordering::SeqCst);
            if !work.is_zero() {
                std::thread::sleep(work);
            }
        }
        if !claim.is_empty() {
            q.commit_range(claim.start..claim.end);
        }
    }
    0
}

/// [`PIPES`] pipes registered (level-triggered, `user` = index). They, the kernel's
/// duplicates and the children's copies need more than the default 1,024 fds.
fn register_pipes(q: &Instance) -> Pipes {
    raise_fd_limit(7_000);
    pipes_registered(q, PIPES)
}

/// Writes `total` single bytes to pipes chosen at random; with `pace = (n, d)` it sleeps
/// `d` after every `n` bytes. Returns how many bytes it wrote.
fn write_bytes_at_random(
    write: &[OwnedFd],
    total: u64,
    seed: u64,
    pace: Option<(u64, Duration)>,
) -> u64 {
    let mut rng = XorShift(seed);
    let end = Instant::now() + Duration::from_secs(60);
    let mut written = 0;
    while written < total {
        assert!(Instant::now() < end, "writer: stuck at {written} bytes");
        let fd = &write[rng.below(write.len() as u64) as usize];
        match rustix::io::write(fd, b"x") {
            Ok(1) => written += 1,
            Ok(n) => panic!("a 1-byte write wrote {n}"),
            Err(rustix::io::Errno::AGAIN) => continue, // that pipe is full: pick another
            Err(e) => panic!("write: {e}"),
        }
        if let Some((every, pause)) = pace {
            if written.is_multiple_of(every) {
                std::thread::sleep(pause);
            }
        }
    }
    written
}

/// Pipes that still hold data right now (poll, no read).
fn pipes_with_data(pipes: &Pipes) -> Vec<usize> {
    let mut ready = Vec::new();
    for chunk in pipes.read.chunks(1024).enumerate() {
        let (c, fds) = chunk;
        let mut pfds: Vec<_> = fds
            .iter()
            .map(|fd| rustix::event::PollFd::new(fd, rustix::event::PollFlags::IN))
            .collect();
        let zero = rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        rustix::event::poll(&mut pfds, Some(&zero)).expect("poll");
        for (i, p) in pfds.iter().enumerate() {
            if p.revents().contains(rustix::event::PollFlags::IN) {
                ready.push(c * 1024 + i);
            }
        }
    }
    ready
}

/// Waits until the workers have counted every byte written and the ring is drained
/// (nothing published unclaimed, nothing claimed uncommitted, no backlog), stably.
fn wait_until_everything_is_read(q: &Instance, board: &Board, pipes: &Pipes, written: u64) {
    let end = Instant::now() + Duration::from_secs(30);
    let mut stable = 0;
    loop {
        let r = q.ring();
        let drained = r.kidx() == r.cidx()
            && r.cidx() == r.uidx()
            && r.header().stats.backlog_len.load(Ordering::SeqCst) == 0;
        let read = board.sum(Board::bytes);
        assert!(read <= written, "read {read} bytes of {written} written");
        stable = if read == written && drained {
            stable + 1
        } else {
            0
        };
        if stable >= 3 {
            return;
        }
        if Instant::now() >= end {
            panic!(
                "bytes left unread: read {read} of {written}; pipes still holding data: {:?}; \
                 ring: {}",
                pipes_with_data(pipes),
                ring_report(q)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Reads whatever is left in the pipes (there must be nothing).
fn leftover_bytes(pipes: &Pipes) -> u64 {
    pipes.read.iter().map(|fd| drain(fd) as u64).sum()
}

/// Slots CLAIMED by consumer `cid` between `uidx` and `cidx`: entries a dead consumer took
/// with it, which the reaper must deliver again.
fn claimed_by(ring: &Ring, cid: u64) -> u64 {
    if cid == 0 {
        return 0;
    }
    let (u, c) = (ring.uidx(), ring.cidx());
    let cap = ring.capacity();
    (u..c.min(u + cap))
        .filter(|&pos| {
            ring.slot_state(pos).is_some_and(|st| {
                st.status == kevent_ring::Status::Claimed
                    && u64::from(st.owner) == cid
                    && st.lap == kevent_ring::SlotState::new(pos / cap, 0, st.status).lap
            })
        })
        .count() as u64
}

const PIPES: usize = 2000;
const BYTES: u64 = 200_000;
const WORKERS: usize = 4;

fn fork_workers(
    kids: &mut Children,
    q: &Arc<Instance>,
    board: &Board,
    pipes: &Pipes,
    work: Duration,
) -> Vec<Pid> {
    let pids: Vec<Pid> = (0..WORKERS)
        .map(|slot| kids.fork(|| pipe_worker(q, board, slot, &pipes.read, work)))
        .collect();
    assert!(
        wait_until(Duration::from_secs(10), || board.sum(Board::attached)
            == WORKERS as u64),
        "workers did not attach"
    );
    pids
}

fn stop_workers(kids: &mut Children, board: &Board, pids: &[Pid]) {
    board.stop().store(1, Ordering::SeqCst);
    for (slot, &pid) in pids.iter().enumerate() {
        kids.expect_success(pid, Duration::from_secs(5), &format!("worker {slot}"));
    }
}

#[test]
fn four_worker_processes_read_every_byte_of_2000_pipes_exactly_once() {
    bounded(
        Duration::from_secs(60),
        four_worker_processes_read_every_byte_of_2000_pipes_exactly_once_body,
    );
}

fn four_worker_processes_read_every_byte_of_2000_pipes_exactly_once_body() {
    let t0 = Instant::now();
    let q = Instance::create(1024, 0).expect("kevent_init");
    let pipes = register_pipes(&q);
    let board = Board::new();
    let mut kids = Children::default();
    let pids = fork_workers(&mut kids, &q, &board, &pipes, Duration::ZERO);

    let written = write_bytes_at_random(&pipes.write, BYTES, 0x9e37_79b9_7f4a_7c15, None);
    assert_eq!(written, BYTES);
    wait_until_everything_is_read(&q, &board, &pipes, written);
    stop_workers(&mut kids, &board, &pids);

    let stats = &q.ring().header().stats;
    let posted = stats.posted.load(Ordering::SeqCst);
    let taken = board.sum(Board::events);
    assert_eq!(board.sum(Board::bytes), written, "bytes read != written");
    assert_eq!(leftover_bytes(&pipes), 0, "bytes left in the pipes");
    assert_eq!(
        board.sum(Board::bad),
        0,
        "entries naming no pipe, or failed reads"
    );
    assert_eq!(stats.lost.load(Ordering::SeqCst), 0, "lost");
    assert_eq!(taken, posted, "every entry posted is taken exactly once");
    assert_eq!(stats.redelivered.load(Ordering::SeqCst), 0);
    assert_eq!(board.sum(Board::redelivered), 0);
    assert_only_the_owner_stays_registered(&q);
    let per_worker: Vec<u64> = (0..WORKERS)
        .map(|s| board.bytes(s).load(Ordering::SeqCst))
        .collect();
    eprintln!(
        "4 workers x {PIPES} pipes: {written} bytes written and read exactly once \
         (per worker {per_worker:?}), {posted} entries posted and taken, backlogged {}, \
         coalesced {}, in {:.2?}",
        stats.backlogged.load(Ordering::SeqCst),
        stats.coalesced.load(Ordering::SeqCst),
        t0.elapsed()
    );
}

#[test]
fn workers_killed_at_random_with_sigkill_lose_no_byte_and_stall_nothing() {
    bounded(
        Duration::from_secs(90),
        workers_killed_at_random_with_sigkill_lose_no_byte_and_stall_nothing_body,
    );
}

fn workers_killed_at_random_with_sigkill_lose_no_byte_and_stall_nothing_body() {
    const KILLS: u64 = 60;
    let t0 = Instant::now();
    let q = Instance::create_with(1024, 0, Duration::from_millis(100)).expect("kevent_init");
    let pipes = register_pipes(&q);
    let board = Board::new();
    let mut kids = Children::default();
    // Workers spend time on each entry, so that kills often find them holding a batch.
    let work = Duration::from_micros(50);
    let mut pids = fork_workers(&mut kids, &q, &board, &pipes, work);

    let mut kills = 0u64;
    // Entries found still CLAIMED by a worker right after its death: a lower bound of
    // what the reaper must deliver again.
    let mut stranded = 0u64;
    let mut mid_claim = 0u64;
    let written = std::thread::scope(|s| {
        // Paced (about 2 s) so that the kills land while events flow.
        let writer = s.spawn(|| {
            write_bytes_at_random(
                &pipes.write,
                BYTES,
                0x2545_f491_4f6c_dd1d,
                Some((100, Duration::from_millis(1))),
            )
        });
        let mut rng = XorShift(0xdead_beef_cafe_f00d);
        let deadline = Instant::now() + Duration::from_secs(40);
        while kills < KILLS || !writer.is_finished() {
            assert!(Instant::now() < deadline, "kill loop: out of time");
            std::thread::sleep(Duration::from_micros(5_000 + rng.below(35_000)));
            let slot = rng.below(WORKERS as u64) as usize;
            // Doom the worker outside its read-and-count section.
            let doom_by = Instant::now() + Duration::from_secs(2);
            while board
                .state(slot)
                .compare_exchange(IDLE, DOOMED, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
            {
                assert!(Instant::now() < doom_by, "worker {slot} stuck in a read");
                std::thread::yield_now();
            }
            let status = kids.kill(pids[slot]);
            assert_eq!(status.terminating_signal(), Some(libc::SIGKILL));
            kills += 1;
            let held = claimed_by(q.ring(), board.cid(slot).load(Ordering::SeqCst));
            stranded += held;
            mid_claim += u64::from(held > 0);
            board.cid(slot).store(0, Ordering::SeqCst);
            board.state(slot).store(IDLE, Ordering::SeqCst);
            pids[slot] = kids.fork(|| pipe_worker(&q, &board, slot, &pipes.read, work));
        }
        writer.join().expect("writer")
    });
    assert_eq!(written, BYTES);
    wait_until_everything_is_read(&q, &board, &pipes, written);
    stop_workers(&mut kids, &board, &pids);

    let stats = &q.ring().header().stats;
    let redelivered = stats.redelivered.load(Ordering::SeqCst);
    let flagged = board.sum(Board::redelivered);
    assert!(kills >= 50, "only {kills} kills");
    assert_eq!(board.sum(Board::bytes), written, "bytes read != written");
    assert_eq!(leftover_bytes(&pipes), 0, "bytes left in the pipes");
    assert_eq!(
        board.sum(Board::bad),
        0,
        "entries naming no pipe, or failed reads"
    );
    assert_eq!(stats.lost.load(Ordering::SeqCst), 0, "lost");
    assert!(
        redelivered >= stranded,
        "{stranded} entries were held by dead workers, only {redelivered} redelivered"
    );
    assert!(
        flagged <= redelivered,
        "{flagged} entries flagged REDELIVERED, {redelivered} redelivered"
    );
    assert_only_the_owner_stays_registered(&q);
    eprintln!(
        "{kills} SIGKILLs ({mid_claim} mid-claim): {written} bytes written and read exactly \
         once; {stranded} entries held by killed workers at their death, {redelivered} \
         redelivered (stats), {flagged} taken with KEVENT_RET_REDELIVERED; {} posted, lost 0; \
         sleepers left {}; in {:.2?}",
        stats.posted.load(Ordering::SeqCst),
        q.ring().sleepers(),
        t0.elapsed()
    );
}

// --- wake-ups across processes -----------------------------------------------------------

const SLEEPERS: usize = 6;
const SLEEP_TIMEOUT: u64 = 2_000 * MS;

/// How a sleeping child's `kevent_wait` ended.
#[derive(Debug, Clone, Copy)]
struct Woke {
    /// 1: with an entry; 2: empty claim (timeout or wake-up); 3: error.
    kind: u64,
    /// Monotonic ns at the call and at the return.
    called: u64,
    returned: u64,
    /// The entry's cookie.
    user: u64,
}

/// A child: one `kevent_wait` through the inherited handle (which attaches it), then
/// reports how it ended and, after `hold`, commits what it got.
fn sleeper(h: i32, board: &SharedWords, i: usize, hold: Duration) -> i32 {
    let q = match instance(h) {
        Ok(q) => q,
        Err(e) => {
            child_log(&format!("sleeper {i}: attaching: {e}"));
            return 3;
        }
    };
    let old = q.ring().uidx();
    let called = kevent_ring::monotonic_now();
    let r = kevent_wait(h, 1, old, Some(SLEEP_TIMEOUT), 0);
    let returned = kevent_ring::monotonic_now();
    let (kind, user) = match r {
        Ok(c) if c.owned > 0 => {
            let user = q.entry(c.start).map_or(0, |ev| ev.user);
            std::thread::sleep(hold);
            let (idx, over) = q.ring().kevent_view(c.end);
            if kevent_commit(h, idx, over).ok() != Some(1) {
                child_log(&format!("sleeper {i}: commit failed"));
                return 5;
            }
            (1, user)
        }
        Ok(_) => (2, 0),
        Err(e) => {
            child_log(&format!("sleeper {i}: kevent_wait: {e}"));
            (3, 0)
        }
    };
    for (f, v) in [called, returned, user, kind].into_iter().enumerate() {
        board.at(i * 4 + f).store(v, Ordering::SeqCst);
    }
    0
}

/// Puts `SLEEPERS` children to sleep in `kevent_wait`, makes sure they all sleep, runs
/// `fire`, and returns when each woke relative to the fire, and how. The one that gets
/// an entry holds it for `hold` before committing.
fn sleepers_then(q: &Instance, h: i32, hold: Duration, fire: impl FnOnce()) -> (u64, Vec<Woke>) {
    let board = SharedWords::new(SLEEPERS * 4);
    let mut kids = Children::default();
    let pids: Vec<Pid> = (0..SLEEPERS)
        .map(|i| kids.fork(|| sleeper(h, &board, i, hold)))
        .collect();
    let all_asleep = || q.ring().sleepers() as usize == SLEEPERS;
    assert!(
        wait_until(Duration::from_secs(5), all_asleep),
        "only {} of {SLEEPERS} children asleep",
        q.ring().sleepers()
    );
    std::thread::sleep(Duration::from_millis(30));
    assert!(all_asleep(), "a sleeper woke up by itself");
    let fired = kevent_ring::monotonic_now();
    fire();
    for (i, &pid) in pids.iter().enumerate() {
        kids.expect_success(pid, Duration::from_secs(5), &format!("sleeper {i}"));
    }
    let woke = (0..SLEEPERS)
        .map(|i| Woke {
            called: board.at(i * 4).load(Ordering::SeqCst),
            returned: board.at(i * 4 + 1).load(Ordering::SeqCst),
            user: board.at(i * 4 + 2).load(Ordering::SeqCst),
            kind: board.at(i * 4 + 3).load(Ordering::SeqCst),
        })
        .collect();
    (fired, woke)
}

/// Woke within 1 s of the fire (the others sleep until their 2 s timeout).
fn woken_early(fired: u64, w: &Woke) -> bool {
    w.returned < fired + 1_000 * MS
}

fn timed_out(w: &Woke) -> bool {
    w.kind == 2 && w.returned >= w.called + SLEEP_TIMEOUT - 50 * MS
}

#[test]
fn one_event_wakes_exactly_one_of_n_sleeping_processes() {
    bounded(
        Duration::from_secs(60),
        one_event_wakes_exactly_one_of_n_sleeping_processes_body,
    );
}

fn one_event_wakes_exactly_one_of_n_sleeping_processes_body() {
    let q = Instance::create(64, 0).expect("kevent_init");
    let h = register(q.clone());
    let mut ev = [user_ev(1, 0)];
    assert_eq!(kevent_ctl(h, KEVENT_CTL_ADD, &mut ev).unwrap(), 0);

    let (fired, woke) = sleepers_then(&q, h, Duration::ZERO, || {
        assert_eq!(
            kevent_ctl(h, KEVENT_CTL_READY, &mut [user_ev(1, 0)]).unwrap(),
            0
        );
    });
    let winners: Vec<&Woke> = woke.iter().filter(|w| w.kind == 1).collect();
    let early = woke.iter().filter(|w| woken_early(fired, w)).count();
    assert_eq!(winners.len(), 1, "{woke:?}");
    assert_eq!(winners[0].user, 1);
    assert!(woken_early(fired, winners[0]), "{woke:?}");
    assert_eq!(
        early, 1,
        "more than one process woke for one event: {woke:?}"
    );
    assert_eq!(
        woke.iter().filter(|w| timed_out(w)).count(),
        SLEEPERS - 1,
        "the others sleep until their timeout: {woke:?}"
    );
    eprintln!(
        "one event, {SLEEPERS} sleeping processes: 1 woke after {:.1} µs, {} timed out",
        (winners[0].returned - fired) as f64 / 1e3,
        SLEEPERS - 1
    );
    kevent_close(h).unwrap();
}

fn wakeup_all_case(hold: Duration) {
    let q = Instance::create(64, 0).expect("kevent_init");
    let h = register(q.clone());
    let mut ev = [user_ev(2, KEVENT_REQ_WAKEUP_ALL)];
    assert_eq!(kevent_ctl(h, KEVENT_CTL_ADD, &mut ev).unwrap(), 0);

    let (fired, woke) = sleepers_then(&q, h, hold, || {
        assert_eq!(
            kevent_ctl(h, KEVENT_CTL_READY, &mut [user_ev(2, 0)]).unwrap(),
            0
        );
    });
    let winners: Vec<&Woke> = woke.iter().filter(|w| w.kind == 1).collect();
    assert_eq!(winners.len(), 1, "one entry, one taker: {woke:?}");
    assert_eq!(winners[0].user, 2);
    assert!(
        woke.iter().all(|w| woken_early(fired, w) && w.kind != 3),
        "with KEVENT_REQ_WAKEUP_ALL every sleeper returns before its timeout: {woke:?}"
    );
    let slowest = woke.iter().map(|w| w.returned - fired).max().unwrap_or(0);
    eprintln!(
        "WAKEUP_ALL, {SLEEPERS} sleeping processes, taker holds the entry {hold:?}: all \
         returned within {:.1} µs",
        slowest as f64 / 1e3
    );
    kevent_close(h).unwrap();
}

#[test]
fn wakeup_all_wakes_every_sleeping_process() {
    bounded(Duration::from_secs(60), || wakeup_all_case(Duration::ZERO));
}

/// The losers of the race for the one entry must return too, whether or not the winner
/// has committed it yet.
#[test]
fn wakeup_all_wakes_every_sleeping_process_even_while_the_taker_holds_the_entry() {
    bounded(Duration::from_secs(60), || {
        wakeup_all_case(Duration::from_millis(300))
    });
}

#[test]
fn ready_with_no_entries_wakes_exactly_one_sleeping_process() {
    bounded(
        Duration::from_secs(60),
        ready_with_no_entries_wakes_exactly_one_sleeping_process_body,
    );
}

fn ready_with_no_entries_wakes_exactly_one_sleeping_process_body() {
    let q = Instance::create(64, 0).expect("kevent_init");
    let h = register(q.clone());
    let (fired, woke) = sleepers_then(&q, h, Duration::ZERO, || {
        assert_eq!(kevent_ctl(h, KEVENT_CTL_READY, &mut []).unwrap(), 0);
    });
    let early: Vec<&Woke> = woke.iter().filter(|w| woken_early(fired, w)).collect();
    assert_eq!(early.len(), 1, "{woke:?}");
    assert_eq!(early[0].kind, 2, "woken with an empty claim: {woke:?}");
    assert_eq!(woke.iter().filter(|w| timed_out(w)).count(), SLEEPERS - 1);
    kevent_close(h).unwrap();
}

/// A consumer that dies asleep cannot take its `waiters` count back: the reaper must
/// (ARCHITECTURE.md §3: no system call is made when nobody sleeps).
#[test]
fn a_process_killed_asleep_in_kevent_wait_leaves_no_phantom_sleeper() {
    bounded(
        Duration::from_secs(60),
        a_process_killed_asleep_in_kevent_wait_leaves_no_phantom_sleeper_body,
    );
}

fn a_process_killed_asleep_in_kevent_wait_leaves_no_phantom_sleeper_body() {
    let q = Instance::create_with(64, 0, Duration::from_millis(100)).expect("kevent_init");
    let h = register(q.clone());
    assert_eq!(
        kevent_ctl(h, KEVENT_CTL_ADD, &mut [user_ev(3, 0)]).unwrap(),
        0
    );
    let mut kids = Children::default();
    let pid = kids.fork(|| {
        let Ok(q) = instance(h) else { return 3 };
        let _ = kevent_wait(h, 1, q.ring().uidx(), Some(10_000 * MS), 0);
        0
    });
    assert!(wait_until(Duration::from_secs(5), || q.ring().sleepers() == 1));
    std::thread::sleep(Duration::from_millis(20));
    let status = kids.kill(pid);
    assert_eq!(status.terminating_signal(), Some(libc::SIGKILL));
    // The reaper frees the dead consumer's record within a few ticks...
    assert_only_the_owner_stays_registered(&q);
    // ... and nobody sleeps any more: publishing needs no FUTEX_WAKE.
    let stats = &q.ring().header().stats;
    let calls = stats.wake_calls.load(Ordering::SeqCst);
    assert_eq!(
        kevent_ctl(h, KEVENT_CTL_READY, &mut [user_ev(3, 0)]).unwrap(),
        0
    );
    assert_eq!(q.ring().kidx(), 1);
    let phantom = q.ring().sleepers();
    let wakes = stats.wake_calls.load(Ordering::SeqCst) - calls;
    assert_eq!(
        (phantom, wakes),
        (0, 0),
        "a dead sleeper is still counted (sleepers, FUTEX_WAKE calls for one publish)"
    );
    kevent_close(h).unwrap();
}

/// What the pipe tests found at eb3992a, reproduced in one process without timing: the
/// producer fills a slot that `uidx` freed before it has processed that release (here: a
/// `READY` through `kevent_ctl`; in the pipe tests: readiness handled before the
/// doorbell); the release was then skipped and the level-triggered pipe whose entry was
/// there never reported again although it stayed readable (fixed in 9efa260: `try_push`
/// notes the releases first).
#[test]
fn a_level_triggered_pipe_is_reported_again_when_its_slot_is_reused_before_its_release_is_seen() {
    bounded(Duration::from_secs(60), a_level_triggered_pipe_is_reported_again_when_its_slot_is_reused_before_its_release_is_seen_body);
}

/// A nonblocking pipe with one byte in it, and a level-triggered `ALWAYS_QUEUE` kevent
/// for its read end with cookie `user` (queued at ADD, since it is readable).
fn readable_pipe_kevent(user: u64) -> (OwnedFd, OwnedFd, Ukevent) {
    let (r, w) = nonblocking_pipe();
    write_bytes(&w, b"x");
    let ev = fd_ev(
        KEVENT_PIPE,
        &r,
        KEVENT_PIPE_READ,
        KEVENT_REQ_ALWAYS_QUEUE,
        user,
    );
    (r, w, ev)
}

fn a_level_triggered_pipe_is_reported_again_when_its_slot_is_reused_before_its_release_is_seen_body(
) {
    // No producer thread yet: the order of events is the test's. kevent_ctl publishes.
    let q = Instance::create_paused(2, 0, Duration::from_millis(100)).expect("kevent_init");
    let (_r, _w, pipe_ev) = readable_pipe_kevent(7);
    let mut add = [pipe_ev, user_ev(1, 0), user_ev(2, 0)];
    assert_eq!(q.ctl(KEVENT_CTL_ADD, &mut add).unwrap(), 0);
    assert_eq!(q.ring().kidx(), 1, "the readable pipe is queued at ADD");
    assert_eq!(q.ctl(KEVENT_CTL_READY, &mut [user_ev(1, 0)]).unwrap(), 0);
    assert_eq!(q.ring().kidx(), 2, "the ring (2 slots) is full");

    // Take and commit the pipe's entry; its byte stays in the pipe. (Ring-level calls:
    // this test is about the kernel's bookkeeping, not about how a consumer waits.)
    let me = q.consumer();
    let c = q.ring().claim(me, 1);
    assert_eq!((c.start, c.owned), (0, 1));
    assert_eq!(q.entry(0).map(|e| e.user), Some(7));
    q.commit_range(c.start..c.end);
    assert_eq!(q.ring().uidx(), 1);
    // A new event comes before the producer has looked at that release.
    assert_eq!(q.ctl(KEVENT_CTL_READY, &mut [user_ev(2, 0)]).unwrap(), 0);

    // From here on, consume everything: the pipe must come back.
    q.start().expect("start");
    let end = Instant::now() + Duration::from_secs(2);
    let mut again = false;
    while !again && Instant::now() < end {
        let c = q.ring().claim(me, 2);
        for pos in c.start..c.end {
            again |= q.entry(pos).is_some_and(|e| e.user == 7);
        }
        q.commit_range(c.start..c.end);
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        again,
        "the pipe is still readable but was never reported again: {}",
        ring_report(&q)
    );
}

/// A thread of the owning process that took entries with `kevent_wait` must not keep the
/// queue from closing (seen as a hang at the end of a test: `Instance::close` joining a
/// producer thread that never wakes).
#[test]
fn a_queue_closes_after_a_thread_of_its_owner_took_entries() {
    bounded(Duration::from_secs(10), || {
        let q = Instance::create(8, 0).expect("kevent_init");
        assert_eq!(q.ctl(KEVENT_CTL_ADD, &mut [user_ev(1, 0)]).unwrap(), 0);
        for timeout in [Some(0), Some(1_000 * MS)] {
            assert_eq!(q.ctl(KEVENT_CTL_READY, &mut [user_ev(1, 0)]).unwrap(), 0);
            let claim = q.wait(1, q.ring().uidx(), timeout, 0).expect("wait");
            assert_eq!(claim.owned, 1);
            q.commit_range(claim.start..claim.end);
        }
        // Let the producer thread settle, then close from this very thread (the one that
        // took the entries); the test's bound turns a hang into a failure.
        std::thread::sleep(Duration::from_millis(50));
        q.close();
    });
}

/// A level-triggered pipe whose entry a forked child takes and commits without reading
/// it empty must be reported again while a thread of the owner is the poller (blocked in
/// `epoll_wait` on the sources) and the producer thread is parked: somebody must
/// learn of the child's release and re-check the pipe (ARCHITECTURE.md §3, W4/W5). Found by a
/// hunt (helper session 2): the producer thread cancelled the doorbell request each time
/// it parked and parked again without servicing releases, so the child's commit rang
/// nothing, the poller slept on (the pipe's `EPOLLET` edge was long past), and
/// the still-readable pipe was never reported again.
#[test]
fn a_level_pipe_committed_by_a_child_is_reported_again_while_an_owner_thread_polls() {
    bounded(
        Duration::from_secs(30),
        a_level_pipe_committed_by_a_child_is_reported_again_while_an_owner_thread_polls_body,
    );
}

fn a_level_pipe_committed_by_a_child_is_reported_again_while_an_owner_thread_polls_body() {
    let q = Instance::create(8, 0).expect("kevent_init");
    let (_r, _w, pipe_ev) = readable_pipe_kevent(7);
    assert_eq!(q.ctl(KEVENT_CTL_ADD, &mut [pipe_ev]).unwrap(), 0);
    assert_eq!(q.ring().kidx(), 1, "the readable pipe is queued at ADD");

    // Words: 0 = the child holds the entry; 1 = the parent lets it commit; 2 = committed.
    let board = Arc::new(SharedWords::new(4));
    let mut kids = Children::default();
    let (qc, bc) = (q.clone(), board.clone());
    let kid = kids.fork(move || {
        let me = match qc.for_this_process() {
            Ok(me) => me,
            Err(_) => return 2,
        };
        let c = match me.wait(1, me.ring().uidx(), Some(2_000 * MS), 0) {
            Ok(c) if c.owned == 1 => c,
            _ => return 3,
        };
        if me.entry(c.start).map(|e| e.user) != Some(7) {
            return 4;
        }
        bc.at(0).store(1, Ordering::SeqCst);
        let end = Instant::now() + Duration::from_secs(10);
        while bc.at(1).load(Ordering::SeqCst) == 0 {
            if Instant::now() >= end {
                return 5;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        // Done with the entry; the byte stays in the pipe (level: report it again).
        me.commit_range(c.start..c.end);
        bc.at(2).store(1, Ordering::SeqCst);
        0
    });
    assert!(
        wait_until(Duration::from_secs(5), || board
            .at(0)
            .load(Ordering::SeqCst)
            == 1),
        "the child took the pipe's entry"
    );

    // A thread of the owner waits for events: it becomes the poller, and the producer
    // thread parks.
    let qt = q.clone();
    let waiter = std::thread::spawn(move || {
        let mut buf = [Ukevent::default(); 1];
        let n = qt.get_events(1, 1, Some(5_000 * MS), &mut buf, 0);
        (n.map_err(|e| e.to_string()), buf[0].user)
    });
    assert!(
        wait_until(Duration::from_secs(2), || q.ring().pollers() == 1
            && q.ring().producer_parked()),
        "the owner's thread polls the sources, the producer thread parks: {}",
        ring_report(&q)
    );
    std::thread::sleep(Duration::from_millis(20));
    board.at(1).store(1, Ordering::SeqCst);
    let released = Instant::now();
    kids.expect_success(kid, Duration::from_secs(10), "the child");
    let (n, user) = waiter.join().expect("waiter");
    let took = released.elapsed();
    eprintln!("reported again {took:?} after the child's commit");
    assert_eq!((n, user), (Ok(1), 7), "{}", ring_report(&q));
    // Within a wake-up's cost, not rescued by the wait's timeout (W1).
    assert!(
        took < Duration::from_secs(1),
        "the pipe stayed readable, but was reported again only {took:?} after the \
         child's commit (the waiter's timeout is 5 s): {}",
        ring_report(&q)
    );
    q.close();
}
