//! Typed values through serde (feature `serde`, on by default).
//!
//! [`DMap::put_serde`]/[`DMap::get_serde`] store values as JSON: it is what other services
//! (and people with `tessera` or `redis-cli`) can read back without this crate, and serde's
//! `#[serde(default)]` lets a struct gain fields while old entries still decode. Where size or
//! speed matters more than that, a [`Codec`] plugs in any other format (postcard, bincode,
//! MessagePack ...) through [`DMap::put_with`]/[`DMap::get_with`] without this crate depending
//! on it.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{DMap, Error, Execute, PutOptions};

/// A value encoding: bytes stored in the map <-> a typed value.
pub trait Codec {
    fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error>;
    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error>;
}

/// JSON through `serde_json` (the encoding of `put_serde`/`get_serde`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Json;

impl Codec for Json {
    fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
        serde_json::to_vec(value).map_err(|e| Error::Codec(format!("cannot encode: {e}")))
    }

    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
        serde_json::from_slice(bytes).map_err(|e| Error::Codec(format!("cannot decode: {e}")))
    }
}

impl<E: Execute> DMap<E> {
    /// Stores `value` encoded as JSON. Returns false when an NX/XX condition was not met.
    pub fn put_serde<T: Serialize + ?Sized>(
        &self,
        key: impl AsRef<[u8]>,
        value: &T,
        options: PutOptions,
    ) -> Result<bool, Error> {
        self.put_with::<Json, T>(key, value, options)
    }

    /// The value of `key` decoded from JSON as a `T`; `None` when absent. A stored value that
    /// is not a `T` is [`Error::Codec`] (the entry is left as it is).
    pub fn get_serde<T: DeserializeOwned>(
        &self,
        key: impl AsRef<[u8]>,
    ) -> Result<Option<T>, Error> {
        self.get_with::<Json, T>(key)
    }

    /// Stores `value` encoded with codec `C`.
    pub fn put_with<C: Codec, T: Serialize + ?Sized>(
        &self,
        key: impl AsRef<[u8]>,
        value: &T,
        options: PutOptions,
    ) -> Result<bool, Error> {
        let bytes = C::encode(value)?;
        self.put(key, bytes, options)
    }

    /// The value of `key` decoded with codec `C`; `None` when absent.
    pub fn get_with<C: Codec, T: DeserializeOwned>(
        &self,
        key: impl AsRef<[u8]>,
    ) -> Result<Option<T>, Error> {
        match self.get(key)? {
            Some(bytes) => C::decode(&bytes).map(Some),
            None => Ok(None),
        }
    }
}
