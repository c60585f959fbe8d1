//! Client sessions: exactly-once commands for any state machine (Raft thesis §6.3).
//!
//! A client that sends a command and hears nothing back (the leader crashed, the
//! connection broke, the answer was lost) cannot tell whether the command was applied.
//! If it sends the command again, Raft may apply it twice: a retried `withdraw 10`
//! withdraws 20. [`Sessions`] wraps any [`StateMachine`] and makes such retries safe:
//!
//! * a client first opens a session with [`SessionCommand::Register`], a command in the
//!   log like any other, so every server knows the session; its [`ClientId`] is the log
//!   index of that entry, unique in the cluster;
//! * it then numbers its commands 1, 2, 3, … and sends each as a
//!   [`SessionCommand::Request`] carrying its id and number, retrying it with the *same*
//!   number until it gets an answer, and sends command `n + 1` only after the answer to
//!   `n` (one command in flight per session; a client that wants more opens more
//!   sessions);
//! * the wrapper keeps, for each session, the last number it applied and that command's
//!   response. A request with a higher number is applied and its response recorded; one
//!   with the *same* number is a retry of a command already applied, and gets the
//!   recorded response ([`SessionResponse::Duplicate`]) without being applied again; one
//!   with a lower number gets [`SessionError::StaleSequence`] and is not applied (its
//!   answer was superseded, so no client still waits for it).
//!
//! The table is part of the replicated state: it is built only from applied commands, so
//! every server holds the same one, and it travels in the wrapper's snapshots, so a
//! server restored from a snapshot deduplicates exactly as one that applied the log.
//!
//! # Expiry is decided by the log
//!
//! The table holds at most `capacity` sessions ([`DEFAULT_CAPACITY`] unless set with
//! [`Sessions::with_capacity`]). Registering a session when the table is full evicts
//! the session *least recently used*, where "used" means "named by an applied command"
//! and recency is the log index of that command. Nothing else expires a session: not a
//! clock, not a timer, not a server's local state. The table after applying entry `i` is
//! a function of entries `1..=i` alone, so every server evicts the same sessions at the
//! same log position, and the last-use indices travel in the snapshot so a restored
//! server keeps making the same choices. (A wall-clock expiry would not be deterministic:
//! two servers applying the same entry at different times would disagree on whether a
//! session is still alive, and one would apply a command the other rejects.)
//!
//! The capacity is part of the state machine's definition, like its code: **every server
//! of a cluster must use the same capacity**, or they evict differently and diverge.
//!
//! A command of a session that was evicted (or never registered) gets
//! [`SessionError::UnknownSession`] and is not applied. If the client had not sent that
//! command before, it may open a new session and send it there; if an earlier attempt
//! may have been applied under the evicted session, its outcome is unknown and the
//! client must report that rather than retry (the thesis's answer too).
//!
//! # Snapshot format
//!
//! A snapshot of the wrapper is the four bytes `RSES`, a little-endian `u16` format
//! version (now [`SNAPSHOT_VERSION`], 2), the length of the session table as a
//! little-endian `u64`, the postcard encoding of that table (client id, last-use index,
//! last sequence number and response, per session), then the inner state machine's
//! snapshot bytes to the end. Because the inner bytes come last and unframed, a snapshot
//! is written as the table followed by the inner machine's own stream
//! ([`StateMachine::capture_snapshot_stream`]) and restored by handing the inner machine
//! a reader over its part ([`StateMachine::restore_from`]): neither end holds the whole
//! snapshot when the inner machine streams. Version 1 (the same table and the inner
//! bytes, both in one postcard record) is still read. Bytes that do not start that way,
//! of another version, or whose table is inconsistent are refused with
//! [`StateMachineError::InvalidSnapshot`] and change nothing.
//!
//! # Example
//!
//! ```
//! use raft_impl::session::{ClientId, SessionCommand, SessionError, SessionResponse, Sessions};
//! use raft_traits::{
//!     LogId, LogIndex, Snapshot, SnapshotMeta, StateMachine, StateMachineError, Term,
//! };
//!
//! /// A counter: each command adds to it and answers with the new total.
//! #[derive(Debug, Default)]
//! struct Counter(u64);
//!
//! impl StateMachine<u64> for Counter {
//!     type Response = u64;
//!     async fn apply(&mut self, _: LogId, add: u64) -> u64 {
//!         self.0 += add;
//!         self.0
//!     }
//!     async fn snapshot(&mut self) -> Result<Snapshot, StateMachineError> {
//!         unimplemented!("not needed here")
//!     }
//!     async fn restore(&mut self, _: Snapshot) -> Result<(), StateMachineError> {
//!         unimplemented!("not needed here")
//!     }
//! }
//!
//! let mut counter = Sessions::new(Counter::default());
//! let at = |index| LogId::new(Term(1), LogIndex(index));
//! futures::executor::block_on(async {
//!     // Registering is a command in the log; the session's id is its index.
//!     let client = match counter.apply(at(1), SessionCommand::Register).await {
//!         Ok(SessionResponse::Registered(client)) => client,
//!         other => panic!("{other:?}"),
//!     };
//!     assert_eq!(client, ClientId(1));
//!
//!     let add_5 = SessionCommand::Request { client, sequence: 1, command: 5 };
//!     assert_eq!(counter.apply(at(2), add_5.clone()).await, Ok(SessionResponse::Applied(5)));
//!     // The answer was lost and the client sent it again: not applied twice.
//!     assert_eq!(counter.apply(at(3), add_5).await, Ok(SessionResponse::Duplicate(5)));
//!     assert_eq!(counter.inner().0, 5);
//!
//!     // A session nobody registered is refused.
//!     let stranger = SessionCommand::Request { client: ClientId(99), sequence: 1, command: 1 };
//!     assert_eq!(
//!         counter.apply(at(4), stranger).await,
//!         Err(SessionError::UnknownSession { client: ClientId(99) })
//!     );
//! });
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroUsize;
use std::sync::Arc;

