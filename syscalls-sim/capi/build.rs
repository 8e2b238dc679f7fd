//! Gives the shared library the name C programs find it by at run time: the linker
//! records `libkevent.so.0` (build.sh installs the file under that name, with a
//! `libkevent.so` link for `-lkevent`), not the Rust crate's file name.

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libkevent.so.0");
    println!("cargo:rerun-if-changed=build.rs");
}
