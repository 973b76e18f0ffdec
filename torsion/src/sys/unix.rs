//! System calls for torsion's unix support. Under construction.
