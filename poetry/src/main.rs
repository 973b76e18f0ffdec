//! The `poetry` command: `poetry serve`, `poetry get`, `poetry demo`.
#![deny(unsafe_code)]

use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use poetry::client::{get_poetry, GetOptions, Model};
use poetry::demo::{self, DemoOptions};
use poetry::server::{PoetryServer, ServeOptions};
use poetry::Address;
use torsion::Reactor;

/// The "Get Poetry Now!" programs of the twisted-intro tutorial, on torsion.
#[derive(Debug, Parser)]
#[command(name = "poetry", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve a poem slowly: NUM_BYTES bytes every DELAY seconds, then close.
    Serve(ServeArgs),
    /// Get poetry from one or more servers at once.
    Get(GetArgs),
    /// Start three slow servers, fetch their poems blocking and then on the reactor, and
    /// compare the times.
    Demo(DemoArgs),
    /// Serve poem transformations: a netstring request `NAME.POEM`, the new poem back.
    Transform(TransformArgs),
    /// Serve an upstream server's poem, fetched once and cached.
    Proxy(ProxyArgs),
}

#[derive(Debug, Args)]
struct TransformArgs {
    /// Where to listen, as an endpoint string (`tcp:10000:interface=127.0.0.1`,
    /// `unix:/tmp/poetry.sock`, ...); replaces --port and --iface.
    #[arg(long, value_name = "ENDPOINT")]
    listen: Option<String>,
    /// The port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// The interface (address) to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    iface: String,
    /// The longest request taken, in bytes; a longer one is refused and its connection closed.
    #[arg(long, default_value_t = poetry::transform::DEFAULT_MAX_REQUEST as u64,
          value_parser = clap::value_parser!(u64).range(1..=(1 << 30)))]
    max_request: u64,
    /// Print a line for each transform.
    #[arg(long, short)]
    verbose: bool,
}

#[derive(Debug, Args)]
struct ProxyArgs {
    /// Where to listen, as an endpoint string (`tcp:10000:interface=127.0.0.1`,
    /// `unix:/tmp/poetry.sock`, ...); replaces --port and --iface.
    #[arg(long, value_name = "ENDPOINT")]
    listen: Option<String>,
    /// The port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// The interface (address) to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    iface: String,
    /// Seconds to wait for the upstream connection.
    #[arg(long, default_value = "30", value_parser = parse_seconds)]
    timeout: Duration,
    /// The largest poem to take from upstream, in bytes.
    #[arg(long, default_value_t = 16 << 20, value_parser = clap::value_parser!(u64).range(1..=(1 << 30)))]
    max_poem: u64,
    /// Print where each poem came from (cache or upstream).
    #[arg(long, short)]
    verbose: bool,
    /// The upstream poetry server: PORT (on 127.0.0.1) or HOST:PORT.
    #[arg(value_name = "[HOST:]PORT")]
    upstream: Address,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// The port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// The interface (address) to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    iface: String,
    /// Seconds between two chunks.
    #[arg(long, default_value = "0.1", value_parser = parse_seconds)]
    delay: Duration,
    /// Bytes per chunk.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    num_bytes: u64,
    /// Send the whole poem at once and close.
    #[arg(long)]
    fast: bool,
    /// Serve one client at a time, as the original server did; the others wait their turn.
    #[arg(long)]
    one_at_a_time: bool,
    /// Print a line for each client.
    #[arg(long, short)]
    verbose: bool,
    /// The poem file to serve.
    poem: PathBuf,
}

