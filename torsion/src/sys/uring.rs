//! System calls for torsion's uring support. Under construction.
