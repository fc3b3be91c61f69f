//! `keyring:NAME`: a value in the operating system's credential store,
//! under service `keyrun` and account NAME.
//!
//! The store is the login Keychain on macOS. On Linux it is the Secret
//! Service (GNOME Keyring, KWallet) when a D-Bus session bus is present and
//! the service responds on it, else the kernel's keyutils store: keys in
//! kernel memory, linked to the session keyring and, where the kernel
//! offers one, to the user's persistent keyring, and gone after a reboot.
//! `?store=` or `KEYRUN_KEYRING_STORE` picks a store explicitly.

use ::keyring::Entry;

use super::{Context, ErrorKind, Request, Resolved, Source, SourceError};
use crate::secret::Secret;

/// The service name under which every keyrun entry is stored.
pub const SERVICE: &str = "keyrun";

/// The environment variable that picks the store, like `?store=`.
pub const STORE_ENV: &str = "KEYRUN_KEYRING_STORE";

/// The store a command or reference requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreChoice {
    /// The Keychain on macOS; the Secret Service, else keyutils, on Linux.
    Auto,
    /// The macOS login Keychain.
    Keychain,
    /// The freedesktop Secret Service (GNOME Keyring, KWallet).
    SecretService,
    /// The Linux kernel key store.
    Keyutils,
}

impl StoreChoice {
    pub fn parse(text: &str) -> Option<StoreChoice> {
        match text {
            "auto" => Some(StoreChoice::Auto),
            "keychain" => Some(StoreChoice::Keychain),
            "secret-service" => Some(StoreChoice::SecretService),
            "keyutils" => Some(StoreChoice::Keyutils),
            _ => None,
        }
    }

    /// Reads the choice from `KEYRUN_KEYRING_STORE`, `auto` when it is unset.
    pub fn from_env() -> Result<StoreChoice, SourceError> {
        match std::env::var(STORE_ENV) {
            Ok(text) if !text.is_empty() => StoreChoice::parse(&text).ok_or_else(|| {
                SourceError::new(
                    ErrorKind::Invalid,
                    format!("{STORE_ENV}={text:?} is not a store; use auto, keychain, secret-service or keyutils"),
                )
            }),
            _ => Ok(StoreChoice::Auto),
        }
    }
}

/// A credential store keyrun can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    Keychain,
    SecretService,
    Keyutils,
}

impl Store {
    pub fn name(self) -> &'static str {
        match self {
            Store::Keychain => "the macOS Keychain",
            Store::SecretService => "the Secret Service",
            Store::Keyutils => "the kernel keyring (keyutils)",
        }
    }

    /// Describes how long the store keeps an entry.
    pub fn lifetime(self) -> &'static str {
        match self {
            Store::Keychain | Store::SecretService => "until you delete it",
            Store::Keyutils => {
                "in kernel memory until reboot; after a logout only while the persistent keyring lasts \
                 (/proc/sys/kernel/keys/persistent_keyring_expiry, 3 days by default)"
            }
        }
    }
}

pub struct KeyringSource;

impl Source for KeyringSource {
    fn resolve(
        &self,
        requests: &[&Request],
        _context: &mut Context<'_>,
    ) -> Vec<Result<Resolved, SourceError>> {
        requests
            .iter()
            .map(|request| resolve_one(request))
            .collect()
    }
}

fn resolve_one(request: &Request) -> Result<Resolved, SourceError> {
    let reference = &request.reference;
    let invalid = |message: String| SourceError::new(ErrorKind::Invalid, message);

    if let Some(field) = &reference.field {
        return Err(invalid(format!(
            "{reference}: keyring: entries are single values and have no field {field:?}; remove #{field}"
        )));
    }
    let mut choice = StoreChoice::from_env()?;
    for (option, value) in &reference.options {
        if option != "store" {
            return Err(invalid(format!(
                "{reference}: unknown option {option:?}; keyring: takes only ?store=auto|keychain|secret-service|keyutils"
            )));
        }
        choice = StoreChoice::parse(value).ok_or_else(|| {
            invalid(format!(
                "{reference}: store={value:?} is not a store; use auto, keychain, secret-service or keyutils"
            ))
        })?;
    }
    check_account(&reference.rest).map_err(|message| invalid(format!("{reference}: {message}")))?;

    tracing::debug!(var = %request.var, source = "keyring", account = %reference.rest, "reading entry");
    let (value, store) = read(&reference.rest, choice)?;
    tracing::debug!(var = %request.var, store = store.name(), "entry read");
    Ok(Resolved::new(value))
}

/// Checks that an account name can be written in a `keyring:` reference
/// as it is.
pub fn check_account(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the entry name is empty".to_string());
    }
    if name.len() > 200 {
        return Err("the entry name is longer than 200 bytes".to_string());
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !c.is_ascii_graphic() || matches!(c, '?' | '#' | '%'))
    {
        return Err(format!(
            "the entry name {name:?} contains {bad:?}; use letters, digits and punctuation other than ? # %"
        ));
    }
    Ok(())
}

