//! Command line (SKELETON).
