//! `embed_text`'s way to the embedder worker, which alone holds the local model: a few slots in
//! shared memory. A backend puts its text in a free slot (under the lock), sets the worker's
//! latch and waits, checking for interrupts (cancel, statement_timeout) every millisecond; the
//! worker embeds every asked slot at once and writes the answers. A slot carries a generation,
//! so an answer for a backend that gave up (cancelled) is never read by the slot's next user.

use pgrx::lwlock::PgLwLock;
use pgrx::pg_shmem_init;
use pgrx::prelude::*;
use pgrx::shmem::PGRXSharedMemory;
use std::time::{Duration, Instant};

const SLOTS: usize = 8;
/// the longest text, in bytes (the model reads at most 256 tokens of it anyway)
pub const MAX_TEXT: usize = 16_384;
const MAX_DIMS: usize = 2000;
const MAX_NAME: usize = 128;
const MAX_MSG: usize = 512;

const FREE: u8 = 0;
const ASKED: u8 = 1;
const WORKING: u8 = 2;
const DONE: u8 = 3;
const FAILED: u8 = 4;

#[derive(Clone, Copy)]
#[repr(C)]
pub struct Slot {
    state: u8,
    generation: u64,
    model_len: usize,
    model: [u8; MAX_NAME],
    text_len: usize,
    text: [u8; MAX_TEXT],
    dims: usize,
    vector: [f32; MAX_DIMS],
    msg_len: usize,
    msg: [u8; MAX_MSG],
}

#[derive(Clone, Copy)]
#[repr(C)]
pub struct Slots {
    worker_pid: i32,
    next_generation: u64,
    slots: [Slot; SLOTS],
}

// SAFETY: plain bytes and numbers, no pointers: valid in every process that maps the segment
unsafe impl PGRXSharedMemory for Slots {}

const EMPTY_SLOT: Slot = Slot {
    state: FREE,
    generation: 0,
    model_len: 0,
    model: [0; MAX_NAME],
    text_len: 0,
    text: [0; MAX_TEXT],
    dims: 0,
    vector: [0.0; MAX_DIMS],
    msg_len: 0,
    msg: [0; MAX_MSG],
};

// SAFETY: the name is unique to quantops and the lock is only reached through pg_shmem_init!
static ASK: PgLwLock<Slots> = unsafe { PgLwLock::new(c"quantops_embed_text") };

/// Claims the slots in shared memory: only from `_PG_init` while shared_preload_libraries is processed.
#[allow(unexpected_cfgs)]
pub fn init_shmem() {
    pg_shmem_init!(ASK = Slots { worker_pid: 0, next_generation: 1, slots: [EMPTY_SLOT; SLOTS] });
}

/// Why a text was not embedded.
pub enum AskError {
    /// no embedder worker runs (not preloaded, stopped, or on a standby)
    NoWorker,
    /// the worker could not embed it (the message says why)
    Failed(String),
}

/// The embedder worker announces itself (its pid) or its stop (0).
pub fn set_worker_pid(pid: i32) {
    if crate::runtime::preloaded() {
        ASK.exclusive().worker_pid = pid;
        crate::runtime::set_embedder_pid(pid);
    }
}

pub fn worker_pid() -> i32 {
    if !crate::runtime::preloaded() {
        return 0;
    }
    ASK.share().worker_pid
}

fn set_latch(pid: i32) {
    // SAFETY: BackendPidGetProc returns the PGPROC of a live process or null (checked); setting
    // its latch is how PostgreSQL wakes a process
    unsafe {
        let p = pg_sys::BackendPidGetProc(pid);
        if !p.is_null() {
            pg_sys::SetLatch(&raw mut (*p).procLatch);
        }
    }
}

fn sleep_1ms() {
    // SAFETY: a backend's main thread; WL_EXIT_ON_PM_DEATH ends the process if the postmaster dies
    unsafe {
        pg_sys::WaitLatch(
            pg_sys::MyLatch,
            (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
            1,
            pg_sys::PG_WAIT_EXTENSION,
        );
        pg_sys::ResetLatch(pg_sys::MyLatch);
    }
    pgrx::check_for_interrupts!();
}

/// Frees the slot if it is still this asker's (on every way out, an error's unwinding included).
struct Held {
    index: usize,
    generation: u64,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut s = ASK.exclusive();
        let slot = &mut s.slots[self.index];
        if slot.generation == self.generation {
            slot.state = FREE;
        }
    }
}

