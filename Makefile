# Writeback: the two commands.
#   make demo   run group writeback end to end on the local test bed (Samba AD DC + Graph emulator)
#   make test   install what the tests need, start the test bed, run every test, stop it again
# Both need root on a Debian 12 machine (they install Debian and Python packages).

.PHONY: demo demo-stop test testbed-up testbed-down fmt lint

demo:
	examples/demo/run.sh

demo-stop:
	examples/demo/stop.sh

test:
	tests/run-tests.sh

# Every service the integration tests use: forest A, forest B, PostgreSQL.
testbed-up:
	tests/testbed/samba-ad.sh up
	tests/testbed/samba-ad.sh --forest b up
	tests/testbed/postgres.sh up

testbed-down:
	tests/testbed/postgres.sh down
	tests/testbed/samba-ad.sh --forest b down
	tests/testbed/samba-ad.sh down

fmt:
	cargo fmt --all

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
