//! Records what the servers log when they close a connection over bad input, so that a
//! test can check the typed error behind each closing.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// The messages of the servers' events for a connection closed over bad input, or over
/// a limit.
const CLOSING: [&str; 2] = [
    "closing connection: bad input",
    "closing connection: over a limit",
];

/// Client address -> the error logged when its connection was closed.
static CLOSINGS: OnceLock<Mutex<HashMap<String, String>>> = OnceLock::new();

struct Closings;

#[derive(Default)]
struct Fields {
    message: String,
    peer: String,
    error: String,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let slot = match field.name() {
            "message" => &mut self.message,
            "peer" => &mut self.peer,
            "error" => &mut self.error,
            _ => return,
        };
        *slot = format!("{value:?}");
    }
}

impl<S: Subscriber> Layer<S> for Closings {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        if !event.metadata().target().starts_with("raft_net_smol") {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        if CLOSING.contains(&fields.message.as_str())
            && let Some(closings) = CLOSINGS.get()
        {
            let mut closings = closings.lock().unwrap();
            closings.insert(fields.peer, fields.error);
        }
    }
}

/// Starts recording, for the whole test binary, if not done yet.
pub(crate) fn capture() {
    CLOSINGS.get_or_init(|| {
        tracing_subscriber::registry().with(Closings).init();
        Mutex::new(HashMap::new())
    });
}

/// The error logged when a server closed the connection from `client` over bad input.
pub(crate) fn closing_of(client: SocketAddr) -> Option<String> {
    let closings = CLOSINGS.get()?.lock().unwrap();
    closings.get(&client.to_string()).cloned()
}