/// Reads the entry `name` and returns it with the store that held it.
pub fn read(name: &str, choice: StoreChoice) -> Result<(Secret, Store), SourceError> {
    // `get_secret` returns the bytes in a fresh vector, which moves into the
    // zeroizing secret without a copy.
    with_store(name, choice, |entry| entry.get_secret().map(Secret::new))
}

/// Stores `value` as the entry `name` and returns the store it went to.
pub fn write(name: &str, value: &Secret, choice: StoreChoice) -> Result<Store, SourceError> {
    with_store(name, choice, |entry| entry.set_secret(value.expose())).map(|((), store)| store)
}

/// Deletes the entry `name` and returns the store that held it.
pub fn delete(name: &str, choice: StoreChoice) -> Result<Store, SourceError> {
    with_store(name, choice, |entry| entry.delete_credential()).map(|((), store)| store)
}

/// Runs `operation` on the entry in the first store that responds. A
/// platform failure (no Secret Service on the bus) moves on to the next
/// store, but every other result, "no entry" included, is final.
fn with_store<T>(
    name: &str,
    choice: StoreChoice,
    operation: impl Fn(&Entry) -> ::keyring::Result<T>,
) -> Result<(T, Store), SourceError> {
    let reference = format!("keyring:{name}");
    let stores = candidates(choice).map_err(|message| {
        SourceError::new(ErrorKind::Invalid, format!("{reference}: {message}"))
    })?;
    let mut skipped: Vec<String> = Vec::new();

    for (index, &store) in stores.iter().enumerate() {
        let last = index + 1 == stores.len();
        if store == Store::Keyutils && !has_session_keyring() {
            return Err(SourceError::new(
                ErrorKind::Denied,
                format!(
                    "{reference}: this process has no session keyring of its own (as in a container, \
                     a cron job or su without pam_keyinit), so {} cannot keep an entry; run keyrun \
                     inside `keyctl session` (entries then last while that session and the persistent \
                     keyring do), or use the Secret Service{}",
                    store.name(),
                    if skipped.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", skipped.join("; "))
                    }
                ),
            ));
        }
        let result = entry(store, name).and_then(|entry| operation(&entry));
        match result {
            Ok(value) => return Ok((value, store)),
            Err(::keyring::Error::PlatformFailure(err)) if !last => {
                tracing::debug!(store = store.name(), error = %err, "store unavailable, trying the next");
                skipped.push(format!("{} failed: {err}", store.name()));
            }
            Err(err) => return Err(describe_error(&reference, name, store, err, &skipped)),
        }
    }
    // `candidates` never returns an empty list.
    Err(SourceError::new(
        ErrorKind::Invalid,
        format!("{reference}: no credential store is available"),
    ))
}

/// Lists the stores to try, in order, for a choice on this platform.
fn candidates(choice: StoreChoice) -> Result<Vec<Store>, String> {
    let unsupported = |store: Store| {
        Err(format!(
            "{} is not available on this system; use store=auto",
            store.name()
        ))
    };
    match choice {
        StoreChoice::Keychain if cfg!(target_os = "macos") => Ok(vec![Store::Keychain]),
        StoreChoice::Keychain => unsupported(Store::Keychain),
        StoreChoice::SecretService if cfg!(target_os = "linux") => Ok(vec![Store::SecretService]),
        StoreChoice::SecretService => unsupported(Store::SecretService),
        StoreChoice::Keyutils if cfg!(target_os = "linux") => Ok(vec![Store::Keyutils]),
        StoreChoice::Keyutils => unsupported(Store::Keyutils),
        StoreChoice::Auto if cfg!(target_os = "macos") => Ok(vec![Store::Keychain]),
        StoreChoice::Auto if cfg!(target_os = "linux") => {
            if session_bus_present() {
                Ok(vec![Store::SecretService, Store::Keyutils])
            } else {
                Ok(vec![Store::Keyutils])
            }
        }
        StoreChoice::Auto => Err(
            "keyrun supports the macOS Keychain and, on Linux, the Secret Service and keyutils only"
                .to_string(),
        ),
    }
}

/// Tells whether a D-Bus session bus is there to ask for the Secret
/// Service. Without one (SSH sessions, containers, CI) keyrun goes straight
/// to keyutils and starts no D-Bus client at all.
fn session_bus_present() -> bool {
    if std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some_and(|v| !v.is_empty()) {
        return true;
    }
    std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|v| !v.is_empty())
        .is_some_and(|dir| std::path::Path::new(&dir).join("bus").exists())
}

/// Tells whether this process has a session keyring other than the
/// user's default one. The `keyring` crate's keyutils store (3.6) adds the
/// key to the session keyring and then links it into the persistent
/// keyring, and without a session keyring that link fails with "access
/// denied", which the crate reports as "no entry".
#[cfg(target_os = "linux")]
fn has_session_keyring() -> bool {
    // From <linux/keyctl.h>.
    const KEYCTL_GET_KEYRING_ID: libc::c_long = 0;
    const KEY_SPEC_SESSION_KEYRING: libc::c_long = -3;
    const KEY_SPEC_USER_SESSION_KEYRING: libc::c_long = -5;

    let lookup = |id: libc::c_long| {
        // SAFETY: KEYCTL_GET_KEYRING_ID with create = 0 takes two integers
        // and touches no memory of this process.
        unsafe {
            libc::syscall(
                libc::SYS_keyctl,
                KEYCTL_GET_KEYRING_ID,
                id,
                0 as libc::c_long,
            )
        }
    };
    let session = lookup(KEY_SPEC_SESSION_KEYRING);
    let user_session = lookup(KEY_SPEC_USER_SESSION_KEYRING);
    tracing::debug!(session, user_session, "keyutils keyrings");
    session >= 0 && session != user_session
}

