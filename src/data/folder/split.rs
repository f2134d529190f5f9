//! The seeded, stratified train / validation / test split of a class-folder data set.
//!
//! The Keras flowers write-up splits 80/10/10 at random (`train_test_split` twice, with
//! `int(0.1 · N)` images each for validation and test). A random split of a small set can leave
//! a class nearly absent from the validation or test part; a stratified split (scikit-learn's
//! `stratify=`) keeps every class's share in every part. For each class `c` with `n_c` images:
//!
//! - its images are shuffled by a generator seeded with `derive_seed(seed, c)` (so adding a
//!   class does not reshuffle the others);
//! - `round(val_fraction · n_c)` of them go to validation, `round(test_fraction · n_c)` to
//!   test, the rest (at least one) to training, in the shuffled order.
//!
//! Each part is then shuffled as a whole (so its first N images, `--train-limit N`, sample
//! every class). The same labels and seed give the same split.

use crate::error::{Error, Result};
use crate::rng::{derive_seed, Rng};

/// Indices into the data set of each part.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Split {
    pub train: Vec<usize>,
    pub val: Vec<usize>,
    pub test: Vec<usize>,
}

/// Split `labels` (one per image, each `< classes`) as the module documentation says.
pub fn stratified(labels: &[u8], classes: usize, val_fraction: f64, test_fraction: f64, seed: u64) -> Result<Split> {
    for (name, f) in [("validation", val_fraction), ("test", test_fraction)] {
        if !(0.0..1.0).contains(&f) {
            return Err(Error::config(format!(
                "the {name} fraction must be in [0, 1), found {f}"
            )));
        }
    }
    if val_fraction + test_fraction >= 1.0 {
        return Err(Error::config(format!(
            "validation ({val_fraction}) and test ({test_fraction}) fractions leave nothing to train on"
        )));
    }
    let mut split = Split::default();
    for c in 0..classes {
        let mut idx: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] as usize == c).collect();
        if idx.is_empty() {
            continue;
        }
        Rng::new(derive_seed(seed, c as u64)).shuffle(&mut idx);
        let n = idx.len();
        let n_val = (val_fraction * n as f64).round() as usize;
        let n_test = (test_fraction * n as f64).round() as usize;
        // One training image per class at least: a class the model never sees cannot be learnt.
        let (n_val, n_test) = match n_val + n_test >= n {
            true => {
                let spare = n - 1;
                let v = n_val.min(spare);
                (v, n_test.min(spare - v))
            }
            false => (n_val, n_test),
        };
        split.val.extend_from_slice(&idx[..n_val]);
        split.test.extend_from_slice(&idx[n_val..n_val + n_test]);
        split.train.extend_from_slice(&idx[n_val + n_test..]);
    }
    let mut rng = Rng::new(derive_seed(seed, u64::MAX));
    for part in [&mut split.train, &mut split.val, &mut split.test] {
        rng.shuffle(part);
    }
    Ok(split)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_keeps_its_share_and_the_seed_repeats_it() {
        // 3 classes of 50, 30 and 20 images.
        let labels: Vec<u8> = (0..100)
            .map(|i| {
                if i < 50 {
                    0
                } else if i < 80 {
                    1
                } else {
                    2
                }
            })
            .collect();
        let s = stratified(&labels, 3, 0.1, 0.1, 42).unwrap();
        let count = |part: &[usize], c: u8| part.iter().filter(|&&i| labels[i] == c).count();
        for (c, n) in [(0u8, 50usize), (1, 30), (2, 20)] {
            let want = (0.1 * n as f64).round() as usize;
            assert_eq!((count(&s.val, c), count(&s.test, c)), (want, want), "class {c}");
            assert_eq!(count(&s.train, c), n - 2 * want);
        }
        let mut all: Vec<usize> = s.train.iter().chain(&s.val).chain(&s.test).copied().collect();
        all.sort();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        assert_eq!(stratified(&labels, 3, 0.1, 0.1, 42).unwrap(), s);
        assert_ne!(stratified(&labels, 3, 0.1, 0.1, 43).unwrap(), s);
        // A class of one image stays in training.
        let s = stratified(&[0, 1, 1, 1, 1, 1, 1, 1, 1, 1], 2, 0.5, 0.4, 1).unwrap();
        assert!(s.train.contains(&0));
        assert!(stratified(&labels, 3, 0.5, 0.5, 1).is_err());
    }
}
