//! One reactor per core: N reactors on N threads, each with its own state and no locks between
//! them, reaching each other only through their [`Handle`]s.
//!
//! [`MultiReactor::start`] makes the reactors, then runs a set-up function on each reactor's
//! own thread, one reactor after the other (so that the first can bind port 0 and the others
//! the port it got), then lets them all run. A server typically listens on each reactor with
//! [`ListenOptions::reuse_port`](crate::tcp::ListenOptions::reuse_port): each reactor has its
//! own SO_REUSEPORT socket for the same address, and the kernel spreads the connections among
//! them.
//!
//! Stopping one reactor stops them all: each has a shutdown trigger (phase
//! [`Before`](super::Phase::Before)) that asks the others to stop through their handles, and
//! each then runs its own shutdown triggers. Ctrl-C and SIGTERM are handled by the first
//! reactor (as only one reactor of a process handles them), which therefore stops all of them;
//! [`MultiReactor::stop`] does the same from any thread.
//!
//! # Examples
//! ```
//! use std::sync::atomic::{AtomicU16, Ordering};
//! use std::sync::Arc;
//! use torsion::reactor::multi::{MultiOptions, MultiReactor};
//! use torsion::tcp::ListenOptions;
//! use torsion::{Factory, Protocol, Context};
//!
//! struct Echo;
//! impl Protocol for Echo {
//!     fn data_received(&mut self, cx: &mut Context<'_>, data: &[u8]) {
//!         cx.transport().write(data);
//!     }
//! }
//!
//! let port = Arc::new(AtomicU16::new(0));
//! let p = port.clone();
//! let opts = MultiOptions { reactors: 2, ..MultiOptions::default() };
//! let cluster = MultiReactor::start(opts, move |reactor, _peers| {
//!     let reuse = ListenOptions { reuse_port: true, ..ListenOptions::default() };
//!     let at = ("127.0.0.1", p.load(Ordering::SeqCst));
//!     let listening = reactor.listen_tcp_with(at, Factory::for_protocol(|| Echo), reuse)?;
//!     p.store(listening.port(), Ordering::SeqCst); // the others bind the same port
//!     Ok(())
//! })?;
//! assert_eq!(cluster.handles().len(), 2);
//! assert_ne!(port.load(Ordering::SeqCst), 0);
//! cluster.stop();
//! cluster.join()?;
//! # Ok::<(), torsion::Error>(())
//! ```

use std::io;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use super::{Handle, Phase, Reactor, SystemEvent};
use crate::{Backend, Error};

/// The most reactors [`MultiReactor::start`] accepts.
pub const MAX_REACTORS: usize = 1024;

/// How [`MultiReactor::start`] sets the reactors up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MultiOptions {
    /// How many reactors (threads); 0 (the default) means one per CPU this process may use.
    /// At most [`MAX_REACTORS`].
    pub reactors: usize,
    /// Pin reactor `i` to the `i`-th CPU this process may use (wrapping around), with
    /// `sched_setaffinity`. Default off.
    pub pin: bool,
    /// The backend of every reactor; `None` (the default) is [`Reactor::new`]'s choice.
    pub backend: Option<Backend>,
    /// The first reactor handles Ctrl-C and SIGTERM, stopping all of them (default on).
    pub handle_stop_signals: bool,
    /// The provided-buffer ring of each reactor when `backend` is `Some(Backend::IoUring)`
    /// ([`Reactor::with_io_uring`]); `None` (the default): the defaults. Ignored otherwise.
    pub io_uring: Option<crate::poller::UringOptions>,
}

impl Default for MultiOptions {
    fn default() -> Self {
        MultiOptions {
            reactors: 0,
            pin: false,
            backend: None,
            handle_stop_signals: true,
            io_uring: None,
        }
    }
}

/// What a reactor of a [`MultiReactor`] knows of the others: its own index and every
/// reactor's handle (its own included).
#[derive(Debug, Clone)]
pub struct Peers {
    index: usize,
    handles: Arc<[Handle]>,
}

impl Peers {
    /// This reactor's index, from 0.
    pub fn index(&self) -> usize {
        self.index
    }

    /// How many reactors there are.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Always false: there is at least one reactor.
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Every reactor's handle, by index.
    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }

    /// The handle of reactor `i`.
    ///
    /// # Panics
    /// When `i` is not below [`len`](Peers::len).
    pub fn handle(&self, i: usize) -> &Handle {
        &self.handles[i]
    }
}

/// Reactors running on their own threads; see the module docs.
#[derive(Debug)]
pub struct MultiReactor {
    handles: Arc<[Handle]>,
    threads: Vec<JoinHandle<Result<(), Error>>>,
}

type Setup = dyn Fn(&Reactor, &Peers) -> Result<(), Error> + Send + Sync;

enum Order {
    /// Run the set-up with these peers and report.
    Setup(Arc<[Handle]>, Arc<Setup>),
    /// Starting failed elsewhere: end without running.
    Abort,
}

