//! The engine thread: continuous batching of many sequences through one llama.cpp context.
//!
//! Every step builds one batch holding the next token of each generating sequence plus a chunk
//! of any prompt still being read, decodes it once, and samples one token per sequence that has
//! logits. New requests join between steps and finished or abandoned ones leave, so the batch
//! always holds whatever work exists (llama.cpp server's "continuous batching").
//!
//! llama.cpp calls block for milliseconds, so this runs on its own OS thread; async handlers talk
//! to it only through channels.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

use crate::engine::{Counters, Event, FinishReason, Job};
use crate::error::InferError;
use crate::output_text::OutputText;
use crate::sampler::{SlotSampler, TokenLogprob};

/// Tokens per decode call (llama.cpp's `n_batch`): long prompts are read in chunks of this size,
/// interleaved with other sequences' generation so they keep streaming meanwhile.
pub(crate) const BATCH_TOKENS: u32 = 512;

/// Starts the engine thread; returns the context length per sequence once the llama.cpp context
/// exists, or why it could not be created.
pub(crate) fn spawn(
    model: Arc<LlamaModel>,
    backend: &'static LlamaBackend,
    params: LlamaContextParams,
    parallel: usize,
    jobs: Receiver<Job>,
    counters: Arc<Counters>,
) -> Result<u32, InferError> {
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("cocoon-infer".into())
        .spawn(move || {
            let ctx = match model.new_context(backend, params) {
                Ok(ctx) => ctx,
                Err(e) => {
                    let _ = ready_tx.send(Err(InferError::Startup(format!(
                        "llama.cpp could not create a context: {e}"
                    ))));
                    return;
                }
            };
            let per_sequence = ctx.n_ctx() / u32::try_from(parallel).unwrap_or(u32::MAX).max(1);
            let _ = ready_tx.send(Ok(per_sequence));
            Scheduler::new(&model, ctx, parallel, per_sequence, counters).run(&jobs);
        })
        .map_err(|e| InferError::Startup(format!("cannot start the engine thread: {e}")))?;
    ready_rx
        .recv()
        .map_err(|_| InferError::Startup("the engine thread died while starting".into()))?
}

/// One request occupying one llama.cpp sequence.
struct Slot {
    seq: i32,
    job: Job,
    sampler: SlotSampler,
    /// Prompt tokens already in the KV cache.
    prefilled: usize,
    /// The sampled token waiting to be decoded (after the prompt has been read).
    next: Option<LlamaToken>,
    /// Position of the next token in the sequence.
    pos: i32,
    completion_tokens: u32,
    text: OutputText,
}

impl Slot {
    fn is_cancelled(&self) -> bool {
        self.job.events.is_closed()
    }
}

struct Scheduler<'m> {
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
    batch: LlamaBatch<'static>,
    slots: Vec<Slot>,
    free_seqs: Vec<i32>,
    per_sequence: u32,
    counters: Arc<Counters>,
}

impl<'m> Scheduler<'m> {
    fn new(
        model: &'m LlamaModel,
        ctx: LlamaContext<'m>,
        parallel: usize,
        per_sequence: u32,
        counters: Arc<Counters>,
    ) -> Self {
        let capacity = (BATCH_TOKENS as usize).max(parallel);
        Scheduler {
            model,
            ctx,
            batch: LlamaBatch::new(capacity, 1),
            slots: Vec::with_capacity(parallel),
            // Reversed so that sequence 0 is used first.
            free_seqs: (0..i32::try_from(parallel).unwrap_or(i32::MAX))
                .rev()
                .collect(),
            per_sequence,
            counters,
        }
    }

    /// Serves until the engine is dropped (the job channel closes) and no work is left.
    fn run(mut self, jobs: &Receiver<Job>) {
        loop {
            if !self.admit(jobs) {
                return;
            }
            self.drop_cancelled();
            if !self.slots.is_empty() {
                self.step();
            }
        }
    }

