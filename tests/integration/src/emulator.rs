//! The Graph emulator as a child process, stopped by PID when dropped.
