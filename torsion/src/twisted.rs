//! Twisted → torsion: where a Twisted name went, and what is not there yet.
//!
//! Rustdoc's search also finds most of these by their Twisted name (`callLater`,
//! `addCallbacks`, `deferToThread`, ...), through `#[doc(alias)]` on the items.
//!
//! # Reactor
//!
//! | Twisted | torsion | notes |
//! |---|---|---|
//! | `reactor.run()` / `reactor.stop()` | [`Reactor::run`], [`Reactor::stop`] | a reactor is a value (`Reactor::new`), not a global; it runs once |
//! | `reactor.callLater(d, f)` | [`Reactor::call_later`] → [`DelayedCall`] | `f` gets `&Reactor` |
//! | `reactor.callWhenRunning(f)` | [`Reactor::call_when_running`] | |
//! | `reactor.addSystemEventTrigger` | [`Reactor::add_system_event_trigger`] | triggers cannot return a Deferred yet |
//! | `reactor.callFromThread(f)` | [`Handle::call_from_thread`] | the [`Handle`] is the `Send + Sync` side of a reactor |
//! | `reactor.addReader` / `addWriter` | [`Reactor::add_reader`], [`Reactor::add_writer`] | |
//! | `reactor.listenTCP(port, factory)` | [`Reactor::listen_tcp`] → [`ListeningPort`] | |
//! | `reactor.connectTCP(host, port, factory)` | [`Reactor::connect_tcp`] → [`Connector`] | awaitable through [`endpoints`](crate::endpoints) |
//! | `reactor.listenUNIX(address, factory, mode=, wantPID=)` | [`Reactor::listen_unix`], [`listen_unix_with`](Reactor::listen_unix_with) → [`ListeningPort`] | paths and Linux abstract names (`@name`); a live server is refused, a dead socket file replaced, anything else never removed; `wantPID`: [`UnixListenOptions::lock`](crate::unix::UnixListenOptions::lock) |
//! | `reactor.connectUNIX(address, factory)` | [`Reactor::connect_unix`] → [`Connector`] | |
//! | `deferToThread(f)` | [`Reactor::defer_to_thread`] | a bounded pool owned by the reactor |
//! | `reactor.callInThread(f)` | [`Reactor::call_in_thread`] | |
//! | `reactor.suggestThreadPoolSize(n)` | [`Reactor::set_thread_pool_size`] | |
//! | `blockingCallFromThread(reactor, f)` | [`Handle::blocking_call_from_thread`] | its failure crosses threads as a [`RemoteFailure`](crate::defer::RemoteFailure) |
//! | `task.react(main)` | [`task::react`] | returns an `ExitCode` instead of exiting |
//! | (asyncio's `run_until_complete`) | [`Reactor::run_until_complete`] | for embedding and tests |
//!
//! # Protocols and transports
//!
//! | Twisted | torsion | notes |
//! |---|---|---|
//! | `Protocol` | [`Protocol`] (trait) | |
//! | `Factory` / `ClientFactory` | [`Factory`], [`ProtocolFactory`], [`ClientFactory`] | |
//! | `ITransport` | [`Transport`] | one handle over every kind: TCP, Unix sockets, a child's stdin, standard I/O, the testing kit's |
//! | `IPushProducer` / `IConsumer` | [`Producer`], [`Consumer`](crate::Consumer) | a transport is both: `a.register_producer(Rc::new(b.clone()), true)` proxies with backpressure |
//! | `basic.LineReceiver` | [`LineReceiver`](crate::protocols::basic::LineReceiver) + a [`LineHandler`](crate::protocols::basic::LineHandler) | raw mode, pausing (a [`PauseHandle`](crate::protocols::basic::PauseHandle), also a `Producer`), `MAX_LENGTH` → `with_max_length`; an over-long line's rest is skipped, not passed to the hook |
//! | `basic.LineOnlyReceiver` | [`LineOnlyReceiver`](crate::protocols::basic::LineOnlyReceiver) + a [`LineOnlyHandler`](crate::protocols::basic::LineOnlyHandler) | |
//! | `basic.Int8StringReceiver` / `Int16StringReceiver` / `Int32StringReceiver` | [`StringReceiver::int8`](crate::protocols::basic::StringReceiver::int8), [`int16`](crate::protocols::basic::StringReceiver::int16), [`int32`](crate::protocols::basic::StringReceiver::int32) + a [`StringHandler`](crate::protocols::basic::StringHandler) | `lengthLimitExceeded` → `frame_error` |
//! | `basic.NetstringReceiver` | [`StringReceiver::netstring`](crate::protocols::basic::StringReceiver::netstring) + a [`StringHandler`](crate::protocols::basic::StringHandler) | `NetstringParseError` → [`FrameError::Malformed`](crate::protocols::basic::FrameError::Malformed) |
//! | `policies.TimeoutMixin` | [`IdleTimeout`](crate::protocols::policies::IdleTimeout) | a value the protocol embeds; on expiry the default aborts (Twisted: `loseConnection`) and [`reason`](crate::protocols::policies::IdleTimeout::reason) gives `Reason::TimedOut` |
//! | `policies.TimeoutFactory` / `TimeoutProtocol` | [`TimeoutFactory`](crate::protocols::policies::TimeoutFactory), [`TimeoutProtocol`](crate::protocols::policies::TimeoutProtocol) | aborts (Twisted: `loseConnection`); the wrapped protocol is told `Reason::TimedOut` |
//! | `policies.ThrottlingFactory` | [`ThrottlingFactory`](crate::protocols::policies::ThrottlingFactory) | a protocol's own pause and its transport's backpressure stay apart from the throttle's |
//! | `policies.LimitTotalConnectionsFactory` | [`LimitTotalConnectionsFactory`](crate::protocols::policies::LimitTotalConnectionsFactory) | wraps any factory; no `overflowProtocol` |
//! | `policies.LimitConnectionsByPeer` | [`LimitConnectionsByPeer`](crate::protocols::policies::LimitConnectionsByPeer) | refusals logged at `WARN` |
//! | `protocol.ReconnectingClientFactory` | [`ReconnectingClientFactory`](crate::protocol::reconnect::ReconnectingClientFactory) | wraps the user's factory; resets the delay itself on connection (`resetDelay`); settings range-checked; `clock` → `with_clock`; jitter source injectable |
//! | `IUNIXTransport.sendFileDescriptor(fd)` | [`UnixTransport::send_file_descriptors`](crate::interfaces::UnixTransport::send_file_descriptors) via [`Transport::unix`] | the bytes that carry the descriptors are given with them; a typed error past the per-message or queue cap |
//! | `IFileDescriptorReceiver.fileDescriptorReceived(fd)` | [`Protocol::file_descriptor_received`] | an `OwnedFd`: dropped, it is closed |
//! | (SO_PEERCRED: the peer's pid, uid, gid) | [`UnixTransport::peer_credentials`](crate::interfaces::UnixTransport::peer_credentials) | Twisted has no such call |
//! | `getPeerCertificate` on a Unix transport | `torsion_tls::tls(transport)` → `peer_certificates()` | TLS over a Unix socket: `torsion_tls::TlsServerEndpoint` / `TlsClientEndpoint` around the Unix endpoints |
//!
//! # Processes, standard I/O and signals
//!
//! | Twisted | torsion | notes |
//! |---|---|---|
//! | `reactor.spawnProcess(proto, exe, args, env, path, childFDs=...)` | [`Reactor::spawn_process`](crate::Reactor::spawn_process) with a [`Spawn`](crate::process::Spawn) | `args` excludes `argv[0]` ([`Spawn::arg0`](crate::process::Spawn::arg0) sets it); errors are typed and synchronous |
//! | `ProcessProtocol` (`childDataReceived`, `outReceived`, `errReceived`, `childConnectionLost`, `processExited`, `processEnded`) | [`ProcessProtocol`](crate::process::ProcessProtocol) | the status is an [`ExitStatus`](crate::process::ExitStatus), not a Failure |
//! | `childFDs={0: "w", 1: "r", 3: 5}` | [`ChildFd::Write`](crate::process::ChildFd), `Read`, `Inherit(5)` | |
//! | `IProcessTransport` (`writeToChild`, `closeStdin`, `closeChildFD`, `loseConnection`, `pid`) | [`ProcessTransport`](crate::process::ProcessTransport) | stdin has a socket's flow control |
//! | `transport.signalProcess("TERM")` / `ProcessExitedAlready` | [`ProcessTransport::signal_process`](crate::process::ProcessTransport::signal_process), [`SignalError::ProcessExitedAlready`](crate::process::SignalError) | sent through a pidfd |
//! | `ProcessDone` / `ProcessTerminated` | [`ExitStatus::Exited`](crate::process::ExitStatus), [`ExitStatus::Signaled`](crate::process::ExitStatus) | |
//! | `_ProcessEndpointTransport` (a `Protocol` over a child) | [`ProtocolProcess`](crate::process::ProtocolProcess) | |
//! | children at shutdown (left running) | [`OnShutdown`](crate::process::OnShutdown) | default: SIGTERM, SIGKILL after a grace, reaped |
//! | `StandardIO(proto)` | [`stdio::start`](crate::stdio::start), [`stdio::start_on`](crate::stdio::start_on) | regular files and /dev/null work too |
//! | `installSignalHandlers` | [`Reactor::handle_stop_signals`](crate::Reactor::handle_stop_signals) | |
//! | `signal.signal(n, f)` (on the loop) | [`Reactor::add_signal_handler`](crate::Reactor::add_signal_handler), [`Signal`](crate::reactor::Signal) | the callback runs on the loop, never in signal context |
//!
//! # Datagrams ([`udp`](crate::udp))
//!
//! | Twisted | torsion | notes |
//! |---|---|---|
//! | `reactor.listenUDP(port, proto)` / `listenMulticast` | [`Reactor::listen_udp`], [`listen_udp_with`](Reactor::listen_udp_with) | returns the socket's [`DatagramTransport`](crate::udp::DatagramTransport); `listenMultiple` is [`DatagramOptions::reuse_addr`](crate::udp::DatagramOptions::reuse_addr) |
//! | `reactor.listenUNIXDatagram` / `connectUNIXDatagram` | [`Reactor::listen_unix_datagram`], [`Reactor::connect_unix_datagram`] | paths and Linux abstract names |
//! | `DatagramProtocol` | [`DatagramProtocol`](crate::udp::DatagramProtocol) (trait) | `datagramReceived` is `datagram_received(cx, data, from)`; also `datagram_truncated` |
//! | `ConnectedDatagramProtocol`, `port.connect(host, port)` | [`DatagramTransport::connect`](crate::udp::DatagramTransport::connect), [`Reactor::connect_udp`] | `connectionRefused` is `connection_refused` |
//! | `transport.write(data, addr)` | [`write_to`](crate::udp::DatagramTransport::write_to), [`write`](crate::udp::DatagramTransport::write) | return a typed [`DatagramError`](crate::udp::DatagramError) (`MessageLengthError` is `TooLarge`; a full buffer is `WouldBlock`) |
//! | `setBroadcastAllowed`, `joinGroup`, `leaveGroup`, `setTTL`, `setLoopbackMode`, `setOutgoingInterface` | [`set_broadcast_allowed`](crate::udp::DatagramTransport::set_broadcast_allowed), [`join_group`](crate::udp::DatagramTransport::join_group), [`leave_group`](crate::udp::DatagramTransport::leave_group), [`set_ttl`](crate::udp::DatagramTransport::set_ttl), [`set_loopback`](crate::udp::DatagramTransport::set_loopback), [`set_interface`](crate::udp::DatagramTransport::set_interface) | no name resolution: addresses are IP addresses, interfaces an address or an index |
//! | `proto_helpers` for datagrams | [`MemoryDatagramTransport`](crate::udp::MemoryDatagramTransport) | |
//!
//! # Endpoints and services ([`endpoints`](crate::endpoints), [`service`](crate::service))
//!
//! | Twisted | torsion | notes |
//! |---|---|---|
//! | `serverFromString(reactor, s)` | [`server_from_string`](crate::endpoints::server_from_string) | more schemes: [`EndpointRegistry`](crate::endpoints::EndpointRegistry) |
//! | `clientFromString(reactor, s)` | [`client_from_string`](crate::endpoints::client_from_string) | errors are typed: [`EndpointError`](crate::endpoints::EndpointError) |
//! | `TCP4ServerEndpoint` / `TCP6ServerEndpoint` | [`TcpServerEndpoint`](crate::endpoints::TcpServerEndpoint) | IPv6: give an IPv6 `interface` |
//! | `TCP4ClientEndpoint` | [`TcpClientEndpoint`](crate::endpoints::TcpClientEndpoint) | |
//! | `serverFromString(reactor, "unix:/path:mode=660:lockfile=1")` / `UNIXServerEndpoint` | [`UnixServerEndpoint`](crate::endpoints::UnixServerEndpoint) | `unix:@name` for a Linux abstract name (no lock file there) |
//! | `clientFromString(reactor, "unix:/path:checkPID=1")` / `UNIXClientEndpoint` | [`UnixClientEndpoint`](crate::endpoints::UnixClientEndpoint) | `checkPID` fails the connect at once without a live lock holder |
//! | `serverFromString(reactor, "ssl:443:privateKey=k.pem:certKey=c.pem")` | `torsion_tls::register_default_endpoints()`, then [`server_from_string`](crate::endpoints::server_from_string) | in the `torsion-tls` crate (`torsion_tls::TlsServerEndpoint`); also `caCerts=` (client certificates required), `extraCertChain=`, `alpn=h2,http/1.1`, `handshakeTimeout=` |
//! | `clientFromString(reactor, "tls:host:443:trustRoots=ca.pem")`, older `ssl:host=H:port=P:caCertsDir=D` | `torsion_tls::TlsClientEndpoint` through [`client_from_string`](crate::endpoints::client_from_string) | `certificate=`/`privateKey=`, `serverName=`, `alpn=`; `ssl:` without `caCertsDir` verifies against the bundled roots (Twisted does not verify at all) |
//! | `wrapClientTLS(options, endpoint)` | `torsion_tls::TlsClientEndpoint::new` | the connect fires when the connection below is made, before the handshake, as Twisted's |
//! | `HostnameEndpoint` | [`HostnameEndpoint`](crate::endpoints::HostnameEndpoint) | all failures listed: [`AttemptsFailed`](crate::endpoints::AttemptsFailed) |
//! | `endpoint.listen(f)` / `endpoint.connect(f)` | [`ServerEndpoint::listen`](crate::endpoints::ServerEndpoint::listen), [`ClientEndpointExt::connect`](crate::endpoints::ClientEndpointExt::connect) | `connect` takes a closure and gives the typed [`Connected`](crate::endpoints::Connected) protocol; any factory: [`connect_factory`](crate::endpoints::ClientEndpoint::connect_factory) |
//! | `connectProtocol(endpoint, p)` | [`connect_protocol`](crate::endpoints::connect_protocol) | |
//! | `ClientService(endpoint, factory)` | [`ClientService`](crate::service::ClientService) | `whenConnected` is [`when_connected`](crate::service::ClientService::when_connected); backoff [`Backoff`](crate::service::Backoff) |
//! | `MemoryReactor.tcpClients` | [`MemoryReactor::tcp_clients`](crate::testing::MemoryReactor::tcp_clients) | play an attempt: [`TcpClient::accept`](crate::testing::TcpClient::accept) / [`fail`](crate::testing::TcpClient::fail) |
//! | `MemoryReactor.unixServers` / `unixClients` | [`MemoryReactor::unix_servers`](crate::testing::MemoryReactor::unix_servers), [`unix_clients`](crate::testing::MemoryReactor::unix_clients) | played as TCP ones: [`UnixClient::accept`](crate::testing::UnixClient::accept) |
//!
//! # Deferreds ([`defer`](crate::defer))
//!
//! | Twisted | torsion | notes |
//! |---|---|---|
//! | `d = Deferred()` / `Deferred(canceller)` | [`Deferred::new`], [`Deferred::with_canceller`] | both give the Deferred and its [`Resolver`](crate::defer::Resolver) |
//! | `d.callback(v)` / `d.errback(f)` | [`Resolver::callback`](crate::defer::Resolver::callback), [`Resolver::errback`](crate::defer::Resolver::errback) | only the resolver fires: mismatched types do not compile |
//! | `d.addCallbacks` / `addCallback` / `addErrback` / `addBoth` | [`Deferred::add_callbacks`], [`add_callback`](Deferred::add_callback), [`add_errback`](Deferred::add_errback), [`add_both`](Deferred::add_both) | a callback returning a Deferred: [`add_callback_deferred`](Deferred::add_callback_deferred); either at run time: [`add_callbacks_step`](Deferred::add_callbacks_step) |
//! | `d.chainDeferred(d2)` | [`Deferred::chain_deferred`] | |
//! | `d.pause()` / `unpause()` / `cancel()` | [`Deferred::pause`], [`unpause`](Deferred::unpause), [`cancel`](Deferred::cancel) | |
//! | `d.addTimeout(t, clock)` | [`Deferred::add_timeout`] | |
//! | `d.result` | [`Deferred::current_result`], [`Deferred::try_result`] | |
//! | returning a Deferred the program keeps | [`Deferred::hand_off`] | |
//! | `succeed` / `fail` / `maybeDeferred` | [`succeed`](crate::defer::succeed), [`fail`](crate::defer::fail), [`maybe_deferred`](crate::defer::maybe_deferred) | |
//! | `DeferredList` / `gatherResults` / `race` | [`DeferredList`](crate::defer::DeferredList), [`gather_results`](crate::defer::gather_results), [`race`](crate::defer::race) | inputs by value or by reference |
//! | `DeferredLock` / `DeferredSemaphore` / `DeferredQueue` | [`DeferredLock`](crate::defer::DeferredLock), [`DeferredSemaphore`](crate::defer::DeferredSemaphore), [`DeferredQueue`](crate::defer::DeferredQueue) | |
//! | `ensureDeferred` / `Deferred.fromCoroutine` / `inlineCallbacks` | [`ensure_deferred`](crate::defer::ensure_deferred), [`Deferred::from_future`], `async` blocks | a Deferred is awaitable (`IntoFuture`) |
//! | `Failure` | [`Failure`] | `check`, `trap`, [`message`](Failure::message) (`getErrorMessage`), [`traceback`](Failure::traceback) (`getTraceback`) |
//! | `CancelledError` / `AlreadyCalledError` / `defer.TimeoutError` | [`Cancelled`](crate::defer::Cancelled), [`AlreadyCalled`](crate::defer::AlreadyCalled), [`TimedOut`](crate::defer::TimedOut) | |
//! | `FirstError` / `FailureGroup` | [`FirstError`](crate::defer::FirstError), [`FailureGroup`](crate::defer::FailureGroup) | |
//! | `task.deferLater` / `task.LoopingCall` | [`defer_later`](crate::task::defer_later), [`LoopingCall`](crate::task::LoopingCall) | |
//! | `task.Clock` | [`testing::Clock`](crate::testing::Clock) | |
//! | trial's `successResultOf` / `failureResultOf` | [`success_result_of`](crate::testing::success_result_of), [`failure_result_of`](crate::testing::failure_result_of) | |
//!
//! # Not there yet
//!
//! * Serial ports. (TLS is the `torsion-tls` crate.)
//! * `FileSender`, and the `twisted.protocols` modules beyond `basic` and `policies` (`amp`,
//!   `loopback`, ...).
//! * Shutdown triggers that return a Deferred (Twisted waits for them).
//! * Deferreds: a callback may not return a value of another type than the chain's (Twisted
//!   allows anything); `None` where Twisted leaves it (see the [`defer`](crate::defer) module
//!   docs for each difference).
//!
//! Search aliases not yet added (the items live in files being rewritten): `callLater`,
//! `callWhenRunning`, `addSystemEventTrigger`, `listenTCP`, `connectTCP`, `successResultOf`,
//! `failureResultOf`.

#[cfg(doc)]
use crate::{
    task, ClientFactory, Connector, Deferred, DelayedCall, Factory, Failure, Handle, ListeningPort,
    Producer, Protocol, ProtocolFactory, Reactor, Transport,
};
