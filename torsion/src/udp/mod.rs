//! UDP (Twisted's `listenUDP`). Under construction.
