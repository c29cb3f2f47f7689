//! e2e: python