#[cfg(not(target_os = "linux"))]
fn has_session_keyring() -> bool {
    true
}

#[cfg(target_os = "linux")]
fn entry(store: Store, name: &str) -> ::keyring::Result<Entry> {
    use ::keyring::keyutils::KeyutilsCredential;
    use ::keyring::secret_service::SsCredential;

    match store {
        // NOTE: the Secret Service client (zbus with async-io) runs its
        // executor and I/O reactor on threads of its own, and the memory
        // test covers the keyutils store only, so stack copies on those
        // threads are unverified.
        Store::SecretService => Ok(Entry::new_with_credential(Box::new(
            SsCredential::new_with_target(None, SERVICE, name)?,
        ))),
        Store::Keyutils => Ok(Entry::new_with_credential(Box::new(
            KeyutilsCredential::new_with_target(None, SERVICE, name)?,
        ))),
        Store::Keychain => Err(::keyring::Error::Invalid(
            "store".to_string(),
            "the Keychain exists on macOS only".to_string(),
        )),
    }
}

#[cfg(not(target_os = "linux"))]
fn entry(_store: Store, name: &str) -> ::keyring::Result<Entry> {
    // On macOS the crate's default store is the Keychain.
    Entry::new(SERVICE, name)
}

/// Turns the crate's error into keyrun's, with what to do next. None of the
/// crate's errors that reach here carries the value: `BadEncoding` does,
/// and only `get_password` returns it, which keyrun never calls.
fn describe_error(
    reference: &str,
    name: &str,
    store: Store,
    err: ::keyring::Error,
    skipped: &[String],
) -> SourceError {
    use ::keyring::Error as E;

    let tried = if skipped.is_empty() {
        String::new()
    } else {
        format!(" (before it, {})", skipped.join("; "))
    };
    let store_name = store.name();
    match err {
        E::NoEntry => {
            let reboot = if store == Store::Keyutils {
                "; keyutils entries are gone after a reboot"
            } else {
                ""
            };
            SourceError::new(
                ErrorKind::NotFound,
                format!(
                    "{reference}: no entry for service {SERVICE}, account {name} in {store_name}{tried}; \
                     store one with `keyrun set {name}`{reboot}"
                ),
            )
        }
        E::NoStorageAccess(cause) => SourceError::new(
            ErrorKind::Denied,
            format!(
                "{reference}: {store_name} denied access ({cause}){tried}; unlock it (log in to the desktop \
                 session or unlock the keychain) and try again"
            ),
        ),
        E::Ambiguous(found) => SourceError::new(
            ErrorKind::Invalid,
            format!(
                "{reference}: {} entries for service {SERVICE}, account {name} in {store_name}; \
                 remove the extra ones with the store's own tool (seahorse, secret-tool or Keychain Access)",
                found.len()
            ),
        ),
        E::TooLong(attribute, limit) => SourceError::new(
            ErrorKind::Invalid,
            format!("{reference}: {store_name} limits the {attribute} to {limit} bytes"),
        ),
        E::Invalid(attribute, reason) => SourceError::new(
            ErrorKind::Invalid,
            format!("{reference}: {store_name} rejected the {attribute}: {reason}"),
        ),
        E::BadEncoding(_) => SourceError::new(
            ErrorKind::Invalid,
            format!("{reference}: {store_name} returned a value that is not UTF-8"),
        ),
        E::PlatformFailure(cause) => SourceError::new(
            ErrorKind::Unreachable,
            format!(
                "{reference}: {store_name} failed: {cause}{tried}; pick another store with \
                 {STORE_ENV} or ?store=keyutils"
            ),
        ),
        other => SourceError::new(
            ErrorKind::Invalid,
            format!("{reference}: {store_name} failed: {other}{tried}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_choice_parses_names() {
        assert_eq!(StoreChoice::parse("keyutils"), Some(StoreChoice::Keyutils));
        assert_eq!(
            StoreChoice::parse("secret-service"),
            Some(StoreChoice::SecretService)
        );
        assert_eq!(StoreChoice::parse("gnome"), None);
    }

    #[test]
    fn account_names_are_checked() {
        assert!(check_account("OPENAI_API_KEY").is_ok());
        assert!(check_account("openai-prod.key@work").is_ok());
        assert!(check_account("").is_err());
        assert!(check_account("a b").is_err());
        assert!(check_account("a#b").is_err());
        assert!(check_account(&"a".repeat(201)).is_err());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn explicit_keychain_is_rejected_on_linux() {
        let err = candidates(StoreChoice::Keychain).unwrap_err();
        assert!(err.contains("not available"), "{err}");
    }
}
