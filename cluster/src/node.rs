//! Node identity: the 40-hex node id, a node's addresses, core count and generation.
//!
//! A node id is 20 random bytes chosen once (the caller supplies the bytes: this crate never reads
//! an entropy source or a clock). The generation is bumped by the caller on every restart, so a
//! restarted node is a new member to SWIM and the planner can tell it from its previous life.

use std::fmt;
use std::str::FromStr;

/// A node's identity: 20 bytes, shown as 40 lowercase hex digits (Redis Cluster's node id form).
#[derive(
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub struct NodeId(pub [u8; 20]);

/// Why a string is not a node id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NodeIdError {
    /// The string is not exactly 40 characters long.
    #[error("a node id is 40 hex digits, got {0} characters")]
    Length(usize),
    /// A character is not a hex digit.
    #[error("a node id is 40 hex digits, found a non-hex character")]
    NotHex,
}

impl NodeId {
    /// The id as 40 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        use fmt::Write;
        let mut out = String::with_capacity(40);
        for b in self.0 {
            // Writing into a String cannot fail.
            let _ = write!(out, "{b:02x}");
        }
        out
    }
}

impl FromStr for NodeId {
    type Err = NodeIdError;

    fn from_str(s: &str) -> Result<NodeId, NodeIdError> {
        let bytes = s.as_bytes();
        if bytes.len() != 40 {
            return Err(NodeIdError::Length(bytes.len()));
        }
        let mut out = [0u8; 20];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let hi = hex_val(pair[0]).ok_or(NodeIdError::NotHex)?;
            let lo = hex_val(pair[1]).ok_or(NodeIdError::NotHex)?;
            out[i] = (hi << 4) | lo;
        }
        Ok(NodeId(out))
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The first 8 digits are enough to tell nodes apart in logs.
        write!(f, "NodeId({})", &self.to_hex()[..8])
    }
}

/// Everything the cluster knows about one node. `host` is an IP address or name as the operator
/// configured it (clients are told `host:client_port` in `-MOVED`).
#[derive(
    Clone,
    Debug,
    PartialEq,
    Eq,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[rkyv(derive(Debug))]
pub struct NodeInfo {
    /// The node's identity.
    pub id: NodeId,
    /// Host clients and peers reach the node at.
    pub host: String,
    /// RESP port for clients.
    pub client_port: u16,
    /// TCP port for peer links (cluster frames).
    pub peer_port: u16,
    /// UDP port for SWIM membership.
    pub gossip_port: u16,
    /// Executors (cores) the node runs; at least 1.
    pub cores: u16,
    /// Bumped by the node on every restart: a restarted node has lost its memory.
    pub generation: u64,
}

impl NodeInfo {
    /// `host:client_port`, the address `-MOVED` and `CLUSTER SLOTS` name.
    pub fn client_addr(&self) -> String {
        format!("{}:{}", self.host, self.client_port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = NodeId([
            0, 1, 2, 0xab, 0xcd, 0xef, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 0xfe, 0x7f, 0x80,
        ]);
        let s = id.to_hex();
        assert_eq!(s.len(), 40);
        assert_eq!(&s[..8], "000102ab");
        assert_eq!(s.parse::<NodeId>(), Ok(id));
        assert_eq!(s.to_uppercase().parse::<NodeId>(), Ok(id));
    }

    #[test]
    fn hex_rejects_bad_input() {
        assert_eq!("abc".parse::<NodeId>(), Err(NodeIdError::Length(3)));
        let bad = "g".repeat(40);
        assert_eq!(bad.parse::<NodeId>(), Err(NodeIdError::NotHex));
        // Multi-byte characters never panic the parser.
        let multi = "é".repeat(20);
        assert!(multi.parse::<NodeId>().is_err());
    }
}