use raft_traits::{
    Bytes, Codec, LogId, LogIndex, Postcard, Snapshot, SnapshotJob, SnapshotMeta, SnapshotReader,
    SnapshotSource, SnapshotWriter, StateMachine, StateMachineError, StorageError, async_trait,
    read_all,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// How many sessions a [`Sessions`] keeps unless told otherwise.
pub const DEFAULT_CAPACITY: NonZeroUsize = NonZeroUsize::new(4096).expect("4096 is not zero");

/// The version of the snapshot format that [`Sessions`] writes (and reads, with
/// version 1 before it).
pub const SNAPSHOT_VERSION: u16 = 2;

/// The first format: the table and the inner bytes in one postcard record
/// ([`SnapshotBody`]), so the inner bytes could be neither streamed nor skipped to.
const SNAPSHOT_VERSION_1: u16 = 1;

/// What precedes the session table in a version-2 snapshot: the magic, the version and
/// the table's length.
const HEADER_LEN: usize = SNAPSHOT_MAGIC.len() + 2 + 8;

/// The first bytes of every snapshot of a [`Sessions`].
const SNAPSHOT_MAGIC: [u8; 4] = *b"RSES";

/// A client session: the log index of the entry that registered it.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct ClientId(pub u64);

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.0)
    }
}

/// A command of a state machine wrapped in [`Sessions`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SessionCommand<C> {
    /// Opens a session. Answered with [`SessionResponse::Registered`], whose id is the
    /// log index of this command. May evict the least recently used session.
    Register,
    /// Command number `sequence` of session `client`: applied if `sequence` is above the
    /// last one applied for the session, answered from the table if equal, refused if
    /// lower. Sequence numbers start at 1.
    Request {
        /// The session.
        client: ClientId,
        /// The command's number in the session.
        sequence: u64,
        /// The command of the inner state machine.
        command: C,
    },
}

/// What a [`Sessions`] answers when a command is accepted.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SessionResponse<R> {
    /// The answer to [`SessionCommand::Register`]: the new session.
    Registered(ClientId),
    /// The request was applied now; this is the inner state machine's response.
    Applied(R),
    /// The request had been applied before (this is a retry); this is the response
    /// recorded then. The inner state machine did not see it again.
    Duplicate(R),
}

impl<R> SessionResponse<R> {
    /// The inner state machine's response, whether applied now or recorded earlier;
    /// `None` for [`Registered`](Self::Registered).
    pub fn into_response(self) -> Option<R> {
        match self {
            SessionResponse::Applied(response) | SessionResponse::Duplicate(response) => {
                Some(response)
            }
            SessionResponse::Registered(_) => None,
        }
    }
}

/// Why a [`Sessions`] did not apply a command. The inner state machine did not see it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, thiserror::Error, Serialize, Deserialize)]
pub enum SessionError {
    /// No such session: it was never registered, or it expired (evicted as the least
    /// recently used when the table was full). The client needs a new session; a command
    /// it may already have sent under this one has an unknown outcome.
    #[error("no session {client}: it was never registered, or it expired")]
    UnknownSession {
        /// The session the command named.
        client: ClientId,
    },
    /// The session has already applied a later command, so this one's answer is no
    /// longer kept, and applying it now would reorder the client's commands.
    #[error(
        "session {client} is at sequence number {last}; command {sequence} is stale (numbers start at 1 and must grow)"
    )]
    StaleSequence {
        /// The session.
        client: ClientId,
        /// The command's number.
        sequence: u64,
        /// The last number the session applied (0: none yet).
        last: u64,
    },
    /// The command's log position is not after the last applied one, so it was not
    /// applied again. Raft never does this; the wrapper guards against it so that the
    /// state never moves backwards.
    #[error("the command at {log_id} is not after the last applied one, {last_applied}")]
    AlreadyApplied {
        /// Where the command was.
        log_id: LogId,
        /// The last applied command.
        last_applied: LogId,
    },
}

/// What applying a [`SessionCommand`] returns.
pub type SessionResult<R> = Result<SessionResponse<R>, SessionError>;

/// One session's entry in the table.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Session<R> {
    /// The log index of the last command that named this session (its registration
    /// first): the key of least-recently-used eviction.
    last_used: LogIndex,
    /// The last command applied for it, if any.
    last: Option<Recorded<R>>,
}

/// A command's number and the response it got.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Recorded<R> {
    sequence: u64,
    response: R,
}

/// A session as stored in a snapshot.
#[derive(Serialize, Deserialize)]
struct SessionRecord<R> {
    client: ClientId,
    last_used: LogIndex,
    last: Option<Recorded<R>>,
}

/// What follows the magic and version in a version-1 snapshot (read, no longer written;
/// the tests write one).
#[derive(Serialize, Deserialize)]
struct SnapshotBody<R> {
    sessions: Vec<SessionRecord<R>>,
    inner: Bytes,
}

/// A state machine wrapped in a table of client sessions, which applies each client
/// command exactly once; see the [module documentation](self).
///
/// `M` is the inner state machine and `R` its response type (`M::Response`; a parameter
/// of its own because `M` may implement [`StateMachine`] for several command types).
/// The wrapper is itself a [`StateMachine`] of [`SessionCommand`]s, answering with a
/// [`SessionResult`], so it goes wherever `M` went.
pub struct Sessions<M, R> {
    inner: M,
    capacity: NonZeroUsize,
    sessions: BTreeMap<ClientId, Session<R>>,
    /// `sessions` ordered by `last_used`. Each applied command names one session, so the
    /// indices are distinct.
    by_last_use: BTreeMap<LogIndex, ClientId>,
    last_applied: LogId,
}

impl<M, R> Sessions<M, R> {
    /// Wraps `inner`, with no session yet, keeping at most [`DEFAULT_CAPACITY`]
    /// sessions.
    pub fn new(inner: M) -> Self {
        Self::with_capacity(inner, DEFAULT_CAPACITY)
    }

    /// Wraps `inner`, keeping at most `capacity` sessions. Every server of a cluster
    /// must use the same capacity.
    pub fn with_capacity(inner: M, capacity: NonZeroUsize) -> Self {
        Sessions {
            inner,
            capacity,
            sessions: BTreeMap::new(),
            by_last_use: BTreeMap::new(),
            last_applied: LogId::default(),
        }
    }

    /// The inner state machine.
    pub fn inner(&self) -> &M {
        &self.inner
    }

    /// The inner state machine, unwrapped.
    pub fn into_inner(self) -> M {
        self.inner
    }

    /// How many sessions the table may hold.
    pub fn capacity(&self) -> NonZeroUsize {
        self.capacity
    }

    /// How many sessions the table holds.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether the table holds no session.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// The last sequence number applied for `client` (0 if none yet); `None` if there is
    /// no such session.
    pub fn last_sequence(&self, client: ClientId) -> Option<u64> {
        let session = self.sessions.get(&client)?;
        Some(session.last.as_ref().map_or(0, |last| last.sequence))
    }

