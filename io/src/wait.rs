//! Single-threaded wake-ups for the log's tasks: a broadcast notification and the
//! outcome of one journal flush. Both live on one core and are `!Send`.

use crate::error::LogError;
use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};

/// Wakes every task waiting since a given epoch.
#[derive(Default)]
pub struct Notify {
    epoch: Cell<u64>,
    wakers: RefCell<Vec<Waker>>,
}

impl Notify {
    pub fn epoch(&self) -> u64 {
        self.epoch.get()
    }

    pub fn notify(&self) {
        self.epoch.set(self.epoch.get() + 1);
        for w in self.wakers.borrow_mut().drain(..) {
            w.wake();
        }
    }

    /// Completes once `notify` has been called after `seen` was read from `epoch`.
    pub async fn wait(&self, seen: u64) {
        poll_fn(|cx| {
            if self.epoch.get() != seen {
                return Poll::Ready(());
            }
            let mut wakers = self.wakers.borrow_mut();
            if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
                wakers.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }
}

/// The result of one journal flush, shared by every append in it.
#[derive(Default)]
pub struct Outcome {
    result: RefCell<Option<Result<(), Arc<LogError>>>>,
    wakers: RefCell<Vec<Waker>>,
}

impl Outcome {
    pub fn complete(&self, result: Result<(), Arc<LogError>>) {
        *self.result.borrow_mut() = Some(result);
        for w in self.wakers.borrow_mut().drain(..) {
            w.wake();
        }
    }

    pub async fn wait(self: Rc<Self>) -> Result<(), LogError> {
        poll_fn(|cx| match &*self.result.borrow() {
            Some(Ok(())) => Poll::Ready(Ok(())),
            Some(Err(e)) => Poll::Ready(Err(LogError::Shared(e.clone()))),
            None => {
                self.wakers.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}
