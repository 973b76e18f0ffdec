//! Protocol policies (Twisted's `twisted.protocols.policies`). Under construction.
