//! A shard-local, level-triggered event: set once, wakes every waiter.

use std::cell::RefCell;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

#[derive(Default, Debug)]
struct Inner {
    set: bool,
    waiters: Vec<Waker>,
}

/// A flag that tasks of one shard can wait for (shutdown, connection close).
///
/// Cloning shares the flag. Once set it stays set.
#[derive(Clone, Default, Debug)]
pub struct LocalEvent(Rc<RefCell<Inner>>);

impl LocalEvent {
    /// A new, unset event.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the event and wakes all waiters.
    pub fn set(&self) {
        let waiters = {
            let mut inner = self.0.borrow_mut();
            inner.set = true;
            std::mem::take(&mut inner.waiters)
        };
        for w in waiters {
            w.wake();
        }
    }

    /// True once [`set`](Self::set) was called.
    pub fn is_set(&self) -> bool {
        self.0.borrow().set
    }

    /// Resolves when the event is set.
    pub async fn wait(&self) {
        poll_fn(|cx| {
            let mut inner = self.0.borrow_mut();
            if inner.set {
                Poll::Ready(())
            } else {
                if !inner.waiters.iter().any(|w| w.will_wake(cx.waker())) {
                    inner.waiters.push(cx.waker().clone());
                }
                Poll::Pending
            }
        })
        .await
    }
}
