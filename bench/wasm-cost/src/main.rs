//! `knhk-wasm-cost`: wasm instructions (wasmi fuel) and host calls per request of proxy-wasm
//! modules; see the library documentation.

use std::path::PathBuf;

use clap::Parser;
use knhk_wasm_cost::{measure, Settings, BENCH_CONFIG, PHASES};

#[derive(Parser)]
#[command(
    about = "Wasm instructions (wasmi fuel) and host calls per request of proxy-wasm modules"
)]
struct Args {
    /// Modules to measure, in order; the first is the baseline of the ratios.
    #[arg(long = "wasm", required = true)]
    modules: Vec<PathBuf>,
    /// Plugin configuration (JSON); default: the `knhk` variant of `cargo xtask bench`.
    #[arg(long, default_value = BENCH_CONFIG)]
    config: String,
    /// Measured requests per module (after the warm-up).
    #[arg(long, default_value_t = 20_000)]
    requests: u64,
    /// Requests before measuring (the admission window fills, allocations settle).
    #[arg(long, default_value_t = 2_000)]
    warmup: u64,
    /// Requests between two timer ticks (Envoy: `tick_ms` × request rate).
    #[arg(long, default_value_t = 1_000)]
    tick_every: u64,
    /// Also print where the last request's fuel went, host call by host call.
    #[arg(long)]
    trace: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let settings = Settings {
        config: args.config.clone(),
        requests: args.requests,
        warmup: args.warmup,
        tick_every: args.tick_every,
    };
    let mut results = Vec::new();
    for path in &args.modules {
        let cost = measure(path, &settings)?;
        println!("{}  ({} bytes)", path.display(), cost.size);
        for (name, fuel) in PHASES.iter().zip(cost.per_phase) {
            println!("  {name:<18} {fuel:>10.1} fuel/request");
        }
        println!("  {:<18} {:>10.1} fuel/request", "total", cost.per_request);
        println!(
            "  {:<18} {:>10.1} fuel/tick (every {} requests)",
            "on_tick", cost.per_tick, args.tick_every
        );
        for (call, per) in &cost.calls_per_request {
            println!("  host call {call:<36} {per:>6.3}/request");
        }
        println!(
            "  {:<18} {:>10.1} fuel/request with the ticks' share",
            "amortized",
            cost.per_request_amortized(args.tick_every)
        );
        if cost.receipt_batches > 0 {
            println!(
                "  receipt batches: {} posted and acknowledged, {} bytes each on average",
                cost.receipt_batches,
                cost.receipt_bytes / cost.receipt_batches
            );
        }
        if cost.local_replies > 0 {
            println!(
                "  local replies: {} (shed or refused requests)",
                cost.local_replies
            );
        }
        if args.trace {
            println!("  the last request, between host calls:");
            for (what, fuel) in &cost.last_request {
                println!("    {what:<60} {fuel:>8}");
            }
        }
        results.push((path.clone(), cost));
    }
    if let Some((base_path, base)) = results.first() {
        for (path, cost) in results.iter().skip(1) {
            println!(
                "{} ÷ {}: {:.3} × the fuel per request",
                path.display(),
                base_path.display(),
                cost.per_request / base.per_request
            );
        }
    }
    Ok(())
}
