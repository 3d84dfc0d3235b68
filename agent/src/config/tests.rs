//! Tests of the agent configuration: file, environment, grammar, paths and messages.

use super::*;

/// A full file parses and validates; unknown fields, bad origins and intervals are refused
/// naming the setting.
#[test]
fn file_is_parsed_and_validated() {
    let p = Path::new("agent.toml");
    let cfg = AgentConfig::from_toml(
        "origin = \"knhk.test/a\"\ndata_dir = \"/tmp/x\"\nseal_interval = \"2s\"\n[kms]\nprovider = \"local\"\n",
        p,
    )
    .unwrap();
    cfg.validate().unwrap();
    assert_eq!(cfg.seal_interval, Duration::from_secs(2));
    assert_eq!(cfg.database_path(), PathBuf::from("/tmp/x/receipts.db"));
    let unknown = AgentConfig::from_toml("colour = 1\n", p).unwrap_err();
    assert!(unknown.to_string().contains("colour"), "{unknown}");
    for (text, setting) in [
        ("origin = \"a b\"\n", "origin"),
        ("seal_interval = \"0s\"\n", "seal_interval"),
        ("seal_interval = \"2h\"\n", "seal_interval"),
        (
            "[kms]\nrotation_interval = \"48h\"\n",
            "kms.rotation_interval",
        ),
    ] {
        let err = AgentConfig::from_toml(text, p)
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains(setting), "{text}: {err}");
    }
}

/// With only `data_dir` set, every path the agent writes resolves under it (the key
/// directory included, for checkpoints and the config key alike); an explicit
/// `kms.key_dir` is kept; the defaults stay under the default data directory.
#[test]
fn paths_follow_data_dir() {
    let p = Path::new("agent.toml");
    let cfg = AgentConfig::from_toml("data_dir = \"/srv/knhk\"\n", p).unwrap();
    cfg.validate().unwrap();
    let root = Path::new("/srv/knhk");
    assert_eq!(
        cfg.kms.key_dir.as_deref(),
        Some(root.join("keys").as_path())
    );
    assert_eq!(cfg.key_dir(), root.join("keys"));
    assert_eq!(
        cfg.policy.signer_config(&cfg.kms).key_dir.as_deref(),
        Some(root.join("keys").as_path())
    );
    assert_eq!(cfg.database_path(), root.join("receipts.db"));
    let explicit = AgentConfig::from_toml(
        "data_dir = \"/srv/knhk\"\n[kms]\nkey_dir = \"/etc/knhk/keys\"\n",
        p,
    )
    .unwrap();
    assert_eq!(
        explicit.kms.key_dir.as_deref(),
        Some(Path::new("/etc/knhk/keys"))
    );
    let mut again = explicit.clone();
    again.resolve_paths();
    assert_eq!(again, explicit, "resolving twice changes nothing");
    let defaults = AgentConfig::load(None, |_| None).unwrap();
    assert_eq!(
        defaults.kms.key_dir.as_deref(),
        Some(Path::new("/var/lib/knhk/keys"))
    );
    let mut literal = AgentConfig {
        data_dir: PathBuf::from("/data"),
        ..AgentConfig::default()
    };
    assert_eq!(literal.kms.key_dir, None);
    literal.resolve_paths();
    assert_eq!(literal.key_dir(), PathBuf::from("/data/keys"));
}

/// Every duration setting of every table reads the one grammar of `settings`: the same
/// spellings parse everywhere (`500ms` included), the same ones are refused at parse time
/// naming the setting, and range checks then apply per setting.
#[test]
fn every_duration_setting_has_one_grammar() {
    let p = Path::new("agent.toml");
    let settings = [
        ("", "seal_interval"),
        ("[kms]\n", "rotation_interval"),
        ("[policy]\n", "watch_interval"),
        ("[policy]\n", "long_poll_timeout"),
        ("[policy]\n", "long_poll_max"),
        ("[api]\n", "header_timeout"),
        ("[identity]\n", "refresh_interval"),
        ("[identity]\n", "connect_timeout"),
        ("[quorum]\n", "timeout"),
        ("[quorum]\n", "retry_interval"),
        ("[retention]\n", "max_age"),
        ("[retention]\n", "interval"),
    ];
    for (table, key) in settings {
        for good in ["500ms", "2s", "3m", "1h"] {
            let text = format!("{table}{key} = \"{good}\"\n");
            AgentConfig::from_toml(&text, p).unwrap_or_else(|e| panic!("{text}: {e}"));
        }
        for bad in [
            "",
            "5",
            "1d",
            "1.5s",
            "-1s",
            " 1s",
            "1h 30m",
            "99999999999999999999s",
        ] {
            let text = format!("{table}{key} = \"{bad}\"\n");
            let err = AgentConfig::from_toml(&text, p).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
            assert!(err.contains("invalid duration"), "{text}: {err}");
        }
    }
    // Sub-second values parse everywhere; where a setting's floor is 1s, its range check
    // refuses them naming the setting (policy.watch_interval goes down to 10ms).
    for (text, setting) in [
        ("seal_interval = \"500ms\"\n", "seal_interval"),
        (
            "[kms]\nrotation_interval = \"500ms\"\n",
            "kms.rotation_interval",
        ),
        ("[retention]\ninterval = \"500ms\"\n", "retention"),
        ("[retention]\nmax_age = \"999ms\"\n", "retention"),
        ("[api]\nheader_timeout = \"500ms\"\n", "api.header_timeout"),
    ] {
        let err = AgentConfig::from_toml(text, p)
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains(setting), "{text}: {err}");
    }
    let cfg = AgentConfig::from_toml("[policy]\nwatch_interval = \"500ms\"\n", p).unwrap();
    cfg.validate().unwrap();
    assert_eq!(cfg.policy.watch_interval, Duration::from_millis(500));
}

