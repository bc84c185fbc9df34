//! The BPE training algorithm, independent of Python.
//!
//! It is the same algorithm as `nanochat.bpe.train_bpe` (the book's Python reference), merge for merge:
//! split texts into chunks, count distinct chunks, then repeatedly merge the most frequent adjacent pair
//! (ties: the smallest pair). What makes it fast: chunks are counted in parallel, and pair counts are
//! updated incrementally after each merge (only the words that contain the merged pair change), with a
//! max-heap of candidate pairs whose stale entries are corrected lazily when they reach the top.

use ahash::{AHashMap, AHashSet};
use fancy_regex::Regex;
use rayon::prelude::*;
use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// A pair of adjacent token ids.
pub type Pair = (u32, u32);

/// GPT-4's split pattern with numbers in groups of at most two digits (as nanochat uses).
pub const SPLIT_PATTERN: &str = r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+";

/// Compile a split pattern, with a readable error.
pub fn compile_pattern(pattern: &str) -> Result<Regex, String> {
    Regex::new(pattern).map_err(|e| format!("invalid split pattern {pattern:?}: {e}"))
}

/// Call `f` on each chunk of `text`, in order. fancy-regex gives up on pathological input (its backtracking
/// stack has a fixed size, so a run of a million letters overflows it); that is an error for the caller,
/// never a skipped span: skipping would silently change the counts or drop text from an encoding.
pub fn for_each_chunk<'t>(re: &Regex, text: &'t str, mut f: impl FnMut(&'t str)) -> Result<(), String> {
    for found in re.find_iter(text) {
        match found {
            Ok(m) => f(m.as_str()),
            Err(e) => return Err(format!("the split pattern failed on a text of {} bytes: {e}", text.len())),
        }
    }
    Ok(())
}

/// Count each distinct chunk of `texts` (split by `re`), in parallel over the texts.
pub fn count_chunks(texts: &[String], re: &Regex) -> Result<AHashMap<String, u64>, String> {
    texts
        .par_iter()
        .map(|text| {
            let mut local: AHashMap<String, u64> = AHashMap::new();
            for_each_chunk(re, text, |chunk| *local.entry(chunk.to_owned()).or_insert(0) += 1)?;
            Ok(local)
        })
        .try_reduce(AHashMap::new, |a, b| {
            let (small, mut large) = if a.len() < b.len() { (a, b) } else { (b, a) };
            for (k, v) in small {
                *large.entry(k).or_insert(0) += v;
            }
            Ok(large)
        })
}

/// Replace each occurrence of `pair` in `ids`, left to right and non-overlapping, with `new_id`.
pub fn merge_word(ids: &[u32], pair: Pair, new_id: u32) -> Vec<u32> {
    let mut out = Vec::with_capacity(ids.len());
    let mut i = 0;
    while i < ids.len() {
        if i + 1 < ids.len() && ids[i] == pair.0 && ids[i + 1] == pair.1 {
            out.push(new_id);
            i += 2;
        } else {
            out.push(ids[i]);
            i += 1;
        }
    }
    out
}

