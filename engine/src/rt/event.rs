//! A shard-local, level-triggered event: set once, wakes every waiter.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

#[derive(Default, Debug)]
struct Inner {
    set: bool,
    next_id: u64,
    /// Registered waiters by id. A waiter removes itself when dropped, so a long-lived
    /// event (the shard's shutdown) does not collect the wakers of finished tasks.
    waiters: Vec<(u64, Waker)>,
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
        for (_, w) in waiters {
            w.wake();
        }
    }

    /// True once [`set`](Self::set) was called.
    pub fn is_set(&self) -> bool {
        self.0.borrow().set
    }

    /// Resolves when the event is set.
    pub fn wait(&self) -> Wait {
        Wait {
            event: self.0.clone(),
            id: None,
        }
    }

    #[cfg(test)]
    fn waiter_count(&self) -> usize {
        self.0.borrow().waiters.len()
    }
}

/// The future of [`LocalEvent::wait`].
#[derive(Debug)]
pub struct Wait {
    event: Rc<RefCell<Inner>>,
    id: Option<u64>,
}

impl Future for Wait {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let event = self.event.clone();
        let mut inner = event.borrow_mut();
        if inner.set {
            self.id = None;
            return Poll::Ready(());
        }
        match self.id {
            Some(id) => {
                if let Some((_, w)) = inner.waiters.iter_mut().find(|(i, _)| *i == id) {
                    if !w.will_wake(cx.waker()) {
                        *w = cx.waker().clone();
                    }
                } else {
                    inner.waiters.push((id, cx.waker().clone()));
                }
            }
            None => {
                let id = inner.next_id;
                inner.next_id += 1;
                inner.waiters.push((id, cx.waker().clone()));
                self.id = Some(id);
            }
        }
        Poll::Pending
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            if let Ok(mut inner) = self.event.try_borrow_mut() {
                inner.waiters.retain(|(i, _)| *i != id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future;

    #[test]
    fn dropped_waiters_are_forgotten() {
        let ev = LocalEvent::new();
        for _ in 0..100 {
            let mut w = Box::pin(ev.wait());
            assert!(future::block_on(future::poll_once(&mut w)).is_none());
        }
        assert_eq!(ev.waiter_count(), 0);
    }

    #[test]
    fn set_wakes_and_stays_set() {
        let ev = LocalEvent::new();
        let mut w = Box::pin(ev.wait());
        assert!(future::block_on(future::poll_once(&mut w)).is_none());
        ev.set();
        assert!(future::block_on(future::poll_once(&mut w)).is_some());
        assert!(ev.is_set());
        future::block_on(ev.wait());
    }
}
