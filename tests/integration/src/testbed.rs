//! Settings of the running Samba AD test bed.
