//! Wake-ups instead of polling. On one core (`!Send`): [`Notify`], a broadcast
//! notification, and [`Outcome`], the result of one journal flush. Across cores:
//! [`Signal`], a value that only grows and wakes every task waiting for it on any
//! executor, and [`Stop`], the server's stop built on it.
//!
//! Never a timer: a task that waits here is woken by the change it waits for.

use crate::error::LogError;
use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

/// Wakes every task waiting since a given epoch.
#[derive(Default)]
pub struct Notify {
    epoch: Cell<u64>,
    wakers: RefCell<Vec<Waker>>,
}

impl std::fmt::Debug for Notify {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notify")
            .field("epoch", &self.epoch.get())
            .finish_non_exhaustive()
    }
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

/// A value shared by every core that only grows, and wakes every task waiting for
/// it to reach a level, on whichever executor (glommio queues a waker woken from
/// another thread to its own executor).
#[derive(Debug, Default)]
pub struct Signal {
    value: AtomicU64,
    wakers: Mutex<Vec<Waker>>,
}

impl Signal {
    pub fn get(&self) -> u64 {
        self.value.load(Ordering::SeqCst)
    }

    /// Raises the value to at least `v` and wakes the waiters.
    pub fn raise(&self, v: u64) {
        self.value.fetch_max(v, Ordering::SeqCst);
        self.wake();
    }

    /// Adds one and wakes the waiters; returns the new value.
    pub fn add_one(&self) -> u64 {
        let v = self.value.fetch_add(1, Ordering::SeqCst) + 1;
        self.wake();
        v
    }

    fn wake(&self) {
        let wakers = std::mem::take(&mut *self.lock());
        for w in wakers {
            w.wake();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Waker>> {
        // A waiter that panicked while holding the lock left a valid Vec.
        self.wakers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Completes once the value is at least `level`.
    pub async fn reached(&self, level: u64) {
        poll_fn(|cx| {
            if self.get() >= level {
                return Poll::Ready(());
            }
            {
                let mut wakers = self.lock();
                if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
                    wakers.push(cx.waker().clone());
                }
            }
            // Raised between the first look and the waker going in: the raise
            // took the wakers before this one was there.
            if self.get() >= level {
                return Poll::Ready(());
            }
            Poll::Pending
        })
        .await
    }
}

/// The server's stop: set once (a signal, a core that failed), seen at once by
/// every task that awaits it on any core. Cheap to clone and to test.
#[derive(Clone, Debug, Default)]
pub struct Stop(Arc<Signal>);

impl Stop {
    pub fn new() -> Stop {
        Stop::default()
    }

    pub fn set(&self) {
        self.0.raise(1);
    }

    pub fn is_set(&self) -> bool {
        self.0.get() != 0
    }

    /// Completes once the stop is set.
    pub async fn wait(&self) {
        self.0.reached(1).await
    }
}

#[cfg(test)]
mod tests {
    use super::{Signal, Stop};
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn a_stop_set_on_another_thread_wakes_a_waiting_core() {
        let stop = Stop::new();
        let (waiting_tx, waiting_rx) = std::sync::mpsc::channel();
        let setter = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                // Set only once the core is about to wait, so the wake comes from here.
                waiting_rx.recv().expect("the core says it waits");
                std::thread::sleep(Duration::from_millis(20));
                stop.set();
            })
        };
        let ex = glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                waiting_tx.send(()).expect("the setter listens");
                stop.wait().await;
                // Completing before the set would be the bug.
                stop.is_set()
            })
            .expect("an executor");
        assert!(
            ex.join().expect("the executor ran"),
            "woken without the stop"
        );
        setter.join().expect("the setter ran");
    }

    #[test]
    fn a_signal_wakes_only_at_its_level_and_never_goes_back() {
        let s = Arc::new(Signal::default());
        s.raise(5);
        s.raise(3);
        assert_eq!(s.get(), 5, "raise never lowers");
        assert_eq!(s.add_one(), 6);
        let raiser = {
            let s = s.clone();
            std::thread::spawn(move || {
                for v in 7..=10 {
                    std::thread::sleep(Duration::from_millis(5));
                    s.raise(v);
                }
            })
        };
        let ex = glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                s.reached(10).await;
                s.get()
            })
            .expect("an executor");
        assert_eq!(ex.join().expect("the executor ran"), 10);
        raiser.join().expect("the raiser ran");
    }
}