    /// Every session, by id, with the last sequence number applied for it (0 if none
    /// yet).
    pub fn sessions(&self) -> impl Iterator<Item = (ClientId, u64)> + '_ {
        self.sessions.iter().map(|(&client, session)| {
            (
                client,
                session.last.as_ref().map_or(0, |last| last.sequence),
            )
        })
    }

    /// The log id of the last command applied (or of the restored snapshot).
    pub fn last_applied(&self) -> LogId {
        self.last_applied
    }

    /// Evicts the least recently used sessions until the table fits its capacity.
    fn evict_beyond_capacity(&mut self) {
        while self.sessions.len() > self.capacity.get() {
            let Some((last_used, client)) = self.by_last_use.pop_first() else {
                break;
            };
            self.sessions.remove(&client);
            tracing::debug!(%client, %last_used, "session expired (least recently used)");
        }
    }
}

impl<M, R: Serialize> Sessions<M, R> {
    /// The table and `inner`'s bytes in the snapshot format.
    fn encode_snapshot(&self, inner: Bytes) -> Result<Vec<u8>, StateMachineError> {
        encode_snapshot(&self.sessions, inner)
    }
}

/// The records of `sessions` as a snapshot's table holds them. Written with
/// `R = &Response` and read with `R = Response`: the encodings are the same.
fn records<R>(sessions: &BTreeMap<ClientId, Session<R>>) -> Vec<SessionRecord<&R>> {
    sessions
        .iter()
        .map(|(&client, session)| SessionRecord {
            client,
            last_used: session.last_used,
            last: session.last.as_ref().map(|last| Recorded {
                sequence: last.sequence,
                response: &last.response,
            }),
        })
        .collect()
}

/// Everything of a snapshot before the inner machine's bytes: the header and the table.
fn encode_head<R: Serialize>(
    sessions: &BTreeMap<ClientId, Session<R>>,
) -> Result<Vec<u8>, StateMachineError> {
    let table = Postcard
        .encode(&records(sessions))
        .map_err(|e| StateMachineError::Other(Box::new(e)))?;
    let mut head = Vec::with_capacity(HEADER_LEN + table.len());
    head.extend_from_slice(&SNAPSHOT_MAGIC);
    head.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    head.extend_from_slice(&(table.len() as u64).to_le_bytes());
    head.extend_from_slice(&table);
    Ok(head)
}

/// `sessions` and the inner machine's bytes in the snapshot format.
fn encode_snapshot<R: Serialize>(
    sessions: &BTreeMap<ClientId, Session<R>>,
    inner: Bytes,
) -> Result<Vec<u8>, StateMachineError> {
    let mut data = encode_head(sessions)?;
    data.extend_from_slice(&inner);
    Ok(data)
}

/// The pieces a restore reads from its snapshot at a time.
const RESTORE_PIECE: usize = 1 << 20;

/// Reads `len` bytes of `reader` from `offset`, or fails if the data ends first. In
/// range, one `read_at` returns exactly what was asked.
async fn read_range(
    reader: &dyn SnapshotReader,
    offset: u64,
    len: u64,
) -> Result<Bytes, StateMachineError> {
    let in_range = offset
        .checked_add(len)
        .is_some_and(|end| end <= reader.len());
    let wanted = usize::try_from(len).ok().filter(|_| in_range);
    let Some(wanted) = wanted else {
        return Err(StateMachineError::InvalidSnapshot(format!(
            "session snapshot of {} bytes ends before {offset} + {len}",
            reader.len()
        )));
    };
    let data = reader.read_at(offset, wanted).await?;
    if data.len() != wanted {
        // A reader that breaks its contract: refused rather than misread.
        return Err(StorageError::SnapshotRange {
            offset: offset.saturating_add(data.len() as u64),
            len: reader.len(),
        }
        .into());
    }
    Ok(data)
}

/// The inner machine's part of a snapshot: the data of `reader` from `start` on.
#[derive(Debug)]
struct Skipped {
    reader: Arc<dyn SnapshotReader>,
    start: u64,
}

#[async_trait]
impl SnapshotReader for Skipped {
    fn len(&self) -> u64 {
        self.reader.len().saturating_sub(self.start)
    }

    async fn read_at(&self, offset: u64, max_len: usize) -> Result<Bytes, StorageError> {
        let Some(at) = self
            .start
            .checked_add(offset)
            .filter(|_| offset <= self.len())
        else {
            return Err(StorageError::SnapshotRange {
                offset,
                len: self.len(),
            });
        };
        self.reader.read_at(at, max_len).await
    }
}

/// A capture of the wrapper for a streamed snapshot: the session table as it was, and
/// the inner machine's own capture.
struct CapturedSessions<R> {
    sessions: BTreeMap<ClientId, Session<R>>,
    inner: Box<dyn SnapshotSource>,
}

#[async_trait]
impl<R: Serialize + Send + 'static> SnapshotSource for CapturedSessions<R> {
    async fn write_to(
        self: Box<Self>,
        out: &mut dyn SnapshotWriter,
    ) -> Result<(), StateMachineError> {
        let CapturedSessions { sessions, inner } = *self;
        // Encoded (and the copy dropped) before the first await.
        let head = Bytes::from(encode_head(&sessions)?);
        drop(sessions);
        out.write(head).await?;
        inner.write_to(out).await
    }
}

/// How a snapshot's header says the rest is laid out.
enum Layout {
    /// Version 1: one postcard record from this offset on.
    Record,
    /// Version 2: a table of this many bytes after the header, then the inner bytes.
    Table(u64),
}

/// Reads a snapshot's header from its first bytes (at least [`HEADER_LEN`] of them, or
/// all there are).
fn read_header(head: &[u8]) -> Result<Layout, StateMachineError> {
    let invalid = |reason: &str| StateMachineError::InvalidSnapshot(reason.to_owned());
    let body = head
        .strip_prefix(&SNAPSHOT_MAGIC)
        .ok_or_else(|| invalid("not a session snapshot (no RSES header)"))?;
    let (version, body) = body
        .split_first_chunk::<2>()
        .ok_or_else(|| invalid("session snapshot truncated in its version"))?;
    match u16::from_le_bytes(*version) {
        SNAPSHOT_VERSION_1 => Ok(Layout::Record),
        SNAPSHOT_VERSION => {
            let (len, _) = body
                .split_first_chunk::<8>()
                .ok_or_else(|| invalid("session snapshot truncated in its table's length"))?;
            Ok(Layout::Table(u64::from_le_bytes(*len)))
        }
        version => Err(StateMachineError::InvalidSnapshot(format!(
            "session snapshot format version {version}; this build reads versions \
             {SNAPSHOT_VERSION_1} and {SNAPSHOT_VERSION}"
        ))),
    }
}

