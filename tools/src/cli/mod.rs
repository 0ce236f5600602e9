//! The `tessera` command-line client, in pipeline order: [`resp`] (wire codec) -> [`conn`] (one
//! server connection) -> [`split`] (typed line to arguments) -> [`dmap`] (Olric-style verbs) ->
//! [`session`] (what a line does) -> [`format`] (how a reply is printed) -> [`repl`] and
//! [`stats`] (the two front ends beside one-shot and stdin mode in the binary); [`cluster`] is
//! `tessera cluster status`.

pub mod cluster;
pub mod conn;
pub mod dmap;
pub mod format;
pub mod help;
pub mod repl;
pub mod resp;
pub mod session;
pub mod split;
pub mod stats;
