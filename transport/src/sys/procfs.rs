//! What the service reads of other processes in `/proc`.

/// The text of `/proc/<pid>/status`, if the process exists and may be read.
pub(crate) fn status_text(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/status")).ok()
}

/// Whether process `pid` maps a file whose inode is `ino` (it appears in
/// `/proc/<pid>/maps`). False if the process is gone or its maps cannot be read.
pub(crate) fn maps_inode(pid: u32, ino: u64) -> bool {
    let ino = ino.to_string();
    std::fs::read_to_string(format!("/proc/{pid}/maps")).is_ok_and(|maps| {
        maps.lines()
            .any(|l| l.split_whitespace().nth(4) == Some(ino.as_str()))
    })
}
