//! The one integration-test binary (every file under tests/ would be another
//! binary to link). Each module tests one area through the public API, on
//! both backends where storage matters.

mod client;
mod helpers;

mod abuse;
mod bad_input;
mod cancel;
mod cli;
mod codes;
mod delivery;
mod enumeration;
mod faults;
mod files;
mod gateway;
mod identity;
mod keys;
mod limits;
mod links;
mod login;
mod mail;
mod mail_security;
mod ops;
mod passkeys;
mod refresh;
mod server;
mod sessions;
mod store;
mod tenants;
mod users;
