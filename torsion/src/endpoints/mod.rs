//! Endpoints and endpoint strings (Twisted's `twisted.internet.endpoints`). Under construction.