/// Where a version-2 snapshot's inner bytes start, given its table's length and the
/// snapshot's size.
fn inner_start(table_len: u64, size: u64) -> Result<u64, StateMachineError> {
    (HEADER_LEN as u64)
        .checked_add(table_len)
        .filter(|&start| start <= size)
        .ok_or_else(|| {
            StateMachineError::InvalidSnapshot(format!(
                "session table of {table_len} bytes in a snapshot of {size}"
            ))
        })
}

/// A session table read from a snapshot, checked.
struct DecodedSnapshot<R> {
    sessions: BTreeMap<ClientId, Session<R>>,
    by_last_use: BTreeMap<LogIndex, ClientId>,
    inner: Bytes,
}

/// Reads a snapshot of a [`Sessions`] covering entries up to `last_included`.
fn decode_snapshot<R: DeserializeOwned>(
    data: &Bytes,
    last_included: LogIndex,
) -> Result<DecodedSnapshot<R>, StateMachineError> {
    let invalid = |reason: String| StateMachineError::InvalidSnapshot(reason);
    let (records, inner) = match read_header(data)? {
        Layout::Record => {
            let body: SnapshotBody<R> = Postcard
                .decode(&data[SNAPSHOT_MAGIC.len() + 2..])
                .map_err(|e| invalid(format!("session table: {e}")))?;
            (body.sessions, body.inner)
        }
        Layout::Table(table_len) => {
            let start = inner_start(table_len, data.len() as u64)?;
            // In range: `start` is at most the data's length.
            let start = usize::try_from(start).unwrap_or(data.len());
            let records = decode_records(&data[HEADER_LEN..start])?;
            (records, data.slice(start..))
        }
    };
    let (sessions, by_last_use) = check_table(records, last_included)?;
    Ok(DecodedSnapshot {
        sessions,
        by_last_use,
        inner,
    })
}

/// A version-2 table: exactly the records (the codec refuses bytes after them).
fn decode_records<R: DeserializeOwned>(
    table: &[u8],
) -> Result<Vec<SessionRecord<R>>, StateMachineError> {
    Postcard
        .decode(table)
        .map_err(|e| StateMachineError::InvalidSnapshot(format!("session table: {e}")))
}

/// The sessions of a snapshot covering entries up to `last_included`, checked, and
/// their order of last use.
#[allow(clippy::type_complexity)]
fn check_table<R>(
    records: Vec<SessionRecord<R>>,
    last_included: LogIndex,
) -> Result<(BTreeMap<ClientId, Session<R>>, BTreeMap<LogIndex, ClientId>), StateMachineError> {
    let invalid = |reason: String| StateMachineError::InvalidSnapshot(reason);
    let mut sessions = BTreeMap::new();
    let mut by_last_use = BTreeMap::new();
    for record in records {
        let client = record.client;
        // A session is named by its registration and later entries, all covered by
        // the snapshot.
        if record.last_used.0 < client.0 || record.last_used > last_included {
            return Err(invalid(format!(
                "session {client} last used at {} outside {}..={last_included}",
                record.last_used,
                LogIndex(client.0)
            )));
        }
        if by_last_use.insert(record.last_used, client).is_some() {
            return Err(invalid(format!(
                "two sessions last used at {}",
                record.last_used
            )));
        }
        let session = Session {
            last_used: record.last_used,
            last: record.last,
        };
        if sessions.insert(client, session).is_some() {
            return Err(invalid(format!("session {client} appears twice")));
        }
    }
    Ok((sessions, by_last_use))
}

