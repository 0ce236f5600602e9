//! `tessera-cluster`: sans-I/O distributed logic (slot table, planner, membership, wire frames,
//! migration). No sockets, no spawning, no clock reads.
#![forbid(unsafe_code)]

pub mod table;

pub use table::{CoreId, SlotTable};
pub use tessera_engine::slot::{hash_tag, key_slot, Slot, SLOT_COUNT};
