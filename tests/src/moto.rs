//! A real moto server (`moto_server`, PyPI `moto[server]`): AWS's APIs, KMS among them, on a
//! free loopback port; polled until it answers, killed on drop, its log printed when a test
//! fails. With [`Moto::start_with_iam`] it enforces IAM: requests are authorised against the
//! users and policies moto holds, so a credential without `kms:Sign` is refused as AWS would.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};

use crate::paths;
use crate::ports::free_port;
use crate::wait::poll;

/// How long moto may take to answer.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Attempts at starting when the chosen port was taken by someone else meanwhile.
const START_ATTEMPTS: u32 = 3;

/// An access key pair moto accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessKey {
    /// `AWS_ACCESS_KEY_ID`.
    pub id: String,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub secret: String,
}

/// IAM users made by [`Moto::start_with_iam`].
#[derive(Debug, Clone)]
pub struct IamUsers {
    /// Allowed `kms:*`.
    pub admin: AccessKey,
    /// Allowed to describe, list and read public keys, but not `kms:Sign`.
    pub reader: AccessKey,
}

/// The setup calls [`IAM_SETUP`] makes before moto starts enforcing IAM.
const IAM_SETUP_CALLS: u32 = 6;

/// Makes the two users of [`IamUsers`] with boto3 (moto's own dependency): three calls each.
const IAM_SETUP: &str = r#"
import boto3, json, sys
iam = boto3.client("iam", endpoint_url=sys.argv[1], region_name="us-east-1",
                   aws_access_key_id="setup", aws_secret_access_key="setup")
out = {}
for user, actions in [("admin", ["kms:*"]),
                      ("reader", ["kms:DescribeKey", "kms:ListAliases", "kms:GetPublicKey"])]:
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName="knhk-test", PolicyDocument=json.dumps(
        {"Version": "2012-10-17",
         "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    out[user] = [key["AccessKeyId"], key["SecretAccessKey"]]
print(json.dumps(out))
"#;

/// A running moto server.
#[derive(Debug)]
pub struct Moto {
    child: Option<Child>,
    endpoint: String,
    dir: PathBuf,
}

impl Moto {
    /// Start moto with its log in `dir` (created); any credentials are accepted.
    pub async fn start(dir: &Path) -> anyhow::Result<Moto> {
        Self::start_env(dir, &[]).await
    }

    /// Start moto enforcing IAM, with an admin and a reader user (see [`IamUsers`]).
    pub async fn start_with_iam(dir: &Path) -> anyhow::Result<(Moto, IamUsers)> {
        let count = IAM_SETUP_CALLS.to_string();
        let moto = Self::start_env(dir, &[("INITIAL_NO_AUTH_ACTION_COUNT", &count)]).await?;
        let bin = paths::moto_server()?;
        let python = bin.with_file_name("python");
        let out = Command::new(&python)
            .args(["-c", IAM_SETUP, &moto.endpoint])
            .output()
            .with_context(|| format!("running {}", python.display()))?;
        if !out.status.success() {
            bail!(
                "IAM setup failed: {}\nmoto log:\n{}",
                String::from_utf8_lossy(&out.stderr),
                crate::envoy::tail(&moto.log(), 40)
            );
        }
        let users: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let key = |user: &str| -> anyhow::Result<AccessKey> {
            Ok(AccessKey {
                id: users[user][0].as_str().context("access key id")?.to_owned(),
                secret: users[user][1].as_str().context("secret key")?.to_owned(),
            })
        };
        let users = IamUsers {
            admin: key("admin")?,
            reader: key("reader")?,
        };
        Ok((moto, users))
    }

    async fn start_env(dir: &Path, env: &[(&str, &str)]) -> anyhow::Result<Moto> {
        let bin = paths::moto_server()?;
        std::fs::create_dir_all(dir)?;
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            match Self::try_start(&bin, dir, env).await {
                Ok(moto) => return Ok(moto),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("moto did not start")))
    }

    async fn try_start(bin: &Path, dir: &Path, env: &[(&str, &str)]) -> anyhow::Result<Moto> {
        let port = free_port()?;
        let log = File::create(dir.join("moto.log"))?;
        let mut command = Command::new(bin);
        command
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let mut moto = Moto {
            child: Some(child),
            endpoint: format!("http://127.0.0.1:{port}"),
            dir: dir.to_path_buf(),
        };
        if let Err(e) = moto.wait_ready().await {
            let log = moto.log();
            moto.kill();
            bail!("{e}\nmoto log:\n{}", crate::envoy::tail(&log, 40));
        }
        Ok(moto)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        // moto's own dashboard API answers once the server is up, and counts as no action.
        let url = format!("{}/moto-api/data.json", self.endpoint);
        let http = reqwest::Client::new();
        let child = self.child.as_mut().context("moto is not running")?;
        poll("moto to answer", READY_TIMEOUT, || {
            let exited = child.try_wait();
            let (http, url) = (http.clone(), url.clone());
            async move {
                if let Ok(Some(status)) = exited {
                    bail!("moto exited during startup ({status})");
                }
                let answer = http.get(&url).timeout(Duration::from_secs(2)).send().await;
                Ok(answer.ok().filter(|r| r.status().is_success()).map(|_| ()))
            }
        })
        .await
    }

    /// `http://127.0.0.1:<port>`: the endpoint override for every AWS service.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The server's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("moto.log")).unwrap_or_default()
    }

    /// Stop the server (a provider that is down).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- moto log ({}) ---\n{}",
                self.dir.display(),
                crate::envoy::tail(&self.log(), 40)
            );
        }
        self.kill();
    }
}
