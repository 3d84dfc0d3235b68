//! The agent started in-process with `knhk_agent::run` on `127.0.0.1:0`, ready once a path
//! answers 200, and stopped through its shutdown future.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use knhk_agent::config::AgentConfig;
use knhk_agent::{run, Listeners, RunError};
use reqwest::StatusCode;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running in-process agent.
pub struct InProcessAgent {
    /// Where its API listens.
    pub addr: SocketAddr,
    /// The client the tests call it with.
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    /// The `run` task.
    pub task: JoinHandle<Result<(), RunError>>,
}

impl InProcessAgent {
    /// Start with `config` and wait until `GET ready_path` answers 200.
    pub async fn start(config: AgentConfig, http: reqwest::Client, ready_path: &str) -> Self {
        let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_on(api, config, http, ready_path).await
    }

    /// Start on a listener bound by the caller (to know or reuse its port).
    pub async fn start_on(
        api: tokio::net::TcpListener,
        config: AgentConfig,
        http: reqwest::Client,
        ready_path: &str,
    ) -> Self {
        Self::start_with_peer(api, None, config, http, ready_path).await
    }

    /// Start on caller-bound listeners, the mTLS peer listener included when given.
    pub async fn start_with_peer(
        api: tokio::net::TcpListener,
        peer: Option<tokio::net::TcpListener>,
        config: AgentConfig,
        http: reqwest::Client,
        ready_path: &str,
    ) -> Self {
        let addr = api.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(run(Listeners { api, peer }, config, async {
            let _ = rx.await;
        }));
        let agent = InProcessAgent {
            addr,
            http,
            stop: Some(tx),
            task,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = agent.http.get(agent.url(ready_path)).send().await {
                if r.status() == StatusCode::OK {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "agent did not come up");
            assert!(!agent.task.is_finished(), "agent exited during startup");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        agent
    }

    /// URL of `path` on the agent.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `GET path` with [`InProcessAgent::http`], its JSON body (panics on a non-JSON answer).
    #[allow(dead_code)] // not every test crate that includes `support` reads JSON this way
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        self.http
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// `POST /v1/receipts` of `receipts` as one batch with [`InProcessAgent::http`].
    #[allow(dead_code)] // not every test crate that includes `support` posts receipts
    pub async fn post_receipts(
        &self,
        receipts: &[knhk_core::receipt::Receipt],
    ) -> reqwest::Response {
        self.http
            .post(self.url("/v1/receipts"))
            .header("content-type", "application/x-knhk-receipts")
            .body(knhk_core::receipt::encode_batch(receipts).unwrap())
            .send()
            .await
            .unwrap()
    }

    /// Shut down gracefully and wait for `run` to return Ok.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.task.await.unwrap().unwrap();
    }
}
