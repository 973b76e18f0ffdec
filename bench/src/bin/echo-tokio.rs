//! `echo-tokio --port N [--flavor current_thread|multi_thread]`: the idiomatic tokio echo
//! server (a task per connection, a 16 KiB buffer per task, `read` then `write_all`).
//! `multi_thread` runs 2 workers; `current_thread` (the default) runs everything on the main
//! thread.

use bench::args::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn echo(mut stream: TcpStream) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if stream.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

async fn serve(port: u16) {
    let std_listener = bench::sys::std_listener(port, 4096).unwrap_or_else(|e| {
        eprintln!("echo-tokio: cannot listen on 127.0.0.1:{port}: {e}");
        std::process::exit(1)
    });
    let listener = TcpListener::from_std(std_listener).expect("register listener");
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                tokio::spawn(echo(stream));
            }
            Err(e) => {
                // EMFILE and the like: report and carry on.
                eprintln!("accept: {e}");
                tokio::task::yield_now().await;
            }
        }
    }
}

fn main() {
    let args = Args::from_env();
    let port: u16 = args.require("port");
    let flavor = args.get_str("flavor").unwrap_or("current_thread");
    bench::sys::raise_nofile_limit();
    let rt = match flavor {
        "current_thread" => tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build(),
        "multi_thread" => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_io()
            .build(),
        other => {
            eprintln!("echo-tokio: unknown --flavor {other:?} (current_thread|multi_thread)");
            std::process::exit(2)
        }
    }
    .expect("tokio runtime");
    // Run the accept loop as a task so that with multi_thread it lives on a worker.
    rt.block_on(async move { tokio::spawn(serve(port)).await })
        .expect("accept loop");
}
