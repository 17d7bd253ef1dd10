//! Pure IVFFlat maths: reading pgvector's index pages, assigning a sample to the centroids,
//! balance and drift, a reference k-means, recall statistics, and the rebuild decision.
//! Nothing here touches Postgres; every function is tested below.

use super::config::{recommended_lists, recommended_probes, Metric};
use rayon::prelude::*;

/// pgvector's IVFFlat on-disk constants (src/ivfflat.h, format version 1).
pub const IVFFLAT_MAGIC: u32 = 0x14FF1A7;
pub const IVFFLAT_PAGE_ID: u16 = 0xFF84;
pub const METAPAGE_BLKNO: u32 = 0;
pub const HEAD_BLKNO: u32 = 1;
pub const INVALID_BLOCK: u32 = u32::MAX;
/// sizeof(PageHeaderData), already MAXALIGNed.
const PAGE_HEADER: usize = 24;
const LP_NORMAL: u32 = 1;

#[derive(Debug, Clone, PartialEq)]
pub enum PageError {
    Short(usize),
    Magic(u32),
    PageId(u16),
    Layout(String),
}

impl std::fmt::Display for PageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PageError::Short(n) => write!(f, "page of {n} bytes is too short"),
            PageError::Magic(m) => write!(f, "metapage magic number {m:#x} is not IVFFlat's"),
            PageError::PageId(p) => write!(f, "page id {p:#x} is not IVFFlat's"),
            PageError::Layout(s) => write!(f, "{s}"),
        }
    }
}

fn u16_at(p: &[u8], o: usize) -> Result<u16, PageError> {
    p.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]])).ok_or(PageError::Short(p.len()))
}
fn u32_at(p: &[u8], o: usize) -> Result<u32, PageError> {
    p.get(o..o + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).ok_or(PageError::Short(p.len()))
}

/// The metapage (block 0): format version, dimensions, lists.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Meta {
    pub version: u32,
    pub dims: u16,
    pub lists: u16,
}

pub fn parse_meta(page: &[u8]) -> Result<Meta, PageError> {
    let magic = u32_at(page, PAGE_HEADER)?;
    if magic != IVFFLAT_MAGIC {
        return Err(PageError::Magic(magic));
    }
    Ok(Meta { version: u32_at(page, PAGE_HEADER + 4)?, dims: u16_at(page, PAGE_HEADER + 8)?, lists: u16_at(page, PAGE_HEADER + 10)? })
}

/// One page of the list directory: the centers it holds and the next directory page.
#[derive(Debug, Clone, PartialEq)]
pub struct ListPage {
    pub centers: Vec<Vec<f32>>,
    pub next: u32,
}

/// Reads IvfflatListData items {startPage, insertPage, Vector center} from a directory page.
pub fn parse_list_page(page: &[u8], dims: usize) -> Result<ListPage, PageError> {
    let lower = u16_at(page, 12)? as usize;
    let special = u16_at(page, 16)? as usize;
    if lower < PAGE_HEADER || special > page.len() || special + 8 > page.len() || lower > special {
        return Err(PageError::Layout(format!("page header is not sane (lower {lower}, special {special})")));
    }
    let page_id = u16_at(page, special + 6)?;
    if page_id != IVFFLAT_PAGE_ID {
        return Err(PageError::PageId(page_id));
    }
    let next = u32_at(page, special)?;
    let n = (lower - PAGE_HEADER) / 4;
    let mut centers = Vec::with_capacity(n);
    for i in 0..n {
        let lp = u32_at(page, PAGE_HEADER + 4 * i)?;
        let (off, flags, len) = ((lp & 0x7fff) as usize, (lp >> 15) & 3, (lp >> 17) as usize);
        if flags != LP_NORMAL {
            continue;
        }
        let need = 8 + 8 + 4 * dims;
        if len < need || off + need > page.len() {
            return Err(PageError::Layout(format!("list item {i} is {len} bytes, a center of {dims} dimensions needs {need}")));
        }
        let vdim = u16_at(page, off + 12)? as usize;
        if vdim != dims {
            return Err(PageError::Layout(format!("list item {i} has a center of {vdim} dimensions, the metapage says {dims}")));
        }
        let x = (0..dims)
            .map(|j| {
                let o = off + 16 + 4 * j;
                f32::from_le_bytes([page[o], page[o + 1], page[o + 2], page[o + 3]])
            })
            .collect();
        centers.push(x);
    }
    Ok(ListPage { centers, next })
}

