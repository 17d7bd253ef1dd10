//! Reads named numbers out of a `jsonb` value in its on-disk layout, in plain Rust, so that the
//! embedding threads parse `features` instead of the backend printing it as text (printing
//! every numeric was most of a refresh's read time). No Postgres here: the bytes are a copy of
//! the detoasted varlena. The layout is PostgreSQL's (src/include/utils/jsonb.h, numeric.c),
//! stable since 9.4 and the same in 15 to 17.

/// A jsonb value's bytes, from the start of its 4-byte varlena header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonbBytes(pub Vec<u8>);

/// A value found under a key, as far as the features embedder needs to know.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool,
    /// a number, correctly rounded to f64 (not finite when out of range)
    Number(f64),
    String,
    Array,
    Object,
}

impl Value {
    /// The same for a parsed JSON value (serde's numbers are correctly rounded: `float_roundtrip`).
    pub fn of_json(v: &serde_json::Value) -> Value {
        match v {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(_) => Value::Bool,
            serde_json::Value::Number(n) => Value::Number(n.as_f64().unwrap_or(f64::NAN)),
            serde_json::Value::String(_) => Value::String,
            serde_json::Value::Array(_) => Value::Array,
            serde_json::Value::Object(_) => Value::Object,
        }
    }

    /// The JSON type's name, as error messages give it.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool => "boolean",
            Value::Number(_) => "number",
            Value::String => "string",
            Value::Array => "array",
            Value::Object => "object",
        }
    }
}

const JB_CMASK: u32 = 0x0FFF_FFFF;
const JB_FSCALAR: u32 = 0x1000_0000;
const JB_FOBJECT: u32 = 0x2000_0000;
const JENTRY_OFFLENMASK: u32 = 0x0FFF_FFFF;
const JENTRY_TYPEMASK: u32 = 0x7000_0000;
const JENTRY_HAS_OFF: u32 = 0x8000_0000;
const JENTRY_ISSTRING: u32 = 0x0000_0000;
const JENTRY_ISNUMERIC: u32 = 0x1000_0000;
const JENTRY_ISBOOL_FALSE: u32 = 0x2000_0000;
const JENTRY_ISBOOL_TRUE: u32 = 0x3000_0000;
const JENTRY_ISNULL: u32 = 0x4000_0000;
const JENTRY_ISCONTAINER: u32 = 0x5000_0000;

fn u32_at(b: &[u8], at: usize) -> Result<u32, String> {
    b.get(at..at + 4).map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]])).ok_or_else(|| "jsonb value is truncated".into())
}

/// The top-level object of a jsonb value.
pub struct Object<'a> {
    b: &'a [u8],
    /// where the JEntry array starts
    children: usize,
    /// where the keys' and values' data starts
    base: usize,
    n: usize,
}

impl JsonbBytes {
    /// The top-level object, or an error naming what the value is instead.
    pub fn object(&self) -> Result<Object<'_>, String> {
        let b = &self.0;
        let header = u32_at(b, 4)?;
        if header & JB_FOBJECT == 0 {
            return Err(if header & JB_FSCALAR != 0 { "a scalar".into() } else { "an array".into() });
        }
        let n = (header & JB_CMASK) as usize;
        let children = 8;
        let base = children + 8 * n;
        if base > b.len() {
            return Err("jsonb value is truncated".into());
        }
        Ok(Object { b, children, base, n })
    }
}

impl Object<'_> {
    fn entry(&self, i: usize) -> u32 {
        let at = self.children + 4 * i;
        u32::from_le_bytes([self.b[at], self.b[at + 1], self.b[at + 2], self.b[at + 3]])
    }

    /// Offset of entry i's data from `base`: the lengths since the last entry that stores its end.
    fn offset(&self, i: usize) -> usize {
        let mut off = 0usize;
        for k in (0..i).rev() {
            let e = self.entry(k);
            off += (e & JENTRY_OFFLENMASK) as usize;
            if e & JENTRY_HAS_OFF != 0 {
                break;
            }
        }
        off
    }

    fn span(&self, i: usize) -> Result<(usize, usize), String> {
        let e = self.entry(i);
        let off = self.offset(i);
        let len = if e & JENTRY_HAS_OFF != 0 { (e & JENTRY_OFFLENMASK) as usize - off } else { (e & JENTRY_OFFLENMASK) as usize };
        if self.base + off + len > self.b.len() {
            return Err("jsonb value is truncated".into());
        }
        Ok((off, len))
    }

    fn key(&self, i: usize) -> Result<&[u8], String> {
        let (off, len) = self.span(i)?;
        Ok(&self.b[self.base + off..self.base + off + len])
    }

    /// The value under `key`, if the object has it. Keys are stored sorted by length, then
    /// bytes, as PostgreSQL sorts them, so this is a binary search.
    pub fn get(&self, key: &str) -> Result<Option<Value>, String> {
        let want = key.as_bytes();
        let (mut lo, mut hi) = (0usize, self.n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            let k = self.key(mid)?;
            match (k.len(), k).cmp(&(want.len(), want)) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return self.value(mid + self.n).map(Some),
            }
        }
        Ok(None)
    }

    fn value(&self, i: usize) -> Result<Value, String> {
        let e = self.entry(i);
        Ok(match e & JENTRY_TYPEMASK {
            JENTRY_ISNULL => Value::Null,
            JENTRY_ISBOOL_FALSE | JENTRY_ISBOOL_TRUE => Value::Bool,
            JENTRY_ISSTRING => Value::String,
            JENTRY_ISNUMERIC => {
                let (off, len) = self.span(i)?;
                // a numeric starts int-aligned; the padding counts in the entry's length
                let start = off.div_ceil(4) * 4;
                if start > off + len {
                    return Err("jsonb numeric is truncated".into());
                }
                Value::Number(numeric_to_f64(&self.b[self.base + start..self.base + off + len])?)
            }
            JENTRY_ISCONTAINER => {
                let (off, _) = self.span(i)?;
                let h = u32_at(self.b, self.base + off.div_ceil(4) * 4)?;
                if h & JB_FOBJECT != 0 {
                    Value::Object
                } else {
                    Value::Array
                }
            }
            t => return Err(format!("jsonb entry of unknown type {t:#x}")),
        })
    }
}

