//! Shared helpers for the integration tests: the Samba AD and PostgreSQL test beds' settings and
//! the Graph emulator as a child process.

pub mod browser;
pub mod dns;
pub mod emulator;
pub mod graph_tenant;
pub mod harness;
pub mod postgres;
pub mod receiver;
pub mod testbed;

/// Waits (polling every 100 ms) until `$cond` holds, or panics naming `$what` after `$timeout`;
/// evaluates to the time it took. For async tests (`$cond` may `.await`).
#[macro_export]
macro_rules! eventually {
    ($timeout:expr, $what:expr, $cond:expr) => {{
        let start = ::std::time::Instant::now();
        loop {
            if $cond {
                break start.elapsed();
            }
            if start.elapsed() > $timeout {
                panic!("timed out after {:?} waiting for {}", $timeout, $what);
            }
            ::tokio::time::sleep(::std::time::Duration::from_millis(100)).await;
        }
    }};
}

/// [`eventually!`], printing the logs of the daemons listed (anything with `log_text()`) when
/// it times out.
#[macro_export]
macro_rules! eventually_or_logs {
    ($timeout:expr, $what:expr, [$($d:expr),*], $cond:expr) => {{
        let start = ::std::time::Instant::now();
        loop {
            if $cond {
                break start.elapsed();
            }
            if start.elapsed() > $timeout {
                $(eprintln!("--- log of {} ---\n{}", stringify!($d), $d.log_text());)*
                panic!("timed out after {:?} waiting for {}", $timeout, $what);
            }
            ::tokio::time::sleep(::std::time::Duration::from_millis(100)).await;
        }
    }};
}