/// Puts a vector in the space where the index compares it with the centers: unit length for
/// cosine (pgvector normalizes both), as is for l2 and inner product.
pub fn prepare(v: &mut [f32], metric: Metric) {
    if metric == Metric::Cosine {
        let n = v.iter().map(|x| (*x as f64) * (*x as f64)).sum::<f64>().sqrt();
        if n > 0.0 {
            v.iter_mut().for_each(|x| *x = (*x as f64 / n) as f32);
        }
    }
}

fn l2sq(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let d = *x as f64 - *y as f64;
            d * d
        })
        .sum()
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

/// The list a vector falls into (as pgvector chooses it) and its Euclidean distance to that center.
pub fn nearest(v: &[f32], centers: &[Vec<f32>], metric: Metric) -> (usize, f64) {
    let mut best = (0usize, f64::INFINITY);
    for (i, c) in centers.iter().enumerate() {
        let score = if metric == Metric::InnerProduct { -dot(v, c) } else { l2sq(v, c) };
        if score < best.1 {
            best = (i, score);
        }
    }
    let d = l2sq(v, &centers[best.0]).sqrt();
    (best.0, d)
}

/// How a sample falls into the lists.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    pub counts: Vec<u64>,
    pub mean_distance: f64,
}

pub fn assign(sample: &[Vec<f32>], centers: &[Vec<f32>], metric: Metric) -> Assignment {
    let mut counts = vec![0u64; centers.len()];
    if centers.is_empty() || sample.is_empty() {
        return Assignment { counts, mean_distance: f64::NAN };
    }
    let picks: Vec<(usize, f64)> = crate::threads::run(|| sample.par_iter().map(|v| nearest(v, centers, metric)).collect());
    let mut sum = 0.0;
    for (i, d) in &picks {
        counts[*i] += 1;
        sum += d;
    }
    Assignment { counts, mean_distance: sum / picks.len() as f64 }
}

/// How many more rows a query scans than with even lists: lists * sum(p_i^2), where p_i is the
/// share of rows in list i (a query falls into a list as often as the rows do). 1.0 is perfectly
/// even; the estimate of sum(p_i^2) from sample counts is the unbiased one, (sum c^2 - n) / (n (n-1)).
pub fn balance(counts: &[u64]) -> f64 {
    let n: u64 = counts.iter().sum();
    if counts.is_empty() || n < 2 {
        return f64::NAN;
    }
    let n = n as f64;
    let s2: f64 = counts.iter().map(|c| (*c as f64) * (*c as f64)).sum();
    let p2 = ((s2 - n) / (n * (n - 1.0))).max(1.0 / counts.len() as f64);
    counts.len() as f64 * p2
}

/// The largest list's share of the rows against an even share (1.0 = even).
pub fn max_share(counts: &[u64]) -> f64 {
    let n: u64 = counts.iter().sum();
    if n == 0 {
        return f64::NAN;
    }
    *counts.iter().max().unwrap_or(&0) as f64 / n as f64 * counts.len() as f64
}

/// A build whose lists are lopsided: pgvector before 0.8.3 samples a time-ordered table from too
/// few blocks, and the centers then miss most of the data. Flagged when a query would scan 4x
/// the rows of even lists, or one list holds 15x its share (k-means on clustered data stays
/// well below both).
pub fn lopsided(counts: &[u64]) -> bool {
    let b = balance(counts);
    let m = max_share(counts);
    (b.is_finite() && b >= 4.0) || (m.is_finite() && m >= 15.0 && counts.len() >= 4)
}

