//! Wiring (SKELETON).
