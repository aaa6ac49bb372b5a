//! wbsessions: keeps Microsoft Graph Excel workbook sessions alive, from a terminal dashboard or headless.

pub mod auth;
pub mod cli;
pub mod commands;
pub mod config;
pub mod engine;
pub mod graph;
pub mod session;
pub mod sim;
pub mod store;
pub mod time;
pub mod tui;