/// A deterministic reference k-means (k-means++ seeding, Lloyd iterations) on `fit`: what a fresh
/// build's centers would look like. Used as the drift baseline of an index whose build quantops
/// did not see.
pub fn kmeans(fit: &[Vec<f32>], k: usize, iters: usize, metric: Metric, seed: u64) -> Vec<Vec<f32>> {
    crate::threads::run(|| kmeans_in_pool(fit, k, iters, metric, seed))
}

fn kmeans_in_pool(fit: &[Vec<f32>], k: usize, iters: usize, metric: Metric, seed: u64) -> Vec<Vec<f32>> {
    if fit.is_empty() || k == 0 {
        return Vec::new();
    }
    let k = k.min(fit.len());
    let dims = fit[0].len();
    let mut rng = seed;
    let mut next = move || {
        rng = crate::hash::splitmix64(rng, 0);
        (rng >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut centers: Vec<Vec<f32>> = vec![fit[(next() * fit.len() as f64) as usize % fit.len()].clone()];
    let mut d2: Vec<f64> = fit.par_iter().map(|v| l2sq(v, &centers[0])).collect();
    while centers.len() < k {
        let total: f64 = d2.iter().sum();
        let pick = if total > 0.0 {
            let mut t = next() * total;
            let mut idx = fit.len() - 1;
            for (i, d) in d2.iter().enumerate() {
                t -= d;
                if t <= 0.0 {
                    idx = i;
                    break;
                }
            }
            idx
        } else {
            (next() * fit.len() as f64) as usize % fit.len()
        };
        let c = fit[pick].clone();
        d2.par_iter_mut().zip(fit.par_iter()).for_each(|(d, v)| *d = d.min(l2sq(v, &c)));
        centers.push(c);
    }
    for _ in 0..iters {
        let picks: Vec<usize> = fit.par_iter().map(|v| nearest(v, &centers, Metric::L2).0).collect();
        let mut sums = vec![vec![0f64; dims]; k];
        let mut counts = vec![0usize; k];
        for (v, &i) in fit.iter().zip(&picks) {
            counts[i] += 1;
            for (s, x) in sums[i].iter_mut().zip(v) {
                *s += *x as f64;
            }
        }
        for i in 0..k {
            if counts[i] > 0 {
                let mut c: Vec<f32> = sums[i].iter().map(|s| (s / counts[i] as f64) as f32).collect();
                prepare(&mut c, metric);
                centers[i] = c;
            }
        }
    }
    centers
}

/// Recall statistics over queries: the mean and a 95% confidence interval (normal approximation
/// of the mean of per-query recalls, clipped to [0, 1]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Recall {
    pub mean: f64,
    pub low: f64,
    pub high: f64,
    pub queries: usize,
}

pub fn recall_stats(per_query: &[f64]) -> Recall {
    let n = per_query.len();
    if n == 0 {
        return Recall { mean: f64::NAN, low: f64::NAN, high: f64::NAN, queries: 0 };
    }
    let mean = per_query.iter().sum::<f64>() / n as f64;
    let half = if n > 1 {
        let var = per_query.iter().map(|r| (r - mean) * (r - mean)).sum::<f64>() / (n - 1) as f64;
        1.96 * (var / n as f64).sqrt()
    } else {
        f64::NAN
    };
    Recall { mean, low: (mean - half).max(0.0), high: (mean + half).min(1.0), queries: n }
}

/// |found ∩ truth| / |truth| for one query.
pub fn recall_of(found: &[i64], truth: &[i64]) -> f64 {
    if truth.is_empty() {
        return 1.0;
    }
    truth.iter().filter(|t| found.contains(t)).count() as f64 / truth.len() as f64
}

/// At most `n` items, evenly spread over `all` (every item when there are no more than `n`).
pub fn even_subset<T>(all: Vec<T>, n: usize) -> Vec<T> {
    let len = all.len();
    if len <= n {
        return all;
    }
    let mut keep = vec![false; len];
    for i in 0..n {
        keep[i * len / n] = true;
    }
    all.into_iter().zip(keep).filter_map(|(x, k)| k.then_some(x)).collect()
}

/// The probes tried when searching for the smallest that reaches a target recall.
pub fn probe_ladder(lists: i32) -> Vec<i32> {
    let mut v = vec![1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 128, 160, 192, 256];
    let mut p = 256;
    while p < lists {
        p *= 2;
        v.push(p);
    }
    v.retain(|p| *p < lists);
    v.push(lists.max(1));
    v.dedup();
    v
}

/// The thresholds of quantops.index_policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    pub max_balance: f64,
    pub max_drift: f64,
    pub max_lists_factor: f64,
    pub max_churn: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds { max_balance: 1.5, max_drift: 1.15, max_lists_factor: 2.0, max_churn: 1.0 }
    }
}

