//! The commit task over a real sled store: what a batch leaves behind when one of its
//! writes is refused.

use std::sync::Arc;

use bytes::Bytes;
use syncline_core::command::{Json, SetMode, Ttl, WriteCommand};
use syncline_core::commit::{Committer, WriteOp};
use syncline_core::fanout::Hub;
use syncline_core::objects::WriteContext;
use syncline_core::presence::Presence;
use syncline_core::store::{ServiceRecord, Store};
use syncline_core::webhooks::{Attempt, WebhookOptions, WebhookPoster, Webhooks};
use syncline_proto::{ErrorCode, Event, Limits};
use syncline_store_sled::SledStore;

const SERVICE: &str = "IS00000000000000000000000000000001";

/// No service here has a webhook URL, so nothing is ever posted.
struct NoWebhooks;

#[async_trait::async_trait]
impl WebhookPoster for NoWebhooks {
    async fn post(&self, _: &str, _: &str, _: Bytes) -> Attempt {
        Attempt::Failed("no webhooks in this test".into())
    }
}

fn encode(event: &Event) -> Bytes {
    Bytes::from(format!("{event:?}"))
}

fn ctx(now_ms: u64) -> WriteContext {
    WriteContext {
        service_sid: SERVICE.into(),
        actor: "alice".into(),
        origin: 1,
        now_ms,
        guard: None,
        may_create: true,
    }
}

#[tokio::test]
async fn a_refused_write_leaves_nothing_behind_not_even_the_expiry_it_found() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path(), 100, true).unwrap());
    store
        .put_service(&ServiceRecord {
            sid: SERVICE.into(),
            unique_name: None,
            flags: Default::default(),
            date_created: 0,
            date_updated: 0,
        })
        .await
        .unwrap();
    let limits = Limits::default();
    let webhooks = Webhooks::new(
        store.clone(),
        "AC0".into(),
        "token".into(),
        WebhookOptions::default(),
        Arc::new(NoWebhooks),
    );
    let (committer, task) = Committer::start(
        store.clone(),
        Arc::new(Hub::new(encode)),
        Arc::new(Presence::default()),
        None,
        webhooks,
        limits.clone(),
    );
    let set = WriteOp::Client(WriteCommand::DocSet {
        document: "d".into(),
        data: Json::parse("{}".into(), limits.max_data_bytes).unwrap(),
        if_match: None,
        ttl: Some(Ttl::parse(1, &limits).unwrap()),
        mode: SetMode::Upsert,
    });
    committer.submit(ctx(1_000), set).await.unwrap();
    let sid = store
        .object_sid_by_name(SERVICE, "d")
        .await
        .unwrap()
        .expect("the document was written");

    // Later, the document has expired. An update finds it (and removes it, with its
    // event) on its way to `NotFound`: that removal belongs to the refused write, so it
    // must not reach the store.
    let update = WriteOp::Client(WriteCommand::DocUpdate {
        document: "d".into(),
        patch: Json::parse(r#"{"a":1}"#.into(), limits.max_data_bytes).unwrap(),
        if_match: None,
    });
    let err = committer.submit(ctx(5_000), update).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::NotFound);
    let record = store.object(SERVICE, &sid).await.unwrap();
    assert!(
        record.is_some(),
        "the expired record stays for the reaper, the refused write removed nothing"
    );
    drop(committer);
    task.await.unwrap();
}
