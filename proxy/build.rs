//! Link settings for the `portcullis` binary.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let var = |name| std::env::var(name).unwrap_or_default();
    // x86_64 only: there rustc links with its own lld, which packs them;
    // elsewhere the system's GNU ld may not, and the gain is not measured.
    if var("CARGO_CFG_TARGET_OS") == "linux"
        && var("CARGO_CFG_TARGET_ENV") == "gnu"
        && var("CARGO_CFG_TARGET_ARCH") == "x86_64"
    {
        // Packed relative relocations (DT_RELR). The binary is
        // position-independent, and its table of relative relocations was
        // a megabyte (24 bytes for each of about 43 000 pointers in
        // vtables and static tables): the loader reads all of it at
        // start-up, and those pages stayed in the sidecar's RSS for its
        // whole life. Packed, the table is a few kilobytes and the binary
        // keeps its ASLR. Needs glibc 2.36 or later at run time (Debian 12,
        // the distroless cc-debian12 image); an older loader refuses the
        // binary at start with a missing `GLIBC_ABI_DT_RELR` version,
        // never runs it half-relocated.
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
