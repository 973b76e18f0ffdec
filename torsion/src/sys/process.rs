//! System calls for torsion's process support. Under construction.
