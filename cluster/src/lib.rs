//! `tessera-cluster`: sans-I/O distributed logic (slot table, planner, membership, wire frames,
//! migration, and its per-core host over the engine). No sockets, no spawning, no clock reads:
//! time and randomness are parameters.
#![forbid(unsafe_code)]

pub mod auth;
pub mod host;
pub mod keeper;
pub mod membership;
pub mod migration;
pub mod node;
pub mod partition;
pub mod planner;
pub mod redis;
pub mod sim;
pub mod store;
pub mod table;
pub mod wire;

pub use auth::{AuthError, Handshake, HandshakeStep};
pub use host::{message_cores, CoreMigrations, Envelope, Gate, HostStats, To};
pub use keeper::{KeeperConfig, LeaveReady, Offer, TableKeeper};
pub use membership::{
    coordinator, GossipId, Membership, MembershipConfig, MembershipError, MembershipEvent,
    MembershipOutput, SwimMembership,
};
pub use migration::{
    DigestBuilder, MapKey, MemStore, MigrationConfig, MigrationConfigError, Outgoing, ShardAddr,
    SlotDropCursor, SlotStore, SourceMigration, SourcePhase, StoreError, TargetMigration,
    TargetPhase, WriteGate,
};
pub use node::{NodeId, NodeIdError, NodeInfo};
pub use partition::{
    MigrationId, NodeIdx, PartitionTable, Route, Shard, SlotEntry, SlotState, TableError,
};
pub use planner::{commit_migrations, plan, plan_at, plan_draining, PlannerConfig, NODES_MAX};
pub use table::{CoreId, SlotTable};
pub use tessera_engine::slot::{hash_tag, key_slot, Slot, SLOT_COUNT};
pub use wire::{
    encode, AbortReason, ArchivedMessage, Entry, Frame, FrameDecoder, FrameError, FrameKind,
    Message, MigrateBatch, SlotDigest, StreamOp, WireConfig,
};
