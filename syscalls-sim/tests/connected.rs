//! Consumers in other processes that connect through the queue's socket: a separate
//! program attaches and controls its own fds; a connected consumer sleeps in an event
//! loop of its own on the notify fd.

mod util;

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use kevent_syscalls::*;
use util::proc::{bounded, Children, SharedWords, XorShift};
use util::{
    assert_only_the_owner_stays_registered, fd_ev, my_fds_on_socket, ring_report, socketpair,
    user_ev, wait_until, MS,
};

/// Not a test: the entry point of the worker program this file runs (`util::worker`).
#[test]
fn kevent_worker_entry() {
    util::worker::entry()
}

// --- control through the socket ----------------------------------------------------------

#[test]
fn a_separate_program_attaches_through_the_socket_and_gets_the_events_of_its_own_fd() {
    bounded(
        Duration::from_secs(60),
        a_separate_program_attaches_through_the_socket_and_gets_the_events_of_its_own_fd_body,
    );
}

fn a_separate_program_attaches_through_the_socket_and_gets_the_events_of_its_own_fd_body() {
    let q = Instance::create(64, 0).expect("kevent_init");
    let path = std::env::temp_dir().join(format!("kevent-mp-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    q.listen(&path).expect("listen");

    let mut child = util::worker::command(&["connect", path.to_str().expect("utf-8 path")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the kevent worker");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().expect("stdout");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut child = Kill(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
        for what in ["added ", "ok "] {
            let Some(line) = util::worker::protocol_line(&mut lines, what) else {
                break;
            };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let line = |what: &str| {
        rx.recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("kevent worker: no `{what}` line"))
    };

    // The program made a socketpair after attaching and added one end through the
    // socket: the only way the queue's kernel (in this process) can hold it is the copy
    // that travelled by SCM_RIGHTS.
    let added = line("added");
    let ino: u64 = added
        .strip_prefix("added ino=")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("unexpected line {added:?}"));
    assert_eq!(my_fds_on_socket(ino), 1, "the kernel's copy of the fd");
    let stats = &q.ring().header().stats;
    assert_eq!(stats.registered.load(Ordering::SeqCst), 1);
    stdin.write_all(b"go\n").expect("go");

    assert_eq!(line("ok"), "ok user=12648430 bytes=5");
    let status = (|| {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = child.0.try_wait().expect("try_wait") {
                return st;
            }
            assert!(Instant::now() < end, "the kevent worker does not exit");
            std::thread::sleep(Duration::from_millis(1));
        }
    })();
    assert!(status.success(), "kevent worker: {status}");
    // REMOVE went through the socket too and closed the kernel's copy.
    assert_eq!(my_fds_on_socket(ino), 0);
    assert_eq!(stats.registered.load(Ordering::SeqCst), 0);
    assert_eq!(
        stats.posted.load(Ordering::SeqCst),
        1,
        "one event, one entry"
    );
    assert_eq!(stats.lost.load(Ordering::SeqCst), 0);
    assert_only_the_owner_stays_registered(&q);
    q.close();
    assert!(!path.exists(), "the socket file is removed at close");
}

#[test]
fn a_forked_child_adds_its_own_fd_through_the_inherited_handle() {
    bounded(
        Duration::from_secs(60),
        a_forked_child_adds_its_own_fd_through_the_inherited_handle_body,
    );
}

fn a_forked_child_adds_its_own_fd_through_the_inherited_handle_body() {
    let q = Instance::create(64, 0).expect("kevent_init");
    let h = register(q.clone());
    let board = SharedWords::new(2);
    let mut kids = Children::default();
    let pid = kids.fork(|| {
        let (a, b) = socketpair();
        let ino = rustix::fs::fstat(&a).expect("fstat").st_ino;
        let mut ev = [fd_ev(KEVENT_SOCKET, &a, KEVENT_SOCKET_RECV, 0, 0xfeed)];
        assert_eq!(kevent_ctl(h, KEVENT_CTL_ADD, &mut ev).expect("ADD"), 0);
        board.at(0).store(ino, Ordering::SeqCst);
        rustix::io::write(&b, b"ping").expect("write");
        let q = instance(h).expect("attached");
        let claim = kevent_wait(h, 1, q.ring().uidx(), Some(5_000 * MS), 0).expect("wait");
        assert_eq!(claim.owned, 1);
        let got = q.entry(claim.start).expect("entry");
        assert_eq!((got.id, got.user), (a.as_raw_fd() as u64, 0xfeed));
        assert_eq!(got.event & KEVENT_SOCKET_RECV, KEVENT_SOCKET_RECV);
        let mut buf = [0u8; 16];
        assert_eq!(rustix::io::read(&a, &mut buf).expect("read"), 4);
        q.commit_range(claim.start..claim.end);
        assert_eq!(
            kevent_ctl(h, KEVENT_CTL_REMOVE, &mut ev).expect("REMOVE"),
            0
        );
        board.at(1).store(1, Ordering::SeqCst);
        0
    });
    kids.expect_success(pid, Duration::from_secs(10), "child");
    assert_eq!(board.at(1).load(Ordering::SeqCst), 1);
    let ino = board.at(0).load(Ordering::SeqCst);
    assert_eq!(my_fds_on_socket(ino), 0, "REMOVE closed the kernel's copy");
    let stats = &q.ring().header().stats;
    assert_eq!(stats.posted.load(Ordering::SeqCst), 1);
    assert_eq!(stats.registered.load(Ordering::SeqCst), 0);
    assert_only_the_owner_stays_registered(&q);
    kevent_close(h).unwrap();
}

// --- notify fd of a connected consumer ---------------------------------------------------

/// A consumer in another process arms the queue's notify fd and sleeps in an epoll loop
/// of its own on it — never on the ring — while the owner fires user events in bursts:
/// every arrival reaches it, counted exactly (a lost wake-up leaves it asleep until the
/// test's deadline).
#[test]
fn a_connected_consumer_asleep_in_its_own_epoll_on_the_notify_fd_gets_every_event() {
    bounded(
        Duration::from_secs(60),
        a_connected_consumer_asleep_in_its_own_epoll_on_the_notify_fd_gets_every_event_body,
    );
}

fn a_connected_consumer_asleep_in_its_own_epoll_on_the_notify_fd_gets_every_event_body() {
    use rustix::event::epoll;
    const IDS: u64 = 16;
    const ARRIVALS: u64 = 3_000;
    let q = Instance::create(64, 0).expect("kevent_init");
    let path = std::env::temp_dir().join(format!("kevent-notify-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    q.listen(&path).expect("listen");
    let mut evs: Vec<Ukevent> = (1..=IDS).map(|id| user_ev(id, 0)).collect();
    assert_eq!(q.ctl(KEVENT_CTL_ADD, &mut evs).unwrap(), 0);
    // [armed, arrivals counted, wake-ups, failure code]
    let board = Arc::new(SharedWords::new(4));
    let mut kids = Children::default();
    let (b, p) = (board.clone(), path.clone());
    let child = kids.fork(move || {
        let Ok(cq) = Instance::connect(&p) else {
            return 2;
        };
        let Ok(nfd) = cq.notify_fd() else { return 3 };
        let Ok(ep) = epoll::create(epoll::CreateFlags::CLOEXEC) else {
            return 4;
        };
        if epoll::add(
            &ep,
            nfd,
            epoll::EventData::new_u64(1),
            epoll::EventFlags::IN,
        )
        .is_err()
        {
            return 5;
        }
        b.at(0).store(1, Ordering::SeqCst);
        let mut events = Vec::with_capacity(4);
        let mut buf = [Ukevent::default(); 64];
        let end = Instant::now() + Duration::from_secs(30);
        let ts = rustix::time::Timespec {
            tv_sec: 1,
            tv_nsec: 0,
        };
        while b.at(1).load(Ordering::SeqCst) < ARRIVALS && Instant::now() < end {
            events.clear();
            match epoll::wait(&ep, rustix::buffer::spare_capacity(&mut events), Some(&ts)) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(_) => return 6,
            }
            if events.is_empty() {
                continue; // a second without a wake-up: only the deadline ends this
            }
            b.at(2).fetch_add(1, Ordering::SeqCst);
            // The notify fd's rule: drain with zero-timeout waits until one is empty.
            loop {
                let Ok(n) = cq.get_events(0, 64, Some(0), &mut buf, 0) else {
                    return 7;
                };
                if n == 0 {
                    break;
                }
                for e in &buf[..n] {
                    let count = u64::from(e.ret_data[0]) | u64::from(e.ret_data[1]) << 32;
                    b.at(1).fetch_add(count, Ordering::SeqCst);
                }
            }
        }
        0
    });
    assert!(
        board.reaches(0, 1, Duration::from_secs(10)),
        "the child did not arm its notify fd"
    );
    let mut rng = XorShift(0x6e6f_7469_6679);
    let mut fired = 0;
    while fired < ARRIVALS {
        // Bursts of 1..=40 arrivals, then a pause long enough for the child to sleep.
        for _ in 0..=rng.below(40) {
            if fired == ARRIVALS {
                break;
            }
            let id = 1 + rng.below(IDS);
            assert_eq!(q.ctl(KEVENT_CTL_READY, &mut [user_ev(id, 0)]).unwrap(), 0);
            fired += 1;
        }
        std::thread::sleep(Duration::from_micros(200 + rng.below(800)));
    }
    let got = || board.at(1).load(Ordering::SeqCst);
    let all = wait_until(Duration::from_secs(20), || got() >= ARRIVALS);
    assert!(
        all,
        "the child counted {} of {ARRIVALS} arrivals after {} wake-ups; {}",
        got(),
        board.at(2).load(Ordering::SeqCst),
        ring_report(&q)
    );
    kids.expect_success(child, Duration::from_secs(10), "the notify-fd consumer");
    assert_eq!(got(), ARRIVALS, "counted more than were fired");
    assert!(board.at(2).load(Ordering::SeqCst) > 1);
    let _ = std::fs::remove_file(&path);
}
