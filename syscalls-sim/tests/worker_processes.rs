//! Worker processes sharing one queue (ARCHITECTURE.md §5, §7): four `fork`ed consumers
//! read 2,000 level-triggered pipes, each byte exactly once; then workers killed with
//! `SIGKILL` at random, mid-batch, lose no byte and stall nothing (the reaper delivers
//! what a dead worker held again).
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
    assert_only_the_owner_stays_registered, drain, pipes_registered, raise_fd_limit, ring_report,
    wait_until, Pipes, MS,
};

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
