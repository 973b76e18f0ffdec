//! TLS for torsion on rustls. Under construction.
