//! A single-threaded latch: tasks of one executor await it; it fires once (shutdown, a killed
//! client). A waiter that stops waiting (its future is dropped, e.g. the losing side of a
//! `select`) removes its waker, so waiting in a loop does not accumulate wakers.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// Cloneable handle to one latch.
#[derive(Clone, Default)]
pub struct Signal(Rc<Inner>);

#[derive(Default)]
struct Inner {
    fired: Cell<bool>,
    next_id: Cell<u64>,
    waiters: RefCell<HashMap<u64, Waker>>,
}

impl Signal {
    /// A latch that has not fired.
    pub fn new() -> Signal {
        Signal::default()
    }

    /// Fires the latch and wakes every waiter. Idempotent.
    pub fn fire(&self) {
        self.0.fired.set(true);
        let waiters = std::mem::take(&mut *self.0.waiters.borrow_mut());
        for (_, w) in waiters {
            w.wake();
        }
    }

    /// True once fired.
    pub fn is_fired(&self) -> bool {
        self.0.fired.get()
    }

    /// Resolves when the latch fires.
    pub fn wait(&self) -> Wait {
        let id = self.0.next_id.get();
        self.0.next_id.set(id + 1);
        Wait {
            signal: self.clone(),
            id,
        }
    }

    /// Wakers currently registered (for tests).
    pub fn waiters(&self) -> usize {
        self.0.waiters.borrow().len()
    }
}

/// Future returned by [`Signal::wait`].
pub struct Wait {
    signal: Signal,
    id: u64,
}

impl Future for Wait {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.is_fired() {
            return Poll::Ready(());
        }
        self.signal
            .0
            .waiters
            .borrow_mut()
            .insert(self.id, cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        self.signal.0.waiters.borrow_mut().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_once_for_all() {
        let s = Signal::new();
        assert!(!s.is_fired());
        s.fire();
        futures_lite::future::block_on(async {
            s.wait().await;
            s.clone().wait().await;
        });
        assert!(s.is_fired());
    }

    #[test]
    fn abandoned_waits_leave_no_wakers() {
        let s = Signal::new();
        futures_lite::future::block_on(async {
            for _ in 0..100 {
                // the ready side wins; the wait is polled once and dropped
                let r = futures_lite::future::or(async { 1 }, async {
                    s.wait().await;
                    2
                })
                .await;
                assert_eq!(r, 1);
                let mut w = Box::pin(s.wait());
                assert!(futures_lite::future::poll_once(&mut w).await.is_none());
            }
        });
        assert_eq!(s.waiters(), 0);
    }
}
