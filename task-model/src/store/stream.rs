//! Streaming due tasks, shared by both backends: keyset pagination over the
//! `(status, host_system_id)` index, one status at a time, so each page is an
//! index range read and memory holds one page whatever the number of tasks.
//!
//! Order: the statuses in the order the query names them (each once), each in
//! `host_system_id` order, then the rows whose status is not a known one
//! (each reported as a [`StoreError::BadRow`]).
//!
//! Pages are read one ahead: once the stream is first polled, a task reads
//! and decodes the next page while the consumer works on the current one
//! (leasing and pushing it, in the enqueue), so the database and the
//! consumer overlap. At most [`PAGES_AHEAD`] decoded pages wait, so memory
//! stays bounded; dropping the stream stops the reader after its current
//! page.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use futures::StreamExt as _;
use futures::stream::BoxStream;

use super::row::{self, DocumentCache, DocumentKind, DocumentPair, RawTask};
use super::{DueQuery, RowError, StoreError};
use crate::task::{LocalStatus, LocalTask};

/// One index range the stream walks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Segment {
    Status(LocalStatus),
    /// Rows whose status column holds no known status.
    Unknown,
}

/// What a backend provides to be streamed from (and to load tasks with
/// [`decode_rows`]).
pub(crate) trait DuePages: Clone + Send + Sync + 'static {
    type Row: Send + Sync;

    /// Up to `limit` rows of `segment` after `after` (in id order) that are
    /// not under a live lease at `now_millis`.
    fn page(
        &self,
        segment: Segment,
        now_millis: i64,
        limit: i64,
        after: Option<&str>,
    ) -> impl Future<Output = Result<Vec<Self::Row>, StoreError>> + Send;

    /// The id of a fetched row (the keyset cursor).
    fn row_id(row: &Self::Row) -> Result<String, sqlx::Error>;

    /// Reads a fetched task row's columns ([`RawTask::from_row`]).
    fn raw_task(row: &Self::Row) -> Result<RawTask, RowError>;

    /// The stored documents of `kind` among `hashes` (not empty), as
    /// [`row::document_pairs`] reads them.
    fn documents(
        &self,
        kind: DocumentKind,
        hashes: Vec<String>,
    ) -> impl Future<Output = Result<Vec<DocumentPair>, StoreError>> + Send;
}

/// Checks fetched task rows and builds their tasks, reading the documents
/// they reference that `cache` does not hold yet.
pub(crate) async fn decode_rows<B: DuePages>(
    backend: &B,
    rows: Vec<B::Row>,
    cache: &mut DocumentCache,
) -> Result<Vec<Result<LocalTask, RowError>>, StoreError> {
    let raws: Vec<Result<RawTask, RowError>> = rows.iter().map(B::raw_task).collect();
    drop(rows);
    let good: Vec<&RawTask> = raws.iter().filter_map(|r| r.as_ref().ok()).collect();
    for kind in [DocumentKind::Instrument, DocumentKind::Form] {
        let missing = cache.missing(kind, good.iter().copied());
        if missing.is_empty() {
            continue;
        }
        for (hash, body) in backend.documents(kind, missing).await? {
            cache.insert(kind, hash, body);
        }
    }
    Ok(raws
        .into_iter()
        .map(|raw| raw.and_then(|raw| row::decode_task(raw, cache)))
        .collect())
}

struct State<B> {
    backend: B,
    segments: Vec<Segment>,
    current: usize,
    after: Option<String>,
    now_millis: i64,
    limit: i64,
    cache: DocumentCache,
    failed: bool,
}

impl<B: DuePages> State<B> {
    /// The next page's items, or `None` at the end.
    async fn next_items(&mut self) -> Option<Vec<Result<LocalTask, StoreError>>> {
        loop {
            if self.failed {
                return None;
            }
            let segment = *self.segments.get(self.current)?;
            let rows = match self
                .backend
                .page(segment, self.now_millis, self.limit, self.after.as_deref())
                .await
            {
                Ok(rows) => rows,
                Err(e) => {
                    self.failed = true;
                    return Some(vec![Err(e)]);
                }
            };
            let full = i64::try_from(rows.len()).unwrap_or(i64::MAX) >= self.limit;
            match rows.last().map(B::row_id) {
                Some(Ok(last)) if full => self.after = Some(last),
                Some(Err(e)) => {
                    self.failed = true;
                    return Some(vec![Err(StoreError::Query {
                        operation: "stream due tasks",
                        source: e,
                    })]);
                }
                // A short page ends this segment.
                _ => {
                    self.current += 1;
                    self.after = None;
                }
            }
            if rows.is_empty() {
                continue;
            }
            return Some(
                match decode_rows(&self.backend, rows, &mut self.cache).await {
                    Ok(tasks) => tasks
                        .into_iter()
                        .map(|t| t.map_err(StoreError::BadRow))
                        .collect(),
                    Err(e) => {
                        self.failed = true;
                        vec![Err(e)]
                    }
                },
            );
        }
    }
}

