//! `uring-probe`: prints what the kernel's io_uring offers (set-up features, and which of the
//! operations torsion knows by name it supports), one `key: value` line each.

fn main() {
    match torsion::poller::io_uring_probe() {
        Ok(f) => {
            println!("io_uring:   available");
            println!("features:   {}", f.features.join(" "));
            println!("ops:        {}", f.supported.join(" "));
            if !f.unsupported.is_empty() {
                println!("ops absent: {}", f.unsupported.join(" "));
            }
        }
        Err(e) => println!("io_uring:   unavailable ({e})"),
    }
}
