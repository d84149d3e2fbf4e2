//! Outgoing email. StartAuth writes each message into the outbox table in its
//! own transaction; [`outbox::OutboxWorker`] delivers it through SMTP or, with
//! no SMTP configured, the dev mailbox.

pub mod outbox;
pub mod smtp;
pub mod templates;
pub mod transport;