/// Asks the embedder worker for the vector of `text` by the local model `model`. Waits while
/// the slots are busy or the model loads; a cancel or statement_timeout ends the wait.
pub fn ask(model: &str, text: &str) -> Result<Vec<f32>, AskError> {
    if !crate::runtime::preloaded() {
        return Err(AskError::NoWorker);
    }
    // a slot (wait while all are taken)
    let held = loop {
        {
            let mut s = ASK.exclusive();
            if s.worker_pid <= 0 {
                return Err(AskError::NoWorker);
            }
            let generation = s.next_generation;
            if let Some(index) = s.slots.iter().position(|x| x.state == FREE) {
                s.next_generation += 1;
                let slot = &mut s.slots[index];
                slot.state = ASKED;
                slot.generation = generation;
                slot.model[..model.len()].copy_from_slice(model.as_bytes());
                slot.model_len = model.len();
                slot.text[..text.len()].copy_from_slice(text.as_bytes());
                slot.text_len = text.len();
                slot.dims = 0;
                slot.msg_len = 0;
                let pid = s.worker_pid;
                drop(s);
                set_latch(pid);
                break Held { index, generation };
            }
        }
        sleep_1ms();
    };
    let mut since_worker_check = Instant::now();
    loop {
        {
            let s = ASK.share();
            let slot = &s.slots[held.index];
            if slot.generation == held.generation {
                match slot.state {
                    DONE => return Ok(slot.vector[..slot.dims].to_vec()),
                    FAILED => return Err(AskError::Failed(String::from_utf8_lossy(&slot.msg[..slot.msg_len]).into_owned())),
                    _ => {}
                }
            }
            // a worker that stopped while we wait will not answer
            if since_worker_check.elapsed() > Duration::from_secs(1) {
                if s.worker_pid <= 0 {
                    return Err(AskError::NoWorker);
                }
                since_worker_check = Instant::now();
            }
        }
        sleep_1ms();
    }
}

/// The worker's side: embeds every asked slot (several at once, in one call of the model) and
/// writes the answers. Returns how many it answered.
pub fn serve() -> usize {
    if !crate::runtime::preloaded() {
        return 0;
    }
    let asked: Vec<(usize, u64, String, String)> = {
        let mut s = ASK.exclusive();
        s.slots
            .iter_mut()
            .enumerate()
            .filter(|(_, x)| x.state == ASKED)
            .map(|(i, x)| {
                x.state = WORKING;
                (
                    i,
                    x.generation,
                    String::from_utf8_lossy(&x.model[..x.model_len]).into_owned(),
                    String::from_utf8_lossy(&x.text[..x.text_len]).into_owned(),
                )
            })
            .collect()
    };
    if asked.is_empty() {
        return 0;
    }
    let never = std::sync::atomic::AtomicBool::new(false);
    let mut answers: Vec<(usize, u64, Result<Vec<f32>, String>)> = Vec::with_capacity(asked.len());
    let mut models: Vec<&str> = asked.iter().map(|a| a.2.as_str()).collect();
    models.sort();
    models.dedup();
    for name in models {
        let mine: Vec<&(usize, u64, String, String)> = asked.iter().filter(|a| a.2 == name).collect();
        let result = super::local::loaded(name).and_then(|(m, pool)| {
            let texts: Vec<&str> = mine.iter().map(|a| a.3.as_str()).collect();
            m.embed(&texts, pool, &never)
        });
        match result {
            Ok(vecs) => answers.extend(mine.iter().zip(vecs).map(|(a, v)| (a.0, a.1, Ok(v)))),
            Err(m) => answers.extend(mine.iter().map(|a| (a.0, a.1, Err(m.clone())))),
        }
    }
    let n = answers.len();
    let mut s = ASK.exclusive();
    for (i, generation, r) in answers {
        let slot = &mut s.slots[i];
        if slot.generation != generation || slot.state != WORKING {
            continue; // the asker gave up; the slot is someone else's now
        }
        match r {
            Ok(v) if v.len() <= MAX_DIMS => {
                slot.vector[..v.len()].copy_from_slice(&v);
                slot.dims = v.len();
                slot.state = DONE;
            }
            Ok(v) => fail(slot, &format!("the model gives {} dimensions, more than {MAX_DIMS}", v.len())),
            Err(m) => fail(slot, &m),
        }
    }
    n
}

fn fail(slot: &mut Slot, msg: &str) {
    let mut end = msg.len().min(MAX_MSG);
    while !msg.is_char_boundary(end) {
        end -= 1;
    }
    slot.msg[..end].copy_from_slice(&msg.as_bytes()[..end]);
    slot.msg_len = end;
    slot.state = FAILED;
}
