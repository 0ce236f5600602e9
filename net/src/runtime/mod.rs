//! The runtime layer: everything that knows about glommio lives here.
//!
//! Owns: starting one pinned executor per core ([`spawn_executor`]), the cross-core mailboxes
//! ([`mailbox`]), a local one-shot ([`oneshot`]) and a local shutdown signal ([`signal`]), timers,
//! yielding, and the socket types. The rest of the crate calls these functions and types only, so a
//! move to another thread-per-core runtime (compio, monoio) touches this module alone.

pub mod mailbox;
pub mod oneshot;
pub mod signal;

use std::future::Future;
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement, Shares};
use serde::Deserialize;
use thiserror::Error;

pub use glommio::net::{TcpListener, TcpStream, UdpSocket};
pub use glommio::task::JoinHandle as TaskHandle;

/// Settings of the executors (the `[runtime]` table of the config file).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Number of executors (one per core). 0 = one per CPU this process may run on. Default 0.
    pub cores: usize,
    /// How long an idle executor keeps polling before it parks (sleeps in the kernel), in
    /// microseconds. Bounds the idle CPU burned after each burst of work; a parked executor costs
    /// ~30 us to wake. 0 = park at once: recommended when several nodes share CPUs (a
    /// spinning executor holds a CPU another node has work for). Default 50, at most 10000.
    pub spin_before_park_us: u64,
    /// io_uring registered memory per executor, in bytes (storage I/O buffers; the network does
    /// not use it). It is locked memory, so it must fit `ulimit -l` for all executors. Default
    /// 256 KiB, at least 64 KiB.
    pub io_memory_bytes: usize,
    /// Depth of each executor's io_uring rings. Default 128, 8..=4096.
    pub ring_depth: usize,
    /// Capacity of each core's cross-core request channel, in batches. A sender finding it full
    /// yields and retries (backpressure). Default 1024, 16..=1048576.
    pub mesh_capacity: usize,
    /// Preemption interval of glommio's scheduler, in microseconds (how long one task queue
    /// runs before the background queue may get a turn). Default 10000.
    pub preempt_timer_us: u64,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            cores: 0,
            spin_before_park_us: 50,
            io_memory_bytes: 256 * 1024,
            ring_depth: 128,
            mesh_capacity: 1024,
            preempt_timer_us: 10_000,
        }
    }
}

/// A setting of the runtime is out of its documented range.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RuntimeConfigError {
    #[error("runtime.spin_before_park_us must be at most 10000 (got {0})")]
    SpinTooLong(u64),
    #[error("runtime.io_memory_bytes must be at least 65536 (got {0})")]
    IoMemoryTooSmall(usize),
    #[error("runtime.ring_depth must be in 8..=4096 (got {0})")]
    RingDepth(usize),
    #[error("runtime.mesh_capacity must be in 16..=1048576 (got {0})")]
    MeshCapacity(usize),
    #[error("runtime.cores must be at most 256 (got {0})")]
    TooManyCores(usize),
}

impl RuntimeConfig {
    /// Checks every field against its documented range.
    pub fn validate(&self) -> Result<(), RuntimeConfigError> {
        if self.spin_before_park_us > 10_000 {
            return Err(RuntimeConfigError::SpinTooLong(self.spin_before_park_us));
        }
        if self.io_memory_bytes < 64 * 1024 {
            return Err(RuntimeConfigError::IoMemoryTooSmall(self.io_memory_bytes));
        }
        if !(8..=4096).contains(&self.ring_depth) {
            return Err(RuntimeConfigError::RingDepth(self.ring_depth));
        }
        if !(16..=1 << 20).contains(&self.mesh_capacity) {
            return Err(RuntimeConfigError::MeshCapacity(self.mesh_capacity));
        }
        if self.cores > 256 {
            return Err(RuntimeConfigError::TooManyCores(self.cores));
        }
        Ok(())
    }

    /// The CPUs executors are pinned to, one per executor: the CPUs this process may use (its
    /// affinity mask), in order, reused round-robin if more cores than CPUs are asked for.
    pub fn cpus(&self) -> Vec<usize> {
        let allowed: Vec<usize> = core_affinity::get_core_ids()
            .map(|ids| ids.into_iter().map(|c| c.id).collect())
            .unwrap_or_default();
        let allowed = if allowed.is_empty() { vec![0] } else { allowed };
        let n = if self.cores == 0 {
            allowed.len()
        } else {
            self.cores
        };
        (0..n).map(|i| allowed[i % allowed.len()]).collect()
    }
}

/// Starting an executor thread failed.
#[derive(Debug, Error)]
pub enum SpawnError {
    #[error("cannot start the executor for core {core} on CPU {cpu}: {reason}")]
    Executor {
        core: usize,
        cpu: usize,
        reason: String,
    },
}

