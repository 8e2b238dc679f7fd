//! Attaching to something that is not a sound ring of this ABI (ARCHITECTURE.md §3 "Untrusted
//! memory", §6): `Ring::attach` refuses it with the right `AttachError` and a message that
//! says what is wrong, and never touches memory it has not validated (no `SIGBUS`, no
//! panic). The memfds are built here: random or zero bytes, sealed and unsealed; real
//! header pages copied from a live queue's ring, then truncated or edited.

mod util;

use std::os::fd::{AsFd, OwnedFd};

use kevent_ring::layout::{ring_bytes, ABI_VERSION, HEADER_SIZE, MAGIC, SLOT_SIZE};
use kevent_ring::{AttachError, Broken};
use kevent_syscalls::*;
use rustix::fs::{MemfdFlags, SealFlags};
use util::proc::XorShift;

/// Offsets of the identity block (pinned by the ring's layout test).
const OFF_VERSION: usize = 8;
const OFF_HEADER_SIZE: usize = 12;
const OFF_SLOT_SIZE: usize = 16;
const OFF_CAPACITY: usize = 20;
const OFF_BROKEN: usize = 32;

/// Capacity of the live ring the header pages are copied from.
const CAP: u32 = 64;

/// A memfd holding `bytes`, sealed against shrinking (and growing) if `sealed`.
fn memfd_with(bytes: &[u8], sealed: bool) -> OwnedFd {
    let fd = rustix::fs::memfd_create(
        "kevent-attach-test",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )
    .expect("memfd_create");
    rustix::fs::ftruncate(&fd, bytes.len() as u64).expect("ftruncate");
    let mut off = 0;
    while off < bytes.len() {
        off += rustix::io::pwrite(&fd, &bytes[off..], off as u64).expect("pwrite");
    }
    if sealed {
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)
            .expect("seal");
    }
    fd
}

/// The header page of a live queue's ring (its producer running), read with `pread`.
fn real_header() -> Vec<u8> {
    let q = Instance::create(CAP, 0).expect("kevent_init");
    let memfd = q.ring().memfd().expect("a memfd ring");
    let mut page = vec![0u8; HEADER_SIZE];
    let mut off = 0;
    while off < HEADER_SIZE {
        let n = rustix::io::pread(memfd, &mut page[off..], off as u64).expect("pread");
        assert!(n > 0, "the ring memfd is shorter than its header");
        off += n;
    }
    q.close();
    page
}

/// A whole ring image of `len` bytes: the real header, zero slots.
fn ring_image(len: usize) -> Vec<u8> {
    let mut img = real_header();
    img.resize(len, 0);
    img
}

