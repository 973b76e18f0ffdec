//! Standard I/O as a transport (Twisted's `StandardIO`). Under construction.
