//! `knhk-agent`: command-line entry of the knhk control agent (`run`, `verify`, `keys`,
//! `rollout`, `holds`).
//!
//! Exit codes: 0 success; 78 (`EX_CONFIG` of sysexits, as linkerd2-proxy) when the TOML file
//! or the environment is refused, before anything is bound or written, with one line
//! `knhk-agent: invalid setting <name>: …` on stderr; 1 for any other failure (a tampered
//! bundle, an unreachable agent, a runtime error), with one line `knhk-agent: error: …`;
//! 2 for command-line usage errors (clap). Never a backtrace, whatever `RUST_BACKTRACE` says.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use knhk_agent::admin_client::{AdminClient, AdminTarget};
use knhk_agent::config::{one_line, AgentConfig, ConfigError};
use knhk_agent::kms::build_signer;
use knhk_agent::policy::service::offline_trusted_keys;
use knhk_agent::quorum::witness::open_witness_key;
use knhk_agent::retention::cli::{request as holds_request, HoldsAction};
use knhk_agent::telemetry::Traces;
use knhk_agent::{run, Listeners, RunError};
use knhk_core::checkpoint::PublicKeyVersion;
use knhk_core::cosignature::WitnessKey;
use reqwest::Method;

/// knhk control agent.
#[derive(Debug, Parser)]
#[command(name = "knhk-agent", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the receipt API and seal the log until SIGINT or SIGTERM.
    Run {
        /// Agent config file (TOML); defaults apply when absent.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Address of the receipt and admin API.
        #[arg(long, default_value = "127.0.0.1:9901")]
        listen: SocketAddr,
        /// Address of the agent-to-agent API (mutual TLS with the SPIFFE SVID; needs
        /// `[identity] enabled`). Not served when absent.
        #[arg(long)]
        peer_listen: Option<SocketAddr>,
    },
    /// Check a proof bundle or log export offline against pinned keys, or a log published as
    /// tlog-tiles (`--tiles`); exits 1 with the reason on any tampering, on entries no signed
    /// checkpoint covers, and on a file without one.
    #[command(group(clap::ArgGroup::new("trust").required(true).args(["trusted_keys", "trust_keys_in_file"])))]
    Verify {
        /// The bundle or export (JSON).
        #[arg(required_unless_present = "tiles", conflicts_with = "tiles")]
        file: Option<PathBuf>,
        /// Read the log from its published tiles instead: `s3://bucket/prefix` or
        /// `file:///dir`. Audits every tile and entry against the checkpoint, or, with
        /// `--index`, proves one receipt. S3 credentials come from the AWS environment.
        #[arg(long, requires = "trusted_keys", conflicts_with = "trust_keys_in_file")]
        tiles: Option<String>,
        /// With `--tiles`: the leaf index of the receipt to prove.
        #[arg(long, requires = "tiles")]
        index: Option<u64>,
        /// With `--tiles`: an S3-compatible endpoint.
        #[arg(long, requires = "tiles")]
        s3_endpoint: Option<String>,
        /// With `--tiles`: the S3 region.
        #[arg(long, requires = "tiles", default_value = "us-east-1")]
        s3_region: String,
        /// JSON list of trusted public key versions (from `knhk-agent keys list`).
        #[arg(long)]
        trusted_keys: Option<PathBuf>,
        /// Take the signing keys from the file being verified instead of pinned ones. This
        /// proves only that the file is consistent with itself: whoever wrote it may have
        /// signed it with a key of their own.
        #[arg(long)]
        trust_keys_in_file: bool,
        /// Accept entries of an export after its last checkpoint (reported as unproven)
        /// instead of failing on them.
        #[arg(long)]
        accept_unproven: bool,
        /// Require this many signatures on the bundle's checkpoint: the log's own plus
        /// cosignatures of witnesses in `--witness-keys`.
        #[arg(long, requires = "witness_keys")]
        quorum: Option<usize>,
        /// JSON list of trusted witness keys `{"name", "public_key"}` (from
        /// `knhk-agent keys witness` of each region).
        #[arg(long)]
        witness_keys: Option<PathBuf>,
    },
    /// Place, release or list legal holds on a running agent.
    Holds {
        #[command(flatten)]
        target: AdminTarget,
        #[command(subcommand)]
        action: HoldsAction,
    },
    /// Start, inspect and steer a rollout on a running agent (promotion gates).
    Rollout {
        #[command(flatten)]
        target: AdminTarget,
        #[command(subcommand)]
        action: RolloutAction,
    },
    /// Which route, buckets and flags a routing key gets under a policy, computed with the
    /// filter's own bucketing (the weighted decision: no force header, audience or exclusion).
    Bucket {
        /// The routing key: what the policy's key source (header, cookie or query) carries.
        #[arg(long)]
        key: String,
        /// Read the policy from this filter configuration (JSON, as `policy_file`) instead of
        /// asking the running agent at `--agent` for its policy in force (`GET /v1/policy`).
        #[arg(long, conflicts_with = "agent")]
        policy: Option<PathBuf>,
        #[command(flatten)]
        target: AdminTarget,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The receipts of one routing key on a running agent: its log digest is asked of the
    /// agent (the key itself is not sent), then the log is read page by page (admin).
    Receipts {
        /// The routing key.
        #[arg(long)]
        key: String,
        #[command(flatten)]
        target: AdminTarget,
        /// First leaf to read.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Stop after this many matching receipts.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        /// Print JSON lines (one entry view each) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Capacity per class and route from a running agent's receipts: rate, p99 against the
    /// budget, where the fitted model saturates and reaches the budget, headroom, hot keys and
    /// recommendations (`GET /v1/capacity`, admin).
    Capacity {
        #[command(flatten)]
        target: AdminTarget,
        /// Print the JSON report instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Check a filter plugin configuration (JSON, e.g. `kubectl get wasmplugin knhk -o
    /// jsonpath='{.spec.pluginConfig}'`) with the filter's own validator, before applying it.
    ValidateConfig {
        /// The configuration file; `-` reads standard input.
        file: PathBuf,
    },
    /// Show or rotate the checkpoint signing key, or the config signing key.
    Keys {
        /// Agent config file (TOML); defaults apply when absent.
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: KeysAction,
    },
}

#[derive(Debug, Subcommand)]
enum KeysAction {
    /// Print every public key version as JSON (the trust file `verify --trusted-keys` reads).
    List,
    /// Add a key version and print its public key.
    Rotate,
    /// Print the config key set for the filter's static `control.trusted_keys` (JSON).
    ListConfig,
    /// Print this region's witness key `{"name", "public_key"}` (created on first use).
    Witness,
    /// Rotate the config signing key of a running agent and publish the handover epoch.
    RotateConfig {
        #[command(flatten)]
        target: AdminTarget,
    },
}

#[derive(Debug, Subcommand)]
enum RolloutAction {
    /// Start a rollout from a JSON document (see docs/rollouts.md).
    Start {
        /// The rollout document.
        file: PathBuf,
    },
    /// Show the gate, weights, analysis figures and history.
    Status {
        /// Print the raw JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Promote to the next gate, or to `--to canary|staging|production`.
    Promote {
        /// Target gate.
        #[arg(long)]
        to: Option<String>,
    },
    /// Stop automatic promotion (automatic rollback stays armed).
    Pause,
    /// Resume automatic promotion.
    Resume,
    /// Send all traffic back to stable and end the rollout.
    Abort {
        /// Why (recorded in the signed event).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Turn one of the rollout's feature flags off for everyone.
    DisableFlag {
        /// Flag name.
        name: String,
    },
}

async fn rollout(target: &AdminTarget, action: RolloutAction) -> anyhow::Result<ExitCode> {
    let client = AdminClient::new(target)?;
    let (method, path, body): (Method, String, Option<Vec<u8>>) = match &action {
        RolloutAction::Start { file } => (
            Method::POST,
            "/v1/rollouts".to_owned(),
            Some(std::fs::read(file).with_context(|| format!("reading {}", file.display()))?),
        ),
        RolloutAction::Status { .. } => (Method::GET, "/v1/rollouts/current".to_owned(), None),
        RolloutAction::Promote { to } => (
            Method::POST,
            "/v1/rollouts/current/promote".to_owned(),
            to.as_ref()
                .map(|t| serde_json::to_vec(&serde_json::json!({ "to": t })))
                .transpose()?,
        ),
        RolloutAction::Pause => (Method::POST, "/v1/rollouts/current/pause".to_owned(), None),
        RolloutAction::Resume => (Method::POST, "/v1/rollouts/current/resume".to_owned(), None),
        RolloutAction::Abort { reason } => (
            Method::POST,
            "/v1/rollouts/current/abort".to_owned(),
            reason
                .as_ref()
                .map(|r| serde_json::to_vec(&serde_json::json!({ "reason": r })))
                .transpose()?,
        ),
        RolloutAction::DisableFlag { name } => (
            Method::POST,
            format!(
                "/v1/rollouts/current/flags/{}/disable",
                url::form_urlencoded::byte_serialize(name.as_bytes()).collect::<String>()
            ),
            None,
        ),
    };
    let answer = client.call(method, &path, body).await?;
    let text = answer.text();
    if !answer.is_success() {
        eprintln!(
            "knhk-agent: error: agent at {} answered {}: {}",
            client.base(),
            answer.status,
            one_line(&text)
        );
        return Ok(ExitCode::FAILURE);
    }
    let status: serde_json::Value = serde_json::from_slice(&answer.body)
        .with_context(|| format!("agent answered something that is not JSON: {text}"))?;
    if matches!(action, RolloutAction::Status { json: true }) {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", knhk_agent::gates::report::render(&status));
    }
    Ok(ExitCode::SUCCESS)
}

/// The policy in force on the agent at `target`, from `GET /v1/policy`.
async fn policy_in_force(target: &AdminTarget) -> anyhow::Result<knhk_core::Policy> {
    let client = AdminClient::new(target)?;
    let answer = admin_call(&client, Method::GET, "/v1/policy", None).await?;
    let view: serde_json::Value =
        serde_json::from_slice(&answer).context("reading GET /v1/policy")?;
    let Some(policy) = view.get("policy").filter(|p| !p.is_null()) else {
        anyhow::bail!("agent at {} has no policy in force yet", client.base());
    };
    knhk_core::Policy::from_json(policy.to_string().as_bytes())
        .context("the agent's policy in force")
}

/// The log digest of a filter digest, asked of the agent (`POST /v1/receipts/leaf-digest`).
async fn leaf_digest(target: &AdminTarget, key_digest: &str) -> anyhow::Result<String> {
    let client = AdminClient::new(target)?;
    let body = serde_json::to_vec(&serde_json::json!({ "key_digest": key_digest }))?;
    let answer = admin_call(
        &client,
        Method::POST,
        "/v1/receipts/leaf-digest",
        Some(body),
    )
    .await?;
    let view: knhk_agent::api::receipts::LeafDigest =
        serde_json::from_slice(&answer).context("reading POST /v1/receipts/leaf-digest")?;
    Ok(view.leaf_digest)
}

/// One call through `client`: the body of a 2xx answer, else an error naming the status.
async fn admin_call(
    client: &AdminClient,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> anyhow::Result<Vec<u8>> {
    let answer = client.call(method, path, body).await?;
    if !answer.is_success() {
        anyhow::bail!(
            "agent at {} answered {}: {}",
            client.base(),
            answer.status,
            answer.text()
        );
    }
    Ok(answer.body)
}

fn load(path: Option<&PathBuf>) -> anyhow::Result<AgentConfig> {
    Ok(AgentConfig::load(path.map(PathBuf::as_path), |k| {
        std::env::var(k).ok()
    })?)
}

fn verify(
    file: &PathBuf,
    trusted_keys: Option<&PathBuf>,
    accept_unproven: bool,
    quorum: Option<(usize, &PathBuf)>,
) -> anyhow::Result<ExitCode> {
    let json = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let trusted: Option<Vec<PublicKeyVersion>> = trusted_keys
        .map(|p| read_json(p, "trusted keys"))
        .transpose()?;
    let witnesses = witness_quorum(quorum)?;
    let verdict = knhk_agent::verify::check(
        &json,
        trusted.as_deref(),
        accept_unproven,
        witnesses.as_ref().map(|(k, w)| (*k, w.as_slice())),
    );
    Ok(print_verdict(&verdict, &file.display().to_string()))
}

/// Print `verdict` as `verify` does (its facts, then `OK: <what>` or the failure on stderr)
/// and return the exit code.
fn print_verdict(verdict: &knhk_agent::verify::Verdict, what: &str) -> ExitCode {
    for line in &verdict.lines {
        println!("{line}");
    }
    match &verdict.failure {
        None => {
            println!("OK: {what}");
            ExitCode::SUCCESS
        }
        Some(reason) => {
            eprintln!("verification FAILED: {what}: {reason}");
            ExitCode::FAILURE
        }
    }
}

/// `--quorum k` with the witness keys of `--witness-keys`.
fn witness_quorum(
    quorum: Option<(usize, &PathBuf)>,
) -> anyhow::Result<Option<(usize, Vec<WitnessKey>)>> {
    quorum
        .map(|(k, p)| Ok((k, read_json(p, "witness keys")?)))
        .transpose()
}

/// Where `verify --tiles` reads.
struct TileSource<'a> {
    url: &'a str,
    endpoint: Option<&'a str>,
    region: &'a str,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &PathBuf, what: &str) -> anyhow::Result<T> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("parsing {what} {}", path.display()))
}

async fn verify_tiles(
    source: TileSource<'_>,
    trusted_keys: &PathBuf,
    index: Option<u64>,
    quorum: Option<(usize, &PathBuf)>,
) -> anyhow::Result<ExitCode> {
    use knhk_agent::tiles::{audit, config::Destination, store::TileStore};
    let destination =
        Destination::parse(source.url).map_err(|e| anyhow::anyhow!("--tiles: {e}"))?;
    let store = TileStore::open(&destination, source.endpoint, source.region, None)?;
    let ask = audit::TilesCheck {
        trusted: read_json(trusted_keys, "trusted keys")?,
        quorum: witness_quorum(quorum)?,
        index,
    };
    let verdict = audit::check(&store, &ask).await;
    Ok(print_verdict(&verdict, source.url))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("shutdown requested");
}

/// `EX_CONFIG` (sysexits.h): a configuration error.
const EX_CONFIG: u8 = 78;

/// The configuration error inside `e`, when it is one (directly, or as `RunError::Config`).
fn config_error(e: &anyhow::Error) -> Option<&ConfigError> {
    e.chain().find_map(|cause| {
        cause
            .downcast_ref::<ConfigError>()
            .or_else(|| match cause.downcast_ref::<RunError>() {
                Some(RunError::Config(c)) => Some(c),
                _ => None,
            })
    })
}

/// Install the log subscriber (stderr, `RUST_LOG`, default `info`) and, with `traces`, the
/// bridge that turns `tracing`'s `knhk.*` spans into OpenTelemetry spans for export,
/// whatever `RUST_LOG` says of the log.
fn init_tracing(traces: Option<&Traces>) {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::Layer as _;
    let log = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        );
    let otel = traces.map(|t| knhk_agent::telemetry::span_layer(t.tracer()));
    // Once per process: a second call (never made) would keep the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(log)
        .with(otel)
        .try_init();
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Run {
            config,
            listen,
            peer_listen,
        } => run_agent(config, listen, peer_listen).await,
        other => {
            init_tracing(None);
            command(other).await
        }
    };
    match outcome {
        Ok(code) => code,
        Err(e) => match config_error(&e) {
            Some(c) => {
                eprintln!("knhk-agent: {}", one_line(&c.to_string()));
                ExitCode::from(EX_CONFIG)
            }
            None => {
                eprintln!("knhk-agent: error: {}", one_line(&format!("{e:#}")));
                ExitCode::FAILURE
            }
        },
    }
}

/// `knhk-agent run`: load and check the configuration, start the span export it asks for,
/// bind, and serve until SIGINT or SIGTERM.
async fn run_agent(
    config: Option<PathBuf>,
    listen: SocketAddr,
    peer_listen: Option<SocketAddr>,
) -> anyhow::Result<ExitCode> {
    let loaded = load(config.as_ref());
    let traces = match &loaded {
        Ok(cfg) => Traces::start(&cfg.telemetry).map_err(ConfigError::from)?,
        Err(_) => None,
    };
    init_tracing(traces.as_ref());
    if let (Some(_), Ok(cfg)) = (&traces, &loaded) {
        if let Some(endpoint) = cfg.telemetry.traces_endpoint() {
            tracing::info!(%endpoint, "exporting traces by OTLP");
        }
    }
    let served = serve_agent(loaded?, listen, peer_listen).await;
    if let Some(traces) = traces {
        tokio::task::spawn_blocking(move || traces.shutdown()).await?;
    }
    served.map(|()| ExitCode::SUCCESS)
}

async fn serve_agent(
    cfg: AgentConfig,
    listen: SocketAddr,
    peer_listen: Option<SocketAddr>,
) -> anyhow::Result<()> {
    cfg.check_listeners(listen, peer_listen.is_some())?;
    let api = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let peer = match peer_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr}"))?,
        ),
        None => None,
    };
    run(Listeners { api, peer }, cfg, shutdown_signal()).await?;
    Ok(())
}

