//! What the host asks of Microsoft Graph, as a trait: the delta rounds, the owners' reads and
//! the `to_cloud` writes go through it, so a sync cycle runs against an in-memory tenant in
//! unit tests and against Graph through [`GraphClient`] everywhere else.

use std::future::Future;

use reqwest::Method;
use serde_json::Value;

use super::client::{GraphClient, RoundLimits};
use super::error::GraphError;

/// Graph's REST API as the sync cycle uses it: JSON in, JSON out, retries and paging bounds
/// the implementation's business.
pub trait GraphApi: Sync {
    /// The API root, e.g. `https://graph.microsoft.com/v1.0`.
    fn graph_base(&self) -> &str;

    /// How far one delta round may go.
    fn round_limits(&self) -> RoundLimits;

    /// GET a JSON document (`url_or_path`: absolute, or relative to the root).
    fn get_json(&self, url_or_path: &str)
        -> impl Future<Output = Result<Value, GraphError>> + Send;

    /// GET a document's body unparsed (a delta page is parsed an entry at a time: a page
    /// parsed whole costs several hundred bytes a member entry).
    fn get_body(
        &self,
        url_or_path: &str,
    ) -> impl Future<Output = Result<Vec<u8>, GraphError>> + Send {
        async move {
            let page = self.get_json(url_or_path).await?;
            serde_json::to_vec(&page).map_err(|e| GraphError::InvalidResponse(e.to_string()))
        }
    }

    /// Sends a request and reads its JSON answer.
    fn send_json(
        &self,
        method: Method,
        url_or_path: &str,
        json: Option<&Value>,
    ) -> impl Future<Output = Result<Value, GraphError>> + Send;

    /// Sends a request whose answer has no body worth reading (a PATCH's 204).
    fn send(
        &self,
        method: Method,
        url_or_path: &str,
        json: Option<&Value>,
    ) -> impl Future<Output = Result<(), GraphError>> + Send;

    /// GET a collection and follow `@odata.nextLink` to the end, returning all `value` items.
    fn get_all_pages(
        &self,
        url_or_path: &str,
    ) -> impl Future<Output = Result<Vec<Value>, GraphError>> + Send {
        async move {
            let mut items = Vec::new();
            let mut next = Some(url_or_path.to_owned());
            while let Some(url) = next.take() {
                let mut page = self.get_json(&url).await?;
                match page.get_mut("value").map(Value::take) {
                    Some(Value::Array(values)) => items.extend(values),
                    _ => {
                        return Err(GraphError::InvalidResponse(format!(
                            "GET {url}: no `value` array"
                        )))
                    }
                }
                next = page
                    .get("@odata.nextLink")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                if next.as_deref() == Some(url.as_str()) {
                    return Err(GraphError::InvalidResponse(format!(
                        "GET {url}: nextLink points to itself"
                    )));
                }
            }
            Ok(items)
        }
    }
}

impl GraphApi for GraphClient {
    fn graph_base(&self) -> &str {
        GraphClient::graph_base(self)
    }

    fn round_limits(&self) -> RoundLimits {
        GraphClient::round_limits(self)
    }

    async fn get_json(&self, url_or_path: &str) -> Result<Value, GraphError> {
        GraphClient::get_json(self, url_or_path).await
    }

    async fn get_body(&self, url_or_path: &str) -> Result<Vec<u8>, GraphError> {
        GraphClient::get_body(self, url_or_path).await
    }

    async fn send_json(
        &self,
        method: Method,
        url_or_path: &str,
        json: Option<&Value>,
    ) -> Result<Value, GraphError> {
        GraphClient::send_json(self, method, url_or_path, json).await
    }

    async fn send(
        &self,
        method: Method,
        url_or_path: &str,
        json: Option<&Value>,
    ) -> Result<(), GraphError> {
        self.send_with_retry(method, url_or_path, json).await?;
        Ok(())
    }
}
