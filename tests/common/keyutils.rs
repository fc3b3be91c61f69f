//! The Linux kernel key store for tests: a fresh session keyring per test
//! thread, and a guard that removes an entry when a test ends.

use std::process::Command;

/// Makes the calling thread join a new anonymous session keyring, which
/// the keyrun processes it starts inherit. keyrun's keyutils store needs a
/// session keyring, which a test process under CI or in a container lacks.
/// A fresh one per test also keeps tests apart.
pub fn join_session_keyring() {
    // From <linux/keyctl.h>: KEYCTL_JOIN_SESSION_KEYRING, and a null name
    // requests an anonymous keyring.
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    // SAFETY: the call takes an integer and a null pointer and writes no
    // memory of this process. Session keyrings belong to the calling
    // thread's credentials, so other test threads are not affected.
    let id = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_JOIN_SESSION_KEYRING,
            std::ptr::null::<libc::c_char>(),
        )
    };
    assert!(
        id >= 0,
        "cannot join a session keyring (is keyctl blocked by seccomp?): {}",
        std::io::Error::last_os_error()
    );
}

/// Returns a unique entry name for one test.
pub fn entry_name(test: &str) -> String {
    format!("KEYRUN_TEST_{test}_{}", &super::random_key()[8..20])
}

/// Deletes the keyutils entry `name` on drop, so a failed test leaves no
/// key behind in the persistent keyring.
pub struct EntryGuard {
    pub name: String,
}

impl Drop for EntryGuard {
    fn drop(&mut self) {
        let _ = Command::new(super::keyrun_bin())
            .args(["delete", &self.name, "--store", "keyutils", "-q"])
            .output();
    }
}