/// A parse refusal carries the setting's key path and line, and its message is one line
/// naming the setting; a syntax error names the file and line instead.
#[test]
fn parse_errors_name_setting_and_line() {
    let p = Path::new("/etc/knhk/agent.toml");
    let text = "origin = \"knhk.test/a\"\n[kms]\nrotation_interval = \"12\"\n";
    let err = AgentConfig::from_toml(text, p).unwrap_err();
    match &err {
        ConfigError::Parse { setting, line, .. } => {
            assert_eq!(setting.as_deref(), Some("kms.rotation_interval"));
            assert_eq!(*line, Some(3));
        }
        other => panic!("{other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.starts_with("invalid setting kms.rotation_interval: invalid duration \"12\""),
        "{msg}"
    );
    assert!(msg.ends_with("(/etc/knhk/agent.toml line 3)"), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");
    let peers = "[quorum]\n[[quorum.peers]]\nregion = \"us\"\nurl = 5\n";
    let msg = AgentConfig::from_toml(peers, p).unwrap_err().to_string();
    assert!(
        msg.starts_with("invalid setting quorum.peers[0].url: "),
        "{msg}"
    );
    let syntax = AgentConfig::from_toml("origin = \n", p).unwrap_err();
    assert!(
        matches!(
            &syntax,
            ConfigError::Parse {
                setting: None,
                line: Some(1),
                ..
            }
        ),
        "{syntax:?}"
    );
    let msg = syntax.to_string();
    assert!(
        msg.starts_with("invalid config file /etc/knhk/agent.toml line 1: "),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "{msg}");
}

/// Environment overrides apply on load, and a bad one stops the load naming the variable.
#[test]
fn load_applies_environment() {
    let cfg = AgentConfig::load(None, |k| {
        (k == "KGC_SIDECAR_KEY_ROTATION_INTERVAL_HOURS").then(|| "6".to_owned())
    })
    .unwrap();
    assert_eq!(cfg.kms.rotation_interval, Duration::from_secs(6 * 3600));
    let err = AgentConfig::load(None, |k| {
        (k == "KGC_SIDECAR_KEY_ROTATION_INTERVAL_HOURS").then(|| "30".to_owned())
    })
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("KGC_SIDECAR_KEY_ROTATION_INTERVAL_HOURS"),
        "{err}"
    );
    assert!(matches!(
        AgentConfig::load(Some(Path::new("/nonexistent/agent.toml")), |_| None),
        Err(ConfigError::Read { .. })
    ));
}

/// The server and long-poll bounds are range-checked naming the setting.
#[test]
fn availability_bounds_are_checked() {
    let p = Path::new("agent.toml");
    for (text, setting) in [
        ("[api]\nmax_connections = 127\n", "api.max_connections"),
        (
            "[api]\nmax_connections = 128\n[policy]\nmax_long_polls = 65\n",
            "policy.max_long_polls",
        ),
        ("[api]\nmax_connections = 65537\n", "api.max_connections"),
        ("[api]\nheader_timeout = \"301s\"\n", "api.header_timeout"),
        ("[policy]\nmax_long_polls = 0\n", "policy.max_long_polls"),
        (
            "[api]\nreceipt_batches_per_second = 0\n",
            "api.receipt_batches_per_second",
        ),
        (
            "[api]\nreceipt_batch_burst = 1000001\n",
            "api.receipt_batch_burst",
        ),
        (
            "[policy]\nmax_long_polls = 16385\n",
            "policy.max_long_polls",
        ),
        (
            "[policy]\nmax_long_polls = 10\nmax_long_polls_per_client = 11\n",
            "policy.max_long_polls_per_client",
        ),
        (
            "[policy]\nmax_long_polls_per_client = 0\n",
            "policy.max_long_polls_per_client",
        ),
    ] {
        let err = AgentConfig::from_toml(text, p)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains(setting), "{text}: {err}");
    }
    let err = AgentConfig::from_toml("[api]\nmax_connections = -1\n", p)
        .unwrap_err()
        .to_string();
    assert!(err.contains("max_connections"), "{err}");
    AgentConfig::from_toml(
        "[api]\nmax_connections = 128\nheader_timeout = \"5s\"\n[policy]\nmax_long_polls = 8\nmax_long_polls_per_client = 8\n",
        p,
    )
    .unwrap()
    .validate()
    .unwrap();
}
