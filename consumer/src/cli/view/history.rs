//! The history worker: a thread with its own connection that answers the viewer's page
//! requests, so the drawing never waits for history.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::time::Duration;

use firehose_consumer::{Client, ConnectOptions, FileEvent, HistoryQuery, QueryEnd, QueryPage};

use super::paging::Request;
use super::row::Row;

/// An answer: the request's id, and its rows in seq order with the oldest seq history
/// holds if it no longer reaches back that far, or an error.
pub(crate) type Answer = (u64, Result<(Vec<Row>, Option<u64>), String>);

/// The viewer's end of the worker.
pub(crate) struct Worker {
    tx: Sender<Request>,
    rx: Receiver<Answer>,
}

impl Worker {
    /// Starts the worker; it connects on its first request (and again after a failure).
    pub(crate) fn start(socket: PathBuf) -> Worker {
        let (tx, req_rx) = channel::<Request>();
        let (ans_tx, rx) = channel::<Answer>();
        std::thread::Builder::new()
            .name("view-history".into())
            .spawn(move || serve(&socket, &req_rx, &ans_tx))
            .expect("starting the history thread");
        Worker { tx, rx }
    }

    /// Sends a request.
    pub(crate) fn ask(&self, r: Request) {
        let _ = self.tx.send(r);
    }

    /// An answer, if one is ready.
    pub(crate) fn try_answer(&self) -> Option<Answer> {
        self.rx.try_recv().ok()
    }
}

fn serve(socket: &Path, rx: &Receiver<Request>, tx: &Sender<Answer>) {
    let mut client: Option<Client<FileEvent>> = None;
    while let Ok(r) = rx.recv() {
        let answer = run(socket, &mut client, r);
        if answer.is_err() {
            client = None;
        }
        if tx.send((r.id, answer)).is_err() {
            return;
        }
    }
}

fn run(
    socket: &Path,
    client: &mut Option<Client<FileEvent>>,
    r: Request,
) -> Result<(Vec<Row>, Option<u64>), String> {
    if client.is_none() {
        let opts = ConnectOptions {
            name: "firehose view (history)".into(),
            ..ConnectOptions::default()
        };
        *client = Some(Client::connect(socket, &opts).map_err(|e| e.to_string())?);
    }
    let c = client.as_mut().expect("connected above");
    let q = HistoryQuery {
        id: r.id,
        seq: Some((r.from, r.to)),
        ..HistoryQuery::default()
    };
    let mut rows = Vec::new();
    let mut truncated = None;
    for page in c
        .query_pages(q, Duration::from_secs(30))
        .map_err(|e| e.to_string())?
    {
        match page.map_err(|e| e.to_string())? {
            QueryPage::Rows(page) => rows.extend(page.iter().map(Row::from_event)),
            QueryPage::End(QueryEnd::Truncated { oldest }) => truncated = Some(oldest),
            QueryPage::End(QueryEnd::Unavailable) => {
                return Err("this service has no history to browse".into())
            }
            QueryPage::End(QueryEnd::Invalid) => return Err("history refused the query".into()),
            QueryPage::End(_) => {}
        }
    }
    Ok((rows, truncated))
}
