//! e2e: carbon
