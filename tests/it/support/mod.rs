//! Shared test helpers.
#![allow(dead_code)]

pub mod admin;
pub mod db;
pub mod gateway;
pub mod raw;
pub mod standin;
pub mod upstream;