/// A heap entry: a pair and the count it had when pushed. The heap pops the highest count first,
/// and among equal counts the smallest pair, which is the reference's tie-breaking rule.
#[derive(Eq, PartialEq)]
struct Candidate {
    count: i64,
    pair: Pair,
}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        self.count.cmp(&other.count).then_with(|| other.pair.cmp(&self.pair))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Learn up to `num_merges` merges from distinct `words` (token ids) with their `counts`.
/// Merge i creates token id 256 + i. Stops early when no pair occurs any more.
pub fn train(mut words: Vec<Vec<u32>>, counts: &[u64], num_merges: usize) -> Vec<Pair> {
    let mut pair_counts: AHashMap<Pair, i64> = AHashMap::new();
    let mut words_with: AHashMap<Pair, AHashSet<usize>> = AHashMap::new();
    for (i, word) in words.iter().enumerate() {
        for w in word.windows(2) {
            let pair = (w[0], w[1]);
            *pair_counts.entry(pair).or_insert(0) += counts[i] as i64;
            words_with.entry(pair).or_default().insert(i);
        }
    }
    let mut heap: BinaryHeap<Candidate> =
        pair_counts.iter().map(|(&pair, &count)| Candidate { count, pair }).collect();

    let mut merges = Vec::with_capacity(num_merges);
    while merges.len() < num_merges {
        let top = match heap.pop() {
            Some(top) => top,
            None => break,
        };
        let current = pair_counts.get(&top.pair).copied().unwrap_or(0);
        if current != top.count {
            // Stale: the count changed since this entry was pushed. Re-queue it with the true count.
            if current > 0 {
                heap.push(Candidate { count: current, pair: top.pair });
            }
            continue;
        }
        if current <= 0 {
            break;
        }
        let pair = top.pair;
        let new_id = 256 + merges.len() as u32;
        merges.push(pair);

        // Apply the merge to every word that (still) contains the pair, collecting the exact change
        // of the pair counts: pairs of the new word minus pairs of the old word, times its count.
        let mut delta: AHashMap<Pair, i64> = AHashMap::new();
        let mut gained: Vec<(Pair, usize)> = Vec::new();
        let mut indices: Vec<usize> = words_with.remove(&pair).map(|s| s.into_iter().collect()).unwrap_or_default();
        indices.sort_unstable();
        for i in indices {
            let old = &words[i];
            if !old.windows(2).any(|w| (w[0], w[1]) == pair) {
                continue; // a stale membership: an earlier merge already consumed the pair here
            }
            let new = merge_word(old, pair, new_id);
            let n = counts[i] as i64;
            for w in old.windows(2) {
                *delta.entry((w[0], w[1])).or_insert(0) -= n;
            }
            for w in new.windows(2) {
                let p = (w[0], w[1]);
                *delta.entry(p).or_insert(0) += n;
                gained.push((p, i));
            }
            words[i] = new;
        }
        for (p, i) in gained {
            if p != pair {
                words_with.entry(p).or_default().insert(i);
            }
        }
        for (p, d) in delta {
            if d == 0 {
                continue;
            }
            let c = pair_counts.entry(p).or_insert(0);
            *c += d;
            if d > 0 {
                heap.push(Candidate { count: *c, pair: p });
            }
        }
        pair_counts.remove(&pair);
    }
    merges
}

/// Encode one chunk's bytes with learned `ranks` (pair -> new id): repeatedly merge the present pair that was
/// learned first, as tiktoken and the Python reference do.
pub fn encode_chunk(bytes: &[u8], ranks: &AHashMap<Pair, u32>) -> Vec<u32> {
    let mut ids: Vec<u32> = bytes.iter().map(|&b| b as u32).collect();
    while ids.len() > 1 {
        let best = ids.windows(2).filter_map(|w| ranks.get(&(w[0], w[1])).map(|&r| (r, (w[0], w[1])))).min();
        match best {
            Some((rank, pair)) => ids = merge_word(&ids, pair, rank),
            None => break,
        }
    }
    ids
}

