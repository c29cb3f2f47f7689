//! rust runtime (in progress)
