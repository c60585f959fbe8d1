//! Parsing cluster lists (`ID=ADDR,ID=ADDR,...`), and the addresses a KV node records for
//! each member in Raft's configuration ([`MemberAddr`]).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::str::FromStr;

use raft_traits::NodeId;

/// Why a cluster list could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MembersError {
    /// The list names no node.
    #[error("the list is empty")]
    Empty,
    /// An item is not of the form `ID=ADDR`.
    #[error("{item:?} is not of the form ID=ADDR")]
    Malformed {
        /// The offending item.
        item: String,
    },
    /// An id is not a number.
    #[error("{id:?} is not a node id (a non-negative integer)")]
    BadId {
        /// The offending id.
        id: String,
    },
    /// An address does not resolve.
    #[error("cannot resolve {addr:?}: {reason}")]
    BadAddr {
        /// The offending address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// An id appears twice.
    #[error("node {0} is listed twice")]
    Duplicate(NodeId),
}

/// Parses `ID=ADDR,ID=ADDR,...` into a map from node id to address. An address is
/// `IP:PORT` or `HOST:PORT`; a host name is resolved now, and its first address kept.
///
/// ```
/// use raft_examples::parse_members;
/// use raft_traits::NodeId;
///
/// let members = parse_members("1=127.0.0.1:7001, 2=127.0.0.1:7002").unwrap();
/// assert_eq!(members[&NodeId(2)].port(), 7002);
/// assert!(parse_members("1=127.0.0.1:7001,1=127.0.0.1:7002").is_err());
/// assert!(parse_members("one=127.0.0.1:7001").is_err());
/// ```
pub fn parse_members(list: &str) -> Result<BTreeMap<NodeId, SocketAddr>, MembersError> {
    let mut members = BTreeMap::new();
    for item in list
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
    {
        let (id, addr) = item
            .split_once('=')
            .ok_or_else(|| MembersError::Malformed {
                item: item.to_owned(),
            })?;
        let (id, addr) = (id.trim(), addr.trim());
        let id = id
            .parse::<u64>()
            .map(NodeId)
            .map_err(|_| MembersError::BadId { id: id.to_owned() })?;
        let addr = resolve(addr)?;
        if members.insert(id, addr).is_some() {
            return Err(MembersError::Duplicate(id));
        }
    }
    if members.is_empty() {
        return Err(MembersError::Empty);
    }
    Ok(members)
}

/// Resolves `IP:PORT` or `HOST:PORT` to its first address.
pub fn resolve(addr: &str) -> Result<SocketAddr, MembersError> {
    let bad = |reason: String| MembersError::BadAddr {
        addr: addr.to_owned(),
        reason,
    };
    if let Ok(parsed) = addr.parse::<SocketAddr>() {
        return Ok(parsed);
    }
    addr.to_socket_addrs()
        .map_err(|e| bad(e.to_string()))?
        .next()
        .ok_or_else(|| bad("no address".to_owned()))
}

/// Where a member of a KV cluster can be reached: its Raft address, and its client
/// address once known.
///
/// This is the address a KV node records for each member in Raft's configuration
/// ([`Membership::nodes`](raft_traits::Membership::nodes), whose addresses are opaque to
/// Raft), so that every node knows, from the replicated configuration, where each member
/// listens for its peers and for clients. Written as `RAFT_ADDR` or
/// `RAFT_ADDR client=CLIENT_ADDR`:
///
/// ```
/// use raft_examples::MemberAddr;
///
/// let addr: MemberAddr = "127.0.0.1:7004 client=127.0.0.1:8004".parse().unwrap();
/// assert_eq!(addr.raft.port(), 7004);
/// assert_eq!(addr.client.map(|a| a.port()), Some(8004));
/// assert_eq!(addr.to_string(), "127.0.0.1:7004 client=127.0.0.1:8004");
/// let raft_only: MemberAddr = "127.0.0.1:7001".parse().unwrap();
/// assert_eq!(raft_only.client, None);
/// assert!("".parse::<MemberAddr>().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MemberAddr {
    /// Where the member listens for Raft RPCs from its peers.
    pub raft: SocketAddr,
    /// Where it listens for clients, if the configuration records it (a node added with
    /// `add-node` has it from the start; a member of the cluster's first configuration
    /// once it has led).
    pub client: Option<SocketAddr>,
}

/// Why a member's recorded address could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{address:?} is not a member address (RAFT_ADDR or RAFT_ADDR client=CLIENT_ADDR)")]
pub struct MemberAddrError {
    /// The offending address.
    pub address: String,
}

impl MemberAddr {
    /// A member reachable at `raft`, whose client address is not recorded.
    pub fn raft_only(raft: SocketAddr) -> MemberAddr {
        MemberAddr { raft, client: None }
    }
}

impl fmt::Display for MemberAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.client {
            Some(client) => write!(f, "{} client={client}", self.raft),
            None => write!(f, "{}", self.raft),
        }
    }
}

impl FromStr for MemberAddr {
    type Err = MemberAddrError;

    fn from_str(address: &str) -> Result<MemberAddr, MemberAddrError> {
        let bad = || MemberAddrError {
            address: address.to_owned(),
        };
        let mut parts = address.split_whitespace();
        let raft = parts
            .next()
            .and_then(|raft| raft.parse().ok())
            .ok_or_else(bad)?;
        let client = match parts.next() {
            None => None,
            Some(part) => Some(
                part.strip_prefix("client=")
                    .and_then(|client| client.parse().ok())
                    .ok_or_else(bad)?,
            ),
        };
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MemberAddr { raft, client })
    }
}
