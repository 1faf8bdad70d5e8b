//! Text helpers for the guest glue, kept outside `guest` so they are
//! tested on the host.

/// `a == b`, eight bytes at a time. The configuration comes with every
/// call and is compared with the one parsed; wasm has no vector compare,
/// and the `memcmp` a `==` compiles to walks byte by byte, which was 7 %
/// of a warm arg-guard evaluation for its 100-byte configuration.
pub(crate) fn same_text(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let (mut wa, mut wb) = (a.chunks_exact(8), b.chunks_exact(8));
    let words = wa
        .by_ref()
        .zip(wb.by_ref())
        .all(|(x, y)| word(x) == word(y));
    words && wa.remainder() == wb.remainder()
}

fn word(chunk: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(chunk);
    u64::from_le_bytes(w)
}

#[cfg(test)]
mod tests {
    use super::same_text;

    #[test]
    fn same_text_is_equality() {
        let base = "{\"constraints\":[{\"tools\":[\"echo\"],\"pointer\":\"/text\"}]}";
        assert!(same_text(base, base));
        assert!(same_text("", ""));
        // A difference in any word or in the remainder, and a prefix.
        for i in 0..base.len() {
            let mut other = base.as_bytes().to_vec();
            other[i] ^= 1;
            let other = String::from_utf8(other).unwrap();
            assert!(!same_text(base, &other), "byte {i}");
            assert!(!same_text(base, &base[..i]), "prefix {i}");
        }
    }
}