    /// Moves queued jobs into free sequences. Blocks while there is nothing to do; returns false
    /// when the engine is gone and nothing is running.
    fn admit(&mut self, jobs: &Receiver<Job>) -> bool {
        while !self.free_seqs.is_empty() {
            let job = if self.slots.is_empty() {
                match jobs.recv() {
                    Ok(job) => job,
                    Err(_) => return false,
                }
            } else {
                match jobs.try_recv() {
                    Ok(job) => job,
                    Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => break,
                }
            };
            if job.events.is_closed() {
                continue; // The client left while queued.
            }
            let Some(seq) = self.free_seqs.pop() else {
                break;
            };
            let sampler = match SlotSampler::new(self.model, &job.sampling, self.per_sequence) {
                Ok(sampler) => sampler,
                Err(message) => {
                    let _ = job.events.send(Event::Failed(message));
                    self.free_seqs.push(seq);
                    continue;
                }
            };
            self.counters
                .prompt_tokens
                .fetch_add(job.tokens.len() as u64, Ordering::Relaxed);
            self.slots.push(Slot {
                seq,
                sampler,
                text: OutputText::new(job.stop.clone()),
                job,
                prefilled: 0,
                next: None,
                pos: 0,
                completion_tokens: 0,
            });
        }
        self.counters
            .decoding
            .store(self.slots.len(), Ordering::Relaxed);
        true
    }

    /// Frees the sequences of requests whose client went away.
    fn drop_cancelled(&mut self) {
        let mut i = 0;
        while i < self.slots.len() {
            if self.slots[i].is_cancelled() {
                let slot = self.slots.swap_remove(i);
                tracing::debug!(seq = slot.seq, "request cancelled; sequence freed");
                self.release(slot);
            } else {
                i += 1;
            }
        }
    }

    /// One decode call over every active sequence, then sampling.
    fn step(&mut self) {
        self.batch.clear();
        // (slot index, batch index) for every sequence that gets logits this step.
        let mut sample_at: Vec<(usize, i32)> = Vec::with_capacity(self.slots.len());
        let mut used: usize = 0;
        let capacity = (BATCH_TOKENS as usize).max(self.slots.len());
        // Generating sequences first: one token each, so streams never stall behind prompts.
        for (i, slot) in self.slots.iter().enumerate() {
            if let Some(token) = slot.next {
                if self.batch.add(token, slot.pos, &[slot.seq], true).is_ok() {
                    sample_at.push((i, batch_index(used)));
                    used += 1;
                }
            }
        }
        let generating = used;
        let mut prefill_chunks: Vec<(usize, usize)> = Vec::new();
        for (i, slot) in self.slots.iter().enumerate() {
            if slot.next.is_some() || used >= capacity {
                continue;
            }
            let remaining = slot.job.tokens.len() - slot.prefilled;
            let take = remaining.min(capacity - used);
            let last = slot.prefilled + take == slot.job.tokens.len();
            let mut added = 0;
            for k in 0..take {
                let idx = slot.prefilled + k;
                // Logits only for the prompt's last token: that is where generation starts.
                let logits = last && k + 1 == take;
                let pos = i32::try_from(idx).unwrap_or(i32::MAX);
                // The batch holds `capacity` tokens, so this cannot fail; if it did, the rest of
                // the prompt simply follows in the next step.
                if self
                    .batch
                    .add(slot.job.tokens[idx], pos, &[slot.seq], logits)
                    .is_err()
                {
                    break;
                }
                if logits {
                    sample_at.push((i, batch_index(used)));
                }
                used += 1;
                added += 1;
            }
            if added > 0 {
                prefill_chunks.push((i, added));
            }
        }
        if used == 0 {
            return;
        }
        let sequences = generating + prefill_chunks.len();
        self.counters
            .max_batch_sequences
            .fetch_max(sequences, Ordering::Relaxed);

        if let Err(e) = self.ctx.decode(&mut self.batch) {
            tracing::error!(error = %e, "llama.cpp decode failed");
            let failed: Vec<usize> = sample_at
                .iter()
                .map(|&(i, _)| i)
                .chain(prefill_chunks.iter().map(|&(i, _)| i))
                .collect();
            self.fail(failed, &format!("inference failed: {e}"));
            return;
        }
        for &(i, take) in &prefill_chunks {
            let slot = &mut self.slots[i];
            slot.prefilled += take;
            slot.pos = i32::try_from(slot.prefilled).unwrap_or(i32::MAX);
        }
        for &(i, _) in &sample_at {
            if self.slots[i].next.is_some() {
                self.slots[i].pos += 1;
            }
        }

        let mut finished = Vec::new();
        let mut failed = Vec::new();
        for &(i, at) in &sample_at {
            match self.slots[i].sampler.sample(self.model, &self.ctx, at) {
                Ok((token, logprob)) => {
                    if self.accept(i, token, logprob) {
                        finished.push(i);
                    }
                }
                Err(message) => {
                    let _ = self.slots[i].job.events.send(Event::Failed(message));
                    failed.push(i);
                }
            }
        }
        finished.extend(failed);
        self.remove(finished);
    }