/// What was measured, as the decision needs it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measured {
    pub rows: i64,
    pub lists: i32,
    pub balance: f64,
    /// balance now against balance at build (k-means leaves clustered data uneven by nature)
    pub balance_growth: Option<f64>,
    pub drift: f64,
    pub churn: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub rebuild: bool,
    /// lists for the new build (differs from the current when the count is off)
    pub lists: i32,
    pub reasons: Vec<String>,
}

/// Rebuild when queries scan too many rows (balance), when the data moved away from the centers
/// (drift: also catches an index trained on an empty or truncated table), or when lists is far
/// from pgvector's guidance for the rows there are now. Churn alone is reported, not acted on:
/// pgvector's guidance is that recall suffers when the distribution shifts, not from churn.
pub fn decide(m: &Measured, t: &Thresholds) -> Decision {
    let mut reasons = Vec::new();
    let rec = recommended_lists(m.rows);
    let mut lists = m.lists;
    match m.balance_growth {
        Some(g) if g.is_finite() && g > t.max_balance => reasons.push(format!(
            "balance grew {:.2}x since the build (> {:.2}): queries scan {:.2}x the rows of even lists",
            g, t.max_balance, m.balance
        )),
        None if m.balance.is_finite() && m.balance > t.max_balance * 2.0 => reasons.push(format!(
            "balance {:.2} > {:.2}: queries scan {:.2}x the rows of even lists",
            m.balance,
            t.max_balance * 2.0,
            m.balance
        )),
        _ => {}
    }
    if m.drift.is_finite() && m.drift > t.max_drift {
        reasons.push(format!("drift {:.3} > {:.3}: rows lie farther from the centers than at build", m.drift, t.max_drift));
    }
    let f = t.max_lists_factor.max(1.0);
    let lists_off = (m.lists as f64) > rec as f64 * f || (m.lists as f64) * f < rec as f64;
    // lists alone is a reason only on a table large enough for the guidance to matter
    if m.rows >= 10_000 && lists_off {
        reasons.push(format!("lists {} is far from the recommended {} for {} rows", m.lists, rec, m.rows));
    }
    let rebuild = !reasons.is_empty();
    // a rebuild made for any reason takes the recommended lists when the current count is off
    if rebuild && lists_off {
        lists = rec;
    }
    if let Some(c) = m.churn {
        if c > t.max_churn {
            reasons.push(format!("note: churn {:.2} since the build (not a reason on its own)", c));
        }
    }
    Decision { rebuild, lists, reasons }
}

/// Memory an IVFFlat build needs (bytes), after pgvector's k-means: 50 samples per list (at least
/// 10,000) of MAXALIGNed vectors, the centers several times over, the center-to-center distances;
/// with a margin.
pub fn build_memory_bytes(lists: i32, dims: i32, rows: i64) -> u64 {
    let item = (8 + 4 * dims as u64).div_ceil(8) * 8;
    let samples = ((lists as u64) * 50).max(10_000).min(rows.max(1) as u64);
    let centers = lists as u64 * item;
    let bytes = samples * item + 4 * centers + (lists as u64) * (lists as u64) * 4 + lists as u64 * dims as u64 * 8;
    bytes + bytes / 4 + (16 << 20)
}

