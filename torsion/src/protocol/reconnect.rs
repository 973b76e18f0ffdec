//! Reconnecting clients (Twisted's `ReconnectingClientFactory`). Under construction.
