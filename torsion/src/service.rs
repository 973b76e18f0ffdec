//! Long-lived client connections (Twisted's `ClientService`). Under construction.
