//! wbsessions: keeps Microsoft Graph Excel workbook sessions alive, from a terminal dashboard or headless.
//!
//! Layers, bottom up (each uses only those below it): `session`, `time`, `text`, `files`;
//! `graph`, `store`; `auth`; `engine`; `config`; `tui`, `proxy`; `cli`, `sim`; `commands`; the binary.

pub mod auth;
pub mod cli;
pub mod commands;
pub mod config;
pub mod engine;
pub(crate) mod files;
pub mod graph;
pub mod proxy;
pub mod session;
pub mod sim;
pub mod store;
pub(crate) mod text;
pub mod time;
pub mod tui;
