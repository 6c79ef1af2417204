//! One model worker: a thread that owns a loaded [`Translator`] (libtorch tensors are `Send`
//! but not `Sync`, so one thread holds the model) and serves jobs from a bounded queue.
//!
//! Batching is dynamic, as in `rnmt-translate`'s streaming loop ([`next_batch`]): the worker
//! waits for one job, then takes the jobs already queued up to `batch_size` sentences, and
//! translates the sentences of jobs with the same search settings in one batch. Beam search
//! is batch-invariant, so a sentence gets the same translation whatever it is batched with.
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;

use tch::Device;
use tokio::sync::oneshot;

use super::api::{Hypothesis, SearchOptions};
use crate::config::DecodeConfig;
use crate::error::{Error, Result};
use crate::precision::Precision;
use crate::translate::{next_batch, LineRequest, Translator};

/// The hypotheses, best first, of each sentence of a job.
pub type Hypotheses = Vec<Vec<Hypothesis>>;

/// One request's sentences, answered through `reply`.
pub struct Job {
    pub sentences: Vec<String>,
    /// Each sentence's target phrases.
    pub constraints: Vec<Vec<String>>,
    pub options: SearchOptions,
    pub reply: oneshot::Sender<std::result::Result<Hypotheses, String>>,
}

/// What `GET /translator/models` shows of a model.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelInfo {
    pub model_id: u64,
    pub dir: String,
    pub loaded: bool,
    pub device: String,
    pub precision: String,
    pub parameters: i64,
    pub src_vocab: usize,
    pub tgt_vocab: usize,
    pub beam: usize,
    /// Whether the model has attention (requests may ask for its weights).
    pub attention: bool,
}

/// How to start a worker.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub id: u64,
    pub dir: PathBuf,
    pub device: Device,
    pub precision: Precision,
    pub decode: DecodeConfig,
    /// Most sentences translated together.
    pub batch_size: usize,
    /// Jobs waiting at most; a full queue answers 503.
    pub queue: usize,
}

/// A running worker.
pub struct Worker {
    pub info: ModelInfo,
    tx: Option<SyncSender<Job>>,
    thread: Option<JoinHandle<()>>,
}

/// Why a job was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The queue is full (answer 503, retry later).
    Busy,
    /// The worker has stopped.
    Stopped,
}

impl Worker {
    /// Loads the model on a new thread and returns once it is ready (or failed to load).
    pub fn start(config: WorkerConfig) -> Result<Worker> {
        let (tx, rx) = mpsc::sync_channel::<Job>(config.queue.max(1));
        let (ready_tx, ready_rx) = mpsc::channel::<Result<ModelInfo>>();
        let thread = std::thread::Builder::new()
            .name(format!("model-{}", config.id))
            .spawn(move || {
                let translator =
                    Translator::load(&config.dir, config.device, config.decode.clone()).and_then(
                        |mut t| {
                            config.precision.check(config.device)?;
                            t.set_precision(config.precision);
                            Ok(t)
                        },
                    );
                let translator = match translator {
                    Ok(t) => {
                        let info = ModelInfo {
                            model_id: config.id,
                            dir: config.dir.display().to_string(),
                            loaded: true,
                            device: crate::device::describe(config.device),
                            precision: config.precision.to_string(),
                            parameters: t
                                .loaded
                                .vs
                                .trainable_variables()
                                .iter()
                                .map(|v| v.numel() as i64)
                                .sum(),
                            src_vocab: t.loaded.config.model.src_vocab,
                            tgt_vocab: t.loaded.config.model.tgt_vocab,
                            beam: config.decode.beam,
                            attention: t.has_attention(),
                        };
                        let _ = ready_tx.send(Ok(info));
                        t
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                serve_jobs(translator, rx, config.batch_size.max(1));
            })
            .map_err(|e| Error::io(std::path::Path::new("<worker thread>"), e))?;
        let info = ready_rx
            .recv()
            .map_err(|_| Error::ModelDir("the model worker stopped while loading".into()))??;
        Ok(Worker {
            info,
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Queues a job without waiting.
    pub fn submit(&self, job: Job) -> std::result::Result<(), Refused> {
        let tx = self.tx.as_ref().ok_or(Refused::Stopped)?;
        tx.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => Refused::Busy,
            TrySendError::Disconnected(_) => Refused::Stopped,
        })
    }

    /// Stops taking jobs, lets the queued ones finish, and waits for the thread.
    pub fn stop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve_jobs(mut translator: Translator, rx: Receiver<Job>, batch_size: usize) {
    while let Some(jobs) = next_batch(&rx, batch_size, |j| j.sentences.len()) {
        // Jobs with the same settings are translated together, in arrival order.
        let mut groups: Vec<(SearchOptions, Vec<Job>)> = Vec::new();
        for job in jobs {
            match groups.iter_mut().find(|(o, _)| *o == job.options) {
                Some((_, g)) => g.push(job),
                None => groups.push((job.options, vec![job])),
            }
        }
        for (options, jobs) in groups {
            translator.decode.beam = options.beam;
            translator.decode.n_best = options.n_best;
            translator.decode.attention = options.attention || options.align;
            // Sentence i of a request is its line i + 1 (the key of its samples).
            let requests: Vec<LineRequest> = jobs
                .iter()
                .flat_map(|j| {
                    j.sentences.iter().zip(&j.constraints).enumerate().map(
                        |(i, (text, constraints))| LineRequest {
                            line: i + 1,
                            text,
                            constraints,
                        },
                    )
                })
                .collect();
            let result = translator
                .translate_requests(&requests)
                .map_err(|e| crate::cli::chain(&anyhow::Error::new(e)));
            match result {
                Ok(translations) => {
                    let mut all = translations.into_iter();
                    for job in jobs {
                        let mine: Hypotheses = all
                            .by_ref()
                            .take(job.sentences.len())
                            .map(|t| {
                                let mut attention = t.attention.into_iter();
                                let mut align = t.word_alignments.into_iter();
                                t.hypotheses
                                    .into_iter()
                                    .map(|(text, score)| Hypothesis {
                                        text,
                                        score,
                                        attention: attention.next().filter(|_| options.attention),
                                        align: align.next().filter(|_| options.align),
                                    })
                                    .collect()
                            })
                            .collect();
                        let _ = job.reply.send(Ok(mine));
                    }
                }
                Err(message) => {
                    for job in jobs {
                        let _ = job.reply.send(Err(message.clone()));
                    }
                }
            }
        }
    }
}
