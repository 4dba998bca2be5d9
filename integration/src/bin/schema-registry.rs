//! The test Schema Registry as a standalone process, for the demo and the benchmarks:
//! `schema-registry [--listen 127.0.0.1:8081]`. It prints the URL it serves and runs until
//! SIGINT or SIGTERM. What it implements (and what not) is in `registry.rs`.

use std::net::SocketAddr;

use entity_cdc_integration::registry::SchemaRegistry;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut listen: SocketAddr = "127.0.0.1:8081".parse()?;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => {
                let value = args.next().ok_or_else(|| {
                    anyhow::anyhow!("--listen needs an address, e.g. 127.0.0.1:8081")
                })?;
                listen = value
                    .parse()
                    .map_err(|e| anyhow::anyhow!("--listen {value}: {e}"))?;
            }
            "-h" | "--help" => {
                println!("usage: schema-registry [--listen ADDR]   (default 127.0.0.1:8081)");
                return Ok(());
            }
            other => {
                anyhow::bail!("unknown argument {other}; usage: schema-registry [--listen ADDR]")
            }
        }
    }
    let registry = SchemaRegistry::start_on(listen).await?;
    println!("{}", registry.url());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        () = registry.stopped() => {}
    }
    Ok(())
}
