//! rustbpe: a fast byte-level BPE trainer for nanochat, usable from Python.
//!
//! The algorithm lives in `core` (plain Rust, tested with `cargo test`); this file is the thin Python layer.

pub mod core;

#[cfg(feature = "python")]
mod python {
    use crate::core::{self, Pair};
    use ahash::AHashMap;
    use pyo3::exceptions::{PyTypeError, PyValueError};
    use pyo3::prelude::*;
    use pyo3::types::PyBytes;

    /// A BPE tokenizer trainer: `train_from_iterator`, then read the merges or encode text.
    #[pyclass]
    struct Tokenizer {
        pattern: String,
        merges: Vec<Pair>,
        ranks: AHashMap<Pair, u32>,
    }

    #[pymethods]
    impl Tokenizer {
        #[new]
        fn new() -> Self {
            Tokenizer { pattern: core::SPLIT_PATTERN.to_string(), merges: Vec::new(), ranks: AHashMap::new() }
        }

        /// Train on the texts an iterator yields, until `vocab_size` tokens (256 bytes + merges).
        /// Texts are pulled `buffer_size` at a time; counting and merging run without the GIL.
        #[args(buffer_size = "8192", pattern = "None")] // pyo3 0.17 spelling of the Python signature
        fn train_from_iterator(
            &mut self,
            py: Python<'_>,
            iterator: &PyAny,
            vocab_size: usize,
            buffer_size: usize,
            pattern: Option<String>,
        ) -> PyResult<()> {
            if vocab_size < 256 {
                return Err(PyValueError::new_err(format!(
                    "vocab_size must be at least 256 (one token per byte value), got {vocab_size}"
                )));
            }
            let pattern = pattern.unwrap_or_else(|| core::SPLIT_PATTERN.to_string());
            let re = core::compile_pattern(&pattern).map_err(PyValueError::new_err)?;
            let buffer_size = buffer_size.max(1);
            let mut totals: AHashMap<String, u64> = AHashMap::new();
            let mut buffer: Vec<String> = Vec::with_capacity(buffer_size);
            let mut items = iterator.iter()?;
            loop {
                buffer.clear();
                for item in items.by_ref().take(buffer_size) {
                    let item = item?;
                    let text: String = item.extract().map_err(|_| {
                        PyTypeError::new_err(format!(
                            "train_from_iterator expects str items, got {}",
                            item.get_type().name().unwrap_or("?")
                        ))
                    })?;
                    buffer.push(text);
                }
                if buffer.is_empty() {
                    break;
                }
                let counted = py.allow_threads(|| core::count_chunks(&buffer, &re)).map_err(PyValueError::new_err)?;
                for (chunk, n) in counted {
                    *totals.entry(chunk).or_insert(0) += n;
                }
            }
            let merges = py.allow_threads(|| {
                // Sorted, so runs are reproducible regardless of hash order (ties are broken by pair anyway).
                let mut items: Vec<(String, u64)> = totals.into_iter().collect();
                items.sort_unstable();
                let words: Vec<Vec<u32>> = items.iter().map(|(s, _)| s.bytes().map(u32::from).collect()).collect();
                let counts: Vec<u64> = items.iter().map(|(_, n)| *n).collect();
                core::train(words, &counts, vocab_size - 256)
            });
            self.ranks = merges.iter().enumerate().map(|(i, &p)| (p, 256 + i as u32)).collect();
            self.merges = merges;
            self.pattern = pattern;
            Ok(())
        }

        /// The split pattern used for training and encoding.
        fn get_pattern(&self) -> String {
            self.pattern.clone()
        }

        /// The learned merges, in order: merge i made token 256 + i.
        fn get_merges(&self) -> Vec<Pair> {
            self.merges.clone()
        }

        /// (token bytes, rank) for every token, in id order: what a tiktoken Encoding is built from.
        fn get_mergeable_ranks<'py>(&self, py: Python<'py>) -> Vec<(&'py PyBytes, u32)> {
            core::token_bytes(&self.merges).iter().enumerate().map(|(i, b)| (PyBytes::new(py, b), i as u32)).collect()
        }

        /// Token ids of `text`.
        fn encode(&self, py: Python<'_>, text: &str) -> PyResult<Vec<u32>> {
            let re = core::compile_pattern(&self.pattern).map_err(PyValueError::new_err)?;
            py.allow_threads(|| {
                let mut ids = Vec::new();
                core::for_each_chunk(&re, text, |chunk| ids.extend(core::encode_chunk(chunk.as_bytes(), &self.ranks)))?;
                Ok::<_, String>(ids)
            })
            .map_err(PyValueError::new_err)
        }

        /// Number of tokens: 256 + number of merges.
        #[getter]
        fn vocab_size(&self) -> usize {
            256 + self.merges.len()
        }
    }

    #[pymodule]
    fn rustbpe(_py: Python<'_>, m: &PyModule) -> PyResult<()> {
        m.add_class::<Tokenizer>()?;
        Ok(())
    }
}