/// The bytes of every token: 256 single bytes, then each merge's two halves joined.
pub fn token_bytes(merges: &[Pair]) -> Vec<Vec<u8>> {
    let mut vocab: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
    for &(a, b) in merges {
        let mut bytes = vocab[a as usize].clone();
        bytes.extend_from_slice(&vocab[b as usize]);
        vocab.push(bytes);
    }
    vocab
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference algorithm, literally: recount every pair before every merge.
    fn train_by_recounting(mut words: Vec<Vec<u32>>, counts: &[u64], num_merges: usize) -> Vec<Pair> {
        let mut merges = Vec::new();
        for k in 0..num_merges {
            let mut stats: AHashMap<Pair, u64> = AHashMap::new();
            for (w, &n) in words.iter().zip(counts) {
                for p in w.windows(2) {
                    *stats.entry((p[0], p[1])).or_insert(0) += n;
                }
            }
            let pair = match stats.iter().max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0))) {
                Some((&pair, _)) => pair,
                None => break,
            };
            words = words.iter().map(|w| merge_word(w, pair, 256 + k as u32)).collect();
            merges.push(pair);
        }
        merges
    }

    fn words_of(text: &str) -> (Vec<Vec<u32>>, Vec<u64>) {
        let re = compile_pattern(SPLIT_PATTERN).unwrap();
        let counted = count_chunks(&[text.to_string()], &re).unwrap();
        let mut items: Vec<_> = counted.into_iter().collect();
        items.sort();
        (items.iter().map(|(s, _)| s.bytes().map(u32::from).collect()).collect(), items.iter().map(|(_, n)| *n).collect())
    }

    #[test]
    fn pattern_splits_words_and_two_digit_numbers() {
        let re = compile_pattern(SPLIT_PATTERN).unwrap();
        let chunks: Vec<&str> = re.find_iter("Hello world! It's 2026.").map(|m| m.unwrap().as_str()).collect();
        assert_eq!(chunks, vec!["Hello", " world", "!", " It", "'s", " ", "20", "26", "."]);
    }

    #[test]
    fn pathological_text_is_an_error_not_a_hang() {
        let re = compile_pattern(SPLIT_PATTERN).unwrap();
        let text = "a".repeat(2_000_000);
        let err = count_chunks(&[text.clone()], &re).unwrap_err();
        assert!(err.contains("split pattern failed on a text of 2000000 bytes"), "{err}");
        assert!(for_each_chunk(&re, &text, |_| {}).is_err());
        let mut chunks = Vec::new();
        for_each_chunk(&re, "fine text", |c| chunks.push(c)).unwrap();
        assert_eq!(chunks, vec!["fine", " text"]);
    }

    #[test]
    fn merge_is_left_to_right_and_non_overlapping() {
        assert_eq!(merge_word(&[1, 1, 1], (1, 1), 9), vec![9, 1]);
        assert_eq!(merge_word(&[5, 6, 5, 6, 7], (5, 6), 300), vec![300, 300, 7]);
    }

    #[test]
    fn overlapping_pairs_are_counted_and_ties_go_to_the_smallest_pair() {
        // "aaabdaaabac": aa x4 first; then (256,a) and (a,b) tie at 2 and (a,b) is smaller.
        let (words, counts) = words_of("aaabdaaabac");
        assert_eq!(train(words, &counts, 3), vec![(97, 97), (97, 98), (256, 257)]);
    }

    #[test]
    fn incremental_counts_equal_recounting() {
        let mut seed: u64 = 42;
        let mut rand = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20 {
            let alphabet = ["a", "b", "c", "ab", " ", "é", "1", "22", "\n"];
            let text: String = (0..400).map(|_| alphabet[(rand() % alphabet.len() as u64) as usize]).collect();
            let (words, counts) = words_of(&text);
            assert_eq!(train(words.clone(), &counts, 60), train_by_recounting(words, &counts, 60));
        }
    }

    #[test]
    fn encode_round_trips_through_token_bytes() {
        let text = "the cat sat on the mat, the cat sat 123456 times. Ünïcödé 👋";
        let (words, counts) = words_of(text);
        let merges = train(words, &counts, 40);
        let ranks: AHashMap<Pair, u32> = merges.iter().enumerate().map(|(i, &p)| (p, 256 + i as u32)).collect();
        let vocab = token_bytes(&merges);
        let re = compile_pattern(SPLIT_PATTERN).unwrap();
        let mut bytes = Vec::new();
        let mut n_tokens = 0;
        for m in re.find_iter(text) {
            for id in encode_chunk(m.unwrap().as_str().as_bytes(), &ranks) {
                bytes.extend_from_slice(&vocab[id as usize]);
                n_tokens += 1;
            }
        }
        assert_eq!(String::from_utf8(bytes).unwrap(), text);
        assert!(n_tokens < text.len());
    }
}
