//! install (in progress)