impl<C, M> StateMachine<SessionCommand<C>> for Sessions<M, M::Response>
where
    C: raft_traits::Command,
    M: StateMachine<C>,
    M::Response: Clone + Serialize + DeserializeOwned,
{
    type Response = SessionResult<M::Response>;

    async fn apply(
        &mut self,
        log_id: LogId,
        command: SessionCommand<C>,
    ) -> SessionResult<M::Response> {
        if log_id.index <= self.last_applied.index {
            tracing::warn!(%log_id, last_applied = %self.last_applied, "command already applied");
            return Err(SessionError::AlreadyApplied {
                log_id,
                last_applied: self.last_applied,
            });
        }
        self.last_applied = log_id;
        let (client, sequence, command) = match command {
            SessionCommand::Register => {
                let client = ClientId(log_id.index.0);
                let session = Session {
                    last_used: log_id.index,
                    last: None,
                };
                self.sessions.insert(client, session);
                self.by_last_use.insert(log_id.index, client);
                self.evict_beyond_capacity();
                tracing::debug!(%client, "session registered");
                return Ok(SessionResponse::Registered(client));
            }
            SessionCommand::Request {
                client,
                sequence,
                command,
            } => (client, sequence, command),
        };
        let Some(session) = self.sessions.get_mut(&client) else {
            return Err(SessionError::UnknownSession { client });
        };
        // Any command naming the session is a use of it, whatever its fate.
        self.by_last_use.remove(&session.last_used);
        session.last_used = log_id.index;
        self.by_last_use.insert(log_id.index, client);
        let last = session.last.as_ref().map_or(0, |last| last.sequence);
        match (sequence.cmp(&last), &session.last) {
            (std::cmp::Ordering::Equal, Some(recorded)) => {
                tracing::debug!(%client, sequence, "duplicate command answered from the session table");
                Ok(SessionResponse::Duplicate(recorded.response.clone()))
            }
            (std::cmp::Ordering::Greater, _) => {
                let response = self.inner.apply(log_id, command).await;
                session.last = Some(Recorded {
                    sequence,
                    response: response.clone(),
                });
                Ok(SessionResponse::Applied(response))
            }
            _ => Err(SessionError::StaleSequence {
                client,
                sequence,
                last,
            }),
        }
    }

    async fn snapshot(&mut self) -> Result<Snapshot, StateMachineError> {
        let inner = self.inner.snapshot().await?;
        let data = self.encode_snapshot(inner.data)?;
        Ok(Snapshot {
            // Not the inner snapshot's: registrations advance the wrapper alone.
            meta: SnapshotMeta {
                last_included: self.last_applied,
                membership: inner.meta.membership,
            },
            data: Bytes::from(data),
        })
    }

    /// Captures the inner machine's state (if it can, cheaply) and a copy of the
    /// session table, which is bounded by the capacity; both are encoded on the job.
    fn capture_snapshot(&mut self) -> Option<SnapshotJob> {
        let inner = self.inner.capture_snapshot()?;
        let sessions = self.sessions.clone();
        let last_included = self.last_applied;
        Some(Box::pin(async move {
            let inner = inner.await?;
            let data = encode_snapshot(&sessions, inner.data)?;
            Ok(Snapshot {
                meta: SnapshotMeta {
                    last_included,
                    membership: inner.meta.membership,
                },
                data: Bytes::from(data),
            })
        }))
    }

    /// When the inner machine streams its snapshot, so does the wrapper: the header and
    /// a copy of the session table (bounded by the capacity), then the inner stream.
    fn capture_snapshot_stream(&mut self) -> Option<Box<dyn SnapshotSource>> {
        let inner = self.inner.capture_snapshot_stream()?;
        Some(Box::new(CapturedSessions {
            sessions: self.sessions.clone(),
            inner,
        }))
    }

    /// Reads the header and the session table, and hands the inner machine a reader
    /// over the rest, so it restores its part the way it chooses (piece by piece if it
    /// can). A version-1 snapshot is read whole, as it was written.
    async fn restore_from(
        &mut self,
        meta: SnapshotMeta,
        reader: Arc<dyn SnapshotReader>,
    ) -> Result<(), StateMachineError> {
        let offered = meta.last_included;
        StateMachineError::unless_newer(self.last_applied, offered)?;
        // A version-1 snapshot may be shorter than a version-2 header.
        let head_len = (HEADER_LEN as u64).min(reader.len());
        let head = read_range(reader.as_ref(), 0, head_len).await?;
        let table_len = match read_header(&head)? {
            Layout::Table(table_len) => table_len,
            Layout::Record => {
                let data = read_all(reader.as_ref(), RESTORE_PIECE).await?;
                return self.restore(Snapshot { meta, data }).await;
            }
        };
        let start = inner_start(table_len, reader.len())?;
        let table = read_range(reader.as_ref(), HEADER_LEN as u64, table_len).await?;
        // Everything is checked before anything changes.
        let (sessions, by_last_use) = check_table(decode_records(&table)?, offered.index)?;
        self.inner
            .restore_from(meta, Arc::new(Skipped { reader, start }))
            .await?;
        self.sessions = sessions;
        self.by_last_use = by_last_use;
        self.last_applied = offered;
        self.evict_beyond_capacity();
        Ok(())
    }

    async fn restore(&mut self, snapshot: Snapshot) -> Result<(), StateMachineError> {
        let offered = snapshot.meta.last_included;
        StateMachineError::unless_newer(self.last_applied, offered)?;
        // Everything is checked before anything changes.
        let decoded = decode_snapshot(&snapshot.data, offered.index)?;
        // The inner machine has applied at most what the wrapper has, so a snapshot
        // newer than the wrapper's state is newer than its own.
        self.inner
            .restore(Snapshot {
                meta: snapshot.meta,
                data: decoded.inner,
            })
            .await?;
        self.sessions = decoded.sessions;
        self.by_last_use = decoded.by_last_use;
        self.last_applied = offered;
        self.evict_beyond_capacity();
        Ok(())
    }

    fn check_snapshot(snapshot: &Snapshot) -> Result<(), StateMachineError> {
        let offered = snapshot.meta.last_included;
        let decoded = decode_snapshot::<M::Response>(&snapshot.data, offered.index)?;
        M::check_snapshot(&Snapshot {
            meta: snapshot.meta.clone(),
            data: decoded.inner,
        })
    }
}

impl<M: fmt::Debug, R> fmt::Debug for Sessions<M, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sessions")
            .field("inner", &self.inner)
            .field("capacity", &self.capacity)
            .field("sessions", &self.sessions.len())
            .field("last_applied", &self.last_applied)
            .finish()
    }
}

