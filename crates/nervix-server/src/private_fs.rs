//! Folders for secrets: the data folder holds the signing keys and the SQLite file, so what
//! this process creates there is open to its own user only.

use std::path::Path;

/// `create_dir_all`, with mode 0700 for every folder it creates. A folder that exists already
/// keeps its mode.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}