fn put_u32(img: &mut [u8], off: usize, v: u32) {
    img[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

/// Attaches, expecting `want`; checks that the message says `says`.
fn refused(fd: &OwnedFd, want: AttachError, says: &str) {
    match Ring::attach(fd.as_fd()) {
        Ok(r) => panic!("attached to a bad ring: {r:?}; expected {want:?}"),
        Err(e) => {
            assert_eq!(e, want);
            let msg = e.to_string();
            assert!(msg.contains(says), "message {msg:?} does not say {says:?}");
        }
    }
}

#[test]
fn a_real_ring_image_in_a_sealed_memfd_attaches() {
    let fd = memfd_with(&ring_image(ring_bytes(CAP)), true);
    let ring = Ring::attach(fd.as_fd()).expect("a sound ring image");
    assert_eq!(ring.capacity(), u64::from(CAP));
    assert_eq!(ring.broken(), None);
}

#[test]
fn a_memfd_of_zero_bytes_has_a_bad_magic() {
    let fd = memfd_with(&vec![0u8; ring_bytes(CAP)], true);
    refused(&fd, AttachError::BadMagic { found: 0 }, "bad magic");
}

#[test]
fn a_memfd_of_random_bytes_has_a_bad_magic() {
    let mut bytes = vec![0u8; ring_bytes(CAP)];
    XorShift(0x1234_5678_9abc_def1).fill(&mut bytes);
    let found = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    assert_ne!(found, MAGIC);
    let fd = memfd_with(&bytes, true);
    refused(&fd, AttachError::BadMagic { found }, "bad magic");
}

#[test]
fn an_unsealed_memfd_is_refused_before_it_is_read() {
    let mut bytes = vec![0u8; ring_bytes(CAP)];
    XorShift(7).fill(&mut bytes);
    refused(
        &memfd_with(&bytes, false),
        AttachError::NotSealed,
        "unsealed",
    );
    // Even a perfect ring image: anyone could truncate it under us.
    let fd = memfd_with(&ring_image(ring_bytes(CAP)), false);
    refused(&fd, AttachError::NotSealed, "unsealed");
}

#[test]
fn a_memfd_that_does_not_allow_sealing_is_refused_as_unsealed() {
    let img = ring_image(ring_bytes(CAP));
    let fd = rustix::fs::memfd_create("kevent-no-sealing", MemfdFlags::CLOEXEC).expect("memfd");
    rustix::fs::ftruncate(&fd, img.len() as u64).expect("ftruncate");
    rustix::io::pwrite(&fd, &img, 0).expect("pwrite");
    refused(&fd, AttachError::NotSealed, "unsealed");
}

#[test]
fn a_file_that_is_no_memfd_is_refused_as_unsealed() {
    let (r, _w) = rustix::pipe::pipe().expect("pipe");
    refused(&r, AttachError::NotSealed, "unsealed");
    let dir = std::env::temp_dir().join(format!("kevent-attach-{}", std::process::id()));
    std::fs::write(&dir, ring_image(ring_bytes(CAP))).expect("write a file");
    let file: OwnedFd = std::fs::File::open(&dir).expect("open").into();
    let _ = std::fs::remove_file(&dir);
    refused(&file, AttachError::NotSealed, "unsealed");
}

#[test]
fn a_memfd_smaller_than_a_header_is_too_small() {
    refused(
        &memfd_with(&[], true),
        AttachError::TooSmall { len: 0 },
        "smaller than a ring header",
    );
    let short = &real_header()[..100];
    refused(
        &memfd_with(short, true),
        AttachError::TooSmall { len: 100 },
        "smaller than a ring header",
    );
}

#[test]
fn a_real_header_in_a_memfd_too_short_for_its_slots_is_truncated() {
    let needed = ring_bytes(CAP) as u64;
    for len in [
        HEADER_SIZE,
        HEADER_SIZE + 10 * SLOT_SIZE,
        ring_bytes(CAP) - 1,
    ] {
        let fd = memfd_with(&ring_image(len), true);
        refused(
            &fd,
            AttachError::Truncated {
                len: len as u64,
                needed,
            },
            "truncated",
        );
    }
}

#[test]
fn a_ring_of_another_abi_version_is_refused_with_both_versions_named() {
    let mut img = ring_image(ring_bytes(CAP));
    let other = ABI_VERSION + 1;
    put_u32(&mut img, OFF_VERSION, other);
    let fd = memfd_with(&img, true);
    refused(
        &fd,
        AttachError::Version { found: other },
        &format!("ABI v{other}"),
    );
    let msg = Ring::attach(fd.as_fd()).unwrap_err().to_string();
    assert!(msg.contains(&format!("v{ABI_VERSION}")), "{msg}");
}

#[test]
fn a_ring_with_another_geometry_is_refused() {
    let mut img = ring_image(ring_bytes(CAP));
    put_u32(&mut img, OFF_SLOT_SIZE, 128);
    refused(
        &memfd_with(&img, true),
        AttachError::Geometry {
            field: "slot size",
            found: 128,
            expected: SLOT_SIZE as u32,
        },
        "slot size is 128",
    );
    let mut img = ring_image(ring_bytes(CAP));
    put_u32(&mut img, OFF_HEADER_SIZE, 8192);
    refused(
        &memfd_with(&img, true),
        AttachError::Geometry {
            field: "header size",
            found: 8192,
            expected: HEADER_SIZE as u32,
        },
        "header size is 8192",
    );
}

#[test]
fn a_ring_with_an_impossible_capacity_is_refused() {
    for cap in [0, 1, 3, 63, 1 << 25, u32::MAX] {
        let mut img = ring_image(ring_bytes(CAP));
        put_u32(&mut img, OFF_CAPACITY, cap);
        refused(
            &memfd_with(&img, true),
            AttachError::Capacity { found: cap },
            "not a power of two",
        );
    }
    // A capacity larger than the file holds: truncated, and nothing beyond it is mapped.
    let mut img = ring_image(ring_bytes(CAP));
    put_u32(&mut img, OFF_CAPACITY, 1 << 24);
    refused(
        &memfd_with(&img, true),
        AttachError::Truncated {
            len: ring_bytes(CAP) as u64,
            needed: ring_bytes(1 << 24) as u64,
        },
        "truncated",
    );
}

#[test]
fn a_ring_marked_broken_is_refused_with_the_reason() {
    let mut img = ring_image(ring_bytes(CAP));
    put_u32(&mut img, OFF_BROKEN, Broken::ClaimIndex as u32);
    refused(
        &memfd_with(&img, true),
        AttachError::Broken(Broken::ClaimIndex),
        "marked broken",
    );
}

#[test]
fn a_write_sealed_ring_is_refused_with_an_error_not_a_crash() {
    let fd = memfd_with(&ring_image(ring_bytes(CAP)), false);
    rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::WRITE).expect("seal");
    match Ring::attach(fd.as_fd()) {
        Ok(r) => panic!("attached read-write to a write-sealed memfd: {r:?}"),
        Err(AttachError::Io(kind, msg)) => {
            assert_eq!(kind, std::io::ErrorKind::PermissionDenied, "{msg}");
            assert!(msg.contains("mapping the ring"), "{msg}");
        }
        Err(e) => panic!("unexpected {e:?}"),
    }
}

#[test]
fn queue_attach_passes_the_reason_on_as_invalid_data() {
    let fd = memfd_with(&vec![0u8; ring_bytes(CAP)], true);
    let doorbell = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap();
    let e = Instance::attach(fd.as_fd(), doorbell).expect_err("a memfd of zeroes");
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    assert!(e.to_string().contains("bad magic"), "{e}");
}

/// What `Ring::attach` must answer for a sealed image, checked in the documented order
/// (magic, version, sizes, capacity, length, broken) — the oracle of the fuzz test.
fn expected(img: &[u8]) -> Result<u32, AttachError> {
    let u32_at = |o: usize| u32::from_le_bytes(img[o..o + 4].try_into().unwrap());
    let len = img.len() as u64;
    if img.len() < HEADER_SIZE {
        return Err(AttachError::TooSmall { len });
    }
    let magic = u64::from_le_bytes(img[..8].try_into().unwrap());
    if magic != MAGIC {
        return Err(AttachError::BadMagic { found: magic });
    }
    if u32_at(OFF_VERSION) != ABI_VERSION {
        return Err(AttachError::Version {
            found: u32_at(OFF_VERSION),
        });
    }
    if u32_at(OFF_HEADER_SIZE) != HEADER_SIZE as u32 {
        return Err(AttachError::Geometry {
            field: "header size",
            found: u32_at(OFF_HEADER_SIZE),
            expected: HEADER_SIZE as u32,
        });
    }
    if u32_at(OFF_SLOT_SIZE) != SLOT_SIZE as u32 {
        return Err(AttachError::Geometry {
            field: "slot size",
            found: u32_at(OFF_SLOT_SIZE),
            expected: SLOT_SIZE as u32,
        });
    }
    let cap = u32_at(OFF_CAPACITY);
    if !cap.is_power_of_two() || !(2..=1 << 24).contains(&cap) {
        return Err(AttachError::Capacity { found: cap });
    }
    if len < ring_bytes(cap) as u64 {
        return Err(AttachError::Truncated {
            len,
            needed: ring_bytes(cap) as u64,
        });
    }
    match Broken::from_code(u32_at(OFF_BROKEN)) {
        Some(b) => Err(AttachError::Broken(b)),
        None => Ok(cap),
    }
}

/// 600 corrupt identity blocks and lengths: `attach` answers exactly what the documented
/// checks say, never panics, and never maps past the end of the file.
#[test]
fn attach_answers_every_corrupt_identity_exactly_as_documented() {
    let header = real_header();
    let mut rng = XorShift(0x0dd_ba11_cafe_beef);
    let mut seen = std::collections::BTreeMap::<String, u32>::new();
    for i in 0..600 {
        let mut img = header.clone();
        // Corrupt 1-3 bytes of the identity block, mostly in the checked fields; some
        // rounds write a "plausible" value into a whole field instead.
        for _ in 0..1 + rng.next() % 3 {
            let off = (rng.next() % 48) as usize;
            if rng.next().is_multiple_of(4) {
                let word = off & !3;
                let v =
                    [0, 1, 2, 3, 64, 4096, 1 << 24, 1 << 25, u32::MAX][(rng.next() % 9) as usize];
                put_u32(&mut img, word, v);
            } else {
                img[off] = rng.next() as u8;
            }
        }
        let len = match rng.next() % 4 {
            0 => (rng.next() % (ring_bytes(CAP) as u64 + 1)) as usize,
            _ => ring_bytes(CAP),
        };
        img.resize(len, 0);
        let want = expected(&img);
        let got = Ring::attach(memfd_with(&img, true).as_fd()).map(|r| r.capacity() as u32);
        assert_eq!(got, want, "round {i}");
        let kind = match &got {
            Ok(_) => "ok".to_string(),
            Err(e) => format!("{e:?}")
                .split([' ', '('])
                .next()
                .unwrap_or("")
                .to_string(),
        };
        *seen.entry(kind).or_default() += 1;
    }
    eprintln!("600 corrupt identities: {seen:?}");
    // The fuzz reached every kind of refusal (and some that still attach).
    for kind in [
        "ok",
        "TooSmall",
        "BadMagic",
        "Version",
        "Geometry",
        "Capacity",
        "Truncated",
        "Broken",
    ] {
        assert!(seen.contains_key(kind), "no round ended {kind}: {seen:?}");
    }
}
