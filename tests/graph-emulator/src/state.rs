//! Shared server state: the directory, the clock, settings the control endpoint can change.

use std::sync::{Mutex, MutexGuard};

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use crate::auth::access::TokenSigner;
use crate::clock::Clock;
use crate::delta::DeltaControl;
use crate::faults::Faults;
use crate::store::Store;

/// Paging knobs.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Settings {
    /// Default page size of lists (`$top` overrides, max 999).
    pub page_size: usize,
    /// Objects per delta page.
    pub delta_page_size: usize,
    /// `members@delta` entries per group per page; a larger group is split and repeated.
    pub member_page_size: usize,
    /// Put an empty page (`value: []` + nextLink) into every delta round.
    pub empty_delta_page: bool,
    /// Send every object of an incremental delta round a second time, after all the others.
    pub delta_replay: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            page_size: 100,
            delta_page_size: 100,
            member_page_size: 1000,
            empty_delta_page: false,
            delta_replay: false,
        }
    }
}

pub struct AppState {
    /// `scheme://host:port`, no trailing slash.
    pub base_url: String,
    store: Mutex<Store>,
    pub clock: Clock,
    pub signer: TokenSigner,
    pub settings: Mutex<Settings>,
    pub faults: Faults,
    pub delta: Mutex<DeltaControl>,
    ids: Mutex<StdRng>,
}

impl AppState {
    pub fn new(
        base_url: String,
        store: Store,
        clock: Clock,
        settings: Settings,
        faults: Faults,
        seed: u64,
        roles: Vec<String>,
    ) -> Self {
        let mut key = vec![0u8; 32];
        rand::rng().fill_bytes(&mut key);
        AppState {
            base_url,
            store: Mutex::new(store),
            clock,
            signer: TokenSigner::new(key).with_roles(roles),
            settings: Mutex::new(settings),
            faults,
            delta: Mutex::new(DeltaControl::new()),
            ids: Mutex::new(StdRng::seed_from_u64(seed ^ 0x1d5)),
        }
    }

    /// The directory. A poisoned lock means a handler panicked; the data is still consistent
    /// enough for a test server, so keep serving.
    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn settings(&self) -> Settings {
        self.settings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn delta_control(&self) -> MutexGuard<'_, DeltaControl> {
        self.delta.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new object id (seeded, so runs with the same seed create the same ids).
    pub fn new_id(&self) -> String {
        let mut rng = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        let mut bytes = [0u8; 16];
        rng.fill_bytes(&mut bytes);
        uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .to_string()
    }

    /// Swap in a new tenant; delta tokens of the old one stop working (410, as after a reset).
    pub fn replace_store(&self, store: Store) {
        *self.store() = store;
        self.delta_control().new_epoch();
    }
}
