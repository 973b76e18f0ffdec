//! The one system call the poetry programs make themselves (the only `unsafe` of the crate).
#![allow(unsafe_code)]

/// Many connections need many descriptors: raises the soft RLIMIT_NOFILE to the hard limit
/// (best effort: on failure the program runs with the limit it has).
pub fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a live rlimit that getrlimit fills and setrlimit reads.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
