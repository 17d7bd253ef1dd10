//! One batch of the built-in refresh, in plain Rust: the rows a batch picked, their embeddings
//! computed in parallel (rayon) and laid out as the `vector[]` that one statement writes. Pure:
//! no PostgreSQL call, so it runs on a thread other than the backend's.

use super::core::{self as emb, Embedded, Embedder, SignalInput};

#[derive(Debug, Default, Clone, Copy)]
pub struct BatchOutcome {
    pub picked: i64,
    pub done: i64,
    pub unchanged: i64,
    pub failed: i64,
    /// the HTTP path: the most requests it had in flight at once
    pub peak_in_flight: i64,
    /// the HTTP path: the last rate-limit wait a provider asked for (ms)
    pub last_throttle_ms: Option<i64>,
    /// the HTTP path: requests made, and the main thread's time in the lease transactions and
    /// in the write-back transactions (µs): where a batch's time goes besides the provider
    pub requests: i64,
    pub lease_us: i64,
    pub write_us: i64,
}

impl std::ops::AddAssign for BatchOutcome {
    fn add_assign(&mut self, b: BatchOutcome) {
        self.picked += b.picked;
        self.done += b.done;
        self.unchanged += b.unchanged;
        self.failed += b.failed;
        self.peak_in_flight = self.peak_in_flight.max(b.peak_in_flight);
        self.last_throttle_ms = b.last_throttle_ms.or(self.last_throttle_ms);
        self.requests += b.requests;
        self.lease_us += b.lease_us;
        self.write_us += b.write_us;
    }
}

/// A picked queue row: the signal, its attempts so far, its inputs, the stored input hash, whether
/// another embedder made its vector (so it must be redone even with an equal hash), whether it
/// has a vector (to keep in the history).
pub struct Picked {
    pub id: i64,
    pub attempts: i32,
    pub input: SignalInput,
    pub stored: Option<Vec<u8>>,
    pub other_embedder: bool,
    pub has_embedding: bool,
}

/// What a batch writes, computed from its picked rows without touching the database, so that it
/// may run on another thread while the backend writes the previous batch.
#[derive(Default)]
pub struct Computed {
    pub picked: i64,
    pub unchanged: i64,
    pub ids: Vec<i64>,
    pub vectors: Vec<u8>,
    pub hashes: Vec<Vec<u8>>,
    pub had: Vec<i64>,
    pub dequeue: Vec<i64>,
    pub f_ids: Vec<i64>,
    pub f_hash: Vec<Option<Vec<u8>>>,
    pub f_err: Vec<String>,
    pub f_att: Vec<i32>,
}

/// Embeds picked rows (rayon) and lays out what to write. Pure Rust: safe on any thread.
pub fn compute(e: &Embedder, elem_oid: u32, align: u8, picked: Vec<Picked>) -> Computed {
    let meta: Vec<(i64, i32, bool)> = picked.iter().map(|p| (p.id, p.attempts, p.has_embedding)).collect();
    let rows: Vec<(SignalInput, Option<Vec<u8>>, bool)> = picked.into_iter().map(|p| (p.input, p.stored, p.other_embedder)).collect();
    let results: Vec<Embedded> = emb::embed_batch(e, &rows);
    let mut c = Computed { picked: meta.len() as i64, ..Default::default() };
    let mut vecs = Vec::new();
    for (&(id, attempts, has_embedding), r) in meta.iter().zip(results) {
        match (r.hash, r.vector) {
            (Ok(_), None) => {
                c.unchanged += 1;
                c.dequeue.push(id);
            }
            (Ok(h), Some(Ok(v))) => {
                if has_embedding {
                    c.had.push(id);
                }
                c.ids.push(id);
                vecs.push(v);
                c.hashes.push(h.to_vec());
                c.dequeue.push(id);
            }
            (h, Some(Err(err))) => {
                c.f_ids.push(id);
                c.f_hash.push(h.ok().map(|x| x.to_vec()));
                c.f_err.push(err.message().to_string());
                c.f_att.push(attempts + 1);
            }
            (Err(err), _) => {
                c.f_ids.push(id);
                c.f_hash.push(None);
                c.f_err.push(err.message().to_string());
                c.f_att.push(attempts + 1);
            }
        }
    }
    c.vectors = vector_array_bytes(elem_oid, align, &vecs);
    c
}

/// A `vector[]` as PostgreSQL lays it out in memory, built in plain Rust (so a thread other than
/// the backend's may build it): the array header (no null bitmap), then each element, a
/// pgvector `vector` (4-byte varlena header, int16 dim, int16 unused, float4[dim]), padded to
/// the type's alignment. Little-endian, as every platform PostgreSQL and pgvector ship on here.
pub fn vector_array_bytes(elem_oid: u32, align: u8, vectors: &[Vec<f32>]) -> Vec<u8> {
    let pad = |n: usize| -> usize {
        let a = match align {
            b'c' => 1,
            b's' => 2,
            b'd' => 8,
            _ => 4,
        };
        n.div_ceil(a) * a
    };
    if vectors.is_empty() {
        // PostgreSQL's empty array: no dimensions at all
        let mut b = (16u32 << 2).to_le_bytes().to_vec();
        b.extend_from_slice(&0i32.to_le_bytes());
        b.extend_from_slice(&0i32.to_le_bytes());
        b.extend_from_slice(&elem_oid.to_le_bytes());
        return b;
    }
    const HEADER: usize = 24; // MAXALIGN(sizeof(ArrayType) + 2 * sizeof(int) * ndim), ndim = 1
    let total = HEADER + vectors.iter().map(|v| pad(8 + 4 * v.len())).sum::<usize>();
    let mut b = Vec::with_capacity(total);
    b.extend_from_slice(&((total as u32) << 2).to_le_bytes()); // 4-byte varlena header
    b.extend_from_slice(&1i32.to_le_bytes()); // ndim
    b.extend_from_slice(&0i32.to_le_bytes()); // dataoffset: no null bitmap
    b.extend_from_slice(&elem_oid.to_le_bytes());
    b.extend_from_slice(&(vectors.len() as i32).to_le_bytes()); // dims[0]
    b.extend_from_slice(&1i32.to_le_bytes()); // lbound[0]
    b.resize(HEADER, 0);
    for v in vectors {
        let size = 8 + 4 * v.len();
        b.extend_from_slice(&((size as u32) << 2).to_le_bytes());
        b.extend_from_slice(&(v.len() as i16).to_le_bytes());
        b.extend_from_slice(&0i16.to_le_bytes());
        for x in v {
            b.extend_from_slice(&x.to_le_bytes());
        }
        b.resize(b.len() + pad(size) - size, 0);
    }
    debug_assert_eq!(b.len(), total);
    b
}
