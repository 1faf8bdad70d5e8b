//! The fuzz targets on the stable build, in `make test`: every committed
//! corpus input (fuzz/corpus/<target>/) through its target, then a bounded
//! number of cheap mutations of them (bit flips, truncations, splices),
//! seeded, so a failure is reproducible. The real campaign is `make fuzz`
//! (libFuzzer, nightly); this keeps every target building and its
//! assertions true on what the corpus reached.

use std::path::{Path, PathBuf};

use portcullis::fuzzing::targets::ALL;

/// Mutations per target: a few seconds in a debug build.
const MUTATIONS: usize = 3_000;

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// xorshift64*: small, seeded, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut v = seeds[rng.below(seeds.len())].clone();
    for _ in 0..=rng.below(4) {
        match rng.below(5) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => v.truncate(rng.below(v.len())),
            2 => {
                let other = &seeds[rng.below(seeds.len())];
                let at = rng.below(v.len() + 1);
                let from = rng.below(other.len() + 1);
                v.splice(at..at, other[from..].iter().copied());
            }
            3 => {
                let at = rng.below(v.len() + 1);
                let byte = b"\0\"\\{}[],:\r\n\xff\xc3u0"[rng.below(15)];
                v.insert(at, byte);
            }
            _ if !v.is_empty() => {
                let i = rng.below(v.len());
                v.remove(i);
            }
            _ => {}
        }
    }
    v
}

#[test]
fn every_target_runs_its_corpus_and_mutations() {
    let mut report = Vec::new();
    for (name, run) in ALL {
        let seeds = corpus(name);
        assert!(!seeds.is_empty(), "{name}: no corpus");
        for input in &seeds {
            run(input);
        }
        let mut rng = Rng(0x5eed_0000 ^ (name.len() as u64 * 7919));
        for _ in 0..MUTATIONS {
            run(&mutate(&mut rng, &seeds));
        }
        report.push(format!(
            "{name}: {} corpus inputs, {MUTATIONS} mutations",
            seeds.len()
        ));
    }
    println!("{}", report.join("\n"));
}