async fn command(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        // `main` runs the agent itself (the log subscriber waits for its config); kept here
        // so that every command has one place.
        Command::Run {
            config,
            listen,
            peer_listen,
        } => return Box::pin(run_agent(config, listen, peer_listen)).await,
        Command::Verify {
            file,
            tiles,
            index,
            s3_endpoint,
            s3_region,
            trusted_keys,
            trust_keys_in_file: _,
            accept_unproven,
            quorum,
            witness_keys,
        } => {
            let quorum = quorum.zip(witness_keys.as_ref());
            return match (file, tiles) {
                (Some(file), _) => verify(&file, trusted_keys.as_ref(), accept_unproven, quorum),
                (None, Some(url)) => {
                    let trusted = trusted_keys
                        .as_ref()
                        .context("--tiles needs --trusted-keys")?;
                    let source = TileSource {
                        url: &url,
                        endpoint: s3_endpoint.as_deref(),
                        region: &s3_region,
                    };
                    verify_tiles(source, trusted, index, quorum).await
                }
                (None, None) => anyhow::bail!("give a file or --tiles"),
            };
        }
        Command::Holds { target, action } => {
            let (method, path, body) = holds_request(&action)?;
            let method = if method == "GET" {
                Method::GET
            } else {
                Method::POST
            };
            let body = body.map(|b| serde_json::to_vec(&b)).transpose()?;
            let client = AdminClient::new(&target)?;
            let answer = admin_call(&client, method, &path, body).await?;
            println!("{}", String::from_utf8_lossy(&answer));
        }
        Command::ValidateConfig { file } => {
            let bytes = if file.as_os_str() == "-" {
                let mut buf = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
                    .context("reading standard input")?;
                buf
            } else {
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?
            };
            let policy = knhk_core::Policy::from_json(&bytes)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            println!(
                "{}: valid: version {}, {}",
                file.display(),
                policy.version,
                policy.summary()
            );
        }
        Command::Receipts {
            key,
            target,
            from,
            limit,
            json,
        } => {
            let policy = policy_in_force(&target).await?;
            let filter = knhk_agent::key_route::key_route(&policy, key.as_bytes());
            let wanted = leaf_digest(&target, &filter.key_digest).await?;
            let client = AdminClient::new(&target)?;
            let (mut at, mut found) = (Some(from), 0usize);
            while let Some(start) = at.filter(|_| found < limit) {
                let answer = admin_call(
                    &client,
                    Method::GET,
                    &format!(
                        "/v1/receipts?from={start}&limit={}",
                        knhk_agent::api::receipts::MAX_PAGE
                    ),
                    None,
                )
                .await?;
                let page: knhk_agent::api::receipts::EntriesPage =
                    serde_json::from_slice(&answer).context("reading GET /v1/receipts")?;
                for view in page.entries.iter().filter(|v| {
                    matches!(&v.entry, knhk_agent::api::receipts::EntryBody::Receipt { key_digest, .. } if *key_digest == wanted)
                }) {
                    if found == limit {
                        break;
                    }
                    found += 1;
                    if json {
                        println!("{}", serde_json::to_string(view)?);
                    } else {
                        println!("{}", knhk_agent::api::receipts::receipt_line(view));
                    }
                }
                at = page.next;
            }
            eprintln!("{found} receipt(s) of this key (log digest {wanted})");
        }
        Command::Bucket {
            key,
            policy,
            target,
            json,
        } => {
            let from_agent = policy.is_none();
            let policy = match policy {
                Some(file) => {
                    let bytes = std::fs::read(&file)
                        .with_context(|| format!("reading {}", file.display()))?;
                    knhk_core::Policy::from_json(&bytes)
                        .with_context(|| format!("policy {}", file.display()))?
                }
                None => policy_in_force(&target).await?,
            };
            let mut answer = knhk_agent::key_route::key_route(&policy, key.as_bytes());
            if from_agent {
                answer.leaf_digest = Some(leaf_digest(&target, &answer.key_digest).await?);
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                println!("{answer}");
            }
        }
        Command::Rollout { target, action } => {
            return rollout(&target, action).await;
        }
        Command::Capacity { target, json } => {
            let client = AdminClient::new(&target)?;
            let answer = admin_call(&client, Method::GET, "/v1/capacity", None).await?;
            if json {
                println!("{}", String::from_utf8_lossy(&answer));
            } else {
                let report: knhk_agent::capacity::report::Report =
                    serde_json::from_slice(&answer).context("the agent's capacity report")?;
                print!("{}", knhk_agent::capacity::report::table(&report));
            }
        }
        Command::Keys { config, action } => {
            let cfg = load(config.as_ref())?;
            let out = match action {
                KeysAction::List => serde_json::to_string_pretty(
                    &build_signer(&cfg.kms).await?.public_keys().await?,
                )?,
                KeysAction::Rotate => {
                    serde_json::to_string_pretty(&build_signer(&cfg.kms).await?.rotate().await?)?
                }
                KeysAction::ListConfig => {
                    serde_json::to_string_pretty(&offline_trusted_keys(cfg.policy_setup()).await?)?
                }
                KeysAction::Witness => {
                    if cfg.quorum.region.is_empty() && cfg.quorum.witness_name.is_none() {
                        return Err(ConfigError::Invalid {
                            setting: "quorum.region",
                            reason: "set [quorum] region (or KGC_SIDECAR_REGION) first: the witness key is named after it".to_owned(),
                        }
                        .into());
                    }
                    serde_json::to_string_pretty(
                        &open_witness_key(&cfg.quorum, &cfg.data_dir).await?.1,
                    )?
                }
                KeysAction::RotateConfig { target } => {
                    let client = AdminClient::new(&target)?;
                    let answer =
                        admin_call(&client, Method::POST, "/v1/config/keys/rotate", None).await?;
                    String::from_utf8_lossy(&answer).into_owned()
                }
            };
            println!("{out}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