    /// Handles one sampled token; returns true when the request is finished (or abandoned).
    fn accept(&mut self, i: usize, token: LlamaToken, logprob: Option<TokenLogprob>) -> bool {
        let model = self.model;
        let vocab = model.vocab();
        let per_sequence = self.per_sequence;
        let slot = &mut self.slots[i];
        slot.completion_tokens += 1;
        self.counters
            .completion_tokens
            .fetch_add(1, Ordering::Relaxed);

        let end_of_turn = vocab.is_eog(token);
        if let Some(logprob) = logprob.filter(|_| !end_of_turn) {
            if slot
                .job
                .events
                .send(Event::Token(Box::new(logprob)))
                .is_err()
            {
                return true; // Client gone.
            }
        }
        let (text, finish) = if end_of_turn {
            (slot.text.finish(), Some(FinishReason::Stop))
        } else {
            let piece = vocab.token_to_piece(token, false, None);
            let step = slot.text.push(&piece);
            // `pos` counts tokens in the cache; the new token still needs one more cell.
            let context_full = i64::from(slot.pos) + 1 >= i64::from(per_sequence);
            if step.stopped {
                (step.text, Some(FinishReason::Stop))
            } else if slot.completion_tokens >= slot.job.max_tokens || context_full {
                let mut text = step.text;
                text.push_str(&slot.text.finish());
                (text, Some(FinishReason::Length))
            } else {
                (step.text, None)
            }
        };
        if !text.is_empty() && slot.job.events.send(Event::Text(text)).is_err() {
            return true; // Client gone.
        }
        match finish {
            Some(finish) => {
                let _ = slot.job.events.send(Event::Done {
                    finish,
                    prompt_tokens: u32::try_from(slot.job.tokens.len()).unwrap_or(u32::MAX),
                    completion_tokens: slot.completion_tokens,
                });
                true
            }
            None => {
                slot.next = Some(token);
                false
            }
        }
    }

    /// Reports `message` to the given slots and frees them.
    fn fail(&mut self, indices: Vec<usize>, message: &str) {
        for &i in &indices {
            let _ = self.slots[i]
                .job
                .events
                .send(Event::Failed(message.to_owned()));
        }
        self.remove(indices);
    }

    /// Frees the given slots (indices into `slots`, any order, duplicates allowed).
    fn remove(&mut self, mut indices: Vec<usize>) {
        indices.sort_unstable();
        indices.dedup();
        for i in indices.into_iter().rev() {
            let slot = self.slots.swap_remove(i);
            self.release(slot);
        }
        self.counters
            .decoding
            .store(self.slots.len(), Ordering::Relaxed);
    }

    /// Clears a finished sequence's KV cells and returns its id to the pool.
    fn release(&mut self, slot: Slot) {
        if let Err(e) =
            self.ctx
                .clear_kv_cache_seq(Some(u32::try_from(slot.seq).unwrap_or(0)), None, None)
        {
            tracing::error!(seq = slot.seq, error = %e, "cannot clear a finished sequence");
        }
        self.free_seqs.push(slot.seq);
        self.counters
            .decoding
            .store(self.slots.len(), Ordering::Relaxed);
    }
}

fn batch_index(used: usize) -> i32 {
    i32::try_from(used).unwrap_or(i32::MAX)
}