#[derive(Debug, Args)]
struct GetArgs {
    /// The client's style (the tutorial's successive versions).
    #[arg(long, value_enum, default_value_t = Model::default())]
    model: Model,
    /// Connections to open to each address.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    repeat: u64,
    /// Print the poems.
    #[arg(long)]
    show: bool,
    /// Seconds to wait for a connection.
    #[arg(long, default_value = "30", value_parser = parse_seconds)]
    timeout: Duration,
    /// Seconds a server may stay silent before its download fails.
    #[arg(long, default_value = "60", value_parser = parse_seconds)]
    idle_timeout: Duration,
    /// The largest poem to accept, in bytes; a larger one fails its download.
    #[arg(long, default_value_t = 16 << 20, value_parser = clap::value_parser!(u64).range(1..=(1 << 30)))]
    max_poem: u64,
    /// Send each poem to this transformation server ([HOST:]PORT) and print what it answers,
    /// or the original poem when the transform fails (needs --model deferred or async).
    #[arg(long, value_name = "[HOST:]PORT")]
    transform: Option<Address>,
    /// The transform to ask for.
    #[arg(long, default_value = "cummingsify")]
    xform: poetry::transform::Transform,
    /// The servers: PORT (on 127.0.0.1) or HOST:PORT.
    #[arg(required = true, value_name = "[HOST:]PORT")]
    addresses: Vec<Address>,
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// The servers' seconds between two chunks.
    #[arg(long, default_value = "0.1", value_parser = parse_seconds)]
    delay: Duration,
    /// Chunks per poem: each download takes about CHUNKS × DELAY.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    chunks: u64,
}

/// The longest delay or timeout the programs take: a day.
const MAX_SECONDS: f64 = 86_400.0;

/// The largest poem `serve` reads.
const MAX_POEM: u64 = 64 << 20;

fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(0.0..=MAX_SECONDS).contains(&secs) {
        return Err(format!("{s:?} is not between 0 and {MAX_SECONDS} seconds"));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{s:?} is not a valid delay"))
}

/// Reads a poem: a regular file of at most [`MAX_POEM`] bytes (a FIFO would block the
/// server, `/dev/zero` would never end).
fn read_poem(path: &std::path::Path) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let fail = |e: io::Error| {
        io::Error::new(
            e.kind(),
            format!("cannot read the poem {}: {e}", path.display()),
        )
    };
    let meta = std::fs::metadata(path).map_err(fail)?;
    if !meta.is_file() {
        return Err(fail(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
    let mut poem = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_POEM + 1).read_to_end(&mut poem))
        .map_err(fail)?;
    if poem.len() as u64 > MAX_POEM {
        return Err(fail(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {} MiB", MAX_POEM >> 20),
        )));
    }
    Ok(poem)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    log_to_stderr();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Get(args) => get(args),
        Command::Demo(args) => run_demo(args),
        Command::Transform(args) => transform(args),
        Command::Proxy(args) => proxy(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("poetry: {e}");
            ExitCode::FAILURE
        }
    }
}

/// torsion's warnings and errors go to stderr (where the user of the program sees them);
/// `RUST_LOG=error|warn|info|debug|trace` changes the level.
fn log_to_stderr() {
    let level = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.trim().parse::<tracing::Level>().ok())
        .unwrap_or(tracing::Level::WARN);
    tracing_subscriber::fmt()
        .with_writer(io::stderr)
        .with_max_level(level)
        .init();
}

fn serve(args: ServeArgs) -> io::Result<ExitCode> {
    let poem = read_poem(&args.poem)?;
    poetry::sys::raise_fd_limit();
    let reactor = Reactor::new().map_err(io::Error::other)?;
    let opts = ServeOptions {
        delay: args.delay,
        num_bytes: usize::try_from(args.num_bytes).unwrap_or(usize::MAX),
        fast: args.fast,
        one_at_a_time: args.one_at_a_time,
        verbose: args.verbose,
    };
    let server = PoetryServer::listen(&reactor, (args.iface.as_str(), args.port), poem, opts)
        .map_err(|e| {
            io::Error::other(format!(
                "cannot listen on {}:{}: {e}",
                args.iface, args.port
            ))
        })?;
    let mut stdout = io::stdout();
    writeln!(
        stdout,
        "Serving {} on port {}.",
        args.poem.display(),
        server.port()
    )
    .and_then(|()| stdout.flush())
    .map_err(|e| io::Error::new(e.kind(), format!("cannot write to stdout: {e}")))?;
    reactor.run().map_err(io::Error::other)?;
    Ok(ExitCode::SUCCESS)
}