/// Starts executor `core` on its own thread pinned to `cpu`, running `main` to completion.
/// The thread is named `tessera-core-{core}-{n}` (glommio appends its executor id).
pub fn spawn_executor<G, F, T>(
    core: usize,
    cpu: usize,
    config: &RuntimeConfig,
    main: G,
) -> Result<ExecutorThread<T>, SpawnError>
where
    G: FnOnce() -> F + Send + 'static,
    F: Future<Output = T> + 'static,
    T: Send + 'static,
{
    let builder = LocalExecutorBuilder::new(Placement::Fixed(cpu))
        .name(&format!("tessera-core-{core}"))
        .io_memory(config.io_memory_bytes)
        .ring_depth(config.ring_depth)
        .preempt_timer(Duration::from_micros(config.preempt_timer_us.max(1)));
    let builder = if config.spin_before_park_us > 0 {
        builder.spin_before_park(Duration::from_micros(config.spin_before_park_us))
    } else {
        builder
    };
    let handle = builder.spawn(main).map_err(|e| SpawnError::Executor {
        core,
        cpu,
        reason: e.to_string(),
    })?;
    Ok(ExecutorThread(handle))
}

/// The thread of one executor.
pub struct ExecutorThread<T: Send + 'static>(glommio::ExecutorJoinHandle<T>);

impl<T: Send + 'static> ExecutorThread<T> {
    /// Waits for the executor's main future to finish and returns its output. An executor that
    /// failed (could not create its rings, or panicked) is reported as an error.
    pub fn join(self) -> Result<T, String> {
        self.0.join().map_err(|e| e.to_string())
    }
}

/// Spawns a task on the current executor's default queue; it runs detached.
pub fn spawn<F>(future: F) -> TaskHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    glommio::spawn_local(future).detach()
}

/// A task queue for background work that yields to request handling: it gets a small share
/// of the CPU when requests are waiting.
pub fn background_queue() -> glommio::TaskQueueHandle {
    glommio::executor().create_task_queue(
        Shares::Static(10),
        glommio::Latency::NotImportant,
        "background",
    )
}

/// Spawns a detached task into `queue` (see [`background_queue`]).
pub fn spawn_into<F>(queue: glommio::TaskQueueHandle, future: F)
where
    F: Future + 'static,
    F::Output: 'static,
{
    // Only fails for an unknown queue handle, which we created ourselves on this executor.
    glommio::spawn_local_into(future, queue)
        .expect("background queue exists")
        .detach();
}

/// Sleeps for `d` without blocking the executor.
pub async fn sleep(d: Duration) {
    glommio::timer::sleep(d).await;
}

/// Lets other tasks of this executor run (always yields once).
pub async fn yield_now() {
    futures_lite::future::yield_now().await;
}

/// Lets the reactor poll I/O, and so run every task that I/O wakes, before this task runs
/// again. [`yield_now`] only puts the task behind the tasks already runnable: glommio runs a
/// task queue until it is empty or the preempt timer fires (`preempt_timer_us`), so a task
/// that always has more work and yields that way keeps requests that arrive meanwhile waiting
/// up to that long. This waits on a timer that is due at once, which empties the queue.
pub async fn yield_to_io() {
    glommio::timer::sleep(Duration::from_micros(1)).await;
}

/// Yields only if the scheduler wants to preempt the current task queue.
pub async fn yield_if_needed() {
    glommio::yield_if_needed().await;
}

/// Milliseconds since the Unix epoch (the clock is read only in `net`).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        RuntimeConfig::default().validate().unwrap();
        let bad = RuntimeConfig {
            ring_depth: 1,
            ..RuntimeConfig::default()
        };
        assert_eq!(bad.validate(), Err(RuntimeConfigError::RingDepth(1)));
    }

    #[test]
    fn cpus_follow_the_affinity_mask() {
        let all = RuntimeConfig::default().cpus();
        assert!(!all.is_empty());
        let two = RuntimeConfig {
            cores: 2,
            ..RuntimeConfig::default()
        }
        .cpus();
        assert_eq!(two.len(), 2);
        if all.len() >= 2 {
            assert_ne!(two[0], two[1], "distinct CPUs while there are enough");
        }
    }

    #[test]
    fn executor_runs_pinned() {
        let cfg = RuntimeConfig {
            cores: 1,
            ..RuntimeConfig::default()
        };
        let cpu = cfg.cpus()[0];
        let h = spawn_executor(0, cpu, &cfg, move || async move {
            sleep(Duration::from_millis(1)).await;
            (
                std::thread::current().name().map(str::to_owned),
                core_affinity::get_core_ids().map(|v| v.len()),
            )
        })
        .unwrap();
        let (name, ids) = h.join().unwrap();
        assert!(name.unwrap().starts_with("tessera-core-0-"));
        assert_eq!(
            ids,
            Some(1),
            "the executor thread may run on exactly one CPU"
        );
    }
}
