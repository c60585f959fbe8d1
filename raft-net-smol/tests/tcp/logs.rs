//! Captures what the server logs when it closes a connection over bad input, so that
//! tests can check the typed error behind each closing.

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// The messages of the server's events for a connection closed over bad input, or
/// over a limit.
const CLOSING: [&str; 2] = [
    "closing connection: bad input",
    "closing connection: over a limit",
];

/// Closings seen so far: the client's address and the error, as logged.
#[derive(Debug, Default)]
struct Closings(Mutex<Vec<(String, String)>>);

/// A subscriber that only keeps the server's closings.
struct Capture(Arc<Closings>);

#[derive(Default)]
struct Fields {
    message: String,
    peer: String,
    error: String,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let value = format!("{value:?}");
        match field.name() {
            "message" => self.message = value,
            "peer" => self.peer = value,
            "error" => self.error = value,
            _ => {}
        }
    }
}

impl Subscriber for Capture {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.target().starts_with("raft_net_smol")
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        if CLOSING.contains(&fields.message.as_str()) {
            let mut closings = self.0.0.lock().unwrap();
            closings.push((fields.peer, fields.error));
        }
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

static CLOSINGS: OnceLock<Arc<Closings>> = OnceLock::new();

/// Starts capturing, for the whole test binary, if not done yet.
pub(crate) fn capture() {
    CLOSINGS.get_or_init(|| {
        let closings = Arc::new(Closings::default());
        tracing::subscriber::set_global_default(Capture(Arc::clone(&closings))).unwrap();
        closings
    });
}

/// The error logged when the server closed the connection from `client`, if it did
/// over bad input or a limit.
pub(crate) fn closing_of(client: SocketAddr) -> Option<String> {
    let closings = CLOSINGS.get()?.0.lock().unwrap();
    let client = client.to_string();
    // The latest: tests run in parallel and share the capture, and a client port the
    // system handed out before (to another test's connection) may be handed out again.
    closings
        .iter()
        .rev()
        .find(|(peer, _)| *peer == client)
        .map(|(_, error)| error.clone())
}
