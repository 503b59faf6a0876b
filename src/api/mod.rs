//! The admin listener (SKELETON).
