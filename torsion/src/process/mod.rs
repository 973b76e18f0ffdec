//! Child processes (Twisted's `spawnProcess`). Under construction.
