//! A single-threaded latch: tasks of one executor await it; it fires once (shutdown).

use std::cell::{Cell, RefCell};
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
    waiters: RefCell<Vec<Waker>>,
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
        for w in waiters {
            w.wake();
        }
    }

    /// True once fired.
    pub fn is_fired(&self) -> bool {
        self.0.fired.get()
    }

    /// Resolves when the latch fires.
    pub fn wait(&self) -> Wait {
        Wait(self.clone())
    }
}

/// Future returned by [`Signal::wait`].
pub struct Wait(Signal);

impl Future for Wait {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.is_fired() {
            return Poll::Ready(());
        }
        self.0 .0.waiters.borrow_mut().push(cx.waker().clone());
        Poll::Pending
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
}
