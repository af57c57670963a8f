//! With the `lstm` feature, torch-sys reports libtorch's library directory
//! (`DEP_TCH_LIBTORCH_LIB`); put it on the rpath of `derm` and the tests so they run without
//! LD_LIBRARY_PATH. Without the feature this does nothing.

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