/// A PostgreSQL `numeric` (a varlena, 4-byte or 1-byte header) to the nearest f64: its exact
/// decimal digits, parsed by Rust's correctly rounded parser. NaN and infinities give NaN and
/// infinities (jsonb never holds them).
pub fn numeric_to_f64(b: &[u8]) -> Result<f64, String> {
    let bad = || "numeric is truncated".to_string();
    let (size, hdr) = match b.first() {
        Some(x) if x & 0x01 == 0x01 => ((x >> 1) as usize, 1usize),
        Some(_) => ((u32_at(b, 0)? >> 2) as usize, 4usize),
        None => return Err(bad()),
    };
    let d = b.get(hdr..size).ok_or_else(bad)?;
    let h = u16::from_le_bytes([*d.first().ok_or_else(bad)?, *d.get(1).ok_or_else(bad)?]);
    let (negative, weight, digits) = match h & 0xC000 {
        0xC000 => {
            return Ok(match h {
                0xD000 => f64::INFINITY,
                0xF000 => f64::NEG_INFINITY,
                _ => f64::NAN,
            })
        }
        0x8000 => {
            let w = (h & 0x003F) as i32;
            (h & 0x2000 != 0, if h & 0x0040 != 0 { w - 64 } else { w }, &d[2..])
        }
        sign => (sign == 0x4000, i16::from_le_bytes([*d.get(2).ok_or_else(bad)?, *d.get(3).ok_or_else(bad)?]) as i32, &d[4..]),
    };
    let n = digits.len() / 2;
    if n == 0 {
        return Ok(0.0);
    }
    let group = |k: usize| u16::from_le_bytes([digits[2 * k], digits[2 * k + 1]]) as u64;
    // Clinger's fast path: an integer mantissa below 2^53 and a power of ten up to 10^22 are both
    // exact in f64, so one multiplication or division rounds correctly (as the parser would)
    if n <= 4 {
        let (mut m, mut e10) = (0u64, 4 * (weight - (n as i32 - 1)));
        for k in 0..n {
            m = m * 10_000 + group(k);
        }
        while m != 0 && m % 10 == 0 {
            m /= 10;
            e10 += 1;
        }
        if m < (1u64 << 53) && (-22..=22).contains(&e10) {
            const P10: [f64; 23] = [
                1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21,
                1e22,
            ];
            let x = if e10 >= 0 { m as f64 * P10[e10 as usize] } else { m as f64 / P10[(-e10) as usize] };
            return Ok(if negative { -x } else { x });
        }
    }
    let mut s = String::with_capacity(4 * n + 8);
    if negative {
        s.push('-');
    }
    for k in 0..n {
        let g = group(k);
        if k == 0 {
            s.push_str(&g.to_string());
        } else {
            s.push_str(&format!("{g:04}"));
        }
    }
    s.push_str(&format!("e{}", 4 * (weight - (n as i32 - 1))));
    s.parse::<f64>().map_err(|e| format!("numeric digits do not parse: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A numeric in the long format: sign, weight, base-10000 digits.
    fn long(neg: bool, weight: i16, digits: &[u16]) -> Vec<u8> {
        let size = 4 + 4 + 2 * digits.len();
        let mut b = ((size as u32) << 2).to_le_bytes().to_vec();
        b.extend_from_slice(&(if neg { 0x4000u16 } else { 0 }).to_le_bytes());
        b.extend_from_slice(&weight.to_le_bytes());
        for d in digits {
            b.extend_from_slice(&d.to_le_bytes());
        }
        b
    }

    #[test]
    fn numerics_in_both_formats() {
        assert_eq!(numeric_to_f64(&long(false, 0, &[12, 3400])).unwrap(), 12.34);
        assert_eq!(numeric_to_f64(&long(true, -1, &[5])).unwrap(), -0.0005);
        assert_eq!(numeric_to_f64(&long(false, 2, &[1])).unwrap(), 1e8);
        assert_eq!(numeric_to_f64(&long(false, 0, &[])).unwrap(), 0.0);
        // short format, 1-byte varlena header: 0.25 = digits [2500], weight -1, dscale 2
        let h: u16 = 0x8000 | (2 << 7) | 0x0040 | (64 - 1);
        let mut b = vec![((2 + 2 + 1) << 1) as u8 | 1];
        b.extend_from_slice(&h.to_le_bytes());
        b.extend_from_slice(&2500u16.to_le_bytes());
        assert_eq!(numeric_to_f64(&b).unwrap(), 0.25);
        assert!(numeric_to_f64(&[(3 << 1) | 1, 0x00, 0xC0]).unwrap().is_nan());
        assert_eq!(numeric_to_f64(&[(3 << 1) | 1, 0x00, 0xF0]).unwrap(), f64::NEG_INFINITY);
        assert!(numeric_to_f64(&[]).is_err());
        assert!(numeric_to_f64(&long(false, 0, &[1])[..6]).is_err());
    }
}
