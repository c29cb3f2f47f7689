//! e2e: protocol
