//! Parsing cluster lists: `ID=ADDR,ID=ADDR,...`.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};

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