/// Disk an IVFFlat index of these rows takes (bytes): one index tuple per row (heap pointer and
/// vector, MAXALIGNed, with its line pointer) at pages filled to 90 %, plus the directory.
pub fn index_disk_bytes(lists: i32, dims: i32, rows: i64) -> u64 {
    let tuple = (8 + 8 + 4 * dims as u64).div_ceil(8) * 8 + 4;
    let data = rows.max(0) as u64 * tuple * 10 / 9;
    data + (lists as u64) * (8192 + 4 * dims as u64) + 8192
}

pub fn probes_default(lists: i32) -> i32 {
    recommended_probes(lists)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a directory page the way pgvector lays it out (PageAddItem from the upper end).
    fn dir_page(centers: &[Vec<f32>], next: u32) -> Vec<u8> {
        let mut p = vec![0u8; 8192];
        let special = 8192 - 8;
        let mut upper = special;
        let mut lower = PAGE_HEADER;
        for c in centers {
            let len = 8 + 8 + 4 * c.len();
            upper = (upper - len) / 8 * 8;
            p[upper..upper + 4].copy_from_slice(&7u32.to_le_bytes());
            p[upper + 4..upper + 8].copy_from_slice(&9u32.to_le_bytes());
            p[upper + 8..upper + 12].copy_from_slice(&(((8 + 4 * c.len()) as u32) << 2).to_le_bytes());
            p[upper + 12..upper + 14].copy_from_slice(&(c.len() as u16).to_le_bytes());
            for (j, x) in c.iter().enumerate() {
                let o = upper + 16 + 4 * j;
                p[o..o + 4].copy_from_slice(&x.to_le_bytes());
            }
            let lp = (upper as u32) | (LP_NORMAL << 15) | ((len as u32) << 17);
            p[lower..lower + 4].copy_from_slice(&lp.to_le_bytes());
            lower += 4;
        }
        p[12..14].copy_from_slice(&(lower as u16).to_le_bytes());
        p[14..16].copy_from_slice(&(upper as u16).to_le_bytes());
        p[16..18].copy_from_slice(&(special as u16).to_le_bytes());
        p[special..special + 4].copy_from_slice(&next.to_le_bytes());
        p[special + 6..special + 8].copy_from_slice(&IVFFLAT_PAGE_ID.to_le_bytes());
        p
    }

    #[test]
    fn reads_the_metapage() {
        let mut p = vec![0u8; 8192];
        p[24..28].copy_from_slice(&IVFFLAT_MAGIC.to_le_bytes());
        p[28..32].copy_from_slice(&1u32.to_le_bytes());
        p[32..34].copy_from_slice(&384u16.to_le_bytes());
        p[34..36].copy_from_slice(&200u16.to_le_bytes());
        assert_eq!(parse_meta(&p), Ok(Meta { version: 1, dims: 384, lists: 200 }));
        p[24] ^= 1;
        assert!(matches!(parse_meta(&p), Err(PageError::Magic(_))));
        assert!(matches!(parse_meta(&p[..20]), Err(PageError::Short(_))));
    }

    #[test]
    fn reads_centers_from_a_directory_page() {
        let cs = vec![vec![1.0, 2.0, 3.0], vec![-0.5, 0.25, 8.0], vec![0.0, 0.0, 1e-3]];
        let p = dir_page(&cs, INVALID_BLOCK);
        let lp = parse_list_page(&p, 3).unwrap();
        assert_eq!(lp.centers, cs);
        assert_eq!(lp.next, INVALID_BLOCK);
        // the wrong dimension, or a page that is not IVFFlat's, is an error, not garbage
        assert!(matches!(parse_list_page(&p, 4), Err(PageError::Layout(_))));
        let mut q = p.clone();
        q[8192 - 2] = 0;
        assert!(matches!(parse_list_page(&q, 3), Err(PageError::PageId(_))));
        // dead line pointers are skipped
        let mut r = dir_page(&cs, 5);
        let lp0 = u32::from_le_bytes([r[24], r[25], r[26], r[27]]) & !(3 << 15);
        r[24..28].copy_from_slice(&lp0.to_le_bytes());
        let got = parse_list_page(&r, 3).unwrap();
        assert_eq!(got.centers.len(), 2);
        assert_eq!(got.next, 5);
    }

    #[test]
    fn nearest_follows_the_metric() {
        let cs = vec![vec![1.0, 0.0], vec![10.0, 10.0]];
        assert_eq!(nearest(&[2.0, 0.0], &cs, Metric::L2).0, 0);
        // inner product prefers the long vector even though it is far
        assert_eq!(nearest(&[2.0, 0.1], &cs, Metric::InnerProduct).0, 1);
        let (i, d) = nearest(&[1.0, 1.0], &cs, Metric::L2);
        assert_eq!(i, 0);
        assert!((d - 1.0).abs() < 1e-9);
        let mut v = vec![3.0, 4.0];
        prepare(&mut v, Metric::Cosine);
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
    }

    #[test]
    fn balance_is_one_for_even_lists_and_grows_with_skew() {
        let even = vec![1000u64; 10];
        assert!((balance(&even) - 1.0).abs() < 0.01, "{}", balance(&even));
        let mut skew = vec![100u64; 10];
        skew[0] = 9100; // 91 % in one list
        let b = balance(&skew);
        assert!(b > 8.0 && b < 8.5, "{b}");
        assert!(lopsided(&skew));
        assert!(!lopsided(&even));
        assert!((max_share(&skew) - 9.1).abs() < 1e-9);
        assert!(balance(&[1]).is_nan());
    }

    #[test]
    fn balance_of_a_random_even_sample_is_near_one() {
        // 5,000 draws into 100 equally likely lists: the raw sum of squares says ~1.02, the
        // unbiased estimate says ~1.00
        let mut counts = vec![0u64; 100];
        let mut s = 7u64;
        for _ in 0..5000 {
            s = crate::hash::splitmix64(s, 0);
            counts[(s % 100) as usize] += 1;
        }
        let b = balance(&counts);
        assert!((b - 1.0).abs() < 0.03, "{b}");
    }

    fn blobs(n: usize, centers: &[[f32; 2]], seed: u64) -> Vec<Vec<f32>> {
        let mut s = seed;
        (0..n)
            .map(|i| {
                let c = centers[i % centers.len()];
                s = crate::hash::splitmix64(s, 0);
                let a = (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                s = crate::hash::splitmix64(s, 0);
                let b = (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                vec![c[0] + a, c[1] + b]
            })
            .collect()
    }

    #[test]
    fn kmeans_finds_separated_blobs_and_drift_shows_a_shift() {
        let truth = [[0.0f32, 0.0], [20.0, 0.0], [0.0, 20.0], [20.0, 20.0]];
        let data = blobs(2000, &truth, 1);
        let cs = kmeans(&data, 4, 10, Metric::L2, 42);
        for t in truth {
            assert!(cs.iter().any(|c| (c[0] - t[0]).abs() < 0.5 && (c[1] - t[1]).abs() < 0.5), "{cs:?}");
        }
        let here = assign(&data, &cs, Metric::L2);
        assert!(here.mean_distance < 0.5);
        assert!((balance(&here.counts) - 1.0).abs() < 0.05);
        // the same centers against data that moved: drift well above 1, lists lopsided
        let moved = blobs(2000, &[[50.0, 50.0], [60.0, 50.0]], 2);
        let there = assign(&moved, &cs, Metric::L2);
        assert!(there.mean_distance / here.mean_distance > 10.0);
        assert!(lopsided(&there.counts));
        // deterministic for a seed
        assert_eq!(cs, kmeans(&data, 4, 10, Metric::L2, 42));
    }

    #[test]
    fn recall_statistics() {
        assert_eq!(recall_of(&[1, 2, 3], &[1, 2, 4, 5]), 0.5);
        assert_eq!(recall_of(&[], &[]), 1.0);
        let r = recall_stats(&[1.0, 1.0, 0.8, 0.6]);
        assert!((r.mean - 0.85).abs() < 1e-12);
        assert!(r.low < r.mean && r.high > r.mean && r.high <= 1.0);
        let perfect = recall_stats(&[1.0; 10]);
        assert_eq!((perfect.low, perfect.high), (1.0, 1.0));
        assert!(recall_stats(&[]).mean.is_nan());
    }

    #[test]
    fn even_subset_spans_the_whole_input() {
        let v: Vec<usize> = (0..1000).collect();
        let s = even_subset(v.clone(), 100);
        assert_eq!(s.len(), 100);
        assert_eq!(s[0], 0);
        assert!(*s.last().unwrap() >= 990, "the end of the table is sampled too");
        assert_eq!(even_subset(v[..50].to_vec(), 100).len(), 50);
        assert!(even_subset(v, 0).is_empty());
    }

    #[test]
    fn probe_ladder_ends_at_lists() {
        assert_eq!(probe_ladder(1), vec![1]);
        assert_eq!(probe_ladder(7), vec![1, 2, 3, 4, 5, 6, 7]);
        let l = probe_ladder(1000);
        assert_eq!(*l.last().unwrap(), 1000);
        assert!(l.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn decisions() {
        let t = Thresholds::default();
        let healthy = Measured { rows: 200_000, lists: 200, balance: 1.1, balance_growth: Some(1.05), drift: 1.02, churn: Some(0.3) };
        let d = decide(&healthy, &t);
        assert!(!d.rebuild, "{d:?}");
        assert_eq!(d.lists, 200);
        let drifted = Measured { drift: 1.4, ..healthy };
        let d = decide(&drifted, &t);
        assert!(d.rebuild && d.reasons[0].starts_with("drift"));
        let skewed = Measured { balance: 2.5, balance_growth: Some(2.2), ..healthy };
        assert!(decide(&skewed, &t).rebuild);
        // clustered data: uneven at build already, and no worse now
        let clustered = Measured { balance: 2.5, balance_growth: Some(1.1), ..healthy };
        assert!(!decide(&clustered, &t).rebuild);
        // no baseline: only a clearly uneven index counts
        assert!(!decide(&Measured { balance_growth: None, balance: 2.5, ..healthy }, &t).rebuild);
        assert!(decide(&Measured { balance_growth: None, balance: 3.5, ..healthy }, &t).rebuild);
        // an index built on an empty table (lists = 1) over 200k rows: rebuild with 200 lists
        let tiny = Measured { lists: 1, ..healthy };
        let d = decide(&tiny, &t);
        assert!(d.rebuild);
        assert_eq!(d.lists, 200);
        // churn alone is a note
        let churned = Measured { churn: Some(5.0), ..healthy };
        let d = decide(&churned, &t);
        assert!(!d.rebuild);
        assert!(d.reasons[0].starts_with("note: churn"));
        // small tables keep their lists
        let small = Measured { rows: 5000, lists: 100, ..healthy };
        assert!(!decide(&small, &t).rebuild);
        // ... unless they are rebuilt anyway: an index trained on an empty table (lists = 1)
        let empty_trained = Measured { rows: 3000, lists: 1, drift: 2.0, ..healthy };
        let d = decide(&empty_trained, &t);
        assert!(d.rebuild);
        assert_eq!(d.lists, 3);
    }

    #[test]
    fn resource_estimates() {
        // 200 lists x 384 dims: 10,000 samples of 1,544 bytes, about 15 MB, plus the margin
        let m = build_memory_bytes(200, 384, 200_000);
        assert!(m > 30 << 20 && m < 40 << 20, "{m}");
        assert!(build_memory_bytes(2000, 384, 10_000_000) > build_memory_bytes(200, 384, 10_000_000));
        let d = index_disk_bytes(200, 384, 200_000);
        assert!(d > 300 << 20 && d < 400 << 20, "{d}");
    }
}
