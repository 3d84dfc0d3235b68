//! `knhk-agent holds …`: place, release and list legal holds on a running agent.

use clap::Subcommand;

use super::{HoldSelector, PlaceHold, ReleaseHold, RetentionError};

/// What `knhk-agent holds` does.
#[derive(Debug, Subcommand)]
pub enum HoldsAction {
    /// Place a hold (a signed entry in the agent's log).
    Place {
        /// Hold id, unique among holds in force.
        #[arg(long)]
        id: String,
        /// Why (case number, ticket).
        #[arg(long)]
        reason: String,
        /// Receipts decided in `FROM..TO` ns since the epoch.
        #[arg(long, value_name = "FROM..TO", conflicts_with_all = ["epochs", "leaves"])]
        time_ns: Option<String>,
        /// Receipts under config epochs `FROM..TO` (a rollout's epochs).
        #[arg(long, value_name = "FROM..TO", conflicts_with = "leaves")]
        epochs: Option<String>,
        /// Leaves `FROM..TO` of this log (a receipt id is its leaf index).
        #[arg(long, value_name = "FROM..TO")]
        leaves: Option<String>,
        /// End date, ns since the epoch.
        #[arg(long)]
        until_ns: Option<u64>,
    },
    /// Release a hold placed by this agent's region.
    Release {
        /// Hold id.
        #[arg(long)]
        id: String,
        /// Why.
        #[arg(long)]
        reason: String,
    },
    /// List every hold the agent knows (its own log's and the witnessed logs').
    List,
}

fn range(text: &str) -> Result<(u64, u64), RetentionError> {
    let bad = || RetentionError::InvalidHold(format!("{text:?} is not FROM..TO"));
    let (a, b) = text.split_once("..").ok_or_else(bad)?;
    Ok((
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    ))
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<serde_json::Value, RetentionError> {
    serde_json::to_value(v).map_err(|e| RetentionError::InvalidHold(e.to_string()))
}

/// The HTTP request for `action`: method, path, JSON body.
pub fn request(
    action: &HoldsAction,
) -> Result<(&'static str, String, Option<serde_json::Value>), RetentionError> {
    match action {
        HoldsAction::Place {
            id,
            reason,
            time_ns,
            epochs,
            leaves,
            until_ns,
        } => {
            let selector = match (time_ns, epochs, leaves) {
                (Some(t), _, _) => {
                    let (from_ns, to_ns) = range(t)?;
                    HoldSelector::Time { from_ns, to_ns }
                }
                (_, Some(e), _) => {
                    let (from, to) = range(e)?;
                    HoldSelector::Epochs { from, to }
                }
                (_, _, Some(l)) => {
                    let (from, to) = range(l)?;
                    HoldSelector::Leaves { from, to }
                }
                _ => {
                    return Err(RetentionError::InvalidHold(
                        "one of --time-ns, --epochs or --leaves is needed".to_owned(),
                    ))
                }
            };
            let body = PlaceHold {
                hold_id: id.clone(),
                reason: reason.clone(),
                selector,
                until_ns: *until_ns,
            };
            Ok(("POST", "/v1/holds".to_owned(), Some(to_json(&body)?)))
        }
        HoldsAction::Release { id, reason } => {
            let body = ReleaseHold {
                reason: reason.clone(),
            };
            Ok((
                "POST",
                format!("/v1/holds/{id}/release"),
                Some(to_json(&body)?),
            ))
        }
        HoldsAction::List => Ok(("GET", "/v1/holds".to_owned(), None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each selector flag becomes its JSON selector; a bad range or no selector is refused.
    #[test]
    fn place_requests_carry_the_selector() {
        let place = |t: Option<&str>, e: Option<&str>, l: Option<&str>| HoldsAction::Place {
            id: "h".into(),
            reason: "r".into(),
            time_ns: t.map(Into::into),
            epochs: e.map(Into::into),
            leaves: l.map(Into::into),
            until_ns: None,
        };
        let (_, path, body) = request(&place(None, Some("3..5"), None)).unwrap();
        assert_eq!(path, "/v1/holds");
        assert_eq!(
            body.unwrap()["selector"],
            serde_json::json!({"by": "epochs", "from": 3, "to": 5})
        );
        let (_, _, body) = request(&place(Some("1..2"), None, None)).unwrap();
        assert_eq!(body.unwrap()["selector"]["by"], "time");
        assert!(request(&place(None, None, Some("7"))).is_err());
        assert!(request(&place(None, None, None)).is_err());
    }
}