/// Listens with `factory` on the endpoint `listen`, or else on `iface:port`, prints
/// `BANNER on port N.` (or `on ADDRESS.` for an endpoint that is not TCP), and runs the reactor.
fn serve_factory(
    listen: Option<&str>,
    iface: &str,
    port: u16,
    factory: impl torsion::ProtocolFactory + 'static,
    banner: &str,
) -> io::Result<ExitCode> {
    let reactor = Reactor::new().map_err(io::Error::other)?;
    let listening = match listen {
        Some(description) => {
            let endpoint = torsion::endpoints::server_from_string(&reactor, description)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
            reactor
                .run_until_complete(endpoint.listen(std::rc::Rc::new(factory)))
                .map_err(|f| {
                    io::Error::other(format!(
                        "cannot listen on {description}: {}",
                        torsion::error::Chain(f.error())
                    ))
                })?
        }
        None => reactor
            .listen_tcp((iface, port), factory)
            .map_err(|e| io::Error::other(format!("cannot listen on {iface}:{port}: {e}")))?,
    };
    let place = match listening.address().as_tcp() {
        Some(a) => format!("port {}", a.port()),
        None => listening.address().to_string(),
    };
    let mut stdout = io::stdout();
    writeln!(stdout, "{banner} on {place}.")
        .and_then(|()| stdout.flush())
        .map_err(|e| io::Error::new(e.kind(), format!("cannot write to stdout: {e}")))?;
    reactor.run().map_err(io::Error::other)?;
    Ok(ExitCode::SUCCESS)
}

fn transform(args: TransformArgs) -> io::Result<ExitCode> {
    poetry::sys::raise_fd_limit();
    let max = usize::try_from(args.max_request).unwrap_or(usize::MAX);
    let factory = poetry::transform::server_factory(max, args.verbose);
    serve_factory(
        args.listen.as_deref(),
        &args.iface,
        args.port,
        factory,
        "Serving transforms",
    )
}

fn proxy(args: ProxyArgs) -> io::Result<ExitCode> {
    poetry::sys::raise_fd_limit();
    let opts = GetOptions {
        timeout: args.timeout,
        limits: poetry::client::Limits {
            max_poem: usize::try_from(args.max_poem).unwrap_or(usize::MAX),
            ..Default::default()
        },
        ..Default::default()
    };
    let banner = format!("Proxying {}", args.upstream);
    let upstream = args.upstream;
    let fetch: poetry::proxy::Fetch =
        std::rc::Rc::new(move |reactor| poetry::client::fetch_poem(reactor, &upstream, &opts));
    let service = poetry::proxy::ProxyService::new(fetch, args.verbose);
    serve_factory(
        args.listen.as_deref(),
        &args.iface,
        args.port,
        service.factory(),
        &banner,
    )
}

fn get(args: GetArgs) -> io::Result<ExitCode> {
    poetry::sys::raise_fd_limit();
    let opts = GetOptions {
        model: args.model,
        repeat: usize::try_from(args.repeat).unwrap_or(usize::MAX),
        show: args.show,
        progress: io::stdout().is_terminal(),
        timeout: args.timeout,
        limits: poetry::client::Limits {
            idle_timeout: args.idle_timeout,
            max_poem: usize::try_from(args.max_poem).unwrap_or(usize::MAX),
        },
        transform: args
            .transform
            .map(|server| poetry::client::TransformOptions {
                server,
                transform: args.xform,
            }),
    };
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let fetched = get_poetry(&args.addresses, &opts, &mut out)?;
    Ok(if fetched.failures() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn run_demo(args: DemoArgs) -> io::Result<ExitCode> {
    let opts = DemoOptions {
        delay: args.delay,
        chunks: usize::try_from(args.chunks).unwrap_or(usize::MAX),
        progress: io::stdout().is_terminal(),
    };
    let stdout = io::stdout();
    let mut out = stdout.lock();
    demo::run(&opts, &mut out)?;
    Ok(ExitCode::SUCCESS)
}
