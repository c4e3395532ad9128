//! Sets `OCTOPUS_OPERATOR_VERSION`, what `octopus-operator --version` prints: the crate
//! version, plus the git revision when the build passes one in `OCTOPUS_OPERATOR_REVISION`
//! (`make image` does). Read from the environment, not from git, so builds without a
//! checkout (a container build context) work and the output depends only on the inputs.
fn main() {
    println!("cargo:rerun-if-env-changed=OCTOPUS_OPERATOR_REVISION");
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let full = match std::env::var("OCTOPUS_OPERATOR_REVISION") {
        Ok(revision) if !revision.is_empty() => format!("{version} ({revision})"),
        _ => version,
    };
    println!("cargo:rustc-env=OCTOPUS_OPERATOR_VERSION={full}");
}