impl<M: Clone, R: Clone> Clone for Sessions<M, R> {
    fn clone(&self) -> Self {
        Sessions {
            inner: self.inner.clone(),
            capacity: self.capacity,
            sessions: self.sessions.clone(),
            by_last_use: self.by_last_use.clone(),
            last_applied: self.last_applied,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail by panicking")]

    use futures::executor::block_on;
    use raft_traits::Term;

    use super::*;

    /// A counter that adds each command to its total, answers with the total, and counts
    /// how many commands it applied.
    #[derive(Clone, Debug, Default, PartialEq, Eq)]
    struct Counter {
        total: u64,
        applied: u64,
        last_applied: LogId,
    }

    impl StateMachine<u64> for Counter {
        type Response = u64;

        async fn apply(&mut self, log_id: LogId, add: u64) -> u64 {
            self.total += add;
            self.applied += 1;
            self.last_applied = log_id;
            self.total
        }

        async fn snapshot(&mut self) -> Result<Snapshot, StateMachineError> {
            Ok(Snapshot {
                meta: SnapshotMeta {
                    last_included: self.last_applied,
                    membership: Default::default(),
                },
                data: Bytes::from(Postcard.encode(&(self.total, self.applied)).unwrap()),
            })
        }

        /// The same bytes as `snapshot`, in two pieces.
        fn capture_snapshot_stream(&mut self) -> Option<Box<dyn SnapshotSource>> {
            struct Pieces(Vec<u8>);
            #[async_trait]
            impl SnapshotSource for Pieces {
                async fn write_to(
                    self: Box<Self>,
                    out: &mut dyn SnapshotWriter,
                ) -> Result<(), StateMachineError> {
                    let (first, second) = self.0.split_at(1);
                    out.write(Bytes::copy_from_slice(first)).await?;
                    out.write(Bytes::copy_from_slice(second)).await?;
                    Ok(())
                }
            }
            Some(Box::new(Pieces(
                Postcard.encode(&(self.total, self.applied)).unwrap(),
            )))
        }

        async fn restore(&mut self, snapshot: Snapshot) -> Result<(), StateMachineError> {
            let offered = snapshot.meta.last_included;
            StateMachineError::unless_newer(self.last_applied, offered)?;
            let (total, applied) = Postcard
                .decode(&snapshot.data)
                .map_err(|e| StateMachineError::InvalidSnapshot(e.to_string()))?;
            *self = Counter {
                total,
                applied,
                last_applied: offered,
            };
            Ok(())
        }
    }

    type Wrapped = Sessions<Counter, u64>;

    fn at(index: u64) -> LogId {
        LogId::new(Term(1), LogIndex(index))
    }

    fn request(client: u64, sequence: u64, add: u64) -> SessionCommand<u64> {
        SessionCommand::Request {
            client: ClientId(client),
            sequence,
            command: add,
        }
    }

    fn apply(
        machine: &mut Wrapped,
        index: u64,
        command: SessionCommand<u64>,
    ) -> SessionResult<u64> {
        block_on(machine.apply(at(index), command))
    }

    fn register(machine: &mut Wrapped, index: u64) -> ClientId {
        match apply(machine, index, SessionCommand::Register) {
            Ok(SessionResponse::Registered(client)) => client,
            other => panic!("registration at {index}: {other:?}"),
        }
    }

    fn capacity(n: usize) -> NonZeroUsize {
        NonZeroUsize::new(n).unwrap()
    }

    #[test]
    fn a_session_is_named_by_the_index_of_its_registration() {
        let mut machine = Wrapped::new(Counter::default());
        assert_eq!(register(&mut machine, 1), ClientId(1));
        assert_eq!(register(&mut machine, 4), ClientId(4));
        assert_eq!(machine.len(), 2);
        assert_eq!(machine.last_sequence(ClientId(4)), Some(0));
        assert_eq!(machine.last_sequence(ClientId(2)), None);
        assert_eq!(
            machine.inner().applied,
            0,
            "registering applies nothing inside"
        );
        assert_eq!(machine.last_applied(), at(4));
    }

    #[test]
    fn a_retried_command_gets_the_recorded_response_and_is_not_applied_again() {
        let mut machine = Wrapped::new(Counter::default());
        let client = register(&mut machine, 1).0;
        assert_eq!(
            apply(&mut machine, 2, request(client, 1, 5)),
            Ok(SessionResponse::Applied(5))
        );
        // Another client's command in between changes the total.
        let other = register(&mut machine, 3).0;
        assert_eq!(
            apply(&mut machine, 4, request(other, 1, 100)),
            Ok(SessionResponse::Applied(105))
        );
        // The first client's retry: the response of its first application, not 110.
        assert_eq!(
            apply(&mut machine, 5, request(client, 1, 5)),
            Ok(SessionResponse::Duplicate(5))
        );
        assert_eq!(
            apply(&mut machine, 6, request(client, 1, 5)),
            Ok(SessionResponse::Duplicate(5))
        );
        assert_eq!(machine.inner().total, 105);
        assert_eq!(machine.inner().applied, 2);
        // The next number is applied.
        assert_eq!(
            apply(&mut machine, 7, request(client, 2, 1)),
            Ok(SessionResponse::Applied(106))
        );
        assert_eq!(machine.last_sequence(ClientId(client)), Some(2));
    }

    #[test]
    fn numbers_may_skip_but_an_older_number_is_stale_and_not_applied() {
        let mut machine = Wrapped::new(Counter::default());
        let client = register(&mut machine, 1).0;
        // Sequence numbers start at 1: 0 is never applied.
        assert_eq!(
            apply(&mut machine, 2, request(client, 0, 1)),
            Err(SessionError::StaleSequence {
                client: ClientId(client),
                sequence: 0,
                last: 0
            })
        );
        // A client that gave up on command 1 goes on with 2; a late copy of 1 is stale.
        assert_eq!(
            apply(&mut machine, 3, request(client, 2, 10)),
            Ok(SessionResponse::Applied(10))
        );
        assert_eq!(
            apply(&mut machine, 4, request(client, 1, 7)),
            Err(SessionError::StaleSequence {
                client: ClientId(client),
                sequence: 1,
                last: 2
            })
        );
        assert_eq!(machine.inner().total, 10);
        assert_eq!(machine.inner().applied, 1);
    }

    #[test]
    fn a_command_of_an_unregistered_session_is_refused() {
        let mut machine = Wrapped::new(Counter::default());
        register(&mut machine, 1);
        // Index 2 is not a registration.
        assert_eq!(
            apply(&mut machine, 3, request(2, 1, 1)),
            Err(SessionError::UnknownSession {
                client: ClientId(2)
            })
        );
        assert_eq!(machine.inner().applied, 0);
        assert_eq!(machine.len(), 1);
    }

    #[test]
    fn a_full_table_evicts_the_session_least_recently_named_in_the_log() {
        let mut machine = Wrapped::with_capacity(Counter::default(), capacity(2));
        let a = register(&mut machine, 1).0;
        let b = register(&mut machine, 2).0;
        // `a` was registered first but used last.
        apply(&mut machine, 3, request(a, 1, 1)).unwrap();
        let c = register(&mut machine, 4).0;
        assert_eq!(machine.len(), 2);
        assert_eq!(
            apply(&mut machine, 5, request(b, 1, 1)),
            Err(SessionError::UnknownSession {
                client: ClientId(b)
            })
        );
        // A refused command of an expired session revives nothing.
        assert_eq!(machine.last_sequence(ClientId(b)), None);
        // A duplicate counts as a use: `a` is now more recent than `c`.
        assert_eq!(
            apply(&mut machine, 6, request(a, 1, 1)),
            Ok(SessionResponse::Duplicate(1))
        );
        register(&mut machine, 7);
        assert_eq!(machine.last_sequence(ClientId(a)), Some(1));
        assert_eq!(machine.last_sequence(ClientId(c)), None);
    }

    /// A log of registrations and requests from a few clients, with retries, stale and
    /// unknown sessions mixed in: the same for the same `seed`.
    fn mixed_log(seed: u64, length: u64) -> Vec<SessionCommand<u64>> {
        let mut state = seed;
        let mut next = move |bound: u64| {
            // A small linear congruential generator: deterministic, no dependency.
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) % bound
        };
        let mut clients: Vec<(u64, u64)> = Vec::new();
        (1..=length)
            .map(|index| {
                if clients.is_empty() || next(5) == 0 {
                    clients.push((index, 0));
                    return SessionCommand::Register;
                }
                let pick = usize::try_from(next(clients.len() as u64)).unwrap();
                let (client, sequence) = &mut clients[pick];
                match next(6) {
                    0 => request(*client, *sequence, 1),
                    1 => request(*client, sequence.saturating_sub(1), 1),
                    _ => {
                        *sequence += 1;
                        request(*client, *sequence, next(10))
                    }
                }
            })
            .collect()
    }

    #[test]
    fn replicas_fed_the_same_log_agree_on_every_response_and_on_expiry() {
        for seed in 0..20 {
            let log = mixed_log(seed, 200);
            let mut first = Wrapped::with_capacity(Counter::default(), capacity(3));
            let mut second = first.clone();
            // A third replica restores the first's snapshot half way, then goes on.
            let mut restored = Wrapped::with_capacity(Counter::default(), capacity(3));
            let mut refusals = 0;
            for (offset, command) in log.iter().enumerate() {
                let index = offset as u64 + 1;
                let one = apply(&mut first, index, command.clone());
                let two = apply(&mut second, index, command.clone());
                assert_eq!(one, two, "seed {seed}, entry {index}");
                if index == 100 {
                    let snapshot = block_on(first.snapshot()).unwrap();
                    block_on(restored.restore(snapshot)).unwrap();
                } else if index > 100 {
                    let three = apply(&mut restored, index, command.clone());
                    assert_eq!(one, three, "seed {seed}, entry {index}, restored");
                }
                refusals += usize::from(matches!(one, Err(SessionError::UnknownSession { .. })));
            }
            assert_eq!(first.inner(), restored.inner(), "seed {seed}");
            assert!(first.len() <= 3);
            if seed == 0 {
                assert!(refusals > 0, "the log never used an expired session");
            }
        }
    }

    #[test]
    fn the_snapshot_carries_the_table() {
        let mut machine = Wrapped::new(Counter::default());
        let client = register(&mut machine, 1).0;
        apply(&mut machine, 2, request(client, 1, 5)).unwrap();
        let other = register(&mut machine, 3).0;
        let snapshot = block_on(machine.snapshot()).unwrap();
        // The wrapper's position, though the inner machine last applied entry 2.
        assert_eq!(snapshot.meta.last_included, at(3));

        let mut restored = Wrapped::new(Counter::default());
        block_on(restored.restore(snapshot)).unwrap();
        assert_eq!(restored.last_applied(), at(3));
        assert_eq!(restored.len(), 2);
        assert_eq!(restored.last_sequence(ClientId(client)), Some(1));
        assert_eq!(restored.last_sequence(ClientId(other)), Some(0));
        assert_eq!(
            apply(&mut restored, 4, request(client, 1, 5)),
            Ok(SessionResponse::Duplicate(5))
        );
        assert_eq!(restored.inner().applied, 1);
        assert_eq!(
            apply(&mut restored, 5, request(other, 1, 1)),
            Ok(SessionResponse::Applied(6))
        );
    }

    #[test]
    fn a_snapshot_not_newer_than_the_state_is_stale() {
        let mut machine = Wrapped::new(Counter::default());
        register(&mut machine, 1);
        let old = block_on(machine.snapshot()).unwrap();
        register(&mut machine, 2);
        let same = block_on(machine.snapshot()).unwrap();
        for stale in [old, same] {
            let error = block_on(machine.restore(stale)).unwrap_err();
            assert!(
                matches!(error, StateMachineError::Stale { applied, .. } if applied == at(2)),
                "{error}"
            );
        }
        assert_eq!(machine.len(), 2);
        assert!(matches!(
            block_on(Wrapped::new(Counter::default()).restore(Snapshot::default())),
            Err(StateMachineError::Stale { .. })
        ));
    }

    #[test]
    fn a_restore_to_a_smaller_capacity_keeps_the_most_recently_used() {
        let mut machine = Wrapped::new(Counter::default());
        for index in 1..=3 {
            register(&mut machine, index);
        }
        apply(&mut machine, 4, request(1, 1, 1)).unwrap();
        let snapshot = block_on(machine.snapshot()).unwrap();
        let mut small = Wrapped::with_capacity(Counter::default(), capacity(2));
        block_on(small.restore(snapshot)).unwrap();
        assert_eq!(small.len(), 2);
        assert_eq!(small.last_sequence(ClientId(1)), Some(1));
        assert_eq!(small.last_sequence(ClientId(2)), None);
        assert_eq!(small.last_sequence(ClientId(3)), Some(0));
    }

    #[test]
    fn a_command_at_or_before_the_applied_position_changes_nothing() {
        let mut machine = Wrapped::new(Counter::default());
        let client = register(&mut machine, 1).0;
        apply(&mut machine, 2, request(client, 1, 5)).unwrap();
        for index in [1, 2] {
            assert_eq!(
                apply(&mut machine, index, request(client, 2, 5)),
                Err(SessionError::AlreadyApplied {
                    log_id: at(index),
                    last_applied: at(2)
                })
            );
        }
        assert_eq!(machine.inner().total, 5);
        assert_eq!(machine.last_sequence(ClientId(client)), Some(1));
    }

    /// The records of `sessions` (client, last use), with no command recorded.
    fn records_of(sessions: Vec<(u64, u64)>) -> Vec<SessionRecord<u64>> {
        sessions
            .into_iter()
            .map(|(client, last_used)| SessionRecord {
                client: ClientId(client),
                last_used: LogIndex(last_used),
                last: None,
            })
            .collect()
    }

    /// A snapshot at `last_included` of the data `data`.
    fn snapshot_of(last_included: u64, data: Vec<u8>) -> Snapshot {
        Snapshot {
            meta: SnapshotMeta {
                last_included: at(last_included),
                membership: Default::default(),
            },
            data: Bytes::from(data),
        }
    }

    /// Version-2 data: `sessions`, then `inner`.
    fn data_v2(sessions: Vec<(u64, u64)>, inner: &[u8]) -> Vec<u8> {
        let table = Postcard.encode(&records_of(sessions)).unwrap();
        let mut data = SNAPSHOT_MAGIC.to_vec();
        data.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        data.extend_from_slice(&(table.len() as u64).to_le_bytes());
        data.extend_from_slice(&table);
        data.extend_from_slice(inner);
        data
    }

    /// A snapshot at `last_included` with `sessions` and an empty counter.
    fn crafted(last_included: u64, sessions: Vec<(u64, u64)>) -> Snapshot {
        let inner = Postcard.encode(&(0u64, 0u64)).unwrap();
        snapshot_of(last_included, data_v2(sessions, &inner))
    }

    /// The same in the first format, which is still read.
    fn crafted_v1(last_included: u64, sessions: Vec<(u64, u64)>, total: u64) -> Snapshot {
        let body = SnapshotBody::<u64> {
            sessions: records_of(sessions),
            inner: Bytes::from(Postcard.encode(&(total, 1u64)).unwrap()),
        };
        let mut data = SNAPSHOT_MAGIC.to_vec();
        data.extend_from_slice(&SNAPSHOT_VERSION_1.to_le_bytes());
        data.extend_from_slice(&Postcard.encode(&body).unwrap());
        snapshot_of(last_included, data)
    }

    /// Restores `snapshot` into `machine` whole (`restore`) or from a reader
    /// (`restore_from`), as `streamed` says.
    fn restore_into(
        machine: &mut Wrapped,
        snapshot: Snapshot,
        streamed: bool,
    ) -> Result<(), StateMachineError> {
        if streamed {
            let reader = raft_traits::BytesReader::shared(snapshot.data);
            block_on(machine.restore_from(snapshot.meta, reader))
        } else {
            block_on(machine.restore(snapshot))
        }
    }

    #[test]
    fn a_streamed_snapshot_is_the_whole_one_and_restores_from_a_reader() {
        let mut machine = Wrapped::new(Counter::default());
        let client = register(&mut machine, 1).0;
        apply(&mut machine, 2, request(client, 1, 5)).unwrap();
        let whole = block_on(machine.snapshot()).unwrap();
        let source = machine
            .capture_snapshot_stream()
            .expect("the counter streams");
        // Applies after the capture do not reach it.
        apply(&mut machine, 3, request(client, 2, 7)).unwrap();
        let mut collected = raft_traits::BufferWriter::new(SnapshotMeta::default());
        block_on(source.write_to(&mut collected)).unwrap();
        assert_eq!(
            collected.pieces(),
            3,
            "the head, then the counter's two pieces"
        );
        assert!(collected.data() == whole.data, "the streamed bytes differ");

        let mut restored = Wrapped::new(Counter::default());
        restore_into(&mut restored, whole, true).unwrap();
        assert_eq!(restored.inner().total, 5);
        assert_eq!(restored.last_sequence(ClientId(client)), Some(1));
        assert_eq!(restored.last_applied(), at(2));
        // It deduplicates as the original did at the capture.
        assert_eq!(
            apply(&mut restored, 3, request(client, 1, 5)),
            Ok(SessionResponse::Duplicate(5))
        );
    }

    #[test]
    fn a_version_1_snapshot_still_restores_whole_or_from_a_reader() {
        for streamed in [false, true] {
            let mut machine = Wrapped::new(Counter::default());
            restore_into(&mut machine, crafted_v1(9, vec![(3, 4)], 42), streamed).unwrap();
            assert_eq!(machine.inner().total, 42, "streamed: {streamed}");
            assert_eq!(machine.last_sequence(ClientId(3)), Some(0));
            assert_eq!(machine.last_applied(), at(9));
        }
    }

    #[test]
    fn invalid_snapshots_are_refused_and_change_nothing() {
        for streamed in [false, true] {
            refuses_invalid_snapshots(streamed);
        }
    }

    fn refuses_invalid_snapshots(streamed: bool) {
        let mut machine = Wrapped::new(Counter::default());
        let client = register(&mut machine, 1).0;
        apply(&mut machine, 2, request(client, 1, 5)).unwrap();
        let before = machine.clone();

        let good = crafted(9, vec![(3, 4)]);
        let with_data = |data: Vec<u8>| Snapshot {
            meta: good.meta.clone(),
            data: Bytes::from(data),
        };
        let mut other_version = good.data.to_vec();
        other_version[4] = 3;
        let mut bad_body = good.data.to_vec();
        bad_body.push(0);
        let mut long_table = good.data.to_vec();
        long_table[6..14].copy_from_slice(&u64::MAX.to_le_bytes());
        let mut short_table = good.data.to_vec();
        short_table[6] -= 1;
        let cases = [
            ("no header", with_data(b"garbage".to_vec())),
            ("empty", with_data(Vec::new())),
            ("truncated version", with_data(b"RSES\x02".to_vec())),
            (
                "truncated table length",
                with_data(b"RSES\x02\x00\x01".to_vec()),
            ),
            ("other version", with_data(other_version)),
            ("trailing bytes", with_data(bad_body)),
            (
                "truncated body",
                with_data(good.data[..good.data.len() - 3].to_vec()),
            ),
            ("table longer than the data", with_data(long_table)),
            ("table cut short", with_data(short_table)),
            ("used before registered", crafted(9, vec![(5, 4)])),
            ("used after the snapshot", crafted(9, vec![(3, 10)])),
            ("one use for two sessions", crafted(9, vec![(3, 4), (2, 4)])),
            ("a session twice", crafted(9, vec![(3, 4), (3, 5)])),
        ];
        for (what, snapshot) in cases {
            let error = restore_into(&mut machine, snapshot, streamed).unwrap_err();
            assert!(
                matches!(error, StateMachineError::InvalidSnapshot(_)),
                "{what} (streamed: {streamed}): {error}"
            );
            assert_eq!(machine.inner(), before.inner(), "{what}");
            assert_eq!(machine.sessions, before.sessions, "{what}");
            assert_eq!(machine.last_applied(), before.last_applied(), "{what}");
        }
        // The well-formed one is taken.
        restore_into(&mut machine, good, streamed).unwrap();
        assert_eq!(machine.last_sequence(ClientId(3)), Some(0));
        assert_eq!(machine.last_sequence(ClientId(client)), None);
    }

    #[test]
    fn an_inner_refusal_leaves_the_table_as_it_was() {
        let mut machine = Wrapped::new(Counter::default());
        let client = register(&mut machine, 1).0;
        apply(&mut machine, 2, request(client, 1, 5)).unwrap();
        // Valid table, inner bytes the counter cannot read.
        let snapshot = snapshot_of(9, data_v2(vec![(3, 4)], &[0xff]));
        let error = block_on(machine.restore(snapshot)).unwrap_err();
        assert!(
            matches!(error, StateMachineError::InvalidSnapshot(_)),
            "{error}"
        );
        assert_eq!(machine.last_sequence(ClientId(client)), Some(1));
        assert_eq!(machine.last_applied(), at(2));
    }
}