impl MultiReactor {
    /// Starts the reactors and runs `setup` on each, on its own thread, in index order; then
    /// they all run until stopped.
    ///
    /// # Errors
    /// An [`Error::Io`] of kind `InvalidInput` for more than [`MAX_REACTORS`] reactors; the
    /// first error of a reactor's creation, pinning or `setup` (the reactors already started
    /// are then stopped and joined).
    pub fn start<F>(opts: MultiOptions, setup: F) -> Result<MultiReactor, Error>
    where
        F: Fn(&Reactor, &Peers) -> Result<(), Error> + Send + Sync + 'static,
    {
        let cpus = crate::sys::allowed_cpus().unwrap_or_default();
        let n = match opts.reactors {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        if n > MAX_REACTORS {
            return Err(Error::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{n} reactors asked for: at most {MAX_REACTORS}"),
            )));
        }
        let setup: Arc<Setup> = Arc::new(setup);
        let (report_tx, report_rx) = mpsc::channel::<(usize, Result<Option<Handle>, Error>)>();
        let mut orders = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let (order_tx, order_rx) = mpsc::channel::<Order>();
            orders.push(order_tx);
            let report = report_tx.clone();
            let cpu = (opts.pin && !cpus.is_empty()).then(|| cpus[i % cpus.len()]);
            let spawned = std::thread::Builder::new()
                .name(format!("torsion-reactor-{i}"))
                .spawn(move || reactor_thread(i, opts, cpu, report, order_rx));
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    abort(&orders, threads);
                    return Err(Error::Io(e));
                }
            }
        }
        drop(report_tx);
        // Every reactor is made before any set-up runs, so that each sees all the handles.
        let mut handles: Vec<Option<Handle>> = vec![None; n];
        let mut failure = None;
        for _ in 0..n {
            match report_rx.recv() {
                Ok((i, Ok(Some(h)))) => handles[i] = Some(h),
                Ok((_, Err(e))) => {
                    failure.get_or_insert(e);
                }
                Ok((_, Ok(None))) | Err(_) => {
                    failure.get_or_insert(Error::ReactorGone);
                }
            }
        }
        if let Some(e) = failure {
            abort(&orders, threads);
            return Err(e);
        }
        let handles: Arc<[Handle]> = handles.into_iter().map(Option::unwrap).collect();
        // The set-ups, one after the other.
        for (i, order) in orders.iter().enumerate() {
            let sent = order.send(Order::Setup(handles.clone(), setup.clone()));
            let result = match (sent, report_rx.recv()) {
                (Ok(()), Ok((_, r))) => r.map(drop),
                _ => Err(Error::ReactorGone),
            };
            if let Err(e) = result {
                for later in &orders[i + 1..] {
                    let _ = later.send(Order::Abort);
                }
                let cluster = MultiReactor { handles, threads };
                cluster.stop();
                let _ = cluster.join();
                return Err(e);
            }
        }
        Ok(MultiReactor { handles, threads })
    }

    /// Every reactor's handle, by index.
    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }

    /// Asks every reactor to stop (each runs its shutdown triggers); returns at once.
    pub fn stop(&self) {
        for h in self.handles.iter() {
            let _ = h.stop();
        }
    }

    /// Waits until every reactor has stopped.
    ///
    /// # Errors
    /// The first error a reactor's `run` returned; [`Error::ReactorGone`] when a reactor thread
    /// panicked.
    pub fn join(self) -> Result<(), Error> {
        let mut first = Ok(());
        for t in self.threads {
            let r = t.join().unwrap_or(Err(Error::ReactorGone));
            if first.is_ok() {
                first = r;
            }
        }
        first
    }
}

/// Starts `n` reactors as [`MultiReactor::start`] does and waits until they have all stopped
/// (Ctrl-C, or a [`stop`](Reactor::stop) on any of them).
///
/// # Errors
/// As [`MultiReactor::start`] and [`MultiReactor::join`].
pub fn run_per_core<F>(opts: MultiOptions, setup: F) -> Result<(), Error>
where
    F: Fn(&Reactor, &Peers) -> Result<(), Error> + Send + Sync + 'static,
{
    MultiReactor::start(opts, setup)?.join()
}

/// Tells every waiting thread to end, and joins them.
fn abort(orders: &[mpsc::Sender<Order>], threads: Vec<JoinHandle<Result<(), Error>>>) {
    for o in orders {
        let _ = o.send(Order::Abort);
    }
    for t in threads {
        let _ = t.join();
    }
}

fn reactor_thread(
    index: usize,
    opts: MultiOptions,
    cpu: Option<usize>,
    report: mpsc::Sender<(usize, Result<Option<Handle>, Error>)>,
    orders: mpsc::Receiver<Order>,
) -> Result<(), Error> {
    let made = (|| {
        if let Some(cpu) = cpu {
            crate::sys::pin_current_thread(cpu)?;
        }
        let reactor = match (opts.backend, opts.io_uring) {
            (Some(Backend::IoUring), Some(u)) => Reactor::with_io_uring(u)?,
            (Some(b), _) => Reactor::with_backend(b)?,
            (None, _) => Reactor::new()?,
        };
        reactor.handle_stop_signals(opts.handle_stop_signals && index == 0);
        Ok::<_, Error>(reactor)
    })();
    let reactor = match made {
        Ok(r) => {
            let _ = report.send((index, Ok(Some(r.handle()))));
            r
        }
        Err(e) => {
            let _ = report.send((index, Err(e)));
            return Ok(());
        }
    };
    let (handles, setup) = match orders.recv() {
        Ok(Order::Setup(h, s)) => (h, s),
        Ok(Order::Abort) | Err(_) => return Ok(()),
    };
    let peers = Peers { index, handles };
    // Stopping any reactor stops them all.
    let all = peers.handles.clone();
    reactor.add_system_event_trigger(Phase::Before, SystemEvent::Shutdown, move |_| {
        for (i, h) in all.iter().enumerate() {
            if i != index {
                let _ = h.stop();
            }
        }
    });
    let r = setup(&reactor, &peers);
    let ok = r.is_ok();
    let _ = report.send((index, r.map(|()| None)));
    drop(report);
    if !ok {
        return Ok(());
    }
    reactor.run()
}