/// Decoded pages that may wait for the consumer, besides the one it holds
/// and the one being read.
const PAGES_AHEAD: usize = 1;

/// The task reading pages ahead of a stream's consumer.
enum Reader {
    NotStarted(Pin<Box<dyn Future<Output = ()> + Send>>),
    Running(tokio::task::JoinHandle<()>),
    Done,
}

/// The due-task stream of `backend` for `query`.
pub(crate) fn stream_due_with<B: DuePages>(
    backend: B,
    query: DueQuery,
) -> BoxStream<'static, Result<LocalTask, StoreError>> {
    let mut segments: Vec<Segment> = Vec::new();
    for status in &query.statuses {
        if !segments.contains(&Segment::Status(*status)) {
            segments.push(Segment::Status(*status));
        }
    }
    segments.push(Segment::Unknown);
    let state = State {
        backend,
        segments,
        current: 0,
        after: None,
        now_millis: super::row::lease_millis(query.now),
        limit: i64::try_from(query.batch_size.max(1)).unwrap_or(i64::MAX),
        cache: DocumentCache::default(),
        failed: false,
    };
    let (pages, mut received) = tokio::sync::mpsc::channel(PAGES_AHEAD);
    let mut reader = Reader::NotStarted(Box::pin(async move {
        let mut state = state;
        while let Some(items) = state.next_items().await {
            if pages.send(items).await.is_err() {
                // The stream was dropped.
                return;
            }
        }
    }));
    // The reader starts on the first poll, so building the stream needs no
    // runtime and a stream never polled reads nothing. When its pages run
    // out, the reader's own end tells a finished walk from a reader that
    // died half-way, which must not pass for the end.
    futures::stream::poll_fn(move |cx| {
        loop {
            match &mut reader {
                Reader::NotStarted(_) => {
                    if let Reader::NotStarted(walk) = std::mem::replace(&mut reader, Reader::Done) {
                        reader = Reader::Running(tokio::spawn(walk));
                    }
                }
                Reader::Running(handle) => {
                    match received.poll_recv(cx) {
                        Poll::Ready(Some(items)) => return Poll::Ready(Some(items)),
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(None) => {}
                    }
                    let ended = std::task::ready!(Pin::new(handle).poll(cx));
                    reader = Reader::Done;
                    if let Err(e) = ended {
                        let reason = if e.is_panic() {
                            "the reader panicked"
                        } else {
                            "the reader was cancelled"
                        };
                        return Poll::Ready(Some(vec![Err(StoreError::StreamStopped {
                            reason: reason.into(),
                        })]));
                    }
                }
                Reader::Done => return Poll::Ready(None),
            }
        }
    })
    .map(futures::stream::iter)
    .flatten()
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend whose decoding panics: the stream must say it stopped, not
    /// end as if every task had been read.
    #[derive(Clone)]
    struct PanickingPages;

    impl DuePages for PanickingPages {
        type Row = String;

        async fn page(
            &self,
            _segment: Segment,
            _now_millis: i64,
            _limit: i64,
            after: Option<&str>,
        ) -> Result<Vec<String>, StoreError> {
            Ok(if after.is_none() {
                vec!["t-1".into()]
            } else {
                Vec::new()
            })
        }

        fn row_id(row: &String) -> Result<String, sqlx::Error> {
            Ok(row.clone())
        }

        fn raw_task(_row: &String) -> Result<RawTask, RowError> {
            panic!("decoding failed");
        }

        async fn documents(
            &self,
            _kind: DocumentKind,
            _hashes: Vec<String>,
        ) -> Result<Vec<DocumentPair>, StoreError> {
            Ok(Vec::new())
        }
    }

    #[tokio::test]
    async fn a_reader_that_dies_half_way_is_reported_not_taken_for_the_end() {
        let query = DueQuery::new(vec![LocalStatus::AwaitingSubmission], chrono::Utc::now());
        let items: Vec<Result<LocalTask, StoreError>> =
            stream_due_with(PanickingPages, query).collect().await;
        assert_eq!(items.len(), 1, "one item: the error");
        match &items[0] {
            Err(StoreError::StreamStopped { reason }) => assert!(reason.contains("panicked")),
            other => panic!("expected StreamStopped, got {other:?}"),
        }
    }
}
