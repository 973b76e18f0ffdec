//! System calls for torsion's udp support. Under construction.
