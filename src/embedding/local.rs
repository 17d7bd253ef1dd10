//! The local model's one home: the quantops embedder worker. It loads the model lazily, on the
//! first row or `embed_text` that needs it, from `quantops.model_dir`/<name> (a superuser's
//! setting; the embedder names only a folder), keeps it for the life of the process, and runs it
//! on a rayon pool whose threads block every signal. No other process loads it: the postmaster
//! never (nothing here runs before a worker starts), an ordinary backend never ([`claim`] is
//! called by the embedder worker only and [`loaded`] refuses elsewhere).

use super::model::{valid_name, Model};
use crate::gucs;
use std::cell::{Cell, RefCell};
use std::sync::Arc;

thread_local! {
    static IS_EMBEDDER_WORKER: Cell<bool> = const { Cell::new(false) };
    /// (folder, model): the model this process holds
    static LOADED: RefCell<Option<(std::path::PathBuf, Arc<Model>)>> = const { RefCell::new(None) };
}

/// Marks this process as the embedder worker (its main function, first thing).
pub fn claim() {
    IS_EMBEDDER_WORKER.with(|w| w.set(true));
}

pub fn is_embedder_worker() -> bool {
    IS_EMBEDDER_WORKER.with(|w| w.get())
}

fn pool() -> Result<&'static rayon::ThreadPool, String> {
    static POOL: std::sync::OnceLock<rayon::ThreadPool> = std::sync::OnceLock::new();
    if let Some(p) = POOL.get() {
        return Ok(p);
    }
    let threads = match gucs::model_threads() {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let p = crate::threads::build(threads, "quantops-model").map_err(|e| format!("could not start the model's threads: {e}"))?;
    Ok(POOL.get_or_init(|| p))
}

/// The model named `name`, loaded on first use, and the pool to run it on.
pub fn loaded(name: &str) -> Result<(Arc<Model>, &'static rayon::ThreadPool), String> {
    if !is_embedder_worker() {
        return Err("the local model runs in the quantops embedder worker only".into());
    }
    if !valid_name(name) {
        return Err(format!("\"{name}\" is not a model folder name"));
    }
    let Some(dir) = gucs::model_dir() else {
        return Err("quantops.model_dir is not set: a superuser sets it to the folder of the local models".into());
    };
    let path = std::path::Path::new(&dir).join(name);
    if let Some(m) = LOADED.with(|l| l.borrow().as_ref().filter(|(p, _)| *p == path).map(|(_, m)| m.clone())) {
        return Ok((m, pool()?));
    }
    let t = std::time::Instant::now();
    let model = Arc::new(Model::load(&path)?);
    pgrx::log!("quantops embedder: loaded the local model \"{name}\" ({} dimensions) in {} ms", model.dims, t.elapsed().as_millis());
    LOADED.with(|l| *l.borrow_mut() = Some((path, model.clone())));
    Ok((model, pool()?))
}
