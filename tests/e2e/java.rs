//! e2e: java
