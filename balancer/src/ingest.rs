//! The ingest hook: every committed report batch is handed to each registered
//! [`IngestObserver`] (the prediction engine subscribes here), after the commit and with
//! duplicates left out, so an observer never sees a sample twice or one that is not stored.
use std::sync::Arc;

use plb_api::Sample;

/// One committed report batch: the samples newly stored, in batch order.
#[derive(Debug, Clone)]
pub struct CommittedBatch {
    /// The owning client.
    pub client_id: i64,
    /// The node's row id.
    pub node_id: i64,
    /// The node's name.
    pub node: String,
    /// When the balancer received it, Unix ms.
    pub received_at_ms: i64,
    /// The samples newly stored.
    pub samples: Vec<Sample>,
}

/// Told about every committed batch. Called on the request's task: an implementation
/// must not block (hand the batch to its own task or channel).
pub trait IngestObserver: Send + Sync + 'static {
    /// A batch was committed.
    fn committed(&self, batch: &Arc<CommittedBatch>);
}
